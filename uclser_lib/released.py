"""The authors' released encoders: loading them strictly and checked, and the normalisation they expect.

The released code normalised its inputs with a wrong standard deviation (docs/released-code.md,
"Normalisation std"), so the published encoders were trained on inputs about sqrt(N) times larger than unit
variance: :func:`released_std` gives the std that reproduces their input scale.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import torch

from .checkpoints import load_error
from .features import DEFAULT_PARAMS
from .models import Encoder, build_encoder
from .runtime import sha256_of

__all__ = ["FSD_NOISY_VALUES", "RELEASED_SHA256", "load_released_encoder", "released_std"]

#: sha256 of the authors' released checkpoints (docs/method.md §7), by file name.
RELEASED_SHA256 = {
    "VGG_best.pth": "61fde9cd0b546fb8aab30cdc8327936acc349ec3f4e331b736fd9ec2e4cda9ba",
    "CRNN_best.pth": "3d99a7e11c946edb9c8c2a8cfcf5759244f406a0e40787150d380b901facddee",
}


#: Values (frames x 96 bands) of FSDnoisy18k's noisy train subset, over which the released code computed its
#: normalisation: about 38.6 h (41.1 h of train minus the clean subset's 6 % of the duration, docs/method.md §2)
#: at 22,050 / 220 frames per second. An estimate from the published durations (the features are not here).
FSD_NOISY_VALUES = 41.1 * (1 - 0.06) * 3600 * DEFAULT_PARAMS.sr / DEFAULT_PARAMS.hop_length * DEFAULT_PARAMS.n_mels


def released_std(std: float, n_values: float = FSD_NOISY_VALUES) -> float:
    """The std the released code divides by (docs/released-code.md).

    That is sqrt(sum of squared deviations) / N = ``std / sqrt(N)``.

    ``std``: the correct standard deviation of the training features; ``n_values``: N, the number of values
    they hold. Inputs normalised with it are ``sqrt(N)`` times larger than unit variance, which is what the
    authors' published encoders were trained on and what their BatchNorm statistics expect.
    """
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be finite and > 0, got {std}")
    if not (math.isfinite(n_values) and n_values >= 1):
        raise ValueError(f"n_values (the number of feature values) must be finite and >= 1, got {n_values}")
    return std / math.sqrt(n_values)


def _unwrap_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: a bare state dict, or one under ``state_dict``/``model``, with any
    ``module.`` (DataParallel) or ``encoder.`` prefix removed."""
    for key in ("state_dict", "model", "encoder"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    for prefix in ("module.", "encoder."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return dict(obj)


def load_released_encoder(arch: str, path: str | Path, n_classes: int = 20) -> Encoder:
    """Load an encoder checkpoint strictly (every key used, none missing) and return it in eval mode.

    When the file name is one of ``RELEASED_SHA256`` its sha256 is verified first. Loads with
    ``weights_only=True`` (no arbitrary unpickling). Raises ``ValueError`` naming the path on a corrupt or
    truncated file, a sha256 mismatch (expected vs got) or keys/shapes that do not fit ``arch``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    expected = RELEASED_SHA256.get(path.name)
    if expected is not None:
        got = sha256_of(path)
        if got != expected:
            raise ValueError(f"{path}: sha256 mismatch, expected {expected}, got {got} (corrupt or different file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: cannot read the checkpoint (truncated or corrupt file): {load_error(err)}") from None
    state = _unwrap_state_dict(obj, path)
    model = build_encoder(arch, n_classes)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:

        def few(keys):
            return f"{len(keys)} {keys[:5]}{' ...' if len(keys) > 5 else ''}"

        raise ValueError(
            f"{path} does not fit architecture {arch!r} (n_classes={n_classes}): missing keys {few(missing)}, "
            f"unexpected keys {few(unexpected)}, shape mismatches {few(wrong_shape)}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()
