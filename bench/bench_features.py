"""Feature extraction speed, in seconds of audio per second: the fast batched path vs the librosa per-file path.

Synthetic 44.1 kHz 16-bit WAV files with FSDnoisy18k's length distribution (capped) are written to a temporary
folder; each path extracts all of them, with 1 process and with N. The librosa path runs one file per call
(in a process pool for N); the fast path is :func:`uclser_lib.features.extract_many` (DataLoader workers read
and resample, the STFT + mel run batched on the device).
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from uclser_lib.features import extract_many

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


def _librosa_one(path) -> int:
    from uclser_lib.features import extract_logmel_librosa

    return len(extract_logmel_librosa(path))


def _rate(fn, audio_seconds: float) -> float:
    t0 = time.perf_counter()
    fn()
    return audio_seconds / (time.perf_counter() - t0)


def bench_features(device="cpu", n_files: int = 200, max_seconds: float = 30.0, workers: int | None = None) -> dict:
    """Audio seconds per second of each path, 1 and ``workers`` processes (default: all cores); librosa only where installed."""
    device = torch.device(device)
    workers = workers or os.cpu_count() or 1
    out = {"device": str(device), "files": n_files, "workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        paths, audio = write_wavs(Path(tmp), n_files, max_seconds)
        out["audio_seconds"] = audio
        list(extract_many(paths[:4], device=device, workers=0))  # warm-up (lazy inits, CUDA context)
        out["fast/w0"] = _rate(lambda: list(extract_many(paths, device=device, workers=0)), audio)
        out[f"fast/w{workers}"] = _rate(lambda: list(extract_many(paths, device=device, workers=workers)), audio)
        try:
            import librosa  # noqa: F401
        except ImportError:
            out["librosa"] = "not installed"
            return out
        out["librosa/w1"] = _rate(lambda: [_librosa_one(p) for p in paths], audio)
        with ProcessPoolExecutor(workers) as pool:
            out[f"librosa/w{workers}"] = _rate(lambda: list(pool.map(_librosa_one, paths, chunksize=4)), audio)
        out["fast_over_librosa/w1"] = out["fast/w0"] / out["librosa/w1"]
        out[f"fast_over_librosa/w{workers}"] = out[f"fast/w{workers}"] / out[f"librosa/w{workers}"]
    return out
