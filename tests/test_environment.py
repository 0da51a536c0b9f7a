"""The installed environment is the locked one (requirements.lock).

A torch/torchaudio version mismatch is named at import.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from uclser_lib.runtime import _release, check_torch_pair, checkout_root

REPO_ROOT = checkout_root()  # the tests run from the course's checkout

LOCK = REPO_ROOT / "requirements.lock"
#: what PyTorch's CUDA build brings on Linux and its CPU build (`make install-cpu`) does not
CUDA_ONLY = ("nvidia-", "cuda-", "triton")


def locked_pins(text: str, environment: dict | None = None) -> dict[str, str]:
    """``{name: version}`` of the lock's ``name==version [; marker]`` lines that apply to ``environment``."""
    env = environment or default_environment()
    pins = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0]
        line = re.sub(r"--hash=\S+", "", line).strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            (spec,) = req.specifier
            assert spec.operator == "==", f"{LOCK.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_locked_pins_parses_markers_and_hashes():
    text = (
        "a-b==1.0 \\\n    --hash=sha256:00\n    # via x\n"
        "c==2.0 ; sys_platform == 'win32' \\\n    --hash=sha256:11\n"
        "c==3.0 ; sys_platform != 'win32'\n"
    )
    assert locked_pins(text, {**default_environment(), "sys_platform": "linux"}) == {"a-b": "1.0", "c": "3.0"}
    assert locked_pins(text, {**default_environment(), "sys_platform": "win32"}) == {"a-b": "1.0", "c": "2.0"}


def test_installed_packages_are_the_locked_ones():
    if not LOCK.is_file():
        pytest.skip("requirements.lock is absent (an installed copy of the library, not a checkout)")
    pins = locked_pins(LOCK.read_text(encoding="utf-8"))
    assert {"torch", "torchaudio", "numpy"} <= pins.keys()
    if importlib.metadata.version("torch").endswith("+cpu"):  # `make install-cpu`: PyTorch's CPU build, no CUDA
        pins = {n: v for n, v in pins.items() if not n.startswith(CUDA_ONLY)}
    wrong = []
    for name, pinned in sorted(pins.items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed, locked {pinned}")
            continue
        # a local tag (torch 2.11.0+cu130, +cpu) is the same release built for another accelerator
        if installed.split("+")[0] != pinned.split("+")[0]:
            wrong.append(f"{name}: installed {installed}, locked {pinned}")
    assert not wrong, (
        f"this environment differs from {LOCK.name} in {len(wrong)} package(s): "
        + "; ".join(wrong)
        + ". Run `make install` (it syncs .venv with the lock) "
        "or `uv pip sync requirements.lock` in your own environment."
    )


def test_torch_and_torchaudio_are_pinned_exactly():
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"torch==\d+\.\d+\.\d+"', text) and re.search(r'"torchaudio==\d+\.\d+\.\d+"', text)


@pytest.mark.parametrize(
    ("version", "release"),
    [("2.11.0", (2, 11, 0)), ("2.11.0+cu130", (2, 11, 0)), ("2.11.1+cpu", (2, 11, 1)), ("2.12.0rc1", (2, 12, 0))],
)
def test_release(version, release):
    assert _release(version) == release


def test_check_torch_pair_names_both_versions():
    versions = {"torch": "2.11.0+cu130", "torchaudio": "2.11.1"}
    with pytest.raises(ImportError, match=r"torchaudio 2\.11\.1 does not belong with torch 2\.11\.0\+cu130"):
        check_torch_pair(versions.__getitem__)


def test_check_torch_pair_accepts_a_matching_pair():
    check_torch_pair({"torch": "2.11.0+cu130", "torchaudio": "2.11.0+cu130"}.__getitem__)
    check_torch_pair({"torch": "2.11.0+cpu", "torchaudio": "2.11.0"}.__getitem__)


def test_check_torch_pair_passes_the_installed_pair():
    check_torch_pair()
