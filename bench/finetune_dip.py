"""Notebook 05's fine-tuning dip: BatchNorm statistics or the learning rate? (issue #23 part 2)

Runs notebook 05's live demo exactly (the course dataset's clean task, the shipped ``course-resnet18``, LP-FT with
``probe_epochs=100``, ``DEMO_EPOCHS`` 8 epochs, lr x 0.1 after epoch 6, batch 32, half of each test class by
``subsample_per_class(test, 0.5, SEED)``, the test set scored once at the best validation epoch) in four arms:

- ``baseline``: BatchNorm in train mode, lr 0.01 (the notebook's run);
- ``bn_frozen``: BatchNorm kept in eval mode (``FinetuneConfig(bn="frozen")``), lr 0.01;
- ``lr_0.001``: BatchNorm in train mode, lr 0.001;
- ``both``: BatchNorm frozen, lr 0.001.

The seed sets the training (the probe's initial classifier, the patch draws, the batches); the test subsample stays
the notebook's (seed 271828) for every seed, so every run is scored on the same clips. The dip of a run is the
probe's validation balanced accuracy minus the lowest validation balanced accuracy of fine-tuning epochs 1-3.

    OMP_NUM_THREADS=1 .venv/bin/python bench/finetune_dip.py --seeds 271828 0 1

writes ``bench/results-finetune-dip.json`` (atomically, after every run; runs of other seeds already there with the
same setup are kept, so seeds can be added by later calls) and prints the per-arm summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from uclser_lib import datasets, pretrained
from uclser_lib.downstream import (
    FinetuneConfig,
    LinearEvalConfig,
    finetune,
    linear_eval,
    lr_milestones,
    subsample_per_class,
    task_splits,
)
from uclser_lib.runtime import PAPER_SEED, seed_everything, write_atomic
from uclser_lib.train import TrainingDiverged

HERE = Path(__file__).resolve().parent
OUT = HERE / "results-finetune-dip.json"
#: arm name -> (FinetuneConfig.bn, lr)
ARMS = {
    "baseline": ("train", 0.01),
    "bn_frozen": ("frozen", 0.01),
    "lr_0.001": ("train", 0.001),
    "both": ("frozen", 0.001),
}
DIP_EPOCHS = 3  # the dip: probe val minus the lowest val of fine-tuning epochs 1..DIP_EPOCHS


def mean_std(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None, "n": len(v)}


def summarise(runs: list[dict]) -> list[dict]:
    out = []
    for arm, (bn, lr) in ARMS.items():
        every = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
        mine = [r for r in every if "diverged" not in r]
        if not every:
            continue
        if not mine:
            out.append({"arm": arm, "bn": bn, "lr": lr, "seeds": [], "diverged_seeds": [r["seed"] for r in every]})
            continue
        out.append(
            {
                "arm": arm,
                "bn": bn,
                "lr": lr,
                "seeds": [r["seed"] for r in mine],
                "diverged_seeds": [r["seed"] for r in every if "diverged" in r],
                "dip": mean_std([r["dip"] for r in mine]),
                "probe_val": mean_std([r["probe_val"] for r in mine]),
                "min_val_1_3": mean_std([r["min_val_1_3"] for r in mine]),
                "best_val": mean_std([r["best_val"] for r in mine]),
                "test": mean_std([r["test_balanced"] for r in mine]),
                "probe_test": mean_std([r["probe_test"] for r in mine]),
                "best_epochs": [r["best_epoch"] for r in mine],
            }
        )
    return out


def fmt(s: dict) -> str:
    return f"{s['mean']:.1f}" + (f" ± {s['std']:.1f}" if s["std"] is not None else "")


def markdown(result: dict) -> str:
    """The summary as a markdown table (bench/RESULTS.md)."""
    lines = [
        "| arm | BatchNorm | lr | seeds | probe val | lowest val, epochs 1-3 | dip (points) | best epochs "
        "| test at best epoch | probe's test |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for s in result["summary"]:
        div = f"; diverged: {s['diverged_seeds']}" if s["diverged_seeds"] else ""
        if not s["seeds"]:
            lines.append(f"| {s['arm']} | {s['bn']} | {s['lr']:g} | none{div} | | | | | | |")
            continue
        lines.append(
            f"| {s['arm']} | {s['bn']} | {s['lr']:g} | {s['seeds']}{div} | {fmt(s['probe_val'])} "
            f"| {fmt(s['min_val_1_3'])} | {fmt(s['dip'])} | {s['best_epochs']} | {fmt(s['test'])} "
            f"| {fmt(s['probe_test'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[PAPER_SEED], help="training seeds (default: the notebook's)"
    )
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--epochs", type=int, default=8, help="notebook 05's DEMO_EPOCHS")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--fresh", action="store_true", help="discard the runs already in --out")
    ap.add_argument("--redo", action="store_true", help="rerun (arm, seed) pairs already in --out")
    ap.add_argument("--markdown", action="store_true", help="only print --out's summary as a markdown table")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return {}

    device = torch.device("cpu")
    seed_everything(PAPER_SEED)
    course = datasets.prepare()
    splits = course.splits()
    encoder, info = pretrained.resolve_encoder(None, "course-resnet18", device=device)
    mean, std = info.mean, info.std
    demo_splits = dict(splits, test=subsample_per_class(splits["test"], 0.5, PAPER_SEED))
    train, val, test = task_splits(demo_splits, "clean")
    milestones = [max(1, int(args.epochs * 0.75))]
    setup = {
        "task": "clean",
        "dataset": course.name,
        "encoder": info.label,
        "encoder_sha256": info.sha256,
        "epochs": args.epochs,
        "milestones": milestones,
        "batch_size": 32,
        "probe_epochs": FinetuneConfig().probe_epochs,
        "test_fraction": 0.5,
        "test_subsample_seed": PAPER_SEED,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "dip_epochs": DIP_EPOCHS,
    }
    old = json.loads(args.out.read_text()) if args.out.is_file() and not args.fresh else None
    runs = old["runs"] if old and old.get("setup") == setup else []
    if old and old.get("setup") != setup:
        print(f"{args.out}: another setup; its runs are discarded")
    machine = {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform()}
    machine["torch"] = torch.__version__

    def report(runs):
        return {
            "what": "notebook 05's fine-tuning dip: BatchNorm frozen vs a lower lr (bench/finetune_dip.py)",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine,
            "setup": setup,
            "arms": {k: {"bn": b, "lr": v} for k, (b, v) in ARMS.items()},
            "summary": summarise(runs),
            "runs": runs,
        }

    for seed in args.seeds:
        probe_cfg = LinearEvalConfig(
            epochs=setup["probe_epochs"],
            batch_size=32,
            momentum=0.9,
            weight_decay=1e-4,
            milestones=lr_milestones(setup["probe_epochs"]),
            gamma=0.1,
            seed=seed,
            test_every_epoch=False,
        )  # the probe finetune fits first (same config, same seed): rebuilt here to read its scores
        probe = linear_eval(encoder, mean, std, train, val, test, probe_cfg, device=device, progress=False)
        for arm in args.arms:
            bn, lr = ARMS[arm]
            if not args.redo and any((x["arm"], x["seed"]) == (arm, seed) for x in runs):
                print(f"{arm} seed {seed}: already in {args.out.name}, kept", flush=True)
                continue
            cfg = FinetuneConfig(
                epochs=args.epochs,
                batch_size=32,
                milestones=milestones,
                seed=seed,
                test_every_epoch=False,
                lr=lr,
                bn=bn,
            )
            seed_everything(seed)
            t0 = time.perf_counter()
            try:
                r = finetune(encoder, mean, std, train, val, test, cfg=cfg, device=device, progress=False)
            except TrainingDiverged as e:  # a finding too: recorded, left out of the means, counted
                run = {"arm": arm, "bn": bn, "lr": lr, "seed": seed, "diverged": str(e)}
                run |= {"probe_val": probe.val["balanced"], "probe_test": probe.test["balanced"]}
                run["seconds"] = round(time.perf_counter() - t0, 1)
                print(f"{arm:9s} seed {seed}: DIVERGED ({e})", flush=True)
            else:
                vals = [h["val_balanced"] for h in r.history]
                run = {
                    "arm": arm,
                    "bn": bn,
                    "lr": lr,
                    "seed": seed,
                    "probe_val": probe.val["balanced"],
                    "probe_test": probe.test["balanced"],
                    "val_balanced": vals,
                    "loss": [h["loss"] for h in r.history],
                    "min_val_1_3": min(vals[:DIP_EPOCHS]),
                    "dip": probe.val["balanced"] - min(vals[:DIP_EPOCHS]),
                    "best_epoch": r.best_epoch,
                    "best_val": r.val["balanced"],
                    "test_balanced": r.test["balanced"],
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                print(
                    f"{arm:9s} seed {seed}: probe val {run['probe_val']:.1f} -> val "
                    + " ".join(f"{v:.0f}" for v in vals)
                    + f"; loss {' '.join(f'{x:.2f}' for x in run['loss'])}; dip {run['dip']:.1f}; best epoch "
                    f"{r.best_epoch}, test {run['test_balanced']:.1f} (probe {run['probe_test']:.1f}); "
                    f"{run['seconds']} s",
                    flush=True,
                )
            runs = [x for x in runs if (x["arm"], x["seed"]) != (arm, seed)] + [run]
            write_atomic(args.out, json.dumps(report(runs), indent=1) + "\n")
    result = report(runs)
    print(f"\n{args.out}")
    print("arm        bn      lr      seeds  probe val    min val ep 1-3  dip          test at best  probe test")
    for s in result["summary"]:
        if not s["seeds"]:
            print(f"{s['arm']:10s} {s['bn']:7s} {s['lr']:<7g} diverged in every seed ({s['diverged_seeds']})")
            continue
        print(
            f"{s['arm']:10s} {s['bn']:7s} {s['lr']:<7g} {s['dip']['n']:<6d} {fmt(s['probe_val']):12s} "
            f"{fmt(s['min_val_1_3']):15s} {fmt(s['dip']):12s} {fmt(s['test']):13s} {fmt(s['probe_test'])}"
            + (f"  (diverged: seeds {s['diverged_seeds']})" if s["diverged_seeds"] else "")
        )
    return result


if __name__ == "__main__":
    main()
