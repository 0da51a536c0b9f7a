"""The augmentations of a patch as batched tensor operations (docs/method.md section 6), and their config.

Each augmentation is a small ``nn.Module``: ``forward(x, generator=None)`` takes a batch (B, T, F) of
log-mel patches (frames x bands; also (B, 1, T, F) or one (T, F) patch), draws its parameters
independently per example from ``generator`` and applies them in a few tensor ops on ``x``'s device.
``sample_params`` / ``apply_params`` expose the two halves, so a test can feed the same draws to a
per-example reference implementation. :class:`AugmentConfig` holds the whole view recipe (positives,
mix-back, augmentations); :func:`build_augment` turns it into a :class:`Compose`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import PATCH_FRAMES
from .mixback import MIX_MODES
from .sampling import normal, randint_below, uniform

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
    "Normalize",
    "PATCH_BANDS",
    "POSITIVES",
    "RandomResizedCrop",
    "SpecAugment",
    "TimeReversal",
    "TimeShift",
    "build_augment",
]

#: Log-mel bands of a patch (docs/method.md section 3).
PATCH_BANDS = 96
#: Ways to draw the second view of a clip (docs/method.md section 5).
POSITIVES = ("within_clip", "same")
#: SpecAugment mask values (docs/method.md section 6); "min" is the released default.
MASK_VALUES = ("min", "zero", "mean", "max", "noise")


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
        return torch.lerp(
            rows.index_select(0, (first + i0).view(-1)), rows.index_select(0, (first + i1).view(-1)), frac.view(-1, 1)
        ).view(x.shape)
    lo = torch.gather(x, 2, i0[:, None, :].expand_as(x))
    hi = torch.gather(x, 2, i1[:, None, :].expand_as(x))
    return torch.lerp(lo, hi, frac[:, None, :])


class RandomResizedCrop(BatchAugment):
    """Crop a random box per example and resize it back to the patch size, bilinear as PIL (docs/method.md §6).

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
        aspect = torch.exp(
            uniform((B, self.attempts), generator, dev, math.log(self.ratio[0]), math.log(self.ratio[1]))
        )
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
        for axis, width, n_masks, size in [
            ("freq", self.freq_width, self.n_freq_masks, Fb),
            ("time", self.time_width, self.n_time_masks, T),
        ]:
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
        return {
            "std": uniform((len(x),), generator, x.device, 0.0, self.max_std),
            "z": normal(x.shape, generator, x.device),
        }

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
    """(x - mean) / std with the training set's scalar mean and std (docs/method.md §4)."""

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

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, record: dict | None = None
    ) -> torch.Tensor:
        """Augment ``x`` (B, T, F), (B, 1, T, F) or (T, F); returns the same shape.

        ``record`` (a dict), if given, receives each step's output as (B, T, F) under the step's name.
        """

        def run(x):
            for step in self.steps.values():
                step.check_shape(x.shape[1], x.shape[2])
            return self.apply_params(x, self.sample_params(x, generator), record)

        return _on_batch(run, x, "Compose")

    def sample_params(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, dict[str, torch.Tensor]]:
        """``{step name: its params}`` for a (B, T, F) batch shaped like ``x``; every tensor has leading dim B."""
        return {name: step.sample_params(x, generator) for name, step in self.steps.items()}

    def apply_params(self, x: torch.Tensor, params: dict, record: dict | None = None) -> torch.Tensor:
        """Apply the steps to ``x`` (B, T, F) with ``params`` from :meth:`sample_params` (or a slice of them)."""
        for name, step in self.steps.items():
            x = step.apply_params(x, params[name])
            if record is not None:
                record[name] = x
        return x


@dataclass
class AugmentConfig:
    """The view recipe, one field group per step of docs/method.md §5-6; the defaults are the paper's config.

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
    def paper(cls) -> AugmentConfig:
        """The paper's config (the defaults).

        Within-clip views, mix-back out of clip (alpha 0.05), crop, compander, noise, normalise.
        """
        return cls()

    @classmethod
    def from_released(cls, da: dict, learn: dict) -> AugmentConfig:
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
    """The augmentation chain of ``cfg`` in the paper's order; ``mean`` / ``std`` are needed when ``cfg.normalise``."""
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
