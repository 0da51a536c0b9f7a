"""GraphedViews (the view builder captured in a CUDA graph): same draws as eager, re-seedable. CUDA only."""

import pytest
import torch

from uclser_lib.augment import AugmentConfig
from uclser_lib.data import PackedClips
from uclser_lib.views import GraphedViews, ViewBuilder

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
