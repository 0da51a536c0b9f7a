"""``exercises.check``: a stub is reported and passes quietly, a right answer passes, a wrong one is named."""

import numpy as np
import pytest
import torch

from uclser_lib.exercises import check


def _stub():
    raise NotImplementedError("exercise: write it")


def test_a_stub_is_reported_not_raised(capsys):
    assert check("my_fn", _stub, np.zeros(3)) is False
    assert "my_fn: not implemented yet (exercise: write it)" in capsys.readouterr().out


def test_a_right_answer_passes_within_the_tolerance(capsys):
    x = torch.linspace(0, 1, 5, dtype=torch.float64)
    assert check("scaled", lambda: x * (1 + 1e-9), x, atol=1e-8) is True
    assert check("pair", lambda: (torch.tensor([2, 0]), x), (torch.tensor([2, 0]), x)) is True
    assert capsys.readouterr().out.count("correct") == 2


def test_a_wrong_value_is_named_with_its_position():
    x = torch.zeros(2, 3)
    wrong = x.clone()
    wrong[1, 2] = 0.5
    with pytest.raises(AssertionError, match=r"my_fn: 1 of 6 values differ; at \(1, 2\): got 0.5, expected 0.0"):
        check("my_fn", lambda: wrong, x, atol=1e-6)


def test_a_wrong_shape_or_integer_is_refused():
    with pytest.raises(AssertionError, match=r"my_fn: shape \(2,\), expected \(3,\)"):
        check("my_fn", lambda: np.zeros(2), np.zeros(3))
    with pytest.raises(AssertionError, match=r"idx \(result 0\): 1 of 2 values differ"):
        check("idx", lambda: (np.array([1, 3]), np.ones(2)), (np.array([1, 2]), np.ones(2)))
    with pytest.raises(AssertionError, match="expected a tuple of 2 results"):
        check("idx", lambda: np.array([1, 2]), (np.array([1, 2]), np.ones(2)))
