"""Every notebook runs on another dataset than the course's: ``UCLSER_DATASET=<a folder>`` (issue #13), and the loop
closes (#22): notebook 03 exports the encoder it trains, and notebooks 04-06 evaluate it.

A small folder of generated sounds (3 classes of 8 WAV clips, and an unlabelled part) stands for ESC-50 or your own
recordings. Each notebook runs in smoke mode on it (nbconvert, which stops at the first cell that raises): what only
exists for the course dataset (its label-noise ground truth, its confusable classes, its shipped curves) is skipped
with a printed note, and the figures go to ``build/figures-smoke-<folder>``, never over the course's. Notebook 03
pre-trains for one epoch and prints the ``export UCLSER_ENCODER=...`` line a student would copy; notebooks 04-06 run
with it set and must label that encoder as the student's own ("yours: <run>") in their outputs. (Each notebook runs
once: the shipped encoders on the course dataset are exercised by the smoke runs of ``make test``.)
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import nbformat
import pytest
from nbconvert.preprocessors import ExecutePreprocessor
from test_folders import tone

ROOT = Path(__file__).resolve().parents[1]
#: Notebook 08 is the multi-label lesson: it runs on FSD50K's layout (the course's multi-label data, FSD50K or a
#: folder in its layout), not on a folder of class folders, whose clips carry one label each.
MULTILABEL_ONLY = ("08_multilabel_fsd50k",)
NOTEBOOKS = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if p.stem not in MULTILABEL_ONLY]
LATER = ("04_linear_evaluation", "05_finetuning", "06_what_the_encoder_learned")  # these evaluate 03's encoder
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


def _run(notebook: Path, root: Path, data: Path, encoder: Path | None) -> str:
    """Execute ``notebook`` in smoke mode on the folder dataset (stops at the first cell that raises); its text
    outputs, joined."""
    with pytest.MonkeyPatch.context() as env:  # the kernel inherits these; restored afterwards
        env.setenv("UCLSER_SMOKE", "1")
        env.setenv("UCLSER_DATASET", str(root))
        env.setenv("UCLSER_DATA", str(data))  # the folder's features: extracted by the first notebook, then read
        env.setenv("MPLBACKEND", os.environ.get("MPLBACKEND", "Agg"))
        if encoder is None:
            env.delenv("UCLSER_ENCODER", raising=False)
        else:
            env.setenv("UCLSER_ENCODER", str(encoder))
        nb = nbformat.read(notebook, as_version=4)
        ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(
            nb, {"metadata": {"path": str(notebook.parent)}}
        )
    code = [c for c in nb.cells if c.cell_type == "code"]
    not_run = [i for i, c in enumerate(code) if c.execution_count is None and c.source.strip()]
    assert not not_run, f"code cells {not_run} of {notebook.name} did not run"
    texts = []
    for cell in code:
        for out in cell.outputs:
            texts.append(out.get("text", ""))
            texts += [out.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown")]
    return "\n".join(texts)


@pytest.fixture(scope="module")
def runs(folder_dataset):
    """Each notebook's outputs on the folder dataset, run at most once per module (04-06 after 03, with its encoder)."""
    done: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in done:
            encoder = exported_encoder(get("03_contrastive_pretraining")) if name in LATER else None
            done[name] = _run(ROOT / "notebooks" / f"{name}.ipynb", *folder_dataset, encoder)
        return done[name]

    return get


def exported_encoder(text: str) -> Path:
    """Notebook 03's exported encoder, from the line the notebook prints for the student to copy."""
    lines = [line for line in text.splitlines() if line.startswith("export UCLSER_ENCODER=")]
    assert len(lines) == 1, "notebook 03 printed no `export UCLSER_ENCODER=` line"
    path = Path(shlex.split(lines[0].split("=", 1)[1])[0])
    assert path.is_file() and (path.parent / "manifest.json").is_file() and (path.parent / "checkpoint.pt").is_file()
    assert f'ENCODER = "{path}"' in text
    return path


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_folder_dataset(notebook, runs):
    text = runs(notebook.stem)
    assert f"folder:{FOLDER}" in text, f"{notebook.name} did not run on the folder dataset"
    saved = [line for line in text.splitlines() if line.endswith(".png")]
    assert all(f"build/figures-smoke-{FOLDER}/" in line for line in saved), saved  # never over the course's figures
    if notebook.stem in LATER:  # the encoder notebook 03 exported, evaluated and named as the student's own
        from uclser_lib.pretrained import resolve_encoder

        exported = exported_encoder(runs("03_contrastive_pretraining"))
        label = resolve_encoder(str(exported), "course-vgglike")[1].label
        assert label == f"yours: {exported.parent.name}"
        assert f"encoder: {label} (resnet18," in text, f"{notebook.name} did not load the exported encoder"
        shown = text.count(label)
        assert shown >= 2, f"{notebook.name} names the exported encoder {shown} time(s) only: its tables miss it"
        assert "encoder: course-" not in text  # the shipped encoder was not the one evaluated
