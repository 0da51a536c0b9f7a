"""Linear evaluation and fine-tuning: cached == slow path, frozen = eval mode, selection rule, tasks, bad input."""

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from uclser_lib import plots
from uclser_lib.data import FeatureSet, PackedClips, feature_stats, paper_splits
from uclser_lib.downstream import (
    FinetuneConfig,
    LinearEvalConfig,
    LinearProbe,
    class_weights,
    finetune,
    linear_eval,
    run_seeds,
    score_model,
    subsample_per_class,
    task_splits,
)
from uclser_lib.features import DEFAULT_PARAMS
from uclser_lib.models import Encoder, build_encoder
from uclser_lib.train import TrainingDiverged

N_CLASSES = 4


def make_set(n, seed, amp=2.0, label_noise=0.0, clean=False) -> FeatureSet:
    """Clips of 101-259 frames whose class raises a band of 10 bands by ``amp`` (noise std 0.5);
    a share ``label_noise`` of the labels is redrawn uniformly."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for i in range(n):
        c = i % N_CLASSES
        x = rng.normal(-3, 0.5, (int(rng.integers(101, 260)), 96)).astype(np.float32)
        x[:, 10 + 20 * c : 20 + 20 * c] += amp
        clips.append(x)
        labels.append(int(rng.integers(N_CLASSES)) if rng.random() < label_noise else c)
    return FeatureSet(
        PackedClips.from_list(clips, labels),
        [f"{seed}_{i}.wav" for i in range(n)],
        np.full(n, clean),
        np.zeros(n, bool),
        [f"c{c}" for c in range(N_CLASSES)],
        DEFAULT_PARAMS,
    )


class TinyEncoder(Encoder):
    """Conv 3x3 (2 ch) -> BatchNorm -> ReLU -> average pool to (1, 8) -> 16-d embedding: cheap, with BN statistics."""

    def __init__(self, embedding_dim=16, classifier_in=None):
        super().__init__()
        self.embedding_dim = embedding_dim
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
        self.bn = nn.BatchNorm2d(2)
        self.pool = nn.AdaptiveAvgPool2d((1, 8))
        self.fc = nn.Linear(classifier_in or embedding_dim, N_CLASSES)

    def embed(self, x):
        return self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)

    def classifier(self):
        return self.fc


def sets(n_train=24, **kw):
    return make_set(n_train, 0, **kw), make_set(12, 1), make_set(12, 2)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_cached_path_equals_slow_path():
    train, val, test = sets(label_noise=0.3, amp=0.5)
    mean, std = feature_stats(train.clips)
    cfg = LinearEvalConfig(epochs=5, batch_size=5, lr=0.5, milestones=[3], seed=7)
    fast = linear_eval(TinyEncoder(), mean, std, train, val, test, cfg, device="cpu", progress=False)
    slow = linear_eval(TinyEncoder(), mean, std, train, val, test, cfg, device="cpu", progress=False, cached=False)
    torch.testing.assert_close(fast.head.weight, slow.head.weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.head.bias, slow.head.bias, atol=1e-5, rtol=0)
    assert [h["loss"] for h in fast.history] == pytest.approx([h["loss"] for h in slow.history], abs=1e-5)
    assert [h["val_balanced"] for h in fast.history] == [h["val_balanced"] for h in slow.history]
    assert fast.best_epoch == slow.best_epoch
    # another seed draws other patches and batches: the comparison above is not vacuous
    other = linear_eval(
        TinyEncoder(),
        mean,
        std,
        train,
        val,
        test,
        LinearEvalConfig(**{**cfg.to_dict(), "seed": 8}),
        device="cpu",
        progress=False,
    )
    assert not torch.allclose(other.head.weight, fast.head.weight, atol=1e-3)


def test_linear_eval_freezes_the_encoder_in_eval_mode():
    train, val, test = make_set(8, 0), make_set(4, 1), make_set(4, 2)
    mean, std = feature_stats(train.clips)
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", n_classes=20).train()  # as the released code left it (docs/released-code.md)
    before = snapshot(encoder)
    res = linear_eval(
        encoder, mean, std, train, val, test, LinearEvalConfig(epochs=2, batch_size=4), device="cpu", progress=False
    )
    assert not encoder.training and all(not m.training for m in encoder.modules())
    after = encoder.state_dict()
    for k, v in before.items():  # weights and BatchNorm running statistics (and their counters) unchanged
        assert torch.equal(v, after[k]), k
    assert isinstance(res.model, LinearProbe) and res.head.weight.shape == (N_CLASSES, 512)
    res.model.train()  # the probe's train mode trains the head only: the encoder stays frozen = eval
    assert res.model.head.training and not res.model.encoder.training


def test_linear_eval_learns_and_reports_the_restored_best_head():
    train, val, test = sets()
    mean, std = feature_stats(train.clips)
    res = linear_eval(
        TinyEncoder(),
        mean,
        std,
        train,
        val,
        test,
        LinearEvalConfig(epochs=8, batch_size=8, milestones=[5]),
        device="cpu",
        progress=False,
    )
    assert res.val["balanced"] >= 90 and res.test["balanced"] >= 75  # chance: 25
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    assert [h["lr"] for h in res.history] == pytest.approx([0.1] * 5 + [0.01] * 3)
    assert score_model(res.model, val, mean, std)["balanced"] == pytest.approx(res.val["balanced"])
    assert res.val["confusion"].shape == (N_CLASSES, N_CLASSES) and res.val["confusion"].sum() == len(val)
    assert set(res.test) >= {"top1", "balanced", "top3", "per_class", "confusion"}


def test_selection_takes_the_best_val_epoch_and_its_test_metrics():
    # noisy labels, a weak signal and a large lr: validation accuracy goes up and down
    train, val, test = make_set(32, 0, amp=0.3, label_noise=0.5), make_set(16, 1, amp=0.3), make_set(16, 2, amp=0.3)
    mean, std = feature_stats(train.clips)
    cfg = LinearEvalConfig(epochs=12, batch_size=8, lr=1.0, milestones=[100])
    res = linear_eval(TinyEncoder(), mean, std, train, val, test, cfg, device="cpu", progress=False)
    val_curve = [h["val_balanced"] for h in res.history]
    assert res.best_epoch == 1 + int(np.argmax(val_curve))  # the first best epoch
    assert val_curve[-1] < max(val_curve), "setup: the last epoch should not be the best one"
    assert res.val["balanced"] == max(val_curve)
    assert res.test["balanced"] == res.history[res.best_epoch - 1]["test_balanced"]
    # the returned model holds the best epoch's weights, not the last epoch's
    assert score_model(res.model, val, mean, std)["balanced"] == pytest.approx(max(val_curve))
    assert score_model(res.model, test, mean, std)["balanced"] == pytest.approx(res.test["balanced"])
    # scoring the test set once, with the best epoch's weights: the same result; a test point at that epoch only
    sparse = linear_eval(
        TinyEncoder(),
        mean,
        std,
        train,
        val,
        test,
        dataclasses.replace(cfg, test_every_epoch=False),
        device="cpu",
        progress=False,
    )
    assert (sparse.best_epoch, sparse.val["balanced"], sparse.test["balanced"]) == (
        res.best_epoch,
        res.val["balanced"],
        res.test["balanced"],
    )
    assert [h["epoch"] for h in sparse.history if "test_balanced" in h] == [res.best_epoch]
    assert sparse.history[res.best_epoch - 1]["test_balanced"] == pytest.approx(res.test["balanced"])
    fig = plots.downstream_curves({"every epoch": res.history, "selected epoch": sparse.history})
    assert [len(line.get_xdata()) for line in fig.axes[1].lines[1::3]] == [len(val_curve), 1]  # the test lines
    # the legend and title say what is drawn: a test line where scored every epoch, a dot where scored once
    assert [line.get_marker() for line in fig.axes[1].lines[1::3]] == ["None", "o"]
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert labels == [
        "every epoch: val",
        "every epoch: test",
        "selected epoch: val",
        "selected epoch: test at the selected epoch",
    ]
    assert fig.axes[1].get_title() == "val (dashed), test at the selected epoch (dot); o = selected epoch"
    plt.close(fig)
    fig = plots.downstream_curves({"every epoch": res.history}, levels={"probe (val)": 50.0})
    assert fig.axes[1].get_title() == "val (dashed), test (solid); o = selected epoch"
    assert fig.axes[1].lines[-1].get_ydata()[0] == 50.0  # the reference level, labelled
    assert fig.axes[1].get_legend_handles_labels()[1][-1] == "probe (val)"
    plt.close(fig)


def test_finetune_trains_a_copy_end_to_end_and_learns():
    train, val, test = make_set(16, 0), make_set(8, 1), make_set(8, 2)
    mean, std = feature_stats(train.clips)
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", n_classes=20)
    before = snapshot(encoder)
    cfg = FinetuneConfig(epochs=4, batch_size=8, milestones=[100], probe_epochs=0)  # from the fresh classifier
    res = finetune(encoder, mean, std, train, val, test, cfg, device="cpu", progress=False)
    for k, v in encoder.state_dict().items():  # the caller's encoder is untouched
        assert torch.equal(v, before[k]), k
    tuned = res.model.state_dict()
    assert not torch.allclose(tuned["conv1.weight"], before["conv1.weight"])  # the encoder itself was trained
    assert not torch.equal(tuned["bn1.running_mean"], before["bn1.running_mean"])  # BN in train mode while training
    assert res.head.weight.shape == (N_CLASSES, 512)  # a fresh classifier for the task's classes
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    assert res.val["balanced"] > 50  # chance: 25
    assert score_model(res.model, val, mean, std)["balanced"] == pytest.approx(res.val["balanced"])


def test_finetune_starts_from_the_linear_probe_of_probe_epochs():
    train, val, test = sets()
    mean, std = feature_stats(train.clips)
    encoder = TinyEncoder()
    kw = dict(epochs=2, batch_size=8, lr=1e-9, milestones=[100])  # fine-tuning barely moves anything at lr 1e-9
    probed = finetune(
        encoder, mean, std, train, val, test, FinetuneConfig(probe_epochs=6, **kw), device="cpu", progress=False
    )
    fresh = finetune(
        encoder, mean, std, train, val, test, FinetuneConfig(probe_epochs=0, **kw), device="cpu", progress=False
    )
    # the classifier fine-tuning starts from is linear evaluation's (lr 0.1, drops at 40 % and 80 %), same seed
    probe = linear_eval(
        encoder,
        mean,
        std,
        train,
        val,
        test,
        LinearEvalConfig(epochs=6, batch_size=8, milestones=[2, 4]),
        device="cpu",
        progress=False,
    )
    torch.testing.assert_close(probed.head.weight, probe.head.weight, atol=1e-6, rtol=0)
    assert len(probed.history) == 2  # the history holds the fine-tuning epochs
    assert probed.history[0]["loss"] < 0.7 * fresh.history[0]["loss"]
    assert probed.val["balanced"] > fresh.val["balanced"]
    with pytest.raises(ValueError, match="probe_epochs must be >= 0"):
        FinetuneConfig(probe_epochs=-1)


def test_finetune_bn_frozen_keeps_the_running_statistics_and_trains_the_affine_weights():
    train, val, test = sets()
    mean, std = feature_stats(train.clips)
    encoder = TinyEncoder()
    with torch.no_grad():  # stored statistics unlike any batch's, so that train mode would move them
        encoder.bn.running_mean.fill_(3.0)
        encoder.bn.running_var.fill_(5.0)
    before = snapshot(encoder)
    stats = ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
    kw = dict(epochs=2, batch_size=8, milestones=[100], probe_epochs=2)
    runs = {
        bn: finetune(encoder, mean, std, train, val, test, FinetuneConfig(bn=bn, **kw), device="cpu", progress=False)
        for bn in ("frozen", "train")
    }
    frozen, trained = (runs[bn].model.state_dict() for bn in ("frozen", "train"))
    for k in stats:  # frozen: the running statistics (and the batch count) end as they started
        assert torch.equal(frozen[k], before[k]), k
    assert not torch.equal(frozen["bn.weight"], before["bn.weight"])  # the affine weights still train
    assert not torch.equal(frozen["conv.weight"], before["conv.weight"])
    assert not runs["frozen"].model.training and not runs["frozen"].model.bn.training  # returned in eval mode
    for k in ("bn.running_mean", "bn.running_var"):  # train (the default): updated from the batches
        assert not torch.allclose(trained[k], before[k]), k
    # the best epoch's state: 3 batches of 8 clips per epoch counted up to it
    assert int(trained["bn.num_batches_tracked"]) == 3 * runs["train"].best_epoch
    assert FinetuneConfig().bn == "train"
    with pytest.raises(ValueError, match=r"bn: expected 'train' or 'frozen', got 'eval'"):
        FinetuneConfig(bn="eval")


def test_bad_input_is_refused_clearly():
    train, val, test = sets()
    mean, std = feature_stats(train.clips)
    kw = dict(cfg=LinearEvalConfig(epochs=1), device="cpu", progress=False)
    with pytest.raises(ValueError, match="head takes 32-d inputs but .* gives 16-d"):
        LinearProbe(TinyEncoder(), nn.Linear(32, N_CLASSES))
    with pytest.raises(ValueError, match="embed gives 16-d embeddings but encoder.embedding_dim is 20"):
        linear_eval(TinyEncoder(embedding_dim=20), mean, std, train, val, test, **kw)
    with pytest.raises(ValueError, match="classifier takes 9-d inputs but its embedding_dim is 16"):
        finetune(
            TinyEncoder(classifier_in=9),
            mean,
            std,
            train,
            val,
            test,
            FinetuneConfig(epochs=1),
            device="cpu",
            progress=False,
        )
    renamed = val.subset(np.arange(len(val)))
    renamed.classes = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="val split has classes .*'a'.* share one class list"):
        linear_eval(TinyEncoder(), mean, std, train, renamed, test, **kw)
    with pytest.raises(ValueError, match=r"\['c3'\] have no val clip"):
        linear_eval(TinyEncoder(), mean, std, train, val.subset(val.labels != 3), test, **kw)
    with pytest.raises(ValueError, match=r"\['c0'\] have no train clip"):
        finetune(
            TinyEncoder(),
            mean,
            std,
            train.subset(train.labels != 0),
            val,
            test,
            FinetuneConfig(epochs=1),
            device="cpu",
            progress=False,
        )
    unlabelled = make_set(12, 2)
    unlabelled.clips.labels[5] = -1
    with pytest.raises(ValueError, match="test split: clip '2_5.wav' has label -1"):
        linear_eval(TinyEncoder(), mean, std, train, val, unlabelled, **kw)
    with pytest.raises(ValueError, match="std > 0"):
        linear_eval(TinyEncoder(), mean, 0.0, train, val, test, **kw)
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        FinetuneConfig(batch_size=0)


def test_tasks_and_empty_splits():
    train = make_set(40, 0, clean=False)
    train.clean[:16] = True  # 4 clean clips per class
    test = make_set(8, 3, clean=True)
    splits = paper_splits(train, test, seed=1)
    tr, va, te = task_splits(splits, "noisy")
    assert (len(tr), len(va), te) == (24, 16, test) and not tr.clean.any() and va.clean.all()
    tr, va, te = task_splits(splits, "clean")
    assert tr.clean.all() and va.clean.all() and not set(tr.fnames) & set(va.fnames)
    assert sorted(va.labels.tolist()) == [0, 1, 2, 3] and len(tr) == 12
    with pytest.raises(ValueError, match="unknown downstream task 'fewshot'"):
        task_splits(splits, "fewshot")
    with pytest.raises(ValueError, match=r"needs split\(s\) \['clean_val'\]"):
        task_splits({k: v for k, v in splits.items() if k != "clean_val"}, "clean")
    with pytest.raises(ValueError, match="empty after filtering"):  # no clean clip: no clean task
        paper_splits(make_set(8, 0, clean=False), test)


def test_subsample_per_class_proportions_nesting_and_determinism():
    fs = make_set(80, 0)  # 20 clips per class
    for fraction, per_class in ((0.01, 1), (0.05, 1), (0.1, 2), (0.25, 5), (0.5, 10), (1.0, 20)):
        sub = subsample_per_class(fs, fraction, seed=3)
        assert np.bincount(sub.labels, minlength=N_CLASSES).tolist() == [per_class] * N_CLASSES
        index = [fs.fnames.index(f) for f in sub.fnames]
        assert index == sorted(index) and np.array_equal(fs.labels[index], sub.labels)  # original order and labels
        assert torch.equal(sub.clips.clip(0), fs.clips.clip(index[0]))
    a, b = subsample_per_class(fs, 0.25, seed=3), subsample_per_class(fs, 0.25, seed=3)
    assert a.fnames == b.fnames
    assert subsample_per_class(fs, 0.25, seed=4).fnames != a.fnames
    assert set(subsample_per_class(fs, 0.1, seed=3).fnames) < set(a.fnames)  # nested across fractions
    for bad in (0, -0.1, 5):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
            subsample_per_class(fs, bad, seed=3)


def test_run_seeds():
    mean, std = run_seeds(lambda s: float(s * 2), [1, 2, 3, 6])
    assert mean == pytest.approx(6.0) and std == pytest.approx(np.std([2, 4, 6, 12], ddof=1))
    assert run_seeds(lambda s: 5.0, [0]) == (5.0, 0.0)
    with pytest.raises(ValueError, match="at least one seed"):
        run_seeds(lambda s: 1.0, [])
    with pytest.raises(ValueError, match="non-finite"):
        run_seeds(lambda s: float("nan"), [0, 1])


def test_lr_milestones_drop_at_40_and_80_percent_and_never_at_epoch_0():
    from uclser_lib.downstream import lr_milestones

    assert lr_milestones(100) == [40, 80]
    assert lr_milestones(10) == [4, 8]
    assert lr_milestones(2) == [1, 1] and lr_milestones(1) == [1, 1]  # int(e * 0.4) would be 0
    with pytest.raises(ValueError, match="epochs"):
        lr_milestones(0)


def test_pretraining_drops_give_the_papers_and_the_shipped_schedules():
    from uclser_lib.downstream import lr_milestones
    from uclser_lib.train import PRETRAIN_DROPS, PretrainConfig

    assert lr_milestones(500, PRETRAIN_DROPS) == PretrainConfig().milestones == [325, 425]  # the paper's
    assert lr_milestones(200, PRETRAIN_DROPS) == [130, 170] and lr_milestones(100, PRETRAIN_DROPS) == [65, 85]


def test_balanced_class_weights_give_each_present_class_the_same_total_weight():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 3])  # class 2 absent
    w = class_weights(labels, 4)
    torch.testing.assert_close(w, torch.tensor([9 / (3 * 6), 9 / (3 * 2), 0.0, 9 / (3 * 1)]))
    per_class = torch.bincount(labels, weights=w[labels], minlength=4)
    torch.testing.assert_close(per_class, torch.tensor([3.0, 3.0, 0.0, 3.0]))  # n / C each; they sum to n
    with pytest.raises(ValueError, match=r"expected labels in \[0, 2\)"):
        class_weights(labels, 2)
    with pytest.raises(ValueError, match="class_weight must be None or 'balanced', got 'inverse'"):
        LinearEvalConfig(class_weight="inverse")


def test_balanced_weights_reach_the_loss_and_change_nothing_for_equal_classes():
    """Equal class sizes: every weight is 1, so the balanced probe is the plain one, epoch by epoch. Class 0 made rare
    (2 clips against 6 of each other class): the weighted loss differs from the first epoch on."""
    equal, val, test = sets(n_train=24)
    rare = equal.subset(np.array([i for i, y in enumerate(equal.labels) if y != 0 or i < 8]))
    assert np.bincount(rare.labels).tolist() == [2, 6, 6, 6]
    for train, same in ((equal, True), (rare, False)):
        mean, std = feature_stats(train.clips)
        runs = {
            w: linear_eval(
                TinyEncoder(),
                mean,
                std,
                train,
                val,
                test,
                LinearEvalConfig(epochs=3, batch_size=5, lr=0.5, milestones=[2], seed=7, class_weight=w),
                device="cpu",
                progress=False,
            )
            for w in (None, "balanced")
        }
        losses = {w: [h["loss"] for h in r.history] for w, r in runs.items()}
        assert runs["balanced"].config["class_weight"] == "balanced"
        if same:
            assert losses["balanced"] == pytest.approx(losses[None], rel=1e-6)
        else:
            assert abs(losses["balanced"][0] - losses[None][0]) > 1e-3, losses


class EvalInfEncoder(TinyEncoder):
    """TinyEncoder whose eval-mode embedding is infinite: a finite training loss but a diverged evaluation (what
    stored BatchNorm statistics that no longer fit the weights can give)."""

    def embed(self, x):
        h = super().embed(x)
        return h if self.training else h * float("inf")


def test_non_finite_logits_stop_fine_tuning_as_diverged_not_as_bad_probabilities():
    train, val, test = sets()
    mean, std = feature_stats(train.clips)
    with pytest.raises(TrainingDiverged, match=r"logits are not finite on (\d+) of \1 patches"):
        score_model(EvalInfEncoder().eval(), val, mean, std)
    cfg = FinetuneConfig(epochs=2, batch_size=8, milestones=[100], probe_epochs=0)
    with pytest.raises(TrainingDiverged, match=r"^fine-tune, epoch 1, validation: the model's logits are not finite"):
        finetune(EvalInfEncoder(), mean, std, train, val, test, cfg, device="cpu", progress=False)
