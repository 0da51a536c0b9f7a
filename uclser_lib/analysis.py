"""What an encoder learned, and the course's result tables.

- Clip embeddings (mean of a clip's evaluation-patch embeddings), nearest clips by cosine similarity and
  retrieval precision;
- 2-D maps of embeddings: PCA (exact SVD) and a small exact t-SNE (O(N^2) memory: a few thousand points);
- the normalisation the authors' released encoders expect (docs/released-code.md);
- small measurements of why the recipe works: how far apart a clip's two views are against other clips' (in the
  features' per-band noise floor, :func:`pair_gaps`, or in embeddings), the push of the hardest negative;
- what a representation keeps: the projection head's output as an encoder (:class:`ProjectedEncoder`) and a
  ridge probe of a known factor (:func:`ridge_probe`, on :func:`group_split`'s splits);
- the GPU results of ``python -m uclser_lib evaluate`` in ``pretrained/results/``, paired as pre-trained vs
  random init, and a Markdown table for the notebooks.

The maps draw no random numbers (the t-SNE starts from the PCA map); :func:`pair_gaps` draws its views from
the seed it is given.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentConfig
from .data import PackedClips
from .models import Encoder, ProjectionHead
from .views import ViewBuilder

__all__ = ["nearest_clips", "pca", "retrieval_precision", "tsne"]


# ---------------------------------------------------------------------------------------------
# Clip embeddings and retrieval


def _check_embeddings(emb: torch.Tensor) -> torch.Tensor:
    emb = torch.as_tensor(emb)
    if emb.ndim != 2 or len(emb) < 2:
        raise ValueError(f"embeddings must be (N >= 2, D), got shape {tuple(emb.shape)}")
    if not torch.isfinite(emb).all():
        raise ValueError("embeddings hold NaN or inf")
    return emb.double()


def _cosine_others(emb: torch.Tensor) -> torch.Tensor:
    """(N, N) cosine similarities with -inf on the diagonal (a clip is never its own neighbour)."""
    z = F.normalize(emb, dim=1)
    sim = z @ z.T
    return sim.fill_diagonal_(-math.inf)


def nearest_clips(emb: torch.Tensor, query: int, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` clips most cosine-similar to clip ``query`` (itself excluded), most similar first.

    ``emb``: (N, D) clip embeddings. Returns indices (k,) int64 and their cosine similarities (k,) float64.
    """
    emb = _check_embeddings(emb)
    n = len(emb)
    if not 0 <= query < n:
        raise ValueError(f"query must be a clip index in [0, {n}), got {query}")
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] (the other clips), got {k}")
    sims, idx = _cosine_others(emb)[query].topk(k)
    return idx, sims


def retrieval_precision(emb: torch.Tensor, labels, k: int = 3) -> float:
    """Mean over clips of the share (%) of their ``k`` most cosine-similar other clips with the same label.

    ``emb``: (N, D) clip embeddings; ``labels``: (N,) classes. Chance is about the share of the commonest classes.
    """
    emb = _check_embeddings(emb)
    labels = torch.as_tensor(np.asarray(labels))
    if labels.shape != (len(emb),):
        raise ValueError(f"labels must be ({len(emb)},), one per clip, got shape {tuple(labels.shape)}")
    if not 1 <= k < len(emb):
        raise ValueError(f"k must be in [1, {len(emb) - 1}] (the other clips), got {k}")
    idx = _cosine_others(emb).topk(k, dim=1).indices
    return 100.0 * float((labels[idx] == labels[:, None]).double().mean())


# ---------------------------------------------------------------------------------------------
# 2-D maps


def pca(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Project the rows of ``x`` (N, D) on their first ``k`` principal components (exact SVD, no random draw).

    Returns the coordinates (N, k) float64 (centred; each component's sign chosen so that its largest-magnitude
    coordinate is positive) and the fraction of the variance each component explains (k,).
    """
    x = _check_embeddings(x)
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"k must be in [1, {min(x.shape)}] for data of shape {tuple(x.shape)}, got {k}")
    xc = x - x.mean(0)
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    coords = u[:, :k] * s[:k]
    signs = torch.sign(coords.gather(0, coords.abs().argmax(0, keepdim=True)))
    total = float((s**2).sum())
    return coords * signs, (s[:k] ** 2) / (total if total > 0 else 1.0)


def _affinities(d2: torch.Tensor, perplexity: float, steps: int = 100) -> torch.Tensor:
    """Conditional affinities p_j|i (N, N), rows summing to 1, each row's Gaussian width set by bisection so
    that its entropy is log(perplexity). ``d2``: squared distances (N, N) with +inf on the diagonal."""
    target = math.log(perplexity)
    d2 = d2 / d2[torch.isfinite(d2)].mean().clamp_min(1e-12)  # scale-free start for the bisection
    d2 = d2 - d2.min(1, keepdim=True).values  # stability; the entropy does not change
    beta = torch.ones(len(d2), dtype=d2.dtype)
    lo = torch.zeros_like(beta)
    hi = torch.full_like(beta, math.inf)
    for _ in range(steps):
        p = torch.exp(-d2 * beta[:, None])
        z = p.sum(1)
        entropy = torch.log(z) + beta * (torch.nan_to_num(d2, posinf=0.0) * p).sum(1) / z
        too_flat = entropy > target  # too wide: sharpen (larger beta)
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    return p / z[:, None]


def tsne(
    x: torch.Tensor, perplexity: float = 30.0, n_iter: int = 1000, early_exaggeration: float = 12.0
) -> torch.Tensor:
    """A 2-D t-SNE map (N, 2) float64 of the rows of ``x`` (N, D): exact gradients, so N up to a few thousand.

    As van der Maaten's reference and scikit-learn's exact method: Gaussian affinities calibrated to
    ``perplexity``, symmetrised; Student-t similarities in 2-D; gradient descent with momentum (0.5, then 0.8)
    and adaptive gains, learning rate max(N / early_exaggeration / 4, 50), the affinities multiplied by
    ``early_exaggeration`` for the first quarter of ``n_iter``. Deterministic: it starts from the PCA map
    scaled to a standard deviation of 1e-4.
    """
    x = _check_embeddings(x)
    n = len(x)
    if not 1 <= perplexity < n - 1:
        raise ValueError(f"perplexity must be in [1, N - 1) = [1, {n - 1}) for N = {n} points, got {perplexity}")
    if n_iter < 1 or early_exaggeration < 1:
        raise ValueError(f"expected n_iter >= 1 and early_exaggeration >= 1, got {n_iter} and {early_exaggeration}")
    d2 = torch.cdist(x, x).pow(2).fill_diagonal_(math.inf)
    p = _affinities(d2, perplexity)
    p = ((p + p.T) / (2 * n)).clamp_min(1e-12).fill_diagonal_(0.0)
    y, _ = pca(x, 2)
    y = y / y[:, 0].std().clamp_min(1e-12) * 1e-4
    lr = max(n / early_exaggeration / 4, 50.0)
    update, gains = torch.zeros_like(y), torch.ones_like(y)
    for it in range(n_iter):
        exaggeration = early_exaggeration if it < n_iter // 4 else 1.0
        momentum = 0.5 if it < n_iter // 4 else 0.8
        num = (1.0 / (1.0 + torch.cdist(y, y).pow(2))).fill_diagonal_(0.0)
        q = (num / num.sum()).clamp_min(1e-12)
        w = (exaggeration * p - q) * num
        grad = 4.0 * (w.sum(1, keepdim=True) * y - w @ y)
        same_sign = torch.sign(grad) == torch.sign(update)
        gains = torch.where(same_sign, gains * 0.8, gains + 0.2).clamp_min(0.01)
        update = momentum * update - lr * gains * grad
        y = y + update
    return y - y.mean(0)


# ---------------------------------------------------------------------------------------------
# Why the recipe works: small measurements for notebooks 01-03


def pair_auc(positive, negative) -> float:
    """How well a distance alone tells positive pairs from negative ones: the share of (positive, negative)
    combinations in which the positive pair is the closer (ties count half), i.e. the area under the ROC curve
    of "smaller distance = same clip". 0.5: the distance says nothing; 1: it always gives the pair away."""
    p = np.asarray(positive, dtype=np.float64).ravel()[:, None]
    n = np.asarray(negative, dtype=np.float64).ravel()[None, :]
    if p.size == 0 or n.size == 0:
        raise ValueError(f"pair_auc needs positive and negative pairs, got {p.size} and {n.size}")
    return float(np.mean(p < n) + 0.5 * np.mean(p == n))


def _pair_similarities(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2N, 2N) cosine similarities of the stacked views (diagonal -inf) and each anchor's positive column (2N,)."""
    z1, z2 = torch.as_tensor(z1), torch.as_tensor(z2)
    if z1.ndim != 2 or z1.shape != z2.shape or len(z1) < 2:
        raise ValueError(f"expected two (N >= 2, D) views of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    sim = (z @ z.T).fill_diagonal_(-math.inf)
    return sim, torch.cat([torch.arange(n, 2 * n), torch.arange(n)])


def positive_ranks(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Where each anchor's positive (its clip's other view) ranks among its 2N - 1 candidates by cosine similarity.

    ``z1``, ``z2``: (N, D) the two views of N clips (projections or embeddings). Returns (2N,) int64 ranks: 1 when
    the positive is the most similar candidate (what NT-Xent asks for), 2N - 1 when it is the least. Random
    vectors give N on average.
    """
    sim, pos = _pair_similarities(z1, z2)
    s_pos = sim[torch.arange(len(sim)), pos]
    return 1 + (sim > s_pos[:, None]).sum(1)


def hardest_negative_share(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The share of each anchor's push on its negatives that goes to its hardest (most similar) negative.

    The loss of anchor i is a cross-entropy over its 2N - 1 candidates with logits cos(z_i, z_k) / temperature; its
    gradient pushes each negative k away in proportion to k's softmax weight. Returns (2N,) float64: the hardest
    negative's weight divided by the weights of all 2N - 2 negatives, 1 / (2N - 2) when all weigh the same (a large
    temperature), 1 when only the hardest one counts (a small temperature).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    sim, pos = _pair_similarities(z1, z2)
    rows = torch.arange(len(sim))
    negatives = sim.clone()
    negatives[rows, pos] = -math.inf
    weights = torch.softmax(negatives / temperature, dim=1)  # softmax over the negatives only
    return weights.max(1).values


def band_quantile(patches: torch.Tensor, q: float) -> torch.Tensor:
    """Per-band ``q``-quantile over time of (..., T, F) log-mel patches: (..., F), in the patches' units.

    q = 0.1 traces the noise floor (the level a band sits at most of the time).
    """
    if not 0 <= q <= 1:
        raise ValueError(f"band_quantile: q must lie in [0, 1], got {q}")
    return torch.quantile(patches, q, dim=-2)


def pair_gaps(packed: PackedClips, cfg: AugmentConfig, seed: int, q: float = 0.1) -> dict[str, np.ndarray]:
    """How far apart positive and negative pairs of views are in a per-band quantile over time (log10 units).

    Builds the two views of every clip of ``packed`` (at least 3 clips, log10 mel) with the view recipe ``cfg``
    (e.g. ``widgets.config_from_controls(values)``), drawn with ``seed``, takes :func:`band_quantile` ``q`` of
    each view and returns, per clip i, the mean absolute difference over bands between its two views
    (``"positive"``, (N,) float32) and between its view 1 and clip i - 1's view 2 (``"negative"``, (N,)).
    With q = 0.1 (the noise floor) and ``cfg.normalise`` off this measures, in log10 units, how much a
    recording's background alone tells the two views of a clip apart from other clips'.
    """
    if not isinstance(cfg, AugmentConfig):
        raise ValueError(
            f"pair_gaps expects an AugmentConfig (widgets.config_from_controls makes one from control values), "
            f"got {type(cfg).__name__}"
        )
    if len(packed) < 3:
        raise ValueError(f"pair_gaps needs at least 3 clips, got {len(packed)}")
    x = ViewBuilder(packed, cfg).build(torch.arange(len(packed)), torch.Generator().manual_seed(seed))
    f1, f2 = band_quantile(x, q).chunk(2)
    return {
        "positive": (f1 - f2).abs().mean(1).numpy(),
        "negative": (f1 - f2.roll(1, 0)).abs().mean(1).numpy(),
    }


__all__ += ["band_quantile", "hardest_negative_share", "pair_auc", "pair_gaps", "positive_ranks"]


# ---------------------------------------------------------------------------------------------
# What a representation keeps: the projection head as an encoder, and a ridge probe of a known factor


class ProjectedEncoder(Encoder):
    """A frozen encoder followed by its projection head, seen as an encoder: ``embed(x) = head(encoder.embed(x))``.

    ``embed`` maps (B, 1, 101, 96) patches to the head's output g(h) (B, head output size), L2-normalised as in
    pre-training; ``embedding_dim`` is that size. Both parts stay in eval mode (``train()`` leaves them there), so
    :func:`~uclser_lib.downstream.linear_eval` and the embedding disk cache can take it where they take an encoder
    (the cache key covers both parts' weights). It has no classifier (``classifier()`` raises ``ValueError``).
    ``ValueError`` when the head does not take the encoder's ``embedding_dim`` inputs.
    """

    def __init__(self, encoder: Encoder, head: ProjectionHead):
        super().__init__()
        first = head.net1[0]
        if first.in_features != encoder.embedding_dim:
            raise ValueError(
                f"the projection head takes {first.in_features}-d inputs but the encoder ({type(encoder).__name__}) "
                f"gives {encoder.embedding_dim}-d embeddings"
            )
        self.encoder, self.head = encoder.eval(), head.eval()
        self.embedding_dim = head.net1[-1].out_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(x))

    def classifier(self):
        raise ValueError("a ProjectedEncoder has no classifier: it only gives the head's output (embed)")

    def train(self, mode: bool = True) -> ProjectedEncoder:
        super().train(mode)
        self.encoder.eval()
        self.head.eval()
        return self


#: The ridge penalties :func:`ridge_probe` chooses from (on standardised features): 1e-3 to 1e6, 4 per decade.
RIDGE_PENALTIES = tuple(float(p) for p in np.logspace(-3, 6, 37))


def r2_score(y, pred) -> float:
    """Coefficient of determination ``1 - sum((y - pred)^2) / sum((y - mean(y))^2)`` (scikit-learn's r2_score).

    1: perfect; 0: no better than predicting the mean of ``y``; negative: worse. ``ValueError`` for fewer than two
    values, mismatched shapes or a constant ``y``.
    """
    y, pred = np.asarray(y, dtype=np.float64).ravel(), np.asarray(pred, dtype=np.float64).ravel()
    if y.shape != pred.shape or len(y) < 2:
        raise ValueError(f"r2_score needs two equal-length arrays of >= 2 values, got {y.shape} and {pred.shape}")
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        raise ValueError("r2_score: y is constant, R^2 is undefined")
    return 1.0 - float(((y - pred) ** 2).sum()) / total


def ridge_probe(x_train, y_train, x_val, y_val, x_test, y_test, penalties=RIDGE_PENALTIES) -> dict:
    """How well a linear map of features predicts a number: closed-form ridge regression, penalty chosen on val.

    ``x_*`` (N, D) features and ``y_*`` (N,) targets of three disjoint splits. The features are standardised with
    the training split's per-column mean and std (a constant column is centred only), the target centred on its
    training mean (the intercept is not penalised). For each penalty p of ``penalties`` the weights
    ``w = argmin |X w - y|^2 + p |w|^2`` are fitted on train (one SVD, float64); the penalty with the best
    validation R^2 (:func:`r2_score`) is kept and only that fit is scored on test, so the test split chooses
    nothing. Returns ``penalty``, ``val_r2``, ``test_r2``, ``train_r2`` (floats), ``val_curve`` (the validation
    R^2 per penalty) and ``test_pred`` (N_test,). ``ValueError`` for mismatched shapes, an empty or one-row split,
    non-finite values, or no penalty > 0.
    """
    xs = [np.asarray(x, dtype=np.float64) for x in (x_train, x_val, x_test)]
    ys = [np.asarray(y, dtype=np.float64).ravel() for y in (y_train, y_val, y_test)]
    for name, x, y in zip(("train", "val", "test"), xs, ys):
        if x.ndim != 2 or len(x) != len(y) or len(x) < 2 or x.shape[1] != xs[0].shape[1]:
            raise ValueError(
                f"ridge_probe: {name} split: expected features (N >= 2, D) with D = {xs[0].shape[-1]} and N targets, "
                f"got {x.shape} and {y.shape}"
            )
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"ridge_probe: {name} split holds NaN or inf")
    penalties = [float(p) for p in penalties]
    if not penalties or min(penalties) <= 0:
        raise ValueError(f"ridge_probe: penalties must be > 0, got {penalties}")
    mu, sd = xs[0].mean(0), xs[0].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    xs = [(x - mu) / sd for x in xs]
    y_mean = ys[0].mean()
    u, s, vt = np.linalg.svd(xs[0], full_matrices=False)
    uty = u.T @ (ys[0] - y_mean)

    def weights(p):
        return vt.T @ (s / (s**2 + p) * uty)

    curve = [r2_score(ys[1], xs[1] @ weights(p) + y_mean) for p in penalties]
    best = int(np.argmax(curve))
    w = weights(penalties[best])
    pred = xs[2] @ w + y_mean
    return {
        "penalty": penalties[best],
        "train_r2": r2_score(ys[0], xs[0] @ w + y_mean),
        "val_r2": curve[best],
        "test_r2": r2_score(ys[2], pred),
        "val_curve": curve,
        "test_pred": pred,
    }


def group_split(groups, seed: int, fractions=(0.6, 0.2, 0.2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test) rows such that every group (e.g. the clip a patch comes from) lies in one split.

    The distinct values of ``groups`` (N,) are permuted with ``np.random.default_rng(seed)`` and cut by
    ``fractions`` (three positive numbers summing to 1; each split gets at least one group). Returns three sorted
    int64 index arrays covering the N rows. ``ValueError`` for fewer than three groups or bad fractions.
    """
    groups = np.asarray(groups).ravel()
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"group_split: fractions must be three positive numbers summing to 1, got {fractions}")
    names = np.unique(groups)
    if len(names) < 3:
        raise ValueError(f"group_split needs at least 3 groups, got {len(names)}")
    order = np.random.default_rng(seed).permutation(names)
    n_train = min(max(1, round(fractions[0] * len(names))), len(names) - 2)
    n_val = min(max(1, round(fractions[1] * len(names))), len(names) - n_train - 1)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    return tuple(np.flatnonzero(np.isin(groups, part)).astype(np.int64) for part in parts)


__all__ += ["RIDGE_PENALTIES", "ProjectedEncoder", "group_split", "r2_score", "ridge_probe"]
