"""The multi-label course dataset: the course's 20 sound recipes mixed into clips of one to three classes, labelled
with their classes and those classes' AudioSet ancestors, written in FSD50K's exact layout::

    root/FSD50K.dev_audio/<id>.wav                       44.1 kHz, 16-bit PCM, mono
    root/FSD50K.eval_audio/<id>.wav
    root/FSD50K.ground_truth/dev.csv                     fname,labels,mids,split   (split: train or val)
    root/FSD50K.ground_truth/eval.csv                    fname,labels,mids
    root/FSD50K.ground_truth/vocabulary.csv              index,label,mid   (no header; index 0..C-1)
    root/FSD50K.ground_truth/course_events.csv           fname,label,onset,offset   (course only; seconds)
    root/FSD50K.ground_truth/course_manifest.json        preset, seed, generator version

``labels`` and ``mids`` hold comma-separated names (a field with a comma is quoted, as the csv module does): each
class that sounds followed by its ancestors in :data:`ONTOLOGY` (``Bass_guitar,Guitar,Plucked_string_instrument,
Musical_instrument,Music``), as FSD50K labels its clips. The events of a clip overlap in time (all share a common
stretch) or follow each other (each ends before the next starts); :func:`plan_multilabel` gives every clip's events
without audio. The audio of clip ``i`` depends only on ``(seed, i)`` (and its row of the plan), so an interrupted
:func:`generate_multilabel` resumes to byte-identical files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import CLASSES
from ..runtime import PAPER_SEED, write_atomic
from .dsp import SR
from .plan import ASO_IDS
from .recipes import _event
from .writer import _claim, _is_complete, _mix_down, _prepare_folders, _run_jobs, _write_wav

__all__ = [
    "DEV_COLUMNS",
    "EVAL_COLUMNS",
    "EVENTS_HEADER",
    "ML_AUDIO_DIRS",
    "ML_GROUND_TRUTH_DIR",
    "ML_PRESETS",
    "ML_VOCABULARY",
    "MULTILABEL_VERSION",
    "ONTOLOGY",
    "LEAF_PARENTS",
    "Event",
    "MultiLabelClip",
    "MultiLabelPreset",
    "ancestors",
    "clip_labels",
    "course_multilabel_dataset_name",
    "generate_multilabel",
    "label_mid",
    "multilabel_preset_of",
    "plan_multilabel",
    "read_events",
    "render_multilabel_clip",
]

#: FSD50K's folders (audio by split, then the ground truth) and the columns of its CSVs.
ML_AUDIO_DIRS = {"dev": "FSD50K.dev_audio", "eval": "FSD50K.eval_audio"}
ML_GROUND_TRUTH_DIR = "FSD50K.ground_truth"
DEV_COLUMNS = ("fname", "labels", "mids", "split")
EVAL_COLUMNS = ("fname", "labels", "mids")
#: The course's side file of every event (seconds); FSD50K has no such file, and its readers ignore it.
EVENTS_HEADER = ("fname", "label", "onset", "offset")
#: Version of this generator: a dataset made by another version lives in another folder (``course50k_v<version>_...``).
MULTILABEL_VERSION = 1

#: The parent classes of the vocabulary: AudioSet display name (as FSD50K spells it) -> (AudioSet mid, its parent or
#: None). Mids and edges are AudioSet's ontology (research.google.com/audioset/ontology, as in FSD50K's ground truth,
#: e.g. "Bass_guitar,Guitar,Plucked_string_instrument,Musical_instrument,Music" and "Fireworks,Explosion"). A leaf
#: with a parent here gets the whole chain up to its root. AudioSet's generic top-level categories (Natural sounds,
#: Sounds of things, Human sounds) are left out, so Wind, Fire, Glass, ... carry no parent; Music is kept.
ONTOLOGY: dict[str, tuple[str, str | None]] = {
    "Music": ("/m/04rlf", None),
    "Musical_instrument": ("/m/04szw", "Music"),
    "Plucked_string_instrument": ("/m/0fx80y", "Musical_instrument"),
    "Guitar": ("/m/0342h", "Plucked_string_instrument"),
    "Keyboard_(musical)": ("/m/05148p4", "Musical_instrument"),
    "Percussion": ("/m/0l14md", "Musical_instrument"),
    "Cymbal": ("/m/01qbl", "Percussion"),
    "Water": ("/m/0838f", None),
    "Explosion": ("/m/014zdl", None),
}
#: The parent of each of the 20 leaf classes that has one in :data:`ONTOLOGY` (AudioSet's).
LEAF_PARENTS: dict[str, str] = {
    "Acoustic_guitar": "Guitar",
    "Bass_guitar": "Guitar",
    "Piano": "Keyboard_(musical)",
    "Crash_cymbal": "Cymbal",
    "Hi-hat": "Cymbal",
    "Rain": "Water",
    "Fireworks": "Explosion",
}
#: Every class (the 20 leaves and the parents), sorted: vocabulary.csv's order (its index column).
ML_VOCABULARY: list[str] = sorted([*CLASSES, *ONTOLOGY])

if set(LEAF_PARENTS) - set(CLASSES) or set(LEAF_PARENTS.values()) - set(ONTOLOGY) or set(ONTOLOGY) & set(CLASSES):
    raise ImportError("coursedata.multilabel: LEAF_PARENTS must map course classes to ONTOLOGY's parents")


def label_mid(label: str) -> str:
    """The AudioSet mid of a leaf class or a parent class."""
    return ASO_IDS[label] if label in ASO_IDS else ONTOLOGY[label][0]


def ancestors(label: str) -> tuple[str, ...]:
    """A class's ancestors, nearest first: ``ancestors("Bass_guitar")`` -> Guitar, Plucked_string_instrument,
    Musical_instrument, Music; () for a class without parent."""
    if label not in ONTOLOGY and label not in CLASSES:
        raise ValueError(f"unknown class {label!r}")
    out: list[str] = []
    node = LEAF_PARENTS.get(label) if label in CLASSES else ONTOLOGY[label][1]
    while node is not None:
        out.append(node)
        node = ONTOLOGY[node][1]
    return tuple(out)


def clip_labels(leaves) -> list[str]:
    """The labels of a clip whose classes ``leaves`` sound: each leaf followed by its ancestors not named yet."""
    out: list[str] = []
    for leaf in leaves:
        for label in (leaf, *ancestors(leaf)):
            if label not in out:
                out.append(label)
    return out


_PLAN_STREAM, _AUDIO_STREAM = 10, 11  # seed streams of this dataset (the FSDnoisy18k layout's use 0-2)
#: Shortest event of a clip (s), relative level of each event (dB, uniform), fade at each end of an event (s).
MIN_EVENT_S = 0.3
EVENT_GAIN_DB = (-6.0, 0.0)
_FADE_S = 0.01
#: An event of a single-class clip or of an overlapping arrangement lasts this share of the clip (uniform): with a
#: share of at least 0.6, all the events of a clip share the stretch [0.4, 0.6] of it.
_SPAN = (0.6, 1.0)
#: In a sequence, the gaps between events (and before the first, after the last) take this share of the free time.
_GAPS = (0.0, 0.25)


@dataclass(frozen=True)
class MultiLabelPreset:
    """Size of a multi-label dataset: ``dev_clips`` (of which a share ``val_share`` is the val split) and
    ``eval_clips``; clip lengths uniform in [min_seconds, max_seconds]; ``class_counts``: the shares of clips with one,
    two and three classes (exact, per split); ``overlap_share``: the share of clips of 2-3 classes whose events
    overlap (the others follow each other)."""

    dev_clips: int
    eval_clips: int
    val_share: float = 0.15
    min_seconds: float = 1.0
    max_seconds: float = 3.0
    class_counts: tuple[float, float, float] = (0.5, 0.35, 0.15)
    overlap_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.val_share < 1:
            raise ValueError(f"val_share = {self.val_share}: expected a share in (0, 1)")
        if min(round(self.dev_clips * self.val_share), self.dev_clips - round(self.dev_clips * self.val_share)) < 1:
            raise ValueError(f"{self}: train and val need a clip each (dev_clips too small)")
        if self.eval_clips < 1:
            raise ValueError(f"{self}: eval_clips must be at least 1")
        if len(self.class_counts) != 3 or min(self.class_counts) < 0 or abs(sum(self.class_counts) - 1) > 1e-9:
            raise ValueError(
                f"class_counts = {self.class_counts}: expected three shares (1, 2, 3 classes) summing to 1"
            )
        if not 0 <= self.overlap_share <= 1:
            raise ValueError(f"overlap_share = {self.overlap_share}: expected a share in [0, 1]")
        if not 3 * MIN_EVENT_S <= self.min_seconds <= self.max_seconds <= 30:
            raise ValueError(
                f"{self}: expected {3 * MIN_EVENT_S:g} <= min_seconds <= max_seconds <= 30 (room for three events)"
            )


#: ``tiny``: CI and smoke runs, 200 clips of 1-3 s (170 dev: 144 train and 26 val; 30 eval), seconds to make.
#: ``course``: the notebook's full mode, 1,200 clips of 1-4 s (1,000 dev: 850 train and 150 val; 200 eval).
#: Half the clips hold two or three classes (35% and 15%); the events of half of those overlap.
ML_PRESETS: dict[str, MultiLabelPreset] = {
    "tiny": MultiLabelPreset(170, 30, min_seconds=1.0, max_seconds=3.0),
    "course": MultiLabelPreset(1000, 200, min_seconds=1.0, max_seconds=4.0),
}


@dataclass(frozen=True)
class Event:
    """One event of a clip: a class sounding from sample ``onset`` to ``offset`` (exclusive), ``gain_db`` relative."""

    label: str
    onset: int
    offset: int
    gain_db: float


@dataclass(frozen=True)
class MultiLabelClip:
    """One clip of the multi-label dataset: where it goes and the events it holds."""

    index: int  # its audio depends only on (seed, index)
    fname: str  # "<id>.wav"
    split: str  # "train", "val" (both in dev) or "eval"
    arrangement: str  # "single", "overlap" (all events share a stretch) or "sequence" (each ends before the next)
    events: tuple[Event, ...]
    n_samples: int

    @property
    def seconds(self) -> float:
        return self.n_samples / SR

    @property
    def leaves(self) -> tuple[str, ...]:
        """The classes that sound, by onset."""
        return tuple(e.label for e in sorted(self.events, key=lambda e: e.onset))

    @property
    def labels(self) -> list[str]:
        """The CSV's labels: the leaves (by onset), each followed by its ancestors."""
        return clip_labels(self.leaves)

    @property
    def mids(self) -> list[str]:
        return [label_mid(label) for label in self.labels]


def _resolve(preset) -> tuple[str, MultiLabelPreset]:
    if isinstance(preset, MultiLabelPreset):
        return "custom", preset
    if preset not in ML_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(ML_PRESETS)} or a MultiLabelPreset")
    return preset, ML_PRESETS[preset]


def _draw_classes(rng: np.random.Generator, counts) -> list[list[str]]:
    """Distinct classes for clips of ``counts`` classes each, dealt from shuffled decks of the 20 classes, so every
    class is dealt once before any is dealt twice (per split: every class in it as soon as it has 20 slots)."""
    deck: list[str] = []
    out = []
    for k in counts:
        chosen: list[str] = []
        while len(chosen) < k:
            pick = next((i for i, c in enumerate(deck) if c not in chosen), None)
            if pick is None:
                deck += [CLASSES[i] for i in rng.permutation(len(CLASSES))]
                continue
            chosen.append(deck.pop(pick))
        out.append(chosen)
    return out


def _arrange(rng: np.random.Generator, labels: list[str], n: int, arrangement: str) -> tuple[Event, ...]:
    gains = rng.uniform(*EVENT_GAIN_DB, len(labels))
    if arrangement in ("single", "overlap"):  # every event covers at least [0.4 n, 0.6 n]
        spans = np.round(rng.uniform(*_SPAN, len(labels)) * n).astype(np.int64)
        onsets = np.floor(rng.uniform(0, 1, len(labels)) * (n - spans + 1)).astype(np.int64)
        bounds = [(int(a), int(a + d)) for a, d in zip(onsets, spans)]
    else:  # sequence: gap, event, gap, ..., event, gap
        k, shortest = len(labels), int(round(MIN_EVENT_S * SR))
        free = n - k * shortest
        gap_total = free * rng.uniform(*_GAPS)
        gaps = gap_total * rng.dirichlet(np.ones(k + 1))
        lengths = shortest + (free - gap_total) * rng.dirichlet(np.full(k, 2.0))
        pieces = np.empty(2 * k + 1)
        pieces[0::2], pieces[1::2] = gaps, lengths
        edges = np.minimum(np.round(np.cumsum(pieces)).astype(np.int64), n)
        bounds = [(int(edges[2 * i]), int(edges[2 * i + 1])) for i in range(k)]
    return tuple(Event(c, a, b, float(g)) for c, (a, b), g in zip(labels, bounds, gains))


def plan_multilabel(preset="course", seed: int = PAPER_SEED) -> list[MultiLabelClip]:
    """The clips :func:`generate_multilabel` writes (dev clips sorted by id, then eval clips), without any audio."""
    _, cfg = _resolve(preset)
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    n_val = round(cfg.dev_clips * cfg.val_share)
    rows = []  # (split, classes, arrangement, n_samples)
    for split, m in (("train", cfg.dev_clips - n_val), ("val", n_val), ("eval", cfg.eval_clips)):
        n2, n3 = round(cfg.class_counts[1] * m), round(cfg.class_counts[2] * m)
        n2 = min(n2, m - n3)
        counts = rng.permutation(np.repeat([1, 2, 3], [m - n2 - n3, n2, n3]))
        multi = np.flatnonzero(counts > 1)
        overlap = set(rng.permutation(multi)[: round(cfg.overlap_share * len(multi))].tolist())
        samples = np.round(rng.uniform(cfg.min_seconds, cfg.max_seconds, m) * SR).astype(np.int64)
        for i, labels in enumerate(_draw_classes(rng, counts)):
            arrangement = "single" if len(labels) == 1 else "overlap" if i in overlap else "sequence"
            rows.append((split, labels, arrangement, int(samples[i])))
    events = [_arrange(rng, labels, n, arrangement) for _, labels, arrangement, n in rows]
    ids = rng.choice(999_999, size=len(rows), replace=False) + 1
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0] == "eval", ids[i]))
    return [
        MultiLabelClip(k, f"{ids[i]}.wav", rows[i][0], rows[i][2], events[i], rows[i][3]) for k, i in enumerate(order)
    ]


def _fade(m: int) -> np.ndarray:
    """(m,) gain: raised-cosine fades of _FADE_S (at most a quarter of the event) at both ends, 1 between."""
    k = max(1, min(int(round(_FADE_S * SR)), m // 4))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
    g = np.ones(m)
    g[:k] *= ramp
    g[m - k :] *= ramp[::-1]
    return g


def render_multilabel_clip(clip: MultiLabelClip, seed: int) -> np.ndarray:
    """The audio of one planned clip: (clip.n_samples,) float32, peak 0.2-0.9: each event rendered by its class's
    recipe over its span (faded in and out, at its gain), then room, background and level as the course dataset's.

    Drawn from ``default_rng([seed, 11, clip.index])``.
    """
    rng = np.random.default_rng([seed, _AUDIO_STREAM, clip.index])
    x = np.zeros(clip.n_samples)
    for e in clip.events:
        m = e.offset - e.onset
        x[e.onset : e.offset] += 10 ** (e.gain_db / 20) * _fade(m) * _event(e.label, rng, m)
    return _mix_down(rng, x)


def _write_multilabel_clip(job: tuple[MultiLabelClip, int, str]) -> None:
    clip, seed, folder = job
    _write_wav(Path(folder) / clip.fname, render_multilabel_clip(clip, seed))


def _csv_text(header, rows) -> str:
    """CSV text as the csv module writes it (a field with a comma quoted), LF line ends; no header when None."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def generate_multilabel(
    root, preset="course", seed: int = PAPER_SEED, progress: bool = True, workers: int | None = None
) -> Path:
    """Generate (or finish generating) the multi-label course dataset ``preset`` under ``root``, in FSD50K's layout;
    return ``root``.

    Resumable as :func:`~uclser_lib.coursedata.generate` is: complete WAVs already there are kept, missing or damaged
    ones (re)written, each atomically; the CSVs come last. ``workers`` processes render in parallel (default: the
    CPUs, at most 8); the files do not depend on it. Raises ``ValueError`` when ``root`` holds a dataset made with
    other parameters (``FSD50K.ground_truth/course_manifest.json``) or not by this function.
    """
    name, cfg = _resolve(preset)
    if workers is not None and workers < 1:
        raise ValueError(f"workers = {workers}: expected at least 1 process")
    clips = plan_multilabel(cfg, seed)
    root = Path(root).expanduser()
    manifest = {
        "layout": "FSD50K",
        "preset": name,
        "config": dataclasses.asdict(cfg),
        "seed": int(seed),
        "generator_version": MULTILABEL_VERSION,
    }
    _claim(
        root,
        json.loads(json.dumps(manifest)),
        ML_GROUND_TRUTH_DIR,
        ("dev.csv", "eval.csv", "vocabulary.csv"),
        tuple(ML_AUDIO_DIRS.values()),
    )
    folders = {split: root / ML_AUDIO_DIRS["eval" if split == "eval" else "dev"] for split in ("train", "val", "eval")}
    meta = root / ML_GROUND_TRUTH_DIR
    _prepare_folders([*(root / d for d in ML_AUDIO_DIRS.values()), meta])
    todo = [
        (c, int(seed), str(folders[c.split]))
        for c in clips
        if not _is_complete(folders[c.split] / c.fname, c.n_samples)
    ]
    _run_jobs(_write_multilabel_clip, todo, len(clips), f"multi-label course dataset {name!r}", progress, workers)

    stem = lambda c: c.fname.removesuffix(".wav")  # noqa: E731
    dev = [(stem(c), ",".join(c.labels), ",".join(c.mids), c.split) for c in clips if c.split != "eval"]
    test = [(stem(c), ",".join(c.labels), ",".join(c.mids)) for c in clips if c.split == "eval"]
    vocabulary = [(i, label, label_mid(label)) for i, label in enumerate(ML_VOCABULARY)]
    events = [(stem(c), e.label, f"{e.onset / SR:.6f}", f"{e.offset / SR:.6f}") for c in clips for e in c.events]
    write_atomic(meta / "vocabulary.csv", _csv_text(None, vocabulary))
    write_atomic(meta / "course_events.csv", _csv_text(EVENTS_HEADER, events))
    write_atomic(meta / "eval.csv", _csv_text(EVAL_COLUMNS, test))
    write_atomic(meta / "dev.csv", _csv_text(DEV_COLUMNS, dev))
    return root


def read_events(root) -> dict[str, list[tuple[str, float, float]]]:
    """``{fname: [(label, onset_s, offset_s), ...]}`` from ``course_events.csv`` (fname without ``.wav``, as in the
    CSVs). Empty for a dataset that has no such file (FSD50K)."""
    path = Path(root) / ML_GROUND_TRUTH_DIR / "course_events.csv"
    if not path.is_file():
        return {}
    out: dict[str, list[tuple[str, float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != EVENTS_HEADER:
            raise ValueError(f"{path}: header {reader.fieldnames}, expected {list(EVENTS_HEADER)}")
        for row in reader:
            out.setdefault(row["fname"], []).append((row["label"], float(row["onset"]), float(row["offset"])))
    return out


def course_multilabel_dataset_name(preset: str) -> str:
    """The name (and data folder) of the multi-label course dataset's ``preset`` at this generator version:
    'course50k_v1_tiny'. Never a name :func:`uclser_lib.datasets.course_preset_of` reads as the FSDnoisy18k one's."""
    return f"course50k_v{MULTILABEL_VERSION}_{preset}"


def multilabel_preset_of(name: str) -> str | None:
    """The preset of a multi-label course dataset's name, of any version ('course50k_v1_tiny' -> 'tiny'); None for any
    other name."""
    match = re.fullmatch(r"course50k_v\d+_(\w+)", name)
    return match.group(1) if match else None
