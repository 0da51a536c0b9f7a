"""The house rules of the library: one-way imports (no cycle), an ``__all__`` in every module, no dangling citations."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

from uclser_lib.runtime import REPO_ROOT

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
