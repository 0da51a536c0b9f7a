"""What an encoder learned, and the course's result tables.

- Clip embeddings (mean of a clip's evaluation-patch embeddings), nearest clips by cosine similarity and
  retrieval precision;
- 2-D maps of embeddings: PCA (exact SVD) and a small exact t-SNE (O(N^2) memory: a few thousand points);
- the normalisation the authors' released encoders expect (docs/released-code.md);
- the GPU results of ``python -m uclser_lib evaluate`` in ``pretrained/results/``, paired as pre-trained vs
  random init, and a Markdown table for the notebooks.

Nothing here draws random numbers: the t-SNE starts from the PCA map.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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


__all__ += ["hardest_negative_share", "pair_auc", "positive_ranks"]
