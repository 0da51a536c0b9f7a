"""Notebook 03 writes one training step out (the code cell tagged ``training-step``); here that cell's own source
runs on a tiny config and must give, step for step, the losses of the library's ``pretrain`` for the same seed and
config (issue #32). A different seed, another temperature or a step without the SGD update must not: the comparison
can fail."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import synthetic_set

from uclser_lib.train import PretrainConfig, pretrain

NB03 = Path(__file__).resolve().parents[1] / "notebooks" / "03_contrastive_pretraining.ipynb"
N_STEPS = 3


def step_source() -> str:
    cells = json.loads(NB03.read_text())["cells"]
    tagged = ["".join(c["source"]) for c in cells if "training-step" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"notebook 03 has {len(tagged)} cells tagged training-step"
    return tagged[0]


def written_step(cfg: PretrainConfig, clips, source: str | None = None) -> list[float]:
    """The cell's losses: it reads ``step_cfg``, ``step_set`` and ``N_STEPS`` and leaves ``step_losses``."""
    namespace = {"step_cfg": cfg, "step_set": clips, "N_STEPS": N_STEPS}
    exec(compile(source or step_source(), "training-step", "exec"), namespace)
    return namespace["step_losses"]


def library_steps(cfg: PretrainConfig, clips) -> list[float]:
    losses = []
    pretrain(cfg, clips, device="cpu", progress=False, on_step=lambda epoch, step, loss: losses.append(loss))
    return losses


def tolerance(losses: list[float]) -> float:
    """A few float32 roundings of a loss this large: the same operations in the same order agree far closer."""
    return 16 * torch.finfo(torch.float32).eps * max(abs(x) for x in losses)


@pytest.fixture(scope="module")
def tiny():
    cfg = PretrainConfig(arch="resnet18", epochs=1, batch_size=4, proj_dim=32, seed=3)
    clips = synthetic_set(n=N_STEPS * cfg.batch_size)  # one epoch is N_STEPS steps
    return cfg, clips, library_steps(cfg, clips)


def test_the_cell_is_the_only_one_that_steps():
    src = step_source()
    for piece in ("initial_encoder(", "ViewBuilder(", "ProjectionHead(", "nt_xent(", ".backward()", ".step()"):
        assert piece in src, f"the training-step cell lost {piece!r}"
    assert len([line for line in src.splitlines() if line.strip()]) <= 35, "the written step should read in ~30 lines"


def test_the_written_step_gives_pretrains_losses(tiny):
    cfg, clips, library = tiny
    written = written_step(cfg, clips)
    assert len(written) == len(library) == N_STEPS
    assert np.allclose(written, library, rtol=0, atol=tolerance(library)), (written, library)


@pytest.mark.parametrize(
    "change", [dict(seed=4), dict(temperature=0.5)], ids=lambda c: next(iter(c)) + "=" + str(next(iter(c.values())))
)
def test_another_seed_or_temperature_gives_other_losses(tiny, change):
    cfg, clips, library = tiny
    written = written_step(dataclasses.replace(cfg, **change), clips)
    assert np.abs(np.array(written) - library).max() > 100 * tolerance(library), (change, written, library)


def test_a_step_without_the_update_gives_other_losses(tiny):
    """Without ``optimizer.step()`` the first loss is still pretrain's (the same weights, the same views), the later
    ones are not: the comparison sees the update."""
    cfg, clips, library = tiny
    source = step_source()
    assert source.count("optimizer.step()") == 1
    written = written_step(cfg, clips, source.replace("optimizer.step()", "pass"))
    assert abs(written[0] - library[0]) <= tolerance(library)
    assert np.abs(np.array(written[1:]) - library[1:]).max() > 100 * tolerance(library), (written, library)
