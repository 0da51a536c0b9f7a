"""From an encoder to embeddings: every evaluation patch of a set, clip means, the kNN monitor, and a disk cache.

All functions take ``fn``, any callable (B, 1, 101, 96) -> (B, D) such as an encoder's ``embed`` or an
encoder + head, and normalise patches with the training features' ``mean`` / ``std`` first.

:func:`cached_eval_patches` is :func:`embed_eval_patches` of a frozen encoder's ``embed``, stored on disk
(``cache/embeddings/`` of :func:`~uclser_lib.runtime.work_root`, or ``$UCLSER_EMBED_CACHE``; ``UCLSER_EMBED_CACHE=off``
turns it off), so an (encoder, feature set) pair is embedded once, by any notebook or run. An entry's key
(:func:`embedding_key`) is the sha256 of everything the embeddings depend on: the encoder's class, the source file
that defines it and every tensor of its ``state_dict`` (weights and BatchNorm statistics), the exact features
embedded (the packed clips' frames and offsets: a file, a subset or a changed file each have their own entry),
``mean`` / ``std``, the patch protocol (101 frames, hop 50), the device type and the torch version. Entries are
written atomically and carry the sha256 of their arrays; an entry that fails to load or to verify is recomputed
(with a warning) and replaced.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import EVAL_HOP, PATCH_FRAMES, FeatureSet, PackedClips
from .metrics import knn_monitor
from .runtime import pick_device, work_root, write_atomic
from .views import eval_patches

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "cached_eval_patches",
    "clip_embeddings",
    "embed_eval_patches",
    "embedding_key",
    "knn_evaluate",
]

#: The environment variable that moves the embedding cache (a folder) or turns it off ("off", "0", "none").
CACHE_ENV = "UCLSER_EMBED_CACHE"
#: Changes whenever the layout of an entry or the way embeddings are computed changes: old entries then miss.
CACHE_VERSION = 2  # 2: patches embedded in channels-last layout
_OFF = {"off", "0", "none", "false", "no"}


@torch.no_grad()
def embed_eval_patches(
    fn,
    packed,
    mean: float,
    std: float,
    device,
    batch_size: int = 1024,
    clips_per_chunk: int = 512,
    progress: bool = False,
    desc: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn`` (e.g. a model in eval mode) on every evaluation patch (hop 50) of ``packed``.

    Patches are normalised with ``mean`` / ``std``, cut ``clips_per_chunk`` clips at a time (so memory stays
    bounded on FSDnoisy18k-sized sets) and run ``batch_size`` at a time. Returns the outputs (P, D) float32 and
    the clip index of each patch (P,), on ``device``.
    """
    was_training = getattr(fn, "training", False)
    if was_training:
        fn.eval()
    owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    layout = _channels_last(owner)  # the same arithmetic, in the memory layout oneDNN/cuDNN convolve fastest
    outs, index, o = [], [], packed.offsets
    try:
        for a in tqdm(range(0, len(packed), clips_per_chunk), desc=desc, leave=False, disable=not progress):
            b = min(a + clips_per_chunk, len(packed))
            chunk = PackedClips(packed.data[int(o[a]) : int(o[b])], o[a : b + 1] - o[a], packed.labels[a:b])
            patches, clip_index = eval_patches(chunk.to(device))
            for p in patches.split(batch_size):
                x = ((p - mean) / std)[:, None]
                outs.append(fn(x.contiguous(memory_format=torch.channels_last) if layout else x).float())
            index.append(clip_index + a)
    finally:
        if layout is not None:
            layout()
        if was_training:
            fn.train()
    return torch.cat(outs), torch.cat(index)


def _channels_last(module):
    """Put a convolutional ``module``'s 4-d weights in channels-last layout (NHWC), in place; returns the function
    that puts them back, or None (not a module, no 4-d weight, or already channels-last: left as it is). The
    outputs equal the default layout's up to float rounding (a different summation order), several times faster
    on a CPU for the VGG-like and the CRNN."""
    if not isinstance(module, torch.nn.Module):
        return None
    weights = [p for p in module.parameters() if p.dim() == 4]
    if not weights or all(w.is_contiguous(memory_format=torch.channels_last) for w in weights):
        return None  # (a weight with one input channel or a 1 x 1 kernel is both: the others tell)
    module.to(memory_format=torch.channels_last)
    return lambda: module.to(memory_format=torch.contiguous_format)


@torch.no_grad()
def clip_embeddings(
    fn, packed: PackedClips, mean: float, std: float, device=None, cache: bool = True, progress: bool = False
) -> torch.Tensor:
    """Mean of ``fn``'s outputs over each clip's evaluation patches (hop 50): (N clips, D) float32 on the CPU.

    ``fn``: (B, 1, 101, 96) -> (B, D), e.g. ``encoder.embed`` of an encoder in eval mode; patches are
    normalised with ``mean`` / ``std``. When ``fn`` is the ``embed`` method of a module (an encoder) and ``cache``
    is True, the patches' embeddings go through the disk cache (:func:`cached_eval_patches`, the encoder put in
    eval mode); any other callable is run as it is.
    """
    owner = getattr(fn, "__self__", None)
    if cache and isinstance(owner, torch.nn.Module) and getattr(fn, "__name__", "") == "embed":
        out, clip_index = cached_eval_patches(owner, packed, mean, std, pick_device(device), progress=progress)
    else:
        out, clip_index = embed_eval_patches(fn, packed, mean, std, pick_device(device), progress=progress)
    out, clip_index = out.cpu(), clip_index.cpu()
    sums = torch.zeros(len(packed), out.shape[1]).index_add_(0, clip_index, out)
    return sums / torch.bincount(clip_index, minlength=len(packed))[:, None]


def knn_evaluate(
    model, sets: dict[str, FeatureSet], mean: float, std: float, k: int = 200, device=None
) -> dict[str, float]:
    """kNN monitor (docs/method.md §10) on each set of ``sets``.

    Returns ``{"<name>_knn_top1": ..., "<name>_knn_balanced": ...}`` in percent.

    ``model``: encoder + head (pre-training) or any callable (B, 1, 101, 96) -> (B, D), e.g. ``encoder.embed``.
    """
    device = pick_device(device)
    out = {}
    for name, fs in sets.items():
        emb, clip_index = embed_eval_patches(model, fs.clips, mean, std, device)
        emb = torch.nn.functional.normalize(emb, dim=1)  # cosine similarity, also for a bare encoder's embeddings
        labels = fs.clips.labels.to(emb.device)[clip_index]
        fewest_outside = len(emb) - int(torch.bincount(clip_index).max())  # small sets cap k
        res = knn_monitor(emb, labels, clip_index, k=min(k, fewest_outside), n_classes=len(fs.classes))
        out[f"{name}_knn_top1"] = round(float(res["top1"]), 3)
        out[f"{name}_knn_balanced"] = round(float(res["balanced"]), 3)
    return out


# ---------------------------------------------------------------------------------------------
# The disk cache of a frozen encoder's embeddings


def cache_dir() -> Path | None:
    """The embedding cache's folder: ``$UCLSER_EMBED_CACHE`` if set (None when it is "off", "0" or "none"),
    else ``cache/embeddings`` under :func:`~uclser_lib.runtime.work_root`."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in _OFF:
        return None
    return Path(env) if env else work_root() / "cache" / "embeddings"


def _hash_tensor(digest, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _source_sha256(obj) -> str:
    """sha256 of the file defining ``type(obj)`` ("" when there is none): code changes there change the key."""
    try:
        path = inspect.getsourcefile(type(obj))
    except TypeError:
        path = None
    if not path or not os.path.isfile(path):
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def embedding_key(encoder: torch.nn.Module, packed: PackedClips, mean: float, std: float, device) -> str:
    """The hex sha256 naming the cache entry of ``encoder.embed`` over every evaluation patch of ``packed``.

    It covers the encoder's class (module and name), the sha256 of the file defining it, every tensor of its
    ``state_dict`` (name, dtype, shape, bytes), the packed frames and offsets, ``mean`` and ``std`` (as float64),
    the patch protocol (``PATCH_FRAMES``, ``EVAL_HOP``), the device type, the torch version and
    :data:`CACHE_VERSION`. Labels are not part of it: relabelled clips share their entry.
    """
    digest = hashlib.sha256()
    cls = type(encoder)
    header = (
        f"uclser-embeddings v{CACHE_VERSION}|{cls.__module__}.{cls.__qualname__}|{_source_sha256(encoder)}|"
        f"mean {float(mean)!r}|std {float(std)!r}|patch {PATCH_FRAMES} hop {EVAL_HOP}|"
        f"{torch.device(device).type}|torch {torch.__version__}|"
    )
    digest.update(header.encode())
    for name, t in sorted(encoder.state_dict().items()):
        _hash_tensor(digest, f"state:{name}", t)
    _hash_tensor(digest, "frames", packed.data)
    _hash_tensor(digest, "offsets", packed.offsets)
    return digest.hexdigest()


def _arrays_sha256(emb: np.ndarray, index: np.ndarray) -> str:
    digest = hashlib.sha256()
    for name, a in (("emb", emb), ("clip_index", index)):
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _load_entry(path: Path, key: str, n_clips: int) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of a cache entry, verified; ``ValueError`` naming ``path`` and what is wrong."""
    with np.load(path, allow_pickle=False) as f:
        missing = {"emb", "clip_index", "key", "sha256"} - set(f.files)
        if missing:
            raise ValueError(f"{path}: cache entry without {sorted(missing)}")
        emb, index, stored_key, stored_sha = f["emb"], f["clip_index"], str(f["key"]), str(f["sha256"])
    if stored_key != key:
        raise ValueError(f"{path}: holds key {stored_key[:12]}..., expected {key[:12]}...")
    if emb.dtype != np.float32 or emb.ndim != 2 or index.dtype != np.int64 or index.shape != (len(emb),):
        raise ValueError(
            f"{path}: expected emb (P, D) float32 and clip_index (P,) int64, got {emb.dtype} {emb.shape} "
            f"and {index.dtype} {index.shape}"
        )
    if len(index) and (index.min() < 0 or index.max() >= n_clips):
        raise ValueError(f"{path}: clip_index outside 0..{n_clips - 1}")
    actual = _arrays_sha256(emb, index)
    if actual != stored_sha:
        raise ValueError(f"{path}: checksum mismatch (sha256 {actual[:12]}..., recorded {stored_sha[:12]}...)")
    return emb, index


def _save_entry(path: Path, key: str, emb: np.ndarray, index: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, emb=emb, clip_index=index, key=np.array(key), sha256=np.array(_arrays_sha256(emb, index)))
    write_atomic(path, buf.getvalue())


@torch.no_grad()
def cached_eval_patches(
    encoder: torch.nn.Module,
    packed: PackedClips,
    mean: float,
    std: float,
    device,
    progress: bool = False,
    desc: str = "",
    cache: bool = True,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`embed_eval_patches` of ``encoder.embed`` (the encoder put in eval mode: frozen), through the disk cache.

    Returns (embeddings (P, D) float32, clip index (P,) int64) on ``device``, exactly the arrays the encoder gave
    when the entry was made. ``cache=False`` or :func:`cache_dir` None: no disk access. A hit does not run the
    encoder; a miss embeds (with a progress bar when ``progress``) and writes the entry atomically; an entry that
    cannot be read or fails its checksum is recomputed with a ``RuntimeWarning``. A cache folder that cannot be
    written only warns: the embeddings are still returned.
    """
    device = torch.device(device)
    encoder.eval()
    folder = cache_dir() if cache else None
    path = key = None
    if folder is not None:
        key = embedding_key(encoder, packed, mean, std, device)
        path = folder / key[:2] / f"{key}.npz"
        if path.is_file():
            try:
                emb, index = _load_entry(path, key, len(packed))
                return torch.from_numpy(emb).to(device), torch.from_numpy(index).to(device)
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
                warnings.warn(f"embedding cache: {err}; recomputing the entry", RuntimeWarning, stacklevel=2)
    emb, index = embed_eval_patches(
        encoder.embed, packed, mean, std, device, batch_size=batch_size, progress=progress, desc=desc
    )
    if path is not None:
        try:
            _save_entry(path, key, emb.cpu().numpy(), index.cpu().numpy().astype(np.int64))
        except OSError as err:
            warnings.warn(f"embedding cache: could not write {path}: {err}", RuntimeWarning, stacklevel=2)
    return emb, index
