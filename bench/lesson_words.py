"""Words of markdown per notebook, against the lessons' budget (issue #32): `python bench/lesson_words.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_notebooks import NOTEBOOKS, WORD_BUDGET, markdown_words  # noqa: E402

if __name__ == "__main__":
    for path in NOTEBOOKS:
        words = markdown_words(path)
        print(f"{path.name:40s} {words:5d} {'ok' if words <= WORD_BUDGET else 'over ' + str(WORD_BUDGET)}")
