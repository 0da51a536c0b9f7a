"""The course dataset: a procedural stand-in for FSDnoisy18k, written in FSDnoisy18k's exact layout.

FSDnoisy18k (SPEC section 2) cannot be downloaded everywhere, so the course can make its own:
the same 20 classes, each with a small sound recipe written in NumPy, mixed over background
noise at a random SNR, split and labelled like FSDnoisy18k (a small clean train subset, a
large train subset with structured label noise, a clean test set) and stored exactly as
FSDnoisy18k is, so one loading code path serves both::

    root/FSDnoisy18k.audio_train/<id>.wav        44.1 kHz, 16-bit PCM, mono
    root/FSDnoisy18k.audio_test/<id>.wav
    root/FSDnoisy18k.meta/train.csv              fname,label,aso_id,manually_verified,noisy_small
    root/FSDnoisy18k.meta/test.csv               fname,label,aso_id
    root/FSDnoisy18k.meta/course_truth.csv       fname,true_label,label_state   (course only; every clip)
    root/FSDnoisy18k.meta/course_manifest.json   preset, seed, rates, library version

Label noise of the noisy subset: a share ``wrong_rate`` of its labels name another class than
the one that sounds, and a share ``incomplete_rate`` name the class that sounds while another
class's event is mixed in. Both draw the other class mostly among the label's confusable
neighbours (:data:`CONFUSABLE_PAIRS`), as web labels do. :func:`plan_dataset` gives every clip's
truth without audio (including the mixed-in class of incomplete labels); :func:`synthesize` one
clean event of a class, to listen to a recipe.

The audio of clip ``i`` depends only on ``(seed, i)`` (and its row of the plan), so an
interrupted :func:`generate` resumes to byte-identical files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, lfilter, sosfilt
from tqdm.auto import tqdm

from . import __version__
from .data import CLASSES
from .runtime import PAPER_SEED, write_atomic

#: Sample rate of every clip, Hz (FSDnoisy18k's).
SAMPLE_RATE = 44_100
SR = SAMPLE_RATE

#: AudioSet ontology ids of the 20 FSDnoisy18k classes (the ``aso_id`` column).
ASO_IDS: dict[str, str] = {
    "Acoustic_guitar": "/m/042v_gx",
    "Bass_guitar": "/m/018vs",
    "Clapping": "/m/0l15bq",
    "Coin_(dropping)": "/m/0242l",
    "Crash_cymbal": "/m/0bm0k",
    "Dishes_and_pots_and_pans": "/m/04brg2",
    "Engine": "/m/02mk9",
    "Fart": "/m/02_nn",
    "Fire": "/m/02_41",
    "Fireworks": "/m/0g6b5",
    "Glass": "/m/039jq",
    "Hi-hat": "/m/03qtq",
    "Piano": "/m/05r5c",
    "Rain": "/m/06mb1",
    "Slam": "/m/07rjzl8",
    "Squeak": "/m/07q6cd_",
    "Tearing": "/m/07qcx4z",
    "Walk_or_footsteps": "/m/07pbtc8",
    "Wind": "/m/03m9d0z",
    "Writing": "/m/081rb",
}

if sorted(ASO_IDS) != CLASSES:
    raise ImportError("coursedata.ASO_IDS must name exactly FSDnoisy18k's 20 classes (uclser_lib.data.CLASSES)")

#: Pairs of classes that sound alike (shared recipe family or overlapping spectra). Label noise
#: goes mostly to these neighbours; every class has at least one.
CONFUSABLE_PAIRS: tuple[tuple[str, str], ...] = (
    ("Acoustic_guitar", "Bass_guitar"),
    ("Acoustic_guitar", "Piano"),
    ("Crash_cymbal", "Hi-hat"),
    ("Rain", "Fire"),
    ("Fire", "Fireworks"),
    ("Wind", "Engine"),
    ("Coin_(dropping)", "Glass"),
    ("Glass", "Dishes_and_pots_and_pans"),
    ("Slam", "Walk_or_footsteps"),
    ("Clapping", "Walk_or_footsteps"),
    ("Tearing", "Writing"),
    ("Squeak", "Fart"),
)

#: Each class's confusable neighbours, from :data:`CONFUSABLE_PAIRS`.
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    c: tuple(sorted({b for a, b in CONFUSABLE_PAIRS if a == c} | {a for a, b in CONFUSABLE_PAIRS if b == c}))
    for c in CLASSES
}

#: Share of corrupted labels whose other class is a confusable neighbour (the rest: any other class).
NEIGHBOUR_SHARE = 0.8
#: Default label-noise rates of the noisy subset, close to FSDnoisy18k's (~60% wrong or incomplete).
WRONG_RATE = 0.4
INCOMPLETE_RATE = 0.2
#: Event-to-background ratio, dB (uniform), and the mixed-in event's level for incomplete labels, dB.
SNR_DB = (3.0, 30.0)
MIXED_IN_DB = (-8.0, 0.0)

AUDIO_DIRS = {"train": "FSDnoisy18k.audio_train", "test": "FSDnoisy18k.audio_test"}
META_DIR = "FSDnoisy18k.meta"
TRAIN_HEADER = ("fname", "label", "aso_id", "manually_verified", "noisy_small")
TEST_HEADER = ("fname", "label", "aso_id")
TRUTH_HEADER = ("fname", "true_label", "label_state")
MANIFEST = "course_manifest.json"

_PLAN_STREAM, _AUDIO_STREAM = 0, 1  # seed streams: np.random.default_rng([seed, stream, ...])
_LONG_CLIP_S = 8.0  # long clips are log-uniform in [_LONG_CLIP_S, max_seconds]


# ---------------------------------------------------------------------------------------------
# Signal helpers. Every length is in samples at SR, every time constant in seconds.
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Recipes: recipe(rng, n) -> (n,) float64 clean event(s) filling a clip of n samples. One small
# function per family; families serve several classes through their parameters.
# ---------------------------------------------------------------------------------------------


def _karplus_strong(rng: np.random.Generator, f0: float, length: int, t60: float, brightness: float) -> np.ndarray:
    """One plucked note: a noise burst in a feedback delay line of one period with a two-point average."""
    period = max(2, int(round(SR / f0)))
    loss = 10 ** (-3.0 / (f0 * t60))  # per period, so the fundamental is down 60 dB after t60 s
    burst = lfilter([brightness], [1.0, brightness - 1.0], rng.standard_normal(period))  # pick hardness
    burst -= np.roll(burst, int(period * rng.uniform(0.1, 0.4)))  # pluck position
    buf = np.zeros(length + 1)  # buf[0] is the sample before the note
    m = min(period, length)
    buf[1 : m + 1] = burst[:m]
    for s in range(period + 1, length + 1, period):  # one period per step, reading only earlier samples
        e = min(s + period, length + 1)
        buf[s:e] = loss * 0.5 * (buf[s - period : e - period] + buf[s - period - 1 : e - period - 1])
    return buf[1:]


def plucked_string(rng, n, *, f0_hz, t60_s, brightness, strum_prob) -> np.ndarray:
    """Plucked strings (Karplus-Strong): single notes or strummed triads, 0.7-4 notes/s."""
    out = np.zeros(n)
    t60, bright = rng.uniform(*t60_s), rng.uniform(*brightness)
    for start in _onsets(rng, n, rng.uniform(0.7, 4.0)):
        f0 = _log_uniform(rng, *f0_hz)
        chord = [1.0, 2 ** (rng.choice([3, 4]) / 12), 2 ** (7 / 12), 2.0] if rng.random() < strum_prob else [1.0]
        gap = rng.uniform(0.008, 0.04)  # strum: seconds between strings
        for k, ratio in enumerate(chord):
            s = start + _n(k * gap)
            length = min(n - s, _n(1.2 * t60))
            if length > 0:
                out[s : s + length] += rng.uniform(0.5, 1.0) * _karplus_strong(rng, f0 * ratio, length, t60, bright)
    return out


def piano(rng, n) -> np.ndarray:
    """Piano: notes and chords of stretched (inharmonic) partials, each from two detuned strings, one
    decaying 3x slower (beats and a two-stage decay); louder notes are brighter (shorter hammer contact)."""
    out = np.zeros(n)
    b = _log_uniform(rng, 5e-5, 4e-4)  # inharmonicity: f_k = k f0 sqrt(1 + b k^2)
    for start in _onsets(rng, n, rng.uniform(0.8, 4.0)):
        root = rng.integers(28, 97)  # MIDI note, 41 Hz - 2.1 kHz
        notes = [root] if rng.random() < 0.6 else [root, root + rng.choice([3, 4]), root + 7]
        velocity = rng.uniform(0.3, 1.0)
        length = min(n - start, _n(rng.uniform(0.6, 2.0)))
        hammer = _soften(_impulses(length, [0], 1.0), 0.004 - 0.003 * velocity)
        for m in notes:
            f0 = 440.0 * 2 ** ((m - 69) / 12)
            k = np.arange(1, 13)
            f = k * f0 * np.sqrt(1 + b * k**2)
            k, f = k[f < 9000], f[f < 9000]
            amp = k ** -rng.uniform(1.6 - velocity, 2.2 - velocity)
            tau = np.clip(2.5 * np.sqrt(262 / f0), 0.3, 6.0) / k**0.6
            detune = 1 + rng.uniform(3e-4, 1.5e-3)
            note = _modes(hammer, np.r_[f, f * detune], np.r_[tau, 3 * tau], np.r_[0.7 * amp, 0.3 * amp])
            _add(out, velocity * note / len(notes), start)
        thump = _filter(rng.standard_normal(_n(0.02)) * np.exp(-np.arange(_n(0.02)) / _n(0.004)), "lowpass", 2500)
        _add(out, rng.uniform(0.02, 0.1) * velocity * thump, start)
    return out


def bouncing_coin(rng, n) -> np.ndarray:
    """Coin dropped: high inharmonic modes, bounces at geometrically shrinking intervals, sometimes a spin-down."""
    imp = np.zeros(n)
    for start in _onsets(rng, n, rng.uniform(0.2, 0.8)):
        t, gap, amp, ratio = start, rng.uniform(0.1, 0.3), 1.0, rng.uniform(0.55, 0.8)
        while gap > 0.006 and t < n:
            imp[t] += amp
            t, gap, amp = t + _n(gap), gap * ratio, amp * rng.uniform(0.55, 0.85)
        if rng.random() < 0.4:  # spinning on its rim: ever faster, softer taps
            spin = t + np.cumsum(_n(0.05) * np.geomspace(1.0, 0.1, rng.integers(10, 30))).astype(np.int64)
            imp += _impulses(n, spin, 0.2 * amp)
    base = _log_uniform(rng, 2200, 6500)
    freqs = base * np.array([1.0, rng.uniform(1.3, 1.7), rng.uniform(2.0, 2.6), rng.uniform(2.9, 3.8)])
    return _modes(imp, freqs, _log_uniform(rng, 0.05, 0.5, 4), rng.uniform(0.3, 1.0, 4))


def glass(rng, n) -> np.ndarray:
    """Glass: clinks of a ringing glass (few long high modes), or a shatter (many short shard modes + crash)."""
    if rng.random() < 0.65:
        imp = _impulses(n, starts := _onsets(rng, n, rng.uniform(0.8, 4.0)), rng.uniform(0.3, 1.0, len(starts)))
        freqs = _log_uniform(rng, 900, 4000) * np.array([1.0, rng.uniform(2.2, 2.9), rng.uniform(4.5, 5.6)])
        return _modes(_soften(imp, rng.uniform(1e-4, 6e-4)), freqs, _log_uniform(rng, 0.08, 0.8, 3), rng.uniform(0.3, 1.0, 3))
    start = _onsets(rng, n, 0.1)[0]
    shards = start + _n(1) * rng.exponential(rng.uniform(0.05, 0.25), rng.integers(30, 150))
    group = rng.integers(0, 4, len(shards))
    out = np.zeros(n)
    for g in range(4):  # four families of shard sizes
        imp = _impulses(n, shards[group == g].astype(np.int64), rng.uniform(0.1, 1.0, (group == g).sum()))
        out += _modes(imp, _log_uniform(rng, 2000, 12000, 2), _log_uniform(rng, 0.005, 0.04, 2), [1.0, 0.6])
    crash = _decay(_impulses(n, [start], 1.0), rng.uniform(0.05, 0.25)) * rng.standard_normal(n)
    return _unit(out) + rng.uniform(0.3, 1.0) * _unit(_filter(crash, "highpass", rng.uniform(1500, 4000)))


def clatter(rng, n) -> np.ndarray:
    """Dishes, pots and pans: 2-4 objects, each with its own modes, hit at random; sometimes a scrape."""
    out = np.zeros(n)
    for _ in range(rng.integers(2, 5)):
        imp = _impulses(n, starts := _onsets(rng, n, rng.uniform(1.5, 8.0)), rng.uniform(0.2, 1.0, len(starts)))
        freqs = _log_uniform(rng, 200, 2500) * np.array([1.0, rng.uniform(1.5, 2.5), rng.uniform(2.6, 4.5)])
        out += _modes(_soften(imp, rng.uniform(2e-4, 1e-3)), freqs, _log_uniform(rng, 0.04, 0.6, 3), rng.uniform(0.3, 1.0, 3))
    if rng.random() < 0.4:
        scrape = _filter(rng.standard_normal(n), "bandpass", (600, 5000)) * np.clip(_smooth_noise(rng, n, _n(0.1)), 0, None)
        out = _unit(out) + rng.uniform(0.1, 0.5) * _unit(scrape)
    return out


def slam(rng, n) -> np.ndarray:
    """Door slam: low panel modes, a cracking noise burst and a rattling latch."""
    starts = _onsets(rng, n, rng.uniform(0.1, 0.4))
    imp = _impulses(n, starts, rng.uniform(0.6, 1.0, len(starts)))
    panel = _modes(_soften(imp, rng.uniform(5e-4, 3e-3)), _log_uniform(rng, 45, 220, 3), _log_uniform(rng, 0.04, 0.2, 3), [1.0, 0.6, 0.4])
    crack = _filter(_decay(imp, rng.uniform(0.01, 0.04)) * rng.standard_normal(n), "lowpass", rng.uniform(1500, 6000))
    clicks = np.concatenate([s + _n(rng.uniform(0.01, 0.12, rng.integers(2, 6))) for s in starts])
    latch = _modes(_impulses(n, clicks, rng.uniform(0.2, 1.0, len(clicks))), _log_uniform(rng, 1500, 4000, 2), [0.01, 0.02], [1, 0.5])
    return _unit(panel) + rng.uniform(0.3, 1.0) * _unit(crack) + rng.uniform(0.05, 0.3) * _unit(latch)


def footsteps(rng, n) -> np.ndarray:
    """Footsteps: heel-toe pairs every 0.38-0.75 s (a low thud each), on a hard (click) or gravel (crunch) floor."""
    starts = _rhythm(rng, n, rng.uniform(0.38, 0.75), rng.uniform(0.02, 0.07))
    gain = np.linspace(rng.uniform(0.5, 1), rng.uniform(0.5, 1), len(starts)) * (1 + 0.1 * (-1) ** np.arange(len(starts)))
    heel = _impulses(n, starts, gain)
    steps = heel + rng.uniform(0.3, 0.7) * _impulses(n, starts + _n(rng.uniform(0.04, 0.11)), gain)  # + toe
    thud = _modes(_soften(steps, rng.uniform(5e-4, 3e-3)), _log_uniform(rng, 60, 250) * np.array([1.0, 2.3]),
                  _log_uniform(rng, 0.015, 0.06, 2), [1.0, 0.5])
    if rng.random() < 0.5:  # hard floor: a short broadband click
        texture = _filter(_decay(steps, rng.uniform(0.001, 0.004)) * rng.standard_normal(n), "highpass", rng.uniform(1500, 4000))
    else:  # gravel: a burst of grains after each step
        grains = np.concatenate([s + _n(rng.exponential(0.03, rng.integers(10, 40))) for s in starts])
        texture = _filter(_decay(_impulses(n, grains, 1.0), 5e-4) * rng.standard_normal(n), "bandpass", (1000, 6000))
    return rng.uniform(0.5, 1.2) * _unit(thud) + rng.uniform(0.3, 1.0) * _unit(texture)


def clapping(rng, n) -> np.ndarray:
    """Clapping: one person's regular claps, or an applause of 3-12 people; each clap a resonant noise burst."""
    people = 1 if rng.random() < 0.6 else int(rng.integers(3, 13))
    imp = np.zeros(n)
    for _ in range(people):
        period = rng.uniform(0.15, 0.5) if people == 1 else rng.uniform(0.12, 0.3)
        starts = _rhythm(rng, n, period, rng.uniform(0.01, 0.08))
        imp += _impulses(n, starts, rng.uniform(0.5, 1.0) * rng.uniform(0.7, 1.0, len(starts)))
    env = _decay(imp, rng.uniform(0.004, 0.015))
    noise = rng.standard_normal(n)
    fc = _log_uniform(rng, 700, 2500)  # cupped-hands resonance
    return env * (_unit(_filter(noise, "bandpass", (fc / 1.4, fc * 1.4))) + rng.uniform(0.2, 0.6) * noise)


_CYMBAL_RATIOS = np.array([1.0, 1.342, 1.2312, 1.6532, 1.9523, 2.1523])  # inharmonic square waves (TR-808 style)


def cymbal(rng, n, *, decay_s, highpass_hz, rhythmic) -> np.ndarray:
    """Cymbals: six inharmonic square waves plus noise, high-passed, struck with exponential decays;
    ``rhythmic``: hits on an eighth-note grid (80-170 BPM), else a few free hits."""
    t = np.arange(n) / SR
    base = _log_uniform(rng, 250, 600)
    metal = np.sign(np.sin(2 * np.pi * base * _CYMBAL_RATIOS[:, None] * t + rng.uniform(0, 6.3, (6, 1)))).sum(0)
    src = _filter(rng.uniform(0.3, 0.8) * _unit(metal) + rng.standard_normal(n), "highpass", _log_uniform(rng, *highpass_hz), order=4)
    starts = _rhythm(rng, n, 30.0 / rng.uniform(80, 170), 0.01) if rhythmic else _onsets(rng, n, rng.uniform(0.2, 0.8))
    return src * _decay(_impulses(n, starts, rng.uniform(0.4, 1.0, len(starts))), _log_uniform(rng, *decay_s))


def rain(rng, n) -> np.ndarray:
    """Rain: a broadband hiss and many drops (short band-passed clicks), 30-600 drops/s."""
    _, freqs = _grid(n)
    hiss = _shaped_noise(rng, n, (np.maximum(freqs, 20) / 1000) ** rng.uniform(-0.7, 0.1) * (1 - np.exp(-freqs / rng.uniform(200, 1500))))
    count = max(1, rng.poisson(rng.uniform(30, 600) * n / SR))
    imp = _impulses(n, rng.integers(0, n, count), rng.lognormal(0.0, 0.8, count))
    band = (_log_uniform(rng, 800, 2500), _log_uniform(rng, 5000, 14000))
    drops = _filter(_decay(imp, rng.uniform(0.002, 0.008)) * rng.standard_normal(n), "bandpass", band)
    return rng.uniform(0.3, 1.2) * _unit(hiss) + rng.uniform(0.3, 1.2) * _unit(drops)


def fire(rng, n) -> np.ndarray:
    """Fire: a flickering low roar, a faint hiss and crackles (sparse pops, heavy-tailed loudness)."""
    times, freqs = _grid(n)
    flicker = np.exp(0.5 * _smooth_noise(rng, len(times), rng.uniform(0.1, 0.5) * SR / _HOP))
    roar = _shaped_noise(rng, n, flicker[:, None] / (1 + (freqs / rng.uniform(150, 700)) ** 2))
    hiss = _filter(rng.standard_normal(n), "highpass", rng.uniform(2000, 5000))
    count = max(1, rng.poisson(rng.uniform(4, 60) * n / SR))
    imp = _impulses(n, rng.integers(0, n, count), np.minimum(rng.pareto(1.5, count) + 0.1, 20))
    pops = _filter(_decay(imp, rng.uniform(5e-4, 3e-3)) * rng.standard_normal(n), "highpass", rng.uniform(500, 2000))
    return rng.uniform(0.3, 1.2) * _unit(roar) + rng.uniform(0.05, 0.4) * _unit(hiss) + rng.uniform(0.5, 1.5) * _unit(pops)


def wind(rng, n) -> np.ndarray:
    """Wind: noise through a wandering band-pass (150 Hz - 2 kHz) with gusts, low rumble, sometimes a whistle."""
    times, freqs = _grid(n)
    fps = SR / _HOP
    lo, hi = np.log(_log_uniform(rng, 100, 300)), np.log(_log_uniform(rng, 500, 2000))
    centre = np.exp(lo + (hi - lo) / (1 + np.exp(-_smooth_noise(rng, len(times), rng.uniform(0.5, 3) * fps))))[:, None]
    gust = np.exp(rng.uniform(0.3, 1.2) * _smooth_noise(rng, len(times), rng.uniform(0.3, 2) * fps))[:, None]
    f = np.maximum(freqs, 10.0)
    gain = gust * (np.exp(-0.5 * (np.log(f / centre) / rng.uniform(0.4, 1.0)) ** 2) + rng.uniform(0.1, 0.6) * np.exp(-f / 80))
    if rng.random() < 0.35:
        gain = gain + rng.uniform(0.5, 2.0) * gust * np.exp(-0.5 * (np.log(f / (centre * rng.uniform(2, 4))) / 0.03) ** 2)
    return _shaped_noise(rng, n, gain)


def engine(rng, n) -> np.ndarray:
    """Engine: a firing pulse train (18-70 Hz, idling or revving, uneven cylinders) plus rumble amplitude-modulated by it."""
    x = np.linspace(0.0, 1.0, n)
    f = _log_uniform(rng, 18, 70) * (1 + rng.uniform(0.02, 0.1) * _smooth_noise(rng, n, _n(rng.uniform(0.2, 1.0))))
    if rng.random() < 0.3:  # revving
        f *= 1 + rng.uniform(0.5, 1.5) * x**2 * (3 - 2 * x)
    phase = 2 * np.pi * np.cumsum(f) / SR
    pulses = np.exp(rng.uniform(2, 12) * (np.cos(phase) - 1)) * (1 + rng.uniform(0, 0.3) * np.cos(phase / 2))
    harmonic = _filter(pulses - pulses.mean(), "lowpass", rng.uniform(300, 2500), order=4)
    rumble = _filter(rng.standard_normal(n), "lowpass", rng.uniform(150, 800), order=4) * (1 + rng.uniform(0.3, 0.9) * np.cos(phase))
    return _unit(harmonic) + _log_uniform(rng, 0.1, 3.0) * _unit(rumble)


def _strokes(rng, n, durations, gaps, shape: float) -> np.ndarray:
    """(n,) envelope of successive strokes, durations and gaps (s) drawn from the given ranges, sin^shape each."""
    env, t = np.zeros(n), rng.uniform(0, 0.1)
    while t < n / SR:
        s, length = _n(t), _n(rng.uniform(*durations))
        _add(env, rng.uniform(0.4, 1.0) * np.sin(np.pi * (np.arange(length) + 0.5) / length) ** shape, s)
        t += length / SR + rng.uniform(*gaps)
    return env


def writing(rng, n) -> np.ndarray:
    """Writing: pen strokes of band-passed scratch noise with a rough 15-70 Hz texture, short gaps."""
    env = _strokes(rng, n, (0.04, 0.35), (0.02, 0.3), 0.5)
    t = np.arange(n) / SR
    rough = 1 + rng.uniform(0.3, 0.9) * np.sin(2 * np.pi * rng.uniform(15, 70) * t + 2 * _smooth_noise(rng, n, _n(0.05)))
    noise = _filter(rng.standard_normal(n), "bandpass", (_log_uniform(rng, 800, 2500), _log_uniform(rng, 4000, 12000)))
    return noise * env * rough


def tearing(rng, n) -> np.ndarray:
    """Tearing (paper, cloth): strokes of band-passed noise chopped by dense micro-cracks (300-2000/s)."""
    env = _strokes(rng, n, (0.2, 1.5), (0.1, 1.0), 0.3)
    count = max(1, rng.poisson(rng.uniform(300, 2000) * n / SR))
    cracks = _decay(_impulses(n, rng.integers(0, n, count), rng.exponential(1.0, count)), rng.uniform(3e-4, 1.5e-3))
    noise = _filter(rng.standard_normal(n), "bandpass", (_log_uniform(rng, 300, 1500), _log_uniform(rng, 3000, 10000)))
    return noise * cracks * env


def squeak(rng, n) -> np.ndarray:
    """Squeak: short FM chirps (fundamental 300-2500 Hz gliding up to an octave, vibrato, 5 harmonics), sometimes stick-slip."""
    out = np.zeros(n)
    for start in _onsets(rng, n, rng.uniform(0.5, 3.0)):
        length = min(n - start, _n(rng.uniform(0.08, 0.7)))
        f0 = _log_uniform(rng, 300, 2500)
        phase = _glide(rng, length, f0, f0 * 2 ** rng.uniform(-1, 1), rng.uniform(0.0, 0.05), rng.uniform(5, 30))
        k = np.arange(1, 6)[:, None]
        wave = (k ** -rng.uniform(1.0, 2.5) * np.sin(k * phase)).sum(0)
        if rng.random() < 0.5:
            wave *= 1 + 0.6 * np.sign(np.sin(2 * np.pi * rng.uniform(30, 120) * np.arange(length) / SR))
        _add(out, wave * np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 0.5, start)
    return out


def fart(rng, n) -> np.ndarray:
    """Fart: a low buzzy pulse train (45-220 Hz) gliding and jittering, sputtering, with breath noise."""
    out = np.zeros(n)
    for start in _onsets(rng, n, rng.uniform(0.3, 1.2)):
        length = min(n - start, _n(rng.uniform(0.2, 1.5)))
        f0 = _log_uniform(rng, 45, 220)
        phase = _glide(rng, length, f0, f0 * 2 ** rng.uniform(-1, 0.3), rng.uniform(0.02, 0.1), rng.uniform(3, 15))
        buzz = np.exp(rng.uniform(4, 25) * (np.cos(phase) - 1))
        breath = rng.uniform(0.1, 0.4) * _unit(_filter(rng.standard_normal(length), "lowpass", 1500))
        sputter = 1 / (1 + np.exp(-4 * _smooth_noise(rng, length, _n(rng.uniform(0.02, 0.1))) - rng.uniform(0, 3)))
        event = _filter(_unit(buzz - buzz.mean()) + breath, "lowpass", rng.uniform(600, 3000)) * sputter
        _add(out, event * np.minimum(1.0, np.arange(length)[::-1] / _n(0.03)), start)
    return out


def fireworks(rng, n) -> np.ndarray:
    """Fireworks: bursts, each a low boom with a bang, often a crackle after it and sometimes a launch whistle before."""
    out = np.zeros(n)
    for start in _onsets(rng, n, rng.uniform(0.3, 1.2)):
        if rng.random() < 0.25:  # launch whistle
            length = min(n - start, _n(rng.uniform(0.3, 0.9)))
            f0 = _log_uniform(rng, 600, 1200)
            whistle = np.sin(_glide(rng, length, f0, f0 * rng.uniform(2, 3), 0.01, 8)) + 0.3 * rng.standard_normal(length)
            _add(out, 0.3 * whistle, start)
            start += length
        if start >= n:
            continue
        length = min(n - start, _n(rng.uniform(0.4, 1.2)))
        t = np.arange(length) / SR
        boom = _filter(rng.standard_normal(length) * np.exp(-t / rng.uniform(0.1, 0.5)), "lowpass", _log_uniform(rng, 120, 600))
        bang = _filter(rng.standard_normal(length) * np.exp(-t / 0.005), "highpass", 500)
        _add(out, _unit(boom) + rng.uniform(0.3, 1.0) * _unit(bang), start)
        if rng.random() < 0.7:  # crackle: denser at first
            span = rng.uniform(0.3, 1.5)
            m = _n(span + 0.45)
            cracks = _n(rng.uniform(0.05, 0.4) + span * rng.beta(1, 2, int(rng.uniform(80, 400) * span)))
            crackle = _decay(_impulses(m, cracks, rng.uniform(0.2, 1.0, len(cracks))), rng.uniform(5e-4, 2e-3))
            _add(out, rng.uniform(0.1, 0.5) * _filter(crackle * rng.standard_normal(m), "highpass", 1000), start)
    return out


#: Class -> recipe(rng, n). Families shared by confusable classes differ only in their parameter ranges.
RECIPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "Acoustic_guitar": partial(plucked_string, f0_hz=(82, 660), t60_s=(0.8, 3.0), brightness=(0.35, 0.9), strum_prob=0.5),
    "Bass_guitar": partial(plucked_string, f0_hz=(41, 200), t60_s=(1.5, 5.0), brightness=(0.1, 0.45), strum_prob=0.05),
    "Clapping": clapping,
    "Coin_(dropping)": bouncing_coin,
    "Crash_cymbal": partial(cymbal, decay_s=(0.4, 2.5), highpass_hz=(400, 3000), rhythmic=False),
    "Dishes_and_pots_and_pans": clatter,
    "Engine": engine,
    "Fart": fart,
    "Fire": fire,
    "Fireworks": fireworks,
    "Glass": glass,
    "Hi-hat": partial(cymbal, decay_s=(0.025, 0.5), highpass_hz=(3000, 9000), rhythmic=True),
    "Piano": piano,
    "Rain": rain,
    "Slam": slam,
    "Squeak": squeak,
    "Tearing": tearing,
    "Walk_or_footsteps": footsteps,
    "Wind": wind,
    "Writing": writing,
}


def _active_power(x: np.ndarray, frame: int = 2048) -> float:
    """Mean power over the frames within 10 dB of the loudest one (the event while it sounds)."""
    m = max(1, len(x) // frame)
    p = np.array([np.mean(c**2) for c in np.array_split(x, m)])
    return float(p[p >= 0.1 * p.max()].mean())


def _event(label: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) clean event(s) of ``label``, scaled to unit active power."""
    x = RECIPES[label](rng, n)
    power = _active_power(x)
    if not (np.isfinite(power) and power > 0):
        raise RuntimeError(f"recipe of {label!r} produced a silent or non-finite clip of {n} samples")
    return x / np.sqrt(power)


def synthesize(label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One clean clip of ``label`` (no background): (round(seconds * 44100),) float32, peak 1."""
    if label not in RECIPES:
        raise ValueError(f"unknown label {label!r}; expected one of {CLASSES}")
    if not 0.01 <= seconds <= 600:
        raise ValueError(f"seconds = {seconds!r}: expected a duration between 0.01 and 600 s")
    x = _event(label, rng, _n(seconds))
    return (x / np.abs(x).max()).astype(np.float32)


def _room(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Half of the clips get a small room: an exponentially decaying noise reverb (RT60 0.15-0.8 s)."""
    if rng.random() < 0.5:
        return x
    rt60 = rng.uniform(0.15, 0.8)
    t = np.arange(_n(rt60)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    return x + rng.uniform(0.1, 0.5) * fftconvolve(x, ir / np.sqrt(np.sum(ir**2)))[: len(x)]


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) unit-RMS background: coloured noise (1/f^alpha, alpha 0-2), with mains hum in 30% of clips."""
    spec = np.fft.rfft(rng.standard_normal(n)) * np.maximum(np.fft.rfftfreq(n, 1.0 / SR), 20.0) ** (-rng.uniform(0, 2) / 2)
    noise = _unit(np.fft.irfft(spec, n))
    if rng.random() < 0.3:
        t = np.arange(n) / SR
        k = np.arange(1, 7)[:, None]
        hum = (rng.uniform(0, 1, (6, 1)) / k * np.sin(2 * np.pi * rng.choice([50, 60]) * k * t + rng.uniform(0, 6.3, (6, 1)))).sum(0)
        noise = _unit(noise + rng.uniform(0.3, 2.0) * _unit(hum))
    return noise


# ---------------------------------------------------------------------------------------------
# Presets and the plan: which clips, which labels, which lengths.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoursePreset:
    """Size of a generated dataset. Clips per class are means over classes (see ``imbalance``).
    Clip lengths: min_seconds + a log-normal (median ``median_seconds`` overall, spread ``length_sigma``),
    a share ``long_fraction`` log-uniform in [8 s, max_seconds]; all at most max_seconds."""

    clean_per_class: float  # train, manually_verified = 1
    noisy_per_class: float  # train, manually_verified = 0
    test_per_class: float
    imbalance: float = 1.0  # clips of the most / least frequent class (1 = balanced)
    median_seconds: float = 0.6
    length_sigma: float = 0.8
    long_fraction: float = 0.0
    min_seconds: float = 0.3
    max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if min(self.clean_per_class, self.noisy_per_class, self.test_per_class) < 1:
            raise ValueError(f"{self}: every split needs at least one clip per class")
        if self.imbalance < 1:
            raise ValueError(f"imbalance = {self.imbalance}: expected >= 1 (most / least frequent class)")
        if not 0 < self.min_seconds < self.median_seconds <= self.max_seconds:
            raise ValueError(f"{self}: expected 0 < min_seconds < median_seconds <= max_seconds")
        if not 0 <= self.long_fraction <= 1 or (self.long_fraction > 0 and self.max_seconds <= _LONG_CLIP_S):
            raise ValueError(f"{self}: long_fraction must be in [0, 1], and > 0 only with max_seconds > {_LONG_CLIP_S}")


#: ``tiny``: CI and smoke runs (160 clips of 0.3-3 s, seconds to make). ``course``: the default, 2,200 clips,
#: 37 min, about 190 MB: clean train = 10% of the 1,800 train clips, 400 test clips, classes 3x imbalanced.
PRESETS: dict[str, CoursePreset] = {
    "tiny": CoursePreset(2, 4, 2, imbalance=1.0, median_seconds=0.8, length_sigma=0.6, max_seconds=3.0),
    "course": CoursePreset(9, 81, 20, imbalance=3.0, median_seconds=0.68, length_sigma=0.9, long_fraction=0.008),
}


@dataclass(frozen=True)
class ClipPlan:
    """One clip of the dataset: where it goes, what its CSVs say and what it really holds."""

    index: int  # its audio depends only on (seed, index)
    fname: str  # "<id>.wav"
    split: str  # "train" or "test"
    label: str  # the label written in the CSV
    true_label: str  # the class that sounds (the main event)
    label_state: str  # "clean", "wrong" (label != true_label) or "incomplete" (mixed_label also sounds)
    mixed_label: str | None
    manually_verified: bool  # train.csv's flags (False for test clips)
    noisy_small: bool
    n_samples: int

    @property
    def seconds(self) -> float:
        return self.n_samples / SR


def _resolve_preset(preset) -> tuple[str, CoursePreset]:
    if isinstance(preset, CoursePreset):
        return "custom", preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)} or a CoursePreset")
    return preset, PRESETS[preset]


def _rates(wrong_rate, incomplete_rate) -> tuple[float, float]:
    wrong = WRONG_RATE if wrong_rate is None else float(wrong_rate)
    incomplete = INCOMPLETE_RATE if incomplete_rate is None else float(incomplete_rate)
    if not (0 <= wrong <= 1 and 0 <= incomplete <= 1 and wrong + incomplete <= 1):
        raise ValueError(f"wrong_rate = {wrong}, incomplete_rate = {incomplete}: expected two shares in [0, 1] summing to <= 1")
    return wrong, incomplete


def _confuser(rng: np.random.Generator, label: str) -> str:
    """Another class for ``label``'s noisy label: a neighbour with probability NEIGHBOUR_SHARE, else any other."""
    near = NEIGHBOURS[label]
    pool = near if rng.random() < NEIGHBOUR_SHARE else [c for c in CLASSES if c != label and c not in near]
    return pool[rng.integers(len(pool))]


def _clip_samples(rng: np.random.Generator, cfg: CoursePreset, count: int) -> np.ndarray:
    seconds = cfg.min_seconds + (cfg.median_seconds - cfg.min_seconds) * np.exp(cfg.length_sigma * rng.standard_normal(count))
    long = rng.random(count) < cfg.long_fraction
    if long.any():
        seconds[long] = _log_uniform(rng, _LONG_CLIP_S, cfg.max_seconds, long.sum())
    return np.round(np.clip(seconds, cfg.min_seconds, cfg.max_seconds) * SR).astype(np.int64)


def plan_dataset(preset="course", seed: int = PAPER_SEED, wrong_rate=None, incomplete_rate=None) -> list[ClipPlan]:
    """The clips :func:`generate` writes (train clips sorted by id, then test clips), without any audio."""
    _, cfg = _resolve_preset(preset)
    wrong, incomplete = _rates(wrong_rate, incomplete_rate)
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    weights = cfg.imbalance ** rng.permutation(np.linspace(0.0, 1.0, len(CLASSES)))
    weights /= weights.mean()
    split, label, verified = [], [], []
    for name, per_class, clean in (("train", cfg.clean_per_class, True), ("train", cfg.noisy_per_class, False),
                                   ("test", cfg.test_per_class, True)):
        for c, k in zip(CLASSES, np.maximum(1, np.round(per_class * weights)).astype(int)):
            split += [name] * k
            label += [c] * k
            verified += [clean] * k
    count = len(label)
    samples = _clip_samples(rng, cfg, count)

    noisy = rng.permutation([i for i in range(count) if not verified[i]])
    n_wrong, n_incomplete = round(wrong * len(noisy)), round(incomplete * len(noisy))
    state, true, mixed = ["clean"] * count, list(label), [None] * count
    for i in noisy[:n_wrong]:
        state[i], true[i] = "wrong", _confuser(rng, label[i])
    for i in noisy[n_wrong : n_wrong + n_incomplete]:
        state[i], mixed[i] = "incomplete", _confuser(rng, label[i])

    # noisy_small: per class, the prefix of a random order of its noisy clips whose duration is closest to its clean clips'
    small = np.zeros(count, dtype=bool)
    for c in CLASSES:
        target = sum(samples[i] for i in range(count) if label[i] == c and split[i] == "train" and verified[i])
        pool = rng.permutation([i for i in range(count) if label[i] == c and not verified[i]])
        small[pool[: int(np.argmin(np.abs(np.cumsum(samples[pool]) - target))) + 1]] = True

    ids = rng.choice(999_999, size=count, replace=False) + 1
    order = sorted(range(count), key=lambda i: (split[i] != "train", ids[i]))
    return [
        ClipPlan(k, f"{ids[i]}.wav", split[i], label[i], true[i], state[i], mixed[i], verified[i] and split[i] == "train",
                 bool(small[i]), int(samples[i]))
        for k, i in enumerate(order)
    ]


# ---------------------------------------------------------------------------------------------
# Rendering and writing.
# ---------------------------------------------------------------------------------------------


def render_clip(clip: ClipPlan, seed: int) -> np.ndarray:
    """The audio of one planned clip: (clip.n_samples,) float32, peak 0.2-0.9, drawn from default_rng([seed, 1, index])."""
    rng = np.random.default_rng([seed, _AUDIO_STREAM, clip.index])
    n = clip.n_samples
    x = _event(clip.true_label, rng, n)
    if clip.mixed_label is not None:
        x += 10 ** (rng.uniform(*MIXED_IN_DB) / 20) * _event(clip.mixed_label, rng, n)
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
    """Render one clip and write it atomically (temporary name in the same folder, then os.replace)."""
    clip, seed, folder = job
    path = Path(folder) / clip.fname
    part = path.with_name(f".{clip.fname}.{os.getpid()}.part")
    sf.write(str(part), render_clip(clip, seed), SR, subtype="PCM_16", format="WAV")
    os.replace(part, path)


def _csv_text(header, rows) -> str:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def _claim(root: Path, manifest: dict) -> None:
    """Write the manifest in an empty root, or check that the one there asks for the same dataset."""
    path = root / META_DIR / MANIFEST
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored != manifest:
            diff = {k: (stored.get(k), manifest.get(k)) for k in sorted(set(stored) | set(manifest)) if stored.get(k) != manifest.get(k)}
            raise ValueError(
                f"{root} already holds a course dataset generated with other parameters "
                f"({', '.join(f'{k}: {a!r} there, {b!r} asked' for k, (a, b) in diff.items())}); "
                "use another root, or delete this one to regenerate"
            )
        return
    csvs = [root / META_DIR / "train.csv", root / META_DIR / "test.csv"]
    if any(p.exists() for p in csvs) or any(f for d in AUDIO_DIRS.values() for f in (root / d).glob("*.wav")):
        raise ValueError(f"{root} already holds audio or metadata without a {MANIFEST} (not made by generate?); use another root")
    (root / META_DIR).mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


def generate(root, preset="course", seed: int = PAPER_SEED, wrong_rate=None, incomplete_rate=None,
             progress: bool = True, workers: int | None = None) -> Path:
    """Generate (or finish generating) the course dataset ``preset`` under ``root``; return ``root``.

    Resumable: complete WAVs already there are kept, missing or damaged ones are (re)written, each
    atomically; the CSVs come last. ``workers`` processes render in parallel (default: the CPUs,
    at most 8); the files do not depend on it. Raises ``ValueError`` when ``root`` holds a dataset
    made with other parameters (see ``FSDnoisy18k.meta/course_manifest.json``) or not by this function.
    """
    name, cfg = _resolve_preset(preset)
    wrong, incomplete = _rates(wrong_rate, incomplete_rate)
    if workers is not None and workers < 1:
        raise ValueError(f"workers = {workers}: expected at least 1 process")
    clips = plan_dataset(cfg, seed, wrong, incomplete)
    root = Path(root).expanduser()
    manifest = {"preset": name, "config": dataclasses.asdict(cfg), "seed": int(seed), "wrong_rate": wrong,
                "incomplete_rate": incomplete, "uclser_lib": __version__}
    _claim(root, json.loads(json.dumps(manifest)))
    folders = {split: root / d for split, d in AUDIO_DIRS.items()}
    meta = root / META_DIR
    for folder in [*folders.values(), meta]:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.part"):  # temporary files left by an interrupted run
            stale.unlink()

    todo = [(c, int(seed), str(folders[c.split])) for c in clips if not _is_complete(folders[c.split] / c.fname, c.n_samples)]
    workers = min(workers or _default_workers(), max(1, len(todo)))
    with tqdm(total=len(clips), initial=len(clips) - len(todo), unit="clip", desc=f"course dataset {name!r}",
              disable=not progress) as bar:
        if workers == 1:
            for job in todo:
                _write_clip(job)
                bar.update()
        else:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for _ in pool.map(_write_clip, todo, chunksize=4):
                    bar.update()

    train = [c for c in clips if c.split == "train"]
    test = [c for c in clips if c.split == "test"]
    write_atomic(meta / "train.csv", _csv_text(TRAIN_HEADER, [
        (c.fname, c.label, ASO_IDS[c.label], int(c.manually_verified), int(c.noisy_small)) for c in train]))
    write_atomic(meta / "test.csv", _csv_text(TEST_HEADER, [(c.fname, c.label, ASO_IDS[c.label]) for c in test]))
    write_atomic(meta / "course_truth.csv", _csv_text(TRUTH_HEADER, [(c.fname, c.true_label, c.label_state) for c in clips]))
    return root


# ---------------------------------------------------------------------------------------------
# The truth behind the labels, and relabelling at another noise rate


def read_truth(root) -> dict[str, tuple[str, str]]:
    """``{fname: (true_label, label_state)}`` from ``course_truth.csv``; empty for a dataset that has none (FSDnoisy18k)."""
    path = Path(root) / "FSDnoisy18k.meta" / "course_truth.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != TRUTH_HEADER:
            raise ValueError(f"{path}: header {reader.fieldnames}, expected {list(TRUTH_HEADER)}")
        return {row["fname"]: (row["true_label"], row["label_state"]) for row in reader}


def relabel(true_labels: list[str], wrong_rate: float, seed: int = PAPER_SEED) -> list[str]:
    """Noisy labels for clips whose true classes are ``true_labels``: exactly round(wrong_rate * N) of them, chosen at
    random, get another class (a confusable neighbour with probability NEIGHBOUR_SHARE, as the generator does)."""
    if not 0 <= wrong_rate <= 1:
        raise ValueError(f"wrong_rate must lie in [0, 1], got {wrong_rate}")
    rng = np.random.default_rng([seed, 2])
    out = list(true_labels)
    for i in rng.permutation(len(out))[: int(round(wrong_rate * len(out)))]:
        out[i] = _confuser(rng, out[i])
    return out
