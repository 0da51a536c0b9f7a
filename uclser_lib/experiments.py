"""The course's experiments: does pre-training help? Pre-trained vs random init, over seeds.

:func:`compare_inits` runs linear evaluation (frozen encoder, noisy-label task split) and end-to-end
fine-tuning on both downstream tasks (noisy labels; few clean labels) from the pre-trained encoder and
from a random initialisation of the same architecture, for several seeds, and summarises the test
balanced accuracy at the best validation epoch as mean and spread. :func:`label_efficiency` does the
same for a growing fraction of the clean labels, and :func:`label_noise` for noisy labels relabelled at
several wrong-label rates (course dataset only: it needs the true classes); both by fine-tuning or by
linear evaluation (``stage="linear"``: the frozen encoder embeds each set once, then only a linear layer
trains).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from .data import FeatureSet
from .downstream import FinetuneConfig, LinearEvalConfig, finetune, linear_eval, subsample_per_class, task_splits
from .models import Encoder, build_encoder
from .results import summarise

__all__ = ["STAGES", "compare_inits", "label_efficiency", "label_noise"]

#: The stages of :func:`compare_inits`: (stage, task of :data:`~uclser_lib.downstream.TASKS`).
STAGES = (("linear", "noisy"), ("finetune", "noisy"), ("finetune", "clean"))


def _run(
    stage: str, encoder: Encoder, mean, std, sets, seed: int, linear_cfg, finetune_cfg, device, progress, cache=None
) -> dict:
    """``stage`` from a copy of ``encoder``; ``cache``: linear evaluation's embedding cache for this encoder."""
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
    return {
        "test_balanced": res.test["balanced"],
        "test_top1": res.test["top1"],
        "val_balanced": res.val["balanced"],
        "best_epoch": res.best_epoch,
    }


def compare_inits(
    encoder: Encoder,
    mean: float,
    std: float,
    splits: dict[str, FeatureSet],
    seeds=(0,),
    stages=STAGES,
    linear_cfg: LinearEvalConfig | None = None,
    finetune_cfg: FinetuneConfig | None = None,
    device=None,
    progress=False,
) -> dict:
    """Pre-trained ``encoder`` vs the same architecture at random init, for each stage and seed.

    ``mean`` / ``std``: the pre-training normalisation (used for both inits). Returns ``{"rows": [...],
    "summary": [...]}``: one row per (init, stage, task, seed) with test/val balanced accuracy (%) and the
    best epoch; the summary gives mean and std over seeds.
    """
    arch = _arch_name(encoder)
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        inits = {
            "pretrained": encoder,
            "random": build_encoder(_arch_name(encoder), n_classes=encoder.classifier().out_features),
        }
        for init, enc in inits.items():
            for stage, task in stages:
                out = _run(
                    stage, enc, mean, std, task_splits(splits, task), seed, linear_cfg, finetune_cfg, device, progress
                )
                rows.append(dict(arch=arch, init=init, stage=stage, task=task, seed=seed, **out))
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
    """``stage`` ("finetune" or "linear") on a fraction of the clean labels, pre-trained vs random init.

    Each fraction keeps at least one clip per class (:func:`~uclser_lib.downstream.subsample_per_class`).
    """
    train, val, test = task_splits(splits, "clean")
    rows, caches = [], {"pretrained": {}}  # linear evaluation embeds each set once per encoder
    for seed in seeds:
        torch.manual_seed(seed)
        inits = {"pretrained": encoder, "random": build_encoder(_arch_name(encoder), n_classes=len(train.classes))}
        caches["random"] = {}
        for fraction in fractions:
            subset = subsample_per_class(train, fraction, seed)
            for init, enc in inits.items():
                out = _run(
                    stage,
                    enc,
                    mean,
                    std,
                    (subset, val, test),
                    seed,
                    linear_cfg,
                    finetune_cfg,
                    device,
                    progress,
                    caches[init],
                )
                rows.append(
                    dict(
                        arch=_arch_name(encoder),
                        init=init,
                        stage=stage,
                        task="clean",
                        fraction=fraction,
                        seed=seed,
                        n_train=len(subset),
                        **out,
                    )
                )
    return {"rows": rows, "summary": summarise(rows)}


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
    """``stage`` ("finetune" or "linear") on the noisy subset relabelled at several wrong-label rates.

    Pre-trained vs random init, as :func:`label_efficiency`.

    ``truth``: :func:`~uclser_lib.coursedata.read_truth` of the course dataset. The audio stays as it is (its
    "incomplete" clips keep their second event; out-of-vocabulary clips are left out); only the labels change: the
    true class, then
    :func:`~uclser_lib.coursedata.relabel` at each rate. Selection on the clean subset, test on test.
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
    rows, caches = (
        [],
        {"pretrained": {}},
    )  # linear evaluation embeds each set once per encoder (relabelling keeps the clips)
    for seed in seeds:
        torch.manual_seed(seed)
        inits = {"pretrained": encoder, "random": build_encoder(_arch_name(encoder), n_classes=len(train.classes))}
        caches["random"] = {}
        for rate in wrong_rates:
            noisy = train.with_labels([train.classes.index(c) for c in relabel(true, rate, seed)])
            for init, enc in inits.items():
                out = _run(
                    stage,
                    enc,
                    mean,
                    std,
                    (noisy, val, test),
                    seed,
                    linear_cfg,
                    finetune_cfg,
                    device,
                    progress,
                    caches[init],
                )
                rows.append(
                    dict(
                        arch=_arch_name(encoder),
                        init=init,
                        stage=stage,
                        task="noisy",
                        wrong_rate=rate,
                        seed=seed,
                        **out,
                    )
                )
    return {"rows": rows, "summary": summarise(rows)}


def _arch_name(encoder: Encoder) -> str:
    names = {"ResNet18": "resnet18", "VGGLike": "vgglike", "CRNN": "crnn"}
    return names[type(encoder).__name__]
