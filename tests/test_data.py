"""Metadata loading, splits and the HDF5 feature sets: round trip, parameter mismatch, resume, bad input."""

import csv
import errno
import os

import h5py
import numpy as np
import pytest
import soundfile as sf

from uclser_lib import data as D
from uclser_lib.features import AudioError, LogMelParams, extract_logmel
from uclser_lib.runtime import DiskFullError

from tolerance import assert_close_ulps


def write_fsd(root, n_train=12, n_test=4, classes=("Engine", "Fire", "Rain"), seed=0):
    """A small dataset in FSDnoisy18k's layout: noise clips of 0.3-2.5 s at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    for d in D.AUDIO_DIRS.values():
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / D.META_DIR).mkdir(exist_ok=True)
    rows = {"train": [], "test": []}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            fname = f"{split[:2]}{i}.wav"
            seconds = rng.uniform(0.3, 2.5)
            sf.write(
                root / D.AUDIO_DIRS[split] / fname,
                (0.1 * rng.standard_normal(int(44100 * seconds))).astype(np.float32),
                44100,
                subtype="PCM_16",
            )
            label = classes[i % len(classes)]
            rows[split].append(
                [fname, label, "/m/0", str(int(i % 2 == 0)), str(int(i % 4 == 1))][: 5 if split == "train" else 3]
            )
    for split, header in (("train", D.TRAIN_COLUMNS), ("test", D.TEST_COLUMNS)):
        with open(root / D.META_DIR / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows[split])
    return root


@pytest.fixture
def fsd(tmp_path):
    return write_fsd(tmp_path / "fsd")


def test_read_meta(fsd):
    meta = D.read_meta(fsd)
    assert meta.classes == ["Engine", "Fire", "Rain"]
    assert len(meta.train) == 12 and len(meta.test) == 4
    assert sum(c.clean for c in meta.train) == 6 and all(c.clean for c in meta.test)
    assert sum(c.noisy_small for c in meta.train) == 3


def _rewrite_csv(path, fn):
    rows = list(csv.reader(open(path)))
    rows = fn(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize(
    "csvname, edit, error, message",
    [
        (
            "train.csv",
            lambda r: [[c for j, c in enumerate(x) if j != 3] for x in r],
            ValueError,
            "missing column.*manually_verified",
        ),
        ("test.csv", lambda r: r[:1] + [["te0.wav", "Glass", "/m/0"]] + r[2:], ValueError, r"label\(s\) \['Glass'\]"),
        ("train.csv", lambda r: r + [["nothere.wav", "Fire", "/m/0", "0", "0"]], FileNotFoundError, "nothere.wav"),
        ("train.csv", lambda r: r[:1] + [r[1][:3] + ["yes", "0"]] + r[2:], ValueError, "expected 0 or 1"),
        ("test.csv", lambda r: r[:1], ValueError, "no clip listed"),
    ],
    ids=["missing-column", "unknown-test-label", "missing-file", "bad-flag", "empty"],
)
def test_bad_metadata_names_the_file(fsd, csvname, edit, error, message):
    _rewrite_csv(fsd / D.META_DIR / csvname, edit)
    with pytest.raises(error, match=message) as info:
        D.read_meta(fsd)
    assert csvname in str(info.value) or "nothere.wav" in str(info.value)


@pytest.mark.parametrize(
    "cut, message",
    [
        (3, "line 4: missing column(s) ['manually_verified', 'noisy_small']: the row has 3 field(s), the header 5"),
        (
            1,
            "line 4: missing column(s) ['label', 'aso_id', 'manually_verified', 'noisy_small']: the row has 1 field(s)",
        ),
        (6, "line 4: 6 fields, the header has 5 (an unquoted comma in a value?)"),
    ],
)
def test_a_short_or_long_csv_row_names_the_file_line_and_columns(fsd, cut, message):
    """Issue 34, row 9: a row missing columns was ``AttributeError: 'NoneType' object has no attribute 'strip'``."""
    path = fsd / D.META_DIR / "train.csv"
    _rewrite_csv(path, lambda r: r[:3] + [(r[3] + ["extra"])[:cut]] + r[4:])
    with pytest.raises(ValueError) as info:
        D.read_meta(fsd)
    assert str(info.value).startswith(f"{path}, {message}") and "\n" not in str(info.value)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.csv"):
        D.read_meta(tmp_path)


def test_hdf5_round_trip(fsd, tmp_path):
    meta = D.read_meta(fsd)
    out = D.extract_split(meta, "train", tmp_path / "train.h5", workers=0, progress=False)
    fs = D.load_features(out)
    assert fs.fnames == [c.fname for c in meta.train]
    assert list(fs.labels) == [meta.classes.index(c.label) for c in meta.train]
    assert fs.clean.tolist() == [c.clean for c in meta.train]
    assert fs.classes == meta.classes
    for i, c in enumerate(meta.train):
        np.testing.assert_allclose(fs.clips.clip(i).numpy(), extract_logmel(meta.audio_path("train", c)), atol=1e-4)
    with h5py.File(out) as f:  # self-describing
        assert f.attrs["split"] == "train" and "n_mels" in f.attrs["params"]
    # a second call keeps the finished file
    mtime = out.stat().st_mtime_ns
    assert D.extract_split(meta, "train", out, workers=0, progress=False) == out and out.stat().st_mtime_ns == mtime


def test_loading_with_other_parameters_is_an_error(fsd, tmp_path):
    out = D.extract_split(D.read_meta(fsd), "test", tmp_path / "test.h5", workers=0, progress=False)
    with pytest.raises(D.FeatureFileError, match="n_mels: file has 96, asked 64"):
        D.load_features(out, LogMelParams(n_mels=64))
    with pytest.raises(D.FeatureFileError, match="another extraction"):
        D.extract_split(D.read_meta(fsd), "test", out, params=LogMelParams(hop_length=441), workers=0, progress=False)


def test_not_a_feature_file(tmp_path):
    bogus = tmp_path / "x.h5"
    bogus.write_text("hello")
    with pytest.raises(D.FeatureFileError, match="x.h5"):
        D.load_features(bogus)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        D.load_features(tmp_path / "nope.h5")


def test_resume_after_interruption(fsd, tmp_path, monkeypatch):
    meta = D.read_meta(fsd)
    full = D.load_features(D.extract_split(meta, "train", tmp_path / "full.h5", workers=0, progress=False))
    out = tmp_path / "train.h5"

    # crash while extracting the 8th clip: the first 7 (flushed every 3) must survive, the file must not appear
    real = D.extract_many
    calls = {"n": 0}

    def crashing(paths, *a, **k):
        for item in real(paths, *a, **k):
            calls["n"] += 1
            if calls["n"] == 8:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(D, "extract_many", crashing)
    with pytest.raises(KeyboardInterrupt):
        D.extract_split(meta, "train", out, workers=0, progress=False, flush_every=3)
    assert not out.exists()
    with h5py.File(str(out) + ".part") as f:
        assert f.attrs["n_done"] == 6

    # resume reads only what is left, and gives the same file as an uninterrupted run
    seen = []
    monkeypatch.setattr(D, "extract_many", lambda paths, *a, **k: (seen.append(len(paths)), real(paths, *a, **k))[1])
    D.extract_split(meta, "train", out, workers=0, progress=False, flush_every=3)
    assert seen == [len(meta.train) - 6]
    resumed = D.load_features(out)
    # other clips share a batch after the resume: the same features up to float32 rounding, the same layout
    assert np.array_equal(resumed.clips.offsets.numpy(), full.clips.offsets.numpy())
    assert_close_ulps(resumed.clips.data, full.clips.data)
    assert not (tmp_path / "train.h5.part").exists()


def test_bad_audio_stops_or_is_skipped(fsd, tmp_path):
    meta = D.read_meta(fsd)
    bad = meta.audio_path("train", meta.train[5])
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match=bad.name):
        D.extract_split(meta, "train", tmp_path / "a.h5", workers=0, progress=False, flush_every=2)
    assert not (tmp_path / "a.h5").exists()
    with h5py.File(tmp_path / "a.h5.part") as f:  # what was extracted before the bad file is kept
        assert f.attrs["n_done"] == 5
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        out = D.extract_split(meta, "train", tmp_path / "b.h5", workers=0, progress=False, on_error="skip")
    fs = D.load_features(out)
    assert len(fs) == len(meta.train) - 1 and meta.train[5].fname not in fs.fnames


def test_splits_are_disjoint_and_seeded(fsd, tmp_path):
    meta = D.read_meta(fsd)
    train = D.load_features(D.extract_split(meta, "train", tmp_path / "train.h5", workers=0, progress=False))
    test = D.load_features(D.extract_split(meta, "test", tmp_path / "test.h5", workers=0, progress=False))
    s = D.paper_splits(train, test, seed=1)
    assert set(s["pretrain"].fnames) == {c.fname for c in meta.train if not c.clean}
    assert set(s["val"].fnames) == {c.fname for c in meta.train if c.clean}
    assert not set(s["clean_train"].fnames) & set(s["clean_val"].fnames)  # no leak (docs/released-code.md)
    assert set(s["clean_train"].fnames) | set(s["clean_val"].fnames) == set(s["val"].fnames)
    again = D.paper_splits(train, test, seed=1)
    assert again["clean_val"].fnames == s["clean_val"].fnames


def test_packed_clips():
    pc = D.PackedClips.from_list([np.ones((101, 4)), np.zeros((150, 4))], [0, 1])
    assert pc.lengths.tolist() == [101, 150] and pc.clip(1).shape == (150, 4)
    with pytest.raises(ValueError, match="empty"):
        D.PackedClips.from_list([])


def test_audio_durations(fsd):
    meta = D.read_meta(fsd)
    durations = D.audio_durations(meta, "test")
    assert durations.shape == (len(meta.test),) and ((durations > 0.29) & (durations < 2.51)).all()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_disk_quota_or_size_limit_is_a_disk_full_error(fsd, tmp_path, monkeypatch, code):
    """A write refused by the disk (full, over quota, over the file-size limit) is one ``DiskFullError`` naming the
    partial file, errno ENOSPC (an ``OSError``); other errors pass through as they are."""
    meta = D.read_meta(fsd)

    def refused(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(D, "_flush", refused)
    with pytest.raises(DiskFullError, match=r"train\.h5\.part: no space left on device \(free some space") as err:
        D.extract_split(meta, "train", tmp_path / "train.h5", workers=0, progress=False, flush_every=3)
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert not (tmp_path / "train.h5").exists()

    def denied(*a, **k):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(D, "_flush", denied)
    with pytest.raises(OSError, match="Permission denied") as err:
        D.extract_split(meta, "train", tmp_path / "train.h5", workers=0, progress=False, flush_every=3)
    assert not isinstance(err.value, DiskFullError)
