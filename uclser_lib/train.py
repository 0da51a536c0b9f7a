"""Contrastive pre-training (SimCLR with mix-back, docs/method.md §5-9): the loop, checkpoints and resume.

:func:`pretrain` trains an encoder + projection head with NT-Xent on views built on the device by
:class:`~uclser_lib.augment.ViewBuilder`; bf16 autocast and channels_last on CUDA, optional
``torch.compile``; SGD with a multistep schedule; a kNN monitor on val and test every ``knn_every``
epochs. Every epoch ends with an atomic checkpoint (model, optimiser, scheduler, config, metrics), and
``resume=True`` continues an interrupted run to the same result as an uninterrupted one: each epoch's
random draws come from a generator seeded by (seed, epoch), so they do not depend on where a run started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .augment import AugmentConfig
from .checkpoints import load_checkpoint, save_checkpoint, sidecar_of
from .data import FeatureSet, PackedClips, _locked, feature_stats
from .embed import knn_evaluate
from .losses import nt_xent
from .models import ARCHITECTURES, ContrastiveModel, Encoder, ProjectionHead, arch_of, build_encoder
from .runtime import PAPER_SEED, pick_device, seed_everything, write_atomic
from .views import GraphedViews, ViewBuilder

__all__ = [
    "PRETRAIN_DROPS",
    "PretrainConfig",
    "RunExistsError",
    "RunInUseError",
    "STORE_CHOICES",
    "TrainingDiverged",
    "check_run_dir",
    "distributed_context",
    "epoch_seeds",
    "initial_encoder",
    "pretrain",
    "run_lock",
    "write_metrics",
]

#: Pre-training's learning-rate drops (x 0.1 each) as fractions of its epochs: the paper's 325 and 425 of 500
#: (``downstream.lr_milestones(epochs, PRETRAIN_DROPS)`` for another length).
PRETRAIN_DROPS = (0.65, 0.85)


@dataclass
class PretrainConfig:
    """Pre-training settings; the defaults are the paper's ResNet-18 recipe (docs/method.md §9)."""

    arch: str = "resnet18"
    epochs: int = 500
    batch_size: int = 128
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [325, 425])
    gamma: float = 0.1
    temperature: float = 0.2
    proj_hidden: int = 512
    proj_dim: int = 512
    seed: int = PAPER_SEED
    knn_every: int = 10  # epochs between kNN evaluations (0: never)
    knn_k: int = 200
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    channels_last: bool = True
    compile: bool = False
    cuda_graph: bool = True  # capture the view builder in a CUDA graph (CUDA only)
    augment: AugmentConfig = field(default_factory=AugmentConfig.paper)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 2, "an integer >= 2 (NT-Xent needs negatives)"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0"),
            ("gamma", 0 < self.gamma <= 1, "a number in (0, 1]"),
            ("temperature", math.isfinite(self.temperature) and self.temperature > 0, "a finite number > 0"),
            ("milestones", all(m >= 1 for m in self.milestones), "a list of epochs >= 1"),
            ("knn_every", self.knn_every >= 0, "an integer >= 0"),
            ("knn_k", self.knn_k >= 1, "an integer >= 1"),
            ("arch", self.arch in ARCHITECTURES, f"one of {ARCHITECTURES}"),
        ]
        for key, ok, what in checks:
            if not ok:
                raise ValueError(f"{key}: expected {what}, got {getattr(self, key)!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["augment"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["augment"].items()}
        return d


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunExistsError(ValueError):
    """``run_dir`` already holds a run and neither ``resume`` nor ``overwrite`` was asked for."""


class RunInUseError(RuntimeError):
    """Another process is pre-training in ``run_dir`` (it holds the folder's lock); the message names its PID."""


#: The lock file of a run folder (see :func:`run_lock`).
RUN_LOCK = ".lock"
_held_runs: dict[Path, int] = {}  # run folders this process owns, and how many nested run_lock calls hold each


@contextlib.contextmanager
def run_lock(run_dir):
    """Own ``run_dir`` for the duration: one process at a time pre-trains in a run folder.

    The lock is :func:`uclser_lib.data._locked`'s (a POSIX ``lockf`` on ``run_dir/.lock``, released by the kernel when
    its holder dies, even by ``kill -9``; the holder's PID is written in the file). A second process is refused at
    once with :class:`RunInUseError` naming the holder's PID (:func:`check_run_dir` says so before any data is
    prepared); the same process may nest calls (a caller holding the folder around :func:`pretrain`). ``None``: no
    folder, nothing locked.
    """
    if run_dir is None:
        yield
        return
    key = Path(run_dir).expanduser().resolve()
    if key in _held_runs:
        _held_runs[key] += 1
        try:
            yield
        finally:
            _held_runs[key] -= 1
        return

    def busy(holder: str) -> RunInUseError:
        return RunInUseError(
            f"{run_dir}: in use by {holder} (another pre-training writes this run_dir); wait for it to end, or "
            "choose another run_dir"
        )

    with _locked(key / RUN_LOCK, f"the run folder {run_dir}", busy=busy):
        _held_runs[key] = 1
        try:
            yield
        finally:
            del _held_runs[key]


def _owns_run_dir(fn):
    """:func:`pretrain` holds :func:`run_lock` on its ``run_dir`` (on rank 0 of ``torchrun``: the writer) throughout."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        run_dir = signature.bind(*args, **kwargs).arguments.get("run_dir")
        with run_lock(run_dir if int(os.environ.get("RANK", "0")) == 0 else None):
            return fn(*args, **kwargs)

    return wrapper


#: The files of a run in ``run_dir``: a fresh run refuses to replace them unless asked to.
RUN_FILES = ("checkpoint.pt", "metrics.json", "metrics.csv")


def check_run_dir(run_dir, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse (:class:`RunExistsError`, one line) to start a fresh run in a ``run_dir`` that holds one.

    A run is never replaced silently: ``resume`` continues it, ``overwrite`` replaces it (its files are removed
    first), or a new ``run_dir`` is chosen. Cheap: the command line calls it before any data is prepared. A
    ``run_dir`` another process pre-trains in is refused too (:class:`RunInUseError`, naming its PID; resume or not).
    """
    if run_dir is None:
        return
    run_dir = Path(run_dir)
    if (run_dir / RUN_LOCK).exists():
        with run_lock(run_dir):  # taken and given back: :func:`pretrain` owns the folder while it runs
            pass
    if resume:
        return
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not present:
        return
    if overwrite:
        for name in [*RUN_FILES, sidecar_of(run_dir / "checkpoint.pt").name]:
            (run_dir / name).unlink(missing_ok=True)
        return
    epoch = ""
    try:
        epoch = f" at epoch {len(json.loads((run_dir / 'metrics.json').read_text()))}"
    except (OSError, ValueError):
        pass
    raise RunExistsError(
        f"{run_dir}: already holds a run{epoch} ({', '.join(present)}); "
        "pass --resume to continue it, --overwrite to replace it, or choose another run_dir"
    )


def write_metrics(history: list[dict], run_dir: Path) -> None:
    """``metrics.json`` and ``metrics.csv`` (one row per epoch) in ``run_dir``, both written atomically."""
    write_atomic(run_dir / "metrics.json", json.dumps(history, indent=1))
    keys = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(keys)] + [
        ",".join("" if row.get(k) is None else str(row.get(k)) for k in keys) for row in history
    ]
    write_atomic(run_dir / "metrics.csv", "\n".join(lines) + "\n")


def distributed_context() -> tuple[int, int]:
    """``(rank, world size)``; joins the process group when launched by ``torchrun`` with several processes.

    The backend is NCCL on CUDA and gloo on CPU. A single process gives ``(0, 1)``.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def initial_encoder(cfg: PretrainConfig, n_classes: int) -> Encoder:
    """The encoder :func:`pretrain` starts from with ``cfg``: ``cfg.arch`` with ``n_classes`` outputs, its weights
    drawn after seeding every generator with ``cfg.seed`` (and those generators left where pre-training goes on from).
    Untrained, it is the random-init baseline paired with that run."""
    seed_everything(cfg.seed)
    return build_encoder(cfg.arch, n_classes=n_classes)


def _copy_init(encoder: Encoder, init: Encoder) -> None:
    """Copy ``init``'s state (weights, BatchNorm statistics) into ``encoder`` of the same architecture, all but the
    class layer's (the classes may differ; ``encoder`` keeps its seeded draw there)."""
    layer = next(name for name, m in encoder.named_modules() if m is encoder.classifier())
    state = {k: v for k, v in init.state_dict().items() if not k.startswith(layer + ".")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(layer + ".") for k in missing):
        raise ValueError(
            f"init: its weights do not fit the encoder (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def epoch_seeds(seed: int, epoch: int, rank: int = 0) -> tuple[int, int]:
    """The seeds of epoch ``epoch``'s draws (counted from 0) in :func:`pretrain`: ``(order, views)``.

    ``order`` seeds the generator of the epoch's clip order (``torch.randperm``, the same on every rank); ``views``
    seeds the generator the view builder draws from on process ``rank``. They depend on (seed, epoch, rank) only, so a
    resumed run repeats an uninterrupted one's draws, and a step written out by hand can repeat them (notebook 03).
    """
    order = seed * 100_003 + epoch
    return order, order * 1_009 + rank + 1


#: Where :func:`pretrain` draws its batches from (its ``store`` argument).
STORE_CHOICES = ("auto", "memory", "disk")


def _training_clips(train, store: str, store_dir, run_dir, device, rank: int, world: int):
    """(clips on ``device``, mean, std, a line saying where batches come from) for :func:`pretrain`'s ``store``."""
    from .store import StoredSet, choose_store, open_store, store_stats, write_store

    is_stored = isinstance(train, StoredSet)
    where = ""
    if store == "auto":
        nbytes = train.clips.nbytes_float32 if is_stored else train.clips.data.numel() * 4
        ranks_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        store, why = choose_store(nbytes, device, ranks_per_node)
        if world > 1:  # every rank must take the same path: disk if any rank lacks the memory
            flag = torch.tensor(int(store == "disk"), device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            store = "disk" if int(flag) else "memory"
        where = f"training set in {store} ({why})"
    if store == "memory":
        clips = train.clips.load() if is_stored else train.clips
        mean, std = feature_stats(clips)
        return clips.to(device), mean, std, where
    if not is_stored:
        folder = store_dir if store_dir is not None else (run_dir / "train-store" if run_dir is not None else None)
        if folder is None and world > 1:
            raise ValueError(
                "store='disk' under torchrun with an in-memory training set: give run_dir or store_dir (a folder "
                "every rank sees) for the store rank 0 writes"
            )
        if folder is None:  # one process: a temporary store, its files deleted at once (the memory map keeps them)
            tmp = Path(tempfile.mkdtemp(prefix="uclser-store-"))
            try:
                train = open_store(write_store(train, tmp / "train-store"), verify="size")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            if rank == 0:
                write_store(train, folder, overwrite=True)
            if world > 1:
                torch.distributed.barrier()
            train = open_store(folder, verify="size")
        where = where or f"training set in disk (a store written at {folder or 'a temporary folder'})"
    clips = train.clips.to(device)
    mean, std = store_stats(clips)
    return clips, mean, std, where or f"training set in disk (the store {train.path})"


@_owns_run_dir
def pretrain(
    cfg: PretrainConfig,
    train: FeatureSet,
    monitor: dict[str, FeatureSet] | None = None,
    run_dir=None,
    resume: bool = False,
    device=None,
    progress: bool = True,
    overwrite: bool = False,
    on_step: Callable[[int, int, float], None] | None = None,
    init: Encoder | None = None,
    init_name: str | None = None,
    store: str = "auto",
    store_dir=None,
) -> tuple[ContrastiveModel, list[dict]]:
    """Pre-train an encoder on ``train`` (labels unused); return the model and the per-epoch metrics.

    ``monitor``: sets for the kNN monitor (e.g. ``{"val": ..., "test": ...}``). ``run_dir``: where the
    checkpoint (``checkpoint.pt``) and metrics go; with ``resume`` an existing checkpoint there is
    continued (its config must equal ``cfg``, but for more epochs). Without ``resume``, a ``run_dir`` that holds a
    run is refused (:class:`RunExistsError`) unless ``overwrite`` is given. One process at a time owns ``run_dir``
    (:func:`run_lock`): while another pre-trains there, :class:`RunInUseError` names its PID.

    Under ``torchrun`` (several processes) the model is wrapped in DistributedDataParallel: every rank
    draws the same clip order, takes its share of each global batch of ``cfg.batch_size`` clips, and
    NT-Xent compares its anchors with the views of all ranks (gathered with gradients). Rank 0 runs the
    kNN monitor and writes the checkpoint and metrics.

    ``on_step(epoch, step, loss)``, when given, is called after every optimiser step with the epoch and the step
    within it (both from 0) and that batch's loss as a float (this process's, under torchrun); it changes nothing
    that is computed (notebook 03 compares its written-out step with these losses).

    ``init``: further pre-training. An encoder of ``cfg.arch`` (``uclser_lib.pretrained.load_init_encoder``, what
    ``pretrain --init`` loads) whose weights and BatchNorm statistics the first step starts from, on any training
    set; its class layer is not copied (its classes need not be this set's; the layer plays no part in pre-training)
    and the projection head starts fresh, drawn as without ``init``. Features are normalised with ``train``'s
    statistics, as without it. Another architecture is a ValueError naming both, before any data is touched.
    ``init_name`` (e.g. the ``--init`` spec) is recorded in the checkpoint as ``init``; resuming a run with an
    ``init_name`` other than the recorded one is refused. Without ``init`` nothing changes.

    ``train`` is a :class:`~uclser_lib.data.FeatureSet` (in memory) or a :class:`~uclser_lib.store.StoredSet` (an
    opened feature store, :func:`~uclser_lib.store.open_store`: a set larger than memory). ``store`` says where the
    batches are drawn from: ``"memory"``, every frame as float32 on ``device`` (a StoredSet is loaded first);
    ``"disk"``, a feature store, each batch's patches and backgrounds read from its memory-mapped float16 frames
    (a FeatureSet is first written as a store to ``store_dir``, default ``run_dir/train-store``, or a temporary
    folder removed at once in a single process; under torchrun rank 0 writes it and the others wait, so the folder
    must be one every rank sees); ``"auto"`` (default), memory where the set fits
    (:func:`~uclser_lib.store.choose_store`: the processes of this machine's copies within the available memory,
    and on CUDA within the device's free memory; under torchrun the ranks agree, disk if any says so), else disk.
    From the store the normalisation statistics are computed in chunks of the store, and the views are those of
    the in-memory path on the same float16-rounded frames, for the same seed, up to float rounding.
    """
    if store not in STORE_CHOICES:
        raise ValueError(f"store: expected one of {STORE_CHOICES}, got {store!r}")
    device = pick_device(device)
    rank, world = distributed_context()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({world})")
    local = cfg.batch_size // world
    if init is not None and arch_of(init) != cfg.arch:
        init_arch = arch_of(init) or type(init).__name__
        raise ValueError(
            f"init{f' {init_name!r}' if init_name else ''}: a {init_arch} encoder, but the config's arch is "
            f"{cfg.arch!r}; set arch to {init_arch} or start from a {cfg.arch} encoder"
        )
    if len(train) < 3:
        raise ValueError(f"pre-training needs at least 3 clips (a foreground and two backgrounds), got {len(train)}")
    if cfg.batch_size > len(train):
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set ({len(train)} clips)")
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        if rank == 0:
            check_run_dir(run_dir, resume, overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
    packed, mean, std, where = _training_clips(train, store, store_dir, run_dir, device, rank, world)
    if progress and rank == 0 and where:
        tqdm.write(where)
    views = ViewBuilder(packed, cfg.augment, mean, std)

    encoder = initial_encoder(cfg, len(train.classes))
    if init is not None:
        _copy_init(encoder, init)
    encoder.classifier().requires_grad_(False)  # the class layer plays no part in pre-training
    model = ContrastiveModel(encoder, ProjectionHead(encoder.embedding_dim, cfg.proj_hidden, cfg.proj_dim)).to(device)
    use_cl = cfg.channels_last and device.type == "cuda"
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)
    history: list[dict] = []
    start_epoch = 0
    started_from = (init_name or f"a {cfg.arch} encoder given to pretrain") if init is not None else None
    ckpt_path = run_dir / "checkpoint.pt" if run_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        diff = sorted(k for k, v in cfg.to_dict().items() if k != "epochs" and ckpt["config"].get(k) != v)
        if diff:  # more epochs may be asked for: the run is extended
            raise ValueError(f"{ckpt_path}: was made with another config (differs in {diff}); use another run_dir")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        started_from = ckpt.get("init", started_from)
        if init is not None and init_name is not None and ckpt.get("init") != init_name:
            raise ValueError(
                f"{ckpt_path}: started from init {ckpt.get('init')!r}, not {init_name!r}; use another run_dir"
            )

    step_model = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    if cfg.compile:
        step_model = torch.compile(step_model)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    n_batches = len(train) // cfg.batch_size  # drop_last: NT-Xent batches of equal size
    gen = torch.Generator(device=device)
    if cfg.cuda_graph and device.type == "cuda" and isinstance(packed, PackedClips):  # a store reads on the host
        try:
            views = GraphedViews(views, local, gen)
        except Exception as err:
            warnings.warn(f"CUDA-graph capture of the view builder failed, building views eagerly: {err}", stacklevel=2)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        # each epoch's draws depend on (seed, epoch) only, so a resumed run repeats them;
        # the order is the same on every rank
        order_seed, views_seed = epoch_seeds(cfg.seed, epoch, rank)
        order = torch.Generator(device=device).manual_seed(order_seed)
        gen.manual_seed(views_seed)
        perm = torch.randperm(len(train), generator=order, device=device)[: n_batches * cfg.batch_size]
        total = torch.zeros((), device=device)
        t0 = time.perf_counter()
        batches = perm.view(n_batches, cfg.batch_size)[:, rank * local : (rank + 1) * local]
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress or rank > 0)
        for i, idx in enumerate(bar):
            v1, v2 = views(idx, gen)
            x = torch.cat([v1, v2])  # (2 * local, 1, 101, 96)
            if use_cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                z = step_model(x)
            loss = nt_xent(z[: len(idx)], z[len(idx) :], cfg.temperature, distributed=world > 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            if on_step is not None:
                on_step(epoch, i, float(loss.detach()))
            if progress and (i % 10 == 0 or i == n_batches - 1):
                bar.set_postfix(
                    loss=f"{float(loss.detach()):.3f}",
                    clips_s=f"{(i + 1) * cfg.batch_size / (time.perf_counter() - t0):.0f}",
                )
        scheduler.step()
        if world > 1:  # the mean of the ranks' losses is the global batch's loss
            torch.distributed.all_reduce(total)
            total /= world
        epoch_loss = float(total) / n_batches
        seconds = time.perf_counter() - t0
        if not math.isfinite(epoch_loss):
            raise TrainingDiverged(
                f"epoch {epoch + 1}: the loss is {epoch_loss}; stopped"
                + (f", the last good checkpoint ({ckpt_path}, epoch {epoch}) is kept" if ckpt_path and epoch else "")
            )
        row = {
            "epoch": epoch + 1,
            "loss": round(epoch_loss, 6),
            "lr": optimizer.param_groups[0]["lr"],
            "clips_per_s": round(n_batches * cfg.batch_size / seconds, 1),
            "seconds": round(seconds, 3),
        }
        if rank == 0 and monitor and cfg.knn_every and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs):
            row.update(knn_evaluate(model, monitor, mean, std, cfg.knn_k, device))
        history.append(row)
        if progress and rank == 0:
            tqdm.write(" ".join(f"{k}={v}" for k, v in row.items()))
        if run_dir is not None and rank == 0:
            state = {
                "epoch": epoch + 1,
                "config": cfg.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "mean": mean,
                "std": std,
                "classes": train.classes,
            }
            if started_from is not None:
                state["init"] = started_from
            save_checkpoint(state, ckpt_path)  # atomic, with its sha256 in checkpoint.pt.sha256
            write_metrics(history, run_dir)
        if world > 1:
            torch.distributed.barrier()
    model.eval()
    return model, history
