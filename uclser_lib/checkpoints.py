"""Run checkpoints: written atomically by pre-training, loaded safely (``weights_only=True``) everywhere."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["load_checkpoint"]


def load_checkpoint(path, map_location="cpu") -> dict:
    """A training checkpoint, loaded safely (``weights_only=True``); a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable checkpoint (truncated or corrupt?): {err}") from None
