"""Mix-back and every augmentation as batched tensor operations (SPEC sections 5 and 6).

Each augmentation is a small ``nn.Module``: ``forward(x, generator=None)`` takes a batch (B, T, F) of
log-mel patches (frames x bands; also (B, 1, T, F) or one (T, F) patch), draws its parameters
independently per example from ``generator`` and applies them in a few tensor ops on ``x``'s device.
``sample_params`` / ``apply_params`` expose the two halves, so a test can feed the same draws to the
per-example reference (:mod:`uclser_lib.augment_reference`).

:class:`ViewBuilder` turns a batch of clip indices into the two augmented views of SimCLR training,
(B, 1, 101, 96) each, entirely on the device. :func:`augment_views` and :func:`apply_single` are the
engine of the course's slider widgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uclser_lib.data import PATCH_FRAMES, PackedClips
from uclser_lib.views import (
    POSITIVES,
    check_lengths,
    gather_patches,
    normal,
    other_clips,
    randint_below,
    random_starts,
    uniform,
)

#: Log-mel bands of a patch (SPEC section 3).
PATCH_BANDS = 96
#: Background choices of mix-back (SPEC section 5); "none" switches mix-back off.
MIX_MODES = ("mix_out_clip", "mix_within_clip", "none")
#: SpecAugment mask values (SPEC section 6); "min" is the released default.
MASK_VALUES = ("min", "zero", "mean", "max", "noise")
#: Clips shorter than this many frames get no mix-back under "mix_within_clip" (SPEC section 5).
MIX_WITHIN_MIN_FRAMES = 4 * PATCH_FRAMES
#: Views a CPU :class:`ViewBuilder` builds at a time: slices whose intermediates stay in a core's cache.
CPU_CHUNK_VIEWS = 64

_LN10 = math.log(10.0)


# ----------------------------------------------------------------------------------------------------------------------
# Mix-back


def mix_back(foreground: torch.Tensor, background: torch.Tensor, lam: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """Mix each log10 patch with a background carrying ``lam`` times its energy (SPEC section 5).

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


# ----------------------------------------------------------------------------------------------------------------------
# Augmentations


def _on_batch(fn, x: torch.Tensor, who: str) -> torch.Tensor:
    """``fn`` on ``x`` (B, T, F), (B, 1, T, F) or (T, F) seen as (B, T, F); the result in ``x``'s shape."""
    if x.ndim == 2:
        return fn(x[None])[0]
    if x.ndim == 4 and x.shape[1] == 1:
        return fn(x[:, 0])[:, None]
    if x.ndim != 3:
        raise ValueError(f"{who} expects (B, T, F), (B, 1, T, F) or (T, F), got {tuple(x.shape)}")
    return fn(x)


class BatchAugment(nn.Module):
    """Base of the augmentations: per-example parameters drawn by ``sample_params``, applied by ``apply_params``."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment ``x`` (B, T, F), (B, 1, T, F) or (T, F); returns the same shape."""

        def run(x):
            self.check_shape(x.shape[1], x.shape[2])
            return self.apply_params(x, self.sample_params(x, generator))

        return _on_batch(run, x, type(self).__name__)

    def check_shape(self, n_frames: int, n_bands: int) -> None:
        """ValueError when a parameter does not fit a (n_frames, n_bands) patch."""

    def sample_params(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Per-example parameters for a batch shaped like ``x`` (B, T, F), each a tensor with leading dim B.

        Only ``x``'s shape and device are used (an uninitialised ``torch.empty`` will do).
        """
        return {}

    def apply_params(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


def _roll(x: torch.Tensor, shift: torch.Tensor, dim: int) -> torch.Tensor:
    """Circular shift of each example of (B, T, F) ``x`` by ``shift`` (B,) along ``dim`` (1 or 2), as one gather."""
    n = x.shape[dim]
    idx = (torch.arange(n, device=x.device) - shift[:, None]) % n  # (B, n): output k reads input k - shift
    idx = idx[:, :, None] if dim == 1 else idx[:, None, :]
    return torch.gather(x, dim, idx.expand_as(x))


class _CircularShift(BatchAugment):
    dim = 1
    axis = "frames"

    def __init__(self, max_shift: int):
        super().__init__()
        if int(max_shift) != max_shift or max_shift < 2:
            raise ValueError(f"{type(self).__name__}: max_shift must be an integer >= 2, got {max_shift!r}")
        self.max_shift = int(max_shift)

    def check_shape(self, n_frames, n_bands):
        n = n_frames if self.dim == 1 else n_bands
        if self.max_shift > n:
            raise ValueError(f"{type(self).__name__}: max_shift {self.max_shift} exceeds the patch's {n} {self.axis}")

    def sample_params(self, x, generator):
        return {"shift": 1 + randint_below(torch.full((len(x),), self.max_shift - 1, device=x.device), generator)}

    def apply_params(self, x, params):
        return _roll(x, params["shift"], self.dim)


class TimeShift(_CircularShift):
    """Circular shift along time by d ~ U{1, ..., max_shift - 1} frames per example (released Tshift 30)."""

    def __init__(self, max_shift: int = 30):
        super().__init__(max_shift)


class FreqShift(_CircularShift):
    """Circular shift up in frequency by d ~ U{1, ..., max_shift - 1} bands per example (released Fshift 10)."""

    dim = 2
    axis = "bands"

    def __init__(self, max_shift: int = 10):
        super().__init__(max_shift)


def _lerp_axis(x: torch.Tensor, start: torch.Tensor, size: torch.Tensor, dim: int) -> torch.Tensor:
    """Resize the window [start, start + size) of ``x`` (B, T, F) along ``dim`` back to the full length.

    PIL's bilinear up-sampling: output pixel k samples the window at pixel-centre coordinate
    (k + 0.5) * size / n - 0.5, clamped to the window (PIL drops taps outside it), linear between neighbours.
    """
    n = x.shape[dim]
    k = torch.arange(n, device=x.device, dtype=torch.float32)
    start_f, size_f = start[:, None].float(), size[:, None].float()
    src = start_f + (k + 0.5) * size_f / n - 0.5
    src = torch.minimum(torch.maximum(src, start_f), start_f + size_f - 1)
    i0 = src.floor()
    frac = src - i0
    i0 = i0.long()
    i1 = torch.minimum(i0 + 1, start[:, None] + size[:, None] - 1)
    if dim == 1:  # whole rows: copy them by flat row index
        rows = x.reshape(-1, x.shape[2])
        first = (torch.arange(len(x), device=x.device) * n)[:, None]
        return torch.lerp(rows.index_select(0, (first + i0).view(-1)), rows.index_select(0, (first + i1).view(-1)), frac.view(-1, 1)).view(x.shape)
    lo = torch.gather(x, 2, i0[:, None, :].expand_as(x))
    hi = torch.gather(x, 2, i1[:, None, :].expand_as(x))
    return torch.lerp(lo, hi, frac[:, None, :])


class RandomResizedCrop(BatchAugment):
    """Crop a random box per example and resize it back to the patch size, bilinear as PIL (SPEC section 6).

    The patch is an image of width F (bands) and height T (frames). Up to ``attempts`` tries: area ~
    U(scale) x T x F, aspect w/h = exp(U(log ratio)), w, h rounded; the first box that fits is kept, with
    its top-left corner uniform; else a central crop clipped to the ratio range. Params: ``box`` (B, 4)
    int64 rows (i, j, h, w) = (top frame, first band, frames, bands).
    """

    def __init__(self, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
        super().__init__()
        scale, ratio = tuple(float(s) for s in scale), tuple(float(r) for r in ratio)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"RandomResizedCrop: scale must be (min, max) with 0 < min <= max <= 1, got {scale}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop: ratio must be (min, max) with 0 < min <= max, got {ratio}")
        if attempts < 1:
            raise ValueError(f"RandomResizedCrop: attempts must be >= 1, got {attempts}")
        self.scale, self.ratio, self.attempts = scale, ratio, int(attempts)

    def fallback_box(self, n_frames: int, n_bands: int) -> tuple[int, int, int, int]:
        """Central crop clipped to the ratio range: (i, j, h, w)."""
        in_ratio = n_bands / n_frames
        h, w = n_frames, n_bands
        if in_ratio < self.ratio[0]:
            h = int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w = int(round(h * self.ratio[1]))
        return (n_frames - h) // 2, (n_bands - w) // 2, h, w

    def sample_params(self, x, generator):
        B, H, W = x.shape
        dev = x.device
        area = H * W * uniform((B, self.attempts), generator, dev, *self.scale)
        aspect = torch.exp(uniform((B, self.attempts), generator, dev, math.log(self.ratio[0]), math.log(self.ratio[1])))
        w = torch.round(torch.sqrt(area * aspect)).long().clamp_min(1)
        h = torch.round(torch.sqrt(area / aspect)).long().clamp_min(1)
        fits = (w <= W) & (h <= H)
        first = fits.float().argmax(1, keepdim=True)  # first attempt that fits
        found = fits.any(1)
        i0, j0, h0, w0 = self.fallback_box(H, W)
        h = torch.where(found, h.gather(1, first)[:, 0], h0)
        w = torch.where(found, w.gather(1, first)[:, 0], w0)
        i = torch.where(found, randint_below(H - h + 1, generator), i0)
        j = torch.where(found, randint_below(W - w + 1, generator), j0)
        return {"box": torch.stack([i, j, h, w], 1)}

    def apply_params(self, x, params):
        i, j, h, w = params["box"].unbind(1)
        return _lerp_axis(_lerp_axis(x, j, w, 2), i, h, 1)


class TimeReversal(BatchAugment):
    """Flip the time axis of each example with probability ``p`` (released: 0.5). Params: ``flip`` (B,) bool."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"TimeReversal: p must lie in [0, 1], got {p}")
        self.p = float(p)

    def sample_params(self, x, generator):
        return {"flip": uniform((len(x),), generator, x.device) < self.p}

    def apply_params(self, x, params):
        return torch.where(params["flip"][:, None, None], x.flip(1), x)


class Compander(BatchAugment):
    """Multiply each log-mel patch by c ~ U(comp_alpha, 1) (or U(1, comp_alpha) when > 1). Params: ``c`` (B,)."""

    def __init__(self, comp_alpha: float = 0.75):
        super().__init__()
        if not comp_alpha > 0:
            raise ValueError(f"Compander: comp_alpha must be > 0, got {comp_alpha}")
        self.comp_alpha = float(comp_alpha)

    def sample_params(self, x, generator):
        lo, hi = sorted((self.comp_alpha, 1.0))
        return {"c": uniform((len(x),), generator, x.device, lo, hi)}

    def apply_params(self, x, params):
        return x * params["c"][:, None, None]


class SpecAugment(BatchAugment):
    """Frequency masks, then time masks, of width ~ U{0, ..., width - 1} at a start uniform so the mask fits.

    Each mask is filled, in turn, with a statistic of the current patch: ``mask_value`` "min" (released
    default), "zero", "mean", "max" or "noise" (N(mean, std) of the patch). Params: ``freq_start``,
    ``freq_width`` (B, n_freq_masks), ``time_start``, ``time_width`` (B, n_time_masks) int64, and for
    "noise" ``z`` (B, n_freq_masks + n_time_masks, T, F) standard normal.
    """

    def __init__(self, freq_width=20, n_freq_masks=2, time_width=20, n_time_masks=2, mask_value="min"):
        super().__init__()
        for name, v in [("freq_width", freq_width), ("time_width", time_width)]:
            if int(v) != v or v < 1:
                raise ValueError(f"SpecAugment: {name} must be an integer >= 1, got {v!r}")
        for name, v in [("n_freq_masks", n_freq_masks), ("n_time_masks", n_time_masks)]:
            if int(v) != v or v < 0:
                raise ValueError(f"SpecAugment: {name} must be an integer >= 0, got {v!r}")
        if mask_value not in MASK_VALUES:
            raise ValueError(f"SpecAugment: mask_value must be one of {MASK_VALUES}, got {mask_value!r}")
        self.freq_width, self.n_freq_masks = int(freq_width), int(n_freq_masks)
        self.time_width, self.n_time_masks = int(time_width), int(n_time_masks)
        self.mask_value = mask_value

    def check_shape(self, n_frames, n_bands):
        if self.freq_width > n_bands or self.time_width > n_frames:
            raise ValueError(
                f"SpecAugment: masks (freq_width {self.freq_width}, time_width {self.time_width}) wider than "
                f"the ({n_frames} frames, {n_bands} bands) patch"
            )

    def sample_params(self, x, generator):
        B, T, Fb = x.shape
        params = {}
        for axis, width, n_masks, size in [("freq", self.freq_width, self.n_freq_masks, Fb), ("time", self.time_width, self.n_time_masks, T)]:
            widths = randint_below(torch.full((n_masks, B), width, device=x.device), generator)
            params[f"{axis}_width"] = widths.T
            params[f"{axis}_start"] = randint_below(size - widths + 1, generator).T
        if self.mask_value == "noise":
            params["z"] = normal((self.n_freq_masks + self.n_time_masks, B, T, Fb), generator, x.device).transpose(0, 1)
        return params

    def _fill(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if self.mask_value == "zero":
            return torch.zeros((), dtype=x.dtype, device=x.device)
        if self.mask_value == "min":
            return x.amin((1, 2), keepdim=True)
        if self.mask_value == "max":
            return x.amax((1, 2), keepdim=True)
        if self.mask_value == "mean":
            return x.mean((1, 2), keepdim=True)
        std, mean = torch.std_mean(x, (1, 2), correction=0, keepdim=True)
        return mean + std * z

    def apply_params(self, x, params):
        T, Fb = x.shape[1:]
        masks = []
        for axis, size in [("freq", Fb), ("time", T)]:
            pos = torch.arange(size, device=x.device)
            for start, width in zip(params[f"{axis}_start"].T, params[f"{axis}_width"].T):
                m = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (B, size)
                masks.append(m[:, None, :] if axis == "freq" else m[:, :, None])
        for k, m in enumerate(masks):
            x = torch.where(m, self._fill(x, params["z"][:, k] if "z" in params else None), x)
        return x


class GaussianNoise(BatchAugment):
    """Add N(0, s^2) noise with s ~ U(0, max_std) per example (released 0.01). Params: ``std`` (B,), ``z`` (B, T, F)."""

    def __init__(self, max_std: float = 0.01):
        super().__init__()
        if not max_std >= 0:
            raise ValueError(f"GaussianNoise: max_std must be >= 0, got {max_std}")
        self.max_std = float(max_std)

    def sample_params(self, x, generator):
        return {"std": uniform((len(x),), generator, x.device, 0.0, self.max_std), "z": normal(x.shape, generator, x.device)}

    def apply_params(self, x, params):
        return x + params["std"][:, None, None] * params["z"]


class GaussianBlur(BatchAugment):
    """Gaussian blur with a random odd kernel per axis, (kt, kf) in {1, 3, ..., max_ksize}, std ``sigma`` (released 20).

    As OpenCV's ``GaussianBlur(spec, (kf, kt), sigma)``: separable, normalised taps exp(-d^2 / (2 sigma^2)),
    reflect-101 borders. Params: ``kt``, ``kf`` (B,) int64 kernel sizes along time and bands.
    """

    def __init__(self, max_ksize: int = 5, sigma: float = 20.0):
        super().__init__()
        if int(max_ksize) != max_ksize or max_ksize < 1 or max_ksize % 2 == 0:
            raise ValueError(f"GaussianBlur: max_ksize must be an odd integer >= 1, got {max_ksize!r}")
        if not sigma > 0:
            raise ValueError(f"GaussianBlur: sigma must be > 0, got {sigma}")
        self.max_ksize, self.sigma = int(max_ksize), float(sigma)

    def check_shape(self, n_frames, n_bands):
        if self.max_ksize // 2 >= min(n_frames, n_bands):
            raise ValueError(f"GaussianBlur: max_ksize {self.max_ksize} too large for a ({n_frames}, {n_bands}) patch")

    def sample_params(self, x, generator):
        n = torch.full((2, len(x)), self.max_ksize // 2 + 1, device=x.device)
        kf, kt = 2 * randint_below(n, generator) + 1
        return {"kt": kt, "kf": kf}

    def _taps(self, ksize: torch.Tensor) -> torch.Tensor:
        """(B, max_ksize) normalised Gaussian taps, zero outside each example's kernel."""
        half = self.max_ksize // 2
        d = torch.arange(-half, half + 1, device=ksize.device, dtype=torch.float32)
        taps = torch.exp(-(d**2) / (2 * self.sigma**2)) * (d.abs()[None] <= (ksize[:, None] // 2))
        return taps / taps.sum(1, keepdim=True)

    def apply_params(self, x, params):
        B, K, half = len(x), self.max_ksize, self.max_ksize // 2
        xp = F.pad(x[None], (half, half, half, half), mode="reflect")  # (1, B, T + K - 1, F + K - 1), reflect-101
        xp = F.conv2d(xp, self._taps(params["kt"]).view(B, 1, K, 1), groups=B)  # one channel per example
        return F.conv2d(xp, self._taps(params["kf"]).view(B, 1, 1, K), groups=B)[0]


class Normalize(BatchAugment):
    """(x - mean) / std with the training set's scalar mean and std (SPEC section 4)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"Normalize: mean must be finite and std finite and > 0, got mean {mean}, std {std}")
        self.mean, self.std = float(mean), float(std)

    def apply_params(self, x, params):
        return (x - self.mean) / self.std


class Compose(nn.Module):
    """Named augmentations applied in order; ``forward(x, generator, record=None)`` fills ``record[name]`` if given.

    ``sample_params`` draws every step's parameters (in step order, as ``forward`` does) and
    ``apply_params`` applies them, so a batch can be drawn once and applied in slices.
    """

    def __init__(self, steps: dict[str, BatchAugment]):
        super().__init__()
        self.steps = nn.ModuleDict(steps)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, record: dict | None = None) -> torch.Tensor:
        """Augment ``x`` (B, T, F), (B, 1, T, F) or (T, F); returns the same shape (``record`` gets (B, T, F) stages)."""

        def run(x):
            for step in self.steps.values():
                step.check_shape(x.shape[1], x.shape[2])
            return self.apply_params(x, self.sample_params(x, generator), record)

        return _on_batch(run, x, "Compose")

    def sample_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, dict[str, torch.Tensor]]:
        """``{step name: its params}`` for a (B, T, F) batch shaped like ``x``; every tensor has leading dim B."""
        return {name: step.sample_params(x, generator) for name, step in self.steps.items()}

    def apply_params(self, x: torch.Tensor, params: dict, record: dict | None = None) -> torch.Tensor:
        """Apply the steps to ``x`` (B, T, F) with ``params`` from :meth:`sample_params` (or a slice of them)."""
        for name, step in self.steps.items():
            x = step.apply_params(x, params[name])
            if record is not None:
                record[name] = x
        return x


# ----------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class AugmentConfig:
    """The view recipe, one field group per step of SPEC sections 5-6; the defaults are the paper's config.

    Field names follow the released ``da`` / ``learn`` settings (see :meth:`from_released`).
    """

    positives: str = "within_clip"
    mix: str = "mix_out_clip"
    mix_alpha: float = 0.05
    time_shift: bool = False
    time_shift_max: int = 30
    freq_shift: bool = False
    freq_shift_max: int = 10
    random_crop: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    time_reversal: bool = False
    time_reversal_p: float = 0.5
    compander: bool = True
    comp_alpha: float = 0.75
    freq_mask: bool = False
    freq_mask_width: int = 20
    n_freq_masks: int = 2
    time_mask: bool = False
    time_mask_width: int = 20
    n_time_masks: int = 2
    mask_value: str = "min"
    gauss_noise: bool = True
    noise_max_std: float = 0.01
    blur: bool = False
    blur_max_ksize: int = 5
    blur_sigma: float = 20.0
    normalise: bool = True

    def __post_init__(self) -> None:
        self.crop_scale, self.crop_ratio = tuple(self.crop_scale), tuple(self.crop_ratio)  # lists from YAML / JSON
        if self.positives not in POSITIVES:
            raise ValueError(f"AugmentConfig.positives must be one of {POSITIVES}, got {self.positives!r}")
        if self.mix not in MIX_MODES:
            raise ValueError(f"AugmentConfig.mix must be one of {MIX_MODES}, got {self.mix!r}")
        if not 0 <= self.mix_alpha <= 1:
            raise ValueError(f"AugmentConfig.mix_alpha must lie in [0, 1] (lambda ~ U(0, alpha)), got {self.mix_alpha}")
        for step in build_augment(self, 0.0, 1.0).steps.values():  # each step validates its parameters
            step.check_shape(PATCH_FRAMES, PATCH_BANDS)

    @classmethod
    def paper(cls) -> "AugmentConfig":
        """The paper's config: within-clip views, mix-back out of clip (alpha 0.05), crop, compander, noise, normalise."""
        return cls()

    @classmethod
    def from_released(cls, da: dict, learn: dict) -> "AugmentConfig":
        """From the released YAML's ``da`` and ``learn`` sections (``params_unsupervised_cl.yaml``)."""
        return cls(
            positives=learn["CL_positives"],
            mix=learn["CL_pos_mix"] if learn["CL_pos_mix"] in MIX_MODES else "none",
            mix_alpha=learn["CL_pos_mix_alpha"],
            time_shift=da["do_rand_time_shift"],
            time_shift_max=da["Tshift"],
            freq_shift=da["do_rand_freq_shift"],
            freq_shift_max=da["Fshift"],
            random_crop=da["do_randcrop"],
            crop_scale=tuple(da["rc_scale"]),
            crop_ratio=tuple(da["rc_ratio"]),
            time_reversal=da["do_time_reversal"],
            compander=da["do_compansion"],
            comp_alpha=da["comp_alpha"],
            freq_mask=da["do_freq_mask"],
            freq_mask_width=da["F"],
            n_freq_masks=da["m_f"],
            time_mask=da["do_time_mask"],
            time_mask_width=da["T"],
            n_time_masks=da["m_t"],
            mask_value=da["mask_val"],
            gauss_noise=da["awgn_stdev_gen"] > 0,
            noise_max_std=max(da["awgn_stdev_gen"], 0.0),
            blur=da["do_blur"],
            **({"blur_max_ksize": da["blur_max_ksize"], "blur_sigma": da["blur_stdev_x"]} if da["do_blur"] else {}),
        )


def build_augment(cfg: AugmentConfig, mean: float | None = None, std: float | None = None) -> Compose:
    """The augmentation chain of ``cfg`` in SPEC order; ``mean`` / ``std`` are needed when ``cfg.normalise``."""
    steps: dict[str, BatchAugment] = {}
    if cfg.time_shift:
        steps["time_shift"] = TimeShift(cfg.time_shift_max)
    if cfg.freq_shift:
        steps["freq_shift"] = FreqShift(cfg.freq_shift_max)
    if cfg.random_crop:
        steps["random_crop"] = RandomResizedCrop(cfg.crop_scale, cfg.crop_ratio)
    if cfg.time_reversal:
        steps["time_reversal"] = TimeReversal(cfg.time_reversal_p)
    if cfg.compander:
        steps["compander"] = Compander(cfg.comp_alpha)
    if cfg.freq_mask or cfg.time_mask:
        steps["spec_augment"] = SpecAugment(
            cfg.freq_mask_width,
            cfg.n_freq_masks if cfg.freq_mask else 0,
            cfg.time_mask_width,
            cfg.n_time_masks if cfg.time_mask else 0,
            cfg.mask_value,
        )
    if cfg.gauss_noise:
        steps["gauss_noise"] = GaussianNoise(cfg.noise_max_std)
    if cfg.blur:
        steps["blur"] = GaussianBlur(cfg.blur_max_ksize, cfg.blur_sigma)
    if cfg.normalise:
        if mean is None or std is None:
            raise ValueError("build_augment: cfg.normalise is on, so mean and std of the training features are needed")
        steps["normalise"] = Normalize(mean, std)
    return Compose(steps)


# ----------------------------------------------------------------------------------------------------------------------
# Views


class ViewBuilder:
    """The two augmented views of each clip of a batch, built on the packed clips' device (SPEC sections 4-6).

    ``ViewBuilder(packed, cfg, mean, std)(clip_idx, generator)`` -> (view1, view2), each (B, 1, 101, F):
    two patches per clip, their backgrounds, mix-back with one lambda per clip, then ``cfg``'s
    augmentations drawn independently per view. ``mean``, ``std``: scalars of the training features.
    Construction checks once that every clip has >= 101 frames and that all features are finite.
    Under "mix_within_clip", clips shorter than 4 patches (404 frames) are not mixed (lambda = 0).
    With mix-back on, it also keeps the clips as powers 10**x (one more copy of the features) and mixes
    with :func:`mix_back_power`, unless some |x| exceeds ``POWER_DOMAIN_MAX_LOG10`` (then :func:`mix_back`).
    """

    def __init__(
        self, packed: PackedClips, cfg: AugmentConfig, mean: float | None = None, std: float | None = None, chunk_views="auto"
    ):
        check_lengths(packed.lengths)
        bad = torch.nonzero(~torch.isfinite(packed.data).all(1))
        if len(bad):
            row = int(bad[0, 0])
            clip = int(torch.searchsorted(packed.offsets, torch.tensor(row, device=packed.offsets.device), right=True)) - 1
            raise ValueError(f"features hold NaN or inf: clip {clip} (frame {row - int(packed.offsets[clip])}) and {len(bad) - 1} more frame(s)")
        if chunk_views == "auto":
            chunk_views = CPU_CHUNK_VIEWS if packed.data.device.type == "cpu" else None
        if chunk_views is not None and not (isinstance(chunk_views, int) and chunk_views >= 1):
            raise ValueError(f"ViewBuilder: chunk_views must be 'auto', None or an integer >= 1, got {chunk_views!r}")
        self.packed, self.cfg, self.chunk_views = packed, cfg, chunk_views
        self.augment = build_augment(cfg, mean, std)
        # Mix-back on powers computed once (one log10 per entry instead of exp/log-sum-exp), when float32 allows.
        self.power = None
        if cfg.mix != "none" and float(packed.data.abs().max()) <= POWER_DOMAIN_MAX_LOG10:
            self.power = replace(packed, data=torch.pow(10.0, packed.data))

    @property
    def device(self) -> torch.device:
        return self.packed.data.device

    def _draw(self, clip_idx: torch.Tensor, generator, background_clips) -> dict[str, torch.Tensor]:
        """Where each of the 2B patches and backgrounds starts, and the (2B,) lambdas (view 1 rows, then view 2)."""
        lengths = self.packed.lengths[clip_idx]
        s1 = random_starts(lengths, generator, check=False)
        s2 = s1 if self.cfg.positives == "same" else random_starts(lengths, generator, check=False)
        both = torch.cat([clip_idx, clip_idx])
        draws = {"clips": both, "starts": torch.cat([s1, s2])}
        if self.cfg.mix == "none":
            return draws
        lam = uniform((len(clip_idx),), generator, self.device, 0.0, self.cfg.mix_alpha)
        if self.cfg.mix == "mix_within_clip":
            back = both
            lam = torch.where(lengths >= MIX_WITHIN_MIN_FRAMES, lam, 0.0)
        else:
            if background_clips is None:
                background_clips = other_clips(clip_idx, len(self.packed), generator)
            back = background_clips.to(self.device).T.reshape(-1)
        back_starts = random_starts(self.packed.lengths[back], generator, check=False)
        return {**draws, "back_clips": back, "back_starts": back_starts, "lambda": torch.cat([lam, lam])}

    def _apply(self, draws: dict, params: dict, rows: slice, power: PackedClips | None, record: dict | None) -> torch.Tensor:
        """Views ``rows`` of the batch from their draws: gather, mix-back, augmentations."""
        source = self.packed if power is None else power
        x = gather_patches(source, draws["clips"][rows], draws["starts"][rows])
        if record is not None:
            record["view"] = x
        if self.cfg.mix != "none":
            background = gather_patches(source, draws["back_clips"][rows], draws["back_starts"][rows])
            lam = draws["lambda"][rows]
            x = mix_back(x, background, lam, validate=False) if power is None else mix_back_power(x, background, lam)
            if record is not None:
                record.update(background=background, mixed=x, **{"lambda": lam[: len(lam) // 2]})
        params = {name: {k: v[rows] for k, v in p.items()} for name, p in params.items()}
        return self.augment.apply_params(x, params, record)

    def build(self, clip_idx: torch.Tensor, generator=None, background_clips=None, record: dict | None = None) -> torch.Tensor:
        """Both views stacked, (2B, 101, F): rows :B view 1, rows B: view 2.

        All draws are made first, for the whole batch, then applied ``chunk_views`` views at a time (on a
        CPU, slices that stay in cache), so the result does not depend on the chunk size.
        ``background_clips`` (B, 2) fixes the mix-back background clips (default: drawn, SPEC section 5);
        ``record`` (a dict) receives every intermediate stage, each (2B, 101, F) (and "lambda", (B,)); a
        recording build mixes in the log domain (:func:`mix_back`), so it shows the exact patches (the
        fast power-domain path agrees to ~1e-5).
        """
        clip_idx = clip_idx.to(self.device)
        draws = self._draw(clip_idx, generator, background_clips)
        n = len(draws["clips"])
        shape = torch.empty((n, PATCH_FRAMES, self.packed.data.shape[1]), device=self.device)  # shape and device only
        params = self.augment.sample_params(shape, generator)
        power = self.power if record is None else None  # recorded stages: the exact patches, log-domain mix-back
        chunk = n if record is not None or self.chunk_views is None else self.chunk_views
        views = [self._apply(draws, params, slice(k, k + chunk), power, record) for k in range(0, n, chunk)]
        return views[0] if len(views) == 1 else torch.cat(views)

    def __call__(self, clip_idx: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(view1, view2), each (B, 1, 101, F) float32 on the clips' device."""
        x = self.build(clip_idx, generator)[:, None]
        return x[: len(clip_idx)], x[len(clip_idx) :]


class GraphedViews:
    """A :class:`ViewBuilder` captured in a CUDA graph for one batch size: a batch of views is one graph replay.

    Building views is ~60 small kernels whose launch cost (about 3 ms a batch on an H200, whatever the batch
    size) rivals a training step; replaying a captured graph launches them all at once. ``generator`` (a
    CUDA generator) is registered with the graph, so re-seeding it (``generator.manual_seed``) changes the
    draws of later replays as it would in eager mode. The returned views live in the graph's static buffer:
    use them before the next call. Same contract as ``ViewBuilder.__call__`` for batches of ``batch_size``.
    """

    def __init__(self, builder: ViewBuilder, batch_size: int, generator: torch.Generator, warmup: int = 3):
        if builder.device.type != "cuda" or generator.device.type != "cuda":
            raise ValueError("GraphedViews needs the packed clips and the generator on a CUDA device")
        self.builder, self.batch_size = builder, batch_size
        self.clip_idx = torch.zeros(batch_size, dtype=torch.int64, device=builder.device)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(generator)
        side = torch.cuda.Stream(builder.device)
        side.wait_stream(torch.cuda.current_stream(builder.device))
        with torch.cuda.stream(side):  # warm-up outside the graph (allocations, lazy inits)
            for _ in range(warmup):
                builder.build(self.clip_idx, generator)
        torch.cuda.current_stream(builder.device).wait_stream(side)
        with torch.cuda.graph(self.graph):
            self.out = builder.build(self.clip_idx, generator)[:, None]

    def __call__(self, clip_idx: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(view1, view2), each (B, 1, 101, F); ``generator`` must be the one given at capture (or None)."""
        if len(clip_idx) != self.batch_size:
            raise ValueError(f"GraphedViews was captured for batches of {self.batch_size} clips, got {len(clip_idx)}")
        self.clip_idx.copy_(clip_idx)
        self.graph.replay()
        return self.out[: self.batch_size], self.out[self.batch_size :]


# ----------------------------------------------------------------------------------------------------------------------
# Widget engine

#: Augmentations shown one at a time by :func:`apply_single`, by name.
AUGMENTATIONS: dict[str, type[BatchAugment]] = {
    "time_shift": TimeShift,
    "freq_shift": FreqShift,
    "random_crop": RandomResizedCrop,
    "time_reversal": TimeReversal,
    "compander": Compander,
    "spec_augment": SpecAugment,
    "gauss_noise": GaussianNoise,
    "blur": GaussianBlur,
    "normalise": Normalize,
}


def augment_views(clip_a: np.ndarray, clip_b: np.ndarray, cfg: AugmentConfig, seed: int, mean=None, std=None) -> dict[str, np.ndarray]:
    """Every stage of the two views of ``clip_a`` (T_a, F), mixed with backgrounds from ``clip_b`` (T_b, F).

    Both backgrounds come from ``clip_b`` (random starts); under "mix_within_clip" from ``clip_a``.
    ``mean`` / ``std`` for the normalisation default to those of the two clips together.
    Returns (101, F) arrays ``view1``, ``view2``, ``background1``, ``background2``, ``mixed1``, ``mixed2``,
    ``<step>1``, ``<step>2`` for each augmentation of ``cfg`` (e.g. ``random_crop1``), ``final1``, ``final2``,
    and ``lambda`` (a 0-d array).
    """
    clips = [np.asarray(clip_a, dtype=np.float32), np.asarray(clip_b, dtype=np.float32)]
    if mean is None or std is None:
        both = np.concatenate(clips)
        mean, std = float(both.mean()), float(both.std())
    builder = ViewBuilder(PackedClips.from_list(clips), cfg, mean, std)
    record: dict[str, torch.Tensor] = {}
    final = builder.build(torch.tensor([0]), torch.Generator().manual_seed(seed), torch.tensor([[1, 1]]), record)
    out = {"lambda": record.pop("lambda")[0].numpy()} if "lambda" in record else {}
    for name, x in [*record.items(), ("final", final)]:
        out[f"{name}1"], out[f"{name}2"] = x[0].numpy(), x[1].numpy()
    return out


def apply_single(name: str, patch: np.ndarray, params: dict | None = None, seed: int = 0) -> np.ndarray:
    """One augmentation alone: ``AUGMENTATIONS[name](**params)`` on ``patch`` (T, F), drawn with ``seed``."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; expected one of {sorted(AUGMENTATIONS)}")
    try:
        step = AUGMENTATIONS[name](**(params or {}))
    except TypeError as e:
        raise ValueError(f"bad parameters {params!r} for augmentation {name!r}: {e}") from None
    x = torch.as_tensor(np.asarray(patch, dtype=np.float32))
    return step(x, torch.Generator().manual_seed(seed)).numpy()


__all__ = [
    "AUGMENTATIONS",
    "AugmentConfig",
    "BatchAugment",
    "Compander",
    "Compose",
    "FreqShift",
    "GaussianBlur",
    "GaussianNoise",
    "MASK_VALUES",
    "MIX_MODES",
    "Normalize",
    "RandomResizedCrop",
    "SpecAugment",
    "TimeReversal",
    "TimeShift",
    "ViewBuilder",
    "apply_single",
    "augment_views",
    "build_augment",
    "mix_back",
    "mix_back_power",
]
