"""FSD50K as a course dataset, with its official splits; and the AudioSet CSV layout, for clips you downloaded.

**FSD50K** (Fonseca et al., "FSD50K: an open dataset of human-labeled sound events", TASLP 2022; Zenodo record
4060432, version 1.0): 51,197 clips, 200 classes of the AudioSet ontology, several classes per clip. Its layout, as
``python -m uclser_lib download fsd50k`` unpacks it::

    FSD50K.dev_audio/<fname>.wav          40,966 clips
    FSD50K.eval_audio/<fname>.wav         10,231 clips
    FSD50K.ground_truth/dev.csv           fname,labels,mids,split   (labels, mids: comma-separated; split: train|val)
    FSD50K.ground_truth/eval.csv          fname,labels,mids
    FSD50K.ground_truth/vocabulary.csv    no header: index,label,mid (index 0..199)

:func:`read_fsd50k_meta` reads it into an :class:`FSD50KMeta`: a multi-label
:class:`~uclser_lib.data.DatasetMeta` (``train``: every dev clip, ``test``: the eval clips, classes in
vocabulary.csv's index order, ``fname``: the audio file's name, ``<fname>.wav``) whose :attr:`FSD50KMeta.dev_split`
keeps each dev clip's official split (``"train"`` or ``"val"``), keyed by that file name. Every clip's
``clean`` is True: FSD50K's labels are human-verified (the dev set's may be incomplete, the eval set's are
exhaustive). :func:`prepare_fsd50k` extracts the features of both (resumable) and gives an :class:`FSD50K`, a
:class:`~uclser_lib.datasets.PreparedDataset` whose :meth:`FSD50K.splits` are the official ones: ``pretrain`` = dev
clips of split train (with their (N, 200) multi-hot labels: the downstream training set too), ``val`` = dev split
val, ``test`` = eval. The "noisy" task of :data:`uclser_lib.downstream.TASKS` (``pretrain``, ``val``, ``test``) is
then FSD50K's protocol; the "clean" task does not exist here and is refused.

**The AudioSet CSV layout** (:func:`read_audioset_meta`), for clips downloaded by yourself: ``ROOT`` holds
``class_labels_indices.csv`` (header ``index,mid,display_name``) and AudioSet's ``*_segments.csv`` files (comment
lines starting with ``#``, then ``YTID, start_seconds, end_seconds, positive_labels``, the labels quoted
comma-separated mids); the audio of ``X_segments.csv`` is in the folder ``ROOT/X_segments/``, one WAV per row, named
``<YTID>_<start>.wav`` (``start`` as the CSV writes it, ``30.000``, or in whole seconds, ``30``) or ``<YTID>.wav``.
``eval_segments.csv`` is the test split; every other segments file (balanced, unbalanced) the train split.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import ClipMeta, DatasetMeta, FeatureSet, extract_split, load_features
from .folders import FolderError
from .runtime import PAPER_SEED, data_root

__all__ = [
    "AUDIOSET_CLASSES",
    "AUDIO_DIRS",
    "DEV_COLUMNS",
    "DEV_SPLITS",
    "EVAL_COLUMNS",
    "FSD50K",
    "FSD50KMeta",
    "GROUND_TRUTH",
    "fsd50k_root",
    "prepare_fsd50k",
    "read_audioset_meta",
    "read_fsd50k_meta",
]

#: The folder of FSD50K's CSVs; a folder holding it is in FSD50K's layout.
GROUND_TRUTH = "FSD50K.ground_truth"
AUDIO_DIRS = {"train": "FSD50K.dev_audio", "test": "FSD50K.eval_audio"}
DEV_COLUMNS = ("fname", "labels", "mids", "split")
EVAL_COLUMNS = ("fname", "labels", "mids")
#: The official splits of the dev set (dev.csv's ``split`` column).
DEV_SPLITS = ("train", "val")
#: AudioSet's class list (``index,mid,display_name``).
AUDIOSET_CLASSES = "class_labels_indices.csv"
#: How many missing files an error or warning names.
_SHOWN = 5


def fsd50k_root() -> Path | None:
    """FSD50K on disk: ``UCLSER_FSD50K_ROOT`` (``~`` expanded), or None when it is unset or empty."""
    value = os.environ.get("UCLSER_FSD50K_ROOT")
    return Path(value).expanduser() if value else None


@dataclass
class FSD50KMeta(DatasetMeta):
    """FSD50K's metadata: a multi-label :class:`~uclser_lib.data.DatasetMeta` (``train``: the dev clips, ``test``:
    the eval clips) and ``dev_split``: each dev clip's official split, ``"train"`` or ``"val"``, keyed by its
    ``fname`` (the audio file's name, as in the feature files' ``fnames``)."""

    dev_split: dict[str, str] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Reading the CSVs


def _text(path: Path, layout: str) -> str:
    """The text of a metadata file: a one-line error naming it when it is absent or not UTF-8."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metadata file not found (expected {layout})")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text; save the file as UTF-8") from None


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of FSD50K's dev.csv or eval.csv, each with its ``_line``: one-line errors naming the file and line
    for a missing column, a row with more or fewer fields than the header, an empty or space-padded fname or
    labels, a clip listed twice. (:func:`uclser_lib.data._read_csv` does the same for a ``label`` column.)"""
    reader = csv.DictReader(_text(path, f"FSD50K's layout, {GROUND_TRUTH}/{path.name}").splitlines())
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}, line 1: missing column(s) {missing}; header is {header}, expected {list(columns)}")
    rows, first = [], {}
    for row in reader:
        line = reader.line_num
        if None in row or any(row[c] is None for c in header):
            n = len(header) + len(row.get(None, [])) - sum(row[c] is None for c in header)
            raise ValueError(f"{path}, line {line}: {n} field(s), the header has {len(header)}")
        for c in ("fname", "labels"):
            if row[c] == "":
                raise ValueError(f"{path}, line {line}: empty {c}")
            if row[c] != row[c].strip():
                raise ValueError(f"{path}, line {line}: {c} {row[c]!r} has leading or trailing spaces")
        if row["fname"] in first:
            raise ValueError(
                f"{path}, line {line}: clip {row['fname']} is listed again (first at line {first[row['fname']]}); "
                "a clip must be listed once"
            )
        first[row["fname"]] = line
        row["_line"] = line
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no clip listed")
    return rows


def _vocabulary(
    path: Path, fields: tuple[str, str], header: bool, layout: str, semicolons: bool = False
) -> tuple[list[str], list[str]]:
    """(names, mids) in index order from a class list whose rows are ``index`` and ``fields`` (the order of name
    and mid: ``("name", "mid")`` or ``("mid", "name")``). One-line errors naming the file and line for a row
    without three fields, an index that is not an integer, a name or mid listed twice, a name with a comma (a
    clip's names are joined by commas; ``semicolons``: a comma in a name is made a semicolon instead), and indices
    that are not 0..C-1."""
    lines = _text(path, layout).splitlines()
    reader = csv.reader(lines[1:] if header else lines)
    by_index, seen = {}, {}
    for n, row in enumerate(reader, 2 if header else 1):
        if not row:
            continue
        if len(row) != 3:
            raise ValueError(f"{path}, line {n}: {len(row)} field(s), expected 3 (index,{','.join(fields)})")
        index, values = row[0].strip(), dict(zip(fields, (row[1].strip(), row[2].strip())))
        if semicolons:
            values["name"] = values["name"].replace(",", ";")
        try:
            i = int(index)
        except ValueError:
            raise ValueError(f"{path}, line {n}: index {index!r} is not an integer") from None
        for what in ("name", "mid"):
            key = (what, values[what])
            if not values[what]:
                raise ValueError(f"{path}, line {n}: empty {what}")
            if key in seen:
                raise ValueError(
                    f"{path}, line {n}: {what} {values[what]!r} is listed again (first at line {seen[key]})"
                )
            seen[key] = n
        if "," in values["name"]:
            raise ValueError(f"{path}, line {n}: class name {values['name']!r} has a comma")
        if i in by_index:
            raise ValueError(f"{path}, line {n}: index {i} is listed again")
        by_index[i] = (values["name"], values["mid"], n)
    if not by_index:
        raise ValueError(f"{path}: no class listed")
    wrong = sorted(set(by_index) ^ set(range(len(by_index))))
    if wrong:
        i = next((i for i in wrong if i in by_index), None)
        where = f", line {by_index[i][2]}" if i is not None else ""
        raise ValueError(
            f"{path}{where}: the indices of its {len(by_index)} classes must be 0..{len(by_index) - 1}; "
            f"{'got' if i is not None else 'missing'} {i if i is not None else wrong[0]}"
        )
    ordered = [by_index[i] for i in range(len(by_index))]
    return [name for name, _, _ in ordered], [mid for _, mid, _ in ordered]


def _clip_labels(path: Path, row: dict, mid_of: dict[str, str]) -> list[str]:
    """A row's class names, checked against the vocabulary (each known, its mid the vocabulary's, none twice)."""
    where, labels, mids = f"{path}, line {row['_line']}", row["labels"].split(","), row["mids"].split(",")
    if len(mids) != len(labels):
        raise ValueError(f"{where}: {len(labels)} label(s) but {len(mids)} mid(s); each label needs its mid")
    for label, mid in zip(labels, mids):
        if label not in mid_of:
            raise ValueError(f"{where}: label {label!r} of clip {row['fname']} is not in vocabulary.csv")
        if mid != mid_of[label]:
            raise ValueError(f"{where}: mid {mid!r} of label {label!r} is {mid_of[label]!r} in vocabulary.csv")
    if len(set(labels)) != len(labels):
        twice = next(x for x in labels if labels.count(x) > 1)
        raise ValueError(f"{where}: label {twice!r} is listed twice for clip {row['fname']}")
    return labels


def _missing_files(root: Path, folder: str, names: list[str]) -> list[str]:
    where = root / folder
    present = {p.name for p in where.iterdir()} if where.is_dir() else set()
    return [n for n in names if n not in present]


def read_fsd50k_meta(root, check_files: bool = True) -> FSD50KMeta:
    """Read FSD50K's ground truth under ``root`` (see the module docstring) and check it.

    One-line errors (``ValueError``) naming the file and line: a missing column or field, a label not in
    vocabulary.csv, a row whose mids are not as many as its labels, a mid that is not its label's in
    vocabulary.csv, a split other than train/val, a clip listed twice or in both dev.csv and eval.csv, vocabulary
    indices that are not 0..C-1. With ``check_files``, a ``FileNotFoundError`` counting the audio files listed but
    absent and naming the first few.
    """
    root = Path(root).expanduser()
    gt = root / GROUND_TRUTH
    classes, mids = _vocabulary(gt / "vocabulary.csv", ("name", "mid"), False, f"FSD50K's layout, {GROUND_TRUTH}/")
    mid_of = dict(zip(classes, mids))
    dev_rows, eval_rows = _rows(gt / "dev.csv", DEV_COLUMNS), _rows(gt / "eval.csv", EVAL_COLUMNS)
    train, test, dev_split = [], [], {}
    for row in dev_rows:
        labels = _clip_labels(gt / "dev.csv", row, mid_of)
        if row["split"] not in DEV_SPLITS:
            raise ValueError(
                f"{gt / 'dev.csv'}, line {row['_line']}: split {row['split']!r} of clip {row['fname']}, expected "
                "train or val"
            )
        clip = ClipMeta(f"{row['fname']}.wav", ",".join(labels), True)
        train.append(clip)
        dev_split[clip.fname] = row["split"]
    in_dev = {r["fname"]: r["_line"] for r in dev_rows}
    for row in eval_rows:
        if row["fname"] in in_dev:
            raise ValueError(
                f"{gt / 'eval.csv'}, line {row['_line']}: clip {row['fname']} is also in dev.csv (line "
                f"{in_dev[row['fname']]}); a clip belongs to one set"
            )
        test.append(ClipMeta(f"{row['fname']}.wav", ",".join(_clip_labels(gt / "eval.csv", row, mid_of)), True))
    meta = FSD50KMeta(root, train, test, classes, True, dict(AUDIO_DIRS), dev_split)
    if check_files:
        for split, csv_name in (("train", "dev.csv"), ("test", "eval.csv")):
            clips = meta.clips(split)
            absent = _missing_files(root, AUDIO_DIRS[split], [c.fname for c in clips])
            if absent:
                raise FileNotFoundError(
                    f"{root / AUDIO_DIRS[split]}: {len(absent)} of the {len(clips)} file(s) listed in {csv_name} "
                    f"are missing, e.g. {absent[:_SHOWN]}"
                )
    return meta


# ---------------------------------------------------------------------------------------------
# The prepared dataset


@dataclass
class FSD50K:
    """FSD50K (or a folder in its layout) with its extracted features: a
    :class:`~uclser_lib.datasets.PreparedDataset` with FSD50K's official splits and (N, C) multi-hot labels.

    ``train``: every dev clip (its official split in ``meta.dev_split``); ``test``: the eval clips. Every clip is
    labelled: ``labelled`` is ``train``, ``unlabelled`` None."""

    root: Path
    meta: FSD50KMeta
    train: FeatureSet
    test: FeatureSet
    name: str = "fsd50k"
    features_dir: Path | None = None

    @property
    def labelled(self) -> FeatureSet:
        return self.train

    @property
    def unlabelled(self) -> None:
        return None

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    def dev_splits(self) -> np.ndarray:
        """(N,) the official split (``"train"`` / ``"val"``) of each clip of ``train``, from dev.csv."""
        return np.array([self.meta.dev_split[f] for f in self.train.fnames])

    def check(self) -> None:
        """Refuse, as :meth:`splits` would, a dev set without a clip of split train or of split val (after
        unreadable files were left out), naming dev.csv."""
        split = self.dev_splits()
        for name in DEV_SPLITS:
            if not (split == name).any():
                raise FolderError(
                    f"{self.root / GROUND_TRUTH / 'dev.csv'}: no readable clip of split {name!r} "
                    f"({len(split)} dev clips); the official splits need both train and val"
                )

    def check_task(self, task: str) -> None:
        """Refuse the "clean" task: FSD50K has no noisy/clean subsets; its protocol is the "noisy" task's splits."""
        if task == "clean":
            raise FolderError(
                f"--task clean: {self.root}: FSD50K has no clean-label subset to split; its official protocol is "
                "--task noisy (train on the dev set's train split, select on its val split, test on the eval set)"
            )

    def splits(self, seed: int = PAPER_SEED) -> dict[str, FeatureSet]:
        """The official splits: ``pretrain`` = dev clips of split train (with their labels), ``val`` = dev split
        val, ``test`` = eval. ``seed`` is unused: the splits are fixed by dev.csv (it is there for the protocol)."""
        self.check()
        split = self.dev_splits()
        return {
            "pretrain": self.train.subset(split == "train"),
            "val": self.train.subset(split == "val"),
            "test": self.test,
        }


def prepare_fsd50k(
    root=None,
    features_dir=None,
    device=None,
    progress: bool = True,
    on_error: str = "raise",
    name: str = "fsd50k",
    workers: int | None = None,
) -> FSD50K:
    """FSD50K (or a folder in its layout) with the features of its dev and eval sets extracted (resumable,
    :func:`~uclser_lib.data.extract_split`) into ``features_dir`` (default ``<data root>/fsd50k/features``).

    ``root``: default ``UCLSER_FSD50K_ROOT``, else where ``python -m uclser_lib download fsd50k`` puts it
    (``<data root>/fsd50k/dataset``). ``on_error="skip"`` leaves unreadable audio files out (listed in a warning).
    """
    root = Path(root or fsd50k_root() or data_root() / "fsd50k" / "dataset").expanduser()
    if not (root / GROUND_TRUTH).is_dir():
        raise FileNotFoundError(
            f"{root}: no FSD50K there (no {GROUND_TRUTH}/); run `python -m uclser_lib download fsd50k` or set "
            "UCLSER_FSD50K_ROOT"
        )
    features_dir = Path(features_dir or data_root() / "fsd50k" / "features")
    meta = read_fsd50k_meta(root)
    sets = {
        split: load_features(
            extract_split(
                meta,
                split,
                features_dir / f"{split}.h5",
                device=device,
                workers=workers,
                on_error=on_error,
                progress=progress,
            )
        )
        for split in ("train", "test")
    }
    return FSD50K(root, meta, sets["train"], sets["test"], name, features_dir)


# ---------------------------------------------------------------------------------------------
# The AudioSet CSV layout


def _segments(path: Path, mid_name: dict[str, str]) -> list[tuple[str, str, list[str], int]]:
    """(YTID, start as written, class names, line) of every row of an AudioSet segments file."""
    out = []
    for n, line in enumerate(_text(path, "AudioSet's segments files").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line], skipinitialspace=True))
        if len(row) != 4:
            raise ValueError(f"{path}, line {n}: {len(row)} field(s), expected 4 (YTID, start, end, labels)")
        ytid, start, end, labels = (x.strip() for x in row)
        try:
            float(start), float(end)
        except ValueError:
            raise ValueError(f"{path}, line {n}: start {start!r} or end {end!r} is not a number of seconds") from None
        if not ytid or not labels:
            raise ValueError(f"{path}, line {n}: empty YTID or positive_labels")
        unknown = [m for m in labels.split(",") if m.strip() not in mid_name]
        if unknown:
            raise ValueError(f"{path}, line {n}: label {unknown[0]!r} of {ytid} is not in {AUDIOSET_CLASSES}")
        out.append((ytid, start, list(dict.fromkeys(mid_name[m.strip()] for m in labels.split(","))), n))
    return out


def _audio_name(ytid: str, start: str, present: set[str]) -> str | None:
    """The file of a segment among ``present``: ``<YTID>_<start>.wav`` (as written, or in whole seconds), else
    ``<YTID>.wav``; None when there is none."""
    whole = str(int(float(start)))
    for name in (f"{ytid}_{start}.wav", f"{ytid}_{whole}.wav", f"{ytid}.wav"):
        if name in present:
            return name
    return None


def read_audioset_meta(root) -> DatasetMeta:
    """Read the AudioSet CSV layout under ``root`` (see the module docstring) into a multi-label
    :class:`~uclser_lib.data.DatasetMeta`: ``eval_segments.csv``'s clips are ``test``, every other
    ``*_segments.csv``'s ``train``; classes in ``class_labels_indices.csv``'s index order, named by their
    ``display_name`` with each comma made a semicolon (a clip's names are joined by commas). A clip's ``fname`` is
    its path under ``root`` (``balanced_train_segments/<YTID>_30.000.wav``).

    Clips listed but without their audio are left out, with one warning: "N of M listed clips are missing, e.g.
    ...". One-line errors naming the file and line for a row without four fields, a label not in
    ``class_labels_indices.csv``, a segment listed twice; and for no segments file, or no clip left in a split.
    """
    root = Path(root).expanduser()
    names, mids = _vocabulary(root / AUDIOSET_CLASSES, ("mid", "name"), True, f"AudioSet's {AUDIOSET_CLASSES}", True)
    mid_name = dict(zip(mids, names))
    files = sorted(root.glob("*_segments.csv"))
    lists: dict[str, list[ClipMeta]] = {"train": [], "test": []}
    seen: dict[tuple[str, str], str] = {}
    missing, counts = [], []
    for path in files:
        split = "test" if path.name.startswith("eval") else "train"
        folder = root / path.stem
        present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        rows = _segments(path, mid_name)
        lost = 0
        for ytid, start, labels, n in rows:
            key = (ytid, start)
            if key in seen:
                raise ValueError(f"{path}, line {n}: segment {ytid} at {start} s is listed again (in {seen[key]})")
            seen[key] = f"{path.name}, line {n}"
            name = _audio_name(ytid, start, present)
            if name is None:
                lost += 1
                missing.append(f"{path.stem}/{ytid}_{start}.wav")
                continue
            lists[split].append(ClipMeta(f"{path.stem}/{name}", ",".join(labels), True))
        counts.append(f"{path.stem}: {lost} of {len(rows)}")
    if not files:
        raise FileNotFoundError(f"{root}: no *_segments.csv (expected AudioSet's, e.g. balanced_train_segments.csv)")
    if missing:
        warnings.warn(
            f"{root}: {len(missing)} of {len(seen)} listed clips are missing ({', '.join(counts)}), e.g. "
            f"{missing[:_SHOWN]}; they are left out",
            stacklevel=2,
        )
    for split, which in (("train", "balanced/unbalanced train"), ("test", "eval_segments.csv")):
        if not lists[split]:
            raise FileNotFoundError(f"{root}: no clip of {which} with its audio; the {split} split is empty")
    return DatasetMeta(root, lists["train"], lists["test"], names, True, {"train": ".", "test": "."})
