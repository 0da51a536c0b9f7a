"""Real audio as a course dataset: ESC-50 and your own folders, turned into the same feature files and splits.

:func:`prepare_esc50` and :func:`prepare_folder` give a :class:`RealDataset`, which is a
:class:`uclser_lib.datasets.PreparedDataset` as :class:`uclser_lib.datasets.Course` is, so ``pretrain``,
``linear-eval --task clean``, ``finetune --task clean`` and the notebooks run on it unchanged; its folds
(:meth:`RealDataset.fold_ids`) are what :func:`uclser_lib.experiments.cross_validate` evaluates over (ESC-50's
official 5-fold protocol).

Your own folder, ``ROOT``, holds class folders (``ROOT/<class>/*.wav``, labelled) or ``ROOT/labelled/<class>/...``
and/or ``ROOT/unlabelled/`` (any audio under it, at any depth, for pre-training only). WAV, FLAC and OGG at any
sample rate and channel count (read by soundfile, averaged to mono, resampled by the feature extractor).

Splits (``splits(seed)``, keys of :func:`uclser_lib.data.paper_splits`):

- ``test``: ESC-50: the clips of ``test_fold`` (default 5); a folder: a seeded stratified 20 % of each class.
- ``clean_train`` / ``clean_val``: the other labelled clips, seeded stratified 85 / 15 within each class; ``val`` is
  ``clean_val``.
- ``pretrain``: the unlabelled part when there is one; otherwise the training clips ``clean_train`` (labels unused).
  There are no noisy labels here: with no unlabelled part the "noisy" task is therefore the clean task; with one,
  use ``--task clean``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from .data import VAL_FRACTION, ClipMeta, FeatureSet, PackedClips, extract_split, load_features, stratified_draw
from .features import DEFAULT_PARAMS, AudioError
from .runtime import PAPER_SEED, data_root

__all__ = [
    "AUDIO_EXTENSIONS",
    "ESC50_COLUMNS",
    "FolderError",
    "RealDataset",
    "check_folds",
    "check_verified",
    "features_dir_of",
    "folds_of",
    "prepare_esc50",
    "prepare_folder",
    "read_esc50",
    "scan_folder",
    "splits_without_noisy",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
#: The fraction of each class held out for test (folders only); of the rest, :data:`~uclser_lib.data.VAL_FRACTION`
#: is held out for validation.
TEST_FRACTION = 0.2


class FolderError(ValueError):
    """A dataset folder is not what is expected; the message names the folder or file."""


class _FileList:
    """What :func:`~uclser_lib.data.extract_split` needs of a dataset: clips per split, their paths, the classes."""

    def __init__(self, root: Path, lists: dict[str, list[ClipMeta]], classes: list[str]):
        self.root, self.lists, self.classes = root, lists, classes

    def clips(self, split: str) -> list[ClipMeta]:
        return self.lists[split]

    def audio_path(self, split: str, clip: ClipMeta) -> Path:
        return self.root / clip.fname

    @property
    def train(self) -> list[ClipMeta]:
        return self.lists.get("train", [])

    @property
    def test(self) -> list[ClipMeta]:
        return self.lists.get("test", [])


@dataclass
class RealDataset:
    """A real dataset's features: ``labelled`` (all labelled clips, or None), ``unlabelled`` (or None), ESC-50's
    ``folds``; a :class:`uclser_lib.datasets.PreparedDataset`."""

    root: Path
    name: str
    labelled: FeatureSet | None
    unlabelled: FeatureSet | None = None
    folds: np.ndarray | None = None  # (N labelled,) fold of each clip (ESC-50), else None
    test_fold: int | None = None
    skipped: list[str] = field(default_factory=list)
    features_dir: Path | None = None  # where its feature files are

    def check(self) -> None:
        """Refuse, as :meth:`splits` would, a dataset whose labelled clips cannot be split (a class with too few
        readable clips), without making the splits: ``extract`` calls it, so the problem shows there and not only
        in ``pretrain``. Raises :class:`FolderError` naming the folder, the class and its files."""
        if self.labelled is not None:
            _check_class_sizes(self.labelled, self.root, 3 if self.folds is None else 2)

    def check_task(self, task: str) -> None:
        """Refuse evaluation without labelled clips, and the noisy-label task when the pre-training clips are an
        unlabelled part (they have no labels)."""
        self._need_labels()
        if task == "noisy" and self.unlabelled is not None:
            raise FolderError(
                f"--task noisy: {self.root / 'unlabelled'}: the noisy-label task trains on the pre-training clips, "
                "here the unlabelled part, which has no labels; use --task clean"
            )

    @property
    def classes(self) -> list[str]:
        return self._need_labels().classes

    def _need_labels(self) -> FeatureSet:
        if self.labelled is None:
            raise FolderError(
                f"{self.root}: no labelled clips (class folders); they are needed for validation, test and evaluation"
            )
        return self.labelled

    def _test_mask(self, seed: int, test_fold: int | None) -> np.ndarray:
        lab = self._need_labels()
        if self.folds is not None:
            fold = test_fold or self.test_fold or int(self.folds.max())
            if fold not in set(self.folds.tolist()):
                raise FolderError(f"{self.name}: no fold {fold} (folds: {sorted(set(self.folds.tolist()))})")
            return self.folds == fold
        mask = np.zeros(len(lab), dtype=bool)
        mask[stratified_draw(lab.labels, np.arange(len(lab)), TEST_FRACTION, np.random.default_rng(seed + 1))] = True
        return mask

    @property
    def train(self) -> FeatureSet:
        """The labelled clips outside the default test split (what ``extract`` reports)."""
        lab = self._need_labels()
        return lab.subset(~self._test_mask(PAPER_SEED, None))

    @property
    def test(self) -> FeatureSet:
        lab = self._need_labels()
        return lab.subset(self._test_mask(PAPER_SEED, None))

    @property
    def meta(self) -> _FileList:
        """The clips of ``train`` and ``test`` in their order, as a :class:`~uclser_lib.data.DatasetMeta` lists them
        (``meta.train``, ``meta.clips(split)``, ``meta.audio_path(split, clip)``, ``meta.classes``): the notebooks
        read a clip's audio through it."""
        lists = {
            split: [ClipMeta(f, fs.classes[y], bool(c)) for f, y, c in zip(fs.fnames, fs.labels, fs.clean)]
            for split, fs in (("train", self.train), ("test", self.test))
        }
        return _FileList(self.root, lists, self.classes)

    def splits(self, seed: int = PAPER_SEED, test_fold: int | None = None) -> dict[str, FeatureSet]:
        """The splits of the module docstring; ``test_fold``: ESC-50's held-out fold (default: the last)."""
        lab = self._need_labels()
        _check_class_sizes(lab, self.root, 3 if self.folds is None else 2)
        in_test = self._test_mask(seed, test_fold)
        rest = np.flatnonzero(~in_test)
        val = stratified_draw(lab.labels, rest, VAL_FRACTION, np.random.default_rng(seed))
        train = np.setdiff1d(rest, val)
        out = {
            "test": lab.subset(in_test),
            "clean_train": lab.subset(train),
            "clean_val": lab.subset(val),
        }
        out["val"] = out["clean_val"]
        out["pretrain"] = self.unlabelled if self.unlabelled is not None else out["clean_train"]
        return out

    def fold_ids(self) -> list[int]:
        """The folds of a cross-validation: ESC-50's 1-5; a folder's single seeded split: ``[0]``."""
        return sorted(set(self.folds.tolist())) if self.folds is not None else [0]

    def summary(self, seed: int = PAPER_SEED) -> str:
        """Clips, classes, durations, labelled/unlabelled counts and what each split is used for."""
        hop = DEFAULT_PARAMS.hop_length / DEFAULT_PARAMS.sr
        lines = [f"{self.name} ({self.root})"]
        for what, fs in (("labelled", self.labelled), ("unlabelled", self.unlabelled)):
            if fs is None:
                lines.append(f"  {what}: none")
                continue
            secs = (fs.clips.lengths.numpy() - 1) * hop
            q = np.percentile(secs, [0, 50, 100])
            lines.append(
                f"  {what}: {len(fs)} clips, {secs.sum() / 3600:.2f} h; duration min {q[0]:.1f} s, "
                f"median {q[1]:.1f} s, max {q[2]:.1f} s (clips under 1 s are tiled to 1 s)"
            )
        if self.labelled is not None:
            counts = np.bincount(self.labelled.labels, minlength=len(self.labelled.classes))
            lines.append(
                f"  classes: {len(self.labelled.classes)} ({counts.min()}-{counts.max()} clips each): "
                + ", ".join(self.labelled.classes[:8])
                + (" ..." if len(self.labelled.classes) > 8 else "")
            )
            try:
                s = self.splits(seed)
                test_what = (
                    f"fold {self.test_fold or int(self.folds.max())} (crossval: each of folds {self.fold_ids()})"
                    if self.folds is not None
                    else f"a seeded stratified {TEST_FRACTION * 100:.0f} % per class"
                )
                pre = (
                    "the unlabelled part"
                    if self.unlabelled is not None
                    else "the training clips (no unlabelled part; labels unused)"
                )
                lines += [
                    f"  pretrain: {len(s['pretrain'])} clips = {pre}",
                    f"  clean_train: {len(s['clean_train'])} clips (linear evaluation and fine-tuning train here)",
                    f"  clean_val = val: {len(s['clean_val'])} clips (model selection, kNN monitor)",
                    f"  test: {len(s['test'])} clips = {test_what}",
                ]
            except FolderError as err:
                lines.append(f"  splits: {err}")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable file(s): " + "; ".join(self.skipped[:5]))
        return "\n".join(lines)


def _check_class_sizes(lab: FeatureSet, root: Path, need: int) -> None:
    counts = np.bincount(lab.labels, minlength=len(lab.classes))
    for c, n in enumerate(counts):
        if n < need:
            files = [f for f, y in zip(lab.fnames, lab.labels) if y == c]
            raise FolderError(
                f"{root}: class {lab.classes[c]!r} has {n} readable clip(s) {files}; each class needs at least {need} "
                "(training, validation" + (", test)" if need == 3 else ")")
            )


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def scan_folder(root) -> tuple[dict[str, list[Path]], list[Path]]:
    """``({class: files}, unlabelled files)`` of your own folder (layout in the module docstring).

    A class folder holds its clips directly (hidden sub-folders, such as ``.ipynb_checkpoints``, are not read).
    Raises :class:`FolderError` naming the folder for a missing folder, an empty class folder, a class folder
    holding sub-folders of audio (``ROOT/animals/{dog,cat}/``: not merged into one class), audio files lying
    loose at the top of a folder of class folders, or a folder with no audio at all.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FolderError(f"{root}: no such folder (expected class folders and/or an 'unlabelled' folder)")
    unlabelled = _audio_files(root / "unlabelled") if (root / "unlabelled").is_dir() else []
    base = root / "labelled" if (root / "labelled").is_dir() else root
    loose = [p.name for p in base.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    if loose:
        raise FolderError(
            f"{base}: audio files {loose[:3]} lie outside any class folder; put them in {base}/<class>/ "
            f"(labelled) or {root}/unlabelled/ (pre-training only)"
        )
    classes = {}
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if base == root and d.name in ("unlabelled", "features"):
            continue
        nested = sorted(
            sub.name for sub in d.iterdir() if sub.is_dir() and not sub.name.startswith(".") and _audio_files(sub)
        )
        if nested:
            raise FolderError(
                f"{d}: class folder holding sub-folders of audio {nested}; expected its clips directly in it "
                f"({base}/<class>/*.wav): make each sub-folder a class folder of {base}, or move their files up"
            )
        files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise FolderError(f"{d}: empty class folder (no {'/'.join(AUDIO_EXTENSIONS)} file); remove it or add clips")
        classes[d.name] = files
    if not classes and not unlabelled:
        raise FolderError(f"{root}: no audio found (expected {root}/<class>/*.wav and/or {root}/unlabelled/)")
    return classes, unlabelled


def features_dir_of(root: Path) -> Path:
    """Where the features of the folder ``root`` go: ``<data root>/folders/<name>-<hash of its path>/features``."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
    return data_root() / "folders" / f"{root.name}-{digest}" / "features"


def _quiet_skipped() -> None:
    """Inside ``warnings.catch_warnings()``: silence the warning listing the skipped files (the summary lists them),
    and only it: the others, such as a file whose channels cancel when averaged, still reach the user (from the
    extraction's worker processes too, which inherit the filters)."""
    warnings.filterwarnings("ignore", message=r".*: skipped \d+ unreadable file", category=UserWarning)


def _extract(root: Path, clips: list[ClipMeta], classes: list[str], split: str, out_dir: Path, device, progress):
    """Extract ``clips`` into ``<out_dir>/<split>-<hash of the clip list>.h5``; returns (FeatureSet, skipped)."""
    key = hashlib.sha1(json.dumps([[c.fname, c.label] for c in clips]).encode()).hexdigest()[:10]
    path = out_dir / f"{split}-{key}.h5"
    meta = _FileList(root, {split: clips}, classes)
    with warnings.catch_warnings():
        _quiet_skipped()  # the skipped files are listed in the summary instead
        extract_split(meta, split, path, device=device, on_error="skip", progress=progress)
    with h5py.File(path, "r") as f:
        skipped = json.loads(f.attrs.get("skipped", "[]"))
    return load_features(path), skipped


def prepare_folder(path, features_dir=None, device=None, progress: bool = True, verbose: bool = True) -> RealDataset:
    """Your own folder of sounds as a :class:`RealDataset`: scanned, features extracted (resumable), summarised.

    Unreadable files are skipped and listed (in the summary and ``skipped``); a class left with too few clips
    is an error when the splits are made.
    """
    root = Path(path).expanduser()
    classes_files, unlabelled_files = scan_folder(root)
    out_dir = Path(features_dir or features_dir_of(root))
    classes = sorted(classes_files)
    labelled = unlabelled = None
    skipped = []
    if classes:
        clips = [ClipMeta(p.relative_to(root).as_posix(), c, True) for c in classes for p in classes_files[c]]
        labelled, sk = _extract(root, clips, classes, "labelled", out_dir, device, progress)
        skipped += sk
    if unlabelled_files:
        clips = [ClipMeta(p.relative_to(root).as_posix(), "(unlabelled)", False) for p in unlabelled_files]
        fs, sk = _extract(root, clips, ["(unlabelled)"], "unlabelled", out_dir, device, progress)
        skipped += sk
        n = len(fs)
        unlabelled = FeatureSet(
            PackedClips(fs.clips.data, fs.clips.offsets, torch.full((n,), -1, dtype=torch.int64)),
            fs.fnames,
            np.zeros(n, dtype=bool),
            np.zeros(n, dtype=bool),
            classes or ["(unlabelled)"],
            fs.params,
        )
    ds = RealDataset(root, f"folder:{root.name}", labelled, unlabelled, skipped=skipped, features_dir=out_dir)
    if verbose:
        print(ds.summary())
    return ds


def read_esc50(root) -> tuple[list[ClipMeta], list[int], list[str]]:
    """``meta/esc50.csv`` of ESC-50 at ``root``: (clips, their folds, classes ordered by ``target``), checked.

    Raises :class:`FolderError` naming the file for a missing file or column, a bad fold or target, a category
    that disagrees with its target, or audio files listed but absent from ``audio/``.
    """
    root = Path(root).expanduser()
    path = root / "meta" / "esc50.csv"
    if not path.is_file():
        raise FolderError(f"{path}: not found (expected ESC-50's layout: audio/*.wav and meta/esc50.csv)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ESC50_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FolderError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
        rows = list(reader)
    if not rows:
        raise FolderError(f"{path}: no clip listed")
    names: dict[int, str] = {}
    clips, folds = [], []
    for line, r in enumerate(rows, start=2):
        try:
            fold, target = int(r["fold"]), int(r["target"])
        except ValueError:
            raise FolderError(
                f"{path}, line {line}: fold {r['fold']!r} and target {r['target']!r} must be integers"
            ) from None
        if names.setdefault(target, r["category"]) != r["category"]:
            raise FolderError(
                f"{path}, line {line}: target {target} is {names[target]!r} elsewhere, here {r['category']!r}"
            )
        clips.append(ClipMeta(f"audio/{r['filename']}", r["category"], True))
        folds.append(fold)
    classes = [names[t] for t in sorted(names)]
    audio = root / "audio"
    present = {p.name for p in audio.iterdir()} if audio.is_dir() else set()
    absent = [c.fname for c in clips if Path(c.fname).name not in present]
    if absent:
        raise FolderError(f"{audio}: {len(absent)} file(s) listed in {path.name} are missing, e.g. {absent[:3]}")
    return clips, folds, classes


def prepare_esc50(
    root=None, features_dir=None, device=None, progress: bool = True, verbose: bool = True, on_error: str = "raise"
):
    """ESC-50 (downloaded by ``python -m uclser_lib download esc50``, or at ``root``) as a :class:`RealDataset`.

    ``on_error="raise"`` stops at the first unreadable clip (a :class:`FolderError` naming it; the clips extracted
    before are kept for the resume): ESC-50 is a published benchmark, and a clip missing from it changes the
    folds. ``"skip"`` (``extract --skip-unreadable``) leaves such clips out and lists them (``skipped``, summary);
    later calls with either value use those features.
    """
    root = Path(root or data_root() / "esc50" / "dataset").expanduser()
    if not root.is_dir():
        raise FolderError(f"{root}: ESC-50 is not there; run `python -m uclser_lib download esc50` first")
    clips, folds, classes = read_esc50(root)
    out_dir = Path(features_dir or data_root() / "esc50" / "features")
    key = hashlib.sha1(json.dumps([c.fname for c in clips]).encode()).hexdigest()[:10]
    path = out_dir / f"esc50-{key}.h5"
    meta = _FileList(root, {"esc50": clips}, classes)
    try:
        with warnings.catch_warnings():
            if on_error == "skip":
                _quiet_skipped()  # the skipped clips are listed in the summary instead
            extract_split(meta, "esc50", path, device=device, on_error=on_error, progress=progress)
    except AudioError as err:
        raise FolderError(
            f"{err}; the clips extracted so far are kept: download ESC-50 again, or rerun with "
            "`extract --skip-unreadable` to leave unreadable clips out (listed)"
        ) from None
    with h5py.File(path, "r") as f:
        skipped = json.loads(f.attrs.get("skipped", "[]"))
    fs = load_features(path)
    fold_of = {c.fname: f for c, f in zip(clips, folds)}
    ds = RealDataset(
        root, "esc50", fs, folds=np.array([fold_of[f] for f in fs.fnames]), skipped=skipped, features_dir=out_dir
    )
    if verbose:
        print(ds.summary())
    return ds


def check_folds(folds, available, source, what: str) -> None:
    """Refuse ``folds`` (a cross-validation's choice) holding a fold not in ``available`` or one fold twice: a
    :class:`FolderError` naming ``source`` (the dataset) and its folds (``what``: where they come from)."""
    seen = set()
    for f in folds:
        if f in seen:
            raise FolderError(f"fold {f} is listed more than once")
        seen.add(f)
    unknown = [f for f in folds if f not in available]
    if unknown:
        raise FolderError(f"{source} has fold(s) {sorted(available)} ({what}); choose among them")


def folds_of(dataset) -> tuple[list[int], Path, str] | None:
    """The folds ``crossval`` would run over on ``dataset`` (a name or path as
    :func:`uclser_lib.datasets.prepare` takes it), read without preparing anything: ``(folds, where they are read
    from, what they are)`` for ESC-50 (its ``meta/esc50.csv``, checked by :func:`read_esc50`) and a folder of class
    folders (``[0]``: its one seeded split); None where that is not known here (FSDnoisy18k's layout, the course
    dataset, a path that is not there: :func:`~uclser_lib.datasets.prepare` says what is wrong)."""
    if dataset in (None, "course", "fsdnoisy18k"):
        return None
    root = data_root() / "esc50" / "dataset" if dataset == "esc50" else Path(dataset).expanduser()
    csv_path = root / "meta" / "esc50.csv"
    if csv_path.is_file():
        return sorted(set(read_esc50(root)[1])), csv_path, "ESC-50's folds"
    if dataset == "esc50" or not root.is_dir() or (root / "FSDnoisy18k.meta").is_dir():
        return None
    return [0], root, "a folder's one seeded split"


def check_verified(train: FeatureSet, root, stacklevel: int = 2) -> bool:
    """Check the ``manually_verified`` column of an FSDnoisy18k-layout dataset's train clips.

    No verified clip: :class:`FolderError` naming train.csv (there is nothing to validate on). No unverified clip:
    a warning saying what the splits are instead (:func:`splits_without_noisy`), and True. Otherwise False.
    """
    if not train.clean.any():
        csv_path = Path(root) / "FSDnoisy18k.meta" / "train.csv"
        raise FolderError(
            f"{csv_path}: no manually verified clip (manually_verified is 0 for all {len(train)} readable train "
            "clips); expected some rows with 1: they are the validation clips and the clean-label task's"
        )
    if train.clean.all():
        warnings.warn(
            f"{root}: train.csv lists no unverified (noisy) clip; pre-training uses the {int(train.clean.sum())} "
            f"clean train clips minus a {VAL_FRACTION * 100:.0f} % validation split, and the noisy-label task is "
            "the clean-label task",
            stacklevel=stacklevel + 1,
        )
        return True
    return False


def splits_without_noisy(train: FeatureSet, test: FeatureSet, root, seed: int = PAPER_SEED) -> dict[str, FeatureSet]:
    """The splits of an FSDnoisy18k-layout dataset whose train.csv has no unverified clip (``manually_verified`` all 1).

    There is no noisy subset: the clean train clips are split (seeded, stratified) into ``clean_train`` and
    ``clean_val``; ``pretrain`` is ``clean_train`` (labels unused) and ``val`` is ``clean_val``, so the "noisy"
    task is the clean task. A warning says so. No verified clip at all: :class:`FolderError` naming train.csv.
    """
    check_verified(train, root, stacklevel=2)
    idx = np.flatnonzero(train.clean)
    val = stratified_draw(train.labels, idx, VAL_FRACTION, np.random.default_rng(seed))
    tr = np.setdiff1d(idx, val)
    out = {"test": test, "clean_train": train.subset(tr), "clean_val": train.subset(val)}
    out.update(val=out["clean_val"], pretrain=out["clean_train"])
    return out
