"""What the course dataset holds, without audio: presets, every clip's length and true class, and its label noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import CLASSES
from ..runtime import PAPER_SEED
from .dsp import SR, _log_uniform
from .recipes import OOV_RECIPES

__all__ = [
    "ASO_IDS",
    "CLASS_NOISE_SPREAD",
    "DATASET_VERSION",
    "OOV_RATE",
    "CONFUSABLE_PAIRS",
    "ClipPlan",
    "CoursePreset",
    "INCOMPLETE_RATE",
    "NEIGHBOURS",
    "NEIGHBOUR_SHARE",
    "PRESETS",
    "WRONG_RATE",
    "plan_dataset",
    "relabel",
]


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
#: Version of the generator: a dataset made by another version lives in another folder (``course<version>_<preset>``).
DATASET_VERSION = 2
#: Default label-noise shares of the noisy subset, close to FSDnoisy18k's (about 60% of its noisy labels are wrong or
#: incomplete, and many wrong ones are out of vocabulary): labels naming another class than the one that sounds,
#: labels on clips whose sound is of none of the 20 classes, and labels missing a second class that also sounds.
WRONG_RATE = 0.25
OOV_RATE = 0.15
INCOMPLETE_RATE = 0.2
#: Wrong and out-of-vocabulary labels are drawn with a per-class weight spread evenly over this range (mean 1,
#: assigned to the classes in a random order), so noise rates differ between classes, as on the web.
CLASS_NOISE_SPREAD = (0.25, 1.75)
#: Event-to-background ratio, dB (uniform), and the mixed-in event's level for incomplete labels, dB.
SNR_DB = (3.0, 30.0)
MIXED_IN_DB = (-8.0, 0.0)


_PLAN_STREAM, _AUDIO_STREAM = 0, 1  # seed streams: np.random.default_rng([seed, stream, ...])
_LONG_CLIP_S = 8.0  # long clips are log-uniform in [_LONG_CLIP_S, max_seconds]


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


#: ``tiny``: CI and smoke runs (200 clips of 0.3-4 s, seconds to make). ``course``: the default: 1,980 clips
#: (180 clean and 1,400 noisy train clips, 400 test clips; classes 3x imbalanced) whose lengths spread over
#: 0.3-30 s like FSDnoisy18k's (median 5 s), so most clips hold two or more distinct 1 s patches.
PRESETS: dict[str, CoursePreset] = {
    "tiny": CoursePreset(2, 6, 2, imbalance=1.0, median_seconds=1.6, length_sigma=0.5, max_seconds=4.0),
    "course": CoursePreset(9, 70, 20, imbalance=3.0, median_seconds=5.0, length_sigma=0.9),
}


@dataclass(frozen=True)
class ClipPlan:
    """One clip of the dataset: where it goes, what its CSVs say and what it really holds."""

    index: int  # its audio depends only on (seed, index)
    fname: str  # "<id>.wav"
    split: str  # "train" or "test"
    label: str  # the label written in the CSV
    true_label: str  # the class that sounds (the main event)
    label_state: str  # "clean", "wrong" (label != true_label), "oov" (true_label: a sound of no class, "oov:...")
    #                   or "incomplete" (mixed_label also sounds)
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


def _rates(wrong_rate, incomplete_rate, oov_rate=None) -> tuple[float, float, float]:
    wrong = WRONG_RATE if wrong_rate is None else float(wrong_rate)
    incomplete = INCOMPLETE_RATE if incomplete_rate is None else float(incomplete_rate)
    oov = OOV_RATE if oov_rate is None else float(oov_rate)
    if not all(0 <= r <= 1 for r in (wrong, incomplete, oov)) or wrong + incomplete + oov > 1:
        raise ValueError(
            f"wrong_rate = {wrong}, incomplete_rate = {incomplete}, oov_rate = {oov}: "
            "expected three shares in [0, 1] summing to <= 1"
        )
    return wrong, incomplete, oov


def _confuser(rng: np.random.Generator, label: str) -> str:
    """Another class for ``label``'s noisy label: a neighbour with probability NEIGHBOUR_SHARE, else any other."""
    near = NEIGHBOURS[label]
    pool = near if rng.random() < NEIGHBOUR_SHARE else [c for c in CLASSES if c != label and c not in near]
    return pool[rng.integers(len(pool))]


def _clip_samples(rng: np.random.Generator, cfg: CoursePreset, count: int) -> np.ndarray:
    seconds = cfg.min_seconds + (cfg.median_seconds - cfg.min_seconds) * np.exp(
        cfg.length_sigma * rng.standard_normal(count)
    )
    long = rng.random(count) < cfg.long_fraction
    if long.any():
        seconds[long] = _log_uniform(rng, _LONG_CLIP_S, cfg.max_seconds, long.sum())
    return np.round(np.clip(seconds, cfg.min_seconds, cfg.max_seconds) * SR).astype(np.int64)


def plan_dataset(
    preset="course", seed: int = PAPER_SEED, wrong_rate=None, incomplete_rate=None, oov_rate=None
) -> list[ClipPlan]:
    """The clips :func:`generate` writes (train clips sorted by id, then test clips), without any audio.

    Of the noisy subset, exactly round(rate x N) clips are wrong, out of vocabulary and incomplete (defaults
    :data:`WRONG_RATE`, :data:`OOV_RATE`, :data:`INCOMPLETE_RATE`); wrong and out-of-vocabulary clips are drawn
    with per-class weights (:data:`CLASS_NOISE_SPREAD`), so each class has its own noise rate.
    """
    _, cfg = _resolve_preset(preset)
    wrong, incomplete, oov = _rates(wrong_rate, incomplete_rate, oov_rate)
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    weights = cfg.imbalance ** rng.permutation(np.linspace(0.0, 1.0, len(CLASSES)))
    weights /= weights.mean()
    split, label, verified = [], [], []
    for name, per_class, clean in (
        ("train", cfg.clean_per_class, True),
        ("train", cfg.noisy_per_class, False),
        ("test", cfg.test_per_class, True),
    ):
        for c, k in zip(CLASSES, np.maximum(1, np.round(per_class * weights)).astype(int)):
            split += [name] * k
            label += [c] * k
            verified += [clean] * k
    count = len(label)
    samples = _clip_samples(rng, cfg, count)

    noisy = np.array([i for i in range(count) if not verified[i]])
    class_weight = dict(zip(CLASSES, rng.permutation(np.linspace(*CLASS_NOISE_SPREAD, len(CLASSES)))))
    weights = np.array([class_weight[label[i]] for i in noisy])
    n_wrong, n_oov, n_incomplete = (round(r * len(noisy)) for r in (wrong, oov, incomplete))
    # weighted draw without replacement (exponential keys), then uniform for the incomplete ones
    by_weight = noisy[np.argsort(rng.exponential(size=len(noisy)) / weights)]
    corrupted, rest = by_weight[: n_wrong + n_oov], by_weight[n_wrong + n_oov :]
    corrupted = rng.permutation(corrupted)
    state, true, mixed = ["clean"] * count, list(label), [None] * count
    for i in corrupted[:n_wrong]:
        state[i], true[i] = "wrong", _confuser(rng, label[i])
    oov_sounds = sorted(OOV_RECIPES)
    for i in corrupted[n_wrong:]:
        state[i], true[i] = "oov", oov_sounds[rng.integers(len(oov_sounds))]
    for i in rng.permutation(rest)[:n_incomplete]:
        state[i], mixed[i] = "incomplete", _confuser(rng, label[i])

    # noisy_small: per class, the prefix of a random order of its noisy clips whose duration is closest to its
    # clean clips'
    small = np.zeros(count, dtype=bool)
    for c in CLASSES:
        target = sum(samples[i] for i in range(count) if label[i] == c and split[i] == "train" and verified[i])
        pool = rng.permutation([i for i in range(count) if label[i] == c and not verified[i]])
        small[pool[: int(np.argmin(np.abs(np.cumsum(samples[pool]) - target))) + 1]] = True

    ids = rng.choice(999_999, size=count, replace=False) + 1
    order = sorted(range(count), key=lambda i: (split[i] != "train", ids[i]))
    return [
        ClipPlan(
            k,
            f"{ids[i]}.wav",
            split[i],
            label[i],
            true[i],
            state[i],
            mixed[i],
            verified[i] and split[i] == "train",
            bool(small[i]),
            int(samples[i]),
        )
        for k, i in enumerate(order)
    ]


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
