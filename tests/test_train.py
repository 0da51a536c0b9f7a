"""Pre-training loop: it learns, checkpoints every epoch, resumes to the same result, stops on bad input."""

import numpy as np
import pytest
import torch

from uclser_lib.checkpoints import load_checkpoint
from uclser_lib.data import FeatureSet, PackedClips
from uclser_lib.features import DEFAULT_PARAMS
from uclser_lib.train import PretrainConfig, TrainingDiverged, initial_encoder, pretrain


def synthetic_set(n=12, n_classes=4, seed=0) -> FeatureSet:
    """Clips whose class sets a band pattern, so a contrastive encoder can pick it up."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for i in range(n):
        c = i % n_classes
        x = rng.normal(-3, 0.5, (int(rng.integers(101, 260)), 96)).astype(np.float32)
        x[:, 10 + 20 * c : 20 + 20 * c] += 2.0
        clips.append(x)
        labels.append(c)
    packed = PackedClips.from_list(clips, labels)
    return FeatureSet(
        packed,
        [f"{i}.wav" for i in range(n)],
        np.zeros(n, bool),
        np.zeros(n, bool),
        [f"c{c}" for c in range(n_classes)],
        DEFAULT_PARAMS,
    )


def tiny_config(**kw) -> PretrainConfig:
    base = dict(
        arch="resnet18", epochs=3, batch_size=6, lr=0.03, milestones=[2], knn_every=1, knn_k=5, proj_dim=32, seed=1
    )
    base.update(kw)
    return PretrainConfig(**base)


@pytest.mark.slow  # pre-training runs
def test_resume_continues_to_the_same_result(tmp_path):
    train, val = synthetic_set(), synthetic_set(8, seed=1)
    full_model, full_hist = pretrain(
        tiny_config(), train, {"val": val}, run_dir=tmp_path / "full", progress=False, device="cpu"
    )
    # a run cut after 2 epochs, then resumed (extended) to 3
    pretrain(tiny_config(epochs=2), train, {"val": val}, run_dir=tmp_path / "cut", progress=False, device="cpu")
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    resumed_model, resumed_hist = pretrain(
        tiny_config(), train, {"val": val}, run_dir=tmp_path / "cut", resume=True, progress=False, device="cpu"
    )
    assert [h["epoch"] for h in resumed_hist] == [1, 2, 3]
    assert resumed_hist[-1]["loss"] == pytest.approx(full_hist[-1]["loss"], abs=1e-6)
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert (tmp_path / "full" / "metrics.csv").read_text().splitlines()[0].startswith("epoch,loss,lr")
    assert "val_knn_balanced" in full_hist[-1] and full_hist[-1]["lr"] == pytest.approx(0.003)


def test_loss_goes_down():
    train = synthetic_set(16)
    _, hist = pretrain(
        tiny_config(epochs=4, batch_size=8, milestones=[100], knn_every=0), train, progress=False, device="cpu"
    )
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_pretraining_starts_from_the_initial_encoder_of_its_config():
    """initial_encoder is the random-init baseline paired with a run: the weights pretrain starts from (at lr 1e-12
    one epoch moves them far less than float32 resolves; another seed's weights differ)."""
    train = synthetic_set()
    cfg = tiny_config(epochs=1, lr=1e-12, knn_every=0)
    model, _ = pretrain(cfg, train, progress=False, device="cpu")
    start = dict(initial_encoder(cfg, len(train.classes)).named_parameters())
    other = dict(initial_encoder(tiny_config(seed=2), len(train.classes)).named_parameters())
    for name, p in model.encoder.named_parameters():
        torch.testing.assert_close(p.detach(), start[name].detach())
    assert any(not torch.equal(start[n], other[n]) for n in start)


def test_resume_with_another_config_is_refused(tmp_path):
    train = synthetic_set()
    pretrain(tiny_config(epochs=1), train, run_dir=tmp_path, progress=False, device="cpu")
    with pytest.raises(ValueError, match="another config.*lr"):
        pretrain(tiny_config(epochs=2, lr=0.1), train, run_dir=tmp_path, resume=True, progress=False, device="cpu")


def test_bad_input(tmp_path):
    train = synthetic_set(6)
    with pytest.raises(ValueError, match="larger than the training set"):
        pretrain(tiny_config(batch_size=8), train, progress=False, device="cpu")
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 2"):
        tiny_config(batch_size=1)
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        pretrain(tiny_config(), synthetic_set(), run_dir=tmp_path, resume=True, progress=False, device="cpu")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import uclser_lib.train as T

    train = synthetic_set()
    bad = train.subset(np.arange(len(train)))
    bad.clips.data[5, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):  # bad features are caught before training
        pretrain(tiny_config(epochs=1), bad, progress=False, device="cpu")
    pretrain(tiny_config(epochs=1), train, run_dir=tmp_path, progress=False, device="cpu")
    monkeypatch.setattr(T, "nt_xent", lambda z1, z2, t, distributed=False: (z1.sum() + z2.sum()) * float("nan"))
    with pytest.raises(TrainingDiverged, match="loss is nan.*last good checkpoint.*epoch 1"):
        pretrain(tiny_config(epochs=2), train, run_dir=tmp_path, resume=True, progress=False, device="cpu")
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def _ddp_rank(rank, port, run_dir, out_dir):
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    model, hist = pretrain(
        tiny_config(epochs=2, batch_size=8, knn_every=0),
        synthetic_set(16),
        run_dir=run_dir,
        progress=False,
        device="cpu",
    )
    torch.save({"model": model.state_dict(), "history": hist}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()
    os._exit(0)  # gloo in torch 2.11 sometimes aborts at interpreter exit after the work is done


@pytest.mark.slow  # two processes (DDP on gloo)
def test_ddp_two_cpu_processes(tmp_path):
    """Under torchrun-like env (2 processes, gloo): ranks stay in sync, rank 0 alone writes the checkpoint."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_rank, args=(port, str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k, v in r0["model"].items():
        if "running" not in k and "num_batches" not in k:  # BatchNorm statistics are per rank
            torch.testing.assert_close(v, r1["model"][k], msg=k)
    assert [h["loss"] for h in r0["history"]] == [h["loss"] for h in r1["history"]]  # all-reduced
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2


def test_embed_eval_patches_is_the_same_in_chunks():
    from uclser_lib.embed import embed_eval_patches

    fs = synthetic_set(9)
    fn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(101 * 96, 4))
    whole, idx = embed_eval_patches(fn, fs.clips, -3.0, 0.5, "cpu", clips_per_chunk=100)
    chunked, idx2 = embed_eval_patches(fn, fs.clips, -3.0, 0.5, "cpu", clips_per_chunk=2, batch_size=3)
    torch.testing.assert_close(whole, chunked)
    assert torch.equal(idx, idx2) and idx.tolist() == sorted(idx.tolist()) and int(idx.max()) == 8


def test_on_step_reports_every_step_and_changes_nothing():
    """``on_step`` gets (epoch, step, loss) after every optimiser step; the epoch's loss is their mean, and the run
    is the same as without it (notebook 03 compares its written-out step with these losses)."""
    train = synthetic_set(n=12)
    cfg = tiny_config(epochs=2, knn_every=0, batch_size=4)
    calls = []
    model, history = pretrain(cfg, train, progress=False, device="cpu", on_step=lambda *a: calls.append(a))
    assert [(e, i) for e, i, _ in calls] == [(e, i) for e in range(2) for i in range(3)]
    for epoch, row in enumerate(history):
        mean = np.mean([loss for e, _, loss in calls if e == epoch])
        assert abs(row["loss"] - mean) < 1e-5 * abs(mean), (row, mean)
    plain, plain_history = pretrain(cfg, train, progress=False, device="cpu")
    assert [r["loss"] for r in plain_history] == [r["loss"] for r in history]
    for a, b in zip(model.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)


def test_epoch_seeds_are_pretrains_draws():
    """The seeds depend on (seed, epoch, rank) only, and differ between epochs, ranks and seeds."""
    from uclser_lib.train import epoch_seeds

    assert epoch_seeds(271828, 0) == epoch_seeds(271828, 0, rank=0)
    seen = {epoch_seeds(s, e, r) for s in (1, 2) for e in range(3) for r in range(2)}
    assert len(seen) == 12
    order, views = epoch_seeds(5, 2, rank=1)
    assert epoch_seeds(5, 2, rank=0)[0] == order != views
