"""Mix-back: each patch mixed with a little of another patch, energy-preserving (docs/method.md section 5).

The foreground keeps its energy; the background is scaled to carry a fraction ``lam`` of it, so a small
``lam`` (<= 0.05 in the paper) adds a faint, different background without changing the patch's level.
Two implementations: :func:`mix_back` on log10 patches in the natural-log domain (never overflows), and
:func:`mix_back_power` on powers computed once (one log10 per entry), used by the view builder.
"""

from __future__ import annotations

import math

import torch

from .data import PATCH_FRAMES

__all__ = ["MIX_MODES", "MIX_WITHIN_MIN_FRAMES", "POWER_DOMAIN_MAX_LOG10", "mix_back", "mix_back_power"]

#: Background choices of mix-back (docs/method.md section 5); "none" switches mix-back off.
MIX_MODES = ("mix_out_clip", "mix_within_clip", "none")
#: Clips shorter than this many frames get no mix-back under "mix_within_clip" (docs/method.md section 5).
MIX_WITHIN_MIN_FRAMES = 4 * PATCH_FRAMES

_LN10 = math.log(10.0)


def mix_back(
    foreground: torch.Tensor, background: torch.Tensor, lam: torch.Tensor, validate: bool = True
) -> torch.Tensor:
    """Mix each log10 patch with a background carrying ``lam`` times its energy (docs/method.md §5).

    ``foreground``, ``background`` (B, T, F) log10 mel; ``lam`` (B,) in [0, 1]. Returns (B, T, F)
    ``log10((1 - lam) * P + lam * E(P) / E(B) * B)`` with P = 10**p, B = 10**b and E the sum of all entries.
    Computed in the natural-log domain (logsumexp / logaddexp), so nothing overflows and float32 keeps
    about 1e-6 absolute accuracy. ``validate=False`` skips the range check of ``lam`` (a device sync).
    """
    if foreground.shape != background.shape or foreground.ndim != 3 or lam.shape != foreground.shape[:1]:
        raise ValueError(
            f"mix_back expects foreground and background (B, T, F) and lam (B,), got {tuple(foreground.shape)}, "
            f"{tuple(background.shape)} and {tuple(lam.shape)}"
        )
    if validate and not bool(((lam >= 0) & (lam <= 1)).all()):
        raise ValueError(f"mix_back lambdas must lie in [0, 1], got min {float(lam.min())} and max {float(lam.max())}")
    p = foreground * _LN10
    b = background * _LN10
    lam = lam.to(p.dtype)[:, None, None]
    log_ratio = torch.logsumexp(p.flatten(1), 1) - torch.logsumexp(b.flatten(1), 1)  # ln(E(P) / E(B))
    fg = torch.log1p(-lam) + p
    bg = torch.log(lam) + log_ratio[:, None, None] + b
    return torch.logaddexp(fg, bg) / _LN10


#: Largest |log10 value| for which mix-back may run on powers 10**x in float32: E(P) / E(B) stays below 1e30.
POWER_DOMAIN_MAX_LOG10 = 15.0


def mix_back_power(foreground: torch.Tensor, background: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """:func:`mix_back` on patches given as powers: ``foreground`` P = 10**p, ``background`` B = 10**b, (B, T, F).

    Returns the (B, T, F) log10 mixture ``log10((1 - lam) * P + lam * E(P) / E(B) * B)``: two sums, one
    multiply-add and one log10 per entry, no exponential. The caller keeps |p|, |b| <= ``POWER_DOMAIN_MAX_LOG10``
    (then nothing overflows or vanishes in float32); :class:`ViewBuilder` does so, on powers computed once.
    """
    if foreground.shape != background.shape or foreground.ndim != 3 or lam.shape != foreground.shape[:1]:
        raise ValueError(
            f"mix_back_power expects foreground and background (B, T, F) and lam (B,), got {tuple(foreground.shape)}, "
            f"{tuple(background.shape)} and {tuple(lam.shape)}"
        )
    lam = lam.to(foreground.dtype)
    weight = lam * foreground.sum((1, 2)) / background.sum((1, 2))  # lambda E(P) / E(B)
    mixed = foreground * (1 - lam)[:, None, None]
    return mixed.addcmul_(background, weight[:, None, None]).log10_()
