"""FSD50K as a dataset (uclser_lib.fsd50k): its layout read into multi-hot labels and official splits, every bad row
refused with the file and line, the AudioSet CSV layout with missing clips, and ``download fsd50k`` from a local
mirror serving split zip archives (made by ``zip -s``), resumed and checksum-verified."""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from realdata_server import Server
from test_datasets import check_meets

from uclser_lib import datasets, download
from uclser_lib.cli import main
from uclser_lib.data import extract_split, label_array, load_features
from uclser_lib.datasets import ClipLists, PreparedDataset
from uclser_lib.downstream import task_splits
from uclser_lib.folders import FolderError
from uclser_lib.fsd50k import FSD50K, read_audioset_meta, read_fsd50k_meta

CLASSES = ["Bark", "Dog", "Animal", "Rain", "Music"]  # vocabulary.csv's index order (written shuffled)
VOCABULARY = ["2,Animal,/m/0jbk", "0,Bark,/m/05tny_", "1,Dog,/m/0bt9lr", "4,Music,/m/04rlf", "3,Rain,/m/06mb1"]
DEV = [
    "fname,labels,mids,split",
    '101,"Bark,Dog,Animal","/m/05tny_,/m/0bt9lr,/m/0jbk",train',
    "102,Rain,/m/06mb1,train",
    "103,Music,/m/04rlf,train",
    '104,"Dog,Animal","/m/0bt9lr,/m/0jbk",val',
    '105,"Rain,Music","/m/06mb1,/m/04rlf",train',
    "106,Music,/m/04rlf,val",
]
EVAL = [
    "fname,labels,mids",
    '201,"Bark,Dog,Animal","/m/05tny_,/m/0bt9lr,/m/0jbk"',
    "202,Rain,/m/06mb1",
    '203,"Music,Rain","/m/04rlf,/m/06mb1"',
]
#: The multi-hot rows of the clips above, written out by hand (columns: CLASSES).
HOT = {
    "101": [1, 1, 1, 0, 0],
    "102": [0, 0, 0, 1, 0],
    "103": [0, 0, 0, 0, 1],
    "104": [0, 1, 1, 0, 0],
    "105": [0, 0, 0, 1, 1],
    "106": [0, 0, 0, 0, 1],
    "201": [1, 1, 1, 0, 0],
    "202": [0, 0, 0, 1, 0],
    "203": [0, 0, 0, 1, 1],
}


def write_wav(path: Path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * rng.standard_normal(int(44100 * seconds)).astype(np.float32), 44100, subtype="PCM_16")


def write_layout(root: Path, vocabulary=VOCABULARY, dev=DEV, eval_=EVAL, audio: bool = True) -> Path:
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    for name, lines in (("vocabulary.csv", vocabulary), ("dev.csv", dev), ("eval.csv", eval_)):
        (gt / name).write_text("\n".join(lines) + "\n")
    if audio:
        for folder, lines in (("FSD50K.dev_audio", dev), ("FSD50K.eval_audio", eval_)):
            for k, line in enumerate(lines[1:]):
                write_wav(root / folder / f"{line.split(',')[0]}.wav", 1.0 + 0.25 * (k % 3), int(line.split(",")[0]))
    return root


@pytest.fixture(scope="module")
def fsd50k_dir(tmp_path_factory) -> Path:
    return write_layout(tmp_path_factory.mktemp("fsd50k") / "fsd50k_like")


def hot(fnames) -> np.ndarray:
    return np.array([HOT[f.removesuffix(".wav")] for f in fnames], dtype=np.float32)


def test_read_layout(fsd50k_dir):
    meta = read_fsd50k_meta(fsd50k_dir)
    assert meta.multilabel and meta.classes == CLASSES
    assert [c.fname for c in meta.train] == [f"{i}.wav" for i in range(101, 107)]
    assert [c.fname for c in meta.test] == ["201.wav", "202.wav", "203.wav"]
    assert meta.train[0].labels == ("Bark", "Dog", "Animal") and all(c.clean for c in meta.train + meta.test)
    assert meta.dev_split == {f"{i}.wav": s for i, s in zip(range(101, 107), "train train train val train val".split())}
    np.testing.assert_array_equal(label_array(meta, meta.train), hot(c.fname for c in meta.train))
    assert meta.audio_path("test", meta.test[1]) == fsd50k_dir / "FSD50K.eval_audio" / "202.wav"


def test_prepare_extracts_multi_hot_features_and_the_official_splits(fsd50k_dir, tmp_path, monkeypatch):
    features = tmp_path / "features"
    ds = datasets.prepare(dataset=str(fsd50k_dir), features_dir=features, progress=False)
    assert isinstance(ds, FSD50K) and ds.name == "fsd50k_like" and ds.features_dir == features
    check_meets(ds, PreparedDataset)
    check_meets(ds.meta, ClipLists)
    assert ds.train.multilabel and ds.test.multilabel and ds.classes == CLASSES and ds.labelled is ds.train
    np.testing.assert_array_equal(ds.train.labels, hot(ds.train.fnames))
    np.testing.assert_array_equal(ds.test.labels, hot(ds.test.fnames))
    splits = ds.splits(0)
    assert sorted(splits) == ["pretrain", "test", "val"]
    assert splits["pretrain"].fnames == ["101.wav", "102.wav", "103.wav", "105.wav"]
    assert splits["val"].fnames == ["104.wav", "106.wav"]
    assert splits["test"].fnames == ["201.wav", "202.wav", "203.wav"]
    for fs in splits.values():
        np.testing.assert_array_equal(fs.labels, hot(fs.fnames))
    assert {k: v.fnames for k, v in ds.splits(12345).items()} == {k: v.fnames for k, v in splits.items()}  # no seed
    train, val, test = task_splits(splits, "noisy")  # FSD50K's protocol
    assert (train.fnames, val.fnames, test.fnames) == (*(splits[k].fnames for k in ("pretrain", "val", "test")),)
    assert ds.check_task("noisy") is None
    with pytest.raises(FolderError, match=r"^--task clean: .*fsd50k_like: FSD50K has no clean-label subset"):
        ds.check_task("clean")
    # resumable: the complete feature files are used as they are
    stamps = {p.name: p.stat().st_mtime_ns for p in features.glob("*.h5")}
    assert sorted(stamps) == ["test.h5", "train.h5"]
    monkeypatch.setenv("UCLSER_FSD50K_ROOT", str(fsd50k_dir))  # dataset="fsd50k": its root from the environment
    again = datasets.prepare(dataset="fsd50k", features_dir=features, progress=False)
    assert again.name == "fsd50k" and again.train.fnames == ds.train.fnames
    assert {p.name: p.stat().st_mtime_ns for p in features.glob("*.h5")} == stamps
    monkeypatch.setenv("UCLSER_FSD50K_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere: no FSD50K there .*download fsd50k"):
        datasets.prepare(dataset="fsd50k", features_dir=features, progress=False)


def test_a_dev_set_without_val_clips_is_refused(tmp_path, monkeypatch, capsys):
    dev = [DEV[0]] + [line.replace(",val", ",train") for line in DEV[1:]]
    root = write_layout(tmp_path / "noval", dev=dev)
    monkeypatch.setenv("UCLSER_DATA", str(tmp_path / "data"))  # the features of a folder go under the data root
    assert main(["extract", "--dataset", str(root)]) == 2  # `extract` refuses what the splits would
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == (
        f"error: {root / 'FSD50K.ground_truth' / 'dev.csv'}: no readable clip of split 'val' (6 dev clips); the "
        "official splits need both train and val"
    )
    ds = datasets.prepare(dataset=str(root), progress=False)  # the features written stay: complete
    assert str(ds.features_dir).startswith(str(tmp_path / "data" / "folders" / "noval-"))
    with pytest.raises(FolderError, match=r"dev\.csv: no readable clip of split 'val' \(6 dev clips\)"):
        ds.splits()


def replace(lines, i, new):
    return [*lines[:i], new, *lines[i + 1 :]]


BAD = {
    "missing column": (
        "dev.csv",
        replace(DEV, 0, "fname,labels,split"),
        r"dev\.csv, line 1: missing column\(s\) \['mids'\]",
    ),
    "short row": ("dev.csv", [*DEV, "107,Rain"], r"dev\.csv, line 8: 2 field\(s\), the header has 4"),
    "long row": ("eval.csv", [*EVAL, "204,Rain,/m/06mb1,x"], r"eval\.csv, line 5: 4 field\(s\), the header has 3"),
    "unknown label": (
        "dev.csv",
        [*DEV, "107,Thunder,/m/0ngt1,train"],
        r"dev\.csv, line 8: label 'Thunder' of clip 107 is not in vocabulary\.csv",
    ),
    "mids count": ("eval.csv", [*EVAL, '204,"Bark,Dog",/m/05tny_'], r"eval\.csv, line 5: 2 label\(s\) but 1 mid\(s\)"),
    "wrong mid": (
        "dev.csv",
        [*DEV, "107,Rain,/m/04rlf,train"],
        r"dev\.csv, line 8: mid '/m/04rlf' of label 'Rain' is '/m/06mb1' in vocabulary\.csv",
    ),
    "bad split": (
        "dev.csv",
        [*DEV, "107,Rain,/m/06mb1,test"],
        r"dev\.csv, line 8: split 'test' of clip 107, expected train or val",
    ),
    "listed twice": (
        "dev.csv",
        [*DEV, "101,Rain,/m/06mb1,train"],
        r"dev\.csv, line 8: clip 101 is listed again \(first at line 2\)",
    ),
    "dev and eval": (
        "eval.csv",
        [*EVAL, "104,Rain,/m/06mb1"],
        r"eval\.csv, line 5: clip 104 is also in dev\.csv \(line 5\)",
    ),
    "empty labels": ("dev.csv", [*DEV, "107,,,train"], r"dev\.csv, line 8: empty labels"),
    "label twice in a row": (
        "dev.csv",
        [*DEV, '107,"Rain,Rain","/m/06mb1,/m/06mb1",val'],
        r"dev\.csv, line 8: label 'Rain' is listed twice",
    ),
    "vocabulary index gap": (
        "vocabulary.csv",
        replace(VOCABULARY, 3, "5,Music,/m/04rlf"),
        r"vocabulary\.csv, line 4: the indices of its 5 classes must be 0\.\.4; got 5",
    ),
    "vocabulary index twice": (
        "vocabulary.csv",
        replace(VOCABULARY, 3, "0,Music,/m/04rlf"),
        r"vocabulary\.csv, line 4: index 0 is listed again",
    ),
    "vocabulary label twice": (
        "vocabulary.csv",
        [*VOCABULARY, "5,Rain,/m/0xxx"],
        r"vocabulary\.csv, line 6: name 'Rain' is listed again \(first at line 5\)",
    ),
    "vocabulary fields": (
        "vocabulary.csv",
        replace(VOCABULARY, 0, "2,Animal"),
        r"vocabulary\.csv, line 1: 2 field\(s\), expected 3",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_rows_are_refused_naming_the_file_and_line(tmp_path, case):
    name, lines, pattern = BAD[case]
    files = {"vocabulary.csv": VOCABULARY, "dev.csv": DEV, "eval.csv": EVAL, name: lines}
    root = write_layout(tmp_path, files["vocabulary.csv"], files["dev.csv"], files["eval.csv"], audio=False)
    with pytest.raises(ValueError) as err:
        read_fsd50k_meta(root, check_files=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(root / "FSD50K.ground_truth" / name))
    assert re.search(pattern, message), message


def test_missing_audio_files_are_counted_and_named(tmp_path):
    root = write_layout(tmp_path / "gaps")
    for fname in ("105", "102"):
        (root / "FSD50K.dev_audio" / f"{fname}.wav").unlink()
    with pytest.raises(FileNotFoundError) as err:
        read_fsd50k_meta(root)
    assert str(err.value) == (
        f"{root / 'FSD50K.dev_audio'}: 2 of the 6 file(s) listed in dev.csv are missing, e.g. ['102.wav', '105.wav']"
    )
    shutil.rmtree(root / "FSD50K.eval_audio")
    assert read_fsd50k_meta(root, check_files=False).test[0].fname == "201.wav"


# ---------------------------------------------------------------------------------------------
# The AudioSet CSV layout

AUDIOSET_CLASSES = [
    "index,mid,display_name",
    "0,/m/09x0r,Speech",
    '1,/m/05tny_,"Bark"',
    "2,/m/0jbk,Animal",
    '3,/m/07q2z82,"Accelerating, revving, vroom"',
]
HEAD = [
    "# Segments csv created Sun Mar  5 10:54:31 2017",
    "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4",
    "# YTID, start_seconds, end_seconds, positive_labels",
]


def write_audioset(root: Path, balanced_extra=()) -> Path:
    root.mkdir(parents=True)
    (root / "class_labels_indices.csv").write_text("\n".join(AUDIOSET_CLASSES) + "\n")
    segments = {
        "balanced_train_segments": [
            '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/0jbk"',
            '-0RWZT-miFs, 420.000, 430.000, "/m/05tny_"',
            '-1nilez17Dg, 10.000, 20.000, "/m/07q2z82"',  # its audio is missing
            *balanced_extra,
        ],
        "unbalanced_train_segments": ['abcdefghijk, 0.000, 10.000, "/m/07q2z82,/m/09x0r"'],
        "eval_segments": ['evalclip001, 5.000, 15.000, "/m/05tny_,/m/0jbk"', 'evalclip002, 0.000, 10.000, "/m/09x0r"'],
    }
    for stem, rows in segments.items():
        (root / f"{stem}.csv").write_text("\n".join([*HEAD, *rows]) + "\n")
    for k, name in enumerate(
        [
            "balanced_train_segments/--PJHxphWEs_30.000.wav",  # start as written
            "balanced_train_segments/-0RWZT-miFs_420.wav",  # start in whole seconds
            "unbalanced_train_segments/abcdefghijk.wav",  # the YTID alone
            "eval_segments/evalclip001_5.000.wav",
            "eval_segments/evalclip002_0.wav",
        ]
    ):
        write_wav(root / name, 1.0, k)
    return root


def test_audioset_layout_leaves_missing_clips_out_and_counts_them(tmp_path):
    root = write_audioset(tmp_path / "audioset")
    with pytest.warns(UserWarning) as record:
        meta = read_audioset_meta(root)
    [warning] = [str(w.message) for w in record]
    assert warning == (
        f"{root}: 1 of 6 listed clips are missing (balanced_train_segments: 1 of 3, eval_segments: 0 of 2, "
        "unbalanced_train_segments: 0 of 1), e.g. ['balanced_train_segments/-1nilez17Dg_10.000.wav']; they are left out"
    )
    assert meta.multilabel and meta.classes == ["Speech", "Bark", "Animal", "Accelerating; revving; vroom"]
    assert [c.fname for c in meta.train] == [
        "balanced_train_segments/--PJHxphWEs_30.000.wav",
        "balanced_train_segments/-0RWZT-miFs_420.wav",
        "unbalanced_train_segments/abcdefghijk.wav",
    ]
    assert [c.fname for c in meta.test] == ["eval_segments/evalclip001_5.000.wav", "eval_segments/evalclip002_0.wav"]
    np.testing.assert_array_equal(label_array(meta, meta.train), [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1]])
    assert meta.audio_path("train", meta.train[2]) == root / "unbalanced_train_segments" / "abcdefghijk.wav"
    fs = load_features(extract_split(meta, "test", tmp_path / "test.h5", workers=0, progress=False))
    assert fs.multilabel and fs.fnames == [c.fname for c in meta.test]
    np.testing.assert_array_equal(fs.labels, [[0, 1, 1, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize(
    "row, pattern",
    [
        (
            'zzzzzzzzzzz, 0.000, 10.000, "/m/unknown"',
            r"line 7: label '/m/unknown' of zzzzzzzzzzz is not in class_labels",
        ),
        ("zzzzzzzzzzz, 0.000, 10.000", r"line 7: 3 field\(s\), expected 4"),
        ('--PJHxphWEs, 30.000, 40.000, "/m/09x0r"', r"line 7: segment --PJHxphWEs at 30\.000 s is listed again"),
    ],
)
def test_audioset_bad_rows(tmp_path, row, pattern):
    root = write_audioset(tmp_path / "audioset", balanced_extra=[row])
    with pytest.raises(ValueError, match=rf"^{root / 'balanced_train_segments.csv'}, {pattern}"):
        read_audioset_meta(root)


# ---------------------------------------------------------------------------------------------
# Split zip archives and ``download fsd50k``

needs_zip = pytest.mark.skipif(
    shutil.which("zip") is None, reason="the `zip` program (to make split archives) is absent"
)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def split_zip(src: Path, folder: str, out: Path, *flags: str) -> list[Path]:
    """``zip -s 64k`` of ``src/folder`` into ``out`` (X.zip): its parts in order, the .zip last."""
    subprocess.run(["zip", "-q", "-r", *flags, "-s", "64k", str(out), folder], cwd=src, check=True)
    parts = sorted(out.parent.glob(out.stem + ".z[0-9]*"), key=lambda p: int(p.suffix[2:]))
    return [*parts, out]


@needs_zip
def test_split_archive_read_and_joined_as_zip_joins_it(fsd50k_dir, tmp_path, monkeypatch):
    parts = split_zip(fsd50k_dir, "FSD50K.dev_audio", tmp_path / "dev.zip")
    assert len(parts) > 3  # several parts, as FSD50K's; here each clip spans two or three of them
    with pytest.raises(zipfile.BadZipFile):  # why they are joined: zipfile reads no member of the .zip alone
        zipfile.ZipFile(parts[-1]).read("FSD50K.dev_audio/101.wav")
    with download.open_split_zip(parts[-1]) as z:  # its parts found beside it
        assert z.testzip() is None and len(z.namelist()) == 7
        for name in DEV[1:]:
            wav = f"FSD50K.dev_audio/{name.split(',')[0]}.wav"
            assert z.read(wav) == (fsd50k_dir / wav).read_bytes()
    # byte for byte what `zip -s 0` writes (members spanning at most two parts: zip 3.0's own join mangles a member
    # spread over three parts, which this one reads)
    small = tmp_path / "small" / "x"
    small.mkdir(parents=True)
    for k in range(8):
        (small / f"{k}.bin").write_bytes(np.random.default_rng(k).bytes(20_000 + 3_000 * k))
    small_parts = split_zip(small.parent, "x", tmp_path / "small.zip")
    subprocess.run(["zip", "-q", "-s", "0", str(small_parts[-1]), "--out", str(tmp_path / "theirs.zip")], check=True)
    ours = download.join_split_zip(small_parts, tmp_path / "ours.zip")
    assert len(small_parts) > 2 and filecmp.cmp(ours, tmp_path / "theirs.zip", shallow=False)
    again = download.join_split_zip([ours], tmp_path / "again.zip")  # no split marker, one part: the same bytes
    assert filecmp.cmp(again, ours, shallow=False)
    # ZIP64 in (zip -fz), and out (the limits lowered so that offsets and counts take the ZIP64 records)
    z64 = split_zip(fsd50k_dir, "FSD50K.eval_audio", tmp_path / "e64.zip", "-fz")
    monkeypatch.setattr(download, "_ZIP64_LIMIT", 1000)
    monkeypatch.setattr(download, "_ZIP64_COUNT_LIMIT", 2)
    joined = download.join_split_zip(z64, tmp_path / "e64-joined.zip")
    end = joined.read_bytes()[-22 - 20 - 56 :]  # ZIP64 end record, its locator, the end record (no comment)
    assert end[:4] == b"PK\x06\x06" and end[56:60] == b"PK\x06\x07" and end[-22 + 8 : -22 + 10] == b"\xff\xff"
    with zipfile.ZipFile(joined) as z:
        assert z.testzip() is None and len(z.namelist()) == 4
        assert z.read("FSD50K.eval_audio/203.wav") == (fsd50k_dir / "FSD50K.eval_audio" / "203.wav").read_bytes()
    if shutil.which("unzip"):
        subprocess.run(["unzip", "-tq", str(joined)], check=True, capture_output=True)
    # parts that are not one split archive: one line naming the .zip, nothing unpacked
    with pytest.raises(
        download.DownloadError,
        match=r"dev\.zip: truncated or corrupt archive \(BadZipFile: dev\.zip: "
        r"the archive has \d+ parts, 2 were given",
    ) as err:
        download.unpack((parts[0], parts[-1]), tmp_path / "out" / "x", progress=False)
    assert "delete it and its parts" in str(err.value) and not (tmp_path / "out").exists()


@pytest.fixture
def mirror(fsd50k_dir, tmp_path, monkeypatch):
    """A mirror of FSD50K's files (the audio as split archives of many parts), ``REMOTES`` pointing at it with their
    md5."""
    www = tmp_path / "www"
    www.mkdir()
    names = []
    for folder in ("FSD50K.ground_truth",):
        subprocess.run(["zip", "-q", "-r", str(www / f"{folder}.zip"), folder], cwd=fsd50k_dir, check=True)
        names.append(f"{folder}.zip")
    for folder, text in (("FSD50K.metadata", b"{}"), ("FSD50K.doc", b"README")):
        with zipfile.ZipFile(www / f"{folder}.zip", "w") as z:
            z.writestr(f"{folder}/info.txt", text)
        names.append(f"{folder}.zip")
    names += [p.name for p in split_zip(fsd50k_dir, "FSD50K.eval_audio", www / "FSD50K.eval_audio.zip")]
    # the dev archive's files listed backwards (.zip first): the parts are put in order by their number
    names += [p.name for p in reversed(split_zip(fsd50k_dir, "FSD50K.dev_audio", www / "FSD50K.dev_audio.zip"))]
    remotes = [download.Remote(n, f"https://zenodo.invalid/{n}?download=1", md5(www / n)) for n in names]
    monkeypatch.setitem(download.REMOTES, "fsd50k", remotes)
    server = Server(www)
    yield server, www, remotes
    server.close()


@needs_zip
def test_download_fsd50k_from_a_mirror_resumes_joins_and_unpacks(mirror, fsd50k_dir, tmp_path, capsys):
    server, www, remotes = mirror
    assert [r.filename for r in remotes][-2:] == ["FSD50K.dev_audio.z02", "FSD50K.dev_audio.z01"]  # listed backwards
    root = tmp_path / "data"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "FSD50K.dev_audio.z02.part").write_bytes((www / "FSD50K.dev_audio.z02").read_bytes()[:1000])
    assert main(["download", "fsd50k", "--root", str(root), "--url-base", server.url]) == 0
    dest = root / "fsd50k" / "dataset"
    assert f"fsd50k is in {dest}" in capsys.readouterr().out
    assert ("/FSD50K.dev_audio.z02", "bytes=1000-") in server.requests  # the partial part was continued
    assert sorted(p.name for p in dest.iterdir()) == [
        "FSD50K.dev_audio",
        "FSD50K.doc",
        "FSD50K.eval_audio",
        "FSD50K.ground_truth",
        "FSD50K.metadata",
    ]
    for folder in ("FSD50K.dev_audio", "FSD50K.eval_audio", "FSD50K.ground_truth"):
        match, mismatch, errors = filecmp.cmpfiles(
            fsd50k_dir / folder, dest / folder, os.listdir(fsd50k_dir / folder), shallow=False
        )
        assert not mismatch and not errors and len(match) == len(os.listdir(dest / folder))
    assert sorted(p.name for p in (root / "fsd50k").iterdir()) == ["dataset"]  # no temporary folder left
    assert list((root / "downloads").iterdir()) == []  # archives removed after a good unpack
    meta = read_fsd50k_meta(dest)  # the layout the reader expects
    assert len(meta.train) == 6 and meta.dev_split["104.wav"] == "val"


@needs_zip
def test_download_fsd50k_wrong_checksum_unpacks_nothing(mirror, tmp_path, capsys, monkeypatch):
    server, www, remotes = mirror
    bad = [r if r.filename != "FSD50K.dev_audio.z03" else download.Remote(r.filename, r.url, "0" * 32) for r in remotes]
    monkeypatch.setitem(download.REMOTES, "fsd50k", bad)
    root = tmp_path / "data"
    assert main(["download", "fsd50k", "--root", str(root), "--url-base", server.url]) == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]  # beside progress bars
    assert line.startswith(f"error: checksum mismatch for {server.url}/FSD50K.dev_audio.z03: md5 of the 65536 bytes")
    assert sorted(p.name for p in root.iterdir()) == ["downloads"]  # no fsd50k/: nothing unpacked
    kept = sorted(p.name for p in (root / "downloads").iterdir())
    assert "FSD50K.dev_audio.z03" not in kept and "FSD50K.dev_audio.z03.part" not in kept
    # the files verified before it stay (the dev archive's are listed backwards): the rerun fetches only the rest
    assert {"FSD50K.ground_truth.zip", "FSD50K.eval_audio.zip", "FSD50K.dev_audio.zip", "FSD50K.dev_audio.z04"} <= set(
        kept
    )
