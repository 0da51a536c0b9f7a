"""The figure functions of the notebooks: 01-03 (length histograms, noise bars, change keys, live pretraining), 04-06
(embedding map with class names and confusable pairs apart, label curves)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from uclser_lib import plots
from uclser_lib.coursedata import CONFUSABLE_PAIRS
from uclser_lib.data import CLASSES


def _distance(a, b):
    return float(np.linalg.norm(np.array(a[:3]) - np.array(b[:3])))


def test_class_colours_distinct_and_pairs_far_apart():
    colours = plots.class_colours(CLASSES, CONFUSABLE_PAIRS)
    assert set(colours) == set(CLASSES)
    assert len(set(colours.values())) == len(CLASSES)  # 20 classes, 20 colours
    naive = plots.class_colours(CLASSES)  # no pair information
    worst = min(_distance(colours[a], colours[b]) for a, b in CONFUSABLE_PAIRS)
    worst_naive = min(_distance(naive[a], naive[b]) for a, b in CONFUSABLE_PAIRS)
    assert worst > 0.3 and worst >= worst_naive


def test_embedding_map_names_at_class_medians():
    rng = np.random.default_rng(0)
    classes = ["Rain", "Fire", "Wind"]
    labels = np.repeat(np.arange(3), 10)
    xy = rng.normal(size=(30, 2)) + 5 * labels[:, None]
    fig, ax = plt.subplots()
    plots.embedding_map(ax, xy, labels, classes, legend=False, pairs=CONFUSABLE_PAIRS)
    texts = {t.get_text(): t.get_position() for t in ax.texts}
    assert set(texts) == set(classes)
    for c, name in enumerate(classes):
        assert np.allclose(texts[name], np.median(xy[labels == c], axis=0))
    assert ax.get_legend() is None
    plt.close(fig)


def test_label_efficiency_curve_clips_per_class():
    summary = [
        dict(init=init, fraction=f, mean=m, std=1.0, n=3)
        for init, base in (("pretrained", 40.0), ("random", 20.0))
        for f, m in ((0.01, base), (0.1, base), (1.0, base + 10))
    ]
    n_train = {0.01: 20, 0.1: 20, 1.0: 100}  # 1 % and 10 % both give one clip per class
    fig, ax = plt.subplots()
    plots.label_efficiency_curve(ax, summary, n_train, chance=5.0, n_classes=20)
    xs = {tuple(line.get_xdata()) for line in ax.lines if len(line.get_xdata()) > 2}
    assert xs == {(1.0, 1.0, 5.0)}
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["1\n(1 %, 10 %)", "5\n(100 %)"]
    assert "per class" in ax.get_xlabel()
    plt.close(fig)


@pytest.mark.parametrize("n_classes", [None, 20])
def test_label_efficiency_curve_without_per_class(n_classes):
    summary = [dict(init="pretrained", fraction=f, mean=50.0, std=1.0, n=2) for f in (0.1, 1.0)]
    fig, ax = plt.subplots()
    plots.label_efficiency_curve(ax, summary, None, n_classes=n_classes)
    assert "fraction" in ax.get_xlabel()
    plt.close(fig)


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
