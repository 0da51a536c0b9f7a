"""The feature store (issue #33): float16 on disk within its stated rounding, written atomically, checked on opening,
written from a FeatureSet or an HDF5 feature file in chunks; pre-training and embedding from it give the in-memory
path's views, losses and embeddings on the same float16-rounded frames; two torchrun processes train from it."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_train import synthetic_set, tiny_config

from uclser_lib import store as S
from uclser_lib.augment import AugmentConfig
from uclser_lib.data import FORMAT_VERSION, FeatureSet, PackedClips, feature_stats, load_features
from uclser_lib.features import DEFAULT_PARAMS
from uclser_lib.store import StoreError, open_store, store_stats, write_store, write_store_chunks, write_store_from_h5
from uclser_lib.train import pretrain
from uclser_lib.views import ViewBuilder

F32 = torch.finfo(torch.float32).eps


def course_range_set(n=10, seed=0) -> FeatureSet:
    """Clips whose values span the course's log10 mel range, [-8, 5], and include values near 0."""
    rng = np.random.default_rng(seed)
    clips = [rng.uniform(-8, 5, (int(rng.integers(101, 300)), 96)).astype(np.float32) for _ in range(n)]
    clips[0][:3] = np.float32([1e-7, -3e-6, 2e-5])[:, None]  # float16 subnormals
    fs = synthetic_set(n)
    return dataclasses.replace(fs, clips=PackedClips.from_list(clips, fs.labels))


def rounded(fs: FeatureSet) -> FeatureSet:
    """``fs`` with its frames rounded to float16 (what a store holds), as float32 in memory."""
    half = fs.clips.data.to(torch.float16).float()
    return dataclasses.replace(fs, clips=PackedClips(half, fs.clips.offsets, fs.clips.labels))


@pytest.fixture
def stored(tmp_path):
    fs = synthetic_set(16)
    return fs, open_store(write_store(fs, tmp_path / "train-store"))


def test_float16_rounding_stays_within_the_stated_bound(tmp_path):
    """|x16 - x| <= |x| 2**-11 (2**-25 for subnormals), at most 2**-9 log10 units in [-8, 5] (store.py's
    docstring); the file really is float16 (half the bytes of float32, the error not 0)."""
    fs = course_range_set()
    st = open_store(write_store(fs, tmp_path / "s"))
    x, x16 = fs.clips.data.double(), st.clips.load().data.double()
    err = (x16 - x).abs()
    bound = torch.maximum(x.abs() * 2.0**-11, torch.tensor(2.0**-25))
    assert bool((err <= bound).all()), float((err / bound).max())
    assert float(err.max()) <= 2.0**-9
    assert float(err.max()) > 2.0**-11  # rounded to float16 indeed (float32 would give 0)
    assert st.clips.frames.dtype == np.float16
    assert (tmp_path / "s" / "frames.npy").stat().st_size < x.numel() * 2 + 4096


def test_a_store_keeps_clips_and_metadata(tmp_path):
    fs = synthetic_set(9)
    st = open_store(write_store(fs, tmp_path / "s"))
    assert len(st) == 9 and st.fnames == fs.fnames and st.classes == fs.classes and st.params == fs.params
    assert torch.equal(st.clips.offsets, fs.clips.offsets) and torch.equal(st.clips.lengths, fs.clips.lengths)
    assert np.array_equal(st.labels, fs.labels) and st.labels.dtype == np.int64
    half = rounded(fs).clips
    for i in (0, 4, 8):
        assert torch.equal(st.clips.clip(i), half.clip(i))
    assert torch.equal(st.clips.data[5:300], half.data[5:300])
    # multi-hot labels are carried as they are
    multi = np.eye(4, dtype=np.float32)[np.arange(9) % 4] + np.eye(4, dtype=np.float32)[(np.arange(9) + 1) % 4]
    offsets = fs.clips.offsets.numpy()
    path = write_store_chunks(tmp_path / "m", [fs.clips.data.numpy()], offsets, multi, classes=fs.classes)
    st = open_store(path)
    assert st.multilabel and st.labels.dtype == np.float32 and np.array_equal(st.labels, multi)


def test_a_failed_write_leaves_no_store_and_keeps_the_old_one(tmp_path):
    fs = synthetic_set(6)
    data, offsets = fs.clips.data.numpy(), fs.clips.offsets.numpy()

    def broken():
        yield data[:100]
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="went away"):
        write_store_chunks(tmp_path / "s", broken(), offsets)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary folder
    write_store(fs, tmp_path / "s")
    with pytest.raises(OSError, match="went away"):
        write_store_chunks(tmp_path / "s", broken(), offsets, overwrite=True)
    assert torch.equal(open_store(tmp_path / "s").clips.clip(2), rounded(fs).clips.clip(2))
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    with pytest.raises(StoreError, match="already exists"):
        write_store(fs, tmp_path / "s")
    (tmp_path / "s" / "store.json").unlink()  # as a write cut before its manifest would leave it
    with pytest.raises(StoreError, match=r"s: not a feature store \(no store.json"):
        open_store(tmp_path / "s")


def test_a_truncated_or_altered_store_is_a_one_line_error_naming_the_file(tmp_path):
    fs = synthetic_set(6)
    path = write_store(fs, tmp_path / "s")
    frames = path / "frames.npy"
    good = frames.read_bytes()
    frames.write_bytes(good[:-96])
    for verify in ("size", "full"):
        with pytest.raises(StoreError, match=r"frames.npy: \d+ bytes, the store recorded \d+ \(truncated") as err:
            open_store(path, verify=verify)
        assert "\n" not in str(err.value)
    altered = bytearray(good)
    altered[-5] ^= 0x40
    frames.write_bytes(bytes(altered))
    with pytest.raises(StoreError, match=r"frames.npy: sha256 .* differs from the recorded"):
        open_store(path)
    open_store(path, verify="size")  # documented: sizes only
    frames.write_bytes(good)
    index = path / "index.npz"
    raw = bytearray(index.read_bytes())
    raw[len(raw) // 2] ^= 1
    index.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"index.npz: sha256"):
        open_store(path, verify="size")


def test_values_float16_cannot_hold_are_refused_naming_the_clip(tmp_path):
    fs = synthetic_set(6)
    for value in (float("nan"), 7e4):
        bad = fs.subset(np.arange(6))
        bad.clips.data[int(bad.clips.offsets[2]) + 5, 7] = value
        with pytest.raises(StoreError, match=r"clip 2 \(2.wav\), frame 5 holds .*expected finite values within"):
            write_store(bad, tmp_path / "s", chunk_frames=64)
        assert not (tmp_path / "s").exists()
    with pytest.raises(StoreError, match="offsets"):
        write_store_chunks(tmp_path / "s", [fs.clips.data.numpy()], [0, 5, 3])
    with pytest.raises(StoreError, match=r"chunks hold 100 frames, offsets\[-1\] says"):
        write_store_chunks(tmp_path / "s", [fs.clips.data[:100].numpy()], fs.clips.offsets.numpy())


def write_h5(fs: FeatureSet, path: Path) -> Path:
    """A feature file in the layout :func:`uclser_lib.data.extract_split` finishes (what load_features reads)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=fs.clips.data.numpy(), chunks=(64, 96))
        f.create_dataset("offsets", data=fs.clips.offsets.numpy())
        f.create_dataset("label", data=fs.labels)
        f.create_dataset("fname", data=np.array([s.encode() for s in fs.fnames]))
        f.create_dataset("clean", data=fs.clean)
        f.create_dataset("noisy_small", data=fs.noisy_small)
        f.attrs.update(
            format="uclser-logmel",
            format_version=FORMAT_VERSION,
            params=json.dumps(DEFAULT_PARAMS.to_dict()),
            classes=json.dumps(fs.classes),
        )
    return path


def test_a_store_from_an_hdf5_feature_file_read_in_chunks(tmp_path, monkeypatch):
    fs = synthetic_set(10)
    fs.clean[:] = np.arange(10) % 3 == 0
    h5 = write_h5(fs, tmp_path / "train.h5")
    assert torch.equal(load_features(h5).clips.data, fs.clips.data)
    reads = []
    real = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda d, k: reads.append((d.name, k)) or real(d, k))
    keep = np.array([0, 1, 2, 5, 8, 9])
    st = open_store(write_store_from_h5(h5, tmp_path / "s", index=keep, chunk_frames=150))
    sub = rounded(fs.subset(keep))
    assert torch.equal(st.clips.load().data, sub.clips.data)
    assert st.fnames == sub.fnames and np.array_equal(st.clean, sub.clean) and np.array_equal(st.labels, sub.labels)
    frame_reads = [k for name, k in reads if name == "/features"]
    assert frame_reads and all(k.stop - k.start <= 150 for k in frame_reads)  # never the whole dataset
    assert sum(k.stop - k.start for k in frame_reads) == int(sub.clips.offsets[-1])  # only the kept clips
    with pytest.raises(ValueError, match="index must select clips in increasing order"):
        write_store_from_h5(h5, tmp_path / "t", index=[3, 1])


def test_statistics_in_chunks_equal_feature_stats(stored):
    fs, st = stored
    mean, std = feature_stats(rounded(fs).clips)
    m, s = store_stats(st.clips, chunk_frames=77)
    assert abs(m - mean) <= 1e-12 * abs(mean) and abs(s - std) <= 1e-12 * std
    assert abs(m - feature_stats(fs.clips)[0]) > 0  # the store's own (rounded) values, not the float32 ones


@pytest.mark.parametrize("mix", ["mix_out_clip", "mix_within_clip", "none"])
def test_views_from_the_store_equal_in_memory_views(stored, mix):
    """Same seed, store vs in-memory on the same float16-rounded frames: equal views within a few float32
    roundings of their magnitude; another seed gives other views (the comparison can fail)."""
    fs, st = stored
    cfg = dataclasses.replace(AugmentConfig.paper(), mix=mix)
    mem, disk = rounded(fs).clips, st.clips
    a = ViewBuilder(mem, cfg, *feature_stats(mem))
    b = ViewBuilder(disk, cfg, *store_stats(disk))
    assert (a.power is None) == (b.power is None) == (mix == "none")
    idx = torch.tensor([3, 0, 7, 12, 5, 9])
    va = a.build(idx, torch.Generator().manual_seed(5))
    vb = b.build(idx, torch.Generator().manual_seed(5))
    tol = 64 * F32 * float(va.abs().max())
    torch.testing.assert_close(vb, va, rtol=0, atol=tol)
    other = b.build(idx, torch.Generator().manual_seed(6))
    assert float((other - va).abs().max()) > 100 * tol
    record_a, record_b = {}, {}
    a.build(idx, torch.Generator().manual_seed(5), record=record_a)
    b.build(idx, torch.Generator().manual_seed(5), record=record_b)
    torch.testing.assert_close(record_b["view"], record_a["view"], rtol=0, atol=0)  # the patches read: exact


def test_a_step_from_the_store_equals_in_memory(stored):
    """pretrain from the store and from the same frames in memory: per-step losses and the weights agree within
    float tolerance, and the kNN monitor runs on a stored set."""
    _, st = stored
    cfg = tiny_config(epochs=1, batch_size=8, knn_every=1)
    runs = {}
    for where in ("disk", "memory"):
        losses = []
        model, hist = pretrain(
            cfg,
            st,
            {"val": st},
            progress=False,
            device="cpu",
            store=where,
            on_step=lambda e, i, x, out=losses: out.append(x),
        )
        runs[where] = losses, model.state_dict(), hist
    (l_disk, m_disk, h_disk), (l_mem, m_mem, h_mem) = runs["disk"], runs["memory"]
    assert len(l_disk) == 2 and np.allclose(l_disk, l_mem, rtol=16 * F32, atol=0)
    for k, v in m_mem.items():
        if v.is_floating_point():
            torch.testing.assert_close(m_disk[k], v, rtol=1e-4, atol=1e-5 * max(1.0, float(v.abs().max())))
    assert h_disk[0]["val_knn_top1"] == h_mem[0]["val_knn_top1"]


def test_auto_picks_memory_where_the_set_fits_and_the_store_else(stored, monkeypatch, tmp_path):
    fs, st = stored
    assert S.choose_store(10**9, "cpu", 1, available=8 * 10**9)[0] == "memory"
    assert S.choose_store(10**9, "cpu", 3, available=8 * 10**9)[0] == "disk"  # each rank holds a copy
    mode, why = S.choose_store(10**9, "cuda", 1, available=64 * 10**9, device_free=2 * 10**9)
    assert mode == "disk" and "free on cuda" in why
    assert S.memory_available() > 0
    calls = []
    real = S.store_stats
    monkeypatch.setattr(S, "store_stats", lambda clips, *a: calls.append(type(clips).__name__) or real(clips, *a))
    cfg = tiny_config(epochs=1, batch_size=8, knn_every=0)
    pretrain(cfg, fs, progress=False, device="cpu")
    assert calls == []  # fits: in memory
    monkeypatch.setattr(S, "memory_available", lambda: 10**6)
    pretrain(cfg, fs, run_dir=tmp_path / "run", progress=False, device="cpu")
    assert calls == ["StoredClips"] and (tmp_path / "run" / "train-store" / "store.json").is_file()
    with pytest.raises(ValueError, match=r"store: expected one of \('auto', 'memory', 'disk'\), got 'ram'"):
        pretrain(cfg, fs, progress=False, device="cpu", store="ram")


def test_embedding_reads_the_store_in_chunks(stored):
    from uclser_lib.embed import embed_eval_patches

    fs, st = stored
    fn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(101 * 96, 4))
    whole, idx = embed_eval_patches(fn, rounded(fs).clips, -3.0, 0.5, "cpu")
    chunked, idx2 = embed_eval_patches(fn, st.clips, -3.0, 0.5, "cpu", clips_per_chunk=3, batch_size=5)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=16 * F32 * float(whole.abs().max()))
    assert torch.equal(idx, idx2)


TORCHRUN_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from test_train import tiny_config
from uclser_lib.store import open_store
from uclser_lib.train import pretrain

torch.set_num_threads(1)
rank, out = int(os.environ["RANK"]), {out!r}
st = open_store(os.path.join(out, "store"), verify="size")
cfg = tiny_config(epochs=1, batch_size=8, knn_every=0)
for where, train in (("disk", st), ("memory", st), ("written", st.load())):
    model, hist = pretrain(cfg, train, run_dir=os.path.join(out, where), progress=False, device="cpu",
                           store="memory" if where == "memory" else "disk")
    torch.save({{"model": model.state_dict(), "history": hist}}, os.path.join(out, f"{{where}}-rank{{rank}}.pt"))
torch.distributed.destroy_process_group()
os._exit(0)  # gloo in torch 2.11 sometimes aborts at interpreter exit after the work is done
"""


@pytest.mark.slow  # two processes (torchrun, DDP on gloo)
def test_torchrun_two_cpu_processes_pretrain_from_the_store(tmp_path):
    """torchrun, 2 processes on gloo, from a store opened by both: both ranks finish in sync, rank 0 writes the
    checkpoint, the loss is finite and the run equals the in-memory 2-process run within float tolerance; an
    in-memory set given with store="disk" is written once by rank 0 to run_dir/train-store."""
    from uclser_lib.checkpoints import load_checkpoint

    write_store(synthetic_set(16), tmp_path / "store")
    script = tmp_path / "run.py"
    script.write_text(TORCHRUN_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {
        (w, r): torch.load(tmp_path / f"{w}-rank{r}.pt", weights_only=True)
        for w in ("disk", "memory", "written")
        for r in (0, 1)
    }
    for where in ("disk", "memory", "written"):
        r0, r1 = runs[where, 0], runs[where, 1]
        assert [h["loss"] for h in r0["history"]] == [h["loss"] for h in r1["history"]]  # all-reduced, both ran
        assert all(np.isfinite(h["loss"]) for h in r0["history"])
        assert load_checkpoint(tmp_path / where / "checkpoint.pt")["epoch"] == 1
    assert (tmp_path / "written" / "train-store" / "store.json").is_file()
    assert not (tmp_path / "disk" / "train-store").exists()  # a StoredSet is read where it is
    memory = runs["memory", 0]
    for where in ("disk", "written"):
        run = runs[where, 0]
        np.testing.assert_allclose(
            [h["loss"] for h in run["history"]], [h["loss"] for h in memory["history"]], rtol=1e-5
        )
        for k, v in memory["model"].items():
            if v.is_floating_point():
                torch.testing.assert_close(run["model"][k], v, rtol=1e-4, atol=1e-5 * max(1.0, float(v.abs().max())))


def test_the_command_line_passes_store_to_pretrain(tmp_path, monkeypatch, capsys):
    import uclser_lib.train as T
    from uclser_lib.cli import main

    seen = []
    monkeypatch.setattr(T, "pretrain", lambda *a, **kw: seen.append(kw["store"]) or (None, [{"loss": 1.0}]))
    argv = ["pretrain", "--data.preset", "tiny", "--run_dir", str(tmp_path / "run"), "--device", "cpu"]
    assert main([*argv, "--store", "disk"]) == 0 and main(argv) == 0
    assert seen == ["disk", "auto"]
    with pytest.raises(SystemExit):
        main([*argv, "--store", "ram"])
    assert "invalid choice: 'ram'" in capsys.readouterr().err
