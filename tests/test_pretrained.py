"""``pretrained.resolve_encoder``: the shipped encoder, or the user's own run or export, labelled as theirs (#22)."""

import pytest
import torch
from test_train import synthetic_set, tiny_config

from uclser_lib import pretrained
from uclser_lib.runtime import encoder_choice, sha256_of
from uclser_lib.train import pretrain

X = torch.linspace(-4.0, 1.0, 2 * 101 * 96).reshape(2, 1, 101, 96)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch run in ``<tmp>/my-run`` (its checkpoint.pt), not exported yet."""
    folder = tmp_path_factory.mktemp("runs") / "my-run"
    pretrain(tiny_config(arch="vgglike", epochs=1), synthetic_set(), run_dir=folder, progress=False, device="cpu")
    return folder


def _embed(encoder, info):
    with torch.no_grad():
        return encoder.embed((X - info.mean) / info.std)


def test_no_spec_is_the_default_or_uclser_encoder(monkeypatch):
    for unset in (None, ""):
        if unset is None:
            monkeypatch.delenv("UCLSER_ENCODER", raising=False)
        else:
            monkeypatch.setenv("UCLSER_ENCODER", unset)
        assert encoder_choice() is None
        encoder, info = pretrained.resolve_encoder(None, "course-vgglike")
        assert (info.name, info.label, info.yours, info.arch) == ("course-vgglike", "course-vgglike", False, "vgglike")
        entry = pretrained.read_manifest()["course-vgglike"]
        assert info.sha256 == entry["sha256"] == sha256_of(info.path) and info.epochs == entry["epochs"]
        assert info.dataset == entry["dataset"] and info.std > 0 and not encoder.training
    monkeypatch.setenv("UCLSER_ENCODER", "course-crnn")
    assert encoder_choice() == "course-crnn"
    assert pretrained.resolve_encoder(None, "course-vgglike")[1].arch == "crnn"
    # an explicit spec wins over the environment
    assert pretrained.resolve_encoder("course-vgglike", "course-crnn")[1].name == "course-vgglike"


@pytest.mark.slow  # a pre-training run (about 5 s on a shared CPU)
def test_a_run_folder_is_yours_and_its_export_carries_the_same_encoder(run, monkeypatch):
    monkeypatch.setenv("UCLSER_ENCODER", str(run))
    encoder, info = pretrained.resolve_encoder(None, "course-resnet18")
    ckpt = run / "checkpoint.pt"
    assert (info.label, info.yours, info.arch, info.epochs) == ("yours: my-run", True, "vgglike", 1)
    assert info.path == ckpt and info.sha256 == sha256_of(ckpt) and info.dataset is None  # nothing records it yet
    # the checkpoint's own path gives the same encoder and label; load_encoder agrees on the normalisation
    same, same_info = pretrained.resolve_encoder(str(ckpt), "course-resnet18")
    assert same_info == info and torch.equal(_embed(same, same_info), _embed(encoder, info))
    assert pretrained.load_encoder(str(run))[1:] == (info.mean, info.std)

    entry = pretrained.export_encoder(ckpt, run.name, dataset="course_tiny", folder=run)  # as notebook 03 does
    exported, ex_info = pretrained.resolve_encoder(str(run / entry["file"]), "course-resnet18")
    assert (ex_info.label, ex_info.yours, ex_info.dataset, ex_info.epochs) == ("yours: my-run", True, "course_tiny", 1)
    assert ex_info.sha256 == entry["sha256"] and (ex_info.mean, ex_info.std) == (info.mean, info.std)
    ref = _embed(encoder, info)  # fp32 weights; the export stores fp16 (relative error ~ 2**-11 per weight)
    assert torch.allclose(_embed(exported, ex_info), ref, rtol=0.02, atol=0.02 * float(ref.abs().max()))
    # the run folder now finds its dataset in the export beside it
    assert pretrained.resolve_encoder(str(run), "course-resnet18")[1].dataset == "course_tiny"


@pytest.mark.slow  # a pre-training run (about 5 s on a shared CPU)
def test_a_shipped_name_exported_elsewhere_is_still_yours(run, tmp_path):
    pretrained.export_encoder(run / "checkpoint.pt", "course-vgglike", dataset="d", folder=tmp_path)
    info = pretrained.resolve_encoder(str(tmp_path / "course-vgglike.pt"), "course-crnn")[1]
    assert info.yours and info.label == "yours: course-vgglike"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", r"encoder 'nope': no shipped encoder of that name \(available: \['course-crnn'"),
        ("runs/missing", r"encoder 'runs/missing': no such file or folder; expected a shipped encoder name"),
        ("missing.pt", r"encoder 'missing.pt': no such file or folder"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_spec(spec, message):
    with pytest.raises(FileNotFoundError, match=message) as err:
        pretrained.resolve_encoder(spec, "course-resnet18")
    assert "\n" not in str(err.value)


def test_a_folder_without_a_checkpoint_and_a_blank_spec_are_refused(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=rf"encoder '{tmp_path}': a folder without a checkpoint.pt; expected"):
        pretrained.resolve_encoder(str(tmp_path), "course-resnet18")
    with pytest.raises(ValueError, match=r"encoder ' ': expected a shipped name \(course-crnn"):
        pretrained.resolve_encoder(" ", "course-resnet18")
    monkeypatch.delenv("UCLSER_ENCODER", raising=False)
    with pytest.raises(ValueError, match="encoder '': expected"):
        pretrained.resolve_encoder(None, "")


@pytest.mark.parametrize("name, content", [("model.bin", None), ("weights.pt", None), ("notes.txt", b"not a model\n")])
def test_an_existing_file_that_is_no_checkpoint_is_named_as_such(tmp_path, name, content):
    """Issue 34, row 11: an existing non-.pt file was 'no such file'; a random file passed on torch's advice to
    retry with weights_only=False (which would unpickle anything: never to be suggested)."""
    from uclser_lib import hear

    path = tmp_path / name
    path.write_bytes(content or bytes(range(256)) * 12)
    for load in (hear.load_model, lambda s: pretrained.resolve_encoder(s, "course-resnet18")):
        with pytest.raises(ValueError) as err, pytest.warns(UserWarning, match="integrity cannot be checked"):
            load(str(path))
        message = str(err.value)
        assert message.startswith(f"{path}: not a readable checkpoint") and "\n" not in message
        assert "no such file" not in message and "weights_only" not in message and "False" not in message


def test_a_checkpoint_short_of_its_epochs_loads_with_a_warning(tmp_path):
    """Issue 34, row 11 (fast): a checkpoint whose epoch is below its config's epochs warns; a finished one not."""
    from uclser_lib.checkpoints import save_checkpoint
    from uclser_lib.models import build_encoder

    model = {f"encoder.{k}": v for k, v in build_encoder("vgglike", n_classes=2).state_dict().items()}
    state = dict(config=tiny_config(arch="vgglike", epochs=3).to_dict(), model=model, epoch=1, classes=["a", "b"])
    save_checkpoint(dict(state, mean=-3.0, std=1.0, history=[]), tmp_path / "r" / "checkpoint.pt")
    with pytest.warns(UserWarning, match=r"/r/checkpoint.pt: an unfinished run: 1 of its 3 epochs done; continue"):
        assert pretrained.resolve_encoder(str(tmp_path / "r"), "course-resnet18")[1].epochs == 1
    save_checkpoint(dict(state, epoch=3, mean=-3.0, std=1.0, history=[]), tmp_path / "r" / "checkpoint.pt")
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        pretrained.resolve_encoder(str(tmp_path / "r"), "course-resnet18")


@pytest.mark.slow  # a pre-training run, stopped in its second epoch
def test_an_unfinished_run_loads_with_a_warning(tmp_path):
    """Issue 34, row 11: a run killed after 1 of 3 epochs loaded as if it were finished."""

    def kill(epoch, step, loss):
        if epoch == 1:
            raise KeyboardInterrupt  # as a kill between two epochs' checkpoints leaves the run

    train = synthetic_set(6)
    with pytest.raises(KeyboardInterrupt):
        pretrain(
            tiny_config(arch="vgglike", epochs=3, knn_every=0),
            train,
            run_dir=tmp_path / "r",
            on_step=kill,
            progress=False,
            device="cpu",
        )
    with pytest.warns(UserWarning, match=r"/r/checkpoint.pt: an unfinished run: 1 of its 3 epochs done"):
        encoder, info = pretrained.resolve_encoder(str(tmp_path / "r"), "course-resnet18")
    assert info.epochs == 1
