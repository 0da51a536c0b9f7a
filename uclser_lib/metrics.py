"""Evaluation: the kNN monitor of pre-training, clip-level prediction and (balanced) accuracy (docs/method.md §10).

All accuracies are in percent. Class indices are ``0 .. n_classes - 1``; clips are identified by integer ids.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["balanced_accuracy", "clip_metrics", "clip_predictions", "knn_monitor", "per_class_recall"]


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
    clip_ids = _as_long(clip_ids, "clip_ids").to(patch_probs.device)
    if len(clip_ids) != len(patch_probs):
        raise ValueError(f"clip_ids has {len(clip_ids)} entries for {len(patch_probs)} patches")
    clips, inverse = torch.unique(clip_ids, return_inverse=True)
    sums = torch.zeros(len(clips), patch_probs.shape[1], dtype=patch_probs.dtype, device=patch_probs.device)
    sums.index_add_(0, inverse, patch_probs)
    probs = sums / torch.bincount(inverse, minlength=len(clips)).unsqueeze(1)
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
