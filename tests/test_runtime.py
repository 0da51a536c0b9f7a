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
