"""Per-example NumPy/PIL reference of the view chain, one example at a time as the released code runs it.

Used ONLY by the tests (agreement with :mod:`uclser_lib.augment`: exact given the same drawn parameters,
statistical for whole chains) and as the baseline of ``bench/bench_views.py``. Training uses the batched
:class:`uclser_lib.augment.ViewBuilder`. Patches are (T, F) float32 arrays, frames x bands.

Differences from the released code, on purpose: draws come from one ``np.random.Generator``;
"mix_within_clip" leaves clips shorter than 4 patches unmixed (the released code mixes them with an
all-zero log-mel "background"); the blur uses SciPy (reflect-101 borders, as OpenCV's default).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import correlate1d

from uclser_lib.augment import AugmentConfig, RandomResizedCrop
from uclser_lib.data import PATCH_FRAMES
from uclser_lib.mixback import MIX_WITHIN_MIN_FRAMES

# ---------------------------------------------------------------------------------------------------------------------
# Deterministic steps, given their parameters


def mix_energy(patch: np.ndarray, back: np.ndarray, lam: float) -> np.ndarray:
    """Released mix-back in float64: log10((1 - lam) P + lam E(P) / E(B) B)."""
    p_lin, b_lin = 10 ** patch.astype(np.float64), 10 ** back.astype(np.float64)
    return np.log10(p_lin * (1 - lam) + b_lin * (lam * p_lin.sum() / b_lin.sum())).astype(np.float32)


def time_shift(spec: np.ndarray, d: int) -> np.ndarray:
    """Released circular delay by ``d`` frames."""
    out = np.zeros_like(spec)
    out[d:] = spec[: len(spec) - d]
    out[:d] = spec[len(spec) - d :]
    return out


def freq_shift(spec: np.ndarray, d: int) -> np.ndarray:
    """Released circular upward shift by ``d`` bands."""
    return time_shift(spec.T, d).T.copy()


def resized_crop(spec: np.ndarray, box) -> np.ndarray:
    """PIL crop of ``box`` = (i, j, h, w) (top frame, first band, frames, bands), bilinear resize back to (T, F)."""
    i, j, h, w = (int(v) for v in box)
    image = Image.fromarray(np.ascontiguousarray(spec, dtype=np.float32))
    return np.array(image.crop((j, i, j + w, i + h)).resize((spec.shape[1], spec.shape[0]), Image.BILINEAR))


def time_reversal(spec: np.ndarray, flip: bool) -> np.ndarray:
    return spec[::-1].copy() if flip else spec


def compander(spec: np.ndarray, c: float) -> np.ndarray:
    return (spec * np.float32(c)).astype(np.float32)


def spec_augment(spec: np.ndarray, masks, mask_value: str, z=None) -> np.ndarray:
    """Masks in order, each (axis "freq" | "time", start, width).

    ``z``: one (T, F) standard normal per mask, for ``mask_value`` "noise".
    """
    spec = spec.copy()
    for k, (axis, start, width) in enumerate(masks):
        region = (
            (slice(None), slice(start, start + width)) if axis == "freq" else (slice(start, start + width), slice(None))
        )
        if mask_value == "zero":
            spec[region] = 0
        elif mask_value == "min":
            spec[region] = spec.min()
        elif mask_value == "mean":
            spec[region] = spec.mean()
        elif mask_value == "max":
            spec[region] = spec.max()
        else:  # noise: N(mean, std) of the current patch
            spec[region] = (spec.mean() + spec.std() * z[k])[region]
    return spec


def gauss_noise(spec: np.ndarray, std: float, z: np.ndarray) -> np.ndarray:
    return (spec + std * z).astype(np.float32)


def gaussian_blur(spec: np.ndarray, kt: int, kf: int, sigma: float) -> np.ndarray:
    """OpenCV-style separable Gaussian blur, kernel sizes ``kt`` (frames) x ``kf`` (bands), reflect-101 borders."""
    out = spec.astype(np.float64)
    for axis, k in ((0, kt), (1, kf)):
        d = np.arange(k) - k // 2
        taps = np.exp(-(d**2) / (2 * sigma**2))
        out = correlate1d(out, taps / taps.sum(), axis=axis, mode="mirror")
    return out.astype(np.float32)


def normalise(spec: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((spec - mean) / std).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Draws, as the released code makes them


def rrc_box(rng: np.random.Generator, shape, scale, ratio, attempts: int = 10) -> tuple[int, int, int, int]:
    """Released ``RandomResizedCrop_diy.get_params`` on a (T, F) patch: (i, j, h, w)."""
    H, W = shape
    for _ in range(attempts):
        area = rng.uniform(*scale) * H * W
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w, h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if w <= W and h <= H:
            return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w
    return RandomResizedCrop(scale, ratio, attempts).fallback_box(H, W)


def augment(spec: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, mean=None, std=None) -> np.ndarray:
    """The released transform chain on one patch, in docs/method.md §6 order."""
    T, F = spec.shape
    spec = spec.astype(np.float32)
    if cfg.time_shift:
        spec = time_shift(spec, int(rng.uniform(1, cfg.time_shift_max)))
    if cfg.freq_shift:
        spec = freq_shift(spec, int(rng.uniform(1, cfg.freq_shift_max)))
    if cfg.random_crop:
        spec = resized_crop(spec, rrc_box(rng, spec.shape, cfg.crop_scale, cfg.crop_ratio))
    if cfg.time_reversal:
        spec = time_reversal(spec, rng.random() < cfg.time_reversal_p)
    if cfg.compander:
        spec = compander(spec, rng.uniform(*sorted((cfg.comp_alpha, 1.0))))
    if cfg.freq_mask or cfg.time_mask:
        masks = []
        for axis, on, width, n, size in [
            ("freq", cfg.freq_mask, cfg.freq_mask_width, cfg.n_freq_masks, F),
            ("time", cfg.time_mask, cfg.time_mask_width, cfg.n_time_masks, T),
        ]:
            for _ in range(n if on else 0):
                bw = int(rng.uniform(0, width))
                masks.append((axis, int(rng.integers(0, size - bw + 1)), bw))
        z = [rng.standard_normal((T, F)) for _ in masks] if cfg.mask_value == "noise" else None
        spec = spec_augment(spec, masks, cfg.mask_value, z)
    if cfg.gauss_noise:
        spec = gauss_noise(spec, rng.uniform(0, cfg.noise_max_std), rng.standard_normal((T, F)))
    if cfg.blur:
        kf, kt = 2 * rng.integers(0, cfg.blur_max_ksize // 2 + 1, 2) + 1
        spec = gaussian_blur(spec, kt, kf, cfg.blur_sigma)
    if cfg.normalise:
        spec = normalise(spec, mean, std)
    return spec


def _random_patch(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(clip) - PATCH_FRAMES
    start = int(rng.integers(0, n)) if n > 0 else 0  # released randint(0, T - 101); a 101-frame clip is itself
    return clip[start : start + PATCH_FRAMES]


def views(clips: list[np.ndarray], index: int, cfg: AugmentConfig, rng: np.random.Generator, mean=None, std=None):
    """The released ``__getitem__`` for contrastive training: two augmented (101, F) views of clip ``index``."""
    clip = clips[index]
    img1 = _random_patch(clip, rng)
    img2 = img1.copy() if cfg.positives == "same" else _random_patch(clip, rng)
    if cfg.mix != "none":
        lam = rng.uniform(0, cfg.mix_alpha)
        if cfg.mix == "mix_within_clip":
            backs = [_random_patch(clip, rng), _random_patch(clip, rng)] if len(clip) >= MIX_WITHIN_MIN_FRAMES else None
        else:
            b1 = int(rng.integers(0, len(clips)))
            while b1 == index:
                b1 = int(rng.integers(0, len(clips)))
            b2 = int(rng.integers(0, len(clips)))
            while b2 in (index, b1):
                b2 = int(rng.integers(0, len(clips)))
            backs = [_random_patch(clips[b1], rng), _random_patch(clips[b2], rng)]
        if backs is not None:
            img1, img2 = mix_energy(img1, backs[0], lam), mix_energy(img2, backs[1], lam)
    return augment(img1, cfg, rng, mean, std), augment(img2, cfg, rng, mean, std)


class ReferenceViewDataset(torch.utils.data.Dataset):
    """Released-style dataset: item ``index`` -> (view1, view2), each (1, 101, F) float32 tensors.

    Item draws come from ``np.random.default_rng([seed, epoch, index])``, so they do not depend on the
    DataLoader's workers; call :meth:`set_epoch` between epochs.
    """

    def __init__(self, clips: list[np.ndarray], cfg: AugmentConfig, mean=None, std=None, seed: int = 0):
        self.clips, self.cfg, self.mean, self.std, self.seed, self.epoch = clips, cfg, mean, std, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        v1, v2 = views(self.clips, index, self.cfg, rng, self.mean, self.std)
        return torch.from_numpy(v1)[None], torch.from_numpy(v2)[None]
