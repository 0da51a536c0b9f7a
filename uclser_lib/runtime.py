"""The one place that decides the device, the seeds, smoke mode and the data paths."""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import os
import platform
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "PAPER_SEED",
    "DiskFullError",
    "check_torch_pair",
    "checkout_root",
    "data_root",
    "dataset_choice",
    "describe_machine",
    "disk_full_error",
    "encoder_choice",
    "fsd_root",
    "pick_device",
    "seed_everything",
    "sha256_of",
    "shipped_dir",
    "smoke_mode",
    "work_root",
    "write_atomic",
]

_PACKAGE = Path(__file__).resolve().parent


def checkout_root() -> Path | None:
    """The course repository this library runs from (a git clone, editable install), or None when the library is
    installed as a package (``pip install .``, a wheel): the folder above the package, if it holds the course's
    ``pyproject.toml`` and ``notebooks/``."""
    root = _PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def work_root() -> Path:
    """Where the course writes what it makes (``data/``, ``runs/``, ``figures/``, ``build/``): the checkout, or,
    installed as a package, the current working directory (a notebook's folder on Colab or Kaggle)."""
    return checkout_root() or Path.cwd()


def shipped_dir() -> Path:
    """The shipped encoders, their manifest and results: ``pretrained/`` of the checkout, or its copy inside the
    installed package (``uclser_lib/shipped/``, put there by the wheel: pyproject.toml's package-dir)."""
    root = checkout_root()
    return root / "pretrained" if root is not None else _PACKAGE / "shipped"


#: The paper's seed (docs/method.md §9).
PAPER_SEED = 271828


def _release(version: str) -> tuple[int, ...]:
    """``"2.11.0+cu130"`` -> ``(2, 11, 0)``: the release numbers, without local or pre-release tags."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(n) for n in match.group(0).split(".")) if match else ()


def check_torch_pair(version=importlib.metadata.version) -> None:
    """Raise ImportError, naming both versions, unless torchaudio's release is torch's (2.11.0 with 2.11.0).

    Each torchaudio wheel is built against one torch release; another one fails deep inside its
    extension (``undefined symbol``). ``version``: how to read an installed distribution's version.
    A missing torchaudio is left to the import that needs it.
    """
    try:
        torch_v, audio_v = version("torch"), version("torchaudio")
    except importlib.metadata.PackageNotFoundError:
        return
    if _release(torch_v) != _release(audio_v):
        raise ImportError(
            f"torchaudio {audio_v} does not belong with torch {torch_v} (each torchaudio release is built for "
            f"the torch release of the same number); run `make install` to restore the pair in requirements.lock"
        )


def check_gpu(has_gpu=None, cuda_available=None) -> None:
    """Raise RuntimeError when the machine has an NVIDIA GPU (``nvidia-smi`` on the PATH) that torch cannot use.

    The notebooks' setup cell calls it after installing the course on a hosted notebook (Colab, Kaggle): there a
    CPU-only torch beside a GPU would run every lesson on the CPU, silently. ``has_gpu`` and ``cuda_available``
    (functions of no argument) replace the two probes in tests.
    """
    has_gpu = has_gpu or (lambda: shutil.which("nvidia-smi") is not None)
    cuda_available = cuda_available or torch.cuda.is_available
    if has_gpu() and not cuda_available():
        raise RuntimeError(
            "nvidia-smi sees a GPU but the installed torch cannot use it (torch.cuda.is_available() is False): "
            "install a CUDA build of torch 2.11 for this driver, or switch the runtime to CPU"
        )


def smoke_mode() -> bool:
    """True when ``UCLSER_SMOKE=1``: every notebook and run shrinks to seconds."""
    return os.environ.get("UCLSER_SMOKE", "0") not in ("", "0", "false", "False")


def pick_device(prefer: str | None = None) -> torch.device:
    """The device every stage uses.

    ``prefer`` or ``UCLSER_DEVICE`` if given, else CUDA when present (GPU ``LOCAL_RANK``), else CPU. A name torch
    does not know is a ``ValueError`` naming it and where it came from; CUDA asked for where there is none, a
    ``RuntimeError``.
    """
    name = prefer or os.environ.get("UCLSER_DEVICE")
    if name:
        where = f"device {name!r}" if prefer else f"UCLSER_DEVICE={name!r}"
        try:
            dev = torch.device(name)
        except (RuntimeError, TypeError):
            raise ValueError(f"{where}: not a device (expected cpu, cuda, cuda:<index> or mps)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{where} was asked for but CUDA is not available on this machine")
        return dev
    if torch.cuda.is_available():  # under torchrun each process takes the GPU of its LOCAL_RANK
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def describe_machine(device: torch.device) -> dict:
    """Python and torch versions, CPU count, platform, and the GPU's name when ``device`` is CUDA: for results files."""
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def seed_everything(seed: int = PAPER_SEED) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU ``torch.Generator`` seeded likewise."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def data_root() -> Path:
    """Where the course keeps datasets and features: ``UCLSER_DATA``, or ``data/`` in :func:`work_root`."""
    return Path(os.environ.get("UCLSER_DATA") or work_root() / "data").expanduser()


def dataset_choice() -> str | None:
    """The dataset the notebooks run on: ``UCLSER_DATASET`` (``"esc50"``, ``"fsdnoisy18k"``, ``"course"`` or a
    folder's path), or None when it is unset or empty: the course dataset (its tiny preset in smoke mode).
    What :func:`uclser_lib.datasets.prepare` takes as ``dataset``."""
    return os.environ.get("UCLSER_DATASET") or None


def encoder_choice() -> str | None:
    """The encoder notebooks 04-06 evaluate: ``UCLSER_ENCODER`` (a shipped name such as ``"course-resnet18"``, a
    pre-training run's folder or an exported encoder file), or None when it is unset or empty: the shipped encoder.
    What :func:`uclser_lib.pretrained.resolve_encoder` takes as ``spec``."""
    return os.environ.get("UCLSER_ENCODER") or None


def fsd_root() -> Path | None:
    """The real FSDnoisy18k on disk: ``UCLSER_FSD_ROOT`` (``~`` expanded), or None when it is unset or empty.

    The one reader of that variable; :func:`uclser_lib.datasets.prepare` uses it when no ``fsd_root`` is passed."""
    value = os.environ.get("UCLSER_FSD_ROOT")
    return Path(value).expanduser() if value else None


class DiskFullError(OSError):
    """A write stopped by a full disk, a quota or a file-size limit. Its errno is ENOSPC, so callers that catch
    ``OSError`` (or test ``errno.ENOSPC``) keep working; its message names the file and says what to do."""


def disk_full_error(err: BaseException, path) -> DiskFullError | None:
    """A :class:`DiskFullError` saying "no space left on device" naming ``path`` when ``err`` is one (ENOSPC, EDQUOT,
    EFBIG), else None; a ``DiskFullError`` is returned as it is. h5py and torch.save bury the errno in their
    messages; those are recognised by their text. The one rule for telling a full disk apart."""
    if isinstance(err, DiskFullError):
        return err
    codes = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
    text = str(err)
    named = ("No space left on device", "File too large", "Disk quota exceeded", "errno = 28", "errno = 27")
    if (isinstance(err, OSError) and err.errno in codes) or any(n in text for n in named):
        return DiskFullError(errno.ENOSPC, f"{path}: no space left on device (free some space, then run again)")
    return None


def write_atomic(path, content: str | bytes | None = None, save=None, fsync: bool = True) -> Path:
    """Write ``path`` so that it is either its old self or complete: into a temporary file beside it, then renamed.

    ``content``: text or bytes; or ``save``: a function that writes to the temporary path it is given
    (e.g. ``lambda p: torch.save(obj, p)``). ``fsync``: flush ``content`` to the disk before the rename (off for many
    small files that a rerun can remake, such as the course data's WAVs). Creates the parent folder. Returns ``path``.
    If the write fails (a full disk, an interruption), the temporary file is removed and ``path`` is left as it was;
    a full disk is reported as :class:`DiskFullError` (an ``OSError``, errno ENOSPC):
    ``"<path>: no space left on device ..."``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if save is not None:
            save(tmp)
        else:
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            with open(tmp, "wb") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(err, path)
        if full is not None:
            raise full from None
        raise
    return path


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
