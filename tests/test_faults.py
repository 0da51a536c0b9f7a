"""Nothing lost, nothing silently wrong (#16): runs, features and checkpoints under faults and bad input.

Each test reproduces one finding of the issue: a run overwritten, a lock held by the workers of a killed extraction,
stale features, a corrupted checkpoint, skipped files, a read-only folder, odd CSVs, a crash before the rename, a
full disk, truncated and antiphase audio.
"""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
from test_data import write_fsd
from test_train import synthetic_set, tiny_config

from uclser_lib import data as D
from uclser_lib import runtime
from uclser_lib.checkpoints import CheckpointError, load_checkpoint, save_checkpoint, sidecar_of
from uclser_lib.cli import main
from uclser_lib.features import AudioError, load_audio
from uclser_lib.pretrained import export_encoder, load_encoder
from uclser_lib.train import RunExistsError, pretrain

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fsd(tmp_path):
    return write_fsd(tmp_path / "fsd")


def _extract(meta, out, **kw):
    return D.extract_split(meta, "train", out, workers=0, progress=False, **kw)


# 1. a run is never overwritten silently ---------------------------------------------------------------------


def test_fresh_run_into_an_existing_run_dir_is_refused(tmp_path):
    train = synthetic_set()
    pretrain(tiny_config(epochs=1), train, run_dir=tmp_path, progress=False, device="cpu")
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RunExistsError, match=r"already holds a run at epoch 1.*--resume.*--overwrite"):
        pretrain(tiny_config(epochs=2), train, run_dir=tmp_path, progress=False, device="cpu")
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    _, hist = pretrain(tiny_config(epochs=1), train, run_dir=tmp_path, overwrite=True, progress=False, device="cpu")
    assert len(hist) == 1 and load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_cli_refuses_an_existing_run_before_preparing_data(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps([{"epoch": 1}, {"epoch": 2}]))
    (run / "checkpoint.pt").write_bytes(b"a run")
    import uclser_lib.cli as M

    monkeypatch.setattr(M, "_dataset", lambda *a: pytest.fail("the data was prepared before the refusal"))
    assert main(["pretrain", "--run_dir", str(run), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "already holds a run at epoch 2" in err and "--resume" in err and "--overwrite" in err
    assert (run / "checkpoint.pt").read_bytes() == b"a run"


# 2. a killed extraction leaves no lock behind; a waiting process says what it waits for -----------------------

_KILLED = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from uclser_lib import data as D, features as F
    real = F.load_audio
    def slow(path):
        with open({pids!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(1.0)
        return real(path)
    F.load_audio = slow
    meta = D.read_meta({root!r})
    D.extract_split(meta, "train", {out!r}, workers=2, progress=False, flush_every=2)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.slow  # subprocesses: an extraction killed with -9, then rerun
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9 and /proc: Linux")
def test_kill_9_of_an_extraction_does_not_block_the_next(fsd, tmp_path):
    out, pids = tmp_path / "feat" / "train.h5", tmp_path / "pids.txt"
    script = _KILLED.format(tests=str(REPO / "tests" / "helpers"), pids=str(pids), root=str(fsd), out=str(out))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (pids.exists() and pids.read_text().strip()):
        time.sleep(0.1)  # a worker is reading files (one batch of 12 clips, 1 s each): the lock is held
    assert proc.poll() is None, "the extraction ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    workers = {int(p) for p in pids.read_text().split()} - {proc.pid}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "DataLoader workers outlived their killed parent"
    # the rerun takes the lock at once and finishes (resuming what was flushed)
    rerun = subprocess.run(
        [sys.executable, "-c", f"from uclser_lib import data as D; "
         f"D.extract_split(D.read_meta({str(fsd)!r}), 'train', {str(out)!r}, workers=0, progress=False)"],
        env=env, cwd=REPO, timeout=20, capture_output=True, text=True,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "waiting for" not in rerun.stderr and len(D.load_features(out)) == 12


@pytest.mark.slow  # a subprocess holds the lock for 2 s
def test_a_waiting_process_says_which_lock_and_who_holds_it(fsd, tmp_path, capfd):
    out = tmp_path / "train.h5"
    lock = tmp_path / "train.h5.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl, os, time; fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT); "
         "fcntl.lockf(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); "
         "time.sleep(2)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    _extract(D.read_meta(fsd), out)  # waits about 2 s, then extracts
    holder.wait()
    err = capfd.readouterr().err
    assert f"waiting for {lock}: held by PID {holder.pid}" in err and f"got {lock}" in err


# 3. stale features are not reused ------------------------------------------------------------------------------


def test_a_replaced_wav_or_another_folder_re_extracts(fsd, tmp_path):
    meta = D.read_meta(fsd)
    out = _extract(meta, tmp_path / "train.h5")
    first = D.load_features(out).clips.clip(3).numpy().copy()
    wav = meta.audio_path("train", meta.train[3])
    sf.write(wav, 0.5 * np.sin(np.arange(44100) / 7.0).astype(np.float32), 44100, subtype="PCM_16")
    with pytest.warns(UserWarning, match=rf"re-extracting.*{wav.name} changed since extraction"):
        _extract(meta, out)
    assert not np.allclose(D.load_features(out).clips.clip(3).numpy()[:10], first[:10])
    # the same file names in another folder: the features follow the folder
    other = write_fsd(tmp_path / "other", seed=5)
    with pytest.warns(UserWarning, match=r"re-extracting.*its audio came from .*fsd, now from .*other"):
        _extract(D.read_meta(other), out)
    with h5py.File(out) as f:
        assert f.attrs["source_root"] == str(other.resolve())


# 4. a corrupted checkpoint is refused everywhere -------------------------------------------------------------------


def test_a_flipped_byte_in_a_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    pretrain(tiny_config(epochs=1), synthetic_set(), run_dir=run, progress=False, device="cpu")
    ckpt = run / "checkpoint.pt"
    assert sidecar_of(ckpt).read_text().split() == [runtime.sha256_of(ckpt), ckpt.name]
    raw = bytearray(ckpt.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 is .*corrupt or replaced"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="sha256"):
        pretrain(tiny_config(epochs=2), synthetic_set(), run_dir=run, resume=True, progress=False, device="cpu")
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder(str(ckpt))
    with pytest.raises(CheckpointError, match="sha256"):
        export_encoder(ckpt, "x", "d", folder=tmp_path / "pretrained")
    assert main(["export", "--run-dir", str(run), "--name", "x", "--dataset", "d"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ckpt}: sha256 is") and "\n" not in err


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1}, path)
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2:  # 1: the sidecar, 2: the checkpoint itself
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(runtime.os, "fsync", fsync)
    with pytest.raises(OSError, match=rf"{path}: no space left on device"):
        save_checkpoint({"epoch": 2}, path)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # the temporary file is gone
    assert load_checkpoint(path)["epoch"] == 1  # the old checkpoint still verifies


# 5. features made with on_error="skip" are usable; the CLI can skip -------------------------------------------------


def test_skipped_files_then_default_extraction(fsd, tmp_path, capsys, monkeypatch):
    meta = D.read_meta(fsd)
    meta.audio_path("train", meta.train[5]).write_bytes(b"not audio")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        out = _extract(meta, tmp_path / "train.h5", on_error="skip")
    with pytest.warns(UserWarning, match=r"made with on_error='skip', without 1 unreadable"):
        assert _extract(meta, out) == out
    monkeypatch.setenv("UCLSER_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("UCLSER_FSD_ROOT", str(fsd))
    assert main(["extract", "--skip-unreadable", "--device", "cpu"]) == 0
    assert "11 train clips" in capsys.readouterr().out
    assert main(["extract", "--device", "cpu"]) == 0  # the skipped file is reported, the features are used


# 6. complete features on a read-only folder --------------------------------------------------------------------------


def test_complete_features_need_no_write_access(fsd, tmp_path, monkeypatch):
    meta = D.read_meta(fsd)
    out = _extract(meta, tmp_path / "train.h5")
    (tmp_path / "train.h5.lock").unlink()

    def no_write(path, *a, **k):
        raise PermissionError(errno.EROFS, f"{path}: Read-only file system")

    monkeypatch.setattr(D.os, "open", no_write)  # the lock file cannot be created, as on a read-only folder
    assert _extract(meta, out) == out and len(D.load_features(out)) == 12
    if os.geteuid() != 0:
        os.chmod(tmp_path, 0o555)
        try:
            assert _extract(meta, out) == out
        finally:
            os.chmod(tmp_path, 0o755)


# 7. odd CSVs -------------------------------------------------------------------------------------------------------


def _edit(path: Path, fn):
    rows = list(csv.reader(open(path, newline="")))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(fn(rows))


@pytest.mark.parametrize(
    "csvname, edit, message",
    [
        ("train.csv", lambda r: r[:1] + [[r[1][0], r[1][1] + " ", *r[1][2:]]] + r[2:], r"line 2: label 'Engine ' has"),
        ("train.csv", lambda r: r + [r[3]], r"line 14: tr2.wav \(label 'Rain'\) is listed again at line 4"),
        ("train.csv", lambda r: r + [[r[3][0], "Fire", *r[3][2:]]], r"line 14: tr2.wav .* with label 'Rain' at line 4"),
        ("test.csv", lambda r: r + [["tr1.wav", "Fire", "/m/0"]], r"test.csv, line 6: tr1.wav is also in train.csv"),
    ],
    ids=["trailing-space", "duplicate-row", "two-labels", "train-and-test"],
)
def test_odd_csv_content_is_an_error_naming_file_line_and_value(fsd, csvname, edit, message):
    _edit(fsd / D.META_DIR / csvname, edit)
    with pytest.raises(ValueError, match=message) as info:
        D.read_meta(fsd)
    assert str(fsd / D.META_DIR / csvname) in str(info.value) and "\n" not in str(info.value)


def test_csv_encoding(fsd):
    path = fsd / D.META_DIR / "train.csv"
    text = path.read_text()
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # a UTF-8 byte-order mark is accepted
    assert len(D.read_meta(fsd).train) == 12
    path.write_bytes(text.encode().replace(b"tr3.wav", b"tr3\xe9.wav"))
    with pytest.raises(ValueError, match=rf"{path}, line 5: not UTF-8 text \(byte 0xe9"):
        D.read_meta(fsd)


# 8. a crash between the finished .part and the rename ---------------------------------------------------------------


def test_crash_before_the_rename_is_finished_cleanly(fsd, tmp_path, monkeypatch):
    meta = D.read_meta(fsd)
    out = tmp_path / "train.h5"

    def crash(a, b):
        raise KeyboardInterrupt

    monkeypatch.setattr(D.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _extract(meta, out)
    monkeypatch.undo()
    assert not out.exists() and (tmp_path / "train.h5.part").exists()
    assert _extract(meta, out) == out and len(D.load_features(out)) == 12


# 9. a full disk during extraction keeps what was flushed ------------------------------------------------------------


def test_full_disk_during_extraction(fsd, tmp_path, monkeypatch):
    meta = D.read_meta(fsd)
    out = tmp_path / "train.h5"
    real = D.shutil.disk_usage
    calls = {"n": 0}

    def usage(path):
        calls["n"] += 1
        u = real(path)
        return u._replace(free=1000) if calls["n"] >= 3 else u  # full after two flushes

    monkeypatch.setattr(D.shutil, "disk_usage", usage)
    with pytest.raises(OSError, match=r"train.h5.part: no space left on device .*the 6 clip\(s\) extracted so far"):
        _extract(meta, out, flush_every=3)
    monkeypatch.undo()
    with h5py.File(tmp_path / "train.h5.part") as f:
        assert f.attrs["n_done"] == 6
    assert len(D.load_features(_extract(meta, out, flush_every=3))) == 12  # resumed


# 10. truncated and antiphase audio -------------------------------------------------------------------------------


def test_truncated_wav_is_an_error(tmp_path):
    path = tmp_path / "t.wav"
    sf.write(path, np.zeros(44100, np.float32), 44100, subtype="PCM_16")
    raw = path.read_bytes()
    path.write_bytes(raw[: 44 + 882])  # 0.01 s of 1 s left
    with pytest.raises(AudioError, match=r"t.wav: truncated WAV: its data chunk declares 88200 bytes, the file holds"):
        load_audio(path)


def test_antiphase_stereo_warns_once(tmp_path):
    path = tmp_path / "s.wav"
    y = 0.3 * np.sin(np.arange(22050) / 5.0).astype(np.float32)
    sf.write(path, np.stack([y, -y], 1), 22050, subtype="FLOAT")
    with pytest.warns(UserWarning, match=r"s.wav: its 2 channels cancel when averaged"):
        load_audio(path)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        load_audio(path)  # once per file
        sf.write(tmp_path / "ok.wav", np.stack([y, 0.5 * y], 1), 22050, subtype="FLOAT")
        load_audio(tmp_path / "ok.wav")


# 11. the command line ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", ".inf"], "error: config.temperature: expected a finite number, got inf"),
        (["--lr", ".nan"], "error: config.lr: expected a finite number, got nan"),
        (["--momentum", "-1"], r"error: config.momentum: expected a number in [0, 1), got -1.0"),
        (["--lr=0"], "error: config.lr: expected a number > 0, got 0.0"),
        (["--epochs", "0"], "error: config.epochs: expected an integer >= 1, got 0"),
        (["--batch_size", "1"], "error: config.batch_size: expected an integer >= 2 (NT-Xent needs negatives), got 1"),
        (
            ["--epochs"],
            "error: --epochs: expected a value after it (overrides come in --key value pairs or as --key=value)",
        ),
        (["--data.preset", "huge"], "error: config.data.preset: expected tiny, course or null, got 'huge'"),
    ],
)
def test_cli_config_values_are_checked_before_any_data(args, message, capsys, monkeypatch, tmp_path):
    import uclser_lib.cli as M

    monkeypatch.setattr(M, "_dataset", lambda *a: pytest.fail("the data was prepared before the check"))
    assert main(["pretrain", "--run_dir", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err == message


def test_cli_accepts_1e_3_and_key_equals_value(monkeypatch, tmp_path):
    import uclser_lib.cli as M

    seen = {}

    def stop(data, device):
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "_dataset", stop)
    from uclser_lib import config

    orig = config.build
    monkeypatch.setattr(config, "build", lambda cls, values, *a: seen.setdefault(cls.__name__, orig(cls, values, *a)))
    assert main(["pretrain", "--run_dir", str(tmp_path / "r"), "--lr", "1e-3", "--epochs=3"]) == 130
    assert seen["PretrainConfig"].lr == 0.001 and seen["PretrainConfig"].epochs == 3


def test_cli_errors_are_one_line_with_traceback_on_debug(tmp_path, capsys):
    assert main(["linear-eval", "--encoder", "nope", "--data.preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config.encoder: encoder 'nope': no shipped encoder of that name") and "\n" not in err
    with pytest.raises(FileNotFoundError):
        main(["export", "--run-dir", str(tmp_path), "--name", "x", "--dataset", "d", "--debug"])
    assert main(["export", "--run-dir", str(tmp_path), "--name", "x", "--dataset", "d"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}/checkpoint.pt: no checkpoint there"


def test_exported_encoder_path_loads_through_its_manifest():
    encoder, mean, std = load_encoder(str(REPO / "pretrained" / "course-vgglike.pt"))
    assert not encoder.training and isinstance(mean, float) and std > 0
    assert encoder.embed(torch.zeros(2, 1, 101, 96)).shape[0] == 2
