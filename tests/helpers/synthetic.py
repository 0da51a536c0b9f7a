"""Small synthetic inputs shared by several test files."""

import numpy as np


def floor_clips() -> list[np.ndarray]:
    """Three log10 mel clips (T, 96) float32, of 160, 130 and 101 frames, each with its own noise floor (a level
    per band drawn in [-7, -5]) and four loud events of 8 frames over 16 bands."""
    rng = np.random.default_rng(0)
    out = []
    for length in (160, 130, 101):
        floor = rng.uniform(-7, -5, 96)
        x = floor + 0.05 * rng.standard_normal((length, 96))
        for start in rng.integers(0, length - 10, 4):
            x[start : start + 8, rng.integers(0, 80) :][:, :16] += rng.uniform(3, 5)
        out.append(x.astype(np.float32))
    return out
