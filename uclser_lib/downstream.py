"""Linear evaluation and end-to-end fine-tuning on the downstream tasks (docs/method.md §2 and §9, 10).

Both stages train with cross-entropy on one patch per clip per epoch (no augmentation), SGD with a
multistep schedule, score val and test every epoch at clip level (mean softmax over a clip's evaluation
patches) and keep the epoch with the best validation balanced accuracy; the test metrics reported are
those of that epoch.

- :func:`linear_eval`: the encoder is frozen IN EVAL MODE (the released code left BatchNorm in train
  mode, docs/released-code.md) and only a linear layer is trained. Since nothing changes the embeddings, every
  evaluation patch (starts 0, 50, 100, ...) of every clip is embedded once; each epoch then draws one of
  a clip's cached patches, so the encoder runs once per set and the epochs train only the linear layer.
  (The training patch start is thus drawn on the 50-frame evaluation grid rather than uniformly,
  docs/method.md §4.)
- :func:`finetune`: a copy of the encoder with a fresh classifier is trained end to end on one random
  patch per clip per epoch (docs/method.md §4's start law); bf16 autocast and channels_last on CUDA. With
  ``probe_epochs`` > 0 (the default) the fresh classifier is first fitted on the frozen encoder (a linear
  evaluation of ``probe_epochs`` epochs), then the whole network is fine-tuned from it ("LP-FT"), so that a
  classifier on a small embedding does not start the few steps of a small task from random weights.
  ``probe_epochs=0`` starts from the fresh classifier, as docs/method.md §9. The measured effect of the probe
  on the course's tasks: docs/results.md and bench/RESULTS.md.

Tasks (docs/method.md §2): :func:`task_splits` picks (train, val, test) among :func:`~uclser_lib.data.paper_splits`.

Multi-label sets (FSD50K's protocol, :attr:`~uclser_lib.data.FeatureSet.multilabel`: (N, C) multi-hot labels) train
with binary cross-entropy on the logits instead; a clip's scores are the mean of its patches' logits, then a sigmoid
(:func:`~uclser_lib.metrics.multilabel_clip_scores`); the metrics are macro mAP, d' and lwlrap
(:func:`~uclser_lib.metrics.multilabel_metrics`) and the epoch of best validation mAP is kept
(:func:`selection_metric`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import EVAL_HOP, FeatureSet, stratified_draw
from .embed import cached_eval_patches, embed_eval_patches
from .metrics import clip_metrics, clip_predictions, multilabel_clip_scores, multilabel_metrics
from .models import Encoder
from .runtime import PAPER_SEED, pick_device
from .sampling import randint_below
from .train import TrainingDiverged
from .views import check_lengths, epoch_batches, eval_patches, gather_patches, random_patches

__all__ = [
    "TASKS",
    "DownstreamResult",
    "FinetuneConfig",
    "LinearEvalConfig",
    "LinearProbe",
    "SupervisedConfig",
    "class_weights",
    "finetune",
    "linear_eval",
    "lr_milestones",
    "selection_metric",
    "run_seeds",
    "score_model",
    "subsample_per_class",
    "task_splits",
]

#: The downstream tasks: split names of :func:`~uclser_lib.data.paper_splits` as (train, val, test).
TASKS = {"noisy": ("pretrain", "val", "test"), "clean": ("clean_train", "clean_val", "test")}

#: Where the downstream learning rate drops (x ``gamma``), as fractions of the epochs (docs/method.md §9).
LR_DROPS = (0.4, 0.8)


def selection_metric(multilabel: bool) -> str:
    """The validation metric that selects the epoch (and :mod:`~uclser_lib.experiments`' settings): ``"map"``
    (macro mAP, in [0, 1]) for a multi-label set, ``"balanced"`` (balanced accuracy, %) for a single-label one."""
    return "map" if multilabel else "balanced"


#: The metrics a history row keeps per scored split: single-label, multi-label.
_HISTORY_METRICS = {False: ("top1", "balanced"), True: ("map", "dprime", "lwlrap")}


def lr_milestones(epochs: int, fractions: tuple[float, ...] = LR_DROPS) -> list[int]:
    """The 1-based epochs after which the learning rate drops: ``int(epochs * f)`` for each fraction, at least 1
    (a run of 1 or 2 epochs still drops once), e.g. ``lr_milestones(100) == [40, 80]``, ``lr_milestones(2) == [1, 1]``.
    """
    if epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, got {epochs!r}")
    return [max(1, int(epochs * f)) for f in fractions]


# ---------------------------------------------------------------------------------------------
# Configurations and result


@dataclass
class SupervisedConfig:
    """Settings shared by linear evaluation and fine-tuning (docs/method.md §9). Epochs and milestones count from 1."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [80, 160])
    gamma: float = 0.1
    seed: int = PAPER_SEED
    #: False: score the test set once, after training, with the weights of the best validation epoch, instead
    #: of every epoch. The reported test score is the same; ``history`` then has ``test_*`` at that epoch only.
    test_every_epoch: bool = True
    #: None: plain cross-entropy (the paper's). "balanced": each training clip of class c weighs n / (C n_c) in
    #: the loss (n clips, C classes present, n_c clips of class c; scikit-learn's ``class_weight="balanced"``), so every
    #: class counts as much as balanced accuracy counts it (:func:`class_weights`).
    class_weight: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not (self.lr > 0 and self.gamma > 0 and self.momentum >= 0 and self.weight_decay >= 0):
            raise ValueError(
                f"expected lr > 0, gamma > 0, momentum >= 0, weight_decay >= 0; got lr={self.lr}, gamma={self.gamma}, "
                f"momentum={self.momentum}, weight_decay={self.weight_decay}"
            )
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        self.milestones = [int(m) for m in self.milestones]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LinearEvalConfig(SupervisedConfig):
    """Linear evaluation: SGD (momentum 0.9, wd 1e-4), lr 0.1, 200 epochs, lr x0.1 at 80 and 160, batch 128."""

    lr: float = 0.1


@dataclass
class FinetuneConfig(SupervisedConfig):
    """Fine-tuning: as linear evaluation but lr 0.01; bf16 autocast and channels_last apply on CUDA only.

    ``probe_epochs``: before fine-tuning, the fresh classifier is trained for that many epochs on the frozen
    encoder by :func:`linear_eval` (linear evaluation's lr 0.1, lr x0.1 at 40 % and 80 % of them, the epoch
    of best validation accuracy kept); 0 starts fine-tuning from the fresh classifier (docs/method.md §9, the
    released recipe).

    ``bn``: what BatchNorm does during the fine-tuning epochs. ``"train"`` (the default, the released recipe):
    train mode, so each batch is normalised with its own statistics and the running statistics are updated.
    ``"frozen"``: every BatchNorm layer stays in eval mode while the rest trains: batches are normalised with
    the stored running statistics, which are not updated (``running_mean``, ``running_var`` and
    ``num_batches_tracked`` end as they started); the BatchNorm affine weight and bias still train. Scoring is
    in eval mode either way. ``ValueError`` for any other value.
    """

    lr: float = 0.01
    probe_epochs: int = 100
    bf16: bool = True
    channels_last: bool = True
    bn: str = "train"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.probe_epochs < 0:
            raise ValueError(
                f"probe_epochs must be >= 0 (0: no linear probe before fine-tuning), got {self.probe_epochs}"
            )
        if self.bn not in ("train", "frozen"):
            raise ValueError(f"bn: expected 'train' or 'frozen', got {self.bn!r}")


@dataclass
class DownstreamResult:
    """What :func:`linear_eval` and :func:`finetune` return.

    ``model`` maps patches (B, 1, 101, 96) to logits (B, C) with the weights of ``best_epoch`` (1-based), in
    eval mode: a :class:`LinearProbe` for linear evaluation, the fine-tuned encoder for fine-tuning.
    ``val`` / ``test``: :func:`~uclser_lib.metrics.clip_metrics` at that epoch (``top1``, ``balanced``,
    ``top3`` in %, ``per_class``, ``confusion``); for a multi-label set
    :func:`~uclser_lib.metrics.multilabel_metrics` (``map``, ``dprime``, ``lwlrap``, ``per_class_ap``,
    ``per_class_dprime``). ``history``: one dict per epoch (``epoch``, ``loss`` (mean cross-entropy, or binary
    cross-entropy per class, over the epoch's clips), ``lr``, ``val_top1``, ``val_balanced``, ``test_top1``,
    ``test_balanced`` (multi-label: ``val_map``, ``val_dprime``, ``val_lwlrap`` and the same for test),
    ``seconds``).
    """

    model: Encoder
    history: list[dict]
    best_epoch: int
    val: dict
    test: dict
    classes: list[str]
    config: dict

    @property
    def head(self) -> nn.Linear:
        """The trained final linear layer."""
        return self.model.classifier()


class LinearProbe(Encoder):
    """A frozen encoder with a linear layer on its embedding: (B, 1, 101, 96) -> logits (B, C).

    Frozen means eval mode: ``train()`` leaves the encoder in eval mode. ``ValueError`` when ``head`` does
    not take the encoder's ``embedding_dim`` inputs.
    """

    def __init__(self, encoder: Encoder, head: nn.Linear):
        super().__init__()
        if head.in_features != encoder.embedding_dim:
            raise ValueError(
                f"the linear head takes {head.in_features}-d inputs but the encoder ({type(encoder).__name__}) "
                f"gives {encoder.embedding_dim}-d embeddings"
            )
        self.encoder = encoder.eval()
        self.head = head
        self.embedding_dim = encoder.embedding_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(x)

    def classifier(self) -> nn.Linear:
        return self.head

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.encoder.eval()
        return self


# ---------------------------------------------------------------------------------------------
# Splits, label subsets, seeds


def task_splits(splits: dict[str, FeatureSet], task: str) -> tuple[FeatureSet, FeatureSet, FeatureSet]:
    """(train, val, test) of a downstream task from :func:`~uclser_lib.data.paper_splits`' dict.

    ``"noisy"``: train on the noisy subset with its noisy labels (``pretrain``), select on the clean subset
    (``val``), test on ``test``. ``"clean"``: train on ``clean_train``, select on ``clean_val``, test on ``test``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown downstream task {task!r}; expected one of {sorted(TASKS)}")
    missing = [name for name in TASKS[task] if name not in splits]
    if missing:
        raise ValueError(f"task {task!r} needs split(s) {missing}, absent from the given splits {sorted(splits)}")
    return tuple(splits[name] for name in TASKS[task])


def subsample_per_class(fs: FeatureSet, fraction: float, seed: int = PAPER_SEED) -> FeatureSet:
    """Keep ``fraction`` (in (0, 1], e.g. 0.05 for 5 %) of each class's clips, at least one per present class.

    Per class, ``max(1, round(fraction * n_c))`` clips: the first ones of a permutation seeded by ``seed``,
    so with one seed the smaller subsets are nested in the larger ones. Clips keep their original order.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1] (e.g. 0.05 for 5 % of the labels), got {fraction}")

    return fs.subset(stratified_draw(fs.labels, np.arange(len(fs)), fraction, np.random.default_rng(seed), min_class=1))


def run_seeds(fn, seeds) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one seed) of ``fn(seed)`` (a number) over ``seeds``.

    E.g. ``run_seeds(lambda s: linear_eval(..., cfg=LinearEvalConfig(seed=s)).test["balanced"], [1, 2, 3])``.
    """
    values = np.array([float(fn(s)) for s in seeds])
    if len(values) == 0:
        raise ValueError("run_seeds needs at least one seed")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"run_seeds: fn returned a non-finite value: {values.tolist()}")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------------------------
# Checks and shared pieces


def _check_sets(train: FeatureSet, val: FeatureSet, test: FeatureSet) -> int:
    """The number of classes; ``ValueError`` for an empty split, differing class lists, labels out of range,
    a mix of single- and multi-label sets, or a class without a training or a validation clip (multi-label: a class
    with no positive training clip, or no validation clip with any label)."""
    classes = list(train.classes)
    n = len(classes)
    sets = {"train": train, "val": val, "test": test}
    kinds = {name: fs.multilabel for name, fs in sets.items()}
    if len(set(kinds.values())) > 1:
        raise ValueError(f"the splits mix single- and multi-label sets (multi-label: {kinds}); give one kind")
    if train.multilabel:
        return _check_multilabel(sets, classes)
    for name, fs in sets.items():
        _check_split(name, fs, classes)
        bad = np.flatnonzero((fs.labels < 0) | (fs.labels >= n))
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"the {name} split: clip {fs.fnames[i]!r} has label {int(fs.labels[i])}, "
                f"expected 0..{n - 1} ({len(bad)} such clips)"
            )
    for name in ("train", "val"):
        missing = sorted(set(range(n)) - set(sets[name].labels.tolist()))
        if missing:
            raise ValueError(
                f"class(es) {[classes[c] for c in missing]} have no {name} clip: every class needs training "
                "and validation clips (model selection uses the balanced accuracy over all classes)"
            )
    return n


def _check_split(name: str, fs: FeatureSet, classes: list[str]) -> None:
    """``ValueError`` for an empty split or one whose class list is not ``classes`` (train's)."""
    if len(fs) == 0:
        raise ValueError(f"the {name} split is empty (no clip left after filtering)")
    if list(fs.classes) != classes:
        raise ValueError(
            f"the {name} split has classes {fs.classes} but train has {classes}: the splits must share one class list"
        )


def _check_multilabel(sets: dict[str, FeatureSet], classes: list[str]) -> int:
    """:func:`_check_sets` for multi-label sets: (N, C) 0/1 labels, one class list, every class with a training
    positive, and a validation set in which some class has a positive (mAP over the classes that have one)."""
    for name, fs in sets.items():
        _check_split(name, fs, classes)
        y = fs.labels
        if y.shape != (len(fs), len(classes)) or not np.isin(y, (0, 1)).all():
            raise ValueError(
                f"the {name} split: multi-hot labels must be ({len(fs)}, {len(classes)}) of 0 and 1, "
                f"got shape {y.shape}"
            )
    missing = np.flatnonzero(sets["train"].labels.sum(0) == 0)
    if len(missing):
        raise ValueError(
            f"class(es) {[classes[c] for c in missing[:5]]} ({len(missing)} in all) have no positive training clip: "
            "every class needs one"
        )
    if sets["val"].labels.sum() == 0:
        raise ValueError("the val split has no labelled clip: model selection needs validation mAP")
    return len(classes)


def _check_stats(mean: float, std: float) -> None:
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"normalisation mean / std must be finite with std > 0, got {mean} / {std}")


def _fresh_linear(in_dim: int, out_dim: int, generator: torch.Generator) -> nn.Linear:
    """nn.Linear(in_dim, out_dim) with PyTorch's default law, drawn from ``generator``.

    Weight and bias ~ U(-1/sqrt(in_dim), 1/sqrt(in_dim)).
    """
    layer = nn.utils.skip_init(nn.Linear, in_dim, out_dim)
    bound = 1.0 / math.sqrt(in_dim)
    with torch.no_grad():
        nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def _score(logits: torch.Tensor, clip_index: torch.Tensor, labels) -> dict:
    """Clip metrics from patch logits (P, C): softmax per patch, mean per clip (docs/method.md §10); with (N, C)
    multi-hot ``labels``, FSD50K's: mean logit per clip, then a sigmoid, scored by mAP, d' and lwlrap.

    ``TrainingDiverged`` when a logit is NaN or infinite (weights or BatchNorm statistics that diverged)."""
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise TrainingDiverged(
            f"the model's logits are not finite on {bad} of {len(logits)} patches (diverged weights)"
        )
    labels = torch.as_tensor(labels)
    if labels.ndim == 2:
        clips, scores = multilabel_clip_scores(logits.float(), clip_index)
        return multilabel_metrics(labels[clips.cpu()].numpy(), scores.cpu().numpy())
    clips, probs, _ = clip_predictions(torch.softmax(logits.float(), dim=1), clip_index)
    return clip_metrics(probs, labels[clips.cpu()])


def score_model(model: nn.Module, fs: FeatureSet, mean: float, std: float, device=None) -> dict:
    """Clip-level metrics of ``model`` (patches (B, 1, 101, 96) -> logits) on ``fs``, run in eval mode.

    ``device`` defaults to the model's. Returns :func:`~uclser_lib.metrics.clip_metrics`' dict;
    ``TrainingDiverged`` where the model's logits are NaN or infinite.
    """
    _check_stats(mean, std)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    logits, clip_index = embed_eval_patches(model, fs.clips, mean, std, device)
    if logits.shape[1] != len(fs.classes):
        raise ValueError(f"the model gives {logits.shape[1]} logits but the set has {len(fs.classes)} classes")
    return _score(logits, clip_index, fs.labels)


def class_weights(labels, n_classes: int) -> torch.Tensor:
    """Cross-entropy weights (n_classes,) float32 of ``class_weight="balanced"``: n / (C n_c) for a class with n_c of
    the n ``labels`` (C = ``n_classes``), 0 for a class absent from them; the clips' weights then sum to n."""
    labels = torch.as_tensor(labels).long().cpu()
    if labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise ValueError(f"class_weights: expected labels in [0, {n_classes}), got {labels.numel()} labels")
    counts = torch.bincount(labels, minlength=n_classes).float()
    present = int((counts > 0).sum())
    return torch.where(counts > 0, labels.numel() / (present * counts.clamp_min(1)), torch.zeros(()))


def _fit(
    module: nn.Module,
    batch_input,
    labels: torch.Tensor,
    score,
    cfg: SupervisedConfig,
    generator,
    device,
    autocast,
    progress: bool,
    desc: str,
):
    """Train every parameter of ``module`` with cross-entropy (binary cross-entropy on each class's logit for (N, C)
    multi-hot ``labels``); select the epoch of the best validation :func:`selection_metric`.

    ``batch_input(idx, generator)`` gives the module's input for the clips ``idx``; ``score(split)`` gives the
    clip metrics of the module in its current state on "val" or "test" (test: every epoch, or with
    ``cfg.test_every_epoch`` False once, at the end, with the best epoch's weights). On return ``module`` holds
    the weights of the best epoch, in eval mode. Returns (best_epoch, val, test, history).
    """
    optimizer = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)
    history, best, best_state, weight = [], None, None, None
    multilabel = labels.ndim == 2
    key, shown_metrics = selection_metric(multilabel), _HISTORY_METRICS[multilabel]
    if multilabel and cfg.class_weight is not None:
        raise ValueError(f"class_weight {cfg.class_weight!r} is for single-label sets; use None with multi-hot labels")
    bar = tqdm(range(cfg.epochs), desc=desc, disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        module.train()
        total = torch.zeros((), device=device)
        for idx in epoch_batches(len(labels), cfg.batch_size, generator, device=device):
            x = batch_input(idx, generator)
            with autocast:
                logits = module(x)
            if cfg.class_weight == "balanced" and weight is None:  # the classes: the logits' width
                weight = class_weights(labels, logits.shape[1]).to(logits.device)
            if multilabel:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels[idx])
            else:
                loss = F.cross_entropy(logits.float(), labels[idx], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        scheduler.step()
        epoch_loss = float(total) / len(labels)
        if not math.isfinite(epoch_loss):
            raise TrainingDiverged(f"{desc}, epoch {epoch + 1}: the loss is {epoch_loss}; stopped (lower the lr?)")
        module.eval()
        try:
            val = score("val")
        except TrainingDiverged as e:  # a finite training loss, but eval mode (stored BatchNorm statistics) is not
            raise TrainingDiverged(f"{desc}, epoch {epoch + 1}, validation: {e}; stopped (lower the lr?)") from None
        improved = best is None or val[key] > best[1][key]
        test = score("test") if cfg.test_every_epoch else None
        history.append(
            {
                "epoch": epoch + 1,
                "loss": epoch_loss,
                "lr": lr,
                **{f"val_{m}": val[m] for m in shown_metrics},
                **({f"test_{m}": test[m] for m in shown_metrics} if test else {}),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        if improved:
            best = (epoch + 1, val, test)
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        shown = {"test": f"{best[2][key]:.3g}"} if best[2] else {}
        bar.set_postfix(loss=f"{epoch_loss:.3f}", val=f"{val[key]:.3g}", **shown, best=best[0])
    module.load_state_dict(best_state)
    module.eval()
    if best[2] is None:  # test_every_epoch False: the test set is scored once, with the best epoch's weights
        best = (best[0], best[1], score("test"))
        history[best[0] - 1] |= {f"test_{m}": best[2][m] for m in shown_metrics}
    return (*best, history)


# ---------------------------------------------------------------------------------------------
# The two stages


def linear_eval(
    encoder: Encoder,
    mean: float,
    std: float,
    train: FeatureSet,
    val: FeatureSet,
    test: FeatureSet,
    cfg: LinearEvalConfig | None = None,
    device=None,
    progress: bool = True,
    cached: bool = True,
    embedding_cache: dict | None = None,
    disk_cache: bool = True,
) -> DownstreamResult:
    """Linear evaluation of a frozen ``encoder``: train ``Linear(embedding_dim, n_classes)`` with cross-entropy.

    ``mean`` / ``std``: the normalisation the encoder was trained with (the pre-training set's
    :func:`~uclser_lib.data.feature_stats`). The encoder is put in eval mode and moved to ``device``; its
    weights and BatchNorm statistics are not changed. Each epoch draws, per clip, one of its evaluation
    patches (starts 0, 50, 100, ...). ``cached=True`` embeds all of them once up front; ``cached=False`` runs
    the encoder on the drawn patches every epoch (the slow reference path: same draws, same result up to
    float rounding). ``embedding_cache``: a dict shared by calls with the same frozen encoder (same weights,
    ``mean`` and ``std``): sets whose clips were embedded before (the same tensors, e.g. relabelled by
    ``FeatureSet.with_labels``) are not embedded again. ``disk_cache``: also keep and reuse the embeddings on disk
    (:func:`~uclser_lib.embed.cached_eval_patches`, keyed by the encoder's weights and the features: the encoder is
    frozen, so the stored arrays are exactly those it would give again; ``False`` always runs the encoder).
    Returns a :class:`DownstreamResult` whose ``model`` is a :class:`LinearProbe`.
    """
    cfg = cfg or LinearEvalConfig()
    device = pick_device(device)
    n_classes = _check_sets(train, val, test)
    _check_stats(mean, std)
    encoder = encoder.eval().to(device)
    dim = encoder.embedding_dim

    def embed(fs: FeatureSet, name: str):
        key = (id(fs.clips.data), id(fs.clips.offsets), str(device))  # the entry keeps both alive: ids stay unique
        if embedding_cache is not None and key in embedding_cache:
            return embedding_cache[key][1:]
        emb, clip_index = cached_eval_patches(
            encoder, fs.clips, mean, std, device, progress=progress, desc=f"embedding {name}", cache=disk_cache
        )
        if emb.shape[1] != dim:
            raise ValueError(f"encoder.embed gives {emb.shape[1]}-d embeddings but encoder.embedding_dim is {dim}")
        if embedding_cache is not None:
            embedding_cache[key] = ((fs.clips.data, fs.clips.offsets), emb, clip_index)
        return emb, clip_index

    scored = {"val": (val, *embed(val, "val")), "test": (test, *embed(test, "test"))}
    if cached:
        train_emb, train_index = embed(train, "train")
    else:
        train_index = eval_patches(train.clips)[1].to(device)
    counts = torch.bincount(train_index, minlength=len(train))
    first = torch.cumsum(counts, 0) - counts  # index of each training clip's first patch
    if cached:

        def batch_input(idx, gen):
            return train_emb[first[idx] + randint_below(counts[idx], gen)]

    else:
        packed = train.clips.to(device)

        @torch.no_grad()
        def batch_input(idx, gen):
            patches = gather_patches(packed, idx, randint_below(counts[idx], gen) * EVAL_HOP)
            return encoder.embed(((patches - mean) / std)[:, None]).float()

    @torch.no_grad()
    def score(split):
        fs, emb, clip_index = scored[split]
        return _score(head(emb), clip_index, fs.labels)

    generator = torch.Generator().manual_seed(cfg.seed)
    head = _fresh_linear(dim, n_classes, generator).to(device)
    labels = train.clips.labels.to(device)
    best_epoch, val_m, test_m, history = _fit(
        head, batch_input, labels, score, cfg, generator, device, contextlib.nullcontext(), progress, "linear eval"
    )
    return DownstreamResult(
        LinearProbe(encoder, head), history, best_epoch, val_m, test_m, list(train.classes), cfg.to_dict()
    )


def finetune(
    encoder: Encoder,
    mean: float,
    std: float,
    train: FeatureSet,
    val: FeatureSet,
    test: FeatureSet,
    cfg: FinetuneConfig | None = None,
    device=None,
    progress: bool = True,
) -> DownstreamResult:
    """Fine-tune a copy of ``encoder`` end to end with a fresh ``Linear(embedding_dim, n_classes)`` classifier.

    With ``cfg.probe_epochs`` > 0 the classifier is first fitted on the frozen encoder (:func:`linear_eval`),
    then everything is trained from there. The caller's encoder is not modified. One random patch per clip
    per epoch (docs/method.md §4), normalised with ``mean`` / ``std``, no augmentation. For the supervised
    baseline pass a fresh :func:`~uclser_lib.models.build_encoder`. ``cfg.bn`` ``"frozen"`` keeps every BatchNorm
    layer in eval mode while training (stored statistics used, not updated; affine weights trained). Returns a
    :class:`DownstreamResult` whose ``model`` is the fine-tuned encoder at the best validation epoch (``history``:
    the fine-tuning epochs).
    """
    cfg = cfg or FinetuneConfig()
    device = pick_device(device)
    n_classes = _check_sets(train, val, test)
    _check_stats(mean, std)
    old = encoder.classifier()
    if old.in_features != encoder.embedding_dim:
        raise ValueError(
            f"{type(encoder).__name__}'s classifier takes {old.in_features}-d inputs "
            f"but its embedding_dim is {encoder.embedding_dim}"
        )
    names = [name for name, child in encoder.named_children() if child is old]
    if not names:
        raise ValueError(f"{type(encoder).__name__}.classifier() is not a direct child module; cannot replace it")
    generator = torch.Generator().manual_seed(cfg.seed)
    model = copy.deepcopy(encoder)
    head = _fresh_linear(encoder.embedding_dim, n_classes, generator)
    if cfg.probe_epochs:
        e = cfg.probe_epochs
        probe_cfg = LinearEvalConfig(
            epochs=e,
            batch_size=cfg.batch_size,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            milestones=lr_milestones(e),
            gamma=cfg.gamma,
            seed=cfg.seed,
            test_every_epoch=False,
        )
        head = linear_eval(model, mean, std, train, val, test, probe_cfg, device=device, progress=progress).head
    setattr(model, names[0], head)
    model.requires_grad_(True).to(device)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    packed = train.clips.to(device)
    check_lengths(packed.lengths)

    def batch_input(idx, gen):
        x = ((random_patches(packed, idx, gen, check=False) - mean) / std)[:, None]
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def score(split):
        with autocast:
            return score_model(model, {"val": val, "test": test}[split], mean, std, device)

    trained = model
    if cfg.bn == "frozen":

        class FrozenBatchNorm(nn.Module):
            """``model`` whose ``train()`` puts its BatchNorm layers back in eval mode (the training loop calls it
            every epoch); same parameters, in the same order."""

            def __init__(self, net: nn.Module):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x)

            def train(self, mode: bool = True):
                super().train(mode)
                for m in self.net.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
                return self

        trained = FrozenBatchNorm(model)
    best_epoch, val_m, test_m, history = _fit(
        trained, batch_input, packed.labels, score, cfg, generator, device, autocast, progress, "fine-tune"
    )
    return DownstreamResult(model, history, best_epoch, val_m, test_m, list(train.classes), cfg.to_dict())
