"""The command-line subcommands for real audio (``docs/real-audio.md``), added to ``python -m uclser_lib``:

- ``download fsdnoisy18k|esc50|released-encoders [--url-base URL] [--root DIR] [--keep-archives]``
- ``crossval --dataset esc50|PATH --encoder ENCODER [--stages linear finetune] [--inits pretrained random]
  [--folds 1 2 ...] [--seeds 0] [--epochs N] [--out FILE]``: evaluation over folds, mean over folds.
"""

from __future__ import annotations

import sys

__all__ = ["add_real_commands", "run_real_command"]


def add_real_commands(sub) -> None:
    dl = sub.add_parser(
        "download", help="download, verify and unpack fsdnoisy18k, esc50 or the authors' released encoders (resumable)"
    )
    dl.add_argument("what", choices=["fsdnoisy18k", "esc50", "released-encoders"])
    dl.add_argument(
        "--url-base", default=None, help="a mirror holding the same file names (or set UCLSER_MIRROR)", metavar="URL"
    )
    dl.add_argument("--root", default=None, help="data root (default: UCLSER_DATA or <repo>/data)")
    dl.add_argument("--keep-archives", action="store_true", help="keep the archives after a good unpack")
    cv = sub.add_parser(
        "crossval",
        help="linear evaluation / fine-tuning over folds on a real dataset (ESC-50's 5 folds; a folder's split)",
    )
    cv.add_argument("--dataset", required=True, help="esc50, fsdnoisy18k or a folder path")
    cv.add_argument(
        "--encoder",
        required=True,
        help="a pretrained/ name, a checkpoint.pt, released:vgglike, released:crnn or random:<arch>",
    )
    cv.add_argument("--stages", nargs="+", default=["linear"], choices=["linear", "finetune"])
    cv.add_argument("--inits", nargs="+", default=["pretrained", "random"], choices=["pretrained", "random"])
    cv.add_argument("--folds", type=int, nargs="+", default=None, help="default: every fold (ESC-50: 1-5)")
    cv.add_argument("--seeds", type=int, nargs="+", default=[0])
    cv.add_argument("--epochs", type=int, default=200, help="epochs of every stage (lr drops at 40%% and 80%%)")
    cv.add_argument("--out", default=None, help="results JSON (default: runs/crossval-<dataset>.json)")
    cv.add_argument("--device", default=None)


def run_real_command(args, argv: list[str]) -> int:
    from .download import DownloadError
    from .folders import FolderError

    try:
        if args.command == "download":
            return _download(args)
        return _crossval(args, argv)
    except (DownloadError, FolderError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _download(args) -> int:
    from .download import cache_dir, download_dataset, download_released

    if args.what == "released-encoders":
        paths = download_released(url_base=args.url_base)
        print(f"released encoders in {cache_dir()} (sha256 verified): " + ", ".join(p.name for p in paths.values()))
        print("use them as --encoder released:vgglike or released:crnn")
        return 0
    dest = download_dataset(args.what, root=args.root, url_base=args.url_base, keep_archives=args.keep_archives)
    print(f"{args.what} is in {dest}; next: python -m uclser_lib extract --dataset {args.what}")
    return 0


def _crossval(args, argv: list[str]) -> int:
    import json
    import re
    import time
    from pathlib import Path

    from .datasets import prepare
    from .downstream import FinetuneConfig, LinearEvalConfig
    from .folders import RealDataset, cross_validate
    from .runtime import describe_machine, pick_device, write_atomic

    ds = prepare(dataset=args.dataset, device=args.device)
    if not isinstance(ds, RealDataset):  # FSDnoisy18k's layout has one official test split: evaluate / linear-eval
        print(
            f"error: crossval is for ESC-50 and your own folders; {ds.name} has its own test split: use linear-eval or "
            "finetune with --data.dataset",
            file=sys.stderr,
        )
        return 2
    milestones = [int(args.epochs * 0.4), int(args.epochs * 0.8)]
    kw = dict(epochs=args.epochs, milestones=milestones, test_every_epoch=False)
    results = cross_validate(
        args.encoder,
        ds,
        stages=args.stages,
        inits=args.inits,
        seeds=args.seeds,
        folds=args.folds,
        linear_cfg=LinearEvalConfig(**kw),
        finetune_cfg=FinetuneConfig(**kw),
        device=args.device,
        progress=True,
    )
    results.update(
        encoder=args.encoder,
        dataset=ds.name,
        epochs=args.epochs,
        folds=args.folds or ds.fold_ids(),
        runs=[
            dict(
                command=" ".join(["python -m uclser_lib", *argv]),
                date=time.strftime("%Y-%m-%d"),
                machine=describe_machine(pick_device(args.device)),
            )
        ],
    )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", ds.name)
    out = Path(args.out or f"runs/crossval-{slug}.json")
    write_atomic(out, json.dumps(results, indent=1))
    for row in results["summary"]:
        print(
            f"{row['arch']:9s} {row['init']:10s} {row['stage']:8s} balanced {row['mean']:.1f} +- {row['std']:.1f}, "
            f"top-1 {row['mean_top1']:.1f} +- {row['std_top1']:.1f} (mean over {row['n']} fold x seed runs)"
        )
    print(f"results in {out}")
    return 0
