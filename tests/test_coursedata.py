"""The course dataset: FSDnoisy18k's layout and schema, splits, structured label noise, determinism, resume."""

import csv
import hashlib
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from uclser_lib import coursedata as cd
from uclser_lib.data import AUDIO_DIRS, CLASSES, META_DIR, TEST_COLUMNS, TRAIN_COLUMNS

SEED = 12345
# docs/method.md §2, in the order given there
PAPER_CLASSES = [
    "Acoustic_guitar",
    "Bass_guitar",
    "Clapping",
    "Coin_(dropping)",
    "Crash_cymbal",
    "Dishes_and_pots_and_pans",
    "Engine",
    "Fart",
    "Fire",
    "Fireworks",
    "Glass",
    "Hi-hat",
    "Piano",
    "Rain",
    "Slam",
    "Squeak",
    "Tearing",
    "Walk_or_footsteps",
    "Wind",
    "Writing",
]
TINY = cd.PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny preset generated once (two worker processes); tests that modify it work on a copy."""
    return cd.generate(tmp_path_factory.mktemp("coursedata") / "tiny", "tiny", seed=SEED, progress=False, workers=2)


def _rows(root: Path, name: str) -> list[dict]:
    with open(root / META_DIR / name, newline="") as f:
        return list(csv.DictReader(f))


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_classes_ids_and_neighbours():
    assert CLASSES == sorted(PAPER_CLASSES) and len(CLASSES) == 20
    assert set(cd.RECIPES) == set(CLASSES)
    assert all(re.fullmatch(r"/m/0[0-9a-z_]{3,7}", cd.ASO_IDS[c]) for c in CLASSES)
    assert len(set(cd.ASO_IDS.values())) == 20
    for a, b in cd.CONFUSABLE_PAIRS:
        assert a in cd.NEIGHBOURS[b] and b in cd.NEIGHBOURS[a]
    assert all(len(cd.NEIGHBOURS[c]) >= 1 for c in CLASSES)


def test_layout_headers_and_truth(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == sorted([*AUDIO_DIRS.values(), META_DIR])
    for name, header in (
        ("train.csv", TRAIN_COLUMNS),
        ("test.csv", TEST_COLUMNS),
        ("course_truth.csv", cd.TRUTH_HEADER),
    ):
        first = (tiny / META_DIR / name).read_text().splitlines()[0]
        assert first == ",".join(header)
    assert (tiny / META_DIR / "train.csv").read_text().splitlines()[
        0
    ] == "fname,label,aso_id,manually_verified,noisy_small"
    assert (tiny / META_DIR / "test.csv").read_text().splitlines()[0] == "fname,label,aso_id"

    train, test, truth = _rows(tiny, "train.csv"), _rows(tiny, "test.csv"), _rows(tiny, "course_truth.csv")
    for split, rows in (("train", train), ("test", test)):
        on_disk = sorted(p.name for p in (tiny / AUDIO_DIRS[split]).iterdir())
        assert on_disk == sorted(r["fname"] for r in rows)  # nothing missing, nothing extra (no temp file)
        assert all(re.fullmatch(r"[1-9][0-9]*\.wav", r["fname"]) for r in rows)
        assert all(r["label"] in CLASSES and r["aso_id"] == cd.ASO_IDS[r["label"]] for r in rows)
    assert not {r["fname"] for r in train} & {r["fname"] for r in test}
    assert all(r["manually_verified"] in "01" and r["noisy_small"] in "01" for r in train)
    assert not any(r["manually_verified"] == "1" and r["noisy_small"] == "1" for r in train)

    labels = {r["fname"]: r["label"] for r in train + test}
    assert sorted(r["fname"] for r in truth) == sorted(labels)
    verified = {r["fname"] for r in train if r["manually_verified"] == "1"} | {r["fname"] for r in test}
    for r in truth:
        assert r["label_state"] in ("clean", "wrong", "oov", "incomplete")
        assert (r["true_label"] != labels[r["fname"]]) == (r["label_state"] in ("wrong", "oov"))
        assert (r["true_label"] in CLASSES) == (r["label_state"] != "oov")  # out of vocabulary: no class sounds
        if r["fname"] in verified:
            assert r["label_state"] == "clean"


def test_audio_format_and_lengths(tiny):
    frames = []
    for path in sorted(tiny.rglob("*.wav")):
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 44100, 1), path
        assert TINY.min_seconds <= info.duration <= TINY.max_seconds, path
        y, _ = sf.read(str(path), dtype="float32")
        assert 0.05 < np.abs(y).max() <= 1.0
        frames.append(info.frames)
    assert len(frames) == 20 * (TINY.clean_per_class + TINY.noisy_per_class + TINY.test_per_class)
    assert len(set(frames)) > len(frames) // 2  # variable lengths


def test_split_proportions_on_disk(tiny):
    train, test = _rows(tiny, "train.csv"), _rows(tiny, "test.csv")
    clean = [r for r in train if r["manually_verified"] == "1"]
    noisy = [r for r in train if r["manually_verified"] == "0"]
    small = [r for r in noisy if r["noisy_small"] == "1"]
    for rows, per_class in ((clean, TINY.clean_per_class), (noisy, TINY.noisy_per_class), (test, TINY.test_per_class)):
        assert Counter(r["label"] for r in rows) == {c: per_class for c in CLASSES}
    assert {r["label"] for r in small} == set(CLASSES)

    def seconds(rows):
        return sum(sf.info(str(tiny / AUDIO_DIRS["train"] / r["fname"])).duration for r in rows)

    assert seconds(small) == pytest.approx(seconds(clean), rel=0.3)
    truth = Counter(
        r["label_state"] for r in _rows(tiny, "course_truth.csv") if r["fname"] in {n["fname"] for n in noisy}
    )
    expected = [round(rate * len(noisy)) for rate in (cd.WRONG_RATE, cd.OOV_RATE, cd.INCOMPLETE_RATE)]
    assert [truth["wrong"], truth["oov"], truth["incomplete"]] == expected


def test_course_plan_proportions():
    clips = cd.plan_dataset("course", seed=SEED)
    train = [c for c in clips if c.split == "train"]
    clean = [c for c in train if c.manually_verified]
    noisy = [c for c in train if not c.manually_verified]
    test = [c for c in clips if c.split == "test"]
    assert 0.08 <= len(clean) / len(train) <= 0.12
    for rows in (clean, noisy, test):
        counts = Counter(c.label for c in rows)
        assert set(counts) == set(CLASSES)
        assert max(counts.values()) >= 2 * min(counts.values())  # class imbalance
    small = sum(c.seconds for c in noisy if c.noisy_small)
    assert small == pytest.approx(sum(c.seconds for c in clean), rel=0.05)
    assert {c.label for c in noisy if c.noisy_small} == set(CLASSES)
    seconds = np.array([c.seconds for c in clips])
    # lengths spread over FSDnoisy18k's 0.3-30 s (its mean: 8.3 s), most clips long enough for two distinct patches
    assert seconds.min() >= 0.3 and seconds.max() <= 30 and (seconds > 20).sum() >= 10 and (seconds < 1).sum() >= 5
    assert 5 <= seconds.mean() <= 9
    frames = np.array([1 + c.n_samples // 2 // 220 for c in noisy])  # log-mel frames at 22,050 Hz, hop 220
    assert np.mean(frames >= 2 * 101) >= 0.8
    assert 2 * sum(c.n_samples for c in clips) <= 1.3e9  # bytes of 16-bit audio (1.25 GB)
    assert [c.index for c in clips] == list(range(len(clips)))
    assert [c.split for c in clips] == ["train"] * len(train) + ["test"] * len(test)


@pytest.mark.parametrize(
    "wrong_rate, incomplete_rate, oov_rate", [(None, None, None), (0.1, 0.3, 0.2), (0.0, 0.0, 0.0)]
)
def test_label_noise_rate_and_structure(wrong_rate, incomplete_rate, oov_rate):
    clips = cd.plan_dataset(
        "course", seed=SEED, wrong_rate=wrong_rate, incomplete_rate=incomplete_rate, oov_rate=oov_rate
    )
    noisy = [c for c in clips if c.split == "train" and not c.manually_verified]
    wrong = [c for c in noisy if c.label_state == "wrong"]
    oov = [c for c in noisy if c.label_state == "oov"]
    incomplete = [c for c in noisy if c.label_state == "incomplete"]
    expect_wrong = cd.WRONG_RATE if wrong_rate is None else wrong_rate
    expect_incomplete = cd.INCOMPLETE_RATE if incomplete_rate is None else incomplete_rate
    expect_oov = cd.OOV_RATE if oov_rate is None else oov_rate
    assert abs(len(wrong) / len(noisy) - expect_wrong) <= 1 / len(noisy)
    assert abs(len(oov) / len(noisy) - expect_oov) <= 1 / len(noisy)
    assert abs(len(incomplete) / len(noisy) - expect_incomplete) <= 1 / len(noisy)
    assert all(c.true_label != c.label and c.mixed_label is None for c in wrong)
    assert all(c.true_label in cd.OOV_RECIPES and c.mixed_label is None for c in oov)
    if wrong_rate is None:  # noise rates differ between classes (weights 0.25-1.75): the noisiest class has
        per_class = Counter(c.label for c in wrong + oov)  # several times the corrupted share of the cleanest
        share = [per_class[k] / sum(c.label == k for c in noisy) for k in CLASSES]
        assert max(share) >= 3 * min(share) and max(share) > 0.5
    assert all(c.true_label == c.label and c.mixed_label not in (None, c.label) for c in incomplete)
    assert all(
        c.label_state == "clean" and c.mixed_label is None for c in clips if c.manually_verified or c.split == "test"
    )
    # structured: mostly towards the confusable neighbours (uniform flips would give about 1.5 / 19 = 8%)
    for others in ([(c.label, c.true_label) for c in wrong], [(c.label, c.mixed_label) for c in incomplete]):
        if len(others) >= 100:
            assert np.mean([b in cd.NEIGHBOURS[a] for a, b in others]) >= 0.65


@pytest.mark.slow  # the dataset generated three times, in worker processes
def test_deterministic_and_independent_of_workers(tiny, tmp_path):
    again = cd.generate(tmp_path / "again", "tiny", seed=SEED, progress=False, workers=1)
    assert _tree(again) == _tree(tiny)
    other = cd.generate(tmp_path / "other", "tiny", seed=SEED + 1, progress=False, workers=1)
    wavs = lambda tree: {h for p, h in tree.items() if p.endswith(".wav")}
    assert not wavs(_tree(other)) & wavs(_tree(tiny))
    assert (other / META_DIR / "train.csv").read_text() != (tiny / META_DIR / "train.csv").read_text()
    clip = cd.plan_dataset("tiny", seed=SEED)[5]
    assert np.array_equal(cd.render_clip(clip, SEED), cd.render_clip(clip, SEED))


def test_resume_after_interruption(tiny, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(tiny, root)
    expected = _tree(tiny)
    wavs = sorted((root / AUDIO_DIRS["train"]).glob("*.wav"))
    for p in wavs[:3]:
        p.unlink()
    for p in wavs[3:5]:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    (wavs[5].parent / f".{wavs[5].name}.999.part").write_bytes(b"RIFF")  # a temp file left by a killed run
    (root / META_DIR / "train.csv").unlink()
    (root / META_DIR / "course_truth.csv").unlink()
    untouched = wavs[6].stat()

    cd.generate(root, "tiny", seed=SEED, progress=False, workers=1)
    assert _tree(root) == expected
    after = wavs[6].stat()
    assert (after.st_ino, after.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)  # kept, not rewritten


def test_parameter_mismatch_raises(tiny, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(tiny, root)
    before = _tree(root)
    for kwargs, word in (
        ({"seed": SEED + 1}, "seed"),
        ({"seed": SEED, "wrong_rate": 0.1}, "wrong_rate"),
        ({"seed": SEED, "incomplete_rate": 0.0}, "incomplete_rate"),
    ):
        with pytest.raises(ValueError, match=word):
            cd.generate(root, "tiny", progress=False, **kwargs)
    with pytest.raises(ValueError, match="preset"):
        cd.generate(root, "course", seed=SEED, progress=False)
    assert _tree(root) == before


def test_root_not_made_by_generate_raises(tmp_path):
    (tmp_path / META_DIR).mkdir()
    (tmp_path / META_DIR / "train.csv").write_text("fname,label,aso_id,manually_verified,noisy_small\n")
    with pytest.raises(ValueError, match="course_manifest.json"):
        cd.generate(tmp_path, "tiny", progress=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        cd.plan_dataset("huge")
    for rates in ((-0.1, 0.2), (0.7, 0.5), (1.5, 0.0), (0.5, 0.4)):  # the last: with the default oov_rate, > 1
        with pytest.raises(ValueError, match="wrong_rate"):
            cd.plan_dataset("tiny", wrong_rate=rates[0], incomplete_rate=rates[1])
    with pytest.raises(ValueError, match="workers"):
        cd.generate("/nonexistent/never", "tiny", workers=0)
    with pytest.raises(ValueError, match="label"):
        cd.synthesize("Dog", 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="seconds"):
        cd.synthesize("Piano", 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="median_seconds"):
        cd.CoursePreset(1, 1, 1, median_seconds=0.1)
    with pytest.raises(ValueError, match="long_fraction"):
        cd.CoursePreset(1, 1, 1, long_fraction=0.1, max_seconds=5.0)


@pytest.mark.parametrize("label", CLASSES)
def test_synthesize_every_class(label):
    x = cd.synthesize(label, 0.5, np.random.default_rng(0))
    assert x.dtype == np.float32 and x.shape == (22050,) and np.isfinite(x).all()
    assert np.abs(x).max() == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(x, cd.synthesize(label, 0.5, np.random.default_rng(0)))
    assert not np.array_equal(x, cd.synthesize(label, 0.5, np.random.default_rng(1)))


def _band_spectrum(path: Path, bands: int = 32) -> np.ndarray:
    """Log power in log-spaced bands (50 Hz - 16 kHz), averaged over 2048-sample frames."""
    y, sr = sf.read(str(path), dtype="float64")
    y = np.pad(y, (0, max(0, 4096 - len(y))))
    frames = np.lib.stride_tricks.sliding_window_view(y, 2048)[::1024] * np.hanning(2048)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(0)
    edges = np.searchsorted(np.fft.rfftfreq(2048, 1 / sr), np.geomspace(50, 16000, bands + 1))
    return np.log10(np.array([power[a : max(b, a + 1)].mean() for a, b in zip(edges[:-1], edges[1:])]) + 1e-12)


def test_classes_are_distinguishable(tiny):
    """Clips whose label is right: mean log-spectra are closer within a class than across classes."""
    truth = {r["fname"]: r for r in _rows(tiny, "course_truth.csv")}
    paths = [p for p in sorted(tiny.rglob("*.wav")) if truth[p.name]["label_state"] == "clean"]
    y = np.array([CLASSES.index(truth[p.name]["true_label"]) for p in paths])
    x = np.array([_band_spectrum(p) for p in paths])
    x = (x - x.mean(0)) / x.std(0)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    same, other = y[:, None] == y[None], y[:, None] != y[None]
    np.fill_diagonal(same, False)
    assert d[same].mean() < 0.8 * d[other].mean()
    # leave-one-out nearest class centroid: far above chance (5%)
    hits = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        centroids = np.array([x[keep & (y == c)].mean(0) for c in range(20)])
        hits += int(np.argmin(np.linalg.norm(centroids - x[i], axis=1)) == y[i])
    assert hits / len(y) >= 0.2
