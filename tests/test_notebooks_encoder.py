"""The loop closed (#22): notebook 03 exports the encoder it trains, and notebooks 04-06 evaluate it when
``UCLSER_ENCODER`` names it, labelled as the student's own ("yours: <run>") in their outputs.

Smoke mode (nbconvert's ExecutePreprocessor, as ``test_notebooks_datasets.py``): notebook 03 pre-trains for one
epoch and prints the ``export UCLSER_ENCODER=...`` line a student would copy; the other three run with it set.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import nbformat
import pytest
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
LATER = ["04_linear_evaluation", "05_finetuning", "06_what_the_encoder_learned"]


def _run(name: str) -> str:
    """Execute ``notebooks/<name>.ipynb`` (stops at the first cell that raises); its text outputs, joined."""
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(NOTEBOOKS)}})
    code = [c for c in nb.cells if c.cell_type == "code"]
    not_run = [i for i, c in enumerate(code) if c.execution_count is None and c.source.strip()]
    assert not not_run, f"code cells {not_run} of {path.name} did not run"
    texts = []
    for cell in code:
        for out in cell.outputs:
            texts.append(out.get("text", ""))
            data = out.get("data", {})
            texts += [data.get("text/plain", ""), data.get("text/markdown", "")]
    return "\n".join(texts)


@pytest.fixture(scope="module")
def smoke_env():
    old = {k: os.environ.get(k) for k in ("UCLSER_SMOKE", "UCLSER_ENCODER", "MPLBACKEND")}
    os.environ.update(UCLSER_SMOKE="1", MPLBACKEND=os.environ.get("MPLBACKEND", "Agg"))
    os.environ.pop("UCLSER_ENCODER", None)
    yield
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def exported(smoke_env):
    """Notebook 03's exported encoder: its path, from the line the notebook prints for the student to copy."""
    text = _run("03_contrastive_pretraining")
    lines = [line for line in text.splitlines() if line.startswith("export UCLSER_ENCODER=")]
    assert len(lines) == 1, "notebook 03 printed no `export UCLSER_ENCODER=` line"
    path = Path(shlex.split(lines[0].split("=", 1)[1])[0])
    assert path.is_file() and (path.parent / "manifest.json").is_file() and (path.parent / "checkpoint.pt").is_file()
    assert f'ENCODER = "{path}"' in text
    return path


@pytest.mark.slow
@pytest.mark.parametrize("notebook", LATER)
def test_later_notebooks_evaluate_the_encoder_notebook_03_exported(notebook, exported, monkeypatch):
    from uclser_lib.pretrained import resolve_encoder

    label = resolve_encoder(str(exported), "course-vgglike")[1].label
    assert label == f"yours: {exported.parent.name}"
    monkeypatch.setenv("UCLSER_ENCODER", str(exported))
    text = _run(notebook)
    assert f"encoder: {label} (resnet18," in text, f"{notebook} did not load the exported encoder"
    shown = text.count(label)
    assert shown >= 2, f"{notebook} names the exported encoder {shown} time(s) only: its tables and figures miss it"
    assert "encoder: course-" not in text  # the shipped encoder was not the one evaluated
