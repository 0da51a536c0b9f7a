"""Datasets: FSDnoisy18k-layout metadata, splits, HDF5 feature sets and packed clips."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Frames per patch (about 1 s), SPEC section 4.
PATCH_FRAMES = 101
#: Hop between evaluation patches, in frames.
EVAL_HOP = 50


@dataclass
class PackedClips:
    """Variable-length log-mel clips packed into one tensor, so batches are built on the device.

    ``data`` (sum of T_i, F) float32 holds the clips one after the other; clip ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``. ``labels`` (N,) int64 class indices (-1 when unknown).
    """

    data: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(f"PackedClips.data must be (frames, bands), got shape {tuple(self.data.shape)}")
        if self.offsets.ndim != 1 or len(self.offsets) != len(self.labels) + 1:
            raise ValueError(
                f"PackedClips.offsets must have N + 1 = {len(self.labels) + 1} entries, got {tuple(self.offsets.shape)}"
            )
        if len(self.labels) == 0:
            raise ValueError("PackedClips holds no clip: the split is empty")
        if int(self.offsets[-1]) != self.data.shape[0]:
            raise ValueError(f"PackedClips.offsets[-1] = {int(self.offsets[-1])} but data has {self.data.shape[0]} frames")

    @classmethod
    def from_list(cls, clips: list[np.ndarray], labels=None) -> "PackedClips":
        """Pack a list of (T_i, F) arrays; ``labels`` (N,) or None."""
        if len(clips) == 0:
            raise ValueError("PackedClips.from_list got no clip: the split is empty")
        lengths = torch.tensor([len(c) for c in clips], dtype=torch.int64)
        offsets = torch.zeros(len(clips) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        data = torch.from_numpy(np.concatenate([np.asarray(c, dtype=np.float32) for c in clips]))
        lab = torch.full((len(clips),), -1, dtype=torch.int64) if labels is None else torch.as_tensor(labels, dtype=torch.int64)
        return cls(data, offsets, lab)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) frames per clip."""
        return self.offsets[1:] - self.offsets[:-1]

    def clip(self, i: int) -> torch.Tensor:
        """Clip ``i`` as a (T_i, F) view."""
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def to(self, device) -> "PackedClips":
        return PackedClips(self.data.to(device), self.offsets.to(device), self.labels.to(device))
