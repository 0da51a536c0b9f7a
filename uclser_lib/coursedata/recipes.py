"""The 20 sound recipes: ``recipe(rng, n) -> (n,) float64`` clean event(s) filling a clip of n samples."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from scipy.signal import fftconvolve, lfilter

from ..data import CLASSES
from .dsp import (
    _HOP,
    SR,
    _add,
    _decay,
    _filter,
    _glide,
    _grid,
    _impulses,
    _log_uniform,
    _modes,
    _n,
    _onsets,
    _rhythm,
    _shaped_noise,
    _smooth_noise,
    _soften,
    _unit,
)

__all__ = ["OOV_RECIPES", "RECIPES", "synthesize"]


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
    if rng.random() < 0.65 or n > _n(3.0):  # long clips: clinks (one shatter would leave most of the clip empty)
        imp = _impulses(n, starts := _onsets(rng, n, rng.uniform(0.8, 4.0)), rng.uniform(0.3, 1.0, len(starts)))
        freqs = _log_uniform(rng, 900, 4000) * np.array([1.0, rng.uniform(2.2, 2.9), rng.uniform(4.5, 5.6)])
        return _modes(
            _soften(imp, rng.uniform(1e-4, 6e-4)), freqs, _log_uniform(rng, 0.08, 0.8, 3), rng.uniform(0.3, 1.0, 3)
        )
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
        out += _modes(
            _soften(imp, rng.uniform(2e-4, 1e-3)), freqs, _log_uniform(rng, 0.04, 0.6, 3), rng.uniform(0.3, 1.0, 3)
        )
    if rng.random() < 0.4:
        scrape = _filter(rng.standard_normal(n), "bandpass", (600, 5000)) * np.clip(
            _smooth_noise(rng, n, _n(0.1)), 0, None
        )
        out = _unit(out) + rng.uniform(0.1, 0.5) * _unit(scrape)
    return out


def slam(rng, n) -> np.ndarray:
    """Door slam: low panel modes, a cracking noise burst and a rattling latch."""
    starts = _onsets(rng, n, rng.uniform(0.3, 0.8))
    imp = _impulses(n, starts, rng.uniform(0.6, 1.0, len(starts)))
    panel = _modes(
        _soften(imp, rng.uniform(5e-4, 3e-3)),
        _log_uniform(rng, 45, 220, 3),
        _log_uniform(rng, 0.04, 0.2, 3),
        [1.0, 0.6, 0.4],
    )
    crack = _filter(_decay(imp, rng.uniform(0.01, 0.04)) * rng.standard_normal(n), "lowpass", rng.uniform(1500, 6000))
    clicks = np.concatenate([s + _n(rng.uniform(0.01, 0.12, rng.integers(2, 6))) for s in starts])
    latch = _modes(
        _impulses(n, clicks, rng.uniform(0.2, 1.0, len(clicks))),
        _log_uniform(rng, 1500, 4000, 2),
        [0.01, 0.02],
        [1, 0.5],
    )
    return _unit(panel) + rng.uniform(0.3, 1.0) * _unit(crack) + rng.uniform(0.05, 0.3) * _unit(latch)


def footsteps(rng, n) -> np.ndarray:
    """Footsteps: heel-toe pairs every 0.38-0.75 s (a low thud each), on a hard (click) or gravel (crunch) floor."""
    starts = _rhythm(rng, n, rng.uniform(0.38, 0.75), rng.uniform(0.02, 0.07))
    gain = np.linspace(rng.uniform(0.5, 1), rng.uniform(0.5, 1), len(starts)) * (
        1 + 0.1 * (-1) ** np.arange(len(starts))
    )
    heel = _impulses(n, starts, gain)
    steps = heel + rng.uniform(0.3, 0.7) * _impulses(n, starts + _n(rng.uniform(0.04, 0.11)), gain)  # + toe
    thud = _modes(
        _soften(steps, rng.uniform(5e-4, 3e-3)),
        _log_uniform(rng, 60, 250) * np.array([1.0, 2.3]),
        _log_uniform(rng, 0.015, 0.06, 2),
        [1.0, 0.5],
    )
    if rng.random() < 0.5:  # hard floor: a short broadband click
        texture = _filter(
            _decay(steps, rng.uniform(0.001, 0.004)) * rng.standard_normal(n), "highpass", rng.uniform(1500, 4000)
        )
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
    src = _filter(
        rng.uniform(0.3, 0.8) * _unit(metal) + rng.standard_normal(n),
        "highpass",
        _log_uniform(rng, *highpass_hz),
        order=4,
    )
    starts = _rhythm(rng, n, 30.0 / rng.uniform(80, 170), 0.01) if rhythmic else _onsets(rng, n, rng.uniform(0.2, 0.8))
    return src * _decay(_impulses(n, starts, rng.uniform(0.4, 1.0, len(starts))), _log_uniform(rng, *decay_s))


def rain(rng, n) -> np.ndarray:
    """Rain: a broadband hiss and many drops (short band-passed clicks), 30-600 drops/s."""
    _, freqs = _grid(n)
    hiss = _shaped_noise(
        rng, n, (np.maximum(freqs, 20) / 1000) ** rng.uniform(-0.7, 0.1) * (1 - np.exp(-freqs / rng.uniform(200, 1500)))
    )
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
    return (
        rng.uniform(0.3, 1.2) * _unit(roar) + rng.uniform(0.05, 0.4) * _unit(hiss) + rng.uniform(0.5, 1.5) * _unit(pops)
    )


def wind(rng, n) -> np.ndarray:
    """Wind: noise through a wandering band-pass (150 Hz - 2 kHz) with gusts, low rumble, sometimes a whistle."""
    times, freqs = _grid(n)
    fps = SR / _HOP
    lo, hi = np.log(_log_uniform(rng, 100, 300)), np.log(_log_uniform(rng, 500, 2000))
    centre = np.exp(lo + (hi - lo) / (1 + np.exp(-_smooth_noise(rng, len(times), rng.uniform(0.5, 3) * fps))))[:, None]
    gust = np.exp(rng.uniform(0.3, 1.2) * _smooth_noise(rng, len(times), rng.uniform(0.3, 2) * fps))[:, None]
    f = np.maximum(freqs, 10.0)
    gain = gust * (
        np.exp(-0.5 * (np.log(f / centre) / rng.uniform(0.4, 1.0)) ** 2) + rng.uniform(0.1, 0.6) * np.exp(-f / 80)
    )
    if rng.random() < 0.35:
        gain = gain + rng.uniform(0.5, 2.0) * gust * np.exp(
            -0.5 * (np.log(f / (centre * rng.uniform(2, 4))) / 0.03) ** 2
        )
    return _shaped_noise(rng, n, gain)


def engine(rng, n) -> np.ndarray:
    """Engine: a firing pulse train (18-70 Hz, idling or revving, uneven cylinders).

    Plus a rumble amplitude-modulated by the pulse train.
    """
    x = np.linspace(0.0, 1.0, n)
    f = _log_uniform(rng, 18, 70) * (1 + rng.uniform(0.02, 0.1) * _smooth_noise(rng, n, _n(rng.uniform(0.2, 1.0))))
    if rng.random() < 0.3:  # revving
        f *= 1 + rng.uniform(0.5, 1.5) * x**2 * (3 - 2 * x)
    phase = 2 * np.pi * np.cumsum(f) / SR
    pulses = np.exp(rng.uniform(2, 12) * (np.cos(phase) - 1)) * (1 + rng.uniform(0, 0.3) * np.cos(phase / 2))
    harmonic = _filter(pulses - pulses.mean(), "lowpass", rng.uniform(300, 2500), order=4)
    rumble = _filter(rng.standard_normal(n), "lowpass", rng.uniform(150, 800), order=4) * (
        1 + rng.uniform(0.3, 0.9) * np.cos(phase)
    )
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
    rough = 1 + rng.uniform(0.3, 0.9) * np.sin(
        2 * np.pi * rng.uniform(15, 70) * t + 2 * _smooth_noise(rng, n, _n(0.05))
    )
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
    """Squeak: short FM chirps, sometimes stick-slip.

    Each chirp: fundamental 300-2500 Hz gliding up to an octave, vibrato, 5 harmonics.
    """
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
    """Fireworks: bursts, each a low boom with a bang.

    Often a crackle follows a burst, and sometimes a launch whistle precedes it.
    """
    out = np.zeros(n)
    for start in _onsets(rng, n, rng.uniform(0.3, 1.2)):
        if rng.random() < 0.25:  # launch whistle
            length = min(n - start, _n(rng.uniform(0.3, 0.9)))
            f0 = _log_uniform(rng, 600, 1200)
            whistle = np.sin(_glide(rng, length, f0, f0 * rng.uniform(2, 3), 0.01, 8)) + 0.3 * rng.standard_normal(
                length
            )
            _add(out, 0.3 * whistle, start)
            start += length
        if start >= n:
            continue
        length = min(n - start, _n(rng.uniform(0.4, 1.2)))
        t = np.arange(length) / SR
        boom = _filter(
            rng.standard_normal(length) * np.exp(-t / rng.uniform(0.1, 0.5)), "lowpass", _log_uniform(rng, 120, 600)
        )
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
    "Acoustic_guitar": partial(
        plucked_string, f0_hz=(82, 660), t60_s=(0.8, 3.0), brightness=(0.35, 0.9), strum_prob=0.5
    ),
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


# ---------------------------------------------------------------------------------------------
# Out-of-vocabulary sounds: none of the 20 classes. FSDnoisy18k's noisy labels often name one of its classes
# for a clip whose sound is of none of them; the course's noisy subset has such clips too.


def siren(rng, n) -> np.ndarray:
    """Siren: a tone (few harmonics) gliding up and down periodically (wail) or switching between two pitches."""
    t = np.arange(n) / SR
    lo, hi = _log_uniform(rng, 500, 900), _log_uniform(rng, 1000, 1800)
    rate = rng.uniform(0.2, 2.0)
    if rng.random() < 0.5:
        f = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * rate * t))
    else:
        f = np.where((t * rate * 2) % 2 < 1, lo, hi)
    phase = 2 * np.pi * np.cumsum(f) / SR
    return sum(k**-1.5 * np.sin(k * phase) for k in range(1, 5))


def birdsong(rng, n) -> np.ndarray:
    """Birdsong: trills of short fast chirps (rising or falling sweeps, 2-8 kHz)."""
    out = np.zeros(n)
    for start in _onsets(rng, n, rng.uniform(0.5, 2.0)):
        f_a, f_b = _log_uniform(rng, 2000, 8000, 2)
        length = _n(rng.uniform(0.02, 0.12))
        t = np.arange(length) / SR
        f = np.linspace(f_a, f_b, length)
        chirp = np.sin(2 * np.pi * np.cumsum(f) / SR) * np.sin(np.pi * t / t[-1]) ** 2
        for r in range(int(rng.integers(1, 8))):  # a trill repeats the chirp
            _add(out, chirp * rng.uniform(0.5, 1.0), start + r * int(length * rng.uniform(1.2, 2.0)))
    return out


def babble(rng, n) -> np.ndarray:
    """Speech-like babble: a glottal pulse train (80-250 Hz) through three formant resonances, cut into syllables."""
    f0 = _log_uniform(rng, 80, 250)
    t = np.arange(n) / SR
    pulses = _impulses(n, (np.arange(0, n / SR, 1 / f0) * SR).astype(np.int64), 1.0)
    out = np.zeros(n)
    for lo, hi in ((300, 900), (900, 2500), (2400, 3500)):  # three formants, one vowel colour per clip
        centre = _log_uniform(rng, lo, hi)
        out += _filter(pulses, "bandpass", (centre / 1.15, centre * 1.15))
    syllables = (np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3)) > rng.uniform(-0.3, 0.3)).astype(float)
    return out * _soften(syllables, 0.02)


#: Out-of-vocabulary sound -> recipe; their names are not classes (the truth file records them as such).
OOV_RECIPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "oov:siren": siren,
    "oov:birdsong": birdsong,
    "oov:babble": babble,
}


def _active_power(x: np.ndarray, frame: int = 2048) -> float:
    """Mean power over the frames within 10 dB of the loudest one (the event while it sounds)."""
    m = max(1, len(x) // frame)
    p = np.array([np.mean(c**2) for c in np.array_split(x, m)])
    return float(p[p >= 0.1 * p.max()].mean())


def _event(label: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) clean event(s) of ``label``, scaled to unit active power."""
    x = (RECIPES.get(label) or OOV_RECIPES[label])(rng, n)
    power = _active_power(x)
    if not (np.isfinite(power) and power > 0):
        raise RuntimeError(f"recipe of {label!r} produced a silent or non-finite clip of {n} samples")
    return x / np.sqrt(power)


def synthesize(label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One clean clip of ``label`` (no background): (round(seconds * 44100),) float32, peak 1."""
    if label not in RECIPES and label not in OOV_RECIPES:
        raise ValueError(f"unknown label {label!r}; expected one of {CLASSES} or {sorted(OOV_RECIPES)}")
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
    spec = np.fft.rfft(rng.standard_normal(n)) * np.maximum(np.fft.rfftfreq(n, 1.0 / SR), 20.0) ** (
        -rng.uniform(0, 2) / 2
    )
    noise = _unit(np.fft.irfft(spec, n))
    if rng.random() < 0.3:
        t = np.arange(n) / SR
        k = np.arange(1, 7)[:, None]
        hum = (
            rng.uniform(0, 1, (6, 1))
            / k
            * np.sin(2 * np.pi * rng.choice([50, 60]) * k * t + rng.uniform(0, 6.3, (6, 1)))
        ).sum(0)
        noise = _unit(noise + rng.uniform(0.3, 2.0) * _unit(hum))
    return noise
