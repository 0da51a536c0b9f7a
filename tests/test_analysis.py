import json
import math

import numpy as np
import pytest
import torch

from uclser_lib import analysis, embed, released, results
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
