"""The augmentation panel's engine: control values -> config -> views, figures and sound."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from synthetic import floor_clips

from uclser_lib import features, widgets
from uclser_lib.augment import AugmentConfig
from uclser_lib.data import FeatureSet, PackedClips
from uclser_lib.runtime import PAPER_SEED

from tolerance import assert_close_ulps

ALL_OFF = {name: False for name, c in widgets.CONTROLS.items() if c.kind == "toggle"}


@pytest.fixture(scope="module")
def clips():
    """Three log10 mel clips (T, 96) with distinct noise floors and a few loud events."""
    return floor_clips()


def close_figures():
    plt.close("all")


# ----------------------------------------------------------------------------------------------------------------------
# Controls -> config


def test_default_controls_are_the_paper_config_without_normalisation():
    values = widgets.default_controls()
    assert set(values) == set(widgets.CONTROLS)
    assert widgets.config_from_controls(values) == dataclasses.replace(AugmentConfig.paper(), normalise=False)
    assert widgets.config_from_controls(None) == widgets.config_from_controls(values)


def test_controls_map_onto_the_config():
    cfg = widgets.config_from_controls({"mix_back": False, "crop_scale": (0.5, 0.9), "n_time_masks": 3, "blur": True})
    assert cfg.mix == "none" and cfg.crop_scale == (0.5, 0.9) and cfg.n_time_masks == 3 and cfg.blur
    assert widgets.config_from_controls({"mix_back": True}).mix == "mix_out_clip"
    assert isinstance(widgets.config_from_controls({"n_time_masks": 3.0}).n_time_masks, int)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"mix_alpha": 1.5}, "mix_alpha.*outside"),
        ({"noise_level": 0.1}, "unknown control.*noise_level"),
        ({"random_crop": 1}, "random_crop.*True or False"),
        ({"crop_scale": (0.9, 0.5)}, "crop_scale.*min must not exceed max"),
        ({"crop_ratio": (1.0,)}, "crop_ratio.*pair"),
        ({"n_freq_masks": 1.5}, "n_freq_masks.*integer"),
        ({"comp_alpha": float("nan")}, "comp_alpha.*finite"),
        ({"time_shift_max": "30"}, "time_shift_max.*finite numbers"),
        ({"mask_value": "median"}, "mask_value.*one of"),
        ({"blur": True, "blur_max_ksize": 4}, "odd"),  # AugmentConfig's own check
    ],
)
def test_bad_control_values_raise(values, match):
    with pytest.raises(ValueError, match=match):
        widgets.config_from_controls(values)


# ----------------------------------------------------------------------------------------------------------------------
# Rendering


def test_render_views_stages_and_shapes(clips):
    stages = widgets.render_views(clips[0], clips[1], None, seed=3)
    assert widgets.stage_names(stages) == ["view", "background", "mixed", "random_crop", "compander", "gauss_noise"]
    for name in widgets.stage_names(stages) + ["final"]:
        for v in (1, 2):
            assert stages[f"{name}{v}"].shape == (101, 96) and stages[f"{name}{v}"].dtype == np.float32
    np.testing.assert_array_equal(stages["final1"], stages["gauss_noise1"])
    assert 0 <= float(stages["lambda"]) <= 0.05
    # both views are patches of clip_a, both backgrounds patches of clip_b
    for v in (1, 2):
        assert any(np.array_equal(stages[f"view{v}"], clips[0][s : s + 101]) for s in range(len(clips[0]) - 100))
        assert any(np.array_equal(stages[f"background{v}"], clips[1][s : s + 101]) for s in range(len(clips[1]) - 100))


def test_same_seed_same_views_new_draw_changes_them(clips):
    a = widgets.render_views(clips[0], clips[1], None, seed=11)
    b = widgets.render_views(clips[0], clips[1], None, seed=11)
    c = widgets.render_views(clips[0], clips[1], None, seed=12)
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a["final1"], c["final1"]) and not np.allclose(a["final2"], c["final2"])


def test_alpha_zero_gives_no_mixing(clips):
    stages = widgets.render_views(clips[0], clips[1], {**ALL_OFF, "mix_back": True, "mix_alpha": 0.0}, seed=5)
    assert float(stages["lambda"]) == 0
    assert_close_ulps(stages["mixed1"], stages["view1"])
    assert_close_ulps(stages["final2"], stages["view2"])
    mixed = widgets.render_views(clips[0], clips[1], {**ALL_OFF, "mix_back": True, "mix_alpha": 0.5}, seed=5)
    assert float(mixed["lambda"]) > 0 and np.abs(mixed["mixed1"] - mixed["view1"]).max() > 0.1


def test_everything_off_returns_the_patches(clips):
    stages = widgets.render_views(clips[0], clips[1], ALL_OFF, seed=2)
    assert widgets.stage_names(stages) == ["view"] and "lambda" not in stages
    np.testing.assert_array_equal(stages["final1"], stages["view1"])
    np.testing.assert_array_equal(stages["final2"], stages["view2"])


@pytest.mark.parametrize(
    "name, params",
    [
        ("time_shift", {}),
        ("freq_shift", {}),
        ("random_crop", {"crop_scale": (0.4, 0.5)}),
        ("time_reversal", {"time_reversal_p": 1.0}),
        ("compander", {"comp_alpha": 0.5}),
        ("freq_mask", {}),
        ("time_mask", {}),
        ("gauss_noise", {"noise_max_std": 0.2}),
        ("blur", {"blur_max_ksize": 21, "blur_sigma": 5.0}),
    ],
)
def test_each_toggle_switches_its_augmentation(clips, name, params):
    off = widgets.render_views(clips[0], clips[1], {**ALL_OFF, **params}, seed=7)
    on = widgets.render_views(clips[0], clips[1], {**ALL_OFF, **params, name: True}, seed=7)
    np.testing.assert_array_equal(off["view1"], on["view1"])  # the patches are drawn first
    np.testing.assert_array_equal(off["final1"], off["view1"])
    assert not np.allclose(on["final1"], on["view1"]) and not np.allclose(on["final2"], on["view2"])


def test_compander_scales_each_view_by_one_factor_in_range(clips):
    factors = []
    for seed in range(20):
        stages = widgets.render_views(clips[0], clips[1], {**ALL_OFF, "compander": True, "comp_alpha": 0.6}, seed=seed)
        for v in (1, 2):
            ratio = stages[f"final{v}"] / stages[f"view{v}"]
            assert np.ptp(ratio) < 1e-5
            factors.append(ratio.mean())
    assert 0.6 <= min(factors) < 0.7 and 0.9 < max(factors) <= 1.0  # c ~ U(comp_alpha, 1)


def test_switching_off_the_last_step_keeps_the_earlier_ones(clips):
    on = widgets.render_views(clips[0], clips[1], None, seed=9)
    off = widgets.render_views(clips[0], clips[1], {"gauss_noise": False}, seed=9)
    np.testing.assert_array_equal(off["compander1"], on["compander1"])
    np.testing.assert_array_equal(off["final1"], on["compander1"])
    assert not np.array_equal(on["final1"], on["compander1"])


def test_render_views_bad_input(clips):
    with pytest.raises(ValueError, match="clip_a"):
        widgets.render_views(clips[0][:50], clips[1])
    with pytest.raises(ValueError, match="clip_b"):
        widgets.render_views(clips[0], clips[1][:, :, None])
    with pytest.raises(ValueError, match="bands"):
        widgets.render_views(clips[0], clips[1][:, :64])
    with pytest.raises(ValueError, match="seed"):
        widgets.render_views(clips[0], clips[1], seed=-1)


def test_single_augmentations(clips):
    patch = clips[0][:101]
    out = widgets.single_augmentations(patch, {"time_reversal_p": 1.0}, seed=1)
    assert list(out) == [
        "time_shift",
        "freq_shift",
        "random_crop",
        "time_reversal",
        "compander",
        "spec_augment",
        "gauss_noise",
        "blur",
    ]
    for name, x in out.items():
        assert x.shape == patch.shape and not np.allclose(x, patch), name
    np.testing.assert_array_equal(out["time_reversal"], patch[::-1])
    again = widgets.single_augmentations(patch, {"time_reversal_p": 1.0}, seed=1, names=["gauss_noise"])
    np.testing.assert_array_equal(again["gauss_noise"], out["gauss_noise"])
    with pytest.raises(ValueError, match="no single augmentation"):
        widgets.single_augmentations(patch, names=["mixup"])


# ----------------------------------------------------------------------------------------------------------------------
# Drawing


def test_draw_views_shows_the_stages_on_one_colour_scale(clips):
    stages = widgets.render_views(clips[0], clips[1], {"mix_alpha": 0.3, "comp_alpha": 0.5}, seed=1)
    names = widgets.stage_names(stages)
    fig = plt.figure(layout="constrained")
    axes = widgets.draw_views(fig, stages)
    assert axes.shape == (2, len(names))
    arrays = [stages[f"{n}{v}"] for n in names for v in (1, 2)]
    expected = (min(a.min() for a in arrays), max(a.max() for a in arrays))
    for row in range(2):
        for col, name in enumerate(names):
            im = axes[row, col].images[0]
            np.testing.assert_array_equal(im.get_array(), stages[f"{name}{row + 1}"].T)
            assert im.get_clim() == pytest.approx(expected)
    assert axes[1, -1].get_title().endswith("view 2")
    _, small = plt.subplots(2, 2)
    with pytest.raises(ValueError, match="axes"):
        widgets.draw_views(small, stages)
    close_figures()


# ----------------------------------------------------------------------------------------------------------------------
# The panel


def test_panel_renders_redraws_and_reports_errors(clips):
    panel = widgets.augmentation_panel(clips, audio=False)
    c = panel.controls
    assert set(widgets.CONTROLS) <= set(c) and {"clip", "background", "seed", "draw"} <= set(c)
    expected = widgets.render_views(clips[0], clips[1], None, PAPER_SEED)
    np.testing.assert_array_equal(panel.stages["final1"], expected["final1"])
    c["draw"].click()
    assert c["seed"].value == PAPER_SEED + 1
    np.testing.assert_array_equal(
        panel.stages["final1"], widgets.render_views(clips[0], clips[1], None, PAPER_SEED + 1)["final1"]
    )
    c["gauss_noise"].value = False
    assert "gauss_noise1" not in panel.stages
    c["background"].value = 2
    np.testing.assert_array_equal(
        panel.stages["background1"],
        widgets.render_views(clips[0], clips[2], {"gauss_noise": False}, PAPER_SEED + 1)["background1"],
    )
    before = panel.stages
    c["seed"].value = -1
    assert panel.stages is before and "seed" in panel.children[2].value
    close_figures()


def test_panel_offers_one_clean_clip_per_class(clips):
    packed = PackedClips.from_list(clips * 2, labels=[0, 1, 0, 1, 0, 1])
    fs = FeatureSet(
        packed,
        [f"{i}.wav" for i in range(6)],
        np.array([0, 0, 1, 1, 1, 1], bool),
        np.zeros(6, bool),
        ["a", "b"],
        features.DEFAULT_PARAMS,
    )
    panel = widgets.augmentation_panel(fs, audio=False)
    assert [v for _, v in panel.controls["clip"].options] == [2, 3]
    assert panel.controls["clip"].options[0][0] == "a: 2.wav"
    with pytest.raises(ValueError, match="clip choices"):
        widgets.augmentation_panel(fs, choices=[0, 9], audio=False)
    with pytest.raises(ValueError, match="expects a Course"):
        widgets.augmentation_panel("clips", audio=False)
    close_figures()
