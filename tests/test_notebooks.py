"""Notebooks are stored without outputs, start with a parameters cell, and import their code from uclser_lib."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_and_no_inline_training(path):
    nb = json.loads(path.read_text())
    code = [("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code"]
    assert any("SMOKE" in c and "parameters" in c.lower() for c in code[:3]), (
        f"{path.name}: no parameters cell near the top"
    )
    joined = "\n".join(code)
    assert not re.search(r"^\s*class \w+", joined, re.M), (
        f"{path.name} defines a class inline: it belongs in uclser_lib"
    )
    # notebook 03 writes one training step out (backward and the SGD step included), in the cell tagged
    # "training-step"; every other cell, there and elsewhere, leaves training to uclser_lib
    joined = "\n".join(
        "".join(c["source"])
        for c in nb["cells"]
        if c["cell_type"] == "code" and "training-step" not in c["metadata"].get("tags", [])
    )
    for forbidden in (".backward(", ".step()", "nn.Module"):
        assert forbidden not in joined, f"{path.name} uses {forbidden!r} inline: training code belongs in uclser_lib"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_cells_are_prose_not_comment_lines(path):
    """Text cells converted from a script keep no '# ' comment prefixes: each such line would render as a heading."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            lines = [line for line in "".join(cell["source"]).splitlines() if line.strip()]
            headings = [line for line in lines if line.startswith("#")]
            assert len(headings) <= 2 and len(lines) > len(headings) or len(lines) == 1, (
                f"{path.name} cell {i}: {len(headings)} of its {len(lines)} lines start with '#' "
                f"(a wall of headings): {headings[:2]}"
            )


def test_every_committed_lesson_figure_is_drawn_by_a_notebook():
    """figures/NN_*.png are the notebooks' figures: each one a notebook saves is committed, and none is left over
    from a figure a notebook no longer draws (it would show readers a result nothing remakes)."""
    saved = {
        name
        for path in NOTEBOOKS
        for name in re.findall(
            r'save_figure\(fig, "(\w+)"\)',
            "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"),
        )
    }
    figures = NOTEBOOKS[0].parents[1] / "figures"
    committed = {p.stem for p in figures.glob("[0-9][0-9]_*.png")}
    assert saved, "no notebook saves a figure with plots.save_figure(fig, NAME)"
    assert saved - committed == set(), f"figures the notebooks draw but figures/ lacks: {sorted(saved - committed)}"
    assert committed - saved == set(), f"figures/ holds figures no notebook draws: {sorted(committed - saved)}"


#: Notebooks whose first run builds a dataset of their own, not the course dataset of `extract`: the timing row of
#: that build (notebook 08 generates the multi-label course data in FSD50K's layout and extracts its features).
OWN_DATA = {"08_multilabel_fsd50k.ipynb": "multi-label course data + features (course-fsd50k)"}


def timing_table() -> tuple[dict[str, int], dict[str, int]]:
    """bench/RESULTS.md's full-mode timing table (made by `make time-course`): ({notebook: wall s}, {data step: wall
    s}), the data steps being the extract row (key "extract") and the rows of :data:`OWN_DATA`."""
    text = (Path(__file__).resolve().parents[1] / "bench" / "RESULTS.md").read_text()
    table = text.split("<!-- time-notebooks:start -->")[1].split("<!-- time-notebooks:end -->")[0]
    walls = {
        name: int(wall)
        for name, wall in re.findall(r"^\| (\d\d_\w+\.ipynb) \| (\d+) \| [\d.]+ \| \d+ \| 0 \|", table, re.M)
    }
    data = {}
    for key, label in [("extract", "dataset + features (extract)"), *OWN_DATA.items()]:
        row = re.search(rf"^\| {re.escape(label)} \| (\d+) \|", table, re.M)
        assert row, f"bench/RESULTS.md: the timing table has no row {label!r}"
        data[key] = int(row[1])
    return walls, data


def minutes(seconds: int) -> int:
    """Whole minutes as a run-time line states them: rounded, at least 1."""
    return max(1, round(seconds / 60))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_states_the_measured_run_time(path):
    """Each notebook's first cell states its full-mode CPU time, and the first run's (the course data built too),
    in whole minutes as bench/RESULTS.md's table measured them."""
    walls, data = timing_table()
    assert path.name in walls, f"bench/RESULTS.md: no successful full-mode timing of {path.name} (make time-course)"
    first = "".join(json.loads(path.read_text())["cells"][0]["source"])
    stated = re.search(r"\*\*Run time:\*\* about (\d+) min on a 2-core CPU, (\d+) min the first time", first)
    assert stated, (
        f"{path.name}: its first cell states no '**Run time:** about M min on a 2-core CPU, N min the first time'"
    )
    want = (
        minutes(walls[path.name]),
        minutes(walls[path.name] + data[path.name if path.name in OWN_DATA else "extract"]),
    )
    assert (int(stated[1]), int(stated[2])) == want, (
        f"{path.name}: its first cell says {stated[0]!r}; bench/RESULTS.md measured {want[0]} and {want[1]} min"
    )


#: A lesson's markdown budget (issue #32): d2l's chapters are about this long.
WORD_BUDGET = 1500
#: What belongs in bench/RESULTS.md and docs/, not in a lesson's prose: dates, commits and machines.
BOOKKEEPING = re.compile(
    r"\b20\d\d-\d\d-\d\d\b|\bcommit [0-9a-f]{7}|\bH[12]00\b|\bEPYC\b|\bdevelopment (?:machine|VM)\b|\bthe VM\b"
)


def markdown_words(path: Path) -> int:
    """Words (whitespace-separated) of a notebook's markdown cells."""
    cells = json.loads(path.read_text())["cells"]
    return sum(len("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_prose_within_budget_and_without_bookkeeping(path):
    words = markdown_words(path)
    assert words <= WORD_BUDGET, f"{path.name}: {words} words of markdown, the budget is {WORD_BUDGET}"
    cells = json.loads(path.read_text())["cells"]
    found = [m[0] for c in cells if c["cell_type"] == "markdown" for m in BOOKKEEPING.finditer("".join(c["source"]))]
    assert not found, f"{path.name}: bookkeeping in its prose (it belongs in bench/RESULTS.md or docs/): {found[:3]}"


def test_bookkeeping_pattern_catches_what_it_names():
    for text in ("run on 2026-12-07", "at commit 1ec0caa", "one H200", "the development machine", "on the VM"):
        assert BOOKKEEPING.search(text), text
    assert not BOOKKEEPING.search("about 6 min on a 2-core CPU, 9 min the first time")
