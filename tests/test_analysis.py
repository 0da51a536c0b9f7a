import json
import math

import numpy as np
import pytest
import torch
from synthetic import floor_clips

from uclser_lib import analysis, embed, released, results, widgets
from uclser_lib.data import PackedClips, feature_stats
from uclser_lib.results import summarise

# ---------------------------------------------------------------- released normalisation (docs/released-code.md)


def test_released_std_is_the_released_formula(reference):
    """std / sqrt(N) equals the released sqrt(sum of squared deviations) / N, on the reference clips."""
    clips = torch.from_numpy(reference("knn_monitor")["clips"]).double()
    expected = float(torch.sqrt(((clips - clips.mean()) ** 2).sum()) / clips.numel())
    _, std = feature_stats(PackedClips.from_list([clips.float().numpy()]))
    assert released.released_std(std, clips.numel()) == pytest.approx(expected, rel=1e-9)
    assert expected < std / 100  # inputs end up hundreds of times too large


def test_released_std_is_the_released_formula_on_any_features():
    """The same identity on synthetic features of two clips, computed from the formula in float64."""
    rng = np.random.default_rng(0)
    clips = [rng.normal(-3.0, 1.5, (t, 96)).astype(np.float32) for t in (101, 250)]
    values = np.concatenate(clips).astype(np.float64)
    expected = float(np.sqrt(((values - values.mean()) ** 2).sum()) / values.size)
    _, std = feature_stats(PackedClips.from_list(clips))
    assert released.released_std(std, values.size) == pytest.approx(expected, rel=1e-9)


def test_released_std_default_is_fsdnoisy18k_sized():
    # 38.6 h of noisy train: about 13.9 M frames of 96 bands
    assert 1.2e9 < released.FSD_NOISY_VALUES < 1.5e9
    assert released.released_std(2.0) == pytest.approx(2.0 / math.sqrt(released.FSD_NOISY_VALUES))


@pytest.mark.parametrize("std, n", [(0.0, 10), (-1.0, 10), (float("nan"), 10), (1.0, 0), (1.0, float("inf"))])
def test_released_std_rejects_bad_input(std, n):
    with pytest.raises(ValueError):
        released.released_std(std, n)


# ---------------------------------------------------------------- clip embeddings and retrieval


def test_clip_embeddings_average_each_clips_eval_patches():
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(t, 96, generator=g).numpy() for t in (101, 180, 260)]  # 1, 2 and 4 patches
    packed = PackedClips.from_list(clips)
    mean, std = 0.5, 2.0

    def fn(x):  # (B, 1, 101, 96) -> (B, 3): statistics that tell patches apart
        return torch.stack([x.mean((1, 2, 3)), x[:, 0, 0, :].mean(1), x[:, 0, -1, 0]], dim=1)

    emb = embed.clip_embeddings(fn, packed, mean, std, device="cpu")
    assert emb.shape == (3, 3) and emb.dtype == torch.float32
    for i, clip in enumerate(clips):
        x = (torch.from_numpy(clip) - mean) / std
        patches = torch.stack([x[s : s + 101] for s in range(0, len(x) - 100, 50)])[:, None]
        torch.testing.assert_close(emb[i], fn(patches).mean(0))


def test_nearest_clips_excludes_the_query_and_orders_by_cosine():
    emb = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    idx, sims = analysis.nearest_clips(emb, 0, k=3)
    assert idx.tolist() == [1, 3, 2]  # cosine ignores the norm: clip 1 is nearest despite its length
    np.testing.assert_allclose(sims.numpy(), [10 / math.sqrt(101), 1 / math.sqrt(2), 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="query"):
        analysis.nearest_clips(emb, 5)
    with pytest.raises(ValueError, match="k must"):
        analysis.nearest_clips(emb, 0, k=5)


def test_retrieval_precision_matches_sklearn_neighbours():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    emb = rng.normal(size=(4, 8))[labels] + 1.2 * rng.normal(size=(60, 8))
    k = 5
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(emb)
    idx = nn.kneighbors(emb, return_distance=False)[:, 1:]  # the first neighbour is the clip itself
    expected = 100 * (labels[idx] == labels[:, None]).mean()
    assert analysis.retrieval_precision(torch.from_numpy(emb), labels, k) == pytest.approx(expected)
    clustered = np.eye(3)[labels % 3] + 0.01 * rng.normal(size=(60, 3))
    assert analysis.retrieval_precision(torch.from_numpy(clustered), labels % 3, k) == 100.0


def test_retrieval_precision_rejects_bad_input():
    emb = torch.randn(5, 3)
    with pytest.raises(ValueError, match="labels"):
        analysis.retrieval_precision(emb, [0, 1, 0], 2)
    with pytest.raises(ValueError, match="NaN"):
        analysis.retrieval_precision(torch.full((5, 3), float("nan")), [0] * 5, 2)
    with pytest.raises(ValueError, match="embeddings"):
        analysis.retrieval_precision(torch.randn(5), [0] * 5, 2)


# ---------------------------------------------------------------- PCA and t-SNE


def test_pca_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 12)) @ rng.normal(size=(12, 12))
    coords, explained = analysis.pca(torch.from_numpy(x), 3)
    ref = PCA(3).fit(x)
    expected = ref.transform(x)
    np.testing.assert_allclose(np.abs(coords.numpy()), np.abs(expected), atol=1e-8)
    np.testing.assert_allclose(explained.numpy(), ref.explained_variance_ratio_, atol=1e-10)
    assert (coords.gather(0, coords.abs().argmax(0, keepdim=True)) > 0).all()  # the documented sign rule
    with pytest.raises(ValueError, match="k must"):
        analysis.pca(torch.from_numpy(x), 13)


def test_affinities_reach_the_perplexity():
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    d2 = torch.cdist(x, x).pow(2).fill_diagonal_(math.inf)
    p = analysis._affinities(d2, 10.0)
    assert torch.allclose(p.sum(1), torch.ones(50, dtype=torch.float64)) and (p.diagonal() == 0).all()
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    torch.testing.assert_close(torch.exp(entropy), torch.full((50,), 10.0, dtype=torch.float64), rtol=1e-4, atol=0)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:300], y[:300]


def test_tsne_keeps_neighbourhoods_as_well_as_sklearn(digits):
    from sklearn.manifold import TSNE, trustworthiness

    x, y = digits
    ours = analysis.tsne(torch.from_numpy(x), perplexity=30).numpy()
    ref = TSNE(2, perplexity=30, init="pca", random_state=0).fit_transform(x)
    assert ours.shape == (300, 2) and np.isfinite(ours).all()
    assert trustworthiness(x, ours, n_neighbors=10) >= trustworthiness(x, ref, n_neighbors=10) - 0.01
    # classes stay together: a point's nearest 2-D neighbour mostly shares its digit
    d = np.linalg.norm(ours[:, None] - ours[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.9


def test_tsne_is_deterministic_and_checks_its_input(digits):
    x = torch.from_numpy(digits[0][:60])
    torch.testing.assert_close(analysis.tsne(x, 10, n_iter=50), analysis.tsne(x, 10, n_iter=50), rtol=0, atol=0)
    with pytest.raises(ValueError, match="perplexity"):
        analysis.tsne(x, perplexity=59)
    with pytest.raises(ValueError, match="n_iter"):
        analysis.tsne(x, n_iter=0)


# ---------------------------------------------------------------- result files and tables


def _rows():
    rows = []
    for seed, (pre, rnd) in enumerate([(60.0, 40.0), (64.0, 44.0)]):
        rows.append(dict(arch="vgglike", init="pretrained", stage="linear", task="noisy", seed=seed, test_balanced=pre))
        rows.append(dict(arch="vgglike", init="random", stage="linear", task="noisy", seed=seed, test_balanced=rnd))
    rows.append(dict(arch="vgglike", init="pretrained", stage="finetune", task="clean", seed=0, test_balanced=70.0))
    return rows


def test_paired_summary_pairs_the_inits():
    paired = results.paired_summary(summarise(_rows()))
    assert len(paired) == 1  # the fine-tuning row has no random-init partner
    row = paired[0]
    assert (row["stage"], row["task"], row["n"]) == ("linear", "noisy", 2)
    assert row["pretrained"] == 62.0 and row["random"] == 42.0 and row["gain"] == 20.0
    assert row["pretrained_std"] == pytest.approx(np.std([60, 64], ddof=1))
    with pytest.raises(ValueError, match="init"):
        results.paired_summary([dict(arch="x", init="scratch", stage="linear", task="noisy", mean=1, std=0, n=1)])


def test_load_results(tmp_path):
    path = tmp_path / "results-course-x.json"
    path.write_text(json.dumps({"rows": _rows(), "summary": summarise(_rows()), "encoder": "course-x"}))
    assert results.load_results("course-x", tmp_path)["encoder"] == "course-x"
    with pytest.raises(FileNotFoundError, match="course-x"):
        results.load_results("course-y", tmp_path)
    (tmp_path / "results-course-z.json").write_text("{}")
    with pytest.raises(ValueError, match="missing"):
        results.load_results("course-z", tmp_path)


def test_shipped_results_pair_up():
    shipped = sorted(results.RESULTS_DIR.glob("results-*.json"))
    if not shipped:
        pytest.skip("no results in pretrained/results")
    for path in shipped:
        paired = results.paired_summary(results.load_results(path.stem.removeprefix("results-"))["summary"])
        assert {(r["stage"], r["task"]) for r in paired} == {
            ("linear", "noisy"),
            ("finetune", "noisy"),
            ("finetune", "clean"),
        }


def test_markdown_table():
    text = results.markdown_table(["model", "acc (%)", "n"], [["a", 61.234, 2], ["b", np.float64(5.0), 1]])
    assert text.splitlines() == ["| model | acc (%) | n |", "|---|---|---|", "| a | 61.2 | 2 |", "| b | 5.0 | 1 |"]
    with pytest.raises(ValueError, match="cells"):
        results.markdown_table(["a", "b"], [[1]])


# ----------------------------------------------------------------------------------------------------------------------
# Mix-back and the background shortcut


def test_mix_back_blurs_the_noise_floor_shortcut():
    clips = floor_clips()
    only = {name: False for name, c in widgets.CONTROLS.items() if c.kind == "toggle"}
    packed = PackedClips.from_list(clips * 2)
    plain = analysis.pair_gaps(packed, widgets.config_from_controls(only), seed=1)
    mixed = analysis.pair_gaps(
        packed, widgets.config_from_controls({**only, "mix_back": True, "mix_alpha": 0.5}), seed=1
    )
    assert plain["positive"].shape == plain["negative"].shape == (6,)
    # clip i - 1 is a copy of clip i + 2, and of the other two clips: the floors tell clips apart
    assert plain["positive"].max() < 0.2 < plain["negative"].min()
    assert mixed["positive"].mean() > 2 * plain["positive"].mean()
    with pytest.raises(ValueError, match="3 clips"):
        analysis.pair_gaps(PackedClips.from_list(clips[:2]), widgets.config_from_controls(only), seed=1)
    with pytest.raises(ValueError, match="AugmentConfig"):
        analysis.pair_gaps(packed, only, seed=1)
    with pytest.raises(ValueError, match="q"):
        analysis.band_quantile(torch.zeros(2, 101, 96), 1.5)


# ----------------------------------------------------------------------------------------------------------------------
# The measurements notebooks 01-03 add to explain the recipe


def test_pair_auc():
    assert analysis.pair_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert analysis.pair_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert analysis.pair_auc([1.0], [1.0]) == 0.5  # ties count half
    with pytest.raises(ValueError):
        analysis.pair_auc([], [1.0])


def test_positive_ranks():
    z1 = torch.eye(4)
    assert analysis.positive_ranks(z1, z1).tolist() == [1] * 8  # each view's twin is identical: rank 1
    ranks = analysis.positive_ranks(z1, z1.roll(1, 0))  # every positive orthogonal to its anchor, one negative equal
    assert ranks.min() >= 2 and ranks.max() <= 7
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    r = analysis.positive_ranks(z[:32], z[32:])
    assert r.shape == (64,) and 1 <= r.min() and r.max() <= 63 and 20 < r.float().mean() < 44  # random: about N
    with pytest.raises(ValueError):
        analysis.positive_ranks(torch.ones(3, 2), torch.ones(2, 2))


def test_hardest_negative_share_grows_as_the_temperature_falls():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(8, 16, generator=g)
    z2 = z1 + 0.3 * torch.randn(8, 16, generator=g)
    w = [analysis.hardest_negative_share(z1, z2, t).mean().item() for t in (0.01, 0.2, 1.0)]
    assert 1 >= w[0] > w[1] > w[2] > 1 / 14
    # at a huge temperature every negative weighs the same: 1 / (2N - 2)
    assert analysis.hardest_negative_share(z1, z2, 1e6).mean().item() == pytest.approx(1 / 14, rel=1e-3)
    with pytest.raises(ValueError):
        analysis.hardest_negative_share(z1, z2, 0.0)


# ---------------------------------------------------------------- what a representation keeps: the ridge probe


def _linear_data(n, d, noise, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, d)) * rng.uniform(0.1, 10.0, d) + rng.normal(0.0, 5.0, d)  # unequal scales
    w = rng.normal(0.0, 1.0, d)
    return x, x @ w + 3.0 + noise * rng.normal(0.0, 1.0, n)


def test_ridge_probe_recovers_a_known_linear_relation():
    x, y = _linear_data(600, 8, 1e-3, 0)
    out = analysis.ridge_probe(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:])
    assert out["test_r2"] > 0.9999 and out["val_r2"] > 0.9999
    assert out["penalty"] == min(analysis.RIDGE_PENALTIES)  # no noise: the least penalty wins on val
    assert out["test_pred"].shape == (100,)


def test_ridge_probe_chooses_the_penalty_on_validation_only():
    """Few rows, many features of which two matter, noisy target: a penalty well above the least must win on val
    (the least overfits: R^2 below 0 there); a test target of pure noise changes nothing that was chosen (the
    penalty, the val R^2), only the test R^2."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40))
    y = x[:, 0] + x[:, 1] + rng.normal(size=300)
    a = analysis.ridge_probe(x[:50], y[:50], x[50:175], y[50:175], x[175:], y[175:])
    b = analysis.ridge_probe(x[:50], y[:50], x[50:175], y[50:175], x[175:], rng.normal(size=125))
    assert a["penalty"] > 1.0 and a["val_r2"] == max(a["val_curve"])
    assert a["val_curve"][0] < 0 < a["val_r2"] - 0.2
    assert (a["penalty"], a["val_r2"]) == (b["penalty"], b["val_r2"])
    assert a["test_r2"] > 0.2 and b["test_r2"] < 0.05


def test_ridge_probe_on_a_feature_without_information_scores_near_zero():
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.0, 1.0, (900, 20)), rng.uniform(0.75, 1.0, 900)
    out = analysis.ridge_probe(x[:600], y[:600], x[600:750], y[600:750], x[750:], y[750:])
    assert abs(out["test_r2"]) < 0.1


def test_r2_score_matches_sklearn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(3)
    y, pred = rng.normal(size=50), rng.normal(size=50)
    assert analysis.r2_score(y, pred) == pytest.approx(r2_score(y, pred), rel=1e-12)
    assert analysis.r2_score(y, y) == 1.0
    with pytest.raises(ValueError):
        analysis.r2_score(np.ones(5), np.ones(5))


@pytest.mark.parametrize(
    "bad",
    [
        dict(x_val=np.zeros((10, 3))),  # wrong width
        dict(y_test=np.zeros(3)),  # wrong length
        dict(x_train=np.full((20, 4), np.nan)),
        dict(penalties=[0.0, 1.0]),
    ],
)
def test_ridge_probe_rejects_bad_input(bad):
    x, y = _linear_data(60, 4, 0.1, 4)
    args = dict(x_train=x[:20], y_train=y[:20], x_val=x[20:40], y_val=y[20:40], x_test=x[40:], y_test=y[40:])
    with pytest.raises(ValueError):
        analysis.ridge_probe(**(args | bad))


def test_group_split_keeps_each_group_in_one_split():
    groups = np.repeat(np.arange(50), 3)
    parts = analysis.group_split(groups, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(150))
    sets = [set(groups[p].tolist()) for p in parts]
    assert [len(s) for s in sets] == [30, 10, 10] and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert all(np.array_equal(a, b) for a, b in zip(parts, analysis.group_split(groups, seed=0)))
    assert not np.array_equal(parts[2], analysis.group_split(groups, seed=1)[2])
    with pytest.raises(ValueError):
        analysis.group_split([0, 0, 1], seed=0)


def test_projected_encoder_is_the_head_on_the_embedding():
    from uclser_lib import models
    from uclser_lib.downstream import LinearProbe

    torch.manual_seed(0)
    encoder, head = models.build_encoder("crnn"), models.ProjectionHead(64, 32, 16)
    both = analysis.ProjectedEncoder(encoder, head).train()
    assert not encoder.training and not head.training and both.embedding_dim == 16
    x = torch.randn(3, 1, 101, 96)
    with torch.no_grad():
        assert torch.allclose(both.embed(x), head(encoder.embed(x)))
        assert torch.allclose(both.embed(x).norm(dim=1), torch.ones(3))
    assert LinearProbe(both, torch.nn.Linear(16, 4)).embedding_dim == 16  # linear_eval's probe accepts it
    with pytest.raises(ValueError):
        analysis.ProjectedEncoder(encoder, models.ProjectionHead(512))
