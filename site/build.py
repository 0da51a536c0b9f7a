"""Build the course website (`make site`): stage the sources in build/site/src, then Sphinx into build/site/html.

Sphinx reads one source folder, and the course's pages live in three places, so they are copied (with
their modification times, so that Sphinx rebuilds only what changed) into ``<site>/src``:

- ``site/index.md`` (the landing page) and ``site/course-map.md``, written here: one row per notebook, its
  title (the notebook's first heading) and its line of the README's course map;
- ``build/<notebook>.ipynb``, the executed copies that ``make course`` writes, as ``notebooks/``: the
  links ``../docs/method.md#...`` of the notebooks then resolve as they do on GitHub;
- ``docs/*.md``, ``README.md``, ``figures/*.png`` and the badges ``figures/badges/*.svg``, which the documents link
  to and show.

The configuration is ``site/conf.py`` (``-c site``); warnings are errors (``-W``), so a broken link or
a missing figure fails the build. Notebooks are never executed here (``nb_execution_mode = "off"``).
The website is ``<site>/html`` (MyST-NB keeps the notebooks' output files beside it, in
``<site>/jupyter_execute``); ``--site build/site-smoke --executed build/smoke`` builds the browser tests' copy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "site"


def notebook_title(path: Path) -> str:
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def readme_course_map(readme: Path) -> dict[str, str]:
    """``{notebook stem: what you learn}`` from the README's course-map table (rows ``| `stem` | text |``)."""
    rows = re.findall(r"^\|\s*`([0-9]{2}_\w+)`\s*\|\s*(.+?)\s*\|\s*$", readme.read_text(), re.M)
    return dict(rows)


def course_map(notebooks: list[Path], readme: Path) -> str:
    described = readme_course_map(readme)
    lines = ["| notebook | what you learn and see |", "|---|---|"]
    for nb in notebooks:
        lines.append(f"| [{notebook_title(nb)}](notebooks/{nb.name}) | {described.get(nb.stem, '')} |")
    return "\n".join(lines) + "\n"


def sync(pairs: list[tuple[Path, Path]], dest_root: Path, keep: set[Path]) -> None:
    """Copy each (source, destination) when it changed; remove what ``dest_root`` holds beyond them and ``keep``."""
    wanted = set(keep)
    for src, dst in pairs:
        wanted.add(dst)
        if not dst.exists() or dst.stat().st_mtime != src.stat().st_mtime or dst.stat().st_size != src.stat().st_size:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for path in sorted(dest_root.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executed", type=Path, default=ROOT / "build", help="folder of the executed notebooks")
    ap.add_argument("--site", type=Path, default=ROOT / "build" / "site", help="-> <site>/src, <site>/html")
    ap.add_argument("--clean", action="store_true", help="rebuild every page (Sphinx -E)")
    args = ap.parse_args(argv)
    args.executed, args.site = args.executed.resolve(), args.site.resolve()
    args.src, args.out = args.site / "src", args.site / "html"

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    executed = [args.executed / nb.name for nb in notebooks]
    missing = [str(p.relative_to(ROOT)) for p in executed if not p.exists()]
    if missing:
        sys.exit(f"make site: no executed copy of {', '.join(missing)}: run `make course` first")
    pairs = [(p, args.src / "notebooks" / p.name) for p in executed]
    pairs += [(SITE / "index.md", args.src / "index.md")]
    pairs += [(p, args.src / "docs" / p.name) for p in sorted((ROOT / "docs").glob("*.md"))]
    pairs += [(ROOT / "README.md", args.src / "README.md")]
    pairs += [(p, args.src / "figures" / p.name) for p in sorted((ROOT / "figures").glob("*.png"))]
    pairs += [
        (p, args.src / "figures" / "badges" / p.name) for p in sorted((ROOT / "figures" / "badges").glob("*.svg"))
    ]
    course_map_md = args.src / "course-map.md"
    sync(pairs, args.src, keep={course_map_md})
    write_if_changed(course_map_md, course_map(executed, ROOT / "README.md"))

    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(SITE), "-d", str(args.site / "doctrees")]
    cmd += ["-W", "--keep-going", "-q"]
    cmd += ["-E"] if args.clean else []
    cmd += [str(args.src), str(args.out)]
    start = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(SITE / "_ext")})
    if rc == 0:
        print(f"site built in {time.perf_counter() - start:.0f} s: {os.path.relpath(args.out / 'index.html', ROOT)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
