"""Float comparisons that hold on any CPU: tolerances from the dtype and the values' magnitude, in ulps.

Two computations of the same quantity in a different order (another chunking, batch shape, vector width
or fused multiply-add) round differently: on float32 each operation can move a value by half a unit in
its last place (ulp). A comparison between such results allows ``ulps`` units of the dtype's machine
epsilon times the largest magnitude compared, never bit-equality. Bit-equality stays right where the
*same* operations run twice (a seed reproduced, a tensor left untouched).
"""

from __future__ import annotations

import numpy as np
import torch

#: Default allowance: a few roundings per value through a chain of a dozen float operations.
ULPS = 32


def ulp_atol(expected, ulps: int = ULPS, dtype=None) -> float:
    """``ulps`` x machine epsilon of ``dtype`` (default: ``expected``'s) x max(1, max|expected|)."""
    arr = expected.detach().cpu().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    eps = np.finfo(dtype or arr.dtype).eps
    scale = max(1.0, float(np.abs(arr).max())) if arr.size else 1.0
    return float(ulps * eps * scale)


def assert_close_ulps(actual, expected, ulps: int = ULPS, dtype=None, err_msg: str = "") -> None:
    """``|actual - expected| <= ulp_atol(expected, ulps, dtype)`` elementwise; arrays or tensors, same shape.

    ``dtype``: the precision the result was computed in, when ``expected`` is a higher-precision reference.
    """
    to_np = lambda x: x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a, e = to_np(actual), to_np(expected)
    assert a.shape == e.shape, f"shapes differ: {a.shape} vs {e.shape}"
    np.testing.assert_allclose(a, e, rtol=0, atol=ulp_atol(e, ulps, dtype), err_msg=err_msg)
