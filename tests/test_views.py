"""Patch sampling on packed clips (docs/method.md §4, sampling half of section 5); GraphedViews (the view builder
captured in a CUDA graph): same draws as eager, re-seedable (CUDA only)."""

import numpy as np
import pytest
import torch

from uclser_lib.augment import AugmentConfig
from uclser_lib.data import EVAL_HOP, PATCH_FRAMES, PackedClips
from uclser_lib.views import (
    GraphedViews,
    ViewBuilder,
    epoch_batches,
    eval_patches,
    gather_patches,
    other_clips,
    random_patches,
    random_starts,
)


def make_packed(lengths, seed=0, n_bands=96):
    rng = np.random.default_rng(seed)
    return PackedClips.from_list([rng.normal(size=(t, n_bands)).astype(np.float32) for t in lengths])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_starts_follow_released_randint():
    # T = 106: randint(0, 5) -> {0, ..., 4}, never 5; T = 101 -> 0 (the clip itself)
    starts = random_starts(torch.full((20000,), 106), gen())
    counts = torch.bincount(starts, minlength=6).numpy()
    assert counts[5] == 0
    assert np.all(np.abs(counts[:5] / 20000 - 0.2) < 0.015)
    assert torch.all(random_starts(torch.full((50,), PATCH_FRAMES), gen()) == 0)
    lengths = torch.randint(101, 3000, (5000,), generator=gen(1))
    starts = random_starts(lengths, gen())
    assert torch.all(starts >= 0) and torch.all(starts <= (lengths - PATCH_FRAMES - 1).clamp_min(0))


def test_short_clips_are_an_error():
    with pytest.raises(ValueError, match="100 frames"):
        random_starts(torch.tensor([200, 100]), gen())
    packed = make_packed([150, 100, 300])
    with pytest.raises(ValueError, match="clip 1 has 100 frames"):
        eval_patches(packed)
    with pytest.raises(ValueError, match="at least 101"):
        random_patches(packed, torch.tensor([0, 1]), gen())


def test_gather_patches_are_the_clip_slices():
    packed = make_packed([101, 250, 400])
    idx, starts = torch.tensor([2, 0, 1, 2]), torch.tensor([299, 0, 149, 17])
    patches = gather_patches(packed, idx, starts)
    assert patches.shape == (4, PATCH_FRAMES, 96)
    for k in range(4):
        expected = packed.clip(int(idx[k]))[int(starts[k]) : int(starts[k]) + PATCH_FRAMES]
        assert torch.equal(patches[k], expected)


def test_random_patches_lie_in_their_clip():
    packed = make_packed([101, 130, 500])
    idx = torch.tensor([0, 1, 2] * 200)
    patches = random_patches(packed, idx, gen())
    for k in (0, 1, 2, 598):
        clip = packed.clip(int(idx[k]))
        windows = clip.unfold(0, PATCH_FRAMES, 1).permute(0, 2, 1)  # every start
        assert (windows == patches[k]).all(-1).all(-1).any()


def test_other_clips_exclude_foreground_and_are_distinct_and_uniform():
    n = 7
    idx = torch.randint(0, n, (30000,), generator=gen(3))
    back = other_clips(idx, n, gen())
    assert back.shape == (30000, 2)
    assert torch.all(back != idx[:, None]) and torch.all(back[:, 0] != back[:, 1])
    assert back.min() >= 0 and back.max() < n
    # given foreground 0: each column uniform over the 6 others
    for col in (0, 1):
        counts = torch.bincount(back[idx == 0, col], minlength=n)[1:].float()
        assert torch.all((counts / counts.sum() - 1 / 6).abs() < 0.02)
    # given foreground 0 and first background 1: second uniform over {2..6}
    sel = (idx == 0) & (back[:, 0] == 1)
    counts = torch.bincount(back[sel, 1], minlength=n)[2:].float()
    assert torch.all((counts / counts.sum() - 0.2).abs() < 0.05)
    with pytest.raises(ValueError, match="at least 3 clips"):
        other_clips(torch.tensor([0, 1]), 2, gen())


def test_eval_patches_match_released_slicing():
    lengths = [101, 150, 151, 201, 1000, 337]
    packed = make_packed(lengths)
    patches, clip_index = eval_patches(packed)
    expected, expected_idx = [], []
    for c, t in enumerate(lengths):  # released fetch_file_2_tensor
        start = 0
        while start + PATCH_FRAMES <= t:
            expected.append(packed.clip(c)[start : start + PATCH_FRAMES])
            expected_idx.append(c)
            start += EVAL_HOP
    assert torch.equal(clip_index, torch.tensor(expected_idx))
    assert torch.equal(patches, torch.stack(expected))


def test_epoch_batches_permute_all_clips():
    batches = epoch_batches(1000, 128, gen(5))
    assert [len(b) for b in batches] == [128] * 7 + [104]
    order = torch.cat(batches)
    assert torch.equal(order.sort().values, torch.arange(1000))
    assert not torch.equal(order, torch.arange(1000))
    assert all(torch.equal(a, b) for a, b in zip(batches, epoch_batches(1000, 128, gen(5))))
    assert [len(b) for b in epoch_batches(1000, 128, gen(5), drop_last=True)] == [128] * 7
    with pytest.raises(ValueError, match="batch_size"):
        epoch_batches(10, 0, gen())


def test_sampling_is_reproducible_and_seed_dependent():
    packed = make_packed([300, 800, 1200, 5000])
    idx = torch.arange(4).repeat(10)
    a = random_patches(packed, idx, gen(11))
    assert torch.equal(a, random_patches(packed, idx, gen(11)))
    assert not torch.equal(a, random_patches(packed, idx, gen(12)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_sampling_equals_cpu_with_a_cpu_generator():
    packed = make_packed([300, 800, 1200, 5000])
    idx = torch.arange(4).repeat(10)
    cpu = random_patches(packed, idx, gen(11))
    cuda = random_patches(packed.to("cuda"), idx.cuda(), gen(11))
    assert torch.equal(cpu, cuda.cpu())


# ---------------------------------------- GraphedViews: the view builder captured in a CUDA graph (CUDA only)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _builder():
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(int(n), 96, generator=g) - 2 for n in torch.randint(101, 400, (40,), generator=g)]
    packed = PackedClips.from_list([c.numpy() for c in clips]).to("cuda")
    return ViewBuilder(packed, AugmentConfig.paper(), -2.0, 1.0)


@pytest.fixture
def captured():
    """(eager builder, its registered generator, the graph for batches of 8, a batch of clip indices)."""
    builder = _builder()
    gen = torch.Generator("cuda")
    return builder, gen, GraphedViews(builder, 8, gen), torch.arange(8, device="cuda")


@cuda
def test_replays_are_reseedable_and_fresh(captured):
    _, gen, graphed, idx = captured
    gen.manual_seed(5)
    a = [v.clone() for v in graphed(idx)]
    b = [v.clone() for v in graphed(idx)]
    gen.manual_seed(5)
    c = [v.clone() for v in graphed(idx)]
    assert not torch.equal(a[0], b[0])  # each replay draws anew
    torch.testing.assert_close(a[0], c[0], rtol=0, atol=0)  # re-seeding repeats the draws
    torch.testing.assert_close(a[1], c[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="captured for batches of 8"):
        graphed(torch.arange(4, device="cuda"))


@cuda
def test_graph_equals_eager_for_the_same_seed(captured):
    builder, gen, graphed, idx = captured
    gen.manual_seed(11)
    g1, g2 = (v.clone() for v in graphed(idx))
    eager_gen = torch.Generator("cuda").manual_seed(11)
    e1, e2 = builder(idx, eager_gen)
    torch.testing.assert_close(g1, e1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g2, e2, rtol=1e-5, atol=1e-5)
