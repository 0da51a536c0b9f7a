"""NT-Xent (SimCLR) loss, single-process and across DistributedDataParallel ranks (docs/method.md §8)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["gather_with_grad", "nt_xent"]


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(z: torch.Tensor) -> torch.Tensor:
    """All-gather (n, D) shards of every rank into (world * n, D), rank order, keeping gradients.

    Uses ``torch.distributed.nn.functional.all_gather``, whose backward sums the gradients of all ranks
    into each rank's shard. Every rank must pass the same shape. Outside torch.distributed it returns ``z``.
    """
    if _world()[1] == 1:
        return z
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z), dim=0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2, distributed: bool = False) -> torch.Tensor:
    """NT-Xent loss of two views ``z1``, ``z2`` (N, D) (any scale: they are L2-normalised here).

    The 2N anchors are the rows of ``z1`` and ``z2``; the positive of each is its other view, the
    candidates are all 2N rows but itself: ``loss_i = -log(exp(s_i,pos) / sum_{k != i} exp(s_ik))``
    with ``s = cos / temperature``, averaged over anchors, as one ``cross_entropy`` with the diagonal masked.
    Computed in float32 with autocast off, whatever the input dtype.

    ``distributed=True`` (inside an initialised process group): the candidates are the views of every
    rank (gathered with gradients, equal N per rank), the anchors this rank's 2N. The mean of the ranks'
    losses then equals the single-process loss on the global batch, and DDP's gradient averaging gives
    its gradient.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent expects two (N, D) views of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 2:
        raise ValueError(f"nt_xent needs at least 2 examples (negatives), got N = {z1.shape[0]}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        n = z1.shape[0]
        z1 = F.normalize(z1.float(), dim=1)
        z2 = F.normalize(z2.float(), dim=1)
        rank, world = _world() if distributed else (0, 1)
        all1, all2 = (gather_with_grad(z1), gather_with_grad(z2)) if world > 1 else (z1, z2)
        big_n = all1.shape[0]  # global N
        anchors = torch.cat([z1, z2])  # (2n, D)
        candidates = torch.cat([all1, all2])  # (2 big_n, D): view 1 of every rank, then view 2
        logits = anchors @ candidates.T / temperature  # (2n, 2 big_n)
        local = torch.arange(n, device=z1.device) + rank * n  # global index of this rank's examples
        self_idx = torch.cat([local, local + big_n])
        pos_idx = torch.cat([local + big_n, local])
        rows = torch.arange(2 * n, device=z1.device)
        logits = logits.index_put((rows, self_idx), torch.tensor(float("-inf"), device=z1.device))
        return F.cross_entropy(logits, pos_idx)
