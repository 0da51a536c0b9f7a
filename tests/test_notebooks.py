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
    for forbidden in (".backward(", "optimizer.step", "nn.Module"):
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


def timing_table() -> dict[str, tuple[int, str]]:
    """bench/RESULTS.md's full-mode timing table (made by `make time-course`): {notebook: (wall s, date)}."""
    text = (Path(__file__).resolve().parents[1] / "bench" / "RESULTS.md").read_text()
    table = text.split("<!-- time-notebooks:start -->")[1].split("<!-- time-notebooks:end -->")[0]
    row = r"^\| (\d\d_\w+\.ipynb) \| (\d+) \| [\d.]+ \| \d+ \| 0 \| (\d{4}-\d\d-\d\d)"
    return {name: (int(wall), date) for name, wall, date in re.findall(row, table, re.M)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_states_the_measured_run_time(path):
    """Each notebook's first cell states its full-mode CPU time as bench/RESULTS.md's table measured it."""
    table = timing_table()
    assert path.name in table, f"bench/RESULTS.md: no successful full-mode timing of {path.name} (make time-course)"
    wall, date = table[path.name]
    first = "".join(json.loads(path.read_text())["cells"][0]["source"])
    stated = re.search(
        r"\*\*Run time\*\* \(full mode[^)]*\): (\d+) min (\d\d) s on a 2-core CPU \([^,]*, ([\d-]+)", first
    )
    assert stated, f"{path.name}: its first cell states no '**Run time** (full mode ...): M min SS s on a 2-core CPU'"
    assert (int(stated[1]) * 60 + int(stated[2]), stated[3]) == (wall, date), (
        f"{path.name}: its first cell says {stated[0]!r}; bench/RESULTS.md measured {wall} s on {date}"
    )
