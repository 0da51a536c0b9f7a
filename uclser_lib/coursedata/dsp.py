"""Signal helpers of the sound recipes: filters, impulses, decays, noises.

Lengths are in samples at ``SR``, times in seconds.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, fftconvolve, lfilter, sosfilt

__all__ = ["SAMPLE_RATE", "SR"]

#: Sample rate of every clip, Hz (FSDnoisy18k's).
SAMPLE_RATE = 44_100
SR = SAMPLE_RATE


def _n(seconds):
    """Seconds -> samples (int, or int64 array for an array)."""
    s = np.round(np.asarray(seconds) * SR).astype(np.int64)
    return int(s) if s.ndim == 0 else s


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _unit(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to unit RMS (unchanged when silent)."""
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


def _filter(x: np.ndarray, kind: str, hz, order: int = 2) -> np.ndarray:
    """Butterworth ``kind`` ('lowpass', 'highpass', 'bandpass') filter at ``hz`` (one or two edges)."""
    hz = np.minimum(hz, 0.45 * SR)
    return sosfilt(butter(order, hz, kind, fs=SR, output="sos"), x)


def _impulses(n: int, starts, amps) -> np.ndarray:
    """(n,) zeros with ``amps`` added at sample ``starts`` (those inside the clip)."""
    x = np.zeros(n)
    starts = np.asarray(starts, dtype=np.int64)
    keep = (starts >= 0) & (starts < n)
    np.add.at(x, starts[keep], np.broadcast_to(amps, starts.shape)[keep])
    return x


def _decay(x: np.ndarray, tau: float) -> np.ndarray:
    """One-pole filter: every impulse of ``x`` becomes an exponential decay exp(-t / tau)."""
    return lfilter([1.0], [1.0, -np.exp(-1.0 / (tau * SR))], x)


def _modes(excitation: np.ndarray, freqs, decays, amps) -> np.ndarray:
    """Modal synthesis: each impulse of ``excitation`` rings every mode as amp * exp(-t/decay) * sin(2 pi f t)."""
    out = np.zeros_like(excitation)
    for f, d, a in zip(np.minimum(freqs, 0.45 * SR), decays, amps):
        r, w = np.exp(-1.0 / (d * SR)), 2 * np.pi * f / SR
        out += a * np.sin(w) * lfilter([1.0], [1.0, -2 * r * np.cos(w), r * r], excitation)
    return out


def _soften(x: np.ndarray, width: float) -> np.ndarray:
    """Smear impulses over a Hann pulse ``width`` seconds long (a softer mallet: fewer highs)."""
    k = max(1, _n(width))
    pulse = np.hanning(k + 2)[1:-1]
    return fftconvolve(x, pulse / pulse.sum())[: len(x)]


def _onsets(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Event starts (samples): a Poisson process of ``rate`` events/s, the first within 0.1 s."""
    dur = n / SR
    t = [rng.uniform(0.0, min(0.1, 0.25 * dur))]
    while (nxt := t[-1] + rng.exponential(1.0 / rate)) < dur - 0.02:
        t.append(nxt)
    return (np.array(t) * SR).astype(np.int64)


def _rhythm(rng: np.random.Generator, n: int, period: float, jitter: float) -> np.ndarray:
    """Event starts (samples) every ``period`` seconds, each shifted by N(0, (jitter * period)^2)."""
    dur = n / SR
    t0 = rng.uniform(0.0, min(period, 0.25 * dur))
    k = np.arange(int((dur - t0) / period) + 1)
    t = t0 + period * (k + jitter * rng.standard_normal(len(k)))
    t = t[(t >= 0) & (t < dur - 0.01)]
    return (np.sort(t if len(t) else np.array([t0])) * SR).astype(np.int64)


def _smooth_noise(rng: np.random.Generator, m: int, corr: float) -> np.ndarray:
    """(m,) zero-mean, unit-std random curve, smooth over about ``corr`` steps."""
    a = np.exp(-1.0 / max(corr, 1.0))
    warm = int(3 * corr)
    y = lfilter([1 - a], [1, -a], rng.standard_normal(m + warm))[warm:]
    y = y - y.mean()
    return y / (y.std() + 1e-12)


_HOP, _NFFT = 512, 1024  # grid of the time-varying noise shaper (11.6 ms hop)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame times (s) and bin frequencies (Hz) of :func:`_shaped_noise` for a clip of n samples."""
    return np.arange(n // _HOP + 2) * _HOP / SR, np.fft.rfftfreq(_NFFT, 1.0 / SR)


def _shaped_noise(rng: np.random.Generator, n: int, gain: np.ndarray) -> np.ndarray:
    """Noise whose spectrum follows ``gain`` (frames x bins of :func:`_grid`, or bins): random spectra,
    inverse FFT, overlap-add with a square-root Hann window (constant power for a flat gain)."""
    times, freqs = _grid(n)
    gain = np.broadcast_to(gain, (len(times), len(freqs)))
    spec = (rng.standard_normal(gain.shape) + 1j * rng.standard_normal(gain.shape)) * gain
    chunks = np.fft.irfft(spec, _NFFT) * np.sqrt(np.hanning(_NFFT + 1)[:-1])
    m = len(times)
    out = np.zeros((m + 1) * _HOP)
    out[: m * _HOP].reshape(m, _HOP)[:] += chunks[:, :_HOP]
    out[_HOP : (m + 1) * _HOP].reshape(m, _HOP)[:] += chunks[:, _HOP:]
    return out[_HOP : _HOP + n]  # frame j is centred on sample j * _HOP


def _glide(rng: np.random.Generator, n: int, f_start: float, f_end: float, vibrato: float, vib_hz: float) -> np.ndarray:
    """Phase (radians, (n,)) of a tone gliding exponentially from f_start to f_end Hz, with vibrato (relative depth)."""
    x = np.linspace(0.0, 1.0, n)
    f = f_start * (f_end / f_start) ** x * (1 + vibrato * np.sin(2 * np.pi * vib_hz * x * n / SR + rng.uniform(0, 6.3)))
    return 2 * np.pi * np.cumsum(f) / SR


def _add(out: np.ndarray, x: np.ndarray, start: int) -> None:
    """Add ``x`` into ``out`` from sample ``start`` on, cut at the end of ``out``."""
    m = min(len(x), len(out) - start)
    if m > 0:
        out[start : start + m] += x[:m]
