"""FSDnoisy18k-sized feature sets built directly as log-mel-like arrays (no audio), for benchmarks."""

from __future__ import annotations

import numpy as np
import torch

from uclser_lib.data import PATCH_FRAMES, PackedClips

#: FSDnoisy18k sizes (docs/method.md §2): train_noisy (pre-training), train_clean (val), test.
FSD_SIZES = {"pretrain": 15813, "val": 1772, "test": 947}
FRAMES_PER_SECOND = 22050 / 220


def fsd_lengths(n_clips: int, seed: int = 0) -> np.ndarray:
    """Clip lengths in frames like FSDnoisy18k's: 0.3-30 s, mean about 8.3 s (42.5 h / 18,532 clips), log-normal.

    Clips under 1 s are tiled to 1 s by feature extraction, so every length is >= 101 frames.
    """
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(5.2), 0.95, n_clips), 0.3, 30.0)
    return np.maximum(1 + (seconds * 22050).astype(np.int64) // 220, PATCH_FRAMES)


def fsd_sized_clips(n_clips: int, n_classes: int = 20, seed: int = 0, device="cpu") -> PackedClips:
    """Packed random log-mel-like clips (values ~ N(-2, 1), float32) with FSDnoisy18k's length distribution."""
    lengths = torch.from_numpy(fsd_lengths(n_clips, seed))
    gen = torch.Generator(device=device).manual_seed(seed)
    data = torch.randn(int(lengths.sum()), 96, generator=gen, device=device) - 2.0
    offsets = torch.zeros(n_clips + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    labels = torch.arange(n_clips) % n_classes
    return PackedClips(data, offsets.to(device), labels.to(device))
