"""Checks of the notebooks' "implement it" exercises.

An exercise is a function the student writes, left as a stub that raises ``NotImplementedError``; the cell after
it calls :func:`check`, which compares the student's answer with the library's. A solution, collapsed further down
the notebook, fills the stub in and calls :func:`check` again, so CI runs both: the stub must stay a stub that the
check reports calmly, and the solution must stay right.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["check"]


def _as_array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check(name: str, attempt: Callable[[], object], expected, atol: float = 0.0, rtol: float = 0.0) -> bool:
    """Run ``attempt()`` (a call of the student's function, wrapped in a lambda) and compare it with ``expected``.

    ``expected``: an array, tensor, number or tuple of them (element-wise, in order); floats agree within
    ``atol + rtol * |expected|``, integers and booleans exactly; shapes must match. Prints and returns False when
    the function is still a stub (it raised ``NotImplementedError``); prints and returns True when it agrees; raises
    ``AssertionError`` naming ``name`` and the first disagreement otherwise.
    """
    try:
        got = attempt()
    except NotImplementedError as stub:
        print(f"{name}: not implemented yet ({stub or 'a stub'}); the solution is further down")
        return False
    pairs = list(zip(got, expected)) if isinstance(expected, tuple) else [(got, expected)]
    if isinstance(expected, tuple) and (not isinstance(got, tuple) or len(got) != len(expected)):
        raise AssertionError(f"{name}: expected a tuple of {len(expected)} results, got {type(got).__name__}")
    for i, (g, e) in enumerate(pairs):
        g, e = _as_array(g), _as_array(e)
        where = f" (result {i})" if len(pairs) > 1 else ""
        if g.shape != e.shape:
            raise AssertionError(f"{name}{where}: shape {g.shape}, expected {e.shape}")
        if np.issubdtype(e.dtype, np.floating):
            bad = ~np.isclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol)
        else:
            bad = g != e
        if bad.any():
            at = tuple(int(j) for j in np.argwhere(bad)[0]) if bad.ndim else ()
            got_at, expected_at = g[at].item(), e[at].item()
            raise AssertionError(
                f"{name}{where}: {int(bad.sum())} of {bad.size} values differ; at {at}: got {got_at!r}, "
                f"expected {expected_at!r}"
            )
    print(f"{name}: correct")
    return True
