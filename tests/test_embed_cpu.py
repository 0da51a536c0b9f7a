"""Eval-mode embedding on a CPU through a frozen graph (embed.inference_fn, issue #35): the plain forward's outputs
up to float32 rounding, the caller's encoder untouched, a wrong graph never used, any failure the plain path."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from uclser_lib import embed
from uclser_lib.data import PATCH_FRAMES, PackedClips
from uclser_lib.models import ARCHITECTURES, build_encoder
from uclser_lib.views import eval_patches

EPS = torch.finfo(torch.float32).eps


def trained_looking(arch: str, seed: int = 0) -> torch.nn.Module:
    """An encoder in eval mode whose BatchNorms have non-trivial statistics and affine parameters, so that folding
    them into the convolutions changes the weights (an identity BatchNorm would hide a wrong fold)."""
    torch.manual_seed(seed)
    enc = build_encoder(arch).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 3 + 0.25)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return enc


def clips(n_patches_each=(1, 2, 4)) -> PackedClips:
    rng = np.random.default_rng(0)
    lengths = [PATCH_FRAMES + 50 * (k - 1) for k in n_patches_each]
    return PackedClips.from_list([rng.standard_normal((t, 96)).astype(np.float32) for t in lengths])


def plain_embed(enc, packed, mean=0.0, std=1.0) -> torch.Tensor:
    """The reference: the encoder's eval-mode embed, default layout, one batch."""
    with torch.no_grad():
        patches, _ = eval_patches(packed)
        return enc.embed(((patches - mean) / std)[:, None])


def assert_float_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal up to float32 rounding: another summation order over conv sums of up to 3,200 terms (128 x 5 x 5) and
    BatchNorm folded into the weights (a few roundings more per weight); 256 eps of the output's scale is some
    100x the differences seen (1e-7-3e-6 of the scale) and far below what a wrong fold gives (of the scale itself)."""
    assert out.shape == ref.shape and out.dtype == ref.dtype == torch.float32
    scale = float(ref.abs().max())
    assert scale > 0
    err = float((out - ref).abs().max())
    assert err <= 256 * EPS * scale, f"max |out - ref| = {err:.3g}, {err / scale:.3g} of the scale {scale:.3g}"


@pytest.fixture
def every_size(monkeypatch):
    """The frozen path however few patches there are (tests embed a handful)."""
    monkeypatch.setattr(embed, "FROZEN_MIN_PATCHES", 0)


def frozen_graph(enc):
    """The graph inference_fn built for ``enc`` (None: it fell back), for the 96-band patches."""
    entry = embed._FROZEN.get(enc)
    return None if entry is None else entry[2].get((1, PATCH_FRAMES, 96))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cpu_embedding_equals_the_plain_eval_forward(arch, every_size):
    """embed_eval_patches on the CPU (the frozen graph for the VGG-like and the CRNN, channels-last eager for the
    ResNet-18) gives the plain eval-mode forward's embeddings up to float32 rounding, in batches of any size."""
    enc, packed = trained_looking(arch), clips()
    ref = plain_embed(enc, packed, 0.5, 2.0)
    out, index = embed.embed_eval_patches(enc.embed, packed, 0.5, 2.0, "cpu", batch_size=5)  # 5 and 2
    assert_float_close(out, ref)
    assert index.tolist() == [0, 1, 1, 2, 2, 2, 2]
    assert (frozen_graph(enc) is not None) == (arch in embed.FROZEN_ARCHS)


@pytest.mark.parametrize("arch", embed.FROZEN_ARCHS)
def test_the_frozen_graph_folds_batchnorm_within_float_tolerance(arch):
    """The frozen graph itself (no check in between) against the plain forward, on a batch other than the traced
    one: where a BatchNorm fold that skipped a term (e.g. the variance) would show."""
    enc = trained_looking(arch, seed=3)
    x = torch.randn(6, 1, PATCH_FRAMES, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = enc.embed(x)
        graph = embed._freeze(enc, "embed", x[:2])
        out = graph(x)
    assert_float_close(out, ref)


@pytest.mark.parametrize("arch", embed.FROZEN_ARCHS)
def test_the_callers_encoder_is_left_as_it_was(arch, every_size):
    """State (every tensor, its layout), mode and the embedding cache's key are the same after embedding; a
    training-mode encoder passed as fn is put back in training mode."""
    enc, packed = trained_looking(arch), clips()
    before = {k: t.clone() for k, t in enc.state_dict().items()}
    key = embed.embedding_key(enc, packed, 0.0, 1.0, "cpu")
    embed.embed_eval_patches(enc.embed, packed, 0.0, 1.0, "cpu")
    after = enc.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], t) and after[k].stride() == t.stride() for k, t in before.items())
    assert not enc.training and embed.embedding_key(enc, packed, 0.0, 1.0, "cpu") == key
    enc.train()  # the module itself as fn (its forward: logits): put in eval mode for the embedding, then back
    logits, _ = embed.embed_eval_patches(enc, packed, 0.0, 1.0, "cpu")
    assert enc.training and all(torch.equal(enc.state_dict()[k], t) for k, t in before.items())
    with torch.no_grad():
        assert_float_close(logits, enc.eval()(eval_patches(packed)[0][:, None]))


def test_a_wrong_graph_is_never_used(monkeypatch, every_size):
    """A graph whose BatchNorm fold skips the variance term (the encoder's running_var taken as 1) fails the check
    on the first patches: the plain path's embeddings come back, silently."""
    real = embed._freeze

    def skip_variance(owner, name, example):
        broken = copy.deepcopy(owner)
        for m in broken.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(1.0)
        return real(broken, name, example)

    monkeypatch.setattr(embed, "_freeze", skip_variance)
    enc, packed = trained_looking("crnn"), clips()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = embed.embed_eval_patches(enc.embed, packed, 0.0, 1.0, "cpu")
    assert frozen_graph(enc) is None
    assert_float_close(out, plain_embed(enc, packed))


def test_a_failing_build_falls_back_to_the_plain_path_silently(monkeypatch, every_size):
    def no_torchscript(*args, **kwargs):
        raise RuntimeError("TorchScript is not available")

    monkeypatch.setattr(torch.jit, "trace", no_torchscript)
    enc, packed = trained_looking("vgglike"), clips()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = embed.embed_eval_patches(enc.embed, packed, 0.0, 1.0, "cpu")
    assert frozen_graph(enc) is None
    assert_float_close(out, plain_embed(enc, packed))


def test_the_graph_is_built_once_per_weights(monkeypatch, every_size):
    """Embedding a second set reuses the encoder's graph; weights changed in place (even through ``.data``, which
    autograd's version counter does not see) build a new one, whose outputs follow the new weights."""
    calls = []
    real = embed._freeze
    monkeypatch.setattr(embed, "_freeze", lambda *a: calls.append(1) or real(*a))
    enc = trained_looking("vgglike")
    embed.embed_eval_patches(enc.embed, clips(), 0.0, 1.0, "cpu")
    embed.embed_eval_patches(enc.embed, clips((3, 1)), 0.0, 1.0, "cpu")
    assert len(calls) == 1
    enc.conv1.bn.running_var.data.mul_(4.0)
    out, _ = embed.embed_eval_patches(enc.embed, clips(), 0.0, 1.0, "cpu")
    assert len(calls) == 2
    assert_float_close(out, plain_embed(enc, clips()))


def test_the_frozen_path_only_where_it_pays(monkeypatch):
    """Gradients on, training mode, another device, too few patches, another callable or encoder: ``fn`` itself."""
    enc = trained_looking("vgglike")
    with torch.no_grad():
        assert embed.inference_fn(enc.embed, "cuda") == enc.embed
        assert embed.inference_fn(enc.embed, "cpu", embed.FROZEN_MIN_PATCHES - 1) == enc.embed
        assert embed.inference_fn(enc.classifier, "cpu") == enc.classifier
        lam = lambda x: enc.embed(x)  # noqa: E731
        assert embed.inference_fn(lam, "cpu") is lam
        resnet = build_encoder("resnet18").eval()
        assert embed.inference_fn(resnet.embed, "cpu") == resnet.embed
        enc.train()
        assert embed.inference_fn(enc.embed, "cpu") == enc.embed
        enc.eval()
        assert embed.inference_fn(enc.embed, "cpu") != enc.embed  # all conditions met: the frozen graph
    assert embed.inference_fn(enc.embed, "cpu") == enc.embed  # gradients on


def test_hear_embeds_through_the_frozen_graph_and_equals_the_plain_encoder(monkeypatch):
    """The embedding API (uclser_lib.hear) takes the same fast path as embed_eval_patches, with the same outputs."""
    from uclser_lib import embed, hear

    torch.manual_seed(0)
    model = hear.load_model("course-vgglike", device="cpu", patch_hop=2)
    audio = torch.rand(2, 3 * model.sample_rate) * 2 - 1  # 2 x 101 patches: enough for the frozen graph
    built = []
    real = embed.inference_fn
    monkeypatch.setattr(hear, "inference_fn", lambda *a: built.append(real(*a)) or built[-1])
    fast, _ = hear.get_timestamp_embeddings(audio, model)
    assert built and built[-1] is not model.encoder.embed  # the frozen graph ran
    monkeypatch.setattr(hear, "inference_fn", lambda fn, *a: fn)
    plain, _ = hear.get_timestamp_embeddings(audio, model)
    scale = float(plain.abs().max())
    torch.testing.assert_close(fast, plain, rtol=0, atol=256 * torch.finfo(torch.float32).eps * scale)
