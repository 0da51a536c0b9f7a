"""Feature extraction speed, in seconds of audio per second: the fast batched path vs the librosa per-file path.

Synthetic 44.1 kHz 16-bit WAV files with FSDnoisy18k's length distribution (capped) are written to a temporary
folder; each path extracts all of them with 1 process and with N, every process running a single thread (torch
intra-op and BLAS threads limited to 1), so that "N processes" means N cores for both paths. The librosa path
runs one file per call (in a process pool for N); the fast path is :func:`uclser_lib.features.extract_many`
(N DataLoader workers: on a CPU device they read, resample and compute the log-mel; on a GPU they read and
resample, and the STFT + mel run batched on the device), with its default resampler (soxr where installed) and,
where that is soxr, again with torchaudio's (what runs where soxr is absent).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from uclser_lib.features import extract_many, resampler_in_use

try:
    from .synthetic import fsd_lengths
except ImportError:  # run as a script
    from synthetic import fsd_lengths


def write_wavs(folder: Path, n_files: int, max_seconds: float, seed: int = 0) -> tuple[list[Path], float]:
    """``n_files`` noisy-tone WAVs at 44.1 kHz; returns the paths and the total seconds of audio."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    seconds = np.minimum(fsd_lengths(n_files, seed) * 220 / 22050, max_seconds)
    paths = []
    for i, s in enumerate(seconds):
        n = int(s * 44100)
        t = np.arange(n) / 44100
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(n)
        path = folder / f"{i}.wav"
        sf.write(path, y.astype(np.float32), 44100, subtype="PCM_16")
        paths.append(path)
    return paths, float(seconds.sum())


def _blas_limit(n: int):
    """Limit numpy's BLAS to ``n`` threads (a context; a no-op where threadpoolctl is not installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


@contextlib.contextmanager
def _one_thread():
    """This process on one torch thread and one BLAS thread, as each worker process is."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas_limit(1):
            yield
    finally:
        torch.set_num_threads(threads)


def _librosa_worker(warm_up_path) -> None:
    """A pool process: one thread, librosa imported and warmed up before the timing starts."""
    torch.set_num_threads(1)
    _blas_limit(1)  # applied on creation, kept for the worker's life
    _librosa_one(warm_up_path)


def _librosa_one(path) -> np.ndarray:
    """One file's features by the librosa path (returned, as the fast path's are, so both pay for shipping them)."""
    from uclser_lib.features import extract_logmel_librosa

    return extract_logmel_librosa(path)


def _rates(fn, audio_seconds: float, one_thread: bool) -> tuple[float, float]:
    """Audio seconds per second of wall time and per second of this process's CPU time (its own threads only)."""
    with _one_thread() if one_thread else contextlib.nullcontext():
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        return audio_seconds / (time.perf_counter() - t0), audio_seconds / (time.process_time() - c0)


def bench_features(
    device="cpu", n_files: int = 200, max_seconds: float = 30.0, workers: int | None = None, rounds: int = 3
) -> dict:
    """Audio seconds per second of each path, with 1 and ``workers`` processes (default: all cores).

    librosa's path runs only where librosa is installed.

    Every measurement runs ``rounds`` times, the paths taking turns within a round, and the best rate is kept
    (a shared machine's other load only ever slows a run down); the rates of every round are kept under
    ``"rounds"``. Keys ``fast/w0`` (in-process) and ``fast/w{N}``, ``fast-torchaudio/...`` (only where the
    default resampler is soxr), ``librosa/w1``, ``librosa/w{N}``, and the ratios ``<fast path>_over_librosa/...``;
    for the in-process runs also ``.../cpu``: audio seconds per second of the process's CPU time, which other
    processes on a busy machine hardly change (the GPU's time, where there is one, is not in it).
    """
    device = torch.device(device)
    workers = workers or os.cpu_count() or 1
    resampler = resampler_in_use()
    out = {"device": str(device), "files": n_files, "workers": workers, "resampler": resampler, "rounds": {}}
    variants = {"fast": "auto"} | ({"fast-torchaudio": "torchaudio"} if resampler == "soxr" else {})
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        paths, audio = write_wavs(Path(tmp), n_files, max_seconds)
        out["audio_seconds"] = audio
        runs = {}  # key -> (extract every file once, limit this process to one thread)
        for name, r in variants.items():
            with _one_thread():
                list(
                    extract_many(paths[:4], device=device, workers=0, resampler=r)
                )  # warm-up (lazy inits, CUDA context)
            runs[f"{name}/w0"] = (lambda r=r: list(extract_many(paths, device=device, workers=0, resampler=r)), True)
            runs[f"{name}/w{workers}"] = (
                lambda r=r: list(extract_many(paths, device=device, workers=workers, resampler=r)),
                False,
            )
        try:
            import librosa  # noqa: F401
        except ImportError:
            out["librosa"] = "not installed"
        else:
            with _one_thread():
                _librosa_one(paths[0])  # warm-up (librosa's lazy imports, cached filters)
            pool = stack.enter_context(ProcessPoolExecutor(workers, initializer=_librosa_worker, initargs=(paths[0],)))
            list(pool.map(_librosa_one, paths[:workers]))  # start every process (they start on demand)
            runs["librosa/w1"] = (lambda: [_librosa_one(p) for p in paths], True)
            runs[f"librosa/w{workers}"] = (lambda: list(pool.map(_librosa_one, paths, chunksize=4)), False)
        for _ in range(rounds):
            for key, (fn, one_thread) in runs.items():
                wall, cpu = _rates(fn, audio, one_thread)
                out["rounds"].setdefault(key, []).append(wall)
                if one_thread:
                    out["rounds"].setdefault(f"{key}/cpu", []).append(cpu)
    out |= {key: max(rates) for key, rates in out["rounds"].items()}
    if "librosa/w1" in out:
        for name in variants:
            for ours, theirs in (("w0", "w1"), ("w0/cpu", "w1/cpu"), (f"w{workers}", f"w{workers}")):
                out[f"{name}_over_librosa/{theirs}"] = out[f"{name}/{ours}"] / out[f"librosa/{theirs}"]
    return out
