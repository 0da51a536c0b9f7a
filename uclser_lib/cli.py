"""Command line: ``python -m uclser_lib <command> [--config FILE] [--key value ...]``.

- ``extract [--preset tiny|course] [--fsd-root DIR] [--dataset NAME|PATH] [--skip-unreadable]``: make sure the
  dataset and its features exist, and that the splits the other commands make can be made (else exit 2; the
  features written stay); the last line says where the features are.
- ``pretrain --config pretrain.yaml [--epochs 100] [--augment.mix_alpha 0.1] [--resume] [--export NAME]
  [--init ENCODER]``: contrastive pre-training; a checkpoint every epoch in ``run_dir``; ``--resume`` continues it;
  ``--export NAME`` writes the encoder to ``pretrained/`` with its manifest entry; ``--init`` starts from an
  encoder's weights (further pre-training, :func:`uclser_lib.train.pretrain`'s ``init``).
- ``export --run-dir DIR --name NAME --dataset NAME``: the same export from a finished run's checkpoint.
- ``linear-eval --config linear_eval.yaml`` / ``finetune --config finetune.yaml [--encoder random:resnet18]
  [--task noisy|clean]``: one downstream run; metrics (test at the best validation epoch) to ``out`` as JSON.
- ``evaluate --encoder course-resnet18 [--seeds 0 1 2] [--epochs 200] [--out FILE]``: linear evaluation and
  fine-tuning on both downstream tasks, the pre-trained encoder vs random init (:mod:`uclser_lib.experiments`);
  ``[--stages ...] [--label-efficiency] [--label-noise RATE ...] [--curve-stage linear|finetune]`` choose the
  comparisons and add the label-efficiency and label-noise curves; ``--merge-into FILE`` puts a rerun's rows into
  an earlier results file.
- ``download fsdnoisy18k|fsd50k|esc50|released-encoders [--url-base URL] [--root DIR] [--keep-archives]``: resumable,
  checksum-verified downloads (``docs/real-audio.md``).
- ``crossval --dataset esc50|PATH --encoder ENCODER [--stages linear finetune] [--inits pretrained random]
  [--folds 1 2 ...] [--seeds 0] [--epochs N] [--out FILE]``: evaluation over folds, mean over folds.

Every results file a command writes (``linear-eval``, ``finetune``, ``evaluate``, ``crossval``) lists in ``runs``
how each of its parts was made: the command line, its argv, the machine, the date and the start and end times
(UTC), written atomically (:func:`uclser_lib.runtime.write_atomic`).

Configs are YAML (read with ``yaml.safe_load``, but ``1e-3`` is a number); a bare file name means a shipped config
in ``uclser_lib/configs/``. Every key can be overridden as ``--key value`` or ``--key=value`` (nested:
``--section.key value``); unknown keys, wrong types, non-finite numbers and values out of range are errors, found
before any data is prepared. Under ``torchrun`` with several processes, ``pretrain`` uses DistributedDataParallel.

Errors, of every command: one line ``error: <file, key or value>: <what was expected>`` on stderr and exit code 2
(130 when interrupted), written in one place (:func:`main`); ``--debug`` (anywhere on the line, or
``UCLSER_DEBUG=1``) re-raises instead, so the traceback shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .runtime import describe_machine, pick_device, write_atomic

__all__ = ["main", "write_results"]


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def write_results(out, results: dict, argv: list[str], device, started: float, merge=None, **extra) -> Path:
    """Write ``results`` to ``out`` as JSON (atomically), with the run record of this command in ``results["runs"]``.

    The record: ``command`` (the command line, ``python -m uclser_lib ...``), ``argv`` (its arguments, a list),
    ``date`` (``YYYY-MM-DD``, local), ``started``/``finished`` (UTC, ISO 8601: ``started`` is the ``time.time()``
    the command began at), ``machine`` (:func:`uclser_lib.runtime.describe_machine` of ``device``) and ``extra``.
    ``merge``: a function of the results with this record that returns what to write (``evaluate --merge-into``).
    Returns the path written.
    """
    record = dict(
        command=" ".join(["python -m uclser_lib", *argv]),
        argv=list(argv),
        date=time.strftime("%Y-%m-%d", time.localtime(started)),
        started=_utc(started),
        finished=_utc(time.time()),
        machine=describe_machine(pick_device(device)),
        **extra,
    )
    results["runs"] = [record]
    if merge is not None:
        results = merge(results)
    out = Path(out)
    write_atomic(out, json.dumps(results, indent=1, default=float))
    return out


def _data_spec(values: dict) -> dict:
    """The ``data`` section of a config, checked (cheap: nothing is prepared)."""
    from .config import ConfigError

    data = values.pop("data", None) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config.data: expected a mapping (preset, fsd_root, dataset), got {data!r}")
    unknown = sorted(set(data) - {"preset", "fsd_root", "dataset"})
    if unknown:
        raise ConfigError(f"config.data: unknown key(s) {unknown}; known: ['dataset', 'fsd_root', 'preset']")
    if data.get("preset") not in (None, "tiny", "course"):
        raise ConfigError(f"config.data.preset: expected tiny, course or null, got {data['preset']!r}")
    for key in ("fsd_root", "dataset"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"config.data.{key}: expected a name or a folder path, got {data[key]!r}")
    return data


def _dataset(data: dict, device):
    from .datasets import prepare

    return prepare(data.get("preset"), fsd_root=data.get("fsd_root"), device=device, dataset=data.get("dataset"))


def extract_command(args) -> int:
    from .datasets import prepare

    course = prepare(
        args.preset,
        fsd_root=args.fsd_root,
        device=args.device,
        dataset=args.dataset,
        on_error="skip" if args.skip_unreadable else "raise",
    )
    # the splits pretrain and the evaluations will make: a class that cannot be split, or an FSDnoisy18k layout
    # with no verified clip, is an error now (exit 2; the features written stay: they are complete); an
    # FSDnoisy18k layout with no unverified clip gets pretrain's warning
    course.check()
    print(
        f"{course.name}: {len(course.train)} train clips, {len(course.test)} test clips, "
        f"features in {course.features_dir}"
    )
    return 0


def pretrain_command(args, overrides: list[str]) -> int:
    import torch

    from .config import ConfigError, build, merge, parse_overrides, read_yaml
    from .pretrained import check_export, export_encoder, load_init_encoder
    from .train import PretrainConfig, check_run_dir, pretrain

    values = merge(read_yaml(args.config), parse_overrides(overrides))
    run_dir = values.pop("run_dir", "runs/pretrain")
    if not isinstance(run_dir, str) or not run_dir:
        raise ConfigError(f"config.run_dir: expected a folder path, got {run_dir!r}")
    data = _data_spec(values)
    cfg = build(PretrainConfig, values)  # the whole config is checked before any data is prepared
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: choose one (continue the run, or replace it)")
    check_run_dir(run_dir, resume=args.resume, overwrite=False)  # refused now, not after the data is ready
    if args.export:  # an encoder of that name is refused now, not after the training
        check_export(args.export)
    init = None
    if args.init is not None:  # further pre-training: the encoder is loaded and checked before the data
        _check_encoder_spec(args.init, "--init")
        init, init_arch = load_init_encoder(args.init)
        if init_arch != cfg.arch:
            raise ConfigError(
                f"--init {args.init}: a {init_arch} encoder, but config.arch is {cfg.arch!r}; add --arch {init_arch}"
            )
    course = _dataset(data, args.device)
    if course.labelled is None:  # a folder of unlabelled audio only: nothing to monitor with
        print(f"{course.root}: no class folders: pre-training on its unlabelled clips, without the kNN monitor")
        train_set, monitor = course.unlabelled, None
    else:
        splits = course.splits(cfg.seed)
        train_set, monitor = splits["pretrain"], {"val": splits["val"], "test": splits["test"]}
    _, history = pretrain(
        cfg,
        train_set,
        monitor,
        run_dir=run_dir,
        resume=args.resume,
        device=args.device,
        overwrite=args.overwrite,
        init=init,
        init_name=args.init,
        store=args.store,
    )
    print(f"done: {len(history)} epochs, final loss {history[-1]['loss']:.4f}; checkpoint and metrics in {run_dir}")
    if args.export:
        made = f"{pick_device(args.device).type.upper()}, {torch.get_num_threads()} thread(s) per process"
        entry = export_encoder(f"{run_dir}/checkpoint.pt", args.export, dataset=course.name, made_on=made)
        print(f"exported pretrained/{entry['file']} (sha256 {entry['sha256'][:12]}...)")
    return 0


def _check_encoder_spec(spec: str, key: str) -> None:
    """An encoder spec that cannot load is refused before any data is prepared, naming the key it came from."""
    from .config import ConfigError
    from .pretrained import check_encoder_spec

    try:
        check_encoder_spec(spec)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"{key}: {err}") from err


def export_command(args) -> int:
    from .pretrained import export_encoder

    entry = export_encoder(
        f"{args.run_dir}/checkpoint.pt",
        args.name,
        dataset=args.dataset,
        made_on=args.made_on,
        overwrite=args.overwrite,
        replace_shipped=args.replace_shipped,
    )
    print(f"exported pretrained/{entry['file']} ({entry['bytes'] / 1e6:.1f} MB, sha256 {entry['sha256'][:12]}...)")
    return 0


def downstream_command(args, overrides: list[str], argv: list[str]) -> int:
    from .config import ConfigError, build, merge, parse_overrides, read_yaml
    from .downstream import TASKS, FinetuneConfig, LinearEvalConfig, finetune, linear_eval, task_splits
    from .pretrained import load_encoder

    started = time.time()
    values = merge(read_yaml(args.config), parse_overrides(overrides))
    spec, task, out = (
        values.pop("encoder", None),
        values.pop("task", "noisy"),
        Path(values.pop("out", f"runs/{args.command}.json")),
    )
    if task not in TASKS:
        raise ConfigError(f"config.task: expected one of {sorted(TASKS)}, got {task!r}")
    _check_encoder_spec(spec, "config.encoder")
    data = _data_spec(values)
    linear = args.command == "linear-eval"
    cfg = build(LinearEvalConfig if linear else FinetuneConfig, values)  # checked before any data is prepared
    course = _dataset(data, args.device)
    course.check_task(task)  # a folder with an unlabelled part has no noisy-label task
    splits = course.splits(cfg.seed)
    encoder, mean, std = load_encoder(spec, splits["pretrain"])
    run = linear_eval if linear else finetune
    res = run(encoder, mean, std, *task_splits(splits, task), cfg=cfg, device=args.device)
    report = {
        "command": args.command,
        "encoder": spec,
        "task": task,
        "dataset": course.name,
        "config": cfg.to_dict(),
        "best_epoch": res.best_epoch,
        "history": res.history,
        "val": {k: res.val[k] for k in ("top1", "balanced", "top3")},
        "test": {k: res.test[k] for k in ("top1", "balanced", "top3")},
        "test_per_class": dict(zip(res.classes, map(float, res.test["per_class"]))),
    }
    write_results(out, report, argv, args.device, started)
    print(
        f"{args.command} {spec} on the {task} task: best epoch {res.best_epoch}, "
        f"val balanced {res.val['balanced']:.1f}%, test balanced {res.test['balanced']:.1f}% "
        f"(top-1 {res.test['top1']:.1f}%); metrics in {out}"
    )
    return 0


def _runs_task(course, task: str) -> bool:
    """Whether ``course`` has the downstream ``task`` (its ``check_task`` does not refuse it)."""
    try:
        course.check_task(task)
    except ValueError:
        return False
    return True


def evaluate_command(args, argv: list[str]) -> int:
    from .config import ConfigError
    from .datasets import course_preset_of, prepare
    from .downstream import FinetuneConfig, LinearEvalConfig, lr_milestones
    from .experiments import STAGES, Protocol, compare, label_efficiency
    from .pretrained import load_encoder, load_pretrained
    from .results import merge_results

    def merge(update: dict) -> dict:
        try:
            return merge_results(json.loads(Path(args.merge_into).read_text()), update)
        except (OSError, ValueError, KeyError) as err:  # nothing is written: the earlier file stays as it was
            raise ConfigError(
                f"--merge-into {args.merge_into}: cannot merge this run into it ({type(err).__name__}: {err})"
            ) from err

    started = time.time()
    if args.released:  # refused now, not after the data is ready
        _check_encoder_spec(args.released, "--released")
    encoder, info = load_pretrained(args.encoder, device="cpu")
    if args.dataset:  # another dataset than the encoder's, e.g. a multi-label one (FSD50K's protocol)
        course = prepare(dataset=args.dataset, device=args.device)
    else:
        course = prepare(course_preset_of(info["dataset"]), device=args.device)
    splits = course.splits()
    multilabel = splits["pretrain"].multilabel
    if args.stages is None:  # the default: every stage the dataset can run (FSD50K's layout: no clean-label task)
        args.stages = [f"{s}:{t}" for s, t in STAGES if _runs_task(course, t)]
    for stage in args.stages:
        course.check_task(stage.split(":")[1])
    protocol = Protocol(
        epochs=args.epochs,
        batch_size=args.batch_size,
        linear_lrs=tuple(args.linear_lrs),
        finetune_lrs=tuple(args.finetune_lrs),
        probe_epochs=tuple(args.probe_epochs),
        seeds=tuple(args.seeds),
    )
    if args.merge_into:  # checked before the runs, not after them
        merge(dict(rows=[], encoder=args.encoder, dataset=course.name, epochs=args.epochs, recipe=protocol.to_dict()))
    extra = {}
    if args.released:  # the authors' published encoder, with the normalisation it was trained with
        extra["released"] = load_encoder(args.released, pretrain_set=splits["pretrain"], device="cpu")
    milestones = lr_milestones(args.epochs)
    kw = dict(epochs=args.epochs, milestones=milestones, test_every_epoch=False)  # results only: no test curve needed
    linear_cfg, finetune_cfg = LinearEvalConfig(**kw), FinetuneConfig(**kw)
    stages = [tuple(s.split(":")) for s in args.stages]
    results = compare(
        encoder,
        info["mean"],
        info["std"],
        splits,
        protocol,
        stages,
        extra=extra,
        device=args.device,
        progress=True,
        inits=args.inits,
    )
    for row in results["rows"]:  # which encoder file made each pre-trained row
        if row["init"] == "pretrained":
            row["encoder_sha256"] = info["sha256"]
    curve_args = dict(
        seeds=args.seeds,
        stage=args.curve_stage,
        linear_cfg=linear_cfg,
        finetune_cfg=finetune_cfg,
        device=args.device,
        progress=True,
    )
    if args.label_efficiency:
        results["label_efficiency"] = label_efficiency(encoder, info["mean"], info["std"], splits, **curve_args)
    if args.label_noise:
        from .coursedata import read_truth
        from .experiments import label_noise

        results["label_noise"] = label_noise(
            encoder, info["mean"], info["std"], splits, read_truth(course.root), args.label_noise, **curve_args
        )
    results.update(encoder=args.encoder, dataset=course.name, epochs=args.epochs, seeds=args.seeds)
    out = write_results(
        args.out or args.merge_into or f"runs/results-{args.encoder}.json",
        results,
        argv,
        args.device,
        started,
        merge=merge if args.merge_into else None,
        stages=args.stages,
        encoder_sha256=info["sha256"],
    )
    # single-label: balanced accuracy in %; multi-label: mAP in [0, 1] and d'
    metrics = [("mAP", "", 3), ("d'", "_dprime", 2)] if multilabel else [("balanced", "", 1)]
    for name, suffix, digits in metrics:
        summary = results.get("summary" + suffix, [])
        if not suffix:
            summary = summary + [
                r for k in ("label_efficiency", "label_noise") if k in results for r in results[k]["summary"]
            ]
        for row in summary:
            point = "".join(f" {k} {row[k]}" for k in ("fraction", "wrong_rate") if row.get(k) is not None)
            print(
                f"{row['arch']:9s} {row['init']:10s} {row['stage']:8s} {row['task']:5s}{point} "
                f"test {name} {row['mean']:.{digits}f} +- {row['std']:.{digits}f} (n={row['n']})"
            )
        for g in results.get("gains" + suffix, []):
            lo, hi = g["gain_low"], g["gain_high"]
            interval = "" if lo is None else f", 95% interval [{lo:+.{digits}f}, {hi:+.{digits}f}]"
            print(
                f"{g['arch']:9s} {g['stage']:8s} {g['task']:5s} {name}: pre-trained {g['pretrained']:.{digits}f} vs "
                f"{g['baseline']} {g['baseline_mean']:.{digits}f}: gain {g['gain_mean']:+.{digits}f}{interval} "
                f"(n={g['gain_n']})"
            )
    print(f"results in {out}")
    return 0


def download_command(args) -> int:
    from .download import cache_dir, download_dataset, download_released

    if args.what == "released-encoders":
        paths = download_released(url_base=args.url_base)
        print(f"released encoders in {cache_dir()} (sha256 verified): " + ", ".join(p.name for p in paths.values()))
        print("use them as --encoder released:vgglike or released:crnn")
        return 0
    dest = download_dataset(args.what, root=args.root, url_base=args.url_base, keep_archives=args.keep_archives)
    print(f"{args.what} is in {dest}; next: python -m uclser_lib extract --dataset {args.what}")
    return 0


def crossval_command(args, argv: list[str]) -> int:
    import re

    from .config import ConfigError
    from .datasets import prepare
    from .downstream import FinetuneConfig, LinearEvalConfig, lr_milestones
    from .experiments import cross_validate
    from .folders import FolderError, RealDataset, check_folds, folds_of

    started = time.time()
    _check_encoder_spec(args.encoder, "--encoder")
    if args.folds:  # checked before any data step (where this cannot know the folds, duplicates only: the rest
        # is cross_validate's check)
        available, source, what = folds_of(args.dataset) or (args.folds, args.dataset, "")
        try:
            check_folds(args.folds, available, source, what)
        except FolderError as err:
            raise ConfigError(f"--folds {' '.join(map(str, args.folds))}: {err}") from None
    ds = prepare(dataset=args.dataset, device=args.device)
    if not isinstance(ds, RealDataset):  # FSDnoisy18k's layout has one official test split: evaluate / linear-eval
        raise ConfigError(
            f"--dataset {args.dataset}: crossval is for ESC-50 and your own folders; {ds.name} has its own test split: "
            "use linear-eval or finetune with --data.dataset"
        )
    kw = dict(epochs=args.epochs, milestones=lr_milestones(args.epochs), test_every_epoch=False)
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
    results.update(encoder=args.encoder, dataset=ds.name, epochs=args.epochs, folds=args.folds or ds.fold_ids())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", ds.name)
    out = write_results(args.out or f"runs/crossval-{slug}.json", results, argv, args.device, started)
    for row in results["summary"]:
        print(
            f"{row['arch']:9s} {row['init']:10s} {row['stage']:8s} balanced {row['mean']:.1f} +- {row['std']:.1f}, "
            f"top-1 {row['mean_top1']:.1f} +- {row['std_top1']:.1f} (mean over {row['n']} fold x seed runs)"
        )
    print(f"results in {out}")
    return 0


def _one_line(err: BaseException) -> str:
    """An exception as one line: its message (the first line, with the count of the others), or its type."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0] + (f" (and {len(lines) - 1} more line(s); --debug shows them)" if len(lines) > 1 else "")
    from .config import ConfigError

    ours = isinstance(err, (ValueError, OSError, KeyError)) or type(err).__module__.startswith("uclser_lib")
    return text if ours or isinstance(err, ConfigError) else f"{type(err).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors are one line ``error: ...`` on stderr with exit code 2, the traceback with --debug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("UCLSER_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return _main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted (what was written so far is kept; rerun to resume)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 — the one error path of the command line, for every command
        if debug:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    from .experiments import STAGE_INITS, STAGES

    parser = argparse.ArgumentParser(prog="python -m uclser_lib", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also: UCLSER_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="generate the course dataset if needed and extract its log-mel features")
    ex.add_argument(
        "--preset",
        choices=["tiny", "course"],
        default=None,
        help="course dataset preset (default: course, tiny in smoke mode)",
    )
    ex.add_argument(
        "--fsd-root", default=None, help="use FSDnoisy18k on disk at this folder instead (or set UCLSER_FSD_ROOT)"
    )
    ex.add_argument(
        "--dataset", default=None, help="course (default), fsdnoisy18k, esc50 or a folder path (docs/real-audio.md)"
    )
    ex.add_argument("--device", default=None, help="device for the STFT (default: CUDA when present)")
    ex.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave unreadable audio files out (each is listed) instead of stopping at the first one",
    )
    pt = sub.add_parser(
        "pretrain", help="contrastive pre-training from a YAML config (extra --key value pairs override it)"
    )
    pt.add_argument(
        "--config", default="pretrain.yaml", help="YAML file, or the name of a shipped config (default: pretrain.yaml)"
    )
    pt.add_argument("--resume", action="store_true", help="continue the checkpoint in run_dir")
    pt.add_argument(
        "--overwrite", action="store_true", help="replace the run in run_dir (without it, a run there is refused)"
    )
    pt.add_argument("--export", default=None, metavar="NAME", help="write the encoder to pretrained/NAME.pt when done")
    pt.add_argument(
        "--init",
        default=None,
        metavar="ENCODER",
        help="start from this encoder's weights (a pretrained/ name, a run folder or its checkpoint.pt, an exported "
        ".pt, released:vgglike or released:crnn); the projection head starts fresh",
    )
    pt.add_argument(
        "--store",
        default="auto",
        choices=["auto", "memory", "disk"],
        help="draw batches from the training set in memory, or from a feature store on disk read per batch "
        "(written to run_dir/train-store); auto (default): memory where the set fits",
    )
    pt.add_argument("--device", default=None)
    exp = sub.add_parser(
        "export", help="write the encoder of a pre-training run to pretrained/ (fp16) with its manifest entry"
    )
    exp.add_argument("--run-dir", required=True)
    exp.add_argument("--name", required=True)
    exp.add_argument(
        "--dataset", required=True, help="the dataset it was trained on, for the manifest (e.g. course2_course)"
    )
    exp.add_argument(
        "--made-on", default=None, help='how the run was made, in words, for the manifest (e.g. "CPU, 1 thread")'
    )
    exp.add_argument("--overwrite", action="store_true", help="replace an encoder of that name (else it is refused)")
    exp.add_argument(
        "--replace-shipped",
        action="store_true",
        help="replace a shipped pretrained/course-<arch> (the maintainers' remake, pretrained/make_pretrained.sh)",
    )
    for name, default, what in (
        ("linear-eval", "linear_eval.yaml", "linear evaluation of a frozen encoder"),
        ("finetune", "finetune.yaml", "fine-tuning of the whole network"),
    ):
        ds = sub.add_parser(name, help=f"{what} from a YAML config (extra --key value pairs override it)")
        ds.add_argument(
            "--config", default=default, help=f"YAML file, or the name of a shipped config (default: {default})"
        )
        ds.add_argument("--device", default=None)
    ev = sub.add_parser(
        "evaluate", help="linear evaluation + fine-tuning (noisy and clean tasks), pre-trained vs random init"
    )
    ev.add_argument("--encoder", required=True, help="a name in pretrained/manifest.json, e.g. course-resnet18")
    ev.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ev.add_argument("--linear-lrs", type=float, nargs="+", default=[0.03, 0.1, 0.3], help="linear evaluation's lr grid")
    ev.add_argument("--finetune-lrs", type=float, nargs="+", default=[0.003, 0.01, 0.03], help="fine-tuning's lr grid")
    ev.add_argument(
        "--probe-epochs",
        type=int,
        nargs="+",
        default=[0, 100],
        help="fine-tuning's grid of linear-probe epochs first (0: none); chosen on validation with the lr",
    )
    ev.add_argument(
        "--released",
        default=None,
        metavar="ENCODER",
        help="also compare the authors' published encoder at the linear stage, e.g. released:vgglike",
    )
    ev.add_argument(
        "--epochs", type=int, default=200, help="epochs of every supervised stage (lr drops at 40%% and 80%%)"
    )
    ev.add_argument(
        "--batch-size", type=int, default=128, help="clips per SGD step of every supervised stage (the paper: 128)"
    )
    ev.add_argument(
        "--stages",
        nargs="*",
        default=None,
        choices=[f"{s}:{t}" for s, t in STAGES],
        metavar="STAGE:TASK",
        help="pre-trained vs random comparisons to run (default: all three, or those the dataset has; none: only "
        "the curves)",
    )
    ev.add_argument(
        "--dataset",
        default=None,
        help="evaluate on this dataset instead of the encoder's: a name of `prepare` (e.g. fsd50k, course-fsd50k) or "
        "a folder; a multi-label one is scored by mAP and d'",
    )
    ev.add_argument(
        "--inits",
        nargs="+",
        default=None,
        choices=sorted({i for names in STAGE_INITS.values() for i in names} | {"released"}),
        help="run only these inits (default: all; e.g. pretrained after re-training the encoder, with --merge-into)",
    )
    ev.add_argument("--label-efficiency", action="store_true", help="also train on 1-100%% of the clean labels")
    ev.add_argument(
        "--label-noise",
        type=float,
        nargs="*",
        default=None,
        metavar="RATE",
        help="also train on the noisy subset relabelled at these wrong-label rates (course dataset only)",
    )
    ev.add_argument(
        "--curve-stage",
        choices=["finetune", "linear"],
        default="finetune",
        help="how the label-efficiency and label-noise curves train: fine-tuning, or linear evaluation (fast on a CPU)",
    )
    ev.add_argument(
        "--out",
        default=None,
        help="JSON file for the results (default: --merge-into, else runs/results-<encoder>.json)",
    )
    ev.add_argument(
        "--merge-into",
        default=None,
        metavar="JSON",
        help="put this run's rows into an earlier results file (same encoder, dataset, epochs), "
        "replacing the rows it reran",
    )
    ev.add_argument("--device", default=None)
    dl = sub.add_parser(
        "download",
        help="download, verify and unpack fsdnoisy18k, fsd50k, esc50 or the authors' released encoders (resumable)",
    )
    dl.add_argument("what", choices=["fsdnoisy18k", "fsd50k", "esc50", "released-encoders"])
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
        help="a pretrained/ name, a run folder or its checkpoint.pt, released:vgglike, released:crnn or random:<arch>",
    )
    cv.add_argument("--stages", nargs="+", default=["linear"], choices=["linear", "finetune"])
    cv.add_argument("--inits", nargs="+", default=["pretrained", "random"], choices=["pretrained", "random"])
    cv.add_argument("--folds", type=int, nargs="+", default=None, help="default: every fold (ESC-50: 1-5)")
    cv.add_argument("--seeds", type=int, nargs="+", default=[0])
    cv.add_argument("--epochs", type=int, default=200, help="epochs of every stage (lr drops at 40%% and 80%%)")
    cv.add_argument("--out", default=None, help="results JSON (default: runs/crossval-<dataset>.json)")
    cv.add_argument("--device", default=None)
    args, rest = parser.parse_known_args(argv)
    if args.command in ("pretrain", "linear-eval", "finetune"):  # these take --key value overrides of their config
        return pretrain_command(args, rest) if args.command == "pretrain" else downstream_command(args, rest, argv)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {
        "extract": lambda: extract_command(args),
        "export": lambda: export_command(args),
        "evaluate": lambda: evaluate_command(args, argv),
        "download": lambda: download_command(args),
        "crossval": lambda: crossval_command(args, argv),
    }
    return commands[args.command]()
