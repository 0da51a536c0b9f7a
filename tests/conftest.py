import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("UCLSER_SMOKE", "1")

from uclser_lib.runtime import shared_dir  # noqa: E402


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
