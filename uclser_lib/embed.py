"""From an encoder to embeddings: every evaluation patch of a set, clip means, the kNN monitor, and a disk cache.

All functions take ``fn``, any callable (B, 1, 101, 96) -> (B, D) such as an encoder's ``embed`` or an
encoder + head, and normalise patches with the training features' ``mean`` / ``std`` first.

On a CPU, :func:`embed_eval_patches` runs a VGG-like or CRNN encoder (in eval mode, enough patches) through
:func:`inference_fn`: a frozen graph of a copy of it, BatchNorm folded into the convolutions, oneDNN's layouts, a few
patches at a time (``bench/bench_embed_cpu.py``: about 2x channels-last eager); other modules (and any device but
the CPU) run as they are, convolutional ones in channels-last layout.

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

import copy
import hashlib
import inspect
import io
import os
import warnings
import weakref
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import EVAL_HOP, PATCH_FRAMES, FeatureSet, PackedClips
from .metrics import knn_monitor, knn_multilabel
from .models import arch_of
from .runtime import pick_device, work_root, write_atomic
from .views import eval_patch_counts, eval_patches

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "cached_eval_patches",
    "clip_embeddings",
    "embed_eval_patches",
    "embedding_key",
    "inference_fn",
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
    n_patches = int(eval_patch_counts(packed.lengths).sum())
    # on a CPU: BatchNorm folded, oneDNN's layouts (a frozen graph of a copy of the encoder); else fn itself
    run = inference_fn(fn, device, n_patches, (1, PATCH_FRAMES, packed.data.shape[1]))
    # else the same arithmetic in the memory layout oneDNN/cuDNN convolve fastest (the module put back after)
    layout = _channels_last(owner) if run is fn else None
    outs, index, o = [], [], packed.offsets
    try:
        for a in tqdm(range(0, len(packed), clips_per_chunk), desc=desc, leave=False, disable=not progress):
            b = min(a + clips_per_chunk, len(packed))
            chunk = PackedClips(packed.data[int(o[a]) : int(o[b])], o[a : b + 1] - o[a], packed.labels[a:b])
            patches, clip_index = eval_patches(chunk.to(device))
            for p in patches.split(batch_size):
                x = ((p - mean) / std)[:, None]
                outs.append(run(x.contiguous(memory_format=torch.channels_last) if layout else x).float())
            index.append(clip_index + a)
    finally:
        if layout is not None:
            layout()
        if was_training:
            fn.train()
    return torch.cat(outs), torch.cat(index)


# ---------------------------------------------------------------------------------------------
# Eval-mode inference on a CPU: BatchNorm folded into the convolutions, oneDNN's blocked layouts

#: The encoders (:func:`~uclser_lib.models.arch_of` names) whose CPU embedding runs through a frozen graph
#: (:func:`inference_fn`): where it is faster than channels-last eager; the ResNet-18, already near the core's peak
#: eagerly, is left eager (measurements: ``bench/bench_embed_cpu.py``, bench/RESULTS.md).
FROZEN_ARCHS = ("vgglike", "crnn")
#: Fewer patches than this are embedded eagerly: the frozen graph's build (trace, freeze, oneDNN weight packing)
#: would cost more than it saves.
FROZEN_MIN_PATCHES = 256
#: The frozen graph runs this many patches at a time, whatever the caller's batch: the full-resolution activations
#: of a few patches (the VGG-like's 32 x 101 x 96, the CRNN's 128 x 101 x 96 floats, 1.2-5 MB each) stay in the
#: core's caches; at 128 and more they go through memory (bench/RESULTS.md).
FROZEN_BATCH = 4
#: encoder -> (method name, the weights its graphs were built from, {input shape: frozen graph, or None: failed})
_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Method(torch.nn.Module):
    """``module.<name>(x)`` as a module's forward (what is traced)."""

    def __init__(self, module: torch.nn.Module, name: str):
        super().__init__()
        self.module, self.name = module, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.module, self.name)(x)


def _owner_and_method(fn) -> tuple[torch.nn.Module | None, str]:
    """(the encoder, "forward" or "embed") when ``fn`` is an encoder of :data:`FROZEN_ARCHS` or its own ``embed``."""
    if isinstance(fn, torch.nn.Module):
        owner, name = fn, "forward"
    else:
        owner, name = getattr(fn, "__self__", None), getattr(fn, "__name__", "")
        if name != "embed" or getattr(fn, "__func__", None) is not getattr(type(owner), "embed", None):
            return None, ""
    if not isinstance(owner, torch.nn.Module) or arch_of(owner) not in FROZEN_ARCHS:
        return None, ""
    return owner, name


def _same_state(snapshot: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    state = module.state_dict()
    return state.keys() == snapshot.keys() and all(
        t.dtype == snapshot[k].dtype and t.shape == snapshot[k].shape and torch.equal(t, snapshot[k])
        for k, t in state.items()
    )


def _freeze(owner: torch.nn.Module, name: str, example: torch.Tensor):
    """A frozen TorchScript graph of a copy of ``owner`` (eval mode): BatchNorm folded into the convolutions, weights
    packed for oneDNN, activations in its blocked layout between the convolutions (``torch.jit.freeze`` +
    ``torch.jit.optimize_for_inference``). Raises whatever tracing or freezing raises."""
    module = _Method(copy.deepcopy(owner).eval(), name).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices and tracer warnings: not the user's
        traced = torch.jit.trace(module, example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def _close(out: torch.Tensor, ref: torch.Tensor) -> bool:
    """Equal up to float32 rounding of sums over some 10^4 terms in another order: a loose check of a build, which
    a wrong graph (a missing term, a baked-in batch size) fails by far."""
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return (
        out.shape == ref.shape
        and bool(torch.isfinite(out).all())
        and float((out - ref).abs().max()) <= 1e-4 * max(scale, 1e-6)
    )


class _Frozen:
    """Runs ``graph`` :data:`FROZEN_BATCH` patches at a time; ``fn`` instead, silently and from then on, if it ever
    raises."""

    def __init__(self, graph, fn, graphs: dict, shape: tuple):
        self.graph, self.fn, self.graphs, self.shape = graph, fn, graphs, shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return torch.cat([self.graph(p) for p in x.contiguous().split(FROZEN_BATCH)])
            except Exception:  # noqa: BLE001 - the plain path from now on
                self.graph = self.graphs[self.shape] = None
        return self.fn(x)


def _build(owner: torch.nn.Module, name: str, fn, shape: tuple):
    """The frozen graph of ``owner``'s ``name`` for patches of ``shape``, traced on 2 random patches and checked
    against ``fn`` on 3 others (so a batch size baked into the graph shows); None when anything fails."""
    try:
        x = torch.randn((5, *shape), generator=torch.Generator().manual_seed(0))  # the global RNG is not touched
        graph = _freeze(owner, name, x[:2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return graph if _close(graph(x[2:]), fn(x[2:])) else None
    except Exception:  # noqa: BLE001 - no TorchScript, no oneDNN, a module it cannot trace: the plain path
        return None


def inference_fn(fn, device, n_patches: int | None = None, patch_shape: tuple = (1, PATCH_FRAMES, 96)):
    """A callable equal to ``fn`` up to float32 rounding and faster for eval-mode inference on a CPU, else ``fn``.

    When ``fn`` is a VGG-like or CRNN encoder (:data:`FROZEN_ARCHS`) or its ``embed``, in eval mode, with float32
    weights on the CPU, ``device`` is the CPU, gradients are off (``torch.no_grad``) and there are at least
    :data:`FROZEN_MIN_PATCHES` patches to embed (``n_patches``; None: enough), the result runs a frozen graph of a
    copy of the encoder (:func:`_freeze`): BatchNorm folded into the convolutions, oneDNN's blocked layouts,
    :data:`FROZEN_BATCH` patches at a time (its speed: ``bench/bench_embed_cpu.py``, bench/RESULTS.md). The
    encoder itself is not touched. The graph is kept for the encoder while its
    weights stay the same (compared exactly), so embedding several sets builds it once. Any failure (TorchScript
    missing, a trace that does not fit, outputs that differ from ``fn`` on the check's patches) gives ``fn``'s own
    outputs, silently. The result takes (B, *patch_shape) like ``fn``.
    """
    owner, name = _owner_and_method(fn)
    if (
        owner is None
        or owner.training
        or torch.is_grad_enabled()
        or torch.device(device).type != "cpu"
        or (n_patches is not None and n_patches < FROZEN_MIN_PATCHES)
        or not torch.backends.mkldnn.is_available()
    ):
        return fn
    state = owner.state_dict()
    if not state or any(
        t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32) for t in state.values()
    ):
        return fn
    entry = _FROZEN.get(owner)
    if entry is None or entry[0] != name or not _same_state(entry[1], owner):
        entry = (name, {k: t.detach().clone() for k, t in state.items()}, {})  # graphs by patch shape
        _FROZEN[owner] = entry
    shape, graphs = tuple(patch_shape), entry[2]
    if shape not in graphs:
        graphs[shape] = _build(owner, name, fn, shape)
    return fn if graphs[shape] is None else _Frozen(graphs[shape], fn, graphs, shape)


def _channels_last(module):
    """Put a convolutional ``module``'s 4-d weights in channels-last layout (NHWC), in place; returns the function
    that puts them back, or None (not a module, no 4-d weight, or already channels-last: left as it is). The
    outputs equal the default layout's up to float rounding (a different summation order), faster on a CPU."""
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

    Returns ``{"<name>_knn_top1": ..., "<name>_knn_balanced": ...}`` in percent; for a multi-label set
    (:func:`~uclser_lib.metrics.knn_multilabel`) ``{"<name>_knn_map": ..., "<name>_knn_dprime": ...}``.

    ``model``: encoder + head (pre-training) or any callable (B, 1, 101, 96) -> (B, D), e.g. ``encoder.embed``.
    """
    device = pick_device(device)
    out = {}
    for name, fs in sets.items():
        emb, clip_index = embed_eval_patches(model, fs.clips, mean, std, device)
        emb = torch.nn.functional.normalize(emb, dim=1)  # cosine similarity, also for a bare encoder's embeddings
        labels = fs.clips.labels.to(emb.device)[clip_index]
        fewest_outside = len(emb) - int(torch.bincount(clip_index).max())  # small sets cap k
        if labels.ndim == 2:  # multi-hot: the neighbours' shares of each class, scored by mAP and d'
            res = knn_multilabel(emb, labels, clip_index, k=min(k, fewest_outside))
            out[f"{name}_knn_map"] = round(float(res["map"]), 4)
            out[f"{name}_knn_dprime"] = round(float(res["dprime"]), 4)
            continue
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
    stored = getattr(packed, "content_sha256", None)  # a feature store (uclser_lib.store.StoredClips)
    if stored is not None:
        digest.update(f"frames|store sha256 {stored}|".encode())
    else:
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
