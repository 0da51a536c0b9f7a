"""Patch sampling on packed clips as index gathers (SPEC section 4 and the sampling half of section 5).

Every function works on a :class:`~uclser_lib.data.PackedClips` on any device and draws its random
numbers from the ``torch.Generator`` it is given; no function loops over examples in Python.
Patches are ``PATCH_FRAMES`` = 101 frames x F bands; a clip must have at least 101 frames.
"""

from __future__ import annotations

import torch

from uclser_lib.data import EVAL_HOP, PATCH_FRAMES, PackedClips

#: Ways to draw the second view of a clip (SPEC section 5).
POSITIVES = ("within_clip", "same")


def uniform(shape, generator: torch.Generator | None, device, low=0.0, high=1.0) -> torch.Tensor:
    """U(low, high) float32 of ``shape``, drawn on the generator's device and returned on ``device``.

    ``low`` / ``high`` may be tensors broadcastable to ``shape``. Drawing where the generator lives makes a
    seeded CPU generator give the same numbers whatever device the data is on.
    """
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device).to(device)
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):  # no host-to-device copy (CUDA-graph safe)
        return u if (low, high) == (0.0, 1.0) else low + (high - low) * u
    low = torch.as_tensor(low, dtype=torch.float32, device=device)
    high = torch.as_tensor(high, dtype=torch.float32, device=device)
    return low + (high - low) * u


def normal(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal float32 of ``shape``, drawn on the generator's device and returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def randint_below(n: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform integers in {0, ..., n - 1} elementwise (int64, same shape and device as ``n``); 0 where n <= 1."""
    n = torch.as_tensor(n).to(torch.int64)
    u = uniform(n.shape, generator, n.device)
    return torch.minimum((u * n).long(), (n - 1).clamp_min(0))


def check_lengths(lengths: torch.Tensor, what: str = "clip") -> None:
    """ValueError naming the first clip shorter than one patch (101 frames)."""
    short = torch.nonzero(lengths < PATCH_FRAMES)
    if len(short):
        i = int(short[0, 0])
        raise ValueError(
            f"{what} {i} has {int(lengths[i])} frames; every clip needs at least {PATCH_FRAMES} frames "
            f"(features tile clips shorter than 1 s to 101 frames) — {len(short)} clip(s) too short"
        )


def random_starts(lengths: torch.Tensor, generator: torch.Generator | None, check: bool = True) -> torch.Tensor:
    """One training patch start per clip, as the released code: ``randint(0, T - 101)`` (upper bound excluded).

    ``lengths`` (B,) frames per clip, each >= 101 (``check=False`` skips that check, a device sync, for
    callers that checked once). Returns (B,) int64; a 101-frame clip gives start 0 (itself).
    """
    if check:
        check_lengths(lengths, "batch entry")
    return randint_below(lengths - PATCH_FRAMES, generator)


def gather_patches(packed: PackedClips, clip_idx: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Patches ``packed.clip(c)[s : s + 101]`` for each (c, s): one gather, (B, 101, F) float32."""
    data = packed.data.contiguous()
    windows = data.as_strided((len(data) - PATCH_FRAMES + 1, PATCH_FRAMES, data.shape[1]), (data.shape[1], data.shape[1], 1))
    return windows.index_select(0, packed.offsets[clip_idx] + starts)  # every 101-frame window, without a copy


def random_patches(
    packed: PackedClips, clip_idx: torch.Tensor, generator: torch.Generator | None, check: bool = True
) -> torch.Tensor:
    """One random training patch per clip of ``clip_idx`` (B,): (B, 101, F)."""
    return gather_patches(packed, clip_idx, random_starts(packed.lengths[clip_idx], generator, check))


def other_clips(clip_idx: torch.Tensor, n_clips: int, generator: torch.Generator | None) -> torch.Tensor:
    """Two background clips per example, uniform among the clips that are neither ``clip_idx`` nor each other.

    ``clip_idx`` (B,) int64 in [0, n_clips). Returns (B, 2) int64: column 0 uniform over the other
    n_clips - 1 clips, column 1 uniform over the n_clips - 2 clips left (same law as the released
    rejection loop). Needs n_clips >= 3.
    """
    if n_clips < 3:
        raise ValueError(f"mix-back out of clip needs at least 3 clips (foreground + 2 distinct backgrounds), got {n_clips}")
    n = torch.full_like(clip_idx, n_clips)
    b1 = (clip_idx + 1 + randint_below(n - 1, generator)) % n_clips
    lo, hi = torch.minimum(clip_idx, b1), torch.maximum(clip_idx, b1)
    b2 = randint_below(n - 2, generator)
    b2 = b2 + (b2 >= lo).long()  # skip the smaller excluded index, then the larger one
    b2 = b2 + (b2 >= hi).long()
    return torch.stack([b1, b2], dim=1)


def eval_patches(packed: PackedClips) -> tuple[torch.Tensor, torch.Tensor]:
    """Every evaluation patch: starts 0, 50, 100, ... while start + 101 <= T, for every clip.

    Returns ``patches`` (P, 101, F) float32 and ``clip_index`` (P,) int64 (clip of each patch, ascending).
    """
    lengths = packed.lengths
    check_lengths(lengths)
    counts = (lengths - PATCH_FRAMES) // EVAL_HOP + 1
    clip_index = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), counts)
    first = torch.cumsum(counts, 0) - counts  # index of each clip's first patch
    k = torch.arange(len(clip_index), device=lengths.device) - first[clip_index]
    return gather_patches(packed, clip_index, k * EVAL_HOP), clip_index


def epoch_batches(
    n_clips: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False, device=None
) -> list[torch.Tensor]:
    """One epoch's order: a random permutation of the clips cut into batches of ``batch_size`` clip indices."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen_device = generator.device if generator is not None else "cpu"
    perm = torch.randperm(n_clips, generator=generator, device=gen_device).to(device or gen_device)
    batches = list(perm.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
