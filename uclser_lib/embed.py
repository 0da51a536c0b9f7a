"""From an encoder to embeddings: every evaluation patch of a set, clip means, and the kNN monitor.

All functions take ``fn``, any callable (B, 1, 101, 96) -> (B, D) such as an encoder's ``embed`` or an
encoder + head, and normalise patches with the training features' ``mean`` / ``std`` first.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .data import FeatureSet, PackedClips
from .metrics import knn_monitor
from .runtime import pick_device
from .views import eval_patches

__all__ = ["clip_embeddings", "embed_eval_patches", "knn_evaluate"]


@torch.no_grad()
def embed_eval_patches(
    fn,
    packed,
    mean: float,
    std: float,
    device,
    batch_size: int = 1024,
    clips_per_chunk: int = 512,
    progress: bool = False,
    desc: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn`` (e.g. a model in eval mode) on every evaluation patch (hop 50) of ``packed``.

    Patches are normalised with ``mean`` / ``std``, cut ``clips_per_chunk`` clips at a time (so memory stays
    bounded on FSDnoisy18k-sized sets) and run ``batch_size`` at a time. Returns the outputs (P, D) float32 and
    the clip index of each patch (P,), on ``device``.
    """
    was_training = getattr(fn, "training", False)
    if was_training:
        fn.eval()
    outs, index, o = [], [], packed.offsets
    for a in tqdm(range(0, len(packed), clips_per_chunk), desc=desc, leave=False, disable=not progress):
        b = min(a + clips_per_chunk, len(packed))
        chunk = PackedClips(packed.data[int(o[a]) : int(o[b])], o[a : b + 1] - o[a], packed.labels[a:b]).to(device)
        patches, clip_index = eval_patches(chunk)
        outs += [fn(((p - mean) / std)[:, None]).float() for p in patches.split(batch_size)]
        index.append(clip_index + a)
    if was_training:
        fn.train()
    return torch.cat(outs), torch.cat(index)


@torch.no_grad()
def clip_embeddings(fn, packed: PackedClips, mean: float, std: float, device=None) -> torch.Tensor:
    """Mean of ``fn``'s outputs over each clip's evaluation patches (hop 50): (N clips, D) float32 on the CPU.

    ``fn``: (B, 1, 101, 96) -> (B, D), e.g. ``encoder.embed`` of an encoder in eval mode; patches are
    normalised with ``mean`` / ``std``.
    """
    out, clip_index = embed_eval_patches(fn, packed, mean, std, pick_device(device))
    out, clip_index = out.cpu(), clip_index.cpu()
    sums = torch.zeros(len(packed), out.shape[1]).index_add_(0, clip_index, out)
    return sums / torch.bincount(clip_index, minlength=len(packed))[:, None]


def knn_evaluate(
    model, sets: dict[str, FeatureSet], mean: float, std: float, k: int = 200, device=None
) -> dict[str, float]:
    """kNN monitor (docs/method.md §10) on each set of ``sets``.

    Returns ``{"<name>_knn_top1": ..., "<name>_knn_balanced": ...}`` in percent.

    ``model``: encoder + head (pre-training) or any callable (B, 1, 101, 96) -> (B, D), e.g. ``encoder.embed``.
    """
    device = pick_device(device)
    out = {}
    for name, fs in sets.items():
        emb, clip_index = embed_eval_patches(model, fs.clips, mean, std, device)
        emb = torch.nn.functional.normalize(emb, dim=1)  # cosine similarity, also for a bare encoder's embeddings
        labels = fs.clips.labels.to(emb.device)[clip_index]
        fewest_outside = len(emb) - int(torch.bincount(clip_index).max())  # small sets cap k
        res = knn_monitor(emb, labels, clip_index, k=min(k, fewest_outside), n_classes=len(fs.classes))
        out[f"{name}_knn_top1"] = round(float(res["top1"]), 3)
        out[f"{name}_knn_balanced"] = round(float(res["balanced"]), 3)
    return out
