"""Nothing lost, second pass (#34): a run folder owned by one process, exports that never replace an encoder
unasked, course-data workers that die with their parent, and a full disk in HDF5 and in course-data generation.

Each test reproduces one finding with real processes or a real fault: two pre-trainings on one ``run_dir``, an
export over an existing (or shipped) encoder, ``kill -9`` of a generation, and files that cannot grow (a file-size
limit, ``RLIMIT_FSIZE``: the kernel refuses the write as a full disk would, with EFBIG).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_train import synthetic_set, tiny_config

from uclser_lib import pretrained, runtime
from uclser_lib.cli import main
from uclser_lib.train import RunInUseError, pretrain, run_lock

REPO = Path(__file__).resolve().parents[1]
TESTS = [str(REPO / "tests"), str(REPO / "tests" / "helpers")]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lockf, kill -9, /proc: Linux")


def _script(body: str, **names) -> list[str]:
    code = f"import sys; sys.path[:0] = {TESTS!r}\n" + textwrap.dedent(body).format(**names)
    return [sys.executable, "-c", code]


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# 1. one process at a time owns a run folder --------------------------------------------------------------------

_PRETRAIN = """
    import os, time
    from test_train import synthetic_set, tiny_config
    from uclser_lib.train import pretrain

    def slow(epoch, step, loss):  # the first step waits (at most 120 s) until the test says go on
        if (epoch, step) == (0, 0):
            print("training", flush=True)
            deadline = time.monotonic() + 120
            while not os.path.exists({go!r}) and time.monotonic() < deadline:
                time.sleep(0.1)

    pretrain(tiny_config(epochs=2, seed={seed}, arch="vgglike"), synthetic_set(), run_dir={run!r}, progress=False,
             device="cpu", on_step=slow)
    print("done", flush=True)
"""


@pytest.mark.slow  # two pre-training subprocesses
@linux_only
def test_two_pretrainings_on_one_run_dir_the_second_is_refused(tmp_path):
    run, go = tmp_path / "run", tmp_path / "go"
    a = subprocess.Popen(
        _script(_PRETRAIN, seed=1, run=str(run), go=str(go)), env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert a.stdout.readline().strip() == "training"  # A is in its first step: no checkpoint yet
        assert not (run / "checkpoint.pt").exists()
        b = subprocess.run(
            _script(_PRETRAIN, seed=2, run=str(run), go=str(go)), env=ENV, capture_output=True, text=True, timeout=120
        )
        go.touch()
        assert a.wait(timeout=120) == 0
    finally:
        a.kill()
    assert b.returncode == 1 and "done" not in b.stdout
    last = b.stderr.strip().splitlines()[-1]
    assert last == (
        f"uclser_lib.train.RunInUseError: {run}: in use by PID {a.pid} (another pre-training writes this run_dir); "
        "wait for it to end, or choose another run_dir"
    )
    ckpt = json.loads((run / "metrics.json").read_text())
    assert len(ckpt) == 2  # run A, whole
    from uclser_lib.checkpoints import load_checkpoint

    state = load_checkpoint(run / "checkpoint.pt")
    assert state["config"]["seed"] == 1 and state["epoch"] == 2


@pytest.mark.slow  # a subprocess holds the run folder
@linux_only
def test_cli_refuses_a_run_dir_in_use_before_preparing_data(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        _script(
            """
            import time
            from uclser_lib.train import run_lock
            with run_lock({run!r}):
                print("locked", flush=True)
                time.sleep(30)
            """,
            run=str(run),
        ),
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        import uclser_lib.cli as M

        monkeypatch.setattr(M, "_dataset", lambda *a: pytest.fail("the data was prepared before the refusal"))
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert main(["pretrain", "--run_dir", str(run), "--epochs", "1", *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert err == (
                f"error: {run}: in use by PID {holder.pid} (another pre-training writes this run_dir); wait for it "
                "to end, or choose another run_dir"
            )
        with pytest.raises(RunInUseError, match=f"in use by PID {holder.pid}"):
            pretrain(tiny_config(epochs=1), synthetic_set(), run_dir=run, progress=False, device="cpu")
    finally:
        holder.kill()
        holder.wait()
    # its holder gone (killed), the folder is free at once; the same process may take it again inside itself
    with run_lock(run), run_lock(run):
        _, hist = pretrain(tiny_config(epochs=1, arch="vgglike"), synthetic_set(), run_dir=run, progress=False,
                           device="cpu")  # fmt: skip
    assert len(hist) == 1


# 2. an export never replaces an encoder unasked, and never a shipped one -----------------------------------------


def _files(folder: Path) -> dict:
    return {p.name: runtime.sha256_of(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_export_never_replaces_an_encoder_unasked_nor_a_shipped_one(tmp_path, capsys, monkeypatch):
    import uclser_lib.cli as M

    run = tmp_path / "run"
    pretrain(tiny_config(epochs=1, arch="vgglike"), synthetic_set(), run_dir=run, progress=False, device="cpu")
    shipped = tmp_path / "pretrained"  # a copy of the shipped folder stands in for it
    shipped.mkdir()
    for name in ("manifest.json", "course-vgglike.pt", "course-vgglike.metrics.json"):
        shutil.copy(REPO / "pretrained" / name, shipped / name)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped)
    monkeypatch.setattr(M, "_dataset", lambda *a: pytest.fail("the data was prepared before the refusal"))
    export = ["export", "--run-dir", str(run), "--dataset", "d"]

    assert main([*export, "--name", "mine"]) == 0
    capsys.readouterr()
    before = _files(shipped)
    for argv in (
        [*export, "--name", "mine"],
        [*export, "--name", "course-vgglike"],
        [*export, "--name", "course-vgglike", "--overwrite"],
        ["pretrain", "--run_dir", str(tmp_path / "r2"), "--export", "mine"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err, err
        if "course-vgglike" in argv:
            assert err == (
                f"error: {shipped}/course-vgglike.pt: 'course-vgglike' is a shipped encoder and is never replaced "
                "(--overwrite included); export under another --name (e.g. my-vgglike)"
            )
        else:
            assert err == (
                f"error: {shipped}/mine.pt: an encoder named 'mine' is already there; pass --overwrite to replace it "
                "(its file, metrics and manifest entry), or choose another --name"
            )
    assert _files(shipped) == before  # nothing replaced
    assert main([*export, "--name", "mine", "--overwrite", "--made-on", "again"]) == 0
    assert pretrained.read_manifest(shipped)["mine"]["made"]["how"] == "again"
    assert _files(shipped)["course-vgglike.pt"] == before["course-vgglike.pt"]
    # the maintainers' remake says so; an export into the run's own folder (notebook 03's) follows its run
    assert main([*export, "--name", "course-vgglike", "--replace-shipped"]) == 0
    assert _files(shipped)["course-vgglike.pt"] != before["course-vgglike.pt"]
    for _ in range(2):
        pretrained.export_encoder(run / "checkpoint.pt", run.name, dataset="d", folder=run)


# 3. kill -9 of a course-data generation leaves no worker behind ----------------------------------------------------

_GENERATE = """
    import os, time
    from uclser_lib.coursedata import writer as W
    real = W._write_clip

    def slow(job):  # each worker says who it is, then renders slowly
        with open({pids!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(1.0)
        return real(job)

    W._write_clip = slow
    W.generate({root!r}, "tiny", seed=1, progress=False, workers=2)
"""


@pytest.mark.slow  # a generation subprocess killed with -9
@linux_only
def test_kill_9_of_course_data_generation_leaves_no_worker(tmp_path):
    pids = tmp_path / "pids.txt"
    proc = subprocess.Popen(_script(_GENERATE, pids=str(pids), root=str(tmp_path / "course")), env=ENV)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.1)
            workers = {int(p) for p in pids.read_text().split()} if pids.exists() else set()
        assert proc.poll() is None and len(workers) == 2, "the generation ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "generation workers outlived their killed parent"
    finally:
        proc.kill()
        for p in workers:  # the workers this test started, should the fix fail
            if _alive(p):
                os.kill(p, signal.SIGKILL)


# 4-5. a full disk after the free-space check: one line naming the file, no crash, nothing half-written ------------


def _limited(max_bytes: int):
    """Run a child with files that cannot grow past ``max_bytes``: its writes fail (EFBIG) as on a full disk."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.RLIM_INFINITY))

    return limit


@pytest.mark.slow  # extraction subprocesses
@linux_only
def test_a_disk_full_inside_hdf5_is_an_error_not_a_crash(tmp_path):
    from test_data import write_fsd

    from uclser_lib import data as D

    fsd = write_fsd(tmp_path / "fsd")  # 12 train clips: about 0.8 MB of features, written past the 300 kB limit
    env = dict(ENV, UCLSER_DATA=str(tmp_path / "data"), UCLSER_FSD_ROOT=str(fsd))
    cmd = [sys.executable, "-m", "uclser_lib", "extract", "--device", "cpu"]
    full = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, preexec_fn=_limited(300_000))
    assert full.returncode == 2, full.stderr[-2000:]  # was -11 (segfault) after the message
    features = tmp_path / "data" / "fsdnoisy18k" / "features"
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        f"error: [Errno 28] {features}/train.h5.part: no space left on device (free some space, then run again)"
    ), full.stderr[-2000:]
    assert "Traceback" not in full.stderr and "Exception ignored" not in full.stderr
    assert not (features / "train.h5").exists()  # no half-written final file
    again = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    clean = D.extract_split(D.read_meta(fsd), "train", tmp_path / "clean.h5", workers=0, progress=False)
    rerun, fresh = D.load_features(features / "train.h5").clips, D.load_features(clean).clips
    assert torch.equal(rerun.lengths, fresh.lengths)
    # the same features up to float32 rounding: the CLI and this process may batch the STFT differently
    tol = 64 * torch.finfo(torch.float32).eps * float(fresh.data.abs().max())
    torch.testing.assert_close(rerun.data, fresh.data, rtol=0, atol=tol)


@pytest.mark.slow  # a generation subprocess
@linux_only
def test_a_disk_full_during_course_data_generation_names_the_file(tmp_path):
    env = dict(ENV, UCLSER_DATA=str(tmp_path / "data"))
    cmd = [sys.executable, "-m", "uclser_lib", "extract", "--preset", "tiny", "--device", "cpu"]
    full = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, preexec_fn=_limited(60_000))
    assert full.returncode == 2, full.stderr[-2000:]
    last = [line for line in full.stderr.splitlines() if line.strip()][-1]
    # was "error: LibsndfileError: System error."
    assert last.startswith(f"error: [Errno 28] {tmp_path / 'data'}/") and last.endswith(
        ".wav: no space left on device (free some space, then run again)"
    ), last
    assert "Traceback" not in full.stderr
    assert not [*(tmp_path / "data").rglob("*.part"), *(tmp_path / "data").rglob("*.tmp")]  # no half-written WAV
