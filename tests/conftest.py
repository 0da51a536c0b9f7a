import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("UCLSER_SMOKE", "1")

from uclser_lib.download import RELEASED_FILES
from uclser_lib.runtime import checkout_root

REPO_ROOT = checkout_root()  # the tests run from the course's checkout


def shared_dir() -> Path | None:
    """The project's ``shared/`` folder (reference data, model zoo) beside the checkout, or None when absent."""
    path = Path(os.environ.get("UCLSER_SHARED", REPO_ROOT.parent / "shared"))
    return path if path.is_dir() else None


def _released_cache() -> None:
    """Where the model zoo is beside the checkout, its released encoders stand in for a download: copied into a
    temporary cache folder (``UCLSER_CACHE``, inherited by the notebooks' kernels), as ``python -m uclser_lib
    download released-encoders`` would leave them. Without it, the notebooks skip the authors' encoder."""
    zoo = shared_dir() / "model_zoo" if shared_dir() is not None else None
    if "UCLSER_CACHE" in os.environ or zoo is None or not zoo.is_dir():
        return
    cache = Path(tempfile.mkdtemp(prefix="uclser-cache-"))
    for name in RELEASED_FILES.values():
        if (zoo / name).is_file():
            shutil.copyfile(zoo / name, cache / name)
    os.environ["UCLSER_CACHE"] = str(cache)


_released_cache()
# linear evaluation's disk cache of embeddings (embed.cached_eval_patches): a fresh folder per test session
# (inherited by the notebooks' kernels), so no test reads what an earlier session left in the checkout's cache/
if "UCLSER_EMBED_CACHE" not in os.environ:
    os.environ["UCLSER_EMBED_CACHE"] = tempfile.mkdtemp(prefix="uclser-embeddings-")
    atexit.register(shutil.rmtree, os.environ["UCLSER_EMBED_CACHE"], True)  # removed when the session ends


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` (outputs of the authors' released code); skip cleanly where it is absent."""
    shared = shared_dir()
    if shared is None or not (shared / "reference").is_dir():
        pytest.skip("../shared/reference is absent (a user's clone): reference comparison skipped")
    return shared / "reference"


@pytest.fixture(scope="session")
def model_zoo_dir() -> Path:
    shared = shared_dir()
    if shared is None or not (shared / "model_zoo").is_dir():
        pytest.skip("../shared/model_zoo is absent (a user's clone): model-zoo comparison skipped")
    return shared / "model_zoo"


@pytest.fixture
def reference(reference_dir):
    """Load one reference npz by stem: ``reference('mixback')``."""
    return lambda stem: np.load(reference_dir / f"{stem}.npz")


@pytest.fixture
def small_bn_recalibration(monkeypatch):
    """The ``random_bn`` init's BatchNorm re-estimation on one batch of 16 patches instead of the protocol's
    ``bn_batches`` x 128 (8 x 128 by default: most of an end-to-end test's time on 2 cores). The statistics are
    still re-estimated, so a ``random_bn`` row still differs from its ``random`` one; the re-estimation itself is
    tested in test_baselines.py. Yields the ``batches`` each call asked for (the protocol's, to be asserted)."""
    from uclser_lib import baselines, experiments

    asked = []

    def small(encoder, packed, mean, std, batches=8, batch_size=128, **kw):
        asked.append(batches)
        return baselines.recalibrate_batchnorm(encoder, packed, mean, std, batches=1, batch_size=16, **kw)

    monkeypatch.setattr(experiments, "recalibrate_batchnorm", small)
    return asked
