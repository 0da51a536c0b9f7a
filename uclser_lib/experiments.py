"""The course's experiments: does pre-training help? Pre-trained vs random init and the baselines, over seeds.

:func:`compare` runs one :class:`Protocol` (a recipe for a whole results table, every choice made on validation):
linear evaluation (frozen encoder, noisy-label task split) and end-to-end fine-tuning on both downstream tasks
(noisy labels; few clean labels) from the pre-trained encoder, from a random initialisation of the same
architecture and from the baselines of :data:`STAGE_INITS`, for several seeds, and reports the test balanced
accuracy at the best validation epoch with the gains over each baseline. :func:`cross_validate` evaluates an
encoder over the folds of a real dataset (ESC-50's official 5-fold cross-validation; a folder's one seeded split).
:func:`label_efficiency` trains on a growing fraction of the clean labels, and :func:`label_noise` on noisy labels
relabelled at several wrong-label rates (course dataset only: it needs the true classes); both by fine-tuning or
by linear evaluation (``stage="linear"``: the frozen encoder embeds each set once, then only a linear layer
trains).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from .baselines import BandStats, recalibrate_batchnorm
from .data import FeatureSet
from .downstream import (
    FinetuneConfig,
    LinearEvalConfig,
    finetune,
    linear_eval,
    lr_milestones,
    selection_metric,
    subsample_per_class,
    task_splits,
)
from .models import ARCHITECTURES, Encoder, arch_of, build_encoder
from .results import BASELINES, gains, summarise

if TYPE_CHECKING:
    from .folders import RealDataset

__all__ = [
    "CURVE_INITS",
    "STAGES",
    "STAGE_INITS",
    "Protocol",
    "compare",
    "cross_validate",
    "label_efficiency",
    "label_noise",
]

#: The stages of :func:`compare`: (stage, task of :data:`~uclser_lib.downstream.TASKS`).
STAGES = (("linear", "noisy"), ("finetune", "noisy"), ("finetune", "clean"))


def _run(
    stage: str, encoder: Encoder, mean, std, sets, seed: int, linear_cfg, finetune_cfg, device, progress, cache=None
) -> dict:
    """``stage`` from a copy of ``encoder``; ``cache``: linear evaluation's embedding cache for this encoder.

    The configs' own seed is replaced by ``seed``."""
    if stage not in ("linear", "finetune"):
        raise ValueError(f"stage must be 'linear' or 'finetune', got {stage!r}")
    encoder = copy.deepcopy(encoder)
    if stage == "linear":
        linear_cfg = linear_cfg or LinearEvalConfig()
        res = linear_eval(
            encoder,
            mean,
            std,
            *sets,
            cfg=replace(linear_cfg, seed=seed),
            device=device,
            progress=progress,
            embedding_cache=cache,
        )
    else:
        finetune_cfg = finetune_cfg or FinetuneConfig()
        res = finetune(
            encoder, mean, std, *sets, cfg=replace(finetune_cfg, seed=seed), device=device, progress=progress
        )
    if sets[0].multilabel:  # FSD50K's metrics: mAP in [0, 1], d'
        return {
            "test_map": res.test["map"],
            "test_dprime": res.test["dprime"],
            "test_lwlrap": res.test["lwlrap"],
            "val_map": res.val["map"],
            "best_epoch": res.best_epoch,
        }
    return {
        "test_balanced": res.test["balanced"],
        "test_top1": res.test["top1"],
        "val_balanced": res.val["balanced"],
        "best_epoch": res.best_epoch,
    }


@dataclass(frozen=True)
class Protocol:
    """One recipe for a whole results table; every choice in it is made on validation, never on test.

    For each init and (stage, task), every setting of the grid (learning rate; for fine-tuning also with and
    without a linear probe first, ``probe_epochs``) is trained for every seed, with the same budget for every
    init (``epochs``, ``batch_size``, lr drops at 40 % and 80 % of the epochs). The setting with the best mean
    validation balanced accuracy over the seeds is selected, and only its test scores are reported (multi-label
    sets: the best mean validation mAP; the rows then hold ``test_map``, ``test_dprime`` and ``test_lwlrap``).
    """

    epochs: int = 100
    batch_size: int = 128
    linear_lrs: tuple[float, ...] = (0.03, 0.1, 0.3)
    finetune_lrs: tuple[float, ...] = (0.003, 0.01, 0.03)
    probe_epochs: tuple[int, ...] = (0, 100)
    seeds: tuple[int, ...] = (0, 1, 2)
    bn_batches: int = 8  # training batches that re-estimate the BatchNorm statistics of the "random_bn" init

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.bn_batches < 1 or not self.seeds:
            raise ValueError(f"{self}: expected epochs >= 1, batch_size >= 2, bn_batches >= 1 and some seeds")
        for name in ("linear_lrs", "finetune_lrs"):
            if not getattr(self, name) or not all(math.isfinite(v) and v > 0 for v in getattr(self, name)):
                raise ValueError(f"Protocol.{name} must be finite learning rates > 0, got {getattr(self, name)}")
        if not self.probe_epochs or any(p < 0 for p in self.probe_epochs):
            raise ValueError(f"Protocol.probe_epochs must be epochs >= 0, got {self.probe_epochs}")

    def settings(self, stage: str) -> list[dict]:
        """The grid of ``stage``: ``[{"lr": ...}]`` (linear) or ``[{"lr": ..., "probe_epochs": ...}]``."""
        if stage == "linear":
            return [{"lr": lr} for lr in self.linear_lrs]
        return [{"lr": lr, "probe_epochs": p} for lr in self.finetune_lrs for p in self.probe_epochs]

    def config(self, stage: str, setting: dict, seed: int):
        """The LinearEvalConfig or FinetuneConfig of one run."""
        kw = dict(
            epochs=self.epochs,
            batch_size=self.batch_size,
            milestones=lr_milestones(self.epochs),
            seed=seed,
            test_every_epoch=False,
            **setting,
        )
        return LinearEvalConfig(**kw) if stage == "linear" else FinetuneConfig(**kw)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


#: The inits compared at each stage: linear evaluation has every baseline, fine-tuning trains from scratch
#: (``random``: BatchNorm runs in train mode while fine-tuning, so re-estimated statistics make no difference
#: there, and handcrafted features have nothing to fine-tune).
STAGE_INITS = {"linear": ("pretrained", "random", "random_bn", "handcrafted"), "finetune": ("pretrained", "random")}


def _init_encoder(init: str, encoder: Encoder, mean, std, splits, seed: int, protocol: Protocol, device):
    n_classes = encoder.classifier().out_features
    if init == "pretrained":
        return encoder
    if init == "handcrafted":
        return BandStats(n_classes=n_classes)
    torch.manual_seed(seed)
    fresh = build_encoder(_arch_name(encoder), n_classes=n_classes)
    if init == "random_bn":
        recalibrate_batchnorm(fresh, splits["pretrain"].clips, mean, std, protocol.bn_batches, seed=seed, device=device)
    return fresh.eval()


def compare(
    encoder: Encoder,
    mean: float,
    std: float,
    splits: dict[str, FeatureSet],
    protocol: Protocol | None = None,
    stages=STAGES,
    extra: dict | None = None,
    device=None,
    progress=False,
    inits=None,
) -> dict:
    """The pre-trained ``encoder`` against every baseline of :data:`STAGE_INITS`, by ``protocol``.

    ``inits``: run only these inits (e.g. ``["pretrained"]`` after re-training the encoder: the baselines do not
    depend on it, and :func:`~uclser_lib.results.merge_results` puts the new rows beside the earlier ones).

    ``extra``: more encoders to compare at the linear stage, ``{name: (encoder, mean, std)}`` (e.g. the
    authors' published one, ``"released"``), each with its own normalisation. Returns ``rows`` (one per init,
    stage, task and seed, with the selected ``setting``), ``selection`` (each init's grid with its mean
    validation score per setting, and the selected one), ``summary``, ``gains`` (pre-trained vs each baseline:
    paired over seeds, with a 95 % interval) and ``recipe`` (the protocol).
    """
    protocol = protocol or Protocol()
    extra = extra or {}
    rows, selection = [], []
    arch = _arch_name(encoder)
    val_key = "val_" + selection_metric(splits["pretrain"].multilabel)
    for stage, task in stages:
        sets = task_splits(splits, task)
        names = list(STAGE_INITS[stage]) + (list(extra) if stage == "linear" else [])
        for init in [n for n in names if inits is None or n in inits]:
            caches: dict[int, dict] = {}  # linear evaluation: embeddings of one frozen encoder, reused across the grid
            grid = []
            for setting in protocol.settings(stage):
                runs = []
                for seed in protocol.seeds:
                    if init in extra:
                        enc, m, s = extra[init]
                    else:
                        enc, m, s = _init_encoder(init, encoder, mean, std, splits, seed, protocol, device), mean, std
                    key = 0 if init in ("pretrained", "handcrafted", *extra) else seed
                    cfg = protocol.config(stage, setting, seed)
                    out = _run(
                        stage, enc, m, s, sets, seed, cfg, cfg, device, progress, cache=caches.setdefault(key, {})
                    )
                    runs.append(dict(arch=arch, init=init, stage=stage, task=task, seed=seed, setting=setting, **out))
                grid.append((float(np.mean([r[val_key] for r in runs])), setting, runs))
            best = max(grid, key=lambda g: g[0])  # ties: the first setting of the grid
            selection.append(
                dict(
                    arch=arch,
                    init=init,
                    stage=stage,
                    task=task,
                    selected=best[1],
                    val_by_setting=[{"setting": g[1], val_key: g[0]} for g in grid],
                )
            )
            rows += best[2]
    baselines = [b for b in BASELINES if any(r["init"] == b for r in rows)]
    out = {
        "rows": rows,
        "selection": selection,
        "summary": summarise(rows),
        "gains": [g for b in baselines for g in gains(rows, b)],
        "recipe": protocol.to_dict(),
    }
    if splits["pretrain"].multilabel:  # d' beside mAP, each with its own paired intervals
        out["summary_dprime"] = summarise(rows, metric="test_dprime")
        out["gains_dprime"] = [g for b in baselines for g in gains(rows, b, metric="test_dprime")]
    return out


def cross_validate(
    spec: str,
    dataset: RealDataset,
    stages=("linear",),
    inits=("pretrained", "random"),
    seeds=(0,),
    folds=None,
    linear_cfg: LinearEvalConfig | None = None,
    finetune_cfg: FinetuneConfig | None = None,
    device=None,
    progress: bool = False,
) -> dict:
    """Linear evaluation and/or fine-tuning of encoder ``spec`` on each fold, test scores averaged over folds.

    ``dataset``: a :class:`~uclser_lib.folders.RealDataset`. ESC-50: its official 5-fold protocol: train on four
    folds (85 / 15 stratified train / validation, for model selection), test on the fifth, each fold in turn; the
    result is the mean over folds. A folder: its one seeded split (fold 0). ``folds``: these folds only (default
    :meth:`~uclser_lib.folders.RealDataset.fold_ids`; a fold the dataset lacks, or one listed twice, is a
    :class:`~uclser_lib.folders.FolderError` before any run). ``spec``: anything
    :func:`~uclser_lib.pretrained.load_encoder` accepts; ``"random"`` in ``inits`` adds the same architecture at
    random init. ``stages``: "linear" and/or "finetune", with ``linear_cfg`` / ``finetune_cfg`` (their seed replaced
    by each seed). Returns ``{"rows": [...], "summary": [...]}``: one row per (fold, seed, init, stage) with test
    and validation balanced accuracy (%), test top-1 and the best epoch; the summary gives mean and std of test
    balanced accuracy (``mean_top1`` / ``std_top1``: of top-1) over folds and seeds.
    """
    from .pretrained import load_encoder

    if folds is not None:
        from .folders import FolderError, check_folds

        try:
            check_folds(
                folds,
                dataset.fold_ids(),
                dataset.name,
                "ESC-50's folds" if dataset.folds is not None else "a folder's one seeded split",
            )
        except FolderError as err:
            raise FolderError(f"folds {list(folds)}: {err}") from None
    rows = []
    for fold in folds or dataset.fold_ids():
        for seed in seeds:
            s = dataset.splits(seed, test_fold=fold or None)
            encoder, mean, std = load_encoder(spec, s["pretrain"])
            arch = _arch_name(encoder)
            torch.manual_seed(seed)
            candidates = {"pretrained": encoder, "random": build_encoder(arch, n_classes=len(dataset.classes))}
            sets = (s["clean_train"], s["clean_val"], s["test"])
            for init in inits:
                for stage in stages:
                    out = _run(
                        stage, candidates[init], mean, std, sets, seed, linear_cfg, finetune_cfg, device, progress
                    )
                    rows.append(dict(arch=arch, init=init, stage=stage, task="clean", fold=fold, seed=seed, **out))
    summary = summarise(rows)  # mean and std of test balanced accuracy over folds (and seeds)
    top1 = summarise([dict(r, test_balanced=r["test_top1"]) for r in rows])
    for row, t in zip(summary, top1):
        row.update(mean_top1=t["mean"], std_top1=t["std"])
    return {"rows": rows, "summary": summary}


#: The inits a label curve compares: linear evaluation adds the fair random-features baseline (``random_bn``);
#: fine-tuning trains from scratch (BatchNorm runs in train mode there, as in :data:`STAGE_INITS`).
CURVE_INITS = {"linear": ("pretrained", "random", "random_bn"), "finetune": ("pretrained", "random")}


def _curve(encoder, mean, std, splits, seeds, stage, points, sets_at, task, linear_cfg, finetune_cfg, device, progress):
    """One row per (seed, point, init of :data:`CURVE_INITS`): ``sets_at(point, seed)`` gives ``((train, val, test),
    the row's own keys)``. Linear evaluation embeds each set once per encoder (the caches)."""
    if stage not in CURVE_INITS:
        raise ValueError(f"stage must be 'finetune' or 'linear', got {stage!r}")
    rows, caches = [], {}
    for seed in seeds:
        inits = {
            init: _init_encoder(init, encoder, mean, std, splits, seed, Protocol(), device)
            for init in CURVE_INITS[stage]
        }
        for point in points:
            sets, keys = sets_at(point, seed)
            for init, enc in inits.items():
                cache = caches.setdefault((init, None if init == "pretrained" else seed), {})
                out = _run(stage, enc, mean, std, sets, seed, linear_cfg, finetune_cfg, device, progress, cache)
                rows.append(dict(arch=_arch_name(encoder), init=init, stage=stage, task=task, seed=seed, **keys, **out))
    return {"rows": rows, "summary": summarise(rows)}


def label_efficiency(
    encoder: Encoder,
    mean: float,
    std: float,
    splits: dict[str, FeatureSet],
    fractions=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
    seeds=(0,),
    stage: str = "finetune",
    linear_cfg: LinearEvalConfig | None = None,
    finetune_cfg: FinetuneConfig | None = None,
    device=None,
    progress=False,
) -> dict:
    """``stage`` ("finetune" or "linear") on a fraction of the clean labels, pre-trained vs the inits of
    :data:`CURVE_INITS` (linear: also random init with re-estimated BatchNorm statistics).

    Each fraction keeps at least one clip per class (:func:`~uclser_lib.downstream.subsample_per_class`); each row
    records its ``fraction`` and ``n_train`` (clips).
    """
    train, val, test = task_splits(splits, "clean")

    def sets_at(fraction, seed):
        subset = subsample_per_class(train, fraction, seed)
        return (subset, val, test), {"fraction": fraction, "n_train": len(subset)}

    return _curve(
        encoder,
        mean,
        std,
        splits,
        seeds,
        stage,
        fractions,
        sets_at,
        "clean",
        linear_cfg,
        finetune_cfg,
        device,
        progress,
    )


def label_noise(
    encoder: Encoder,
    mean: float,
    std: float,
    splits: dict[str, FeatureSet],
    truth: dict[str, tuple[str, str]],
    wrong_rates=(0.0, 0.2, 0.4, 0.6),
    seeds=(0,),
    stage: str = "finetune",
    linear_cfg: LinearEvalConfig | None = None,
    finetune_cfg: FinetuneConfig | None = None,
    device=None,
    progress=False,
) -> dict:
    """``stage`` ("finetune" or "linear") on the noisy subset relabelled at several wrong-label rates, with the
    inits of :func:`label_efficiency`.

    ``truth``: :func:`~uclser_lib.coursedata.read_truth` of the course dataset. The audio stays as it is (its
    "incomplete" clips keep their second event; out-of-vocabulary clips are left out); only the labels change: the
    true class, then :func:`~uclser_lib.coursedata.relabel` at each rate. Selection on the clean subset, test on test.
    """
    from .coursedata import relabel

    train, val, test = task_splits(splits, "noisy")
    missing = [f for f in train.fnames if f not in truth]
    if missing:
        raise ValueError(
            f"label_noise needs the true class of every noisy clip; {len(missing)} missing, e.g. {missing[:3]}"
        )
    # clips whose sound is of no class (out of vocabulary) have no true label to corrupt: they are left out
    keep = [i for i, f in enumerate(train.fnames) if truth[f][0] in train.classes]
    if len(keep) < len(train.fnames):
        train = train.subset(keep)
    true = [truth[f][0] for f in train.fnames]

    def sets_at(rate, seed):  # relabelling keeps the clips: the embedding caches stay valid
        noisy = train.with_labels([train.classes.index(c) for c in relabel(true, rate, seed)])
        return (noisy, val, test), {"wrong_rate": rate}

    return _curve(
        encoder,
        mean,
        std,
        splits,
        seeds,
        stage,
        wrong_rates,
        sets_at,
        "noisy",
        linear_cfg,
        finetune_cfg,
        device,
        progress,
    )


def _arch_name(encoder: Encoder) -> str:
    """The :func:`~uclser_lib.models.build_encoder` name of ``encoder``'s architecture ("resnet18", ...)."""
    arch = arch_of(encoder)
    if arch is None:
        raise ValueError(
            f"{type(encoder).__name__}: not an encoder of uclser_lib.models; expected one of {ARCHITECTURES}"
        )
    return arch
