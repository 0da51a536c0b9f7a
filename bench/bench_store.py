"""Pre-training from a feature store: memory per process as the store grows, and throughput vs in memory (issue #33).

For each store size (``--sizes``, multiples of ``--base-clips`` clips with FSDnoisy18k's length distribution, and
with ``--beyond-ram`` a store larger than this machine's memory), a synthetic store is written to ``--dir`` chunk
by chunk (``store.write_store_chunks``), then a fresh subprocess opens it (``verify="size"``) and runs
``train.pretrain(store="disk")`` for ``--steps`` optimiser steps of a small config, while a thread samples its
``/proc/self/status``: the peak of ``RssAnon`` (memory the process owns: heap, tensors) and of ``RssFile`` (pages
of mapped files: the store's shared page cache, which the kernel can evict). Before the first timed step the
child drops the store's pages from its mapping and from the page cache (``madvise`` + ``posix_fadvise``
``DONTNEED``), so every frame the training touches is read from the disk ("cold"); at the base size it also
runs warm (pages left cached) and in memory (``store="memory"``: the frames as float32 in the process), in the
same run, for the throughput ratio. Clips per second are over the steps after the first.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_store [--beyond-ram]

writes ``bench/results-store.json`` (machine, command, date, rows; atomically). The stores are deleted after use.
"""

from __future__ import annotations

import argparse
import datetime
import json
import mmap
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from uclser_lib.runtime import checkout_root, describe_machine, write_atomic

from .synthetic import fsd_lengths

DEFAULT_OUT = checkout_root() / "bench" / "results-store.json"
N_BANDS = 96


def _status_kib(*keys: str) -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in keys:
            out[name] = int(value.split()[0])
    return out


class _Sampler(threading.Thread):
    """Peak RssAnon / RssFile (MiB) of this process, sampled every ``period`` s."""

    def __init__(self, period: float = 0.02):
        super().__init__(daemon=True)
        self.period, self.peak, self.stop = period, {"RssAnon": 0, "RssFile": 0}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for k, v in _status_kib("RssAnon", "RssFile").items():
                self.peak[k] = max(self.peak[k], v)
            time.sleep(self.period)

    def mib(self) -> dict[str, float]:
        return {k: round(v / 1024, 1) for k, v in self.peak.items()}


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def write_synthetic_store(path: Path, n_clips: int, seed: int = 0, chunk_frames: int = 1 << 17) -> dict:
    """A store of ``n_clips`` FSDnoisy18k-like clips (values ~ N(-2, 1)), written chunk by chunk; its size."""
    from uclser_lib.store import write_store_chunks

    lengths = fsd_lengths(n_clips, seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n_frames = int(offsets[-1])
    base = (np.random.default_rng(seed).standard_normal((chunk_frames, N_BANDS), dtype=np.float32) - 2.0).astype(
        np.float32
    )

    def chunks():
        for k, a in enumerate(range(0, n_frames, chunk_frames)):
            b = min(a + chunk_frames, n_frames)
            yield np.roll(base, k * 7919, axis=0)[: b - a] + np.float32((k % 97) * 1e-3)  # every chunk its own bytes

    t0 = time.perf_counter()
    write_store_chunks(path, chunks(), offsets, np.arange(n_clips) % 20, classes=[f"c{i}" for i in range(20)])
    return {
        "clips": n_clips,
        "frames": n_frames,
        "store_gb": round((path / "frames.npy").stat().st_size / 1e9, 3),
        "float32_gb": round(n_frames * N_BANDS * 4 / 1e9, 3),
        "write_s": round(time.perf_counter() - t0, 1),
    }


def _drop_cache(frames: np.ndarray, file: Path) -> None:
    """Unmap the store's pages from this process and drop them from the page cache: the next reads hit the disk."""
    mm = getattr(frames, "_mmap", None)
    if mm is not None:
        mm.madvise(mmap.MADV_DONTNEED)
    fd = os.open(file, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class _Stop(Exception):
    pass


def _view_throughput(st, args) -> float:
    """Clips/s of view building alone (the data path: reads, mix-back, augmentations), ``args.view_batches``
    batches, from the store (cold: its pages dropped first) or from the frames in memory."""
    from uclser_lib.augment import AugmentConfig
    from uclser_lib.views import ViewBuilder

    clips = st.clips if args.mode == "disk" else st.clips.load()
    views = ViewBuilder(clips, AugmentConfig.paper(), -2.0, 1.0)
    if args.mode == "disk" and args.cold:
        _drop_cache(st.clips.frames, Path(args.store) / "frames.npy")
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(args.view_batches):
        views(torch.randint(len(clips), (args.batch_size,), generator=gen), gen)
    return args.view_batches * args.batch_size / (time.perf_counter() - t0)


def child(args) -> dict:
    """One measurement in this (fresh) process: open the store, pre-train ``args.steps`` steps; a JSON row."""
    from uclser_lib.store import open_store
    from uclser_lib.train import PretrainConfig, pretrain

    torch.set_num_threads(args.threads)
    sampler = _Sampler()
    sampler.start()
    t0 = time.perf_counter()
    st = open_store(args.store, verify="size")
    cfg = PretrainConfig(
        arch=args.arch, epochs=1, batch_size=args.batch_size, proj_hidden=128, proj_dim=64, knn_every=0, seed=1
    )
    times, setup = [], {}

    def on_step(epoch, step, loss):
        times.append(time.perf_counter())
        if step == 0:
            setup["seconds"] = round(times[0] - t0, 2)
            if args.mode == "disk" and args.cold:
                _drop_cache(st.clips.frames, Path(args.store) / "frames.npy")
            times[0] = time.perf_counter()  # the timed steps start after the drop
        if len(times) >= args.steps:
            raise _Stop

    try:
        pretrain(cfg, st, progress=False, device="cpu", store=args.mode, on_step=on_step)
    except _Stop:
        pass
    views_s = _view_throughput(st, args)
    sampler.stop.set()
    sampler.join()
    clips_s = args.batch_size * (len(times) - 1) / (times[-1] - times[0])
    peak = sampler.mib()
    return {
        "mode": args.mode
        + (" (cold)" if args.mode == "disk" and args.cold else " (warm)" if args.mode == "disk" else ""),
        "clips_per_s": round(clips_s, 2),
        "views_clips_per_s": round(views_s, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "rss_anon_peak_mib": peak["RssAnon"],
        "rss_file_peak_mib": peak["RssFile"],
        "setup_s": setup.get("seconds"),
        "steps": len(times),
    }


def _run_child(args, store: Path, mode: str, cold: bool) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_store", "--child", mode, "--store", str(store)]
    cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--arch", args.arch]
    cmd += ["--threads", str(args.threads), "--view-batches", str(args.view_batches)] + (["--cold"] if cold else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=checkout_root())
    if proc.returncode != 0:
        raise RuntimeError(f"bench_store child ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-clips", type=int, default=1000, help="clips of the 1x store (FSDnoisy18k lengths)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 10], help="store sizes, multiples of --base-clips")
    p.add_argument("--beyond-ram", action="store_true", help="also a store 1.1x this machine's memory (on disk)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--view-batches", type=int, default=40, help="batches of views timed alone")
    p.add_argument("--dir", default=None, help="where stores are written (default: a temporary folder)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--child", choices=["disk", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.mode = args.child
        print(json.dumps(child(args)))
        return 0

    root = Path(args.dir or tempfile.mkdtemp(prefix="uclser-bench-store-"))
    root.mkdir(parents=True, exist_ok=True)
    mem_total = _mem_total()
    sizes = [(f"{m}x", args.base_clips * m) for m in args.sizes]
    if args.beyond_ram:
        mean_frames = float(np.mean(fsd_lengths(100_000)))
        n = int(1.1 * mem_total / (mean_frames * N_BANDS * 2)) + 1
        sizes.append((f"beyond RAM ({n / args.base_clips:.0f}x)", n))
    rows = []
    try:
        for label, n_clips in sizes:
            path = root / f"store-{n_clips}"
            info = write_synthetic_store(path, n_clips)
            print(f"{label}: {info}", file=sys.stderr, flush=True)
            modes = [("disk", True)] + ([("disk", False), ("memory", False)] if label == sizes[0][0] else [])
            for mode, cold in modes:
                row = {"size": label, **info, **_run_child(args, path, mode, cold)}
                print(row, file=sys.stderr, flush=True)
                rows.append(row)
            shutil.rmtree(path)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    base = {r["mode"]: r for r in rows if r["size"] == sizes[0][0]}
    result = {
        "what": "pre-training from a feature store: peak RssAnon / RssFile per process and clips/s vs in memory",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_store " + shlex.join(argv or sys.argv[1:]),
        "machine": {**describe_machine(torch.device("cpu")), "mem_total_gb": round(mem_total / 1e9, 1)},
        "config": {
            "arch": args.arch,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "threads": args.threads,
            "view_batches": args.view_batches,
        },
        "throughput_ratio_store_over_memory": {
            f"{k}, {what}": round(v[what] / base["memory"][what], 3)
            for k, v in base.items()
            for what in ("clips_per_s", "views_clips_per_s")
            if k != "memory" and "memory" in base
        },
        "rows": rows,
    }
    write_atomic(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
