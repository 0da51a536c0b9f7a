"""Random draws on any device from a ``torch.Generator``: the one source of randomness of views and augmentations.

Each function draws on the generator's device and returns on ``device``, so a CPU generator drives a GPU
pipeline reproducibly (and a CUDA generator a graph-captured one).
"""

from __future__ import annotations

import torch

__all__ = ["normal", "randint_below", "uniform"]


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
