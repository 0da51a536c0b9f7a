"""Real audio: your own folders (WAV/FLAC/OGG, stereo, 48 kHz), ESC-50 downloaded from a local mirror then
pre-trained and cross-validated by the README's commands, FSDnoisy18k layouts without unverified clips, and the
bad inputs (empty class folder, one-clip class, unreadable files, loose files, wrong checksum, unreachable URL)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch
from realdata_server import Server

from uclser_lib import download
from uclser_lib.cli import main
from uclser_lib.datasets import prepare
from uclser_lib.download import Remote
from uclser_lib.folders import FolderError, features_dir_of, prepare_folder, scan_folder


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("UCLSER_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("UCLSER_DEVICE", "cpu")
    monkeypatch.delenv("UCLSER_FSD_ROOT", raising=False)
    monkeypatch.delenv("UCLSER_MIRROR", raising=False)
    return tmp_path / "data"


def tone(path, freq, sr=22050, seconds=1.3, channels=1, fmt=None, seed=0):
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    y = np.stack([y, 0.5 * y], axis=1) if channels == 2 else y
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), sr, format=fmt)


def own_folder(root, per_class=4, unlabelled=3):
    """Three classes in WAV (stereo 48 kHz among them), FLAC and OGG at other rates, plus unlabelled clips."""
    for i in range(per_class):
        tone(root / "whistle" / f"w{i}.wav", 800 + 40 * i, sr=48000, channels=2 if i % 2 else 1, seed=i)
        tone(root / "hum" / f"h{i}.flac", 100 + 5 * i, sr=16000, seed=10 + i)
        tone(root / "buzz" / f"b{i}.ogg", 300 + 10 * i, sr=44100, fmt="OGG", seed=20 + i)
    for i in range(unlabelled):
        tone(root / "unlabelled" / "day1" / f"u{i}.wav", 200 + 100 * i, sr=32000, channels=2, seed=30 + i)
    return root


def test_own_folder_with_unlabelled_part(tmp_path, capsys):
    root = own_folder(tmp_path / "mine")
    (root / "hum" / "broken.wav").write_bytes(b"RIFF but not audio")
    ds = prepare(dataset=str(root), progress=False)
    out = capsys.readouterr().out
    assert "labelled: 12 clips" in out and "unlabelled: 3 clips" in out and "classes: 3" in out
    assert "skipped 1 unreadable file(s): " in out and "broken.wav" in out
    assert ds.classes == ["buzz", "hum", "whistle"]
    s = ds.splits(0)
    assert len(s["test"]) == 3 and len(s["clean_val"]) == 3 and len(s["clean_train"]) == 6  # 1 + 1 + 2 per class
    assert s["pretrain"] is ds.unlabelled and (s["pretrain"].labels == -1).all()
    assert set(s["test"].fnames).isdisjoint(s["clean_train"].fnames)
    assert s["test"].fnames == ds.splits(0)["test"].fnames  # seeded
    assert s["clean_train"].clips.data.shape[1] == 96
    meta = ds.meta  # the notebooks read each clip's audio through it, as a Course's
    for split, fs in (("train", ds.train), ("test", ds.test)):
        assert [c.fname for c in meta.clips(split)] == list(fs.fnames) == [c.fname for c in getattr(meta, split)]
        assert [c.label for c in meta.clips(split)] == [ds.classes[y] for y in fs.labels]
        assert all(meta.audio_path(split, c).is_file() for c in meta.clips(split))


def test_own_folder_without_unlabelled_pretrains_on_training_clips(tmp_path, capsys):
    root = own_folder(tmp_path / "mine", unlabelled=0)
    ds = prepare_folder(root, progress=False)
    assert "pretrain: 6 clips = the training clips (no unlabelled part; labels unused)" in capsys.readouterr().out
    s = ds.splits()
    assert s["pretrain"] is s["clean_train"] and s["val"] is s["clean_val"]


def test_own_folder_bad_inputs(tmp_path):
    root = own_folder(tmp_path / "mine", unlabelled=0)
    (root / "empty").mkdir()
    with pytest.raises(FolderError, match=r"mine/empty: empty class folder \(no .wav/.flac/.ogg file\)"):
        scan_folder(root)
    (root / "empty").rmdir()
    tone(root / "loose.wav", 440)
    with pytest.raises(FolderError, match=r"audio files \['loose.wav'\] lie outside any class folder"):
        scan_folder(root)
    (root / "loose.wav").unlink()
    tone(root / "single" / "only.wav", 440)
    ds = prepare_folder(root, progress=False, verbose=False)
    with pytest.raises(FolderError, match=r"class 'single' has 1 readable clip\(s\) \['single/only.wav'\]; each class"):
        ds.splits()
    with pytest.raises(FolderError, match=r"nowhere: no such folder"):
        scan_folder(tmp_path / "nowhere")


def write_fsd_layout(root, noisy: bool, verified: bool = True):
    rows = []
    for c, freq in (("Piano", 440), ("Engine", 80)):
        for i in range(4):
            tone(root / "FSDnoisy18k.audio_train" / f"{c}{i}.wav", freq + i, sr=44100, seed=i)
            rows.append((f"{c}{i}.wav", c, "/m/x", "0" if (noisy and i == 3) or not verified else "1", "0"))
        tone(root / "FSDnoisy18k.audio_test" / f"{c}t.wav", freq, sr=44100)
    (root / "FSDnoisy18k.meta").mkdir()
    with open(root / "FSDnoisy18k.meta" / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fname", "label", "aso_id", "manually_verified", "noisy_small"])
        w.writerows(rows)
    with open(root / "FSDnoisy18k.meta" / "test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fname", "label", "aso_id"])
        w.writerows([("Pianot.wav", "Piano", "/m/x"), ("Enginet.wav", "Engine", "/m/x")])


def test_fsd_layout_without_unverified_clips(tmp_path):
    write_fsd_layout(tmp_path / "fsd", noisy=False)
    course = prepare(dataset=str(tmp_path / "fsd"), progress=False)
    with pytest.warns(UserWarning, match="lists no unverified .noisy. clip; pre-training uses the 8 clean train clips"):
        s = course.splits(0)
    assert len(s["pretrain"]) == 6 and len(s["val"]) == 2 and s["pretrain"] is s["clean_train"]


def make_esc50_zip(path, folds=5, classes=("dog", "rain", "siren")):
    src = make_esc50_tree(path.parent / "ESC-50-master", folds, classes)
    with zipfile.ZipFile(path, "w") as z:
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(src.parent).as_posix())
    shutil.rmtree(src)
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_esc50_tree(src, folds=5, classes=("dog", "rain", "siren")):
    """ESC-50's layout at ``src``: ``audio/<fold>-<src>-A-<target>.wav`` and ``meta/esc50.csv``."""
    rows = []
    for fold in range(1, folds + 1):
        for target, cat in enumerate(classes):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            tone(src / "audio" / name, 150 * (target + 1) + 7 * fold, sr=44100, seconds=1.5, seed=fold)
            rows.append((name, fold, target, cat, "False", 100 + target, "A"))
    (src / "meta").mkdir(parents=True)
    with open(src / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return src


@pytest.fixture
def esc50_mirror(tmp_path, monkeypatch):
    www = tmp_path / "www"
    www.mkdir()
    digest = make_esc50_zip(www / "ESC-50-master.zip")
    monkeypatch.setitem(
        download.REMOTES, "esc50", [Remote("ESC-50-master.zip", "https://github.invalid/master.zip", digest)]
    )
    srv = Server(www)
    yield srv, www
    srv.close()


@pytest.mark.slow  # end to end: pre-training and evaluation runs
def test_esc50_download_pretrain_crossval_end_to_end(esc50_mirror, tmp_path, data_dir, capsys):
    """The commands of docs/real-audio.md, with a mirror on 127.0.0.1 and tiny settings."""
    srv, _ = esc50_mirror
    assert main(["download", "esc50", "--url-base", srv.url]) == 0
    assert (data_dir / "esc50" / "dataset" / "meta" / "esc50.csv").is_file()
    assert main(["extract", "--dataset", "esc50"]) == 0
    out = capsys.readouterr().out
    assert "labelled: 15 clips" in out and "test: 3 clips = fold 5 (crossval: each of folds [1, 2, 3, 4, 5])" in out
    run = tmp_path / "run"
    pre = ["pretrain", "--data.dataset", "esc50", "--run_dir", str(run), "--epochs", "1", "--batch_size", "4"]
    assert main(pre + ["--arch", "vgglike", "--knn_k", "2", "--knn_every", "1", "--device", "cpu"]) == 0
    res = tmp_path / "cv.json"
    cv = ["crossval", "--dataset", "esc50", "--encoder", str(run / "checkpoint.pt"), "--epochs", "1"]
    assert main(cv + ["--stages", "linear", "--folds", "1", "2", "--out", str(res), "--device", "cpu"]) == 0
    results = json.loads(res.read_text())
    assert sorted({r["fold"] for r in results["rows"]}) == [1, 2]
    assert {(s["init"], s["n"]) for s in results["summary"]} == {("pretrained", 2), ("random", 2)}
    assert "mean over 2 fold x seed runs" in capsys.readouterr().out


def test_download_errors_on_the_command_line(esc50_mirror, tmp_path, monkeypatch, capsys):
    srv, www = esc50_mirror
    monkeypatch.setitem(
        download.REMOTES, "esc50", [Remote("ESC-50-master.zip", "https://github.invalid/master.zip", "0" * 32)]
    )
    assert main(["download", "esc50", "--url-base", srv.url]) == 2
    err = capsys.readouterr().err.split("\r")[-1]  # after the progress bar, which clears itself
    assert (
        err.startswith(f"error: checksum mismatch for {srv.url}/ESC-50-master.zip: md5 of the ")
        and err.count("\n") == 1
    )
    assert main(["download", "esc50", "--url-base", "http://127.0.0.1:9/mirror"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot download http://127.0.0.1:9/mirror/ESC-50-master.zip: ")
    assert main(["crossval", "--dataset", "esc50", "--encoder", "random:vgglike"]) == 2
    assert "ESC-50 is not there; run `python -m uclser_lib download esc50` first" in capsys.readouterr().err


def test_released_encoder_by_name(tmp_path, monkeypatch, model_zoo_dir):
    from uclser_lib.pretrained import load_encoder

    www = tmp_path / "www"
    www.mkdir()
    for name in ("VGG_best.pth", "CRNN_best.pth"):
        shutil.copy(model_zoo_dir / name, www / name)
    srv = Server(www)
    try:
        monkeypatch.setenv("UCLSER_CACHE", str(tmp_path / "cache"))
        ds_root = own_folder(tmp_path / "mine", unlabelled=0)
        ds = prepare_folder(ds_root, progress=False, verbose=False)
        with pytest.raises(FileNotFoundError, match=r"VGG_best.pth: not downloaded yet \(run `python -m uclser_lib"):
            load_encoder("released:vgglike", ds.splits()["pretrain"])
        assert main(["download", "released-encoders", "--url-base", srv.url]) == 0
        encoder, mean, std = load_encoder("released:vgglike", ds.splits()["pretrain"])
        assert not encoder.training and std < 1e-3  # the released normalisation (docs/released-code.md)
        assert encoder.embed(torch.zeros(2, 1, 101, 96)).shape[0] == 2
    finally:
        srv.close()


# The findings of the hand check of #13 (closing note, "What did not work or looked wrong") ---------------------------


def error_line(capsys) -> str:
    """The one error line of stderr (after the progress bars, which write there too)."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and err.endswith(lines[0] + "\n"), err
    return lines[0]


def test_esc50_unreadable_clips_stop_or_are_skipped_with_skip_unreadable(tmp_path, data_dir, capsys):
    """Finding 2: ESC-50 honours ``extract --skip-unreadable``; without it, the error says so (finding 4: the last
    line names where the features are)."""
    src = make_esc50_tree(tmp_path / "ESC-50-master")
    (src / "audio" / "2-101-A-1.wav").write_bytes(b"not audio at all")
    (src / "audio" / "3-102-A-2.wav").write_bytes(b"")
    assert main(["extract", "--dataset", str(src)]) == 2
    err = error_line(capsys)
    assert err.startswith("error: while extracting esc50: ")
    assert "2-101-A-1.wav: not a readable audio file" in err and "`extract --skip-unreadable`" in err
    features = data_dir / "esc50" / "features"
    assert not [p for p in features.glob("esc50-*.h5")]  # the .part is kept for the resume; nothing complete
    assert main(["extract", "--dataset", str(src), "--skip-unreadable"]) == 0
    out = capsys.readouterr().out
    assert "labelled: 13 clips" in out and "skipped 2 unreadable file(s): " in out
    assert "2-101-A-1.wav: not a readable audio file" in out and "3-102-A-2.wav" in out
    assert out.splitlines()[-1] == f"esc50: 10 train clips, 3 test clips, features in {features}"
    with pytest.warns(UserWarning, match="made with on_error='skip', without 2 unreadable file"):
        ds = prepare(dataset=str(src), progress=False)  # a later call without skipping uses those features
    assert len(ds.labelled) == 13 and len(ds.skipped) == 2 and "2-101-A-1.wav" not in " ".join(ds.labelled.fnames)
    assert sorted(ds.splits()["test"].fnames) == ["audio/5-100-A-0.wav", "audio/5-101-A-1.wav", "audio/5-102-A-2.wav"]


def test_extract_refuses_a_class_that_cannot_be_split(tmp_path, capsys):
    """Finding 3: ``extract`` exits 2 with pretrain's message (the features written stay, complete); finding 4:
    its last line names the features folder, not the audio folder."""
    root = own_folder(tmp_path / "mine", unlabelled=0)
    assert main(["extract", "--dataset", str(root)]) == 0
    features = features_dir_of(root)
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"folder:mine: 9 train clips, 3 test clips, features in {features}"
    )
    tone(root / "single" / "only.wav", 440)
    expected = (
        f"error: {root}: class 'single' has 1 readable clip(s) ['single/only.wav']; each class needs at least 3 "
        "(training, validation, test)"
    )
    assert main(["extract", "--dataset", str(root)]) == 2
    assert error_line(capsys) == expected
    assert len(list(features.glob("labelled-*.h5"))) == 2 and not list(features.glob("*.part"))  # complete
    pre = ["pretrain", "--data.dataset", str(root), "--run_dir", str(tmp_path / "run"), "--device", "cpu"]
    assert main(pre) == 2
    assert error_line(capsys) == expected
    assert not (tmp_path / "run").exists()


def test_fsd_layout_without_verified_clips_names_train_csv(tmp_path, capsys):
    """Finding 6: no manually verified clip: one line naming train.csv, from extract and from splits()."""
    root = tmp_path / "fsd"
    write_fsd_layout(root, noisy=False, verified=False)
    expected = (
        f"{root}/FSDnoisy18k.meta/train.csv: no manually verified clip (manually_verified is 0 for all 8 readable "
        "train clips); expected some rows with 1: they are the validation clips and the clean-label task's"
    )
    assert main(["extract", "--dataset", str(root)]) == 2
    assert error_line(capsys) == f"error: {expected}"
    course = prepare(dataset=str(root), progress=False)
    with pytest.raises(FolderError) as err:
        course.splits(0)
    assert str(err.value) == expected


def test_extract_warns_about_an_fsd_layout_without_unverified_clips(tmp_path, capsys):
    """Finding 6: extract says what pretrain and linear-eval say about a layout with no unverified clip."""
    write_fsd_layout(tmp_path / "fsd", noisy=False)
    with pytest.warns(UserWarning, match="lists no unverified .noisy. clip; pre-training uses the 8 clean train clips"):
        assert main(["extract", "--dataset", str(tmp_path / "fsd")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"features in {features_dir_of(tmp_path / 'fsd')}")


def test_noisy_task_on_a_folder_with_an_unlabelled_part_says_use_task_clean(tmp_path, capsys):
    """Finding 7: the unlabelled clips have no labels: the message says to use --task clean."""
    root = own_folder(tmp_path / "mine", per_class=3, unlabelled=2)
    cmd = ["linear-eval", "--data.dataset", str(root), "--encoder", "random:vgglike", "--epochs", "1"]
    assert main(cmd + ["--out", str(tmp_path / "m.json"), "--device", "cpu"]) == 2
    assert error_line(capsys) == (
        f"error: --task noisy: {root}/unlabelled: the noisy-label task trains on the pre-training clips, here the "
        "unlabelled part, which has no labels; use --task clean"
    )
    assert not (tmp_path / "m.json").exists()


@pytest.mark.slow  # end to end: pre-training and evaluation runs
def test_a_folder_of_unlabelled_audio_only_pretrains_without_a_monitor(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UCLSER_DATA", str(tmp_path / "data"))
    for i in range(6):
        tone(tmp_path / "only" / "unlabelled" / f"u{i}.wav", 200 + 50 * i, sr=16000, seed=i)
    run = tmp_path / "run"
    args = ["pretrain", "--data.dataset", str(tmp_path / "only"), "--arch", "vgglike", "--epochs", "1"]
    assert main([*args, "--batch_size", "4", "--knn_every", "1", "--run_dir", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert (
        f"{tmp_path / 'only'}: no class folders: pre-training on its unlabelled clips, without the kNN monitor" in out
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics) == 1 and not any("knn" in k for k in metrics[0])  # no labels: nothing to monitor
    # evaluation needs labels: refused with the folder's name
    evaluate = ["linear-eval", "--data.dataset", str(tmp_path / "only"), "--encoder", str(run / "checkpoint.pt")]
    for task in ("noisy", "clean"):
        assert main([*evaluate, "--task", task]) == 2
        assert "only: no labelled clips (class folders); they are needed for" in capsys.readouterr().err


def test_the_per_class_draw_shared_by_every_split():
    """data.stratified_draw: per class round(fraction * n_c), at least one; a one-clip class only with min_class=1;
    seeded; nested across fractions; only from ``index``."""
    from uclser_lib.data import stratified_draw

    labels = np.array([0] * 20 + [1] * 7 + [2])
    index = np.arange(1, len(labels))  # clip 0 is not offered
    held = stratified_draw(labels, index, 0.15, np.random.default_rng(5))
    assert np.bincount(labels[held], minlength=3).tolist() == [round(0.15 * 19), 1, 0]
    assert 0 not in held and held.dtype == np.int64 and (np.diff(held) > 0).all()
    kept = stratified_draw(labels, index, 0.15, np.random.default_rng(5), min_class=1)
    assert np.bincount(labels[kept], minlength=3).tolist() == [round(0.15 * 19), 1, 1]
    assert np.array_equal(held, stratified_draw(labels, index, 0.15, np.random.default_rng(5)))
    assert set(stratified_draw(labels, index, 0.1, np.random.default_rng(5))) <= set(
        stratified_draw(labels, index, 0.5, np.random.default_rng(5))
    )


def test_an_antiphase_stereo_file_in_a_class_folder_warns(tmp_path, capfd):
    """Issue 34, row 6: the downmix warning of load_audio reaches the user from a folder dataset too (extraction
    runs in worker processes: their warnings go to stderr), while the skipped files stay in the summary only."""
    root = own_folder(tmp_path / "mine", per_class=3, unlabelled=0)
    t = np.arange(int(22050 * 1.3)) / 22050
    y = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    sf.write(root / "whistle" / "flipped.wav", np.stack([y, -y], axis=1), 22050, subtype="FLOAT")
    (root / "hum" / "broken.wav").write_bytes(b"RIFF but not audio")
    with __import__("warnings").catch_warnings(record=True) as caught:
        __import__("warnings").simplefilter("always")
        prepare_folder(root, progress=False)
    out, err = capfd.readouterr()
    said = err + "\n".join(str(w.message) for w in caught)
    assert "flipped.wav: its 2 channels cancel when averaged to mono" in said
    assert "unreadable" not in said and "skipped 1 unreadable file(s): " in out  # listed once, in the summary


def test_nested_class_folders_are_an_error(tmp_path):
    """Issue 34, row 7: DIR/animals/{dog,cat}/*.wav is not merged into one class 'animals'."""
    root = own_folder(tmp_path / "mine", per_class=3, unlabelled=0)
    for c in ("dog", "cat"):
        for i in range(3):
            tone(root / "animals" / c / f"{c}{i}.wav", 300 + 50 * i)
    with pytest.raises(FolderError) as err:
        scan_folder(root)
    assert str(err.value) == (
        f"{root / 'animals'}: class folder holding sub-folders of audio ['cat', 'dog']; expected its clips directly "
        f"in it ({root}/<class>/*.wav): make each sub-folder a class folder of {root}, or move their files up"
    )
    shutil.rmtree(root / "animals")
    tone(root / "hum" / ".ipynb_checkpoints" / "x.wav", 100)  # hidden folders are not looked into
    assert sorted(scan_folder(root)[0]) == ["buzz", "hum", "whistle"]
    assert all(".ipynb" not in str(p) for p in scan_folder(root)[0]["hum"])


@pytest.mark.parametrize(
    "folds, message",
    [
        (["7"], "error: --folds 7: {name} has fold(s) [0] ({what}); choose among them"),
        (["0", "0", "0"], "error: --folds 0 0 0: fold 0 is listed more than once"),
    ],
)
@pytest.mark.parametrize("kind", ["folder", "esc50"])
def test_crossval_folds_are_checked_before_any_data(kind, folds, message, tmp_path, monkeypatch, capsys):
    """Issue 34, row 8: a fold the dataset does not have, or one listed twice, is refused before extraction."""
    import uclser_lib.datasets as D

    if kind == "folder":
        root = own_folder(tmp_path / "mine", per_class=3, unlabelled=0)
        name, what = root, "a folder's one seeded split"
    else:
        root = make_esc50_tree(tmp_path / "ESC-50-master")
        name, what = root / "meta" / "esc50.csv", "ESC-50's folds"
        message = message.replace("[0]", "[1, 2, 3, 4, 5]")
    monkeypatch.setattr(D, "prepare", lambda *a, **k: pytest.fail("the data was prepared before the check"))
    cmd = ["crossval", "--dataset", str(root), "--encoder", "random:vgglike", "--folds", *folds]
    assert main(cmd + ["--out", str(tmp_path / "cv.json")]) == 2
    assert error_line(capsys) == message.format(name=name, what=what)
    assert not (tmp_path / "cv.json").exists()
