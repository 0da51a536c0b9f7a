"""The house rules of the library: imports only from modules above, in the order the package docstring declares (and
so no cycle), an ``__all__`` in every module, no dangling citations."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

from uclser_lib.runtime import checkout_root

REPO_ROOT = checkout_root()  # the tests run from the course's checkout

PACKAGE = REPO_ROOT / "uclser_lib"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(text: str, name: str, is_package: bool = False) -> set[str]:
    """Modules of ``uclser_lib`` that module ``name`` (source ``text``) imports anywhere, in functions too."""
    package = name if is_package else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            for alias in node.names:  # `from . import x`: x may be a module
                out.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in NAMES else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in NAMES and m not in ("uclser_lib", name) and not name.startswith(m + ".")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports) as a path, or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt) and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for mod in sorted(graph):
        if not state.get(mod) and (cycle := visit(mod, [mod])):
            return cycle
    return None


NAMES = {module_name(p) for p in MODULES}

#: The command line may import any module: it is the top of the house (``__main__`` runs it).
TOP = ("__main__", "cli")
#: A module line of the package docstring: "- ``name``  what it does" or "- ``plots``, ``widgets`` what they do".
DECLARED_LINE = re.compile(r"^- (``\w+``(?:, ``\w+``)*)\s", re.MULTILINE)


def declared_order(docstring: str) -> list[str]:
    """The module names the package docstring lists, in order (a subpackage such as ``coursedata`` is one name)."""
    return [n for group in DECLARED_LINE.findall(docstring) for n in re.findall(r"``(\w+)``", group)]


def top_level(name: str) -> str:
    """'uclser_lib.coursedata.plan' -> 'coursedata': the name the package docstring declares it by."""
    return name.split(".")[1]


def order_violations(order: list[str], imports: dict[str, set[str]], top=TOP) -> list[str]:
    """'importer -> imported' for each import of a module declared at or below the importer (``imports``: top-level
    name -> top-level names it imports); the ``top`` modules may import anything."""
    rank = {n: i for i, n in enumerate(order)}
    return [
        f"{mod} -> {dep}"
        for mod in sorted(imports)
        if mod not in top
        for dep in sorted(imports[mod])
        if dep != mod and rank[dep] >= rank[mod]
    ]


#: The internal spec's name, spelled so that a plain `grep -rnw` for it finds no citation in this file either.
TOKEN = "S" + "PEC"
#: A citation of the internal spec: "<TOKEN> section 9", "<TOKEN> 12", "<TOKEN> §5", "<TOKEN>_..." or its path.
CITATION = re.compile(rf"\b{TOKEN}(?:\s*(?:sections?|§)\s*\d|\s+\d|_[A-Z])|\.\./shared/{TOKEN}")


def test_no_import_cycle():
    graph = {
        module_name(p): internal_imports(p.read_text(encoding="utf-8"), module_name(p), p.name == "__init__.py")
        for p in MODULES
    }
    assert graph["uclser_lib.views"] >= {"uclser_lib.augment", "uclser_lib.data", "uclser_lib.mixback"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_only_modules_declared_above_it():
    import uclser_lib

    order = declared_order(uclser_lib.__doc__)
    on_disk = {top_level(n) for n in NAMES if n != "uclser_lib"} | {"__main__"}
    undeclared = sorted(on_disk - set(order) - {"__main__"})
    assert not undeclared, f"uclser_lib/{undeclared}: not in the module list of uclser_lib/__init__.py's docstring"
    order = [n for n in order if n in on_disk]  # a declared module not written yet is skipped
    imports: dict[str, set[str]] = {}
    for p in [*MODULES, PACKAGE / "__main__.py"]:
        name = "uclser_lib.__main__" if p.name == "__main__.py" else module_name(p)
        if name == "uclser_lib":
            continue
        found = internal_imports(p.read_text(encoding="utf-8"), name, p.name == "__init__.py")
        imports.setdefault(top_level(name), set()).update(top_level(m) for m in found)
    assert imports["folders"] >= {"data", "features", "runtime"}  # the walk sees the imports
    bad = order_violations(order + ["__main__"], imports)
    assert not bad, "imports a module declared below it (order in uclser_lib/__init__.py): " + "; ".join(bad)


def test_the_order_check_reads_the_docstring_and_sees_lazy_imports():
    doc = "X\n- ``runtime``  paths\n- ``coursedata``   the dataset (``dsp``, ``plan``)\n"
    doc += "- ``plots``, ``widgets`` figures\n  ``views`` on a continuation line is no module line\n"
    assert declared_order(doc) == ["runtime", "coursedata", "plots", "widgets"]
    lazy = internal_imports("def f():\n    from .models import build_encoder\n", "uclser_lib.folders")
    assert lazy == {"uclser_lib.models"}
    order = ["data", "folders", "models", "cli"]
    imports = {"folders": {"data", "models"}, "data": set(), "models": {"data"}, "cli": {"models", "folders"}}
    assert order_violations(order, imports) == ["folders -> models"]  # cli is the top: it may import anything
    assert order_violations(order, {"models": {"models"}}) == []  # a subpackage's modules import each other


def test_the_cycle_check_sees_lazy_and_relative_imports():
    text = "from ..data import CLASSES\ndef f():\n    from ..views import ViewBuilder\n"
    assert internal_imports(text, "uclser_lib.coursedata.plan") == {"uclser_lib.data", "uclser_lib.views"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_declares_all(path):
    module = importlib.import_module(module_name(path))
    assert hasattr(module, "__all__"), f"{path}: no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{path}: __all__ names {missing}, which the module does not define"


def test_the_citation_pattern():
    for cited in ("{} section 9", "({} 12)", "{} sections 5-6", "{}_CLASSES", "see ../shared/{}.md"):
        assert CITATION.search(cited.format(TOKEN)), cited
    for fine in ("--encoder {}", "a {}TRUM", "spec 9"):
        assert not CITATION.search(fine.format(TOKEN)), fine


def test_nothing_cites_documents_outside_the_repository():
    """The method is explained in docs/; code, notebooks and README link there, never to an internal spec."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for rel in files:
        if rel.startswith("docs/") or rel == "tests/test_layout.py" or not (REPO_ROOT / rel).is_file():
            continue
        try:
            text = (REPO_ROOT / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if CITATION.search(text):
            offenders.append(rel)
    assert not offenders, f"these files cite the internal {TOKEN}, not in the repository (cite docs/): {offenders}"


def test_the_library_and_notebooks_never_reach_for_the_shared_folder():
    """Only the tests use the project's shared folder (reference outputs, model zoo); the course stands alone:
    the authors' encoders come through ``python -m uclser_lib download released-encoders``."""
    pattern = re.compile(r"\.\./shared|shared_dir|model_zoo")
    offenders = [
        str(p.relative_to(REPO_ROOT))
        for p in [*PACKAGE.rglob("*.py"), *(REPO_ROOT / "notebooks").glob("*.ipynb")]
        if pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"these files use ../shared (tests only; download into the cache instead): {offenders}"


# ---------------------------------------------------------------------------------------- the front door (issue #31)

README = REPO_ROOT / "README.md"
BENCH_RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
REPO_URL = "https://github.com/uclser-course/uclser/blob/main/"
#: the README's sections, in this order: start, hosted notebooks, the map, the library, where next
README_SECTIONS = [
    "Start: two commands",
    "Run on Colab or Kaggle",
    "The course map",
    "The library: one module per stage",
    "Where to go next",
]


def slug(heading: str) -> str:
    """A heading's anchor as GitHub (and the site's MyST) writes it: lower case, punctuation dropped, spaces -> -."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose_of(text: str) -> str:
    """Markdown without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6} (.+)$", prose_of(path.read_text()), re.M):
        s = slug(m.group(1))
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def test_the_slug_is_githubs():
    assert slug("## 2026-11-30 — CPU: x86-64, torch 2.11.0: generation + features".lstrip("# ")) == (
        "2026-11-30--cpu-x86-64-torch-2110-generation--features"
    )
    assert slug("The notebooks' parameters: DATASET, ENCODER, SOLVE_LONG") == (
        "the-notebooks-parameters-dataset-encoder-solve_long"
    )
    assert slug("Full-mode notebook times (`make time-course`, bench/time_notebooks.py)") == (
        "full-mode-notebook-times-make-time-course-benchtime_notebookspy"
    )


def test_the_readme_is_a_front_door():
    """At most 15,000 characters; what the course is (with the pipeline figure), then the sections in their order;
    no machine, date, commit or run history: what a user can expect, with links to where it was measured."""
    text = README.read_text()
    assert len(text) <= 15_000, f"README.md: {len(text)} characters"
    sections = re.findall(r"^## (.+)$", prose_of(text), re.M)
    assert sections == README_SECTIONS, sections
    assert "figures/system.png" in text.split("\n## ")[0]
    bookkeeping = {
        "a date": r"\b20\d\d-\d\d-\d\d\b",
        "a commit": r"\bcommit\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b",
        "a machine": r"\b(H100|H200|A100|VM|development machine|EPYC)\b",
        "the shared folder": r"\.\./shared",
    }
    found = {what: re.findall(pattern, text) for what, pattern in bookkeeping.items()}
    assert not any(found.values()), f"README.md holds run bookkeeping: {found}"
    for command in ("make course", "make lab", "make test"):
        assert f"`{command}`" in text, command


def test_every_docs_page_is_linked_from_the_readme_the_index_and_the_site():
    pages = sorted(p.stem for p in (REPO_ROOT / "docs").glob("*.md") if p.name != "README.md")
    assert {"installation", "results", "cli", "real-audio", "embedding-api", "method"} <= set(pages), pages
    readme = README.read_text()
    index = (REPO_ROOT / "docs" / "README.md").read_text()
    site = (REPO_ROOT / "site" / "index.md").read_text()
    toctree = site.split("```{toctree}")[-1]
    for page in pages:
        assert f"](docs/{page}.md" in readme, f"README.md: no link to docs/{page}.md"
        assert f"]({page}.md)" in index, f"docs/README.md: no row for {page}.md"
        assert f"\ndocs/{page}\n" in toctree, f"site/index.md: docs/{page} not in the toctree"


def links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", prose_of(path.read_text()))


def test_the_readme_and_docs_link_to_files_and_anchors_that_exist():
    """Relative links (README.md, docs/*.md) reach a file and, for a Markdown file, a heading; links to the
    repository's own bench/RESULTS.md on GitHub reach one of its headings."""
    broken = []
    for doc in [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        for link in links(doc):
            if link.startswith(REPO_URL):
                target, _, fragment = link.removeprefix(REPO_URL).partition("#")
                path = REPO_ROOT / target
            elif re.match(r"[a-z]+:", link):
                continue  # another site
            else:
                target, _, fragment = link.partition("#")
                path = (doc.parent / target).resolve() if target else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(REPO_ROOT)}: {link}: no such file")
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                broken.append(f"{doc.relative_to(REPO_ROOT)}: {link}: no such heading")
    assert not broken, broken


def summary_rows(text: str) -> list[list[str]]:
    head = text.split("\n## ")[0]
    rows = [line for line in head.splitlines() if line.startswith("| ")]
    assert rows and rows[0].startswith("| measured quantity | latest figure | machine | date |"), rows[:1]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:] if not row.startswith("|---")]


def test_bench_results_opens_with_a_summary_of_its_latest_figures():
    """Each row of the summary: a quantity, its figure, the machine, the date and a link to the section below that
    holds the run; every number of the figure is written in that section (so the summary quotes, never invents)."""
    text = BENCH_RESULTS.read_text()
    assert "<!-- time-notebooks:start -->" in text and "<!-- time-notebooks:end -->" in text
    sections = {slug(m.group(1)): m.start() for m in re.finditer(r"^## (.+)$", text, re.M)}
    rows = summary_rows(text)
    assert len(rows) >= 10
    for quantity, figure, machine, date, run in rows:
        assert quantity and machine and re.fullmatch(r"20\d\d-\d\d-\d\d(; 20\d\d-\d\d-\d\d)*", date), quantity
        anchor = re.fullmatch(r"\[section\]\(#([^)]+)\)", run)
        assert anchor and anchor.group(1) in sections, f"{quantity}: {run} is no section of bench/RESULTS.md"
        start = sections[anchor.group(1)]
        following = [s for s in sections.values() if s > start]
        section = text[start : min(following, default=len(text))]
        for number in re.findall(r"\d[\d,]*(?:\.\d+)?", figure):
            assert number in section, f"{quantity}: {number} (of {figure!r}) is not in its section"
    for command in ("make course", "make test", "make test-fast", "make install"):
        assert any(row[0].startswith(f"`{command}`") for row in rows), command
