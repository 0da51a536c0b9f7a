"""Evaluation: the kNN monitor of pre-training, clip-level prediction and (balanced) accuracy (docs/method.md §10);
the multi-label metrics of FSD50K's protocol (macro mAP, d', lwlrap) and its clip aggregation.

All accuracies are in percent. Class indices are ``0 .. n_classes - 1``; clips are identified by integer ids.
Multi-label labels are multi-hot (N, C) arrays of 0/1 (or bool) and scores (N, C) real numbers, higher = more
likely; the multi-label metrics are fractions in [0, 1] (d' is unbounded), as FSD50K and HEAR report them.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm, rankdata

__all__ = [
    "average_precision_per_class",
    "balanced_accuracy",
    "clip_metrics",
    "clip_predictions",
    "dprime",
    "dprime_per_class",
    "knn_monitor",
    "knn_multilabel",
    "lwlrap",
    "mean_average_precision",
    "multilabel_clip_scores",
    "multilabel_metrics",
    "per_class_recall",
    "roc_auc_per_class",
]


def _as_long(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer array, got dtype {t.dtype} and shape {tuple(t.shape)}")
    return t.long()


def _n_classes(n_classes: int | None, *labels: torch.Tensor) -> int:
    needed = max(int(t.max()) for t in labels) + 1
    if min(int(t.min()) for t in labels) < 0:
        raise ValueError("class indices must be >= 0")
    if n_classes is None:
        return needed
    if n_classes < needed:
        raise ValueError(f"n_classes = {n_classes} but a class index {needed - 1} occurs")
    return n_classes


def _majority(groups: torch.Tensor, values: torch.Tensor, n_groups: int, n_classes: int) -> torch.Tensor:
    """Per group, the most frequent value (ties to the smallest). groups, values: same shape, long."""
    counts = torch.zeros(n_groups * n_classes, dtype=torch.long, device=values.device)
    counts.index_add_(0, (groups * n_classes + values).reshape(-1), torch.ones_like(values).reshape(-1))
    return counts.view(n_groups, n_classes).argmax(dim=1)  # argmax returns the first maximum


def _clip_means(per_patch: torch.Tensor, clip_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """(patches, C) values and each patch's clip id -> (sorted clip ids (n_clips,), each clip's mean (n_clips, C))."""
    clip_ids = _as_long(clip_ids, "clip_ids").to(per_patch.device)
    if len(clip_ids) != len(per_patch):
        raise ValueError(f"clip_ids has {len(clip_ids)} entries for {len(per_patch)} patches")
    clips, inverse = torch.unique(clip_ids, return_inverse=True)
    sums = torch.zeros(len(clips), per_patch.shape[1], dtype=per_patch.dtype, device=per_patch.device)
    sums.index_add_(0, inverse, per_patch)
    return clips, sums / torch.bincount(inverse, minlength=len(clips)).unsqueeze(1)


def per_class_recall(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """(n_classes,) recall of each class in percent; NaN for a class absent from ``y_true``."""
    y_true, y_pred = _as_long(y_true, "y_true").cpu(), _as_long(y_pred, "y_pred").cpu()
    if y_true.shape != y_pred.shape or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty and of equal length, got {len(y_true)} and {len(y_pred)}"
        )
    n = _n_classes(n_classes, y_true, y_pred)
    total = torch.bincount(y_true, minlength=n).double().numpy()
    correct = torch.bincount(y_true[y_true == y_pred], minlength=n).double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * correct / total


def balanced_accuracy(y_true, y_pred, n_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``y_true``, in percent
    (= ``sklearn.metrics.balanced_accuracy_score * 100``)."""
    return float(np.nanmean(per_class_recall(y_true, y_pred, n_classes)))


def clip_predictions(patch_probs: torch.Tensor, clip_ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average patch class probabilities (P, C) (softmax outputs) per clip.

    Returns ``(clips, probs, pred)``: the sorted unique clip ids (n,), mean probabilities (n, C) and
    their argmax (n,).
    """
    if patch_probs.ndim != 2:
        raise ValueError(f"patch_probs must be (patches, classes), got shape {tuple(patch_probs.shape)}")
    if not torch.allclose(
        patch_probs.sum(1), torch.ones((), dtype=patch_probs.dtype, device=patch_probs.device), atol=1e-3
    ):
        raise ValueError("patch_probs rows must sum to 1 (softmax probabilities, not logits)")
    clips, probs = _clip_means(patch_probs, clip_ids)
    return clips, probs, probs.argmax(1)


def clip_metrics(probs_per_clip: torch.Tensor, y_true) -> dict:
    """Metrics of clip predictions (n, C) against true classes (n,).

    Returns ``top1`` (micro %), ``balanced`` (macro %), ``top3`` (% of clips whose class is among the 3 most
    probable), ``per_class`` ((C,) recall %, NaN for absent classes) and ``confusion`` ((C, C) counts,
    rows = true class, columns = predicted).
    """
    probs = torch.as_tensor(probs_per_clip).detach().cpu()
    y_true = _as_long(y_true, "y_true").cpu()
    if probs.ndim != 2 or len(probs) != len(y_true):
        raise ValueError(
            f"probs_per_clip must be (n_clips, classes) with n_clips = {len(y_true)}, got {tuple(probs.shape)}"
        )
    n = probs.shape[1]
    pred = probs.argmax(1)
    top3 = (probs.topk(min(3, n), dim=1).indices == y_true[:, None]).any(1)
    confusion = torch.bincount(y_true * n + pred, minlength=n * n).view(n, n).numpy()
    per_class = per_class_recall(y_true, pred, n)
    return {
        "top1": 100.0 * float((pred == y_true).double().mean()),
        "balanced": float(np.nanmean(per_class)),
        "top3": 100.0 * float(top3.double().mean()),
        "per_class": per_class,
        "confusion": confusion,
    }


def knn_monitor(
    embeddings: torch.Tensor, labels, clip_ids, k: int = 200, n_classes: int | None = None, chunk: int = 4096
) -> dict:
    """Leave-own-clip-out kNN classification of clips from L2-normalised patch embeddings (docs/method.md §10).

    embeddings (P, D) unit-norm patch embeddings; labels (P,) patch classes (the clip's class); clip_ids (P,).
    Each patch of clip c takes the ``k`` most cosine-similar patches among those not of clip c and votes
    their most frequent label; the clip takes its patches' most frequent vote; ties go to the smallest
    class. Similarities are computed ``chunk`` query patches at a time (memory O(chunk * P)).

    Returns ``top1`` (micro %), ``balanced`` (macro %) and ``per_class`` ((n_classes,) recall %, NaN for
    a class without clips).
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (patches, dim), got shape {tuple(embeddings.shape)}")
    device = embeddings.device
    labels = _as_long(labels, "labels").to(device)
    clip_ids = _as_long(clip_ids, "clip_ids").to(device)
    if not len(labels) == len(clip_ids) == len(embeddings):
        raise ValueError(
            f"embeddings, labels, clip_ids lengths differ: {len(embeddings)}, {len(labels)}, {len(clip_ids)}"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n_classes = _n_classes(n_classes, labels)
    clips, inverse = torch.unique(clip_ids, return_inverse=True)
    patches_per_clip = torch.bincount(inverse, minlength=len(clips))
    if k < 1 or k > len(labels) - int(patches_per_clip.max()):
        raise ValueError(
            f"k = {k} must be in [1, {len(labels) - int(patches_per_clip.max())}] (the fewest patches outside one clip)"
        )
    clip_label = torch.full((len(clips),), -1, dtype=torch.long, device=device).scatter_(0, inverse, labels)
    if not torch.equal(clip_label[inverse], labels):
        raise ValueError("labels differ between patches of the same clip")

    votes = torch.empty_like(labels)
    for start in range(0, len(labels), chunk):
        stop = min(start + chunk, len(labels))
        sim = embeddings[start:stop] @ embeddings.T  # (c, P) cosine similarities
        sim.masked_fill_(inverse[start:stop, None] == inverse[None, :], float("-inf"))  # leave own clip out
        neighbours = labels[sim.topk(k, dim=1).indices]  # (c, k)
        rows = torch.arange(stop - start, device=device)[:, None].expand_as(neighbours)
        votes[start:stop] = _majority(rows, neighbours, stop - start, n_classes)
    pred = _majority(inverse, votes, len(clips), n_classes)

    per_class = per_class_recall(clip_label, pred, n_classes)
    return {
        "top1": 100.0 * float((pred == clip_label).double().mean()),
        "balanced": float(np.nanmean(per_class)),
        "per_class": per_class,
    }


# ---------------------------------------------------------------- multi-label (FSD50K's protocol)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _multilabel_inputs(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """``(labels as float64 0/1 (N, C), scores as float64 (N, C))``, checked: one-line ValueError otherwise."""
    y, s = _numpy(y_true), _numpy(scores)
    if y.ndim != 2 or s.shape != y.shape or y.size == 0:
        raise ValueError(
            f"y_true and scores must be non-empty (clips, classes) arrays of one shape, got {y.shape} and {s.shape}"
        )
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool) or not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must be multi-hot (0/1 or bool), got values such as {np.setdiff1d(y, (0, 1))[:3]}")
    if not np.issubdtype(s.dtype, np.number) or not np.isfinite(s).all():
        raise ValueError("scores must be finite numbers (logits or probabilities), got NaN, inf or non-numbers")
    return y.astype(np.float64), s.astype(np.float64)


def average_precision_per_class(y_true, scores) -> np.ndarray:
    """(C,) average precision of each class: labels ``y_true`` (N, C) multi-hot, ``scores`` (N, C).

    AP = sum over the distinct score thresholds, from the highest, of (recall gained) x (precision there), tied
    scores taken together: ``sklearn.metrics.average_precision_score`` of each column. NaN for a class with no
    positive clip (sklearn gives 0 there, with a warning; its AP is undefined).
    """
    y, s = _multilabel_inputs(y_true, scores)
    out = np.full(y.shape[1], np.nan)
    for c in np.flatnonzero(y.sum(0) > 0):
        order = np.argsort(-s[:, c], kind="stable")
        sc, yc = s[order, c], y[order, c]
        last = np.r_[np.flatnonzero(np.diff(sc)), len(sc) - 1]  # the last clip of each group of tied scores
        tps = np.cumsum(yc)[last]
        precision, recall = tps / (last + 1), tps / tps[-1]
        out[c] = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    return out


def mean_average_precision(y_true, scores) -> float:
    """Macro mAP: the mean of :func:`average_precision_per_class` over the classes with at least one positive clip.

    Equals ``sklearn.metrics.average_precision_score(y_true, scores, average="macro")`` when every class has a
    positive (sklearn counts a class without one as AP 0). ValueError when no class has a positive.
    """
    ap = average_precision_per_class(y_true, scores)
    if np.isnan(ap).all():
        raise ValueError("mAP: no class has a positive clip in y_true")
    return float(np.nanmean(ap))


def roc_auc_per_class(y_true, scores) -> np.ndarray:
    """(C,) area under the ROC curve of each class (ties count one half: the Mann-Whitney statistic, as
    ``sklearn.metrics.roc_auc_score(average=None)``); NaN for a class with no positive or no negative clip."""
    y, s = _multilabel_inputs(y_true, scores)
    pos = y.sum(0)
    neg = len(y) - pos
    ranks = rankdata(s, axis=0)  # average ranks of tied scores
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(0) - pos * (pos + 1) / 2) / (pos * neg)
    auc[(pos == 0) | (neg == 0)] = np.nan
    return auc


def dprime_per_class(y_true, scores) -> np.ndarray:
    """(C,) d' of each class from its ROC AUC: ``sqrt(2) * Phi^{-1}(AUC)`` (the AUC of two unit-variance Gaussians d'
    apart), as HEAR's scorer computes it. AUC 0.5 is d' 0; a perfectly separated class (AUC 1) is ``+inf``. NaN for
    a class with no positive or no negative clip."""
    return np.sqrt(2.0) * norm.ppf(roc_auc_per_class(y_true, scores))


def dprime(y_true, scores) -> float:
    """Macro d': the mean of :func:`dprime_per_class` over the classes with both positive and negative clips (HEAR
    averages over every class and gives NaN when one lacks either). ``+inf`` when a class is perfectly separated.
    ValueError when no class has both."""
    d = dprime_per_class(y_true, scores)
    if np.isnan(d).all():
        raise ValueError("d': no class has both positive and negative clips in y_true")
    return float(np.nanmean(d))


def lwlrap(y_true, scores, chunk: int = 1024) -> float:
    """Label-weighted label-ranking average precision (FSD50K, DCASE 2019 task 2).

    For each (clip, true label) pair: the precision of the clip's ranking of classes by ``scores`` at that label,
    i.e. (the clip's true labels scored at least as high) / (the classes scored at least as high); lwlrap is the mean
    over all pairs, so each label weighs the same whatever clip carries it (the per-class lwlrap weighted by the
    class's share of labels). Tied scores count as ranked above (as ``sklearn.metrics.label_ranking_average_precision
    _score``; the DCASE code breaks ties by sort order): lwlrap = that score with each clip weighted by its number of
    labels. Clips without labels play no part; ValueError when no clip has one. ``chunk`` clips at a time (memory
    O(chunk * C^2)).
    """
    y, s = _multilabel_inputs(y_true, scores)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if y.sum() == 0:
        raise ValueError("lwlrap: no clip has a label in y_true")
    total = 0.0
    for start in range(0, len(y), chunk):
        yc, sc = y[start : start + chunk], s[start : start + chunk]
        above = sc[:, None, :] >= sc[:, :, None]  # above[n, j, k]: class k scored at least as high as class j
        rank = above.sum(2)
        hits = (above * yc[:, None, :]).sum(2)
        total += float((yc * hits / rank).sum())
    return total / float(y.sum())


def multilabel_clip_scores(patch_logits: torch.Tensor, clip_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """FSD50K's clip aggregation: a clip's scores are the mean of its patches' logits, then a sigmoid.

    ``patch_logits`` (P, C) (raw outputs, not probabilities), ``clip_ids`` (P,) integers. Returns ``(clips,
    scores)``: the sorted unique clip ids (n,) and the clips' scores (n, C) in (0, 1).
    """
    if not torch.is_tensor(patch_logits) or patch_logits.ndim != 2 or not patch_logits.is_floating_point():
        got = tuple(patch_logits.shape) if torch.is_tensor(patch_logits) else type(patch_logits).__name__
        raise ValueError(f"patch_logits must be a float (patches, classes) tensor, got {got}")
    clips, mean = _clip_means(patch_logits, clip_ids)
    return clips, torch.sigmoid(mean)


def multilabel_metrics(y_true, scores) -> dict:
    """The multi-label metrics of clip scores (N, C) against multi-hot labels (N, C): ``map`` (macro mAP),
    ``dprime`` (macro d'), ``lwlrap``, ``per_class_ap`` and ``per_class_dprime`` ((C,), NaN where undefined)."""
    ap, d = average_precision_per_class(y_true, scores), dprime_per_class(y_true, scores)
    return {
        "map": mean_average_precision(y_true, scores),
        "dprime": dprime(y_true, scores),
        "lwlrap": lwlrap(y_true, scores),
        "per_class_ap": ap,
        "per_class_dprime": d,
    }


def knn_multilabel(embeddings: torch.Tensor, labels, clip_ids, k: int = 200, chunk: int = 4096) -> dict:
    """The kNN monitor of a multi-label set: leave-own-clip-out neighbours of L2-normalised patch embeddings vote
    with their clips' multi-hot labels.

    embeddings (P, D) unit-norm patch embeddings; labels (P, C) the multi-hot labels of each patch's clip;
    clip_ids (P,). Each patch scores each class by the share of its ``k`` most cosine-similar patches (none of its own
    clip) that carry the class; a clip's scores are the mean of its patches'. Returns :func:`multilabel_metrics` of
    the clips' scores (``map``, ``dprime``, ``lwlrap``, ...).
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (patches, dim), got shape {tuple(embeddings.shape)}")
    device = embeddings.device
    labels = torch.as_tensor(labels).to(device=device, dtype=torch.float32)
    clip_ids = _as_long(clip_ids, "clip_ids").to(device)
    if labels.ndim != 2 or not len(labels) == len(clip_ids) == len(embeddings):
        raise ValueError(
            f"embeddings (P, D), labels (P, C) and clip_ids (P,) must agree in P, got shapes "
            f"{tuple(embeddings.shape)}, {tuple(labels.shape)}, {tuple(clip_ids.shape)}"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    clips, inverse = torch.unique(clip_ids, return_inverse=True)
    fewest_outside = len(labels) - int(torch.bincount(inverse).max())
    if k < 1 or k > fewest_outside:
        raise ValueError(f"k = {k} must be in [1, {fewest_outside}] (the fewest patches outside one clip)")
    scores = torch.empty_like(labels)
    for start in range(0, len(labels), chunk):
        stop = min(start + chunk, len(labels))
        sim = embeddings[start:stop] @ embeddings.T
        sim.masked_fill_(inverse[start:stop, None] == inverse[None, :], float("-inf"))  # leave own clip out
        scores[start:stop] = labels[sim.topk(k, dim=1).indices].mean(1)
    _, clip_scores = _clip_means(scores, clip_ids)
    _, clip_labels = _clip_means(labels, clip_ids)
    if not torch.equal(clip_labels[inverse], labels):
        raise ValueError("labels differ between patches of the same clip")
    return multilabel_metrics(clip_labels.cpu().numpy(), clip_scores.cpu().numpy())
