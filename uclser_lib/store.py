"""A feature store: a training set's packed log-mel clips on disk, memory-mapped and read lazily (issue #33).

Pre-training in memory (:func:`uclser_lib.train.pretrain`'s default where the set fits) holds every frame as
float32 on the device, in every process. A store holds them once, on disk, in the packed layout of
:class:`~uclser_lib.data.PackedClips`, and a process reads only the frames a batch needs; the processes of one
machine share the operating system's page cache of the file instead of each holding a copy.

A store is a folder:

- ``frames.npy``: (S, F) float16, the clips one after the other (clip ``i`` is rows ``offsets[i]:offsets[i + 1]``),
  a plain ``.npy`` file opened with ``numpy.load(mmap_mode="r")``;
- ``index.npz``: ``offsets`` (N + 1,) int64, ``labels`` (N,) int64 class indices or (N, C) float32 multi-hot (kept
  as given, never interpreted), ``fnames`` (N,) str, ``clean`` and ``noisy_small`` (N,) bool;
- ``store.json``: the manifest, written last: format and version, N, S, F, the classes, the feature parameters,
  the largest ``|value|``, and each file's size in bytes and sha256.

The folder is written under a temporary name beside its place and renamed into place whole (a half-written store
is never taken for a complete one). Opening checks each file's size against the manifest (a truncated file is a
one-line :class:`StoreError` naming it) and, with ``verify="full"``, its sha256 (an altered file too).

Precision: frames are kept as float16 (half the bytes of float32). float16 has an 11-bit significand, so a value
``x`` is rounded to within ``|x| * 2**-11`` (relative 4.9e-4; below 6.1e-5 in magnitude, subnormals, to within
``2**-25`` absolute). The course's log10 mel values lie in about [-8, 5] (log10 of power plus ``eps`` = 1.1e-8),
so the rounding error is at most ``2**-9`` = 0.00195 log10 units (0.0195 dB) for ``|x|`` in [4, 8), and
``2**-10`` or less closer to 0: far below the spread of the features (their std is of order 1) and below the
0.05 log10 units the course's extraction is held to against the released features. Values beyond float16's range
(``|x|`` > 65504) and NaN or inf are refused when the store is written, naming the clip and frame.

:class:`StoredClips` reads a store the way :class:`~uclser_lib.data.PackedClips` is read: ``offsets``, ``lengths``,
``labels``, ``len()``, ``clip(i)``, ``data[a:b]`` (float32 rows), plus :meth:`StoredClips.gather_patches`, so the
view builder and the embedding functions take either.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data import PATCH_FRAMES, FeatureSet, PackedClips
from .features import DEFAULT_PARAMS, LogMelParams
from .runtime import disk_full_error

__all__ = [
    "FLOAT16_MAX",
    "STORE_FORMAT",
    "STORE_VERSION",
    "StoreError",
    "StoredClips",
    "StoredFrames",
    "StoredSet",
    "choose_store",
    "memory_available",
    "open_store",
    "store_stats",
    "write_store",
    "write_store_chunks",
    "write_store_from_h5",
]

STORE_FORMAT = "uclser-store"
STORE_VERSION = 1
#: The largest finite float16 value: a frame value beyond it cannot be stored.
FLOAT16_MAX = float(np.finfo(np.float16).max)
#: Frames converted, hashed or summed at a time (96 bands: 24 MiB of float16, 96 MiB as float64).
CHUNK_FRAMES = 1 << 17
MANIFEST, FRAMES, INDEX = "store.json", "frames.npy", "index.npz"


class StoreError(ValueError):
    """A store is absent, incomplete, truncated, altered or not a store; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Writing


def _hashing_writer(f, digest):
    def write(b: bytes | memoryview) -> None:
        digest.update(b)
        f.write(b)

    return write


def write_store_chunks(
    path,
    chunks: Iterable[np.ndarray],
    offsets,
    labels=None,
    fnames: list[str] | None = None,
    clean=None,
    noisy_small=None,
    classes: list[str] | None = None,
    params: LogMelParams = DEFAULT_PARAMS,
    source: str = "",
    overwrite: bool = False,
) -> Path:
    """Write a store at ``path`` (a folder) from its frames given in order, chunk by chunk; return ``path``.

    ``chunks``: (t, F) float arrays whose rows, concatenated, are the S frames of the clips one after the other;
    any chunk sizes (a chunk need not end at a clip boundary), so a set larger than memory can be written.
    ``offsets`` (N + 1,) int, increasing from 0 to S. ``labels``: (N,) int class indices, (N, C) multi-hot or None
    (-1 for every clip); stored as given. ``fnames`` (N,) (default ``"0"``, ``"1"``, ...), ``clean``,
    ``noisy_small`` (N,) bool (default False), ``classes``, ``params`` and ``source`` (a note of where the frames
    came from) are metadata. Frames are written as float16: a NaN, an inf or a value beyond +-65504 is a
    :class:`StoreError` naming the clip and frame. An existing store at ``path`` is replaced only with
    ``overwrite``. The folder is written under a temporary name and renamed into place, so ``path`` never holds
    a partial store; a full disk is a :class:`~uclser_lib.runtime.DiskFullError` naming ``path``.
    """
    path = Path(path)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise StoreError(f"{path}: offsets must be (N + 1,) increasing from 0 with N >= 1, got {offsets[:5]}...")
    n, n_frames = len(offsets) - 1, int(offsets[-1])
    labels = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(labels)
    if labels.ndim not in (1, 2) or len(labels) != n:
        raise StoreError(f"{path}: labels must be (N,) or (N, C) with N = {n}, got shape {labels.shape}")
    fnames = [str(i) for i in range(n)] if fnames is None else [str(s) for s in fnames]
    clean = np.zeros(n, bool) if clean is None else np.asarray(clean, dtype=bool)
    noisy_small = np.zeros(n, bool) if noisy_small is None else np.asarray(noisy_small, dtype=bool)
    for key, a in (("fnames", fnames), ("clean", clean), ("noisy_small", noisy_small)):
        if len(a) != n:
            raise StoreError(f"{path}: {key} has {len(a)} entries, expected {n} (one per clip)")
    if path.exists() and not overwrite:
        raise StoreError(f"{path}: already exists; pass overwrite=True to replace it, or choose another path")

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        n_bands, max_abs, frames_digest = _write_frames(tmp / FRAMES, path, chunks, offsets, fnames)
        buf = io.BytesIO()
        np.savez(
            buf,
            offsets=offsets,
            labels=labels,
            fnames=np.array(fnames, dtype=str),
            clean=clean,
            noisy_small=noisy_small,
        )
        index_bytes = buf.getvalue()
        _write_synced(tmp / INDEX, index_bytes)
        manifest = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "n_clips": n,
            "n_frames": n_frames,
            "n_bands": n_bands,
            "dtype": "float16",
            "max_abs": max_abs,
            "classes": list(classes) if classes is not None else [],
            "params": params.to_dict(),
            "source": source,
            "uclser_version": __version__,
            "files": {
                FRAMES: {"bytes": (tmp / FRAMES).stat().st_size, "sha256": frames_digest},
                INDEX: {"bytes": len(index_bytes), "sha256": hashlib.sha256(index_bytes).hexdigest()},
            },
        }
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())  # last: the folder is complete
        _swap_into_place(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_error(err, path)
        if full is not None:
            raise full from None
        raise
    return path


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_frames(
    file: Path, path: Path, chunks: Iterable[np.ndarray], offsets: np.ndarray, fnames: list[str]
) -> tuple[int, float, str]:
    """Write the float16 ``.npy`` of the frames chunk by chunk; (bands, largest |value|, sha256 of the file)."""
    n_frames = int(offsets[-1])
    digest = hashlib.sha256()
    written, max_abs, n_bands = 0, 0.0, None
    with open(file, "wb") as f:
        write = _hashing_writer(f, digest)
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.ndim != 2:
                raise StoreError(f"{path}: frame chunks must be (frames, bands), got shape {chunk.shape}")
            if n_bands is None:
                n_bands = chunk.shape[1]
                header = {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": (n_frames, n_bands)}
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(head, header)
                write(head.getvalue())
            if chunk.shape[1] != n_bands:
                raise StoreError(f"{path}: a chunk has {chunk.shape[1]} bands, the first had {n_bands}")
            if written + len(chunk) > n_frames:
                raise StoreError(f"{path}: the chunks hold more frames than offsets[-1] = {n_frames}")
            bad = ~np.isfinite(chunk) | (np.abs(chunk) > FLOAT16_MAX)
            if bad.any():
                row = written + int(np.flatnonzero(bad.any(1))[0])
                clip = int(np.searchsorted(offsets, row, side="right")) - 1
                value = chunk[row - written][bad[row - written]][0]
                raise StoreError(
                    f"{path}: clip {clip} ({fnames[clip]}), frame {row - int(offsets[clip])} holds {value}: expected "
                    f"finite values within +-{FLOAT16_MAX:.0f} (float16); {int(bad.sum())} such value(s) in this chunk"
                )
            half = np.ascontiguousarray(chunk, dtype=np.float16)
            if len(half):
                max_abs = max(max_abs, float(np.abs(half).max()))
            write(memoryview(half).cast("B"))
            written += len(chunk)
        if n_bands is None:
            raise StoreError(f"{path}: no frame chunk given; a store holds at least one clip")
        if written != n_frames:
            raise StoreError(f"{path}: the chunks hold {written} frames, offsets[-1] says {n_frames}")
        f.flush()
        os.fsync(f.fileno())
    return n_bands, max_abs, digest.hexdigest()


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished folder ``tmp`` to ``path``; an existing store there is moved aside first, then deleted
    (processes that still map its files keep reading them)."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _frame_chunks(data: torch.Tensor, chunk_frames: int) -> Iterator[np.ndarray]:
    for a in range(0, data.shape[0], chunk_frames):
        yield data[a : a + chunk_frames].cpu().numpy()


def write_store(features: FeatureSet, path, overwrite: bool = False, chunk_frames: int = CHUNK_FRAMES) -> Path:
    """Write a store at ``path`` holding ``features`` (its frames rounded to float16, its metadata as it is);
    :func:`write_store_chunks`'s contract."""
    clips = features.clips
    return write_store_chunks(
        path,
        _frame_chunks(clips.data, chunk_frames),
        clips.offsets.cpu().numpy(),
        clips.labels.cpu().numpy(),
        features.fnames,
        features.clean,
        features.noisy_small,
        features.classes,
        features.params,
        source="FeatureSet",
        overwrite=overwrite,
    )


def write_store_from_h5(
    h5_path,
    path,
    index=None,
    params: LogMelParams = DEFAULT_PARAMS,
    overwrite: bool = False,
    chunk_frames: int = CHUNK_FRAMES,
) -> Path:
    """Write a store at ``path`` from a feature file of :func:`~uclser_lib.data.extract_split`, chunk by chunk.

    Never more than ``chunk_frames`` frames of the file are in memory at once (the file may be larger than
    memory). ``index``: the clips to keep (a boolean mask or increasing integer indices, e.g. a split's), default
    all. The file is checked as :func:`~uclser_lib.data.load_features` checks it (ours, ``params``).
    """
    from .data import open_feature_file

    h5_path = Path(h5_path)
    with open_feature_file(h5_path, params) as f:
        offsets = f["offsets"][...].astype(np.int64)
        n = len(offsets) - 1
        keep = np.arange(n) if index is None else np.asarray(index)
        if keep.dtype == bool:
            if keep.shape != (n,):
                raise ValueError(f"{h5_path}: index is a mask of {keep.shape}, the file holds {n} clips")
            keep = np.flatnonzero(keep)
        keep = keep.astype(np.int64)
        if len(keep) == 0 or keep.min() < 0 or keep.max() >= n or np.any(np.diff(keep) <= 0):
            raise ValueError(f"{h5_path}: index must select clips in increasing order within 0..{n - 1}")
        lengths = offsets[keep + 1] - offsets[keep]
        new_offsets = np.concatenate([[0], np.cumsum(lengths)])
        feats = f["features"]

        def chunks() -> Iterator[np.ndarray]:
            # runs of consecutive kept clips are read as contiguous row ranges, at most chunk_frames rows at a time
            breaks = np.flatnonzero(np.diff(keep) != 1) + 1
            for run in np.split(keep, breaks):
                a, b = int(offsets[run[0]]), int(offsets[run[-1] + 1])
                for s in range(a, b, chunk_frames):
                    yield feats[s : min(s + chunk_frames, b)]

        label = f["label"][...]
        return write_store_chunks(
            path,
            chunks(),
            new_offsets,
            label[keep],
            [s.decode() for s in f["fname"][...][keep]],
            f["clean"][...].astype(bool)[keep],
            f["noisy_small"][...].astype(bool)[keep],
            json.loads(f.attrs["classes"]),
            params,
            source=str(h5_path),
            overwrite=overwrite,
        )


# ---------------------------------------------------------------------------------------------
# Reading


class StoredFrames:
    """A store's frames as ``PackedClips.data`` is read: ``shape`` (S, F), ``ndim``, ``dtype`` (float32, as read),
    ``device``, and ``frames[a:b]`` -> the rows a..b as a (b - a, F) float32 tensor on ``device`` (read from the
    file then; a step other than 1 is refused)."""

    def __init__(self, clips: StoredClips):
        self._clips = clips

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._clips.frames.shape)

    ndim = 2
    dtype = torch.float32

    @property
    def device(self) -> torch.device:
        return self._clips.device

    def __len__(self) -> int:
        return self._clips.frames.shape[0]

    def __getitem__(self, key) -> torch.Tensor:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"stored frames are read by row ranges data[a:b], got {key!r}")
        rows = np.array(self._clips.frames[key])  # a copy: the map is read-only
        return torch.from_numpy(rows).to(self.device).float()


class StoredClips:
    """Packed clips read lazily from a store's memory-mapped float16 frames; the read side of
    :class:`~uclser_lib.data.PackedClips`.

    ``frames`` (S, F) float16 (a read-only memory map); ``offsets`` (N + 1,) int64 and ``labels`` ((N,) or (N, C),
    as stored) are tensors on ``device``, the device reads are delivered to. ``lengths`` (N,) frames per clip,
    ``len()`` N, ``clip(i)`` (T_i, F) float32, ``data[a:b]`` float32 rows, :meth:`gather_patches` the patches of a
    batch. Every read converts float16 to float32 exactly. ``max_abs``: the largest |value| (from the manifest);
    every value is finite (the writer refuses others). ``content_sha256``: the recorded sha256 of ``frames.npy``,
    the frames' identity (e.g. for a cache key), or None.
    """

    def __init__(
        self,
        frames: np.ndarray,
        offsets,
        labels,
        device="cpu",
        max_abs: float = math.inf,
        path=None,
        content_sha256: str | None = None,
    ):
        self.frames, self.content_sha256 = frames, content_sha256
        self.device = torch.device(device)
        self._offsets_cpu = torch.as_tensor(offsets, dtype=torch.int64).cpu()
        self.offsets = self._offsets_cpu.to(self.device)
        self.labels = torch.as_tensor(labels).to(self.device)
        self.max_abs, self.path = max_abs, path
        n_bands = frames.shape[1]
        n_windows = max(frames.shape[0] - PATCH_FRAMES + 1, 0)
        step = frames.strides[0]
        # every 101-frame window of the map, without a copy: a batch's patches are one fancy index (a read of
        # the pages they lie on)
        self._windows = np.lib.stride_tricks.as_strided(
            frames, (n_windows, PATCH_FRAMES, n_bands), (step, step, frames.strides[1]), writeable=False
        )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def data(self) -> StoredFrames:
        return StoredFrames(self)

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) frames per clip, on ``device``."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def nbytes_float32(self) -> int:
        """Bytes the frames take as float32 in memory (what the in-memory path holds)."""
        return int(self.frames.shape[0]) * int(self.frames.shape[1]) * 4

    def clip(self, i: int) -> torch.Tensor:
        """Clip ``i`` as a (T_i, F) float32 tensor on ``device`` (read now)."""
        return self.data[int(self._offsets_cpu[i]) : int(self._offsets_cpu[i + 1])]

    def gather_patches(self, clip_idx: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Patches ``clip(c)[s : s + 101]`` for each (c, s) of ``clip_idx``, ``starts`` (B,): (B, 101, F) float32 on
        ``device``; only those frames are read from the file. Starts are not checked against the clips' lengths
        (the caller draws them within)."""
        rows = (self._offsets_cpu[clip_idx.cpu()] + starts.cpu()).numpy()
        half = torch.from_numpy(self._windows[rows])  # (B, 101, F) float16, read from the map
        return half.to(self.device).float()

    def to(self, device) -> StoredClips:
        """The same store, its offsets and labels on ``device`` and reads delivered there."""
        return StoredClips(
            self.frames, self._offsets_cpu, self.labels.cpu(), device, self.max_abs, self.path, self.content_sha256
        )

    def load(self, chunk_frames: int = CHUNK_FRAMES) -> PackedClips:
        """Every frame as an in-memory :class:`~uclser_lib.data.PackedClips` (float32, CPU), read in chunks."""
        data = torch.empty(tuple(self.frames.shape), dtype=torch.float32)
        for a in range(0, len(data), chunk_frames):
            data[a : a + chunk_frames] = torch.from_numpy(np.array(self.frames[a : a + chunk_frames]))
        return PackedClips(data, self._offsets_cpu.clone(), self.labels.cpu())


def store_stats(clips: StoredClips, chunk_frames: int = CHUNK_FRAMES) -> tuple[float, float]:
    """Mean and population std of every stored value (:func:`~uclser_lib.data.feature_stats` of the store), read in
    chunks of ``chunk_frames`` frames and accumulated in float64 (each chunk's mean and sum of squared deviations,
    combined exactly: no cancellation however large the store)."""
    count, mean, m2 = 0, 0.0, 0.0
    for a in range(0, clips.frames.shape[0], chunk_frames):
        x = np.asarray(clips.frames[a : a + chunk_frames], dtype=np.float64)
        n = x.size
        if n == 0:
            continue
        m = float(x.mean())
        s = float(np.square(x - m).sum())
        total = count + n
        delta = m - mean
        mean += delta * n / total
        m2 += s + delta * delta * count * n / total
        count = total
    return mean, math.sqrt(m2 / count)


@dataclass
class StoredSet:
    """An opened store: the :class:`~uclser_lib.data.FeatureSet` interface pre-training and the kNN monitor use.

    ``clips`` (:class:`StoredClips`), ``fnames``, ``clean``, ``noisy_small`` (N,) bool, ``classes``, ``params``,
    ``path`` (the store's folder), ``manifest`` (its ``store.json``).
    """

    clips: StoredClips
    fnames: list[str]
    clean: np.ndarray
    noisy_small: np.ndarray
    classes: list[str]
    params: LogMelParams
    path: Path
    manifest: dict

    def __len__(self) -> int:
        return len(self.fnames)

    @property
    def labels(self) -> np.ndarray:
        """The stored labels: (N,) int64 class indices or (N, C) multi-hot."""
        return self.clips.labels.cpu().numpy()

    @property
    def multilabel(self) -> bool:
        return self.clips.labels.ndim == 2

    def load(self) -> FeatureSet:
        """The whole set in memory as a :class:`~uclser_lib.data.FeatureSet` (float32 frames, float16-rounded)."""
        return FeatureSet(self.clips.load(), list(self.fnames), self.clean, self.noisy_small, self.classes, self.params)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def open_store(path, verify: str = "full", device="cpu") -> StoredSet:
    """Open the store at ``path``: a :class:`StoredSet` whose clips read from the memory-mapped frames.

    ``verify``: ``"full"`` checks every file's size and sha256 against the manifest (a pass over the frames, at
    disk speed); ``"size"`` checks sizes (catches a truncated file) and the index's sha256 only. A missing,
    incomplete, truncated or altered store is a one-line :class:`StoreError` naming the file. ``device``: where
    reads are delivered (:meth:`StoredClips.to`).
    """
    if verify not in ("full", "size"):
        raise ValueError(f"open_store: verify must be 'full' or 'size', got {verify!r}")
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        why = (
            "no such folder" if not path.exists() else f"no {MANIFEST}: not a store, or one whose write did not finish"
        )
        raise StoreError(f"{path}: not a feature store ({why}); write it with uclser_lib.store.write_store")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"{manifest_path}: not a readable store manifest ({err})") from None
    if manifest.get("format") != STORE_FORMAT or manifest.get("version") != STORE_VERSION:
        raise StoreError(
            f"{manifest_path}: not a {STORE_FORMAT} manifest of version {STORE_VERSION} "
            f"(format {manifest.get('format')!r}, version {manifest.get('version')!r})"
        )
    for name in (FRAMES, INDEX):
        file, want = path / name, manifest["files"][name]
        if not file.is_file():
            raise StoreError(f"{file}: missing from the store; rewrite the store")
        size = file.stat().st_size
        if size != want["bytes"]:
            raise StoreError(
                f"{file}: {size} bytes, the store recorded {want['bytes']} (truncated or altered); rewrite the store"
            )
        if verify == "full" or name == INDEX:
            actual = _sha256_file(file)
            if actual != want["sha256"]:
                raise StoreError(
                    f"{file}: sha256 {actual[:12]}... differs from the recorded {want['sha256'][:12]}... (altered or "
                    "corrupted); rewrite the store"
                )
    frames = np.load(path / FRAMES, mmap_mode="r")
    shape = (manifest["n_frames"], manifest["n_bands"])
    if frames.dtype != np.float16 or frames.shape != shape:
        raise StoreError(f"{path / FRAMES}: holds {frames.dtype} {frames.shape}, the store recorded float16 {shape}")
    with np.load(path / INDEX, allow_pickle=False) as index:
        offsets, labels = index["offsets"], index["labels"]
        fnames, clean, noisy_small = index["fnames"].tolist(), index["clean"], index["noisy_small"]
    if len(offsets) != manifest["n_clips"] + 1 or int(offsets[-1]) != shape[0]:
        raise StoreError(
            f"{path / INDEX}: offsets disagree with the manifest ({len(offsets)} entries, last {offsets[-1]})"
        )
    sha = manifest["files"][FRAMES]["sha256"]
    clips = StoredClips(
        frames, torch.from_numpy(offsets), torch.from_numpy(labels), device, manifest["max_abs"], path, sha
    )
    return StoredSet(
        clips, fnames, clean, noisy_small, manifest["classes"], LogMelParams(**manifest["params"]), path, manifest
    )


# ---------------------------------------------------------------------------------------------
# Where to train from


def memory_available() -> int:
    """Bytes of memory new allocations can take now: ``MemAvailable`` of ``/proc/meminfo`` (Linux), else the
    machine's physical memory (``os.sysconf``)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


#: The in-memory path's host memory per process, in float32 copies of the set: the frames, and the float64 copy
#: its statistics are computed on (the powers 10**x of a CPU run come after that copy is freed).
HOST_COPIES = 3
#: Its device memory on a GPU, in float32 copies: the frames and their powers.
DEVICE_COPIES = 2
#: The share of the available memory the in-memory path may plan to fill.
MEMORY_SHARE = 0.8


def choose_store(
    nbytes_float32: int,
    device,
    ranks_per_node: int = 1,
    available: int | None = None,
    device_free: int | None = None,
) -> tuple[str, str]:
    """Where :func:`~uclser_lib.train.pretrain` draws its batches from when ``store="auto"``: ``("memory" | "disk",
    why)``.

    In memory when every process of this machine (``ranks_per_node``) can hold :data:`HOST_COPIES` float32 copies
    of the set (``nbytes_float32`` bytes each) within :data:`MEMORY_SHARE` of ``available`` bytes (default
    :func:`memory_available`), and, on a CUDA ``device``, :data:`DEVICE_COPIES` copies fit in that share of the
    device's free memory (``device_free``, default ``torch.cuda.mem_get_info``); else from the disk store.
    """
    device = torch.device(device)
    available = memory_available() if available is None else available
    host_need = ranks_per_node * HOST_COPIES * nbytes_float32
    gb = 1e9
    if host_need > MEMORY_SHARE * available:
        return "disk", (
            f"{ranks_per_node} process(es) x {HOST_COPIES} x {nbytes_float32 / gb:.2f} GB (float32 set) = "
            f"{host_need / gb:.1f} GB > {MEMORY_SHARE:.0%} of {available / gb:.1f} GB available"
        )
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] if device_free is None else device_free
        if DEVICE_COPIES * nbytes_float32 > MEMORY_SHARE * free:
            return "disk", (
                f"{DEVICE_COPIES} x {nbytes_float32 / gb:.2f} GB > {MEMORY_SHARE:.0%} of {free / gb:.1f} GB free on "
                f"{device}"
            )
    return "memory", f"{host_need / gb:.1f} GB fits in {MEMORY_SHARE:.0%} of {available / gb:.1f} GB available"
