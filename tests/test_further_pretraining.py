"""Further pre-training (``pretrain --init``, issue #33 part 5): the first step starts from the given encoder's
weights, another architecture is a one-line error before any data step, and every kind of spec loads."""

import pytest
import torch
from test_train import synthetic_set
from torch import nn

from uclser_lib import cli, pretrained
from uclser_lib.checkpoints import load_checkpoint, save_checkpoint
from uclser_lib.cli import main
from uclser_lib.models import ProjectionHead, build_encoder
from uclser_lib.pretrained import load_init_encoder
from uclser_lib.train import PretrainConfig, initial_encoder, pretrain


def config(**kw) -> PretrainConfig:
    base = dict(arch="vgglike", epochs=1, batch_size=6, lr=1e-12, knn_every=0, proj_dim=32, seed=1)
    return PretrainConfig(**{**base, **kw})


def an_init(arch="vgglike", n_classes=20) -> nn.Module:
    """An encoder unlike the run's own seeded draw, with BatchNorm statistics of its own."""
    torch.manual_seed(123)
    init = build_encoder(arch, n_classes=n_classes)
    for m in init.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_batches_tracked.fill_(1000)
    return init


def test_the_first_step_starts_from_the_init(tmp_path):
    """At lr 1e-12 one epoch moves no weight float32 resolves: the trained encoder's weights are the init's, its
    BatchNorm counters continue the init's, and the class layer (20 classes there, 4 here) and the projection head
    are the seeded draws of a run without init."""
    train, init = synthetic_set(), an_init()
    cfg = config()
    model, _ = pretrain(cfg, train, run_dir=tmp_path / "run", progress=False, device="cpu", init=init, init_name="x")
    fresh_encoder = initial_encoder(cfg, len(train.classes))  # what a run without init starts from, then its head:
    fresh_head = ProjectionHead(fresh_encoder.embedding_dim, cfg.proj_hidden, cfg.proj_dim)
    fresh, ref = dict(fresh_encoder.named_parameters()), dict(init.named_parameters())
    layer = next(n for n, m in model.encoder.named_modules() if m is model.encoder.classifier())
    for name, p in model.encoder.named_parameters():
        if name.startswith(layer + "."):  # the class layer: the run's own draw
            torch.testing.assert_close(p.detach(), fresh[name].detach())
        else:
            torch.testing.assert_close(p.detach(), ref[name].detach())
    assert any(not torch.equal(ref[n], fresh[n]) for n in ref if not n.startswith(layer + "."))
    n_batches = len(train) // cfg.batch_size
    counters = [int(m.num_batches_tracked) for m in model.encoder.modules() if hasattr(m, "num_batches_tracked")]
    assert counters and set(counters) == {1000 + n_batches}
    for (name, a), b in zip(model.head.named_parameters(), fresh_head.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), msg=name)  # the head starts fresh, as without init
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["init"] == "x"


def test_without_init_the_checkpoint_records_none(tmp_path):
    pretrain(config(), synthetic_set(), run_dir=tmp_path / "run", progress=False, device="cpu")
    assert "init" not in load_checkpoint(tmp_path / "run" / "checkpoint.pt")


def test_another_architecture_is_refused_before_any_data_step(tmp_path):
    train = synthetic_set()
    with pytest.raises(
        ValueError,
        match=r"init 'course-resnet18': a resnet18 encoder, but the config's arch is "
        r"'vgglike'",
    ) as err:
        pretrain(
            config(),
            train,
            run_dir=tmp_path / "run",
            progress=False,
            device="cpu",
            init=an_init("resnet18"),
            init_name="course-resnet18",
        )
    assert "\n" not in str(err.value) and not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow  # three short pre-training runs
def test_resuming_with_another_init_is_refused(tmp_path):
    train, run = synthetic_set(), tmp_path / "run"
    pretrain(config(), train, run_dir=run, progress=False, device="cpu", init=an_init(), init_name="a")
    with pytest.raises(ValueError, match="started from init 'a', not 'b'"):
        pretrain(
            config(epochs=2),
            train,
            run_dir=run,
            resume=True,
            progress=False,
            device="cpu",
            init=an_init(),
            init_name="b",
        )
    _, history = pretrain(config(epochs=2), train, run_dir=run, resume=True, progress=False, device="cpu")
    assert len(history) == 2 and load_checkpoint(run / "checkpoint.pt")["init"] == "a"  # the record is kept


def test_every_kind_of_spec_loads(tmp_path, monkeypatch):
    encoder, arch = load_init_encoder("course-crnn")  # a shipped name
    shipped, _ = pretrained.load_pretrained("course-crnn")
    assert arch == "crnn"
    for a, b in zip(encoder.state_dict().values(), shipped.state_dict().values()):
        torch.testing.assert_close(a, b)
    # a run folder (its checkpoint.pt)
    init = an_init("vgglike", 4)
    state = {
        "epoch": 1,
        "config": config(arch="vgglike").to_dict(),
        "model": {f"encoder.{k}": v for k, v in init.state_dict().items()},
        "history": [{"epoch": 1, "loss": 1.0}],
        "mean": -3.0,
        "std": 0.5,
        "classes": ["a", "b", "c", "d"],
    }
    save_checkpoint(state, tmp_path / "run" / "checkpoint.pt")
    encoder, arch = load_init_encoder(str(tmp_path / "run"))
    assert arch == "vgglike"
    for a, b in zip(encoder.state_dict().values(), init.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="a random init is what pretrain does without --init"):
        load_init_encoder("random:resnet18")
    monkeypatch.setenv("UCLSER_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="not downloaded yet.*download released-encoders"):
        load_init_encoder("released:crnn")


def test_cli_refuses_a_mismatched_init_before_the_data(monkeypatch, tmp_path, capsys):
    def no_data(*args, **kwargs):
        raise AssertionError("data prepared")

    monkeypatch.setattr(cli, "_dataset", no_data)
    argv = ["pretrain", "--data.preset", "tiny", "--run_dir", str(tmp_path / "run"), "--init", "course-vgglike"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a vgglike encoder, but config.arch is 'resnet18'; add --arch vgglike" in err
    assert main([*argv[:-1], "no-such-encoder"]) == 2
    assert "--init: encoder 'no-such-encoder'" in capsys.readouterr().err
    monkeypatch.setenv("UCLSER_CACHE", str(tmp_path / "empty-cache"))
    assert main([*argv[:-1], "released:vgglike", "--arch", "vgglike"]) == 2
    assert "not downloaded yet" in capsys.readouterr().err


@pytest.mark.slow  # a pre-training run of the command line on the tiny course data
def test_cli_pretrains_from_an_exported_encoder_and_records_it(tmp_path, monkeypatch):
    shipped_file = pretrained.PRETRAINED_DIR / "course-vgglike.pt"  # an exported .pt with its manifest beside it
    shipped, _ = pretrained.load_pretrained("course-vgglike")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "pretrained")  # where --export writes
    run = tmp_path / "run"
    argv = [
        "pretrain",
        "--data.preset",
        "tiny",
        "--run_dir",
        str(run),
        "--epochs",
        "1",
        "--batch_size",
        "16",
        "--lr",
        "1e-12",
        "--knn_every",
        "0",
        "--arch",
        "vgglike",
        "--init",
        str(shipped_file),
        "--device",
        "cpu",
        "--export",
        "further",
    ]
    assert main(argv) == 0
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["init"] == str(shipped_file)
    assert pretrained.read_manifest(tmp_path / "pretrained")["further"]["init"] == str(shipped_file)
    for name, p in shipped.named_parameters():
        if not name.startswith("dense_out."):  # the class layer (VGG-like)
            torch.testing.assert_close(ckpt["model"][f"encoder.{name}"], p.detach())


def test_a_released_encoder_loads_when_downloaded():
    """The authors' encoders, where the model zoo stands in for the download (tests/conftest.py sets UCLSER_CACHE)."""
    from uclser_lib.download import RELEASED_FILES, cache_dir
    from uclser_lib.released import load_released_encoder

    path = cache_dir() / RELEASED_FILES["vgglike"]
    if not path.is_file():
        pytest.skip("the released encoders are not downloaded (no model zoo beside the checkout)")
    encoder, arch = load_init_encoder("released:vgglike")
    assert arch == "vgglike"
    for a, b in zip(encoder.state_dict().values(), load_released_encoder("vgglike", path).state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="a vgglike encoder, but the config's arch is 'crnn'"):
        pretrain(config(arch="crnn"), synthetic_set(), progress=False, device="cpu", init=encoder)
