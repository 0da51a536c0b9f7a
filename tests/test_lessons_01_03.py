"""The measurements and figures that notebooks 01-03 add to explain the recipe (analysis, plots)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from uclser_lib import analysis, plots


def test_pair_auc():
    assert analysis.pair_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert analysis.pair_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert analysis.pair_auc([1.0], [1.0]) == 0.5  # ties count half
    with pytest.raises(ValueError):
        analysis.pair_auc([], [1.0])


def test_positive_ranks():
    z1 = torch.eye(4)
    assert analysis.positive_ranks(z1, z1).tolist() == [1] * 8  # each view's twin is identical: rank 1
    ranks = analysis.positive_ranks(z1, z1.roll(1, 0))  # every positive orthogonal to its anchor, one negative equal
    assert ranks.min() >= 2 and ranks.max() <= 7
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    r = analysis.positive_ranks(z[:32], z[32:])
    assert r.shape == (64,) and 1 <= r.min() and r.max() <= 63 and 20 < r.float().mean() < 44  # random: about N
    with pytest.raises(ValueError):
        analysis.positive_ranks(torch.ones(3, 2), torch.ones(2, 2))


def test_hardest_negative_share_grows_as_the_temperature_falls():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(8, 16, generator=g)
    z2 = z1 + 0.3 * torch.randn(8, 16, generator=g)
    w = [analysis.hardest_negative_share(z1, z2, t).mean().item() for t in (0.01, 0.2, 1.0)]
    assert 1 >= w[0] > w[1] > w[2] > 1 / 14
    # at a huge temperature every negative weighs the same: 1 / (2N - 2)
    assert analysis.hardest_negative_share(z1, z2, 1e6).mean().item() == pytest.approx(1 / 14, rel=1e-3)
    with pytest.raises(ValueError):
        analysis.hardest_negative_share(z1, z2, 0.0)


def test_lesson_figures():
    fig, ax = plt.subplots()
    plots.length_histograms(
        ax, np.array([0.5, 1.0, 5.0, 20.0]), "course", published={"min_s": 0.3, "max_s": 30, "mean_s": 8.3}
    )
    plots.length_histograms(ax, np.array([0.5, 1.0]), "course", reference_s=np.array([2.0, 3.0]))
    plots.class_noise_bars(ax, ["a", "b"], [10.0, 40.0], overall=25.0)
    plt.close(fig)
    fig = plt.figure(layout="constrained")
    a, b = fig.subplots(2)
    a.imshow(np.zeros((2, 2)), cmap="RdBu_r")
    b.imshow(np.zeros((2, 2)), cmap="magma")
    n_axes = len(fig.axes)
    plots.change_keys(fig)
    assert len(fig.axes) == n_axes + 1  # one colour key, for the change panel only
    plt.close(fig)
    history = [{"epoch": 1, "loss": 4.0, "val_knn_balanced": 20.0}, {"epoch": 2, "loss": 3.5, "val_knn_balanced": 30.0}]
    ranks = {"random init": np.array([5, 9, 2]), "trained": np.array([1, 1, 2])}
    fig = plots.live_pretraining(history, {"val_knn_balanced": 10.0}, [1], "val_knn_balanced", ranks, "run")
    assert len(fig.axes) == 3
    plt.close(fig)
