import shutil

import numpy as np
import pytest
import torch

from uclser_lib.models import (
    ContrastiveModel,
    ProjectionHead,
    build_encoder,
)
from uclser_lib.released import load_released_encoder
from uclser_lib.runtime import sha256_of

ZOO = {"vgglike": ("VGG", 512), "crnn": ("CRNN", 64)}


def _patches(n=2, seed=0):
    return torch.randn(n, 1, 101, 96, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["vgglike", "crnn"])
def test_released_encoders_match_reference(arch, reference, model_zoo_dir):
    name, dim = ZOO[arch]
    ref = reference("model_zoo_outputs")
    model = load_released_encoder(arch, model_zoo_dir / f"{name}_best.pth")
    assert not model.training and model.embedding_dim == dim
    x = torch.from_numpy(ref["input"])
    with torch.no_grad():
        emb, logits = model.embed(x), model(x)
    assert emb.shape == (4, dim) and logits.shape == (4, 20)
    np.testing.assert_allclose(emb.numpy(), ref[f"{name}_embedding"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits.numpy(), ref[f"{name}_logits"], atol=1e-4, rtol=0)


def test_resnet18_shapes_and_torchvision_names():
    model = build_encoder("resnet18", n_classes=7).eval()
    x = _patches()
    with torch.no_grad():
        assert model.embed(x).shape == (2, 512) and model(x).shape == (2, 7)
    assert model.embedding_dim == 512
    sd = model.state_dict()
    # torchvision resnet18: 122 entries (62 params + 60 BN buffers); 11,689,512 parameters with a 3-channel stem
    # and 1000 classes, i.e. 11,689,512 - 64*2*49 (stem) - 993*513 (fc) for 1 channel and 7 classes
    assert len(sd) == 122
    assert sum(p.numel() for p in model.parameters()) == 11_689_512 - 64 * 2 * 49 - 993 * 513
    expected = {
        "conv1.weight": (64, 1, 7, 7),
        "bn1.running_var": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.1.bn2.num_batches_tracked": (),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_mean": (128,),
        "layer3.0.downsample.0.weight": (256, 128, 1, 1),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "layer4.0.downsample.1.weight": (512,),
        "fc.weight": (7, 512),
        "fc.bias": (7,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("layer1.0.downsample") for k in sd)  # no projection shortcut where shapes agree


def test_build_encoder_unknown_arch():
    with pytest.raises(ValueError, match="resnet50"):
        build_encoder("resnet50")


@pytest.mark.parametrize("arch", ["resnet18", "vgglike", "crnn"])
def test_channels_last_gives_same_output(arch):
    torch.manual_seed(0)
    model = build_encoder(arch).eval()
    x = _patches()
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_projection_head_and_contrastive_model():
    torch.manual_seed(0)
    encoder = build_encoder("crnn").eval()
    head = ProjectionHead(encoder.embedding_dim).eval()
    model = ContrastiveModel(encoder, head).eval()
    z = model(_patches(3))
    assert z.shape == (3, 512)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    assert model.encoder is encoder


def test_released_projection_head_loads(reference):
    # the released head's `proj.net1.*` weights load by stripping "proj."
    ref = reference("knn_monitor")
    released = {k.removeprefix("proj."): torch.from_numpy(ref[k]) for k in ref.files if k.startswith("proj.")}
    head128 = ProjectionHead(512, 512, out_dim=128)
    head128.load_state_dict(released, strict=True)
    assert head128(torch.randn(2, 512)).shape == (2, 128)


@pytest.mark.parametrize("arch", ["resnet18", "vgglike", "crnn"])
def test_save_load_round_trip(arch, tmp_path):
    torch.manual_seed(1)
    model = build_encoder(arch, n_classes=5).eval()
    path = tmp_path / "enc.pth"
    torch.save(model.state_dict(), path)
    loaded = load_released_encoder(arch, path, n_classes=5)
    assert not loaded.training
    x = _patches()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    # wrapped ({"state_dict": ...}) and DataParallel-prefixed checkpoints load too
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    with torch.no_grad():
        torch.testing.assert_close(load_released_encoder(arch, path, n_classes=5)(x), model(x), atol=0, rtol=0)


def test_wrong_architecture_names_the_keys_of_any_checkpoint(tmp_path):
    path = tmp_path / "vgg.pth"  # not a released name: no sha256 check
    torch.save(build_encoder("vgglike").state_dict(), path)
    with pytest.raises(ValueError, match=r"'crnn'.*missing keys.*rnn1") as err:
        load_released_encoder("crnn", path)
    assert str(path) in str(err.value) and "unexpected keys 22 ['conv0.bn.bias'" in str(err.value)
    with pytest.raises(ValueError, match=r"shape mismatches 2 \['dense_out.bias', 'dense_out.weight'\]"):
        load_released_encoder("vgglike", path, n_classes=10)


def test_wrong_architecture_names_the_keys(model_zoo_dir):
    with pytest.raises(ValueError, match=r"'crnn'.*missing keys.*rnn1") as err:
        load_released_encoder("crnn", model_zoo_dir / "VGG_best.pth")
    assert "VGG_best.pth" in str(err.value) and "unexpected keys 22 ['conv0.bn.bias'" in str(err.value)
    with pytest.raises(ValueError, match="shape mismatches 2"):  # dense_out weight and bias
        load_released_encoder("vgglike", model_zoo_dir / "VGG_best.pth", n_classes=10)


def test_released_sha256(model_zoo_dir):
    assert (
        sha256_of(model_zoo_dir / "VGG_best.pth") == "61fde9cd0b546fb8aab30cdc8327936acc349ec3f4e331b736fd9ec2e4cda9ba"
    )


def test_sha256_mismatch_says_expected_and_got(tmp_path):
    fake = tmp_path / "VGG_best.pth"  # a known name with other contents
    torch.save(build_encoder("vgglike").state_dict(), fake)
    with pytest.raises(ValueError, match=r"sha256 mismatch, expected 61fde9cd.*, got [0-9a-f]{64}"):
        load_released_encoder("vgglike", fake)


@pytest.mark.parametrize("cut", [0.5, 0.02])
def test_truncated_own_checkpoint_names_the_path(tmp_path, cut):
    whole = tmp_path / "whole.pth"
    torch.save(build_encoder("crnn").state_dict(), whole)
    data = whole.read_bytes()
    bad = tmp_path / "crnn_copy.pth"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        load_released_encoder("crnn", bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("cut", [0.5, 0.02])
def test_truncated_checkpoint_names_the_path(model_zoo_dir, tmp_path, cut):
    data = (model_zoo_dir / "CRNN_best.pth").read_bytes()
    bad = tmp_path / "crnn_copy.pth"  # unknown name: no sha256 check, the reader must notice
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        load_released_encoder("crnn", bad)
    assert str(bad) in str(err.value)


def test_corrupt_checkpoint_and_non_state_dict(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="garbage.pth"):
        load_released_encoder("vgglike", garbage)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ValueError, match="state dict"):
        load_released_encoder("vgglike", tensor_only)
    with pytest.raises(FileNotFoundError):
        load_released_encoder("vgglike", tmp_path / "missing.pth")


def test_copy_of_released_file_passes_sha256(tmp_path, model_zoo_dir):
    # a copy of the real file under its real name passes the sha256 check
    shutil.copy(model_zoo_dir / "VGG_best.pth", tmp_path / "VGG_best.pth")
    assert load_released_encoder("vgglike", tmp_path / "VGG_best.pth").embedding_dim == 512
