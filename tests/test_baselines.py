"""The fair random-init baseline (BatchNorm statistics re-estimated) and the handcrafted band-statistics baseline."""

import numpy as np
import pytest
import torch
from test_downstream import N_CLASSES, make_set

from uclser_lib.baselines import BandStats, recalibrate_batchnorm
from uclser_lib.data import PackedClips, feature_stats
from uclser_lib.downstream import LinearEvalConfig, linear_eval
from uclser_lib.embed import clip_embeddings
from uclser_lib.models import build_encoder
from uclser_lib.views import random_patches


def clips(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return PackedClips.from_list(
        [rng.normal(-3, 1, (int(rng.integers(101, 300)), 96)).astype(np.float32) for _ in range(n)]
    )


def test_band_stats_embedding_is_per_band_mean_and_std():
    x = torch.randn(3, 1, 101, 96)
    emb = BandStats().embed(x)
    assert emb.shape == (3, 192)
    torch.testing.assert_close(emb[:, :96], x[:, 0].mean(1))
    torch.testing.assert_close(emb[:, 96:], x[:, 0].std(1, unbiased=False))
    with pytest.raises(ValueError, match="BandStats expects"):
        BandStats().embed(torch.zeros(96))


def test_band_stats_through_the_linear_probe_finds_band_classes():
    train, val, test = make_set(24, 0), make_set(12, 1), make_set(12, 2)
    mean, std = feature_stats(train.clips)
    cfg = LinearEvalConfig(epochs=30, batch_size=8, lr=0.1, milestones=[], seed=0)
    res = linear_eval(
        BandStats(n_classes=N_CLASSES), mean, std, train, val, test, cfg=cfg, device="cpu", progress=False
    )
    assert res.test["balanced"] == 100.0  # each class raises its own 10 bands: the band means separate them


def test_recalibration_matches_the_batch_statistics_and_keeps_the_weights():
    packed = clips()
    mean, std = feature_stats(packed)
    enc = build_encoder("vgglike")
    weights = {k: v.clone() for k, v in enc.state_dict().items() if "running" not in k and "num_batches" not in k}
    recalibrate_batchnorm(enc, packed, mean, std, batches=1, batch_size=16, seed=3, device="cpu")
    assert not enc.training
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in weights.items())  # untouched, not recomputed
    # the first BatchNorm's running mean is the mean of its input over exactly those patches
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(len(packed), (16,), generator=gen)
    x = ((random_patches(packed, idx, gen) - mean) / std)[:, None]
    expected = enc.conv0.conv(x).mean(dim=(0, 2, 3))
    torch.testing.assert_close(enc.conv0.bn.running_mean, expected, rtol=1e-4, atol=1e-5)


def test_recalibrated_random_vgg_embeddings_are_no_longer_collapsed():
    """A fresh VGG-like in eval mode ends with embeddings that hardly vary between clips; recalibrated, they do."""
    packed = clips(16, 1)
    mean, std = feature_stats(packed)
    torch.manual_seed(0)
    enc = build_encoder("vgglike").eval()
    before = clip_embeddings(enc.embed, packed, mean, std, device="cpu").std(0).mean()
    recalibrate_batchnorm(enc, packed, mean, std, batches=2, batch_size=16, device="cpu")
    after = clip_embeddings(enc.embed, packed, mean, std, device="cpu").std(0).mean()
    assert after > 10 * before


def test_recalibration_refuses_a_model_without_batchnorm_and_bad_sizes():
    with pytest.raises(ValueError, match="no BatchNorm"):
        recalibrate_batchnorm(BandStats(), clips(), 0.0, 1.0)
    with pytest.raises(ValueError, match="batch_size"):
        recalibrate_batchnorm(build_encoder("vgglike"), clips(), 0.0, 1.0, batch_size=1)
