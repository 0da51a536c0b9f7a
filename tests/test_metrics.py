"""Multi-label metrics (FSD50K's protocol): macro mAP, d', lwlrap and the clip aggregation, against scikit-learn
and hand-computed values."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from uclser_lib.metrics import (
    average_precision_per_class,
    dprime,
    dprime_per_class,
    lwlrap,
    mean_average_precision,
    multilabel_clip_scores,
    multilabel_metrics,
    roc_auc_per_class,
)

sk = pytest.importorskip("sklearn.metrics")
TOL = dict(rel=1e-12, abs=1e-12)  # float64 sums over at most a few hundred terms


def random_case(seed: int, n: int = 60, c: int = 7, ties: bool = False):
    """Multi-hot labels with every class positive and negative at least once, and scores correlated with them."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(int)
    y[0], y[1] = 1, 0  # every class has a positive and a negative
    s = y * 0.8 + rng.normal(0, 1, (n, c))
    return y, np.round(s, 1) if ties else s


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_map_and_auc_equal_scikit_learn(seed, ties):
    y, s = random_case(seed, ties=ties)
    assert mean_average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s, average="macro"), **TOL)
    np.testing.assert_allclose(average_precision_per_class(y, s), sk.average_precision_score(y, s, average=None))
    np.testing.assert_allclose(roc_auc_per_class(y, s), sk.roc_auc_score(y, s, average=None), rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_dprime_is_hears_formula(seed):
    y, s = random_case(seed)
    expected = np.sqrt(2) * norm.ppf(sk.roc_auc_score(y, s, average=None))
    np.testing.assert_allclose(dprime_per_class(y, s), expected, rtol=1e-12)
    assert dprime(y, s) == pytest.approx(float(expected.mean()), **TOL)


def test_dprime_measures_the_separation_of_two_gaussians():
    """Scores N(0, 1) for negatives and N(1.5, 1) for positives: d' = 1.5 (AUC = Phi(d' / sqrt 2))."""
    rng = np.random.default_rng(0)
    y = (np.arange(40_000) % 2)[:, None]
    s = rng.normal(0, 1, y.shape) + 1.5 * y
    assert dprime(y, s) == pytest.approx(1.5, abs=0.05)  # sampling error of d' at n = 40,000: about 0.01
    assert dprime(y, rng.normal(0, 1, y.shape)) == pytest.approx(0.0, abs=0.05)
    assert dprime(y, y.astype(float)) == math.inf  # perfectly separated: AUC 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_lwlrap_is_label_ranking_ap_weighted_by_labels(seed, ties):
    y, s = random_case(seed, ties=ties)
    y[5] = 0  # a clip without labels plays no part
    weighted = sk.label_ranking_average_precision_score(y, s, sample_weight=y.sum(1))
    assert lwlrap(y, s) == pytest.approx(weighted, **TOL)
    assert lwlrap(y, s, chunk=7) == pytest.approx(weighted, **TOL)  # chunks change nothing
    if not ties:  # and not the unweighted score: the weighting matters on this data
        assert abs(lwlrap(y, s) - sk.label_ranking_average_precision_score(y, s)) > 1e-3


def test_lwlrap_by_hand():
    """Clip 0 ranks its labels 0 and 2 first and third (precisions 1 and 2/3); clip 1 ranks label 2 second (1/2):
    lwlrap = (1 + 2/3 + 1/2) / 3 = 13/18 (the unweighted LRAP would be (5/6 + 1/2) / 2 = 2/3)."""
    y = [[1, 0, 1], [0, 0, 1]]
    s = [[0.9, 0.5, 0.1], [0.2, 0.8, 0.3]]
    assert lwlrap(y, s) == pytest.approx(13 / 18, **TOL)


def test_a_class_without_positives_is_left_out_of_map():
    """sklearn counts such a class as AP 0 (with a warning); here it is NaN and left out of the mean."""
    y, s = random_case(0)
    y[:, 3] = 0
    ap = average_precision_per_class(y, s)
    assert np.isnan(ap[3]) and not np.isnan(np.delete(ap, 3)).any()
    kept = np.delete(np.arange(y.shape[1]), 3)
    assert mean_average_precision(y, s) == pytest.approx(
        sk.average_precision_score(y[:, kept], s[:, kept], average="macro"), **TOL
    )
    assert np.isnan(dprime_per_class(y, s)[3]) and math.isfinite(dprime(y, s))
    y[:, 4] = 1  # no negative: AUC undefined, left out of d' but not of mAP (AP = 1 there)
    assert np.isnan(roc_auc_per_class(y, s)[4]) and average_precision_per_class(y, s)[4] == 1.0


def test_metrics_take_tensors_and_bools():
    y, s = random_case(1)
    out = multilabel_metrics(torch.as_tensor(y, dtype=torch.bool), torch.as_tensor(s, dtype=torch.float32))
    assert out["map"] == pytest.approx(mean_average_precision(y, s.astype(np.float32)), **TOL)
    assert out["lwlrap"] == pytest.approx(lwlrap(y, s.astype(np.float32)), **TOL)
    assert out["per_class_ap"].shape == out["per_class_dprime"].shape == (y.shape[1],)


@pytest.mark.parametrize(
    "y, s, match",
    [
        ([[0, 2], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "multi-hot"),
        ([[0, 0.5], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "multi-hot"),
        ([[0, 1], [1, 0]], [[0.1, 0.2]], "one shape"),
        ([0, 1], [0.1, 0.2], "one shape"),
        ([[0, 1], [1, 0]], [[0.1, np.nan], [0.3, 0.4]], "finite"),
    ],
)
def test_bad_input_is_one_line_error(y, s, match):
    for fn in (mean_average_precision, dprime, lwlrap):
        with pytest.raises(ValueError, match=match) as err:
            fn(y, s)
        assert "\n" not in str(err.value)


def test_no_positive_anywhere_is_an_error():
    y, s = np.zeros((4, 3), int), np.random.default_rng(0).random((4, 3))
    for fn, what in ((mean_average_precision, "positive"), (dprime, "positive and negative"), (lwlrap, "label")):
        with pytest.raises(ValueError, match=what):
            fn(y, s)


def test_clip_scores_are_the_sigmoid_of_the_mean_logit():
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0], [-4.0, 0.0], [1.0, 1.0]])
    clips, scores = multilabel_clip_scores(logits, [7, 3, 7, 7])
    assert clips.tolist() == [3, 7]
    torch.testing.assert_close(scores[0], torch.sigmoid(torch.tensor([0.0, 3.0])))
    torch.testing.assert_close(scores[1], torch.sigmoid(torch.tensor([-1 / 3, 0.0])))
    # not the mean of the patches' sigmoids
    assert not torch.allclose(scores[1], torch.sigmoid(logits[[0, 2, 3]]).mean(0))
    with pytest.raises(ValueError, match="3 entries for 4 patches"):
        multilabel_clip_scores(logits, [0, 1, 2])
    with pytest.raises(ValueError, match="float"):
        multilabel_clip_scores(logits.long(), [0, 1, 2, 3])
