"""Per-clip Python-loop kNN monitor, as the released code runs it: the baseline of the kNN benchmark.

Not part of the library (``uclser_lib.metrics.knn_monitor`` is the vectorised version); kept to time the
difference and to check that both give the same result.
"""

from __future__ import annotations

import numpy as np
import torch


def knn_monitor_loop(embeddings: torch.Tensor, labels, clip_ids, k: int = 200, n_classes: int | None = None) -> dict:
    """Same contract and result as ``uclser_lib.metrics.knn_monitor``, one clip at a time.

    Clips are taken in order of first appearance; each clip's patches are compared with every patch
    outside the clip, patch and clip votes use ``torch.unique`` counts (ties to the smallest class).
    """
    labels = torch.as_tensor(labels).long()
    clip_ids = torch.as_tensor(clip_ids).long()
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    correct = np.zeros(n_classes)
    total = np.zeros(n_classes)
    for clip in torch.unique(clip_ids):
        own = clip_ids == clip
        sim = embeddings[own] @ embeddings[~own].T
        neighbours = labels[~own][sim.topk(k, dim=1).indices]
        votes = torch.zeros(len(neighbours), dtype=torch.long)
        for i, row in enumerate(neighbours):
            values, counts = torch.unique(row, return_counts=True)
            votes[i] = values[counts.argmax()]
        values, counts = torch.unique(votes, return_counts=True)
        pred = int(values[counts.argmax()])
        truth = int(labels[own][0])
        correct[truth] += pred == truth
        total[truth] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = 100.0 * correct / total
    return {
        "top1": 100.0 * correct.sum() / total.sum(),
        "balanced": float(np.nanmean(per_class)),
        "per_class": per_class,
    }
