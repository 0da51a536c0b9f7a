"""Rendering the planned clips and writing them in FSDnoisy18k's layout (resumable); reading the truth back."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from ..data import AUDIO_DIRS, META_DIR, TEST_COLUMNS, TRAIN_COLUMNS
from ..features import _die_with_parent
from ..runtime import PAPER_SEED, write_atomic
from .dsp import SR
from .plan import (
    _AUDIO_STREAM,
    ASO_IDS,
    DATASET_VERSION,
    MIXED_IN_DB,
    SNR_DB,
    ClipPlan,
    _rates,
    _resolve_preset,
    plan_dataset,
)
from .recipes import _active_power, _background, _event, _room

__all__ = ["MANIFEST", "TRUTH_HEADER", "generate", "read_truth", "render_clip"]

TRUTH_HEADER = ("fname", "true_label", "label_state")
MANIFEST = "course_manifest.json"


def render_clip(clip: ClipPlan, seed: int) -> np.ndarray:
    """The audio of one planned clip: (clip.n_samples,) float32, peak 0.2-0.9.

    Drawn from ``default_rng([seed, 1, clip.index])``.
    """
    rng = np.random.default_rng([seed, _AUDIO_STREAM, clip.index])
    n = clip.n_samples
    x = _event(clip.true_label, rng, n)
    if clip.mixed_label is not None:
        x += 10 ** (rng.uniform(*MIXED_IN_DB) / 20) * _event(clip.mixed_label, rng, n)
    return _mix_down(rng, x)


def _mix_down(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """The clean events ``x`` of a clip in a room (half of the clips), over background noise at an SNR drawn from
    SNR_DB, scaled to a peak of 0.2-0.9: (len(x),) float32. Shared by both layouts' clips (same draws, same order)."""
    n = len(x)
    x = _room(rng, x)
    snr = rng.uniform(*SNR_DB)
    y = x + np.sqrt(_active_power(x) / 10 ** (snr / 10)) * _background(rng, n)
    return (rng.uniform(0.2, 0.9) * y / np.abs(y).max()).astype(np.float32)


def _is_complete(path: Path, n_samples: int) -> bool:
    """Whether ``path`` is a readable 44.1 kHz mono 16-bit WAV of ``n_samples`` frames."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return False
    return (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", n_samples)


def _write_clip(job: tuple[ClipPlan, int, str]) -> None:
    """Render one clip and write it atomically (temporary name in the same folder, then os.replace).

    The WAV is encoded in memory and written by Python, so a full disk is an ``OSError`` with its errno (libsndfile
    writing the file itself says only "System error."): :func:`~uclser_lib.runtime.write_atomic` raises it as
    :class:`~uclser_lib.runtime.DiskFullError`, "<the WAV's path>: no space left on device", the temporary file removed.
    """
    clip, seed, folder = job
    _write_wav(Path(folder) / clip.fname, render_clip(clip, seed))


def _write_wav(path: Path, audio: np.ndarray) -> None:
    """``audio`` as a 44.1 kHz 16-bit PCM mono WAV, encoded in memory and written atomically (see _write_clip)."""
    wav = io.BytesIO()
    sf.write(wav, audio, SR, subtype="PCM_16", format="WAV")
    write_atomic(path, wav.getvalue(), fsync=False)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker_init(parent: int) -> None:
    """Initializer of generate's worker processes: a worker dies with ``parent``, the process that started it, even
    when that one is killed with ``kill -9`` (a worker left behind blocks forever on its pipe).

    On Linux the kernel kills it (``PR_SET_PDEATHSIG``, :func:`uclser_lib.features._die_with_parent`; it fires when
    the thread that forked the worker ends, and :func:`generate` forks them in its own thread, which waits for them).
    Everywhere, as a fallback, a daemon thread polls ``os.getppid()`` every second and exits when the parent changed;
    a parent that died before this ran is caught at once.
    """
    _die_with_parent(0)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _csv_text(header, rows) -> str:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def _claim(
    root: Path,
    manifest: dict,
    meta_dir: str = META_DIR,
    data_files: tuple[str, ...] = ("train.csv", "test.csv"),
    audio_dirs: tuple[str, ...] = tuple(AUDIO_DIRS.values()),
) -> None:
    """Write the manifest in an empty root, or check that the one there asks for the same dataset.

    ``meta_dir``: the metadata folder that holds the manifest; ``data_files`` (in it) and WAVs in ``audio_dirs``
    without a manifest mean a dataset not made by the generator. Defaults: FSDnoisy18k's layout."""
    path = root / meta_dir / MANIFEST
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored != manifest:
            diff = {
                k: (stored.get(k), manifest.get(k))
                for k in sorted(set(stored) | set(manifest))
                if stored.get(k) != manifest.get(k)
            }
            raise ValueError(
                f"{root} already holds a course dataset generated with other parameters "
                f"({', '.join(f'{k}: {a!r} there, {b!r} asked' for k, (a, b) in diff.items())}); "
                "use another root, or delete this one to regenerate"
            )
        return
    csvs = [root / meta_dir / name for name in data_files]
    if any(p.exists() for p in csvs) or any(f for d in audio_dirs for f in (root / d).glob("*.wav")):
        raise ValueError(
            f"{root} already holds audio or metadata without a {MANIFEST} (not made by generate?); use another root"
        )
    (root / meta_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


def _prepare_folders(folders) -> None:
    """Create ``folders`` and remove the temporary files an interrupted run left in them."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in [*folder.glob(".*.part"), *folder.glob(".*.tmp")]:
            stale.unlink()


def _run_jobs(work, todo: list, total: int, desc: str, progress: bool, workers: int | None) -> None:
    """``work(job)`` for every job of ``todo`` (``total`` clips in all, the others already done), in ``workers``
    processes (default: the CPUs, at most 8; see :func:`_worker_init`), with a progress bar. ``work`` must be a
    module-level function (the worker processes receive it by name)."""
    workers = min(workers or _default_workers(), max(1, len(todo)))
    with tqdm(total=total, initial=total - len(todo), unit="clip", desc=desc, disable=not progress) as bar:
        if workers == 1:
            for job in todo:
                work(job)
                bar.update()
        else:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),))
            try:
                for _ in pool.map(work, todo, chunksize=4):
                    bar.update()
            finally:  # after an error (a full disk) the clips not started are not tried
                pool.shutdown(wait=True, cancel_futures=True)


def generate(
    root,
    preset="course",
    seed: int = PAPER_SEED,
    wrong_rate=None,
    incomplete_rate=None,
    oov_rate=None,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Generate (or finish generating) the course dataset ``preset`` under ``root``; return ``root``.

    Resumable: complete WAVs already there are kept, missing or damaged ones are (re)written, each
    atomically; the CSVs come last. ``workers`` processes render in parallel (default: the CPUs,
    at most 8); the files do not depend on it. Raises ``ValueError`` when ``root`` holds a dataset
    made with other parameters (see ``FSDnoisy18k.meta/course_manifest.json``) or not by this function, and
    :class:`~uclser_lib.runtime.DiskFullError` naming the WAV when the disk is full (the rerun resumes). The worker
    processes die with this one, even when it is killed with ``kill -9`` (:func:`_worker_init`).
    """
    name, cfg = _resolve_preset(preset)
    wrong, incomplete, oov = _rates(wrong_rate, incomplete_rate, oov_rate)
    if workers is not None and workers < 1:
        raise ValueError(f"workers = {workers}: expected at least 1 process")
    clips = plan_dataset(cfg, seed, wrong, incomplete, oov)
    root = Path(root).expanduser()
    manifest = {
        "preset": name,
        "config": dataclasses.asdict(cfg),
        "seed": int(seed),
        "wrong_rate": wrong,
        "incomplete_rate": incomplete,
        "oov_rate": oov,
        "generator_version": DATASET_VERSION,
    }
    _claim(root, json.loads(json.dumps(manifest)))
    folders = {split: root / d for split, d in AUDIO_DIRS.items()}
    meta = root / META_DIR
    _prepare_folders([*folders.values(), meta])
    todo = [
        (c, int(seed), str(folders[c.split]))
        for c in clips
        if not _is_complete(folders[c.split] / c.fname, c.n_samples)
    ]
    _run_jobs(_write_clip, todo, len(clips), f"course dataset {name!r}", progress, workers)

    train = [c for c in clips if c.split == "train"]
    test = [c for c in clips if c.split == "test"]
    write_atomic(
        meta / "train.csv",
        _csv_text(
            TRAIN_COLUMNS,
            [(c.fname, c.label, ASO_IDS[c.label], int(c.manually_verified), int(c.noisy_small)) for c in train],
        ),
    )
    write_atomic(meta / "test.csv", _csv_text(TEST_COLUMNS, [(c.fname, c.label, ASO_IDS[c.label]) for c in test]))
    write_atomic(
        meta / "course_truth.csv", _csv_text(TRUTH_HEADER, [(c.fname, c.true_label, c.label_state) for c in clips])
    )
    return root


def read_truth(root) -> dict[str, tuple[str, str]]:
    """``{fname: (true_label, label_state)}`` from ``course_truth.csv``.

    Empty for a dataset that has no such file (FSDnoisy18k).
    """
    path = Path(root) / META_DIR / "course_truth.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != TRUTH_HEADER:
            raise ValueError(f"{path}: header {reader.fieldnames}, expected {list(TRUTH_HEADER)}")
        return {row["fname"]: (row["true_label"], row["label_state"]) for row in reader}
