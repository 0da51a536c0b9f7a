"""Every lesson's exercises, their solutions and its "implement it" exercise (issue #23, part 3). No notebook runs
here: nbval (``tests/test_notebooks.py``) runs every cell, solutions included, so a solution that stops working
fails the build; these tests check that the cells are there, titled, collapsed and in their place.

- A solution is a code cell tagged ``solution`` (and ``hide-input``: MyST-NB folds it on the website), hidden in
  JupyterLab (``jupyter.source_hidden``) and Colab (``cellView: form``), whose first line is
  ``# @title Solution <n>: ...``; it comes after the "## Exercises" cell, under a "## Solutions" heading.
- An "implement it" exercise is a code cell tagged ``exercise`` that defines a stub raising ``NotImplementedError``
  and calls ``exercises.check`` on it; a solution titled "(implement it)" defines the same function and asserts the
  check.
- Every notebook: every numbered exercise has its solution, and one "implement it" exercise (or more).
"""

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPO = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")
SOLVED = IMPLEMENT_IT = [p.stem for p in NOTEBOOKS]  # every notebook
TITLE = re.compile(r"# @title Solution (\d+|\(implement it\)): \S")


def _cells(stem: str) -> list[dict]:
    return json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def _exercises(cells: list[dict]) -> tuple[int, list[str]]:
    at = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and _src(c).startswith("## Exercises")]
    assert len(at) == 1, f"{len(at)} '## Exercises' cells"
    return at[0], re.findall(r"^(\d+)\. \*\*", _src(cells[at[0]]), flags=re.M)


def _solutions(cells: list[dict]) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(cells) if "solution" in c["metadata"].get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_end_with_the_discussion_link(path):
    cells = _cells(path.stem)
    at, numbers = _exercises(cells)
    assert numbers == [str(n) for n in range(1, len(numbers) + 1)], f"{path.name}: exercises numbered {numbers}"
    assert f"[the course's issue tracker]({REPO}/issues)" in _src(cells[at]), f"{path.name}: no discussion link"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solution_cells_are_collapsed_titled_and_after_the_exercises(path):
    cells = _cells(path.stem)
    at, numbers = _exercises(cells)
    solutions = _solutions(cells)
    for i, cell in solutions:
        first = _src(cell).splitlines()[0]
        assert cell["cell_type"] == "code" and TITLE.match(first), f"{path.name} cell {i}: first line {first!r}"
        assert "hide-input" in cell["metadata"]["tags"], f"{path.name} cell {i}: not tagged hide-input"
        assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, f"{path.name} cell {i}: not hidden"
        assert cell["metadata"].get("cellView") == "form", f"{path.name} cell {i}: no cellView form (Colab)"
        assert i > at, f"{path.name} cell {i}: a solution before the exercises"
        n = TITLE.match(first).group(1)
        assert n == "(implement it)" or n in numbers, f"{path.name} cell {i}: a solution to no exercise ({n})"
    if solutions:
        heading = [i for i, c in enumerate(cells) if _src(c).startswith("## Solutions")]
        assert len(heading) == 1 and at < heading[0] < solutions[0][0], f"{path.name}: no '## Solutions' heading"


@pytest.mark.parametrize("stem", SOLVED)
def test_every_exercise_has_its_solution(stem):
    cells = _cells(stem)
    _, numbers = _exercises(cells)
    titled = [TITLE.match(_src(c).splitlines()[0]).group(1) for _, c in _solutions(cells)]
    missing = [n for n in numbers if n not in titled]
    assert not missing, f"{stem}: exercises {missing} have no solution cell"
    assert len(titled) == len(set(titled)), f"{stem}: two solutions with one number: {titled}"


@pytest.mark.parametrize("stem", IMPLEMENT_IT)
def test_the_implement_it_exercise_has_a_stub_a_check_and_a_solution(stem):
    cells = _cells(stem)
    stubs = [c for c in cells if "exercise" in c["metadata"].get("tags", [])]
    assert stubs, f"{stem}: no code cell tagged 'exercise'"
    for stub in stubs:
        src = _src(stub)
        name = re.search(r"^def (\w+)\(", src, flags=re.M)
        assert name and "raise NotImplementedError" in src, f"{stem}: the exercise cell defines no stub"
        name = name.group(1)
        checks = re.compile(rf'exercises\.check\(\s*"{name}"')
        assert checks.search(src), f"{stem}: the exercise cell does not check {name}"
        solved = [
            c
            for _, c in _solutions(cells)
            if f"def {name}(" in _src(c) and re.search(rf'assert exercises\.check\(\s*"{name}"', _src(c))
        ]
        assert len(solved) == 1, f"{stem}: {len(solved)} solutions define {name} and assert its check"
        assert "NotImplementedError" not in _src(solved[0]), f"{stem}: the solution of {name} is a stub"
