"""Every notebook runs on another dataset than the course's: ``UCLSER_DATASET=<a folder>`` (issue #13).

A small folder of generated sounds (3 classes of 8 WAV clips, and an unlabelled part) stands for ESC-50 or your own
recordings. Each notebook runs in smoke mode on it (nbconvert, which stops at the first cell that raises): what only
exists for the course dataset (its label-noise ground truth, its confusable classes, its shipped curves) is skipped
with a printed note, and the figures go to ``build/figures-smoke-<folder>``, never over the course's.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbconvert.preprocessors import ExecutePreprocessor
from test_folders import tone

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FOLDER = "nbfolder"  # one fixed name: the notebooks' runs/ and figure folders are named after it, reused by each run

pytestmark = pytest.mark.slow  # every notebook run end to end (nbconvert)


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    """3 classes x 8 clips (1.2-2.6 s, 16 kHz) and 8 unlabelled clips (2.6 s), plus a data root for its features."""
    base = tmp_path_factory.mktemp("folder-dataset")
    root = base / FOLDER
    for c, (name, f0) in enumerate((("buzz", 300), ("hum", 120), ("whistle", 900))):
        for i in range(8):
            tone(root / name / f"{name}{i}.wav", f0 + 15 * i, sr=16000, seconds=1.2 + 0.2 * i, seed=10 * c + i)
    for i in range(8):
        tone(root / "unlabelled" / f"u{i}.wav", 150 + 80 * i, sr=16000, seconds=2.6, seed=50 + i)
    return root, base / "data"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_folder_dataset(notebook, folder_dataset, monkeypatch):
    root, data = folder_dataset
    monkeypatch.setenv("UCLSER_SMOKE", "1")
    monkeypatch.setenv("UCLSER_DATASET", str(root))
    monkeypatch.setenv("UCLSER_DATA", str(data))  # the folder's features: extracted by the first notebook, then read
    monkeypatch.setenv("MPLBACKEND", os.environ.get("MPLBACKEND", "Agg"))
    nb = nbformat.read(notebook, as_version=4)
    ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(notebook.parent)}})
    code = [c for c in nb.cells if c.cell_type == "code"]
    not_run = [i for i, c in enumerate(code) if c.execution_count is None and c.source.strip()]
    assert not not_run, f"code cells {not_run} of {notebook.name} did not run"
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert f"folder:{FOLDER}" in text, f"{notebook.name} did not run on the folder dataset"
    saved = [line for line in text.splitlines() if line.endswith(".png")]
    assert all(f"build/figures-smoke-{FOLDER}/" in line for line in saved), saved  # never over the course's figures
