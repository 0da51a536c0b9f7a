"""Mix-back, the batched augmentations and the view builder (docs/method.md §5-6) against the per-example reference."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp

from uclser_lib.augment import (
    AUGMENTATIONS,
    AugmentConfig,
    Compander,
    FreqShift,
    GaussianBlur,
    GaussianNoise,
    Normalize,
    RandomResizedCrop,
    SpecAugment,
    TimeReversal,
    TimeShift,
    build_augment,
)
from uclser_lib.data import PATCH_FRAMES, PackedClips
from uclser_lib.mixback import mix_back, mix_back_power
from uclser_lib.views import CPU_CHUNK_VIEWS, ViewBuilder
from uclser_lib.widgets import apply_single, augment_views

import augment_reference as ref
from tolerance import assert_close_ulps

T, F = PATCH_FRAMES, 96


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def log_mel_like(shape, seed=0):
    """Smooth-ish random log10 patches, range about -6 .. 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-2, 1.0, shape) + np.linspace(0, -2, shape[-1]) + rng.normal(0, 0.5, shape[:-1] + (1,))
    return torch.from_numpy(x.astype(np.float32))


def synthetic_clips(lengths, seed=0):
    return [log_mel_like((t, F), seed + i).numpy() for i, t in enumerate(lengths)]


ALL_ON = dataclasses.replace(
    AugmentConfig.paper(),
    time_shift=True,
    freq_shift=True,
    time_reversal=True,
    freq_mask=True,
    time_mask=True,
    blur=True,
)


# ---------------------------------------------------------------------------------------------------------------------
# Mix-back


def test_mix_back_matches_reference(reference):
    d = reference("mixback")
    lam = torch.from_numpy(d["alpha"])
    fg = torch.from_numpy(d["foreground"]).expand(len(lam), -1, -1)
    bg = torch.from_numpy(d["background"]).expand(len(lam), -1, -1)
    for dtype in (torch.float32, torch.float64):
        mixed = mix_back(fg.to(dtype), bg.to(dtype), lam.to(dtype))
        assert mixed.dtype == dtype
        np.testing.assert_allclose(mixed.numpy(), d["mixed"], rtol=0, atol=1e-5)
    for k in range(len(lam)):  # and the per-example reference
        np.testing.assert_allclose(
            ref.mix_energy(d["foreground"], d["background"], d["alpha"][k]), d["mixed"][k], atol=1e-5
        )


def test_mix_back_equals_the_per_example_reference():
    fg, bg = log_mel_like((4, T, F), 7), log_mel_like((4, T, F), 8) + 1.5
    lam = torch.tensor([0.0, 0.02, 0.3, 1.0])
    mixed = mix_back(fg, bg, lam).numpy()
    for k in range(len(lam)):
        np.testing.assert_allclose(
            mixed[k], ref.mix_energy(fg[k].numpy(), bg[k].numpy(), float(lam[k])), rtol=0, atol=1e-5
        )


def test_mix_back_keeps_foreground_energy_and_gives_background_lambda_share():
    fg, bg = log_mel_like((6, T, F), 1), log_mel_like((6, T, F), 2) + 3.0  # background much louder
    lam = torch.tensor([0.0, 0.01, 0.05, 0.3, 0.9, 1.0])
    mixed = mix_back(fg, bg, lam).double()
    e_fg = (10 ** fg.double()).sum((1, 2))
    np.testing.assert_allclose((10**mixed).sum((1, 2)).numpy(), e_fg.numpy(), rtol=1e-5)
    np.testing.assert_allclose(mixed[0].numpy(), fg[0].numpy(), atol=1e-5)  # lambda 0: the foreground
    bg_share = 10 ** bg[-1].double() / (10 ** bg[-1].double()).sum()
    np.testing.assert_allclose((10 ** mixed[-1] / e_fg[-1]).numpy(), bg_share.numpy(), rtol=1e-4)  # lambda 1


def test_mix_back_float32_is_accurate_where_linear_float32_overflows():
    fg, bg = log_mel_like((3, T, F), 3) + 36.0, log_mel_like((3, T, F), 4) - 30.0  # 10**38 .. 10**-36
    lam = torch.tensor([0.02, 0.04, 0.5])
    mixed = mix_back(fg, bg, lam)
    expected = mix_back(fg.double(), bg.double(), lam.double())
    assert torch.isfinite(mixed).all()
    np.testing.assert_allclose(mixed.numpy(), expected.numpy(), atol=1e-5)


def test_mix_back_power_matches_reference(reference):
    d = reference("mixback")
    lam = torch.from_numpy(d["alpha"])
    fg = torch.from_numpy(d["foreground"]).expand(len(lam), -1, -1)
    bg = torch.from_numpy(d["background"]).expand(len(lam), -1, -1)
    np.testing.assert_allclose(mix_back_power(10**fg, 10**bg, lam).numpy(), d["mixed"], rtol=0, atol=1e-5)


def test_mix_back_power_equals_log_domain_mix_back():
    fg, bg = log_mel_like((5, T, F), 5) + 12.0, log_mel_like((5, T, F), 6) - 9.0  # near the power-domain limit
    lam = torch.tensor([0.0, 0.01, 0.05, 0.5, 1.0])
    expected = mix_back(fg.double(), bg.double(), lam.double())
    np.testing.assert_allclose(mix_back_power(10**fg, 10**bg, lam).numpy(), expected.numpy(), atol=2e-5)
    with pytest.raises(ValueError, match=r"lam \(B,\)"):
        mix_back_power(10**fg, 10**bg, lam[:2])


def test_mix_back_rejects_bad_input():
    x = torch.zeros(2, T, F)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mix_back(x, x, torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match=r"\(B, T, F\)"):
        mix_back(x, x[:, :50], torch.tensor([0.1, 0.1]))
    with pytest.raises(ValueError, match=r"lam \(B,\)"):
        mix_back(x, x, torch.tensor([0.1]))


# ---------------------------------------------------------------------------------------------------------------------
# Each augmentation, given its drawn parameters, equals the per-example reference


def _ref_params(name, params, b):
    """The reference step's arguments for example ``b``."""
    p = {k: v.numpy() for k, v in params.items()}
    if name == "spec_augment":
        masks = [("freq", int(s), int(w)) for s, w in zip(p["freq_start"][b], p["freq_width"][b])]
        masks += [("time", int(s), int(w)) for s, w in zip(p["time_start"][b], p["time_width"][b])]
        return masks, p["z"][b] if "z" in p else None
    return {
        "time_shift": lambda: (int(p["shift"][b]),),
        "freq_shift": lambda: (int(p["shift"][b]),),
        "random_crop": lambda: (p["box"][b],),
        "time_reversal": lambda: (bool(p["flip"][b]),),
        "compander": lambda: (float(p["c"][b]),),
        "gauss_noise": lambda: (float(p["std"][b]), p["z"][b]),
        "blur": lambda: (int(p["kt"][b]), int(p["kf"][b])),
        "normalise": lambda: (),
    }[name]()


CASES = [
    ("time_shift", TimeShift(30), lambda s, a: ref.time_shift(s, *a)),
    ("freq_shift", FreqShift(10), lambda s, a: ref.freq_shift(s, *a)),
    ("random_crop", RandomResizedCrop((0.3, 1.0)), lambda s, a: ref.resized_crop(s, *a)),
    ("time_reversal", TimeReversal(0.5), lambda s, a: ref.time_reversal(s, *a)),
    ("compander", Compander(0.75), lambda s, a: ref.compander(s, *a)),
    ("compander", Compander(1.5), lambda s, a: ref.compander(s, *a)),
    ("gauss_noise", GaussianNoise(0.01), lambda s, a: ref.gauss_noise(s, *a)),
    ("blur", GaussianBlur(5, 20.0), lambda s, a: ref.gaussian_blur(s, *a, 20.0)),
    ("blur", GaussianBlur(7, 1.5), lambda s, a: ref.gaussian_blur(s, *a, 1.5)),
    ("normalise", Normalize(-2.5, 1.7), lambda s, a: ref.normalise(s, -2.5, 1.7)),
] + [
    ("spec_augment", SpecAugment(20, 2, 20, 2, mv), lambda s, a, mv=mv: ref.spec_augment(s, a[0], mv, a[1]))
    for mv in ("min", "zero", "mean", "max", "noise")
]


@pytest.mark.parametrize("name,module,reference_step", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_batched_step_equals_reference_given_its_params(name, module, reference_step):
    x = log_mel_like((24, T, F), 7)
    params = module.sample_params(x, gen(1))
    out = module.apply_params(x, params)
    atol = 1e-4 if name == "random_crop" else 1e-5
    for b in range(len(x)):
        expected = reference_step(x[b].numpy(), _ref_params(name, params, b))
        np.testing.assert_allclose(out[b].numpy(), expected, rtol=0, atol=atol, err_msg=f"{name} example {b}")


def test_random_crop_equals_pil_on_every_box_kind():
    x = log_mel_like((1, T, F), 8)
    boxes = [(0, 0, T, F), (0, 0, 1, 1), (100, 95, 1, 1), (3, 5, 57, 80), (0, 10, T, 40), (44, 0, 57, F)]
    module = RandomResizedCrop()
    for box in boxes:
        out = module.apply_params(x, {"box": torch.tensor([box])})[0].numpy()
        i, j, h, w = box
        pil = np.array(Image.fromarray(x[0].numpy()).crop((j, i, j + w, i + h)).resize((F, T), Image.BILINEAR))
        np.testing.assert_allclose(out, pil, atol=1e-4, err_msg=str(box))
    assert torch.equal(module.apply_params(x, {"box": torch.tensor([(0, 0, T, F)])}), x)  # identity box is exact


def test_random_crop_box_distribution_follows_spec():
    n = 20000
    box = RandomResizedCrop().sample_params(torch.zeros(n, T, F), gen(2))["box"].double()
    i, j, h, w = box.unbind(1)
    full = (h == T) & (w == F)
    frac = h * w / (T * F)
    aspect = w / h
    assert torch.all((i >= 0) & (j >= 0) & (i + h <= T) & (j + w <= F))
    assert frac.min() >= 0.78 and frac.max() <= 1.0  # U(0.8, 1) area, up to rounding of w and h
    assert aspect[~full].min() >= 0.74 and aspect[~full].max() <= 4 / 3 * 1.02
    # reference draws (the released get_params, NumPy) give the same laws
    rng = np.random.default_rng(0)
    rboxes = np.array([ref.rrc_box(rng, (T, F), (0.8, 1.0), (3 / 4, 4 / 3)) for _ in range(3000)], dtype=float)
    assert ks_2samp(frac.numpy(), rboxes[:, 2] * rboxes[:, 3] / (T * F)).pvalue > 1e-3
    assert ks_2samp(aspect.numpy(), rboxes[:, 3] / rboxes[:, 2]).pvalue > 1e-3
    assert abs(full.double().mean() - np.mean((rboxes[:, 2] == T) & (rboxes[:, 3] == F))) < 0.03
    # top-left corner uniform over the positions that fit
    for pos, n_pos in ((i, T - h), (j, F - w)):
        sel = n_pos >= 10
        u = (pos[sel] + 0.5) / (n_pos[sel] + 1)
        assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.01
        assert (pos[sel] == 0).any() and (pos[sel] == n_pos[sel]).any()


def test_random_crop_falls_back_to_central_crop():
    # no box of area >= 0.99 with aspect >= 3 fits a 101 x 96 patch: always the fallback, clipped to ratio 3
    module = RandomResizedCrop(scale=(0.99, 1.0), ratio=(3.0, 4.0))
    box = module.sample_params(torch.zeros(50, T, F), gen())["box"]
    h, w = round(F / 3.0), F
    assert torch.all(box == torch.tensor([(T - h) // 2, 0, h, w]))


def test_parameter_ranges_and_per_example_independence():
    x = torch.zeros(4000, T, F)
    g = gen(3)
    shift = TimeShift(30).sample_params(x, g)["shift"]
    assert set(shift.tolist()) == set(range(1, 30))
    fshift = FreqShift(10).sample_params(x, g)["shift"]
    assert set(fshift.tolist()) == set(range(1, 10))
    c = Compander(0.75).sample_params(x, g)["c"]
    assert c.min() >= 0.75 and c.max() <= 1 and len(c.unique()) > 3990
    assert abs(c.mean() - 0.875) < 0.005
    flip = TimeReversal(0.5).sample_params(x, g)["flip"]
    assert abs(flip.float().mean() - 0.5) < 0.03
    noise = GaussianNoise(0.01).sample_params(x[:500], g)
    assert noise["std"].min() >= 0 and noise["std"].max() <= 0.01 and len(noise["std"].unique()) == 500
    assert abs(noise["z"].std() - 1) < 0.01 and abs(noise["z"].mean()) < 0.01
    blur = GaussianBlur(5).sample_params(x, g)
    assert set(blur["kt"].tolist()) == {1, 3, 5} and set(blur["kf"].tolist()) == {1, 3, 5}
    assert (blur["kt"] != blur["kf"]).any()
    sa = SpecAugment(20, 2, 15, 3).sample_params(x, g)
    assert sa["freq_width"].shape == (4000, 2) and sa["time_width"].shape == (4000, 3)
    assert set(sa["freq_width"].flatten().tolist()) == set(range(20))
    assert set(sa["time_width"].flatten().tolist()) == set(range(15))
    assert torch.all(sa["freq_start"] + sa["freq_width"] <= F) and torch.all(sa["time_start"] + sa["time_width"] <= T)
    assert (sa["freq_start"] + sa["freq_width"] == F).any() and (sa["freq_start"] == 0).any()
    # the two masks of one example are drawn independently
    assert (sa["freq_width"][:, 0] != sa["freq_width"][:, 1]).float().mean() > 0.9


def test_shapes_single_patch_channel_dim_and_bad_ndim():
    module = build_augment(ALL_ON, -2.0, 1.0)
    x = log_mel_like((5, T, F), 9)
    assert module(x, gen()).shape == (5, T, F)
    assert module(x[:, None], gen()).shape == (5, 1, T, F)
    assert module(x[0], gen()).shape == (T, F)
    assert_close_ulps(module(x[:, None], gen(4))[:, 0], module(x, gen(4)))  # another batch shape, same values
    with pytest.raises(ValueError, match="expects"):
        TimeShift()(torch.zeros(2, 3, T, F))


def test_augmentations_are_reproducible_and_seeded():
    module = build_augment(ALL_ON, -2.0, 1.0)
    x = log_mel_like((8, T, F), 10)
    assert torch.equal(module(x, gen(5)), module(x, gen(5)))
    assert not torch.allclose(module(x, gen(5)), module(x, gen(6)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mix_alpha": -0.1}, "mix_alpha"),
        ({"mix": "mix_sideways"}, "mix"),
        ({"positives": "other"}, "positives"),
        ({"crop_scale": (0.0, 1.0)}, "scale"),
        ({"crop_scale": (0.8, 1.2)}, "scale"),
        ({"crop_ratio": (4 / 3, 3 / 4)}, "ratio"),
        ({"freq_mask": True, "freq_mask_width": 97}, "wider"),
        ({"time_mask": True, "time_mask_width": 102}, "wider"),
        ({"time_mask": True, "mask_value": "median"}, "mask_value"),
        ({"time_shift": True, "time_shift_max": 1}, "max_shift"),
        ({"freq_shift": True, "freq_shift_max": 97}, "exceeds"),
        ({"compander": True, "comp_alpha": -1.0}, "comp_alpha"),
        ({"noise_max_std": -0.01}, "max_std"),
        ({"blur": True, "blur_max_ksize": 4}, "odd"),
        ({"time_reversal": True, "time_reversal_p": 1.5}, "p must"),
    ],
)
def test_config_rejects_out_of_range_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


def test_modules_reject_bad_parameters_at_construction_or_call():
    with pytest.raises(ValueError, match="wider"):
        SpecAugment(freq_width=40)(torch.zeros(2, T, 32))
    with pytest.raises(ValueError, match="std"):
        Normalize(0.0, 0.0)
    with pytest.raises(ValueError, match="mean and std"):
        build_augment(AugmentConfig.paper())


def test_paper_config_and_released_yaml_and_order():
    da = {  # params_unsupervised_cl.yaml of the released code
        "F": 20,
        "Fshift": 10,
        "T": 20,
        "Tshift": 30,
        "W": -1,
        "awgn_stdev_gen": 0.01,
        "blur_max_ksize": -1,
        "blur_stdev_x": -1,
        "comp_alpha": 0.75,
        "do_blur": False,
        "do_compansion": True,
        "do_freq_mask": False,
        "do_rand_freq_shift": False,
        "do_rand_time_shift": False,
        "do_randcrop": True,
        "do_time_mask": False,
        "do_time_reversal": False,
        "do_time_warp": False,
        "m_f": 2,
        "m_t": 2,
        "mask_val": "min",
        "rc_ratio": (0.75, 1.3333333333333333),
        "rc_scale": (0.8, 1),
        "reduce_mask_range": 0,
    }
    learn = {"CL_pos_mix": "mix_out_clip", "CL_pos_mix_alpha": 0.05, "CL_positives": "within_clip"}
    assert AugmentConfig.from_released(da, learn) == AugmentConfig.paper()
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(AugmentConfig.paper()).items()}
    assert AugmentConfig(**as_json) == AugmentConfig.paper()
    assert list(build_augment(AugmentConfig.paper(), 0.0, 1.0).steps) == [
        "random_crop",
        "compander",
        "gauss_noise",
        "normalise",
    ]
    assert list(build_augment(ALL_ON, 0.0, 1.0).steps) == [
        "time_shift",
        "freq_shift",
        "random_crop",
        "time_reversal",
        "compander",
        "spec_augment",
        "gauss_noise",
        "blur",
        "normalise",
    ]


# ---------------------------------------------------------------------------------------------------------------------
# View builder


def labelled_clips(lengths):
    """Clip c is constant c / 10 plus a tiny ramp, so a patch's clip can be read off its values."""
    return [
        np.full((t, F), c / 10, np.float32) + np.linspace(0, 1e-3, t, dtype=np.float32)[:, None]
        for c, t in enumerate(lengths)
    ]


def test_view_builder_shapes_backgrounds_and_lambda():
    lengths = [101, 150, 404, 700, 1200, 3000, 250, 180]
    packed = PackedClips.from_list(labelled_clips(lengths))
    builder = ViewBuilder(packed, AugmentConfig.paper(), 0.35, 0.2)
    idx = torch.arange(len(lengths)).repeat(100)
    v1, v2 = builder(idx, gen())
    assert v1.shape == v2.shape == (len(idx), 1, T, F) and v1.dtype == torch.float32
    record = {}
    builder.build(idx, gen(), record=record)
    B = len(idx)
    clip_of = lambda patches: torch.round(patches[:, :, 0].mean(1) * 10).long()
    assert torch.equal(clip_of(record["view"]), torch.cat([idx, idx]))
    same = (record["view"][:B] == record["view"][B:]).flatten(1).all(1)
    assert same[idx == 0].all() and same[idx == 4].float().mean() < 0.05  # independent starts (101 frames: itself)
    back = clip_of(record["background"])
    assert torch.all(back[:B] != idx) and torch.all(back[B:] != idx)  # never the foreground clip
    assert torch.all(back[:B] != back[B:])  # two distinct background clips
    assert len(back[:B].unique()) == len(lengths)
    lam = record["lambda"]
    assert lam.shape == (B,) and lam.min() >= 0 and lam.max() <= 0.05 and len(lam.unique()) == B
    assert abs(lam.mean() - 0.025) < 0.002
    # one lambda per example, used for both its views
    assert_close_ulps(record["mixed"], mix_back(record["view"], record["background"], torch.cat([lam, lam])))
    assert torch.equal(record["normalise"], builder.build(idx, gen(), record={}))  # the last stage is the output
    np.testing.assert_allclose(record["normalise"].numpy(), builder.build(idx, gen()).numpy(), atol=1e-4)  # fast path


def test_view_builder_mix_within_clip_and_same_positives():
    lengths = [101, 403, 404, 2000]
    packed = PackedClips.from_list(labelled_clips(lengths))
    cfg = dataclasses.replace(AugmentConfig.paper(), mix="mix_within_clip", positives="same")
    builder = ViewBuilder(packed, cfg, 0.15, 0.1)
    idx = torch.arange(4).repeat(50)
    record = {}
    builder.build(idx, gen(), record=record)
    B = len(idx)
    assert torch.equal(record["view"][:B], record["view"][B:])
    back_clip = torch.round(record["background"][:, :, 0].mean(1) * 10).long()
    assert torch.equal(back_clip, torch.cat([idx, idx]))  # backgrounds from the same clip
    short = torch.tensor(lengths)[idx] < 4 * PATCH_FRAMES
    assert torch.all(record["lambda"][short] == 0) and torch.all(record["lambda"][~short] > 0)
    assert_close_ulps(record["mixed"][:B][short], record["view"][:B][short])  # lambda 0: the view itself


def test_view_builder_no_mix_and_reproducibility():
    packed = PackedClips.from_list(synthetic_clips([101, 300, 900]))
    builder = ViewBuilder(packed, dataclasses.replace(AugmentConfig.paper(), mix="none"), -3.0, 1.0)
    record = {}
    builder.build(torch.tensor([0, 1, 2]), gen(), record=record)
    assert "mixed" not in record and "background" not in record
    full = ViewBuilder(packed, ALL_ON, -3.0, 1.0)
    idx = torch.tensor([2, 0, 1, 1])
    a, b = full(idx, gen(9)), full(idx, gen(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], full(idx, gen(10))[0])
    assert not torch.equal(a[0], a[1])


def test_view_builder_power_domain_mix_equals_log_domain_mix():
    packed = PackedClips.from_list(synthetic_clips([101, 300, 900, 450, 2000]))
    idx = torch.tensor([4, 0, 1, 3, 2, 2, 0])
    for mix in ("mix_out_clip", "mix_within_clip"):
        builder = ViewBuilder(packed, dataclasses.replace(ALL_ON, mix=mix), -3.0, 1.0)
        assert builder.power is not None
        fast = builder.build(idx, gen(3))
        exact = builder.build(idx, gen(3), record={})  # a recording build mixes in the log domain
        np.testing.assert_allclose(fast.numpy(), exact.numpy(), atol=1e-4)
        assert not torch.equal(fast, exact)  # two different paths
    # features beyond float32's power range: ViewBuilder keeps the log domain and stays finite
    loud = PackedClips.from_list([c + 20.0 for c in synthetic_clips([101, 300, 900])])
    builder = ViewBuilder(loud, AugmentConfig.paper(), 17.0, 1.0)
    assert builder.power is None and torch.isfinite(builder.build(torch.tensor([0, 1, 2]), gen())).all()
    assert ViewBuilder(packed, dataclasses.replace(ALL_ON, mix="none"), -3.0, 1.0).power is None


def test_view_builder_chunks_do_not_change_the_views():
    packed = PackedClips.from_list(synthetic_clips([101, 300, 900, 450, 2000, 640]))
    idx = torch.tensor([4, 0, 1, 3, 2, 2, 0, 5, 5])
    whole = ViewBuilder(packed, ALL_ON, -3.0, 1.0, chunk_views=None)
    assert ViewBuilder(packed, ALL_ON, -3.0, 1.0).chunk_views == CPU_CHUNK_VIEWS  # "auto" on a CPU
    for chunk in (1, 4, 7, 18, 100):
        # the same draws applied in other chunks: equal up to float32 rounding (another vectorisation)
        assert_close_ulps(
            ViewBuilder(packed, ALL_ON, -3.0, 1.0, chunk_views=chunk).build(idx, gen(8)),
            whole.build(idx, gen(8)),
            err_msg=f"chunk_views={chunk}",
        )
    for bad in (0, 2.5, "big"):
        with pytest.raises(ValueError, match="chunk_views"):
            ViewBuilder(packed, ALL_ON, -3.0, 1.0, chunk_views=bad)


def test_view_builder_rejects_bad_features():
    clips = synthetic_clips([200, 300, 150])
    clips[2][7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf: clip 2 \\(frame 7\\)"):
        ViewBuilder(PackedClips.from_list(clips), AugmentConfig.paper(), 0.0, 1.0)
    clips[2][7, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        ViewBuilder(PackedClips.from_list(clips), AugmentConfig.paper(), 0.0, 1.0)
    with pytest.raises(ValueError, match="clip 1 has 100 frames"):
        ViewBuilder(PackedClips.from_list(synthetic_clips([200, 100, 300])), AugmentConfig.paper(), 0.0, 1.0)
    with pytest.raises(ValueError, match="at least 3 clips"):
        ViewBuilder(PackedClips.from_list(synthetic_clips([200, 300])), AugmentConfig.paper(), 0.0, 1.0)(
            torch.tensor([0]), gen()
        )


@pytest.mark.parametrize("cfg", [AugmentConfig.paper(), ALL_ON], ids=["paper", "all_on"])
def test_batched_chain_statistics_match_reference_chain(cfg):
    clips = synthetic_clips([101, 130, 260, 404, 520, 800, 1500, 3000] * 3, seed=20)
    packed = PackedClips.from_list(clips)
    mean, std = float(packed.data.mean()), float(packed.data.std())
    idx = torch.arange(len(clips)).repeat(16)
    v1, v2 = ViewBuilder(packed, cfg, mean, std)(idx, gen(21))
    batched = torch.cat([v1, v2])[:, 0].numpy()
    rng = np.random.default_rng(22)
    reference = np.stack([v for i in idx.tolist() for v in ref.views(clips, i, cfg, rng, mean, std)])
    for stat in (lambda a: a.mean((1, 2)), lambda a: a.std((1, 2)), lambda a: np.abs(np.diff(a, axis=1)).mean((1, 2))):
        assert ks_2samp(stat(batched), stat(reference)).pvalue > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_views_equal_cpu_views_with_a_cpu_generator():
    packed = PackedClips.from_list(synthetic_clips([101, 300, 900, 2000]))
    idx = torch.tensor([3, 2, 1, 0, 0])
    cpu = ViewBuilder(packed, ALL_ON, -3.0, 1.0)(idx, gen(3))
    cuda = ViewBuilder(packed.to("cuda"), ALL_ON, -3.0, 1.0)(idx.cuda(), gen(3))
    for a, b in zip(cpu, cuda):
        np.testing.assert_allclose(a.numpy(), b.cpu().numpy(), atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Widget engine


def test_augment_views_stages():
    clip_a, clip_b = synthetic_clips([500, 300], seed=30)
    out = augment_views(clip_a, clip_b, ALL_ON, seed=4)
    steps = list(build_augment(ALL_ON, 0.0, 1.0).steps)
    names = ["view", "background", "mixed", *steps, "final"]
    assert set(out) == {"lambda"} | {f"{n}{v}" for n in names for v in (1, 2)}
    assert all(out[k].shape == (T, F) for k in out if k != "lambda")
    assert 0 <= out["lambda"] <= 0.05
    for v in (1, 2):
        lam = torch.tensor([float(out["lambda"])])
        mixed = mix_back(torch.from_numpy(out[f"view{v}"])[None], torch.from_numpy(out[f"background{v}"])[None], lam)
        assert_close_ulps(out[f"mixed{v}"], mixed[0])
        assert np.array_equal(out[f"final{v}"], out[f"normalise{v}"])
        windows_b = np.lib.stride_tricks.sliding_window_view(clip_b, (T, F))[:, 0]
        assert (windows_b == out[f"background{v}"]).all((1, 2)).any()
    again = augment_views(clip_a, clip_b, ALL_ON, seed=4)
    assert all(np.array_equal(out[k], again[k]) for k in out)
    assert not np.array_equal(out["final1"], augment_views(clip_a, clip_b, ALL_ON, seed=5)["final1"])


def test_apply_single():
    patch = synthetic_clips([T], seed=40)[0]
    shifted = apply_single("time_shift", patch, {"max_shift": 30}, seed=1)
    assert any(np.array_equal(shifted, np.roll(patch, d, axis=0)) for d in range(1, 30))
    flipped = apply_single("time_reversal", patch, {"p": 1.0}, seed=1)
    assert np.array_equal(flipped, patch[::-1])
    c = apply_single("compander", patch, {"comp_alpha": 0.5}, seed=2) / patch
    assert np.allclose(c, c.flat[0], atol=1e-5) and 0.5 <= c.flat[0] <= 1
    assert set(AUGMENTATIONS) >= {"random_crop", "spec_augment", "gauss_noise", "blur", "normalise"}
    with pytest.raises(ValueError, match="unknown augmentation"):
        apply_single("pitch_shift", patch, {}, 0)
    with pytest.raises(ValueError, match="bad parameters"):
        apply_single("compander", patch, {"alpha": 0.5}, 0)
    with pytest.raises(ValueError, match="mask_value"):
        apply_single("spec_augment", patch, {"mask_value": "median"}, 0)


def test_bench_smoke():
    from bench.bench_views import bench_views

    threads = torch.get_num_threads()
    out = bench_views("cpu", batch_sizes=(4,), n_clips=12, seconds=0.05, workers=(0,), threads=1)
    assert out["threads"] == 1 and torch.get_num_threads() == threads
    assert math.isclose(out["speedup/w0/b4"], out["batched/b4"] / out["reference/w0/b4"])
