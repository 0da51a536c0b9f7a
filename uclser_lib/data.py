"""Datasets: FSDnoisy18k-layout metadata, splits, HDF5 feature sets and packed clips."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .features import DEFAULT_PARAMS, AudioError, LogMelParams, extract_many
from .runtime import PAPER_SEED, DiskFullError, disk_full_error

__all__ = [
    "AUDIO_DIRS",
    "CLASSES",
    "EVAL_HOP",
    "FORMAT_VERSION",
    "META_DIR",
    "PATCH_FRAMES",
    "TEST_COLUMNS",
    "TRAIN_COLUMNS",
    "VAL_FRACTION",
    "ClipMeta",
    "DatasetMeta",
    "FeatureFileError",
    "FeatureSet",
    "PackedClips",
    "audio_durations",
    "extract_split",
    "feature_stats",
    "label_array",
    "load_features",
    "paper_splits",
    "read_meta",
    "multi_hot",
    "open_feature_file",
    "strata",
    "stratified_draw",
]

#: Frames per patch (about 1 s), docs/method.md §4.
PATCH_FRAMES = 101
#: Hop between evaluation patches, in frames.
EVAL_HOP = 50


@dataclass
class PackedClips:
    """Variable-length log-mel clips packed into one tensor, so batches are built on the device.

    ``data`` (sum of T_i, F) float32 holds the clips one after the other; clip ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``. ``labels``: (N,) int64 class indices (-1 when unknown) for a single-label
    set, or (N, C) float32 multi-hot (1 where the clip carries the class, else 0) for a multi-label one.
    """

    data: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(f"PackedClips.data must be (frames, bands), got shape {tuple(self.data.shape)}")
        if self.labels.ndim not in (1, 2):
            raise ValueError(
                "PackedClips.labels must be (N,) class indices or (N, C) multi-hot, "
                f"got shape {tuple(self.labels.shape)}"
            )
        if self.offsets.ndim != 1 or len(self.offsets) != len(self.labels) + 1:
            raise ValueError(
                f"PackedClips.offsets must have N + 1 = {len(self.labels) + 1} entries, got {tuple(self.offsets.shape)}"
            )
        if len(self.labels) == 0:
            raise ValueError("PackedClips holds no clip: the split is empty")
        if int(self.offsets[-1]) != self.data.shape[0]:
            raise ValueError(
                f"PackedClips.offsets[-1] = {int(self.offsets[-1])} but data has {self.data.shape[0]} frames"
            )

    @classmethod
    def from_list(cls, clips: list[np.ndarray], labels=None) -> PackedClips:
        """Pack a list of (T_i, F) arrays; ``labels`` (N,) class indices, (N, C) multi-hot, or None."""
        if len(clips) == 0:
            raise ValueError("PackedClips.from_list got no clip: the split is empty")
        lengths = torch.tensor([len(c) for c in clips], dtype=torch.int64)
        offsets = torch.zeros(len(clips) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        data = torch.from_numpy(np.concatenate([np.asarray(c, dtype=np.float32) for c in clips]))
        return cls(data, offsets, _label_tensor(labels, len(clips)))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) frames per clip."""
        return self.offsets[1:] - self.offsets[:-1]

    def clip(self, i: int) -> torch.Tensor:
        """Clip ``i`` as a (T_i, F) view."""
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def to(self, device) -> PackedClips:
        return PackedClips(self.data.to(device), self.offsets.to(device), self.labels.to(device))


def _label_tensor(labels, n: int) -> torch.Tensor:
    """``labels`` as PackedClips keeps them: (N,) int64 (-1 everywhere when None) or (N, C) float32 multi-hot."""
    if labels is None:
        return torch.full((n,), -1, dtype=torch.int64)
    t = torch.as_tensor(np.asarray(labels))
    return t.to(torch.float32) if t.ndim == 2 else t.to(torch.int64)


def multi_hot(label_sets, classes: list[str]) -> np.ndarray:
    """(N, C) float32 multi-hot rows from N collections of class names; ValueError naming an unknown class."""
    where = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(label_sets), len(classes)), dtype=np.float32)
    for n, names in enumerate(label_sets):
        for name in names:
            if name not in where:
                raise ValueError(f"label {name!r} is not one of the {len(classes)} classes")
            out[n, where[name]] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# FSDnoisy18k layout and metadata (docs/method.md §2)

#: The 20 classes of FSDnoisy18k; class index = position in this sorted list.
CLASSES = sorted(
    [
        "Acoustic_guitar",
        "Bass_guitar",
        "Clapping",
        "Coin_(dropping)",
        "Crash_cymbal",
        "Dishes_and_pots_and_pans",
        "Engine",
        "Fart",
        "Fire",
        "Fireworks",
        "Glass",
        "Hi-hat",
        "Piano",
        "Rain",
        "Slam",
        "Squeak",
        "Tearing",
        "Walk_or_footsteps",
        "Wind",
        "Writing",
    ]
)
TRAIN_COLUMNS = ("fname", "label", "aso_id", "manually_verified", "noisy_small")
TEST_COLUMNS = ("fname", "label", "aso_id")
AUDIO_DIRS = {"train": "FSDnoisy18k.audio_train", "test": "FSDnoisy18k.audio_test"}
META_DIR = "FSDnoisy18k.meta"


@dataclass(frozen=True)
class ClipMeta:
    """One row of train.csv / test.csv. ``clean`` = manually verified (every test clip is clean).

    In a multi-label dataset (FSD50K's layout) ``label`` holds the clip's class names joined by commas, as FSD50K's
    CSVs write them; :attr:`labels` splits them."""

    fname: str
    label: str
    clean: bool
    noisy_small: bool = False

    @property
    def labels(self) -> tuple[str, ...]:
        """The clip's class names: ``label`` split at commas (one name in a single-label dataset)."""
        return tuple(self.label.split(","))


@dataclass
class DatasetMeta:
    """The metadata of a dataset in FSDnoisy18k's layout: clip lists per split and the class list.

    ``multilabel``: each clip may carry several classes (:attr:`ClipMeta.labels`); its feature files then hold
    (N, C) multi-hot labels. ``audio_dirs``: the folder of each split's audio under ``root``."""

    root: Path
    train: list[ClipMeta]
    test: list[ClipMeta]
    classes: list[str]
    multilabel: bool = False
    audio_dirs: dict[str, str] = dataclasses.field(default_factory=lambda: dict(AUDIO_DIRS))

    def clips(self, split: str) -> list[ClipMeta]:
        if split not in self.audio_dirs:
            raise ValueError(f"unknown split {split!r}: expected one of {sorted(self.audio_dirs)}")
        return self.train if split == "train" else self.test

    def audio_path(self, split: str, clip: ClipMeta) -> Path:
        return self.root / self.audio_dirs[split] / clip.fname


def label_array(meta, clips: list[ClipMeta]) -> np.ndarray:
    """The labels of ``clips`` of a dataset's ``meta`` (anything with ``classes``, and ``multilabel`` where it is
    multi-label) as feature files store them: (N,) int64 class indices, or (N, C) float32 multi-hot."""
    if getattr(meta, "multilabel", False):
        return multi_hot([c.labels for c in clips], meta.classes)
    return np.array([meta.classes.index(c.label) for c in clips], dtype=np.int64)


def audio_durations(meta: DatasetMeta, split: str) -> np.ndarray:
    """Duration in seconds of every audio file of ``split``, from the file headers (no audio is decoded)."""
    import soundfile as sf

    return np.array([sf.info(meta.audio_path(split, c)).duration for c in meta.clips(split)])


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a metadata CSV, each with its ``_line``; a one-line error naming the file, line and value for
    text that is not UTF-8, a missing column, an empty or space-padded fname or label, or a clip listed twice.
    A UTF-8 byte-order mark is accepted."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: metadata file not found (expected FSDnoisy18k's layout: {META_DIR}/{path.name})"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        at = err.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # utf-8-sig counts from after the mark
        line = raw[:at].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte {raw[at]:#04x} at offset {at}); save the file as UTF-8"
        ) from None
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; header is {header}, expected {list(columns)}")
    rows, first_line = [], {}
    for row in reader:
        line = reader.line_num
        if None in row:  # DictReader keeps the fields beyond the header's under None
            raise ValueError(
                f"{path}, line {line}: {len(header) + len(row[None])} fields, the header has {len(header)} "
                "(an unquoted comma in a value?)"
            )
        short = [c for c in header if row[c] is None]  # DictReader fills the fields a short row lacks with None
        if short:
            raise ValueError(
                f"{path}, line {line}: missing column(s) {short}: the row has {len(header) - len(short)} field(s), "
                f"the header {len(header)}"
            )
        for c in ("fname", "label"):
            value = row.get(c)
            if value in (None, ""):
                raise ValueError(f"{path}, line {line}: empty {c} in {row}")
            if value != value.strip():
                raise ValueError(f"{path}, line {line}: {c} {value!r} has leading or trailing spaces")
        fname = row["fname"]
        if fname in first_line:
            first = rows[first_line[fname]]
            what = "again" if first["label"] == row["label"] else f"with label {first['label']!r}"
            raise ValueError(
                f"{path}, line {line}: {fname} (label {row['label']!r}) is listed {what} at line {first['_line']}; "
                "a clip must be listed once"
            )
        first_line[fname] = len(rows)
        row["_line"] = line
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no clip listed")
    return rows


def _flag(path: Path, row: dict, column: str) -> bool:
    value = row[column].strip()
    if value not in ("0", "1"):
        raise ValueError(
            f"{path}, line {row['_line']}: column {column!r} of {row['fname']} is {value!r}, expected 0 or 1"
        )
    return value == "1"


def read_meta(root, check_files: bool = True) -> DatasetMeta:
    """Read ``FSDnoisy18k.meta/train.csv`` and ``test.csv`` under ``root`` and check them.

    Raises a ``ValueError``/``FileNotFoundError`` naming the file for a missing or malformed column, a label of
    test.csv unknown to train.csv, or (``check_files``) an audio file listed in a CSV but absent.
    """
    root = Path(root).expanduser()
    meta = root / META_DIR
    train_rows = _read_csv(meta / "train.csv", TRAIN_COLUMNS)
    test_rows = _read_csv(meta / "test.csv", TEST_COLUMNS)
    train = [
        ClipMeta(
            r["fname"],
            r["label"],
            _flag(meta / "train.csv", r, "manually_verified"),
            _flag(meta / "train.csv", r, "noisy_small"),
        )
        for r in train_rows
    ]
    test = [ClipMeta(r["fname"], r["label"], True) for r in test_rows]
    in_train = {r["fname"]: r["_line"] for r in train_rows}
    both = [r for r in test_rows if r["fname"] in in_train]
    if both:
        r = both[0]
        raise ValueError(
            f"{meta / 'test.csv'}, line {r['_line']}: {r['fname']} is also in train.csv (line {in_train[r['fname']]}); "
            f"a clip belongs to one split ({len(both)} clip(s) are in both)"
        )
    classes = sorted({c.label for c in train})
    unknown = sorted({c.label for c in test} - set(classes))
    if unknown:
        line = next(r["_line"] for r in test_rows if r["label"] == unknown[0])
        raise ValueError(
            f"{meta / 'test.csv'}, line {line}: label(s) {unknown} do not occur in train.csv (classes: {classes})"
        )
    out = DatasetMeta(root, train, test, classes)
    if check_files:
        for split in AUDIO_DIRS:
            folder = root / AUDIO_DIRS[split]
            present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
            absent = [c.fname for c in out.clips(split) if c.fname not in present]
            if absent:
                raise FileNotFoundError(
                    f"{folder}: {len(absent)} file(s) listed in {split}.csv are missing, e.g. {absent[:5]}"
                )
    return out


# ---------------------------------------------------------------------------------------------
# HDF5 feature sets: one self-describing file per split

FORMAT_VERSION = 1


@dataclass
class FeatureSet:
    """The log-mel features of one split with their metadata (CPU tensors in ``clips``)."""

    clips: PackedClips
    fnames: list[str]
    clean: np.ndarray  # (N,) bool, manually verified
    noisy_small: np.ndarray  # (N,) bool
    classes: list[str]
    params: LogMelParams

    def __len__(self) -> int:
        return len(self.fnames)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class indices into ``classes``; (N, C) float32 multi-hot in a :attr:`multilabel` set."""
        return self.clips.labels.numpy()

    @property
    def multilabel(self) -> bool:
        """True when each clip carries a set of classes ((N, C) multi-hot :attr:`labels`)."""
        return self.clips.labels.ndim == 2

    def with_labels(self, labels) -> FeatureSet:
        """The same clips with other labels: (N,) class indices into ``classes``, or (N, C) multi-hot 0/1.

        The features are shared, not copied.
        """
        labels = _label_tensor(labels, len(self))
        n, c = len(self), len(self.classes)
        if labels.ndim == 2:
            if labels.shape != (n, c) or not bool(((labels == 0) | (labels == 1)).all()):
                raise ValueError(f"with_labels: expected ({n}, {c}) multi-hot 0/1, got shape {tuple(labels.shape)}")
        elif labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= c:
            raise ValueError(f"with_labels: expected {n} class indices in [0, {c}), got shape {tuple(labels.shape)}")
        return dataclasses.replace(self, clips=PackedClips(self.clips.data, self.clips.offsets, labels))

    def subset(self, index) -> FeatureSet:
        """The clips at ``index`` (a boolean mask or integer indices), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        if len(index) == 0:
            raise ValueError("FeatureSet.subset selects no clip: the split is empty after filtering")
        packed = PackedClips.from_list([self.clips.clip(int(i)).numpy() for i in index], self.labels[index])
        return FeatureSet(
            packed,
            [self.fnames[i] for i in index],
            self.clean[index],
            self.noisy_small[index],
            self.classes,
            self.params,
        )


def feature_stats(packed) -> tuple[float, float]:
    """Mean and standard deviation over every value of the training features.

    The std is the correct one (population std), not docs/released-code.md's.
    """
    x = packed.data.double()
    return float(x.mean()), float(x.std(unbiased=False))


class FeatureFileError(ValueError):
    """A feature file is not what the caller expects (not ours, other parameters, other clips)."""


def _check_params(path: Path, stored: dict, params: LogMelParams) -> None:
    wanted = params.to_dict()
    diff = {k: (stored.get(k), wanted[k]) for k in wanted if stored.get(k) != wanted[k]}
    if diff:
        raise FeatureFileError(
            f"{path}: extracted with other parameters than requested "
            + ", ".join(f"{k}: file has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
            + " (delete the file to re-extract)"
        )


def open_feature_file(path, params: LogMelParams = DEFAULT_PARAMS) -> h5py.File:
    """A feature file written by :func:`extract_split`, open for reading (close it, e.g. ``with``), once checked:
    ``FileNotFoundError`` when absent, :class:`FeatureFileError` when it is not ours, of another format version, or
    made with other parameters than ``params``. Nothing is read beyond its attributes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such feature file (run uclser_lib.data.extract_split first)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({err})") from None
    try:
        if f.attrs.get("format") != "uclser-logmel" or int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise FeatureFileError(f"{path}: not a uclser log-mel feature file of format version {FORMAT_VERSION}")
        _check_params(path, json.loads(f.attrs["params"]), params)
    except BaseException:
        f.close()
        raise
    return f


def load_features(path, params: LogMelParams = DEFAULT_PARAMS) -> FeatureSet:
    """Load a feature file written by :func:`extract_split`; an error if it was made with other parameters."""
    with open_feature_file(path, params) as f:
        packed = PackedClips(
            torch.from_numpy(f["features"][...]), torch.from_numpy(f["offsets"][...]), _label_tensor(f["label"][...], 0)
        )
        return FeatureSet(
            packed,
            [s.decode() for s in f["fname"][...]],
            f["clean"][...].astype(bool),
            f["noisy_small"][...].astype(bool),
            json.loads(f.attrs["classes"]),
            params,
        )


def _lock_holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "an unknown process"
    return f"PID {pid}" if pid.isdigit() else "an unknown process"


@contextlib.contextmanager
def _locked(path: Path, what: str = "this extraction", busy=None):
    """An exclusive lock on ``path`` (two processes never extract the same split at once).

    A POSIX record lock (``lockf``): it belongs to this process alone, is not inherited by forked DataLoader
    workers and is released by the kernel when the process dies, however it dies (even ``kill -9``). The holder
    writes its PID into the file; a process that has to wait says which lock it waits for and who holds it.
    ``busy``: when given, a held lock is not waited for: ``busy(holder)`` (holder: ``"PID 123"``) is raised instead
    (a pre-training run's folder, :func:`uclser_lib.train.run_lock`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise OSError(err.errno, f"{path}: cannot create the lock file for {what} ({err.strerror})") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if busy is not None:
                raise busy(_lock_holder(path)) from None
            print(
                f"waiting for {path}: held by {_lock_holder(path)} (another extraction of the same features); "
                "it is released when that process ends",
                file=sys.stderr,
                flush=True,
            )
            t0 = time.monotonic()
            fcntl.lockf(fd, fcntl.LOCK_EX)
            print(f"got {path} after {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _same_job(stored: str | None, identity: dict) -> bool:
    """True when a file's ``job`` attribute describes ``identity`` (files that recorded ``on_error`` included)."""
    try:
        job = json.loads(stored or "{}")
    except ValueError:
        return False
    job.pop("on_error", None)
    return job == identity


def _sources(meta, split: str, clips: list[ClipMeta]) -> tuple[str, np.ndarray]:
    """The identity of the audio files: their folder, and (N, 2) int64 size in bytes and mtime in ns (-1: absent)."""
    stats = np.full((len(clips), 2), -1, dtype=np.int64)
    for i, c in enumerate(clips):
        try:
            st = os.stat(meta.audio_path(split, c))
        except OSError:
            continue
        stats[i] = (st.st_size, st.st_mtime_ns)
    return str(Path(meta.root).expanduser().resolve()), stats


def _changed_source(f: h5py.File, meta, split: str, clips: list[ClipMeta], sources) -> str | None:
    """Why the features in ``f`` no longer match their audio files (``sources``), or None when they do."""
    root, stats = sources
    if "source_stat" not in f:
        return "it records no identity of its audio files (written by an older uclser_lib)"
    if f.attrs.get("source_root") != root:
        return f"its audio came from {f.attrs.get('source_root')}, now from {root}"
    stored = f["source_stat"][...]
    if stored.shape != stats.shape:
        return "its list of audio files differs"
    bad = np.flatnonzero((stored != stats).any(axis=1))
    if len(bad):
        i = int(bad[0])
        (s0, t0), (s1, t1) = stored[i], stats[i]
        how = "size" if s0 != s1 else "modification time"
        return (
            f"{meta.audio_path(split, clips[i])} changed since extraction ({how}: {s0 if s0 != s1 else t0} -> "
            f"{s1 if s0 != s1 else t1}; {len(bad)} file(s) changed)"
        )
    return None


def _abandon(f: h5py.File) -> None:
    """Close ``f`` after an error without another write to its file, so that it cannot crash the process.

    An HDF5 write that failed (a disk that filled after :func:`_check_space`) leaves the library with metadata it
    cannot write: closing such a file fails, and the file stays open until the interpreter exits, where h5py's and
    HDF5's clean-up crash (a segfault, after the error message). So the file's descriptor is first pointed at
    ``os.devnull``: the close then writes nowhere and succeeds. The file on disk keeps what the last
    :func:`_flush` wrote (what was written since is lost, as with ``kill -9``), and the rerun resumes from it or, if
    it is unreadable, starts over. Nothing is raised here: the caller re-raises the error that brought us here.
    """
    try:
        if not f.id.valid:
            return
        fd = f.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except Exception:  # noqa: BLE001 — not a plain file descriptor: leave the file as it is rather than crash
        return
    with contextlib.suppress(Exception):
        f.close()


@contextlib.contextmanager
def _closing(f: h5py.File):
    """``with _closing(f) as f``: closed as usual at the end; after an error, :func:`_abandon`-ed."""
    try:
        yield f
    except BaseException:
        _abandon(f)
        raise
    f.close()


def _open_partial(part: Path, clips: list[ClipMeta], identity: dict, sources) -> h5py.File:
    """Open the partial file of an interrupted extraction if it is the same job on the same audio files, else start
    a new one."""
    if part.exists():
        try:
            f = h5py.File(part, "a")
            root, stats = sources
            same = (
                _same_job(f.attrs.get("job"), identity)
                and f.attrs.get("source_root") == root
                and "source_stat" in f
                and np.array_equal(f["source_stat"][...], stats)
            )
            if same:
                return f
            f.close()
        except (OSError, KeyError, ValueError):
            pass  # a crash may leave a partial file unreadable: start over
        part.unlink()
    f = h5py.File(part, "w")
    try:
        f.attrs["job"] = json.dumps(identity)
        f.attrs["n_done"] = 0
        f.attrs["skipped"] = "[]"
        f.attrs["source_root"] = sources[0]
        f.create_dataset("source_stat", data=sources[1])
        f.create_dataset(
            "features",
            shape=(0, identity["params"]["n_mels"]),
            maxshape=(None, identity["params"]["n_mels"]),
            dtype="float32",
            chunks=(512, identity["params"]["n_mels"]),
        )
        f.create_dataset("lengths", shape=(len(clips),), dtype="int64", fillvalue=-1)
    except BaseException:
        _abandon(f)
        raise
    return f


#: The datasets written when an extraction is finished (a rerun after a crash before the rename rewrites them).
_FINAL_DATASETS = ("offsets", "fname", "label", "clean", "noisy_small")


def _check_complete(
    out_path: Path, meta, split: str, clips: list[ClipMeta], identity: dict, sources, on_error: str
) -> str | None:
    """None when ``out_path`` holds this extraction of these audio files (it is used as it is); else why it is stale.

    Raises :class:`FeatureFileError` when it holds another extraction (other parameters or clips).
    """
    try:
        f = h5py.File(out_path, "r")
    except OSError as err:
        return f"it is not a readable HDF5 file ({err})"
    with f:
        if not _same_job(f.attrs.get("job"), identity):
            raise FeatureFileError(
                f"{out_path}: exists but holds another extraction (other parameters or clips); delete it to re-extract"
            )
        why = _changed_source(f, meta, split, clips, sources)
        skipped = json.loads(f.attrs.get("skipped", "[]"))
    if why is None and skipped and on_error == "raise":
        warnings.warn(
            f"{out_path}: made with on_error='skip', without {len(skipped)} unreadable file(s):\n  "
            + "\n  ".join(skipped),
            stacklevel=3,
        )
    return why


def extract_split(
    meta: DatasetMeta,
    split: str,
    out_path,
    params: LogMelParams = DEFAULT_PARAMS,
    device=None,
    workers: int | None = None,
    on_error: str = "raise",
    progress: bool = True,
    flush_every: int = 256,
) -> Path:
    """Extract the log-mel features of every clip of ``split`` into one HDF5 file at ``out_path``.

    Resumable: progress is kept in ``<out_path>.part`` and flushed every ``flush_every`` clips; the finished
    file is renamed into place, so ``out_path`` is either absent or complete. The file records the identity of its
    audio files (their folder, each one's size and modification time): an existing complete file with the same
    parameters and clips is kept as it is while its audio files are unchanged, and re-extracted, with a warning
    saying which file changed, when they are not. Using a complete file needs no write access (a read-only folder
    works). ``on_error="raise"`` stops at the first unreadable file (naming it; what was extracted before is kept
    for the resume); ``"skip"`` leaves such files out and lists them in the file's ``skipped`` attribute and in a
    warning. A file made with ``"skip"`` is used by later calls with either value (with a warning under
    ``"raise"``). A full disk stops the extraction with "no space left on device" naming the file; what was
    flushed before is kept for the resume.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    out_path = Path(out_path)
    clips = meta.clips(split)
    identity = {"split": split, "params": params.to_dict(), "fnames": [c.fname for c in clips]}
    part = out_path.with_name(out_path.name + ".part")
    sources = _sources(meta, split, clips)
    if out_path.exists():  # no lock needed to read a complete file: it was renamed into place whole
        why = _check_complete(out_path, meta, split, clips, identity, sources, on_error)
        if why is None:
            return out_path
    with _locked(out_path.with_name(out_path.name + ".lock"), f"the extraction of {out_path}"):
        if out_path.exists():  # made or refreshed by another process while we waited?
            why = _check_complete(out_path, meta, split, clips, identity, sources, on_error)
            if why is None:
                return out_path
            warnings.warn(f"{out_path}: re-extracting its features: {why}", stacklevel=2)
            out_path.unlink()
        try:
            skipped = _extract_into(
                part, meta, split, clips, identity, sources, params, device, workers, on_error, progress, flush_every
            )
            os.replace(part, out_path)
        except DiskFullError:
            raise  # ours (_check_space), saying what was kept
        except (OSError, RuntimeError) as err:
            full = disk_full_error(err, part)
            if full is not None:
                raise full from None
            raise
    if skipped:
        warnings.warn(
            f"{out_path}: skipped {len(skipped)} unreadable file(s):\n  " + "\n  ".join(skipped), stacklevel=2
        )
    return out_path


def _extract_into(
    part, meta, split, clips, identity, sources, params, device, workers, on_error, progress, flush_every
) -> list[str]:
    """Extract (or resume extracting) ``clips`` into the partial file ``part`` and finish it; the skipped files."""
    with _closing(_open_partial(part, clips, identity, sources)) as f:
        done = int(f.attrs["n_done"])
        skipped = json.loads(f.attrs["skipped"])
        lengths = f["lengths"]
        feats = f["features"]
        feats.resize(int(np.maximum(lengths[:done], 0).sum()), axis=0)  # drop rows written after the last flush
        paths = [meta.audio_path(split, c) for c in clips[done:]]
        bar = tqdm(total=len(clips), initial=done, desc=f"log-mel {split}", unit="clip", disable=not progress)
        pending, pending_len = [], []
        with bar:
            for k, (_, x, err, _) in enumerate(extract_many(paths, params, device, workers)):
                if err is not None:
                    if on_error == "raise":
                        _flush(f, feats, lengths, pending, pending_len, done + k, skipped)
                        raise AudioError(f"while extracting {split}: {err}")
                    skipped.append(err)
                    pending_len.append(0)
                else:
                    pending.append(x)
                    pending_len.append(len(x))
                bar.update()
                if len(pending_len) >= flush_every:
                    _flush(f, feats, lengths, pending, pending_len, done + k + 1, skipped)
            _flush(f, feats, lengths, pending, pending_len, len(clips), skipped)
        keep = np.flatnonzero(lengths[...] > 0)
        if len(keep) == 0:
            raise AudioError(f"while extracting {split}: no file could be read ({len(skipped)} skipped)")
        offsets = np.zeros(len(keep) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths[...][keep])
        _check_space(part, 64 * len(clips) + (1 << 20), len(clips))
        for name in _FINAL_DATASETS:  # left by a run that finished the file but died before the rename
            if name in f:
                del f[name]
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("fname", data=np.array([clips[i].fname.encode() for i in keep]))
        f.create_dataset("label", data=label_array(meta, [clips[i] for i in keep]))
        f.create_dataset("clean", data=np.array([clips[i].clean for i in keep]))
        f.create_dataset("noisy_small", data=np.array([clips[i].noisy_small for i in keep]))
        f.attrs.update(
            {
                "format": "uclser-logmel",
                "format_version": FORMAT_VERSION,
                "split": split,
                "params": json.dumps(params.to_dict()),
                "classes": json.dumps(meta.classes),
                "source": str(meta.root),
                "uclser_version": __version__,
            }
        )
        f.flush()
    return skipped


#: Free space kept on the disk of a feature file beyond what the next write needs (HDF5 cannot survive a failed
#: write: its file would be left unreadable, so a write that might not fit is not started).
SPACE_MARGIN = 64 << 20


def _check_space(path: Path, needed: int, n_kept: int) -> None:
    """Raise :class:`DiskFullError` (errno ENOSPC) naming ``path`` when its disk cannot take ``needed`` bytes and
    the margin."""
    free = shutil.disk_usage(path.parent).free
    if free < 2 * needed + SPACE_MARGIN:
        raise DiskFullError(
            errno.ENOSPC,
            f"{path}: no space left on device ({free / 1e6:.1f} MB free, the next write needs about "
            f"{(2 * needed + SPACE_MARGIN) / 1e6:.1f} MB); the {n_kept} clip(s) extracted so far are kept: free some "
            "space, then run again to resume",
        )


def _flush(f, feats, lengths, pending: list, pending_len: list, n_done: int, skipped: list) -> None:
    """Append the pending clips to the partial file and record how far the extraction got.

    The rows go first and ``n_done`` last. A write that may not fit on the disk is not started (``OSError(ENOSPC)``),
    so the partial file keeps the last flushed state.
    """
    start = n_done - len(pending_len)
    _check_space(Path(f.filename), sum(x.nbytes for x in pending) + 8 * len(pending_len) + (1 << 20), start)
    if pending:
        rows = np.concatenate(pending)
        n = feats.shape[0]
        feats.resize(n + len(rows), axis=0)
        feats[n:] = rows
    if pending_len:
        lengths[start:n_done] = pending_len
    f.flush()
    f.attrs["n_done"] = n_done
    f.attrs["skipped"] = json.dumps(skipped)
    f.flush()
    pending.clear()
    pending_len.clear()


# ---------------------------------------------------------------------------------------------
# Splits (docs/method.md §2) and the one call that gets a notebook its data


#: The fraction of each class's clean (labelled) training clips held out for validation, in every dataset's splits.
VAL_FRACTION = 0.15


def strata(labels) -> np.ndarray:
    """(N,) the class each clip is stratified by: its class for (N,) labels; for (N, C) multi-hot labels its rarest
    class (fewest clips in ``labels``; ties to the lower index), so a draw within strata keeps rare classes; -1 for a
    clip without a label."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels
    counts = labels.sum(0)
    rarity = np.where(labels > 0, counts[None, :], np.inf)
    return np.where(labels.sum(1) > 0, rarity.argmin(1), -1).astype(np.int64)


def stratified_draw(
    labels: np.ndarray, index: np.ndarray, fraction: float, rng: np.random.Generator, min_class: int = 2
) -> np.ndarray:
    """A seeded ``fraction`` of the clip indices ``index`` within each class: the per-class draw of every split.

    ``labels`` (N,) int class of every clip, or (N, C) multi-hot (each clip drawn within its :func:`strata`);
    ``index`` (M,) int the clips to draw from. For each class ``c`` of
    ``labels[index]`` in increasing order, the first ``max(1, round(fraction * n_c))`` of ``rng.permutation`` of
    its ``n_c`` clips; a class with fewer than ``min_class`` clips gives none (``min_class=2``: a held-out split
    never takes a class's only clip; ``min_class=1``: a subsample keeps every present class). Returns the drawn
    indices sorted, int64. The classes are drawn in one order from one ``rng``, so a fixed seed gives fixed
    clips, and with one seed a smaller ``fraction`` gives a subset of a larger one's.
    """
    index = np.asarray(index, dtype=np.int64)
    of_index = strata(labels)[index]
    held = []
    for c in np.unique(of_index):
        members = rng.permutation(index[of_index == c])
        n = max(1, int(round(fraction * len(members)))) if len(members) >= min_class else 0
        held.extend(members[:n].tolist())
    return np.array(sorted(held), dtype=np.int64)


def paper_splits(
    train: FeatureSet, test: FeatureSet, seed: int = PAPER_SEED, clean_val_fraction: float = VAL_FRACTION
) -> dict[str, FeatureSet]:
    """The splits of docs/method.md §2 as feature sets.

    ``pretrain``: the noisy train subset (its labels are not used by pre-training; they are the noisy-label
    task's training labels); ``val``: the clean train subset (model selection); ``test``; and the clean
    downstream task's ``clean_train`` / ``clean_val``: the clean clips split 85/15 within each class
    (:func:`stratified_draw` seeded by ``seed``) so that every class with two or more clips has a validation clip.
    Unlike the released code, ``clean_val`` holds no clip of ``clean_train`` (docs/released-code.md).
    """
    if not 0 < clean_val_fraction < 1:
        raise ValueError(f"clean_val_fraction must be in (0, 1), got {clean_val_fraction}")
    if train.classes != test.classes:
        raise ValueError(f"train and test have different class lists: {train.classes} vs {test.classes}")
    val_idx = stratified_draw(
        train.labels, np.flatnonzero(train.clean), clean_val_fraction, np.random.default_rng(seed)
    )
    in_val = np.zeros(len(train), dtype=bool)
    in_val[val_idx] = True
    return {
        "pretrain": train.subset(~train.clean),
        "val": train.subset(train.clean),
        "test": test,
        "clean_train": train.subset(train.clean & ~in_val),
        "clean_val": train.subset(in_val),
    }
