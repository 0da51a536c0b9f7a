"""Label-noise relabelling, the protocol comparison, cross-validation over folds and the label-efficiency and
label-noise experiments (tiny course dataset, 1-2 epochs)."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from uclser_lib import coursedata, data, datasets
from uclser_lib.data import feature_stats
from uclser_lib.downstream import FinetuneConfig, LinearEvalConfig
from uclser_lib.experiments import (
    CURVE_INITS,
    STAGE_INITS,
    Protocol,
    compare,
    cross_validate,
    label_efficiency,
    label_noise,
)
from uclser_lib.folders import RealDataset
from uclser_lib.models import build_encoder
from uclser_lib.results import gain_interval, gains, merge_results, scores_by_seed


def test_relabel_rate_and_structure():
    true = [c for c in data.CLASSES for _ in range(50)]
    noisy = coursedata.relabel(true, 0.4, seed=3)
    changed = [(t, n) for t, n in zip(true, noisy) if t != n]
    assert len(changed) == 400  # exactly round(0.4 * 1000)
    near = sum(n in coursedata.NEIGHBOURS[t] for t, n in changed)
    assert near / len(changed) > 0.65  # mostly confusable neighbours, not uniform flips
    assert coursedata.relabel(true, 0.4, seed=3) == noisy and coursedata.relabel(true, 0.4, seed=4) != noisy
    assert coursedata.relabel(true, 0.0) == true
    with pytest.raises(ValueError, match="wrong_rate"):
        coursedata.relabel(true, 1.5)


@pytest.mark.slow  # end to end: an evaluation per noise rate
def test_label_noise_experiment_on_tiny_course():
    course = datasets.prepare("tiny", progress=False)
    truth = coursedata.read_truth(course.root)
    states = Counter(truth[f][1] for f in course.splits()["pretrain"].fnames)
    assert states["wrong"] > 0 and set(states) <= {"clean", "wrong", "oov", "incomplete"}
    splits = course.splits()
    mean, std = feature_stats(splits["pretrain"].clips)
    res = label_noise(
        build_encoder("resnet18"),
        mean,
        std,
        splits,
        truth,
        wrong_rates=(0.0, 0.6),
        finetune_cfg=FinetuneConfig(epochs=1, batch_size=16, milestones=[1]),
        device="cpu",
    )
    assert {(r["init"], r["wrong_rate"]) for r in res["rows"]} == {
        (i, w) for i in ("pretrained", "random") for w in (0.0, 0.6)
    }
    assert all(r["best_epoch"] == 1 for r in res["rows"])  # one epoch each
    # one seed: each (init, rate) summary is that run's test score
    assert {(s["init"], s["wrong_rate"]): (s["mean"], s["std"], s["n"]) for s in res["summary"]} == {
        (r["init"], r["wrong_rate"]): (r["test_balanced"], 0.0, 1) for r in res["rows"]
    }
    with pytest.raises(ValueError, match="true class of every noisy clip"):
        label_noise(build_encoder("resnet18"), mean, std, splits, {}, wrong_rates=(0.0,))


@pytest.mark.slow  # end to end: pre-training, then linear evaluation at each label fraction
def test_label_curves_by_linear_evaluation_on_tiny_course(small_bn_recalibration):
    course = datasets.prepare("tiny", progress=False)
    splits = course.splits()
    mean, std = feature_stats(splits["pretrain"].clips)
    cfg = LinearEvalConfig(epochs=2, batch_size=16, milestones=[1])
    eff = label_efficiency(
        build_encoder("resnet18"),
        mean,
        std,
        splits,
        fractions=(0.5, 1.0),
        seeds=(0, 1),
        stage="linear",
        linear_cfg=cfg,
        device="cpu",
    )
    assert {(r["init"], r["fraction"], r["stage"]) for r in eff["rows"]} == {
        (i, f, "linear") for i in ("pretrained", "random", "random_bn") for f in (0.5, 1.0)
    }
    # the fair random baseline: its BatchNorm statistics re-estimated on training patches, not the initial 0 / 1
    by = {(r["init"], r["fraction"], r["seed"]): r["test_balanced"] for r in eff["rows"]}
    assert any(by["random", f, s] != by["random_bn", f, s] for f in (0.5, 1.0) for s in (0, 1))
    assert all(r["n"] == 2 for r in eff["summary"])
    n_train = {r["fraction"]: r["n_train"] for r in eff["rows"]}
    assert len(splits["test"].classes) <= n_train[0.5] <= n_train[1.0]  # at least one clip per class
    noise = label_noise(
        build_encoder("resnet18"),
        mean,
        std,
        splits,
        coursedata.read_truth(course.root),
        wrong_rates=(0.6,),
        stage="linear",
        linear_cfg=cfg,
        device="cpu",
    )
    assert {(r["stage"], r["wrong_rate"], r["init"]) for r in noise["rows"]} == {
        ("linear", 0.6, i) for i in CURVE_INITS["linear"]
    }
    # random_bn re-estimated once per seed of each curve, with the default protocol's number of batches
    assert small_bn_recalibration == [Protocol().bn_batches] * 3
    with pytest.raises(ValueError, match="stage must be"):
        label_efficiency(build_encoder("resnet18"), mean, std, splits, fractions=(1.0,), stage="probe", device="cpu")


def test_with_labels_shares_features():
    fs = datasets.prepare("tiny", progress=False).test
    relabelled = fs.with_labels([0] * len(fs))
    assert relabelled.clips.data is fs.clips.data and set(relabelled.labels) == {0}
    with pytest.raises(ValueError, match="class indices"):
        fs.with_labels([99] * len(fs))


def test_curves_plot_one_line_per_init_in_x_order():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uclser_lib import plots

    summary = [
        dict(init=i, fraction=f, wrong_rate=w, mean=m, std=1.0)
        for i, base in (("random", 10.0), ("pretrained", 40.0))
        for f, w, m in ((1.0, 0.6, base + 20), (0.1, 0.0, base))
    ]
    fig, (a, b) = plt.subplots(1, 2)
    plots.label_efficiency_curve(a, summary, {0.1: 3, 1.0: 30}, chance=5.0)
    plots.label_noise_curve(b, summary)
    for ax, x in ((a, "fraction"), (b, "wrong_rate")):
        lines = {c.get_label(): c.lines[0] for c in ax.containers}
        assert set(lines) == {"random", "pretrained"}
        for init, line in lines.items():
            rows = sorted((r for r in summary if r["init"] == init), key=lambda r: r[x])
            assert list(line.get_xdata()) == [r[x] for r in rows] and list(line.get_ydata()) == [
                r["mean"] for r in rows
            ]
    assert [t.get_text() for t in a.get_xticklabels()] == [
        "0.1\n(3 clips)",
        "1\n(30 clips)",
    ] and a.get_xscale() == "log"
    plt.close(fig)


@pytest.mark.slow  # end to end: linear evaluations run twice
def test_linear_eval_embedding_cache_skips_embedded_sets_and_keeps_results():
    from uclser_lib.downstream import linear_eval, task_splits

    course = datasets.prepare("tiny", progress=False)
    splits = course.splits()
    mean, std = feature_stats(splits["pretrain"].clips)
    train, val, test = task_splits(splits, "noisy")
    encoder = build_encoder("vgglike")
    calls = []
    embed = encoder.embed
    encoder.embed = lambda x: calls.append(len(x)) or embed(x)
    cfg = LinearEvalConfig(epochs=2, batch_size=16, milestones=[1])
    plain = linear_eval(encoder, mean, std, train, val, test, cfg=cfg, device="cpu", progress=False)
    n_plain, cache = len(calls), {}
    first = linear_eval(
        encoder, mean, std, train, val, test, cfg=cfg, device="cpu", progress=False, embedding_cache=cache
    )
    assert len(cache) == 3 and first.test["balanced"] == plain.test["balanced"]
    calls.clear()
    relabelled = train.with_labels(list(reversed(train.labels.tolist())))  # same clips: served from the cache
    again = linear_eval(
        encoder, mean, std, relabelled, val, test, cfg=cfg, device="cpu", progress=False, embedding_cache=cache
    )
    assert calls == [] and n_plain > 0 and len(cache) == 3
    assert again.test["confusion"].sum() == len(test)


def test_merge_results_replaces_rerun_rows_and_keeps_the_rest():
    def row(init, stage, task, seed, acc):
        return dict(arch="crnn", init=init, stage=stage, task=task, seed=seed, test_balanced=acc)

    meta = dict(encoder="course-crnn", dataset="course_course", epochs=100)
    base = dict(
        meta,
        rows=[
            row(i, s, t, seed, 50.0 + seed)
            for i in ("pretrained", "random")
            for s, t in (("linear", "noisy"), ("finetune", "clean"))
            for seed in (0, 1)
        ],
        runs=[{"command": "old"}],
        label_noise={"rows": []},
    )
    update = dict(
        meta,
        rows=[row(i, "finetune", "clean", seed, 70.0 + seed) for i in ("pretrained", "random") for seed in (1, 2)],
        runs=[{"command": "new"}],
    )
    merged = merge_results(base, update)
    got = {(r["init"], r["stage"], r["task"], r["seed"]): r["test_balanced"] for r in merged["rows"]}
    assert len(got) == len(merged["rows"]) == 10  # 8 old - 2 rerun (seed 1, clean, both inits) + 4 new
    assert got[("pretrained", "finetune", "clean", 0)] == 50.0 and got[("pretrained", "finetune", "clean", 1)] == 71.0
    assert got[("random", "linear", "noisy", 1)] == 51.0 and got[("random", "finetune", "clean", 2)] == 72.0
    summary = {(r["init"], r["stage"], r["task"]): (r["mean"], r["n"]) for r in merged["summary"]}
    assert summary[("pretrained", "finetune", "clean")] == (pytest.approx((50 + 71 + 72) / 3), 3)
    assert merged["seeds"] == [0, 1, 2] and [r["command"] for r in merged["runs"]] == ["old", "new"]
    assert merged["label_noise"] == {"rows": []} and base["rows"][0]["test_balanced"] == 50.0  # base is not modified
    with pytest.raises(ValueError, match="different epochs: 100 vs 200"):
        merge_results(base, dict(update, epochs=200))


def test_gain_interval_is_the_paired_t_interval():
    g = gain_interval([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])  # differences 2, 3, 4: mean 3, sample std 1
    half = 4.302652729911275 / 3**0.5  # t(0.975, 2 degrees of freedom) x std / sqrt(n)
    assert (g["mean"], g["std"], g["n"]) == (3.0, 1.0, 3)
    assert g["low"] == pytest.approx(3 - half) and g["high"] == pytest.approx(3 + half) and g["excludes_zero"]
    wide = gain_interval([1.0, 5.0, 0.0], [2.0, 1.0, 1.0])  # differences -1, 4, -1
    assert wide["low"] < 0 < wide["high"] and not wide["excludes_zero"]
    one = gain_interval([2.0], [1.0])
    assert one["mean"] == 1.0 and one["low"] is None and not one["excludes_zero"]
    with pytest.raises(ValueError, match="equal-length"):
        gain_interval([1.0, 2.0], [1.0])


def test_gains_pair_the_same_seeds():
    rows = [
        dict(arch="a", init=i, stage="linear", task="noisy", seed=s, test_balanced=v)
        for i, s, v in [("pretrained", 0, 60), ("pretrained", 1, 64), ("pretrained", 2, 70), ("random", 0, 50)]
        + [("random", 1, 52), ("random_bn", 0, 55)]
    ]
    (g,) = gains(rows, "random")
    assert g["seeds"] == [0, 1] and g["gain_mean"] == pytest.approx(11.0) and g["pretrained"] == pytest.approx(62.0)
    assert g["baseline_mean"] == pytest.approx(51.0) and g["gain_n"] == 2
    (h,) = gains(rows, "random_bn")
    assert h["seeds"] == [0] and h["gain_mean"] == 5.0 and h["gain_low"] is None


def test_two_rows_of_one_seed_are_an_error_not_a_silent_overwrite():
    row = dict(arch="a", init="pretrained", stage="linear", task="noisy", seed=0, test_balanced=60.0)
    rows = [row, dict(row, init="random", test_balanced=50.0), dict(row, task="clean", test_balanced=70.0)]
    assert scores_by_seed(rows) == {
        ("a", "linear", "noisy"): {"pretrained": {0: 60.0}, "random": {0: 50.0}},
        ("a", "linear", "clean"): {"pretrained": {0: 70.0}},
    }
    # grouped without the task, the clean row of seed 0 would replace the noisy one in the pairing
    with pytest.raises(ValueError, match=r"\{'arch': 'a', 'stage': 'linear'\}, init 'pretrained', seed 0"):
        gains(rows, "random", keys=("arch", "stage"))
    with pytest.raises(ValueError, match="seed 0: one row per seed"):  # two settings' rows left in one file
        scores_by_seed(rows + [dict(row, setting=0.1, test_balanced=61.0)])


def test_merge_refuses_rows_made_with_another_recipe():
    meta = dict(encoder="course-crnn", dataset="course2_course", epochs=100)
    a = dict(meta, rows=[], recipe=Protocol(seeds=(0, 1, 2)).to_dict())
    b = dict(meta, rows=[], recipe=Protocol(seeds=(3, 4)).to_dict())
    assert merge_results(a, b)["recipe"] == a["recipe"]  # other seeds, same recipe: fine
    with pytest.raises(ValueError, match="different recipes"):
        merge_results(a, dict(meta, rows=[], recipe=Protocol(linear_lrs=(0.1,)).to_dict()))
    with pytest.raises(ValueError, match="different recipes"):
        merge_results(a, dict(meta, rows=[]))  # a file without a recipe (made before the protocol)


def test_protocol_validates_its_grid():
    for bad in (dict(epochs=0), dict(linear_lrs=()), dict(finetune_lrs=(0.01, -1.0)), dict(probe_epochs=(-1,))):
        with pytest.raises(ValueError, match="Protocol|epochs"):
            Protocol(**bad)
    assert Protocol().settings("finetune")[0] == {"lr": 0.003, "probe_epochs": 0}
    cfg = Protocol(epochs=10).config("finetune", {"lr": 0.01, "probe_epochs": 0}, seed=4)
    assert (cfg.lr, cfg.probe_epochs, cfg.seed, cfg.milestones) == (0.01, 0, 4, [4, 8])


@pytest.mark.slow  # end to end: every baseline trained and evaluated
def test_compare_selects_on_validation_with_every_baseline_on_tiny_course(small_bn_recalibration):
    course = datasets.prepare("tiny", progress=False)
    splits = course.splits()
    mean, std = feature_stats(splits["pretrain"].clips)
    protocol = Protocol(
        epochs=1,
        batch_size=16,
        linear_lrs=(0.03, 1.0),
        finetune_lrs=(0.01,),
        probe_epochs=(0,),
        seeds=(0, 1),
        bn_batches=1,
    )
    res = compare(
        build_encoder("resnet18"),
        mean,
        std,
        splits,
        protocol,
        stages=[("linear", "noisy"), ("finetune", "clean")],
        device="cpu",
    )
    for stage in ("linear", "finetune"):
        got = {(r["init"], r["seed"]) for r in res["rows"] if r["stage"] == stage}
        assert got == {(i, s) for i in STAGE_INITS[stage] for s in (0, 1)}
    for sel in res["selection"]:
        best = max(sel["val_by_setting"], key=lambda v: v["val_balanced"])
        assert sel["selected"] == best["setting"]  # chosen on validation
        rows = [r for r in res["rows"] if (r["init"], r["stage"]) == (sel["init"], sel["stage"])]
        assert all(r["setting"] == sel["selected"] for r in rows)  # only the selected setting is reported
        assert best["val_balanced"] == pytest.approx(sum(r["val_balanced"] for r in rows) / len(rows))
    assert {(g["stage"], g["baseline"]) for g in res["gains"]} == {
        ("linear", "random"),
        ("linear", "random_bn"),
        ("linear", "handcrafted"),
        ("finetune", "random"),
    }
    assert all(g["gain_n"] == 2 and g["gain_low"] is not None for g in res["gains"])
    assert res["recipe"] == protocol.to_dict()
    assert small_bn_recalibration and set(small_bn_recalibration) == {protocol.bn_batches}  # the protocol's batches
    json.dumps(res)  # plain Python values only: the results file is JSON


@pytest.mark.slow  # end to end: an evaluation per fold
def test_cross_validate_evaluates_each_fold_and_averages_over_folds():
    course = datasets.prepare("tiny", progress=False)
    labels = course.train.labels  # three folds stratified by class, as ESC-50's five
    folds = np.array([(labels[:i] == y).sum() % 3 + 1 for i, y in enumerate(labels)])
    ds = RealDataset(course.root, "tiny in folds", course.train, folds=folds)
    cfg = LinearEvalConfig(epochs=1, batch_size=16, milestones=[1])
    res = cross_validate("random:vgglike", ds, seeds=(0,), folds=[1, 3], linear_cfg=cfg, device="cpu")
    assert sorted((r["fold"], r["init"]) for r in res["rows"]) == [
        (f, i) for f in (1, 3) for i in ("pretrained", "random")
    ]
    assert all(r["arch"] == "vgglike" and r["stage"] == "linear" and r["best_epoch"] == 1 for r in res["rows"])
    for s in res["summary"]:  # mean over the folds of each init
        mine = [r for r in res["rows"] if r["init"] == s["init"]]
        assert s["n"] == 2
        assert s["mean"] == pytest.approx(np.mean([r["test_balanced"] for r in mine]))
        assert s["mean_top1"] == pytest.approx(np.mean([r["test_top1"] for r in mine]))
    # each fold is tested on its own clips, trained and validated on the others
    s1 = ds.splits(0, test_fold=1)
    assert set(s1["test"].fnames) == {f for f, k in zip(course.train.fnames, folds) if k == 1}
    assert set(s1["test"].fnames).isdisjoint(s1["clean_train"].fnames + s1["clean_val"].fnames)
    json.dumps(res)
    with pytest.raises(ValueError, match="stage must be"):
        cross_validate("random:vgglike", ds, stages=("probe",), folds=[1], linear_cfg=cfg, device="cpu")


def test_merge_keeps_pre_trained_rows_of_one_encoder_file_and_replaces_their_selection():
    def row(init, seed, acc, sha=None):
        r = dict(arch="resnet18", init=init, stage="linear", task="noisy", seed=seed, test_balanced=acc)
        return r | ({"encoder_sha256": sha} if sha else {})

    def picked(init, lr):
        return dict(arch="resnet18", init=init, stage="linear", task="noisy", selected={"lr": lr})

    meta = dict(encoder="course-resnet18", dataset="course2_course", epochs=100, recipe=Protocol().to_dict())
    base = dict(
        meta,
        rows=[row(i, s, 50.0) for i in ("pretrained", "random_bn") for s in (0, 1)],
        selection=[picked("pretrained", 0.03), picked("random_bn", 0.3)],
    )
    # a re-trained encoder under the same name: all its pre-trained rows rerun, the baselines kept
    update = dict(meta, rows=[row("pretrained", s, 80.0, "new") for s in (0, 1)], selection=[picked("pretrained", 0.1)])
    merged = merge_results(base, update)
    got = {(r["init"], r["seed"]): r["test_balanced"] for r in merged["rows"]}
    assert got == {("pretrained", 0): 80.0, ("pretrained", 1): 80.0, ("random_bn", 0): 50.0, ("random_bn", 1): 50.0}
    assert {e["init"]: e["selected"]["lr"] for e in merged["selection"]} == {"pretrained": 0.1, "random_bn": 0.3}
    assert len(merged["selection"]) == 2
    (g,) = merged["gains"]
    assert g["baseline"] == "random_bn" and g["gain_mean"] == pytest.approx(30.0)
    # only one seed rerun with the new file: the other seed's row still comes from the old one
    with pytest.raises(ValueError, match="different encoder files"):
        merge_results(base, dict(update, rows=update["rows"][:1]))


def _shipped_v2_tables(manifest: dict) -> list:
    """The shipped protocol tables (``pretrained/results/v2/**/results-course-*.json``) of encoders in the manifest."""
    from uclser_lib.results import RESULTS_DIR

    files = sorted((RESULTS_DIR / "v2").rglob("results-course-*.json"))
    return [f for f in files if f.stem.removeprefix("results-") in manifest]


def test_shipped_protocol_results_were_made_with_the_shipped_encoder_files():
    """A results file under the protocol names the encoder file of its pre-trained rows: re-exporting an encoder
    without rerunning its rows (``evaluate --inits pretrained --merge-into``) would leave a table about another file."""
    from uclser_lib import pretrained
    from uclser_lib.results import RESULTS_DIR

    manifest = pretrained.read_manifest()
    shipped = _shipped_v2_tables(manifest)  # every table: linear, short fine-tuning
    assert len(shipped) >= 2, f"expected the linear and the fine-tuning tables of a shipped encoder, got {shipped}"
    for path in shipped:
        results = json.loads(path.read_text())
        made_by = {r.get("encoder_sha256") for r in results["rows"] if r["init"] == "pretrained"}
        assert made_by == {manifest[results["encoder"]]["sha256"]}, path
        assert results["dataset"] == manifest[results["encoder"]]["dataset"], path
    for path in sorted((RESULTS_DIR / "v2").rglob("curves-course-*.json")):  # curves: the runs name the file
        curves = json.loads(path.read_text())
        assert {run["encoder_sha256"] for run in curves["runs"]} == {manifest[curves["encoder"]]["sha256"]}, path
        assert curves["dataset"] == manifest[curves["encoder"]]["dataset"], path


def _protocol_quotes_missing(text: str) -> list[str]:
    """Each mean ± std and each gain interval of the shipped protocol tables that ``text`` does not quote exactly as
    its results file gives it."""
    from uclser_lib import pretrained
    from uclser_lib.results import RESULTS_DIR

    text = text.replace("\u2212", "-")  # the typographic minus sign
    files = _shipped_v2_tables(pretrained.read_manifest())
    assert files
    missing = []
    for path in files:
        results = json.loads(path.read_text())
        for s in results["summary"]:
            if f"{s['mean']:.1f} ± {s['std']:.1f}" not in text:
                missing.append(f"{path.name}: {s}")
        for g in results["gains"]:
            interval = f"[{g['gain_low']:+.1f}, {g['gain_high']:+.1f}]"
            if interval not in text:
                missing.append(f"{path.name}: gain over {g['baseline']} {interval}")
    for path in sorted((RESULTS_DIR / "v2").rglob("curves-course-*.json")):  # the label curves' table
        curves = json.loads(path.read_text())
        for name, key in (("label_efficiency", "fraction"), ("label_noise", "wrong_rate")):
            for s in curves[name]["summary"]:
                if f"{s['mean']:.1f} ± {s['std']:.1f}" not in text:
                    missing.append(f"{path.name}: {s}")
            for g in gains(curves[name]["rows"], "random_bn", keys=(key,)):
                interval = f"[{g['gain_low']:+.1f}, {g['gain_high']:+.1f}]"
                if interval not in text:
                    missing.append(f"{path.name}: {name} {g[key]}: gain {interval}")
    return missing


RESULTS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "results.md"  # the tables (the README's until #31)


def test_the_results_page_quotes_the_shipped_protocol_results_as_their_files_say():
    """Each mean ± std and each gain interval of the shipped protocol tables appears in docs/results.md exactly as
    its results file gives it: a number typed by hand, or left behind by a rerun, fails here."""
    missing = _protocol_quotes_missing(RESULTS_PAGE.read_text())
    assert not missing, f"docs/results.md does not quote: {missing}"


def test_a_stale_number_on_the_results_page_fails():
    """The linear table's pre-trained mean, and a label curve's gain interval, each changed by one digit."""
    text = RESULTS_PAGE.read_text()
    for quoted, stale, named in (
        ("**75.7 ± 2.2**", "**75.8 ± 2.2**", "results-course-resnet18.json"),
        ("[+9.0, +40.9]", "[+9.0, +41.9]", "[+9.0, +40.9]"),
    ):
        assert text.count(quoted) == 1, quoted
        missing = _protocol_quotes_missing(text.replace(quoted, stale))
        assert missing and all(named in m for m in missing), missing
