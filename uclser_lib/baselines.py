"""Baselines a gain is measured against: fair random features, and features an audio engineer would try first.

- :func:`recalibrate_batchnorm`: a randomly initialised encoder whose BatchNorm running statistics are
  re-estimated on training patches (no labels, no gradient). In eval mode a fresh encoder's BatchNorm
  layers normalise with mean 0 and variance 1, which do not match its activations: with PyTorch's default
  initialisation the signal shrinks layer after layer and the embeddings end tiny around a constant, which
  a linear probe trained at a fixed learning rate can hardly use. Re-estimated statistics give the random
  features their fair chance, so that "pre-trained vs random" measures what pre-training learned.
- :class:`BandStats`: per-band mean and standard deviation of a patch's log-mel over time, a 2F-d
  handcrafted embedding, scored through the same linear probe and selection as the encoders.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import PackedClips
from .models import Encoder
from .runtime import PAPER_SEED, pick_device
from .views import random_patches

__all__ = ["BandStats", "recalibrate_batchnorm"]


class BandStats(Encoder):
    """Handcrafted embedding: ``embed(x)`` = per-band mean and std over time, (B, 1, T, F) or (B, T, F) -> (B, 2F).

    No trainable parameter but the classifier ``Linear(2 * n_bands, n_classes)``; the input is the normalised
    log-mel patch the encoders get, so the same linear evaluation applies unchanged.
    """

    def __init__(self, n_bands: int = 96, n_classes: int = 20):
        super().__init__()
        self.embedding_dim = 2 * n_bands
        self.fc = nn.Linear(self.embedding_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x[:, 0]
        if x.dim() != 3:
            raise ValueError(f"BandStats expects (B, 1, T, F) or (B, T, F) patches, got shape {tuple(x.shape)}")
        return torch.cat([x.mean(1), x.std(1, unbiased=False)], dim=1)

    def classifier(self) -> nn.Linear:
        return self.fc


@torch.no_grad()
def recalibrate_batchnorm(
    encoder: nn.Module,
    packed: PackedClips,
    mean: float,
    std: float,
    batches: int = 8,
    batch_size: int = 128,
    seed: int = PAPER_SEED,
    device=None,
) -> nn.Module:
    """Re-estimate every BatchNorm layer's running mean and variance on random patches of ``packed``.

    ``batches`` x ``batch_size`` random training patches (101 frames, one per drawn clip, clips drawn
    uniformly with ``seed``), normalised with ``mean`` / ``std``, go through ``encoder.embed`` (or the
    module itself if it has no ``embed``) in train mode; each BatchNorm's statistics are the plain average
    over those batches (momentum None), as in SWA's ``update_bn``. Weights are unchanged; no label and no
    gradient is used. Returns ``encoder``, in eval mode, on ``device``. ValueError if it has no BatchNorm.
    """
    if batches < 1 or batch_size < 2:
        raise ValueError(f"batches must be >= 1 and batch_size >= 2, got {batches} and {batch_size}")
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{type(encoder).__name__} has no BatchNorm layer to recalibrate")
    device = pick_device(device)
    encoder.to(device)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    forward = getattr(encoder, "embed", encoder)
    generator = torch.Generator().manual_seed(seed)
    encoder.train()
    try:
        for _ in range(batches):
            idx = torch.randint(len(packed), (batch_size,), generator=generator)
            patches = random_patches(packed, idx, generator)
            forward(((patches - mean) / std)[:, None].to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        encoder.eval()
    return encoder
