"""The multi-label course dataset: FSD50K's layout and CSV schema, labels closed under the ontology, splits,
multi-class clips and their events in time, determinism and resume."""

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
from uclser_lib.coursedata import multilabel as ml
from uclser_lib.data import CLASSES

SEED = 4321
GT = "FSD50K.ground_truth"
DEV_DIR, EVAL_DIR = "FSD50K.dev_audio", "FSD50K.eval_audio"
#: A few clips of 0.9-1.5 s: enough to check determinism and resume in a second or two.
SMALL = cd.MultiLabelPreset(20, 6, val_share=0.2, min_seconds=0.9, max_seconds=1.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny preset generated once (two worker processes); tests that modify it work on a copy."""
    return cd.generate_multilabel(tmp_path_factory.mktemp("ml") / "tiny", "tiny", seed=SEED, progress=False, workers=2)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return cd.generate_multilabel(tmp_path_factory.mktemp("ml") / "small", SMALL, seed=SEED, progress=False, workers=2)


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(root: Path, name: str) -> list[list[str]]:
    with open(root / GT / name, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _vocabulary(root: Path) -> dict[str, str]:
    return {label: mid for _, label, mid in _rows(root, "vocabulary.csv")}


def _labelled(root: Path) -> dict[str, tuple[str, list[str], list[str]]]:
    """fname -> (split: train, val or eval; labels; mids), from dev.csv and eval.csv."""
    out = {r[0]: (r[3], r[1].split(","), r[2].split(",")) for r in _rows(root, "dev.csv")[1:]}
    out.update({r[0]: ("eval", r[1].split(","), r[2].split(",")) for r in _rows(root, "eval.csv")[1:]})
    return out


def test_ontology_is_audioset_and_closed():
    assert set(ml.LEAF_PARENTS) <= set(CLASSES) and set(ml.LEAF_PARENTS.values()) <= set(cd.ONTOLOGY)
    mids = [ml.label_mid(c) for c in cd.ML_VOCABULARY]
    assert len(set(mids)) == len(mids) == 29 and all(re.fullmatch(r"/m/0[0-9a-z_]{3,7}", m) for m in mids)
    assert cd.ML_VOCABULARY == sorted(cd.ML_VOCABULARY) and len(set(cd.ML_VOCABULARY) - set(CLASSES)) == 9
    # AudioSet's own chains (FSD50K writes e.g. "Bass_guitar,Guitar,Plucked_string_instrument,Musical_instrument,Music")
    assert ml.ancestors("Bass_guitar") == ("Guitar", "Plucked_string_instrument", "Musical_instrument", "Music")
    assert ml.ancestors("Hi-hat") == ("Cymbal", "Percussion", "Musical_instrument", "Music")
    assert ml.ancestors("Piano") == ("Keyboard_(musical)", "Musical_instrument", "Music")
    assert ml.ancestors("Fireworks") == ("Explosion",) and ml.ancestors("Glass") == ()
    expected = {"Music": "/m/04rlf", "Musical_instrument": "/m/04szw", "Guitar": "/m/0342h", "Cymbal": "/m/01qbl"}
    assert {k: ml.label_mid(k) for k in expected} == expected
    for parent in cd.ONTOLOGY:  # every parent is an ancestor of some leaf, and the chains end
        assert any(parent in ml.ancestors(leaf) for leaf in CLASSES)
        assert len(ml.ancestors(parent)) < len(cd.ONTOLOGY)
    with pytest.raises(ValueError, match="Dog"):
        ml.ancestors("Dog")


def test_layout_and_csv_schema(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == sorted([DEV_DIR, EVAL_DIR, GT])
    assert sorted(p.name for p in (tiny / GT).iterdir()) == sorted(
        ["dev.csv", "eval.csv", "vocabulary.csv", "course_events.csv", "course_manifest.json"]
    )
    texts = {
        name: (tiny / GT / name).read_bytes().decode("utf-8") for name in ("dev.csv", "eval.csv", "vocabulary.csv")
    }
    assert all("\r" not in t and t.endswith("\n") for t in texts.values())
    dev_lines, eval_lines = texts["dev.csv"].splitlines(), texts["eval.csv"].splitlines()
    assert dev_lines[0] == "fname,labels,mids,split" and eval_lines[0] == "fname,labels,mids"
    # a field holding several names is quoted, a field holding one is not
    multi = re.compile(r'\d+,"[^",]+(,[^",]+)+","/m/[^",]+(,/m/[^",]+)+"')
    single = re.compile(r"\d+,[^\",]+,/m/[^\",]+")
    for lines, tail in ((dev_lines, r",(train|val)"), (eval_lines, "")):
        kinds = Counter(
            "multi"
            if re.fullmatch(multi.pattern + tail, line)
            else "single"
            if re.fullmatch(single.pattern + tail, line)
            else line
            for line in lines[1:]
        )
        assert set(kinds) == {"multi", "single"}, kinds
    # vocabulary: no header, index 0..C-1, the ontology's labels and mids
    vocabulary = _rows(tiny, "vocabulary.csv")
    assert [int(r[0]) for r in vocabulary] == list(range(len(vocabulary)))
    assert [r[1] for r in vocabulary] == cd.ML_VOCABULARY
    assert all(r[2] == ml.label_mid(r[1]) for r in vocabulary)
    # every fname is an integer id with its WAV in its split's folder, and every WAV is listed
    labelled = _labelled(tiny)
    assert all(re.fullmatch(r"[1-9]\d*", f) for f in labelled)
    for folder, splits in ((DEV_DIR, {"train", "val"}), (EVAL_DIR, {"eval"})):
        assert sorted(p.stem for p in (tiny / folder).iterdir()) == sorted(
            f for f, r in labelled.items() if r[0] in splits
        )
    assert len(labelled) == len(cd.plan_multilabel("tiny", SEED))


def test_audio_format_and_lengths(tiny):
    for clip in cd.plan_multilabel("tiny", SEED)[::7]:
        info = sf.info(str(tiny / (EVAL_DIR if clip.split == "eval" else DEV_DIR) / clip.fname))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, 1, "PCM_16", clip.n_samples)


def test_labels_are_leaves_plus_ancestors_and_mids_match(tiny):
    vocabulary = _vocabulary(tiny)
    plan = {c.fname.removesuffix(".wav"): c for c in cd.plan_multilabel("tiny", SEED)}
    for fname, (split, labels, mids) in _labelled(tiny).items():
        assert mids == [vocabulary[label] for label in labels]
        assert len(set(labels)) == len(labels)
        leaves = [label for label in labels if label in CLASSES]
        by_onset = [e.label for e in sorted(plan[fname].events, key=lambda e: e.onset)]
        assert leaves == by_onset and split == plan[fname].split  # the leaves in the order they start
        assert set(labels) == set(leaves).union(*(ml.ancestors(leaf) for leaf in leaves))  # no more, no less
        for leaf in leaves:  # each leaf is followed by its ancestors (those not named before)
            i = labels.index(leaf)
            chain = [a for a in ml.ancestors(leaf) if labels.index(a) > i]
            assert labels[i + 1 : i + 1 + len(chain)] == chain


def test_splits_cover_every_class(tiny):
    labelled = _labelled(tiny)
    per_split = {
        s: Counter(label for split, labels, _ in labelled.values() if split == s for label in labels)
        for s in ("train", "val", "eval")
    }
    for split, counts in per_split.items():
        assert sorted(counts) == cd.ML_VOCABULARY, split
    splits = Counter(split for split, _, _ in labelled.values())
    cfg = cd.ML_PRESETS["tiny"]
    assert splits == {
        "train": cfg.dev_clips - round(0.15 * cfg.dev_clips),
        "val": round(0.15 * cfg.dev_clips),
        "eval": cfg.eval_clips,
    }
    # classes dealt evenly: within a split, the 20 leaves' counts differ by at most one
    for split in per_split:
        leaves = [per_split[split][c] for c in CLASSES]
        assert max(leaves) - min(leaves) <= 1, split


@pytest.mark.parametrize("preset", ["tiny", "course"])
def test_multiclass_share_and_events_in_time(preset):
    cfg = cd.ML_PRESETS[preset]
    clips = cd.plan_multilabel(preset, SEED)
    shortest = round(ml.MIN_EVENT_S * 44100)
    for split in ("train", "val", "eval"):
        ks = Counter(len(c.events) for c in clips if c.split == split)
        m = sum(ks.values())
        assert ks[2] == round(cfg.class_counts[1] * m) and ks[3] == round(cfg.class_counts[2] * m), (split, ks)
    multi = [c for c in clips if len(c.events) > 1]
    assert 0.4 <= len(multi) / len(clips) <= 0.6
    arrangements = Counter(c.arrangement for c in multi)
    assert set(arrangements) == {"overlap", "sequence"} and abs(arrangements["overlap"] - len(multi) / 2) <= 3
    for c in clips:
        assert len({e.label for e in c.events}) == len(c.events)
        assert all(0 <= e.onset < e.offset <= c.n_samples for e in c.events)
        assert (c.arrangement == "single") == (len(c.events) == 1)
        if c.arrangement in ("single", "overlap"):  # all share the middle fifth of the clip
            assert max(e.onset for e in c.events) <= 0.4 * c.n_samples + 1
            assert min(e.offset for e in c.events) >= 0.6 * c.n_samples - 1
        else:  # each ends before the next starts, and lasts at least MIN_EVENT_S
            assert all(a.offset <= b.onset for a, b in zip(c.events, c.events[1:]))
            assert all(e.offset - e.onset >= shortest - 1 for e in c.events)
    assert any(c.arrangement == "sequence" and c.events[0].offset < c.events[1].onset for c in multi)  # some gaps


def test_events_file_matches_plan_and_audio(tiny):
    events = cd.read_events(tiny)
    clips = cd.plan_multilabel("tiny", SEED)
    assert events == {
        c.fname.removesuffix(".wav"): [
            (e.label, round(e.onset / 44100, 6), round(e.offset / 44100, 6)) for e in c.events
        ]
        for c in clips
    }
    # where the clip starts with 0.15 s of background alone, the events are louder than it
    louder = []
    for c in clips:
        first = min(e.onset for e in c.events)
        if first >= 0.15 * 44100:
            y, _ = sf.read(str(tiny / (EVAL_DIR if c.split == "eval" else DEV_DIR) / c.fname))
            before = np.sqrt(np.mean(y[: first - 500] ** 2))
            louder.append(max(np.sqrt(np.mean(y[e.onset : e.offset] ** 2)) for e in c.events) > before)
    assert len(louder) >= 20 and np.mean(louder) >= 0.9
    assert cd.read_events(tiny / "nothing-here") == {}


def test_events_fade_in_and_out():
    for m in (40, 2000, 44100):
        g = ml._fade(m)
        k = min(441, m // 4)
        assert g.shape == (m,) and g[0] < 0.01 and g[-1] < 0.01 and np.all(g[k:-k] == 1.0)
        assert np.all(np.diff(g[:k]) > 0) and np.all(np.diff(g[-k:]) < 0)


def test_presets_are_small():
    tiny, course = cd.plan_multilabel("tiny", SEED), cd.plan_multilabel("course", SEED)
    assert 150 <= len(tiny) <= 250 and all(1.0 <= c.seconds <= 3.0 for c in tiny)
    assert sum(c.seconds for c in tiny) < 450  # seconds of audio: a few seconds of generation on 2 cores
    assert 1000 <= len(course) <= 1500 and all(1.0 <= c.seconds <= 5.0 for c in course)
    assert sum(c.seconds for c in course) < 3200


def test_plan_deterministic_per_seed():
    a, b, other = (cd.plan_multilabel("tiny", s) for s in (SEED, SEED, SEED + 1))
    assert a == b and a != other
    assert [c.fname for c in a] != [c.fname for c in other]


def test_deterministic_and_independent_of_workers(small, tmp_path):
    again = cd.generate_multilabel(tmp_path / "again", SMALL, seed=SEED, progress=False, workers=1)
    assert _tree(again) == _tree(small)
    other = cd.generate_multilabel(tmp_path / "other", SMALL, seed=SEED + 1, progress=False, workers=1)
    wavs = lambda tree: {h for p, h in tree.items() if p.endswith(".wav")}  # noqa: E731
    assert not wavs(_tree(other)) & wavs(_tree(small))
    assert (other / GT / "dev.csv").read_text() != (small / GT / "dev.csv").read_text()
    clip = cd.plan_multilabel(SMALL, SEED)[3]
    assert np.array_equal(ml.render_multilabel_clip(clip, SEED), ml.render_multilabel_clip(clip, SEED))


def test_resume_after_interruption(small, tmp_path):
    root = tmp_path / "small"
    shutil.copytree(small, root)
    expected = _tree(small)
    wavs = sorted((root / DEV_DIR).glob("*.wav"))
    for p in wavs[:3]:
        p.unlink()
    for p in wavs[3:5]:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    (wavs[5].parent / f".{wavs[5].name}.999.tmp").write_bytes(b"RIFF")  # a temp file left by a killed run
    (root / EVAL_DIR / next((root / EVAL_DIR).iterdir()).name).unlink()
    (root / GT / "dev.csv").unlink()
    (root / GT / "vocabulary.csv").write_text("half")
    untouched = wavs[6].stat()

    cd.generate_multilabel(root, SMALL, seed=SEED, progress=False, workers=1)
    assert _tree(root) == expected
    after = wavs[6].stat()
    assert (after.st_ino, after.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)  # kept, not rewritten


def test_other_parameters_or_foreign_root_raise(small, tmp_path):
    root = tmp_path / "small"
    shutil.copytree(small, root)
    before = _tree(root)
    with pytest.raises(ValueError, match="seed"):
        cd.generate_multilabel(root, SMALL, seed=SEED + 1, progress=False)
    with pytest.raises(ValueError, match="preset"):
        cd.generate_multilabel(root, "tiny", seed=SEED, progress=False)
    assert _tree(root) == before
    foreign = tmp_path / "fsd50k"
    (foreign / GT).mkdir(parents=True)
    (foreign / GT / "dev.csv").write_text("fname,labels,mids,split\n")
    with pytest.raises(ValueError, match="course_manifest.json"):
        cd.generate_multilabel(foreign, "tiny", progress=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        cd.plan_multilabel("huge")
    with pytest.raises(ValueError, match="workers"):
        cd.generate_multilabel("/nonexistent/never", "tiny", workers=0)
    with pytest.raises(ValueError, match="class_counts"):
        cd.MultiLabelPreset(100, 20, class_counts=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="min_seconds"):
        cd.MultiLabelPreset(100, 20, min_seconds=0.5)
    with pytest.raises(ValueError, match="val"):
        cd.MultiLabelPreset(3, 20)


def test_dataset_names():
    from uclser_lib.datasets import course_preset_of

    for preset in ("tiny", "course"):
        name = cd.course_multilabel_dataset_name(preset)
        assert name == f"course50k_v{cd.MULTILABEL_VERSION}_{preset}"
        assert cd.multilabel_preset_of(name) == preset
        assert course_preset_of(name) is None  # never taken for the FSDnoisy18k-layout course dataset
    assert cd.multilabel_preset_of("course2_tiny") is None and cd.multilabel_preset_of("fsd50k") is None
