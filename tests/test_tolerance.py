"""The ulp-based comparison used where two computation orders meet: it allows rounding, not errors."""

import numpy as np
import pytest
import torch

from tolerance import assert_close_ulps, ulp_atol


def test_ulp_atol_scales_with_dtype_and_magnitude():
    assert ulp_atol(np.float32([0.5, -3.0]), ulps=1) == pytest.approx(3 * np.finfo(np.float32).eps)
    assert ulp_atol(np.float64([100.0]), ulps=2) == pytest.approx(200 * np.finfo(np.float64).eps)
    assert ulp_atol(np.float64([0.1]), ulps=1, dtype=np.float32) == pytest.approx(np.finfo(np.float32).eps)


def test_a_few_roundings_pass_and_a_real_difference_fails():
    x = torch.linspace(-3, 3, 1000, dtype=torch.float32)
    assert_close_ulps(x + x.abs() * 4 * torch.finfo(torch.float32).eps, x)
    with pytest.raises(AssertionError):
        assert_close_ulps(x + 1e-4, x)
    with pytest.raises(AssertionError, match="shapes"):
        assert_close_ulps(x[:-1], x)
