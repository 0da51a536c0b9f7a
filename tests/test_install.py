"""The course installs as a package: pyproject lists every subpackage, the Colab/Kaggle badges point at pyproject's
Repository, the wheel works from a fresh venv outside the checkout (configs, shipped encoders, a smoke extraction),
and the notebooks' setup cell installs the course into an interpreter that lacks it, or stops on an unusable GPU."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REPO = PYPROJECT["project"]["urls"]["Repository"].rstrip("/")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])  # this environment's, lent to the fresh venvs


def _badge_links(name: str) -> tuple[str, str]:
    owner_repo = REPO.removeprefix("https://github.com/")
    return (
        f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}",
        f"https://kaggle.com/kernels/welcome?src={REPO}/blob/main/notebooks/{name}",
    )


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _setup_source(path: Path) -> str:
    return "".join(_cells(path)[1]["source"])


# ---------------------------------------------------------------------------------------------------------- fast


def test_pyproject_packages_cover_every_subpackage():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "uclser_lib").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set(), f"pyproject.toml [tool.setuptools] packages lacks {sorted(found - listed)}"
    assert "uclser_lib.shipped" in listed
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["uclser_lib.shipped"] == "pretrained"


def test_repository_url_is_a_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO), f"pyproject.toml Repository: {REPO!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_first_cell_has_its_badges(path):
    first = _cells(path)[0]
    assert first["cell_type"] == "markdown", f"{path.name}: the first cell is not markdown"
    line = "".join(first["source"]).splitlines()[0]
    urls = re.findall(r"\]\((https?://[^)\s]+)\)", line)
    colab, kaggle = _badge_links(path.name)
    assert colab in urls and kaggle in urls, f"{path.name}: first line {line!r} lacks {colab} or {kaggle}"
    others = [u for u in urls if "notebooks/" in u and not u.endswith(f"notebooks/{path.name}")]
    assert not others, f"{path.name}: badges point at another notebook: {others}"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", line)
    assert len(images) == 2, f"{path.name}: first line {line!r}: {len(images)} badge images, expected 2"
    outside = [i for i in images if "://" in i or not (path.parent / i).is_file()]
    assert not outside, f"{path.name}: badge images not in this repository (offline pages load nothing): {outside}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_first_code_cell_is_the_tagged_setup_cell(path):
    cell = _cells(path)[1]
    assert cell["cell_type"] == "code" and "setup" in cell["metadata"].get("tags", []), (
        f"{path.name}: cell 1 is not a code cell tagged 'setup'"
    )
    assert _setup_source(path) == _setup_source(NOTEBOOKS[0]), f"{path.name}: its setup cell differs from 01's"
    assert f'"git+{REPO}"' in _setup_source(path), f"{path.name}: the setup cell does not install git+{REPO}"


def test_readme_has_both_badges_for_every_notebook():
    readme = (ROOT / "README.md").read_text()
    assert "## Run on Colab or Kaggle" in readme
    for path in NOTEBOOKS:
        for url in _badge_links(path.name):
            assert f"]({url})" in readme, f"README: no badge link {url}"
    stale = {u for u in re.findall(r"colab\.research\.google\.com/github/[^)\s]+", readme)} - {
        _badge_links(p.name)[0].removeprefix("https://") for p in NOTEBOOKS
    }
    assert not stale, f"README: Colab links to no notebook of this repository: {sorted(stale)}"


# ---------------------------------------------------------------------------------------------------------- slow


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("UCLSER_INSTALL")}
    env.update(OMP_NUM_THREADS="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The course's wheel, built from a copy of its sources (setuptools writes build/ and *.egg-info where it builds,
    and the checkout's build/ holds the executed notebooks)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "uclser_lib", src / "uclser_lib", ignore=skip)
    shutil.copytree(ROOT / "pretrained", src / "pretrained", ignore=skip)
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src]
    subprocess.run(cmd, check=True, capture_output=True, env=_clean_env(), timeout=300)
    (built,) = out.glob("uclser_lib-*.whl")
    return built


@pytest.fixture
def bare_venv(tmp_path) -> Path:
    """A fresh venv outside the checkout whose dependencies come from this environment's site-packages through
    symbolic links (a .pth line), every uclser_lib entry left out: `import uclser_lib` fails there."""
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in SITE_PACKAGES.iterdir():
        if "uclser" not in entry.name.lower() and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "uclser_deps.pth").write_text(f"{deps}\n")
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [python, "-c", "import uclser_lib"], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True
    )
    assert probe.returncode != 0 and "No module named 'uclser_lib'" in probe.stderr, probe.stderr
    return python


def _run(python: Path, code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-c", code], cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=600
    )


SMOKE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np, soundfile as sf
    import uclser_lib, uclser_lib.coursedata, uclser_lib.datasets
    from uclser_lib import config, features, pretrained, runtime

    assert runtime.checkout_root() is None, runtime.checkout_root()
    sr = features.DEFAULT_PARAMS.sr
    t = np.arange(sr) / sr
    sf.write("tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    logmel = features.extract_logmel("tone.wav")
    names = sorted(pretrained.read_manifest())
    encoder, info = pretrained.load_pretrained(names[0])
    configs = {p.name: config.read_yaml(p) for p in sorted(config.CONFIG_DIR.glob("*.yaml"))}
    print(json.dumps({
        "file": uclser_lib.__file__, "shipped": str(runtime.shipped_dir()), "config_dir": str(config.CONFIG_DIR),
        "shape": list(logmel.shape), "finite": bool(np.isfinite(logmel).all()), "names": names,
        "arch": info["arch"], "params": sum(p.numel() for p in encoder.parameters()), "configs": sorted(configs),
        "nonempty_configs": all(bool(c) for c in configs.values()),
    }))
    """
)


@pytest.mark.slow
def test_wheel_works_from_a_fresh_venv_outside_the_checkout(wheel, bare_venv, tmp_path):
    venv = bare_venv.parents[1]
    pip = [bare_venv, "-m", "pip", "install", "-q", "--no-index", wheel]  # dependencies: found, nothing downloaded
    subprocess.run(pip, cwd=tmp_path, env=_clean_env(), check=True, capture_output=True, timeout=300)
    done = _run(bare_venv, SMOKE, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(venv), f"uclser_lib imported from {got['file']}, not from the venv"
    assert Path(got["shipped"]).is_relative_to(venv) and Path(got["config_dir"]).is_relative_to(venv), got
    assert got["shape"] == [101, features_n_mels()] and got["finite"], got
    shipped = json.loads((ROOT / "pretrained" / "manifest.json").read_text())
    assert got["names"] == sorted(shipped), got["names"]
    assert got["params"] > 0 and got["arch"] == shipped[got["names"][0]]["arch"]
    assert got["configs"] == sorted(p.name for p in (ROOT / "uclser_lib" / "configs").glob("*.yaml"))
    assert got["nonempty_configs"]


def features_n_mels() -> int:
    from uclser_lib.features import DEFAULT_PARAMS

    return DEFAULT_PARAMS.n_mels


@pytest.mark.slow
def test_setup_cell_installs_the_course_where_it_is_absent(wheel, bare_venv, tmp_path):
    cell = _setup_source(NOTEBOOKS[0]) + "\nimport uclser_lib\n\nprint(uclser_lib.__file__)\n"
    no_gpu_path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists()
    )
    done = _run(bare_venv, cell, tmp_path, UCLSER_INSTALL_SOURCE=f"--no-index {wheel}", PATH=no_gpu_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip().splitlines()[-1]).is_relative_to(bare_venv.parents[1]), done.stdout
    again = _run(bare_venv, "import uclser_lib.features, uclser_lib.datasets", tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_setup_cell_stops_on_a_gpu_that_torch_cannot_use(wheel, bare_venv, tmp_path):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Fake GPU'\n")
    (fake / "nvidia-smi").chmod(0o755)
    path = f"{fake}{os.pathsep}{os.environ['PATH']}"
    # CUDA_VISIBLE_DEVICES="" hides any real GPU, so torch.cuda.is_available() is False on every machine
    done = _run(
        bare_venv,
        _setup_source(NOTEBOOKS[0]),
        tmp_path,
        UCLSER_INSTALL_SOURCE=f"--no-index {wheel}",
        PATH=path,
        CUDA_VISIBLE_DEVICES="",
    )
    assert done.returncode != 0, "the setup cell ran on past a GPU that torch cannot use"
    assert "RuntimeError: nvidia-smi sees a GPU but the installed torch cannot use it" in done.stderr, done.stderr[
        -3000:
    ]
