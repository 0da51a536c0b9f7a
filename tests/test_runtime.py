"""The shared helpers of runtime: atomic writes, the disk-full rule, the device choice, the environment readers."""

import errno
import os
from pathlib import Path

import pytest
import torch

from uclser_lib.runtime import DiskFullError, disk_full_error, fsd_root, pick_device, write_atomic


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_atomic(path, "first")
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"

    def crash(p):
        p.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, save=crash)
    assert path.read_bytes() == b"second"  # the old file survives an interrupted write
    write_atomic(path, save=lambda p: torch.save({"x": 1}, p))
    assert torch.load(path, weights_only=True) == {"x": 1}


def test_pick_device(monkeypatch):
    monkeypatch.setenv("UCLSER_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")


def test_a_bad_device_names_where_it_came_from(monkeypatch):
    """Issue 34, row 11: ``UCLSER_DEVICE=bogus`` gave torch's message, which does not name the variable."""
    monkeypatch.setenv("UCLSER_DEVICE", "bogus")
    with pytest.raises(ValueError) as err:
        pick_device()
    assert str(err.value) == "UCLSER_DEVICE='bogus': not a device (expected cpu, cuda, cuda:<index> or mps)"
    with pytest.raises(ValueError, match=r"^device 'cuda:x': not a device \(expected cpu, cuda"):
        pick_device("cuda:x")
    from uclser_lib.features import extract_many  # extract --device bogus: the same line, not torch's

    with pytest.raises(ValueError, match=r"^device 'bogus': not a device \(expected cpu, cuda"):
        next(extract_many(["x.wav"], device="bogus", workers=0))
    if not torch.cuda.is_available():
        monkeypatch.setenv("UCLSER_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match=r"^UCLSER_DEVICE='cuda' was asked for but CUDA is not available"):
            pick_device()


def test_dataset_choice_and_its_figures_folder(monkeypatch, tmp_path):
    """``UCLSER_DATASET`` picks the notebooks' dataset; another one than the course's keeps its figures apart."""
    from uclser_lib import plots
    from uclser_lib.plots import figures_dir
    from uclser_lib.runtime import dataset_choice

    REPO_ROOT = tmp_path  # figures_dir creates the folder: here, not in the checkout
    monkeypatch.setattr(plots, "work_root", lambda: REPO_ROOT)
    monkeypatch.setenv("UCLSER_SMOKE", "1")
    for unset in (None, ""):
        if unset is None:
            monkeypatch.delenv("UCLSER_DATASET", raising=False)
        else:
            monkeypatch.setenv("UCLSER_DATASET", unset)
        assert dataset_choice() is None and figures_dir() == REPO_ROOT / "build" / "figures-smoke"
    monkeypatch.setenv("UCLSER_DATASET", "esc50")
    assert dataset_choice() == "esc50" and figures_dir() == REPO_ROOT / "build" / "figures-smoke-esc50"
    monkeypatch.setenv("UCLSER_DATASET", "/some/where/my_sounds")
    assert figures_dir() == REPO_ROOT / "build" / "figures-smoke-my_sounds"
    monkeypatch.setenv("UCLSER_SMOKE", "0")
    assert figures_dir() == REPO_ROOT / "build" / "figures-my_sounds"  # never figures/, the course's


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_disk_full_error_is_one_rule(tmp_path, code):
    full = disk_full_error(OSError(code, os.strerror(code)), tmp_path / "f.h5")
    assert isinstance(full, DiskFullError) and isinstance(full, OSError) and full.errno == errno.ENOSPC
    assert str(full).endswith(f"{tmp_path / 'f.h5'}: no space left on device (free some space, then run again)")
    assert disk_full_error(full, "elsewhere") is full  # already told apart: kept, with its own message
    assert isinstance(disk_full_error(RuntimeError("[enforce fail] ... errno = 28"), "p"), DiskFullError)  # torch.save
    assert disk_full_error(OSError(errno.EACCES, "Permission denied"), "p") is None
    assert disk_full_error(KeyboardInterrupt(), "p") is None


def test_write_atomic_reports_a_quota_as_a_full_disk(tmp_path):
    path = tmp_path / "f.bin"
    write_atomic(path, b"old")

    def over_quota(p):
        Path(p).write_bytes(b"half")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    with pytest.raises(DiskFullError, match=f"{path}: no space left on device"):
        write_atomic(path, save=over_quota)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_fsd_root_reads_uclser_fsd_root(monkeypatch, tmp_path):
    """``UCLSER_FSD_ROOT`` unset or empty: None; set: that folder, ``~`` expanded."""
    monkeypatch.delenv("UCLSER_FSD_ROOT", raising=False)
    assert fsd_root() is None
    monkeypatch.setenv("UCLSER_FSD_ROOT", "")
    assert fsd_root() is None
    monkeypatch.setenv("UCLSER_FSD_ROOT", str(tmp_path))
    assert fsd_root() == tmp_path
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("UCLSER_FSD_ROOT", "~/fsd")
    assert fsd_root() == tmp_path / "fsd"


def test_check_gpu_stops_only_on_a_gpu_that_torch_cannot_use():
    from uclser_lib.runtime import check_gpu

    check_gpu(has_gpu=lambda: False, cuda_available=lambda: False)  # a CPU machine
    check_gpu(has_gpu=lambda: True, cuda_available=lambda: True)  # a GPU torch can use
    with pytest.raises(RuntimeError, match="nvidia-smi sees a GPU but the installed torch cannot use it"):
        check_gpu(has_gpu=lambda: True, cuda_available=lambda: False)
