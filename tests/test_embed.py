"""The disk cache of a frozen encoder's embeddings (embed.cached_eval_patches) and linear evaluation through it."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from uclser_lib import datasets, embed
from uclser_lib.data import PackedClips
from uclser_lib.downstream import LinearEvalConfig, linear_eval, task_splits
from uclser_lib.models import Encoder, build_encoder


class CountingEncoder(Encoder):
    """Conv 3x3 -> BatchNorm -> ReLU -> pool to (1, 8): an 8-d embedding; counts the patches it embeds."""

    def __init__(self, n_classes=20):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embedding_dim = 8
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
        self.bn = nn.BatchNorm2d(1)
        self.pool = nn.AdaptiveAvgPool2d((1, 8))
        self.fc = nn.Linear(8, n_classes)
        self.calls = 0

    def embed(self, x):
        self.calls += len(x)
        return self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)

    def classifier(self):
        return self.fc


def packed(seed=0, n=6):
    rng = np.random.default_rng(seed)
    return PackedClips.from_list([rng.normal(size=(int(rng.integers(101, 260)), 96)) for _ in range(n)])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(embed.CACHE_ENV, str(tmp_path / "emb"))
    return tmp_path / "emb"


def entries(folder):
    return sorted(folder.rglob("*.npz"))


def test_a_hit_returns_the_same_arrays_without_running_the_encoder(cache):
    enc, clips = CountingEncoder(), packed()
    emb, index = embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu")
    assert enc.calls == len(index) > 0 and len(entries(cache)) == 1
    enc.calls = 0
    emb2, index2 = embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu")
    assert enc.calls == 0  # read from disk
    assert torch.equal(emb, emb2) and torch.equal(index, index2)  # float32 stored exactly
    ref, ref_index = embed.embed_eval_patches(enc.embed, clips, 0.5, 2.0, "cpu")
    assert torch.equal(emb2, ref) and torch.equal(index2, ref_index)


def test_a_changed_weight_buffer_feature_or_normalisation_misses(cache):
    enc, clips = CountingEncoder(), packed()
    embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu")
    changed_weight = copy.deepcopy(enc)
    with torch.no_grad():
        changed_weight.conv.weight[0, 0, 0, 0] += 1e-3
    changed_bn = copy.deepcopy(enc)
    changed_bn.bn.running_var.fill_(4.0)  # a buffer, not a parameter: still another function
    changed_frames = PackedClips(clips.data.clone(), clips.offsets, clips.labels)
    changed_frames.data[5, 7] += 1.0
    for e, c, m, s in [
        (changed_weight, clips, 0.5, 2.0),
        (changed_bn, clips, 0.5, 2.0),
        (enc, changed_frames, 0.5, 2.0),
        (enc, clips, 0.5, 2.5),
    ]:
        e.calls = 0
        emb, index = embed.cached_eval_patches(e, c, m, s, "cpu")
        assert e.calls == len(index)  # the encoder ran: a miss
        ref, _ = embed.embed_eval_patches(e.embed, c, m, s, "cpu")
        assert torch.equal(emb, ref)
    assert len(entries(cache)) == 5
    relabelled = PackedClips(clips.data, clips.offsets, torch.arange(len(clips)))
    assert embed.embedding_key(enc, relabelled, 0.5, 2.0, "cpu") == embed.embedding_key(enc, clips, 0.5, 2.0, "cpu")


def test_a_corrupt_or_tampered_entry_is_recomputed_with_a_warning(cache):
    enc, clips = CountingEncoder(), packed()
    ref, ref_index = embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu")
    (path,) = entries(cache)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated: not a zip any more
    enc.calls = 0
    with pytest.warns(RuntimeWarning, match="embedding cache"):
        emb, index = embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu")
    assert enc.calls == len(index) and torch.equal(emb, ref) and torch.equal(index, ref_index)
    assert path.read_bytes() == good  # replaced by a good entry
    with np.load(path) as f:  # an entry whose arrays no longer match their checksum
        arrays = {k: f[k] for k in f.files}
    arrays["emb"] = arrays["emb"] + 1
    np.savez(path.with_suffix(""), **arrays)
    enc.calls = 0
    with pytest.warns(RuntimeWarning, match="checksum"):
        emb, _ = embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu")
    assert enc.calls > 0 and torch.equal(emb, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.calls = 0
        embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu")  # good again: a silent hit
        assert enc.calls == 0


def test_the_cache_can_be_turned_off(monkeypatch, tmp_path):
    monkeypatch.setenv(embed.CACHE_ENV, "off")
    assert embed.cache_dir() is None
    enc, clips = CountingEncoder(), packed()
    for _ in range(2):
        enc.calls = 0
        embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu")
        assert enc.calls > 0
    monkeypatch.setenv(embed.CACHE_ENV, str(tmp_path))
    embed.cached_eval_patches(enc, clips, 0.5, 2.0, "cpu", cache=False)
    assert entries(tmp_path) == []


@pytest.mark.slow
def test_linear_eval_from_the_disk_cache_gives_the_same_metrics_on_the_tiny_course_data(cache):
    course = datasets.prepare("tiny", progress=False)
    train, val, test = task_splits(course.splits(), "noisy")
    torch.manual_seed(0)
    encoder = build_encoder("resnet18").eval()
    cfg = LinearEvalConfig(epochs=4, milestones=[2, 3], seed=3)
    mean, std = float(train.clips.data.mean()), float(train.clips.data.std())
    runs = {
        "no disk cache": linear_eval(encoder, mean, std, train, val, test, cfg, "cpu", False, disk_cache=False),
        "miss": linear_eval(encoder, mean, std, train, val, test, cfg, "cpu", False),
    }
    assert len(entries(cache)) == 3  # train, val, test
    calls, real = [], encoder.embed
    encoder.embed = lambda x: calls.append(len(x)) or real(x)
    runs["hit"] = linear_eval(encoder, mean, std, train, val, test, cfg, "cpu", False)
    assert calls == []  # the encoder did not run
    ref = runs["no disk cache"]
    for name, r in runs.items():
        assert r.best_epoch == ref.best_epoch, name
        for split in ("val", "test"):
            for k in ("top1", "balanced", "top3"):
                assert r.__dict__[split][k] == pytest.approx(ref.__dict__[split][k], abs=1e-9), (name, split, k)
        assert np.array_equal(r.test["confusion"], ref.test["confusion"])
        assert [h["loss"] for h in r.history] == pytest.approx([h["loss"] for h in ref.history], rel=1e-6)


def test_clip_embeddings_of_an_encoder_use_the_cache_and_other_callables_do_not(cache):
    enc, clips = CountingEncoder(), packed()
    first = embed.clip_embeddings(enc.embed, clips, 0.5, 2.0, "cpu")
    enc.calls = 0
    again = embed.clip_embeddings(enc.embed, clips, 0.5, 2.0, "cpu")
    assert enc.calls == 0 and torch.equal(first, again) and first.shape == (len(clips), 8)
    plain = embed.clip_embeddings(lambda x: enc.embed(x), clips, 0.5, 2.0, "cpu")  # not an encoder's embed: run
    assert enc.calls > 0 and torch.equal(plain, first) and len(entries(cache)) == 1


@pytest.mark.parametrize("arch", ["vgglike", "resnet18", "crnn"])
def test_channels_last_embedding_equals_the_default_layout_and_leaves_the_encoder_as_it_was(arch):
    """embed_eval_patches runs a convolutional encoder in channels-last layout: the same outputs up to float32
    rounding (another summation order), the encoder's weights put back in their layout afterwards."""
    from uclser_lib.views import eval_patches

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    clips = PackedClips.from_list([rng.standard_normal((n, 96)).astype(np.float32) for n in (101, 180, 333)], [0, 1, 2])
    encoder = build_encoder(arch).eval()
    with torch.no_grad():
        patches, _ = eval_patches(clips)
        plain = encoder.embed(patches[:, None])
    out, _ = embed.embed_eval_patches(encoder.embed, clips, 0.0, 1.0, "cpu")
    tol = 1e-4 * float(plain.abs().max())  # float32 sums over some 10^4 terms in another order
    assert out.shape == plain.shape and float((out - plain).abs().max()) <= tol
    assert all(p.is_contiguous() for p in encoder.parameters())
    encoder.to(memory_format=torch.channels_last)  # already channels-last (e.g. on CUDA): left so
    embed.embed_eval_patches(encoder.embed, clips, 0.0, 1.0, "cpu")
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in encoder.parameters() if p.dim() == 4)
