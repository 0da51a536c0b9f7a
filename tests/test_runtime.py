"""The shared helpers of runtime: atomic writes, the device choice."""

import pytest
import torch

from uclser_lib.runtime import pick_device, write_atomic


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


def test_dataset_choice_and_its_figures_folder(monkeypatch, tmp_path):
    """``UCLSER_DATASET`` picks the notebooks' dataset; another one than the course's keeps its figures apart."""
    from uclser_lib import plots
    from uclser_lib.plots import figures_dir
    from uclser_lib.runtime import dataset_choice

    REPO_ROOT = tmp_path  # figures_dir creates the folder: here, not in the checkout
    monkeypatch.setattr(plots, "REPO_ROOT", REPO_ROOT)
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
