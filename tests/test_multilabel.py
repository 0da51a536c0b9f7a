"""Multi-label (FSD50K's protocol) through feature sets, splits, linear evaluation and fine-tuning."""

import numpy as np
import pytest
import torch
from test_downstream import TinyEncoder

from uclser_lib.data import FeatureSet, PackedClips, feature_stats, multi_hot, strata, stratified_draw
from uclser_lib.downstream import (
    FinetuneConfig,
    LinearEvalConfig,
    finetune,
    linear_eval,
    score_model,
    selection_metric,
    subsample_per_class,
)
from uclser_lib.features import DEFAULT_PARAMS
from uclser_lib.metrics import mean_average_precision, multilabel_clip_scores

N_CLASSES = 4


def make_multilabel_set(n, seed, amp=2.0) -> FeatureSet:
    """Clips of 101-259 frames carrying one or two of 4 classes; each class present raises its band by ``amp``."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for i in range(n):
        present = {i % N_CLASSES} | ({int(rng.integers(N_CLASSES))} if rng.random() < 0.5 else set())
        x = rng.normal(-3, 0.5, (int(rng.integers(101, 260)), 96)).astype(np.float32)
        for c in present:
            x[:, 10 + 20 * c : 20 + 20 * c] += amp
        clips.append(x)
        labels.append([f"c{c}" for c in sorted(present)])
    classes = [f"c{c}" for c in range(N_CLASSES)]
    return FeatureSet(
        PackedClips.from_list(clips, multi_hot(labels, classes)),
        [f"{seed}_{i}.wav" for i in range(n)],
        np.ones(n, bool),
        np.zeros(n, bool),
        classes,
        DEFAULT_PARAMS,
    )


def ml_sets(n_train=32):
    return make_multilabel_set(n_train, 0), make_multilabel_set(16, 1), make_multilabel_set(16, 2)


def test_multi_hot_labels_flow_through_feature_sets():
    fs = make_multilabel_set(10, 0)
    assert fs.multilabel and fs.labels.shape == (10, N_CLASSES) and fs.labels.dtype == np.float32
    assert set(np.unique(fs.labels)) == {0.0, 1.0} and (fs.labels.sum(1) >= 1).all()
    sub = fs.subset([3, 1])
    np.testing.assert_array_equal(sub.labels, fs.labels[[3, 1]])
    torch.testing.assert_close(sub.clips.clip(0), fs.clips.clip(3))
    relabelled = fs.with_labels(np.eye(N_CLASSES, dtype=np.float32)[np.arange(10) % N_CLASSES])
    assert relabelled.multilabel and relabelled.clips.data is fs.clips.data
    with pytest.raises(ValueError, match=r"\(10, 4\) multi-hot 0/1"):
        fs.with_labels(np.full((10, N_CLASSES), 0.5))
    with pytest.raises(ValueError, match="'c9' is not one of the 4 classes"):
        multi_hot([["c0", "c9"]], fs.classes)
    assert not make_multilabel_set(4, 0).with_labels([0, 1, 2, 3]).multilabel  # back to class indices


def test_strata_take_each_clips_rarest_class_and_draws_keep_rare_classes():
    y = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)
    # class counts 4, 1, 1: clip 0 (classes 0, 2) -> 2, clip 2 (classes 0, 1) -> 1, an unlabelled clip -> -1
    np.testing.assert_array_equal(strata(y), [2, 0, 1, -1, 0])
    np.testing.assert_array_equal(strata(np.array([2, 0, 1])), [2, 0, 1])  # single-label: unchanged
    fs = make_multilabel_set(40, 3)
    sub = subsample_per_class(fs, 0.1, seed=0)
    assert (sub.labels.sum(0) > 0).all()  # every class keeps a positive clip at 10 %
    small = stratified_draw(fs.labels, np.arange(40), 0.1, np.random.default_rng(0), min_class=1)
    large = stratified_draw(fs.labels, np.arange(40), 0.5, np.random.default_rng(0), min_class=1)
    assert set(small) < set(large)  # nested, as single-label draws


def test_multilabel_linear_eval_trains_with_bce_and_selects_on_validation_map():
    train, val, test = ml_sets()
    mean, std = feature_stats(train.clips)
    cfg = LinearEvalConfig(epochs=8, batch_size=8, milestones=[5])
    res = linear_eval(TinyEncoder(), mean, std, train, val, test, cfg, device="cpu", progress=False)
    assert selection_metric(True) == "map" and selection_metric(False) == "balanced"
    assert set(res.test) >= {"map", "dprime", "lwlrap", "per_class_ap", "per_class_dprime"}
    assert "balanced" not in res.test
    h = res.history
    assert {"val_map", "val_dprime", "val_lwlrap", "test_map"} <= set(h[0])
    best = int(np.argmax([r["val_map"] for r in h]))
    assert res.best_epoch == best + 1 and res.val["map"] == pytest.approx(h[best]["val_map"])
    assert res.test["map"] == pytest.approx(h[best]["test_map"])
    # it learns: the classes raise separate bands (chance mAP = share of positives, about 0.35)
    assert res.test["map"] > 0.8 and res.test["dprime"] > 1.0
    assert h[-1]["loss"] < 0.7 * h[0]["loss"]
    # the probe scores clips as FSD50K does: mean logit over a clip's patches, then a sigmoid
    scored = score_model(res.model, test, mean, std)
    assert scored["map"] == pytest.approx(res.test["map"], rel=1e-6)


def test_clip_scores_are_the_sigmoid_of_the_mean_logit_not_the_mean_sigmoid():
    logits = torch.tensor([[4.0, -4.0], [-4.0, 4.0], [0.0, 0.0]])
    clips, scores = multilabel_clip_scores(logits, torch.tensor([0, 0, 1]))
    torch.testing.assert_close(scores, torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    assert clips.tolist() == [0, 1]
    # the mean of sigmoids would give 0.5 too here; unbalanced logits tell them apart
    _, s = multilabel_clip_scores(torch.tensor([[6.0], [-2.0]]), torch.tensor([0, 0]))
    assert float(s) == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert float(s) != pytest.approx((torch.sigmoid(torch.tensor(6.0)) + torch.sigmoid(torch.tensor(-2.0))).item() / 2)


def test_multilabel_finetune_learns_and_keeps_the_callers_encoder():
    train, val, test = ml_sets()
    mean, std = feature_stats(train.clips)
    enc = TinyEncoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = FinetuneConfig(epochs=6, batch_size=8, lr=0.05, milestones=[4], probe_epochs=3)
    res = finetune(enc, mean, std, train, val, test, cfg, device="cpu", progress=False)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert res.test["map"] > 0.7
    assert res.val["map"] == pytest.approx(max(r["val_map"] for r in res.history))


def test_multilabel_bad_input_is_refused_in_one_line():
    train, val, test = ml_sets()
    mean, std = feature_stats(train.clips)
    cfg = LinearEvalConfig(epochs=1, batch_size=8)
    single = make_multilabel_set(16, 1).with_labels(np.arange(16) % N_CLASSES)
    with pytest.raises(ValueError, match="mix single- and multi-label"):
        linear_eval(TinyEncoder(), mean, std, train, single, test, cfg, device="cpu", progress=False)
    no_c3 = train.labels.copy()
    no_c3[:, 3] = 0
    no_c3[no_c3.sum(1) == 0, 0] = 1
    with pytest.raises(ValueError, match=r"\['c3'\].*no positive training clip"):
        linear_eval(TinyEncoder(), mean, std, train.with_labels(no_c3), val, test, cfg, device="cpu", progress=False)
    with pytest.raises(ValueError, match="class_weight 'balanced' is for single-label"):
        linear_eval(
            TinyEncoder(),
            mean,
            std,
            train,
            val,
            test,
            LinearEvalConfig(epochs=1, batch_size=8, class_weight="balanced"),
            device="cpu",
            progress=False,
        )


def test_map_of_a_perfect_and_a_reversed_ranking():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    assert mean_average_precision(y, y + 0.1) == pytest.approx(1.0)
    assert mean_average_precision(y, 1 - y) < 0.7


def test_compare_on_a_multilabel_task_selects_on_val_map_and_reports_map_and_dprime_gains():
    from uclser_lib.experiments import Protocol, compare
    from uclser_lib.models import build_encoder

    train, val, test = ml_sets(24)
    splits = {"pretrain": train, "val": val, "test": test}
    mean, std = feature_stats(train.clips)
    torch.manual_seed(0)
    protocol = Protocol(epochs=2, batch_size=8, linear_lrs=(0.1, 0.3), seeds=(0, 1), bn_batches=1)
    res = compare(build_encoder("resnet18", n_classes=N_CLASSES), mean, std, splits, protocol, [("linear", "noisy")])
    rows = res["rows"]
    assert {r["init"] for r in rows} == {"pretrained", "random", "random_bn", "handcrafted"}
    assert all({"test_map", "test_dprime", "test_lwlrap", "val_map"} <= set(r) for r in rows)
    assert not any("test_balanced" in r for r in rows)
    for sel in res["selection"]:  # the setting of the best mean validation mAP, never a test score
        best = max(sel["val_by_setting"], key=lambda g: g["val_map"])
        assert sel["selected"] == best["setting"]
    by_init = {s["init"]: s for s in res["summary"]}
    pre = [r["test_map"] for r in rows if r["init"] == "pretrained"]
    assert by_init["pretrained"]["mean"] == pytest.approx(np.mean(pre)) and by_init["pretrained"]["n"] == 2
    assert {g["baseline"] for g in res["gains"]} == {"random", "random_bn", "handcrafted"}
    assert {g["baseline"] for g in res["gains_dprime"]} == {"random", "random_bn", "handcrafted"}
    d_pre = np.mean([r["test_dprime"] for r in rows if r["init"] == "pretrained"])
    assert next(s for s in res["summary_dprime"] if s["init"] == "pretrained")["mean"] == pytest.approx(d_pre)
    g = next(g for g in res["gains"] if g["baseline"] == "random")
    rnd = [r["test_map"] for r in rows if r["init"] == "random"]
    assert g["gain_mean"] == pytest.approx(np.mean(pre) - np.mean(rnd)) and g["gain_low"] is not None


def test_knn_multilabel_equals_a_per_patch_loop_and_finds_separable_classes():
    from uclser_lib.metrics import knn_multilabel, multilabel_metrics

    rng = np.random.default_rng(0)
    n_clips, per_clip, k = 12, 3, 4
    y_clip = (rng.random((n_clips, 3)) < 0.4).astype(np.float32)
    y_clip[np.arange(n_clips), np.arange(n_clips) % 3] = 1  # every class present
    clip_ids = np.repeat(np.arange(n_clips), per_clip)
    emb = torch.nn.functional.normalize(torch.as_tensor(rng.normal(size=(len(clip_ids), 5)), dtype=torch.float32))
    labels = torch.as_tensor(y_clip[clip_ids])
    res = knn_multilabel(emb, labels, torch.as_tensor(clip_ids), k=k, chunk=5)
    sim = (emb @ emb.T).numpy()
    patch_scores = np.zeros((len(clip_ids), 3))
    for p in range(len(clip_ids)):
        others = np.flatnonzero(clip_ids != clip_ids[p])
        nearest = others[np.argsort(-sim[p, others], kind="stable")[:k]]
        patch_scores[p] = y_clip[clip_ids[nearest]].mean(0)
    clip_scores = np.stack([patch_scores[clip_ids == c].mean(0) for c in range(n_clips)])
    assert res["map"] == pytest.approx(multilabel_metrics(y_clip, clip_scores)["map"], rel=1e-6)
    # embeddings that encode the labels: the monitor finds them (mAP 1)
    coded = torch.nn.functional.normalize(labels + 0.01 * torch.as_tensor(rng.normal(size=labels.shape)), dim=1)
    assert knn_multilabel(coded.float(), labels, torch.as_tensor(clip_ids), k=2)["map"] > 0.95
    with pytest.raises(ValueError, match="k = 40 must be in"):
        knn_multilabel(emb, labels, torch.as_tensor(clip_ids), k=40)


def test_evaluate_on_the_fsd50k_layout_course_data_writes_map_and_dprime_with_intervals(tmp_path, capsys):
    """`evaluate --dataset course-fsd50k` (tiny preset in smoke mode): FSD50K's protocol end to end from the CLI."""
    import json

    from uclser_lib.cli import main

    out = tmp_path / "results.json"
    argv = ["evaluate", "--encoder", "course-resnet18", "--dataset", "course-fsd50k", "--epochs", "2"]
    argv += ["--seeds", "0", "1", "--linear-lrs", "0.1", "--inits", "pretrained", "random_bn", "handcrafted"]
    argv += ["--stages", "linear:noisy"]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dataset"].startswith("course50k_") and res["seeds"] == [0, 1]
    assert {(r["stage"], r["task"]) for r in res["rows"]} == {("linear", "noisy")}
    assert {r["init"] for r in res["rows"]} == {"pretrained", "random_bn", "handcrafted"}
    assert all(0 <= r["test_map"] <= 1 and "test_dprime" in r and "test_balanced" not in r for r in res["rows"])
    for key in ("gains", "gains_dprime"):
        assert {g["baseline"] for g in res[key]} == {"random_bn", "handcrafted"}
        assert all(g["gain_n"] == 2 and g["gain_low"] is not None for g in res[key] if np.isfinite(g["gain_mean"]))
    printed = capsys.readouterr().out
    assert "test mAP" in printed and "test d'" in printed and "balanced" not in printed
    # the clean-label task asked for by name is refused in one line, before any run
    argv[argv.index("linear:noisy")] = "finetune:clean"
    assert main([*argv, "--device", "cpu", "--out", str(tmp_path / "no.json")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # progress bars aside
    assert len(errors) == 1 and "FSD50K has no clean-label subset" in errors[0]
    assert not (tmp_path / "no.json").exists()


def test_evaluate_runs_by_default_only_the_tasks_a_dataset_has():
    from uclser_lib.cli import _runs_task
    from uclser_lib.folders import FolderError

    class NoCleanTask:
        def check_task(self, task):
            if task == "clean":
                raise FolderError("no clean-label subset")

    assert _runs_task(NoCleanTask(), "noisy") and not _runs_task(NoCleanTask(), "clean")


def test_pretraining_monitors_a_multilabel_set_with_knn_map():
    from test_train import tiny_config

    from uclser_lib.train import pretrain

    train = make_multilabel_set(12, 0)
    cfg = tiny_config(epochs=1, milestones=[1], knn_every=1, knn_k=3)
    _, history = pretrain(cfg, train, {"val": make_multilabel_set(8, 1)}, progress=False)
    row = history[-1]
    assert {"val_knn_map", "val_knn_dprime"} <= set(row) and "val_knn_top1" not in row
    assert 0 < row["val_knn_map"] <= 1
