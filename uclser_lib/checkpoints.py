"""Run checkpoints: written atomically with a sha256 beside them, verified and loaded safely (``weights_only=True``).

``save_checkpoint`` serialises the state in memory, writes ``checkpoint.pt`` atomically and records its sha256 in
``checkpoint.pt.sha256`` (``sha256sum -c`` format); ``load_checkpoint`` verifies that sum before unpickling
anything, so a flipped byte is refused with one line instead of loading. The sidecar is updated around the rename so
that a crash at any point leaves a pair that verifies: it lists the new sum next to the old one until the new file is
in place.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import torch

from .runtime import write_atomic

__all__ = ["CheckpointError", "load_checkpoint", "load_error", "save_checkpoint", "sidecar_of"]


class CheckpointError(ValueError):
    """A run checkpoint that is missing its checksum's match, unreadable or not a run checkpoint."""


def sidecar_of(path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _sums(sidecar: Path) -> list[str]:
    return [line.split()[0] for line in sidecar.read_text().splitlines() if line.strip()]


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically, its sha256 to ``path.sha256``; a full disk leaves both as they were."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    sidecar = sidecar_of(path)
    old = _sums(sidecar)[:1] if sidecar.is_file() and path.is_file() else []
    # 1. the new sum beside the old one: the old file still verifies if we stop here
    write_atomic(sidecar, "".join(f"{s}  {path.name}\n" for s in [digest, *old]))
    write_atomic(path, data)  # 2. the new file
    write_atomic(sidecar, f"{digest}  {path.name}\n")  # 3. the new sum alone
    return path


def load_error(err: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one line, without torch's advice to retry with
    ``weights_only=False`` (never to be followed for a file that fails here: it would unpickle anything)."""
    text = str(err).strip()
    if "Weights only load failed" in text:
        why = text.partition("WeightsUnpickler error:")[2].partition("Check the documentation")[0]
        why = " ".join(why.split())
        return "it holds something other than tensors and plain containers (never unpickled here)" + (
            f": {why}" if why else ""
        )
    return text.splitlines()[0] if text else type(err).__name__


def load_checkpoint(path, map_location="cpu") -> dict:
    """A training checkpoint, its sha256 verified, loaded safely (``weights_only=True``).

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (one line) for a sha256 mismatch or a
    file that cannot be read. A checkpoint written before checksums were recorded loads with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    data = path.read_bytes()
    sidecar = sidecar_of(path)
    if sidecar.is_file():
        digest = hashlib.sha256(data).hexdigest()
        expected = _sums(sidecar)
        if digest not in expected:
            raise CheckpointError(
                f"{path}: sha256 is {digest[:16]}..., {sidecar.name} expects {expected[0][:16] if expected else '?'}"
                "... (corrupt or replaced checkpoint; resume from a backup or start a new run_dir)"
            )
    else:
        warnings.warn(f"{path}: no {sidecar.name} beside it, its integrity cannot be checked", stacklevel=2)
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {load_error(err)}") from None
