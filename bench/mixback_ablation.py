"""Does mix-back change what the encoder learns? Notebook 02's shortcut, measured downstream (issue #23 part 2).

Notebook 02 measures a shortcut (two views of a clip share its noise floor) and that mix-back weakens it; notebook 03
runs its live pre-training once without mix-back (one seed). This pre-trains notebook 03's live run (``LIVE_ARCH``
ResNet-18, the first ``--clips`` pre-training clips of the course dataset, ``--epochs`` epochs at batch 32, the lr
drops at 65 % and 85 % of the epochs, the paper's views otherwise) in two arms that differ only in mix-back:

- ``mix_back``: ``AugmentConfig.paper()`` (mix-back with alpha 0.05, then crop, compander, noise);
- ``none``: the same with ``mix="none"``;
- ``random_bn``: no pre-training, the baseline: the same seed's initial weights (as ``pretrain`` draws them) with
  their BatchNorm statistics re-estimated on the pre-training clips (``baselines.recalibrate_batchnorm``, notebook
  04's fair random-features baseline).

A seed sets both arms' initial weights, clip order and view draws alike (same ``PretrainConfig.seed``), so the
arms are paired per seed. Each encoder's embedding is then scored on clips it never pre-trained on: the kNN
monitor (K = 10, the course's K, every evaluation patch) on the validation and the test clips, and a linear probe on
the clean-label task (``LinearEvalConfig`` defaults, 100 epochs, the test set scored at the best validation epoch,
notebook 04's protocol). The paired differences per seed (mix_back - none, and each against random_bn) get their
Student-t intervals (``results.gain_interval``). Nothing is chosen: both pre-trained arms use the paper's alpha.

    OMP_NUM_THREADS=1 .venv/bin/python bench/mixback_ablation.py --seeds 271828 0 1

writes ``bench/results-mixback-ablation.json`` atomically after every run; (arm, seed) pairs already there with the
same setup are kept, and a killed pre-training resumes from its checkpoint (``runs/bench-mixback-*``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from uclser_lib import data, datasets
from uclser_lib.augment import AugmentConfig
from uclser_lib.baselines import recalibrate_batchnorm
from uclser_lib.downstream import LinearEvalConfig, linear_eval, lr_milestones, task_splits
from uclser_lib.embed import knn_evaluate
from uclser_lib.results import gain_interval
from uclser_lib.runtime import PAPER_SEED, checkout_root, describe_machine, work_root, write_atomic
from uclser_lib.train import PRETRAIN_DROPS, PretrainConfig, initial_encoder, pretrain

OUT = checkout_root() / "bench" / "results-mixback-ablation.json"
ARMS = ("mix_back", "none", "random_bn")
K = 10  # notebook 03's K on the course dataset
SCORES = ("val_knn", "test_knn", "probe_val", "probe_test")
PAIRS = (("mix_back", "none"), ("mix_back", "random_bn"), ("none", "random_bn"))  # paired per seed: a - b


def augment_of(arm: str) -> AugmentConfig:
    paper = AugmentConfig.paper()
    return paper if arm == "mix_back" else dataclasses.replace(paper, mix="none")


def summarise(runs: list[dict]) -> dict:
    out = {"arms": {}, "paired": {}}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        out["arms"][arm] = {
            s: {"mean": float(np.mean([r[s] for r in mine])), "std": float(np.std([r[s] for r in mine], ddof=1))}
            if len(mine) > 1
            else {"mean": float(mine[0][s]), "std": None}
            for s in SCORES
            if mine
        }
        out["arms"][arm]["seeds"] = sorted(r["seed"] for r in mine)
    by = {(r["arm"], r["seed"]): r for r in runs}
    for a, b in PAIRS:
        both = sorted({x for arm, x in by if arm == a} & {x for arm, x in by if arm == b})
        if both:
            out["paired"][f"{a} - {b}"] = {
                s: gain_interval([by[a, x][s] for x in both], [by[b, x][s] for x in both]) for s in SCORES
            } | {"seeds": both}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[PAPER_SEED])
    ap.add_argument("--clips", type=int, default=512, help="notebook 03's LIVE_CLIPS")
    ap.add_argument("--epochs", type=int, default=6, help="notebook 03's LIVE_EPOCHS")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    device = torch.device("cpu")
    course = datasets.prepare()
    splits = course.splits()
    train_set = splits["pretrain"].subset(np.arange(min(args.clips, len(splits["pretrain"]))))
    mean, std = data.feature_stats(train_set.clips)
    probe_train, probe_val, probe_test = task_splits(splits, "clean")
    milestones = lr_milestones(args.epochs, PRETRAIN_DROPS)
    setup = {
        "dataset": course.name,
        "arch": "resnet18",
        "clips": len(train_set),
        "epochs": args.epochs,
        "batch_size": 32,
        "milestones": milestones,
        "knn_k": K,
        "n_val": len(splits["val"]),
        "n_test": len(splits["test"]),
        "probe": "clean task, LinearEvalConfig defaults",
    }
    old = json.loads(args.out.read_text()) if args.out.is_file() else None
    runs = old["runs"] if old and old.get("setup") == setup else []

    def report():
        return {
            "what": "mix-back on vs off in notebook 03's live pre-training, scored downstream "
            "(bench/mixback_ablation.py)",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": describe_machine(device) | {"threads": torch.get_num_threads()},
            "setup": setup,
            "summary": summarise(runs) if runs else {},
            "runs": runs,
        }

    def config(arm: str, seed: int) -> PretrainConfig:  # random_bn: only its arch and seed matter
        return PretrainConfig(
            arch="resnet18",
            epochs=args.epochs,
            batch_size=32,
            milestones=milestones,
            knn_every=0,
            seed=seed,
            augment=augment_of(arm),
        )

    def pretrained_encoder(arm: str, seed: int, t0: float):
        cfg = config(arm, seed)
        run_dir = work_root() / "runs" / f"bench-mixback-{course.name}-{arm}-{seed}-{len(train_set)}"
        model, history = pretrain(cfg, train_set, None, run_dir, resume=True, device=device, progress=False)
        return model.encoder.eval(), history, time.perf_counter() - t0

    for seed in args.seeds:
        for arm in ARMS:
            if any((r["arm"], r["seed"]) == (arm, seed) for r in runs):
                print(f"{arm} seed {seed}: already in {args.out.name}, kept", flush=True)
                continue
            t0 = time.perf_counter()
            if arm == "random_bn":  # the initial weights pretrain draws with this seed, no training
                start = initial_encoder(config(arm, seed), len(train_set.classes))
                encoder = recalibrate_batchnorm(start, train_set.clips, mean, std, seed=seed, device=device)
                history, seconds = [], 0.0
            else:
                encoder, history, seconds = pretrained_encoder(arm, seed, t0)
            knn = knn_evaluate(encoder.embed, {"val": splits["val"], "test": splits["test"]}, mean, std, K, device)
            probe = linear_eval(
                encoder,
                mean,
                std,
                probe_train,
                probe_val,
                probe_test,
                LinearEvalConfig(seed=seed),
                device=device,
                progress=False,
            )
            run = {
                "arm": arm,
                "seed": seed,
                "loss": [h["loss"] for h in history],
                "val_knn": knn["val_knn_balanced"],
                "test_knn": knn["test_knn_balanced"],
                "probe_val": probe.val["balanced"],
                "probe_test": probe.test["balanced"],
                "pretrain_seconds": round(seconds, 1),
            }
            runs = [r for r in runs if (r["arm"], r["seed"]) != (arm, seed)] + [run]
            write_atomic(args.out, json.dumps(report(), indent=1) + "\n")
            print(
                f"{arm:9s} seed {seed}: loss {run['loss'][-1] if history else float('nan'):.3f}; kNN val "
                f"{run['val_knn']:.1f}, test {run['test_knn']:.1f}; probe val {run['probe_val']:.1f}, test "
                f"{run['probe_test']:.1f} (balanced %); pre-training {seconds:.0f} s",
                flush=True,
            )
    result = report()
    for pair, paired in result["summary"].get("paired", {}).items():
        for s in SCORES:
            g = paired[s]
            ci = "" if g["low"] is None else f" [95 % CI {g['low']:+.1f}, {g['high']:+.1f}]"
            print(f"{s:10s} {pair}: {g['mean']:+.1f} points over seeds {paired['seeds']}{ci}")
    return result


if __name__ == "__main__":
    main()
