"""Notebook 02's augmentation panel and its plain callbacks: control values -> config -> views and figures.

Control values are a plain dict keyed by :data:`CONTROLS` (the :class:`~uclser_lib.augment.AugmentConfig`
fields a slider or checkbox sets, plus ``"mix_back"``); missing keys take the paper's values. The panel
(:func:`augmentation_panel`) is a thin ipywidgets wrapper whose callbacks only call
:func:`config_from_controls`, :func:`render_views`, :func:`draw_views` and, for its sound,
:func:`~uclser_lib.features.logmel_to_audio`, so the tests exercise everything it shows without a browser.
The sound inversion lives with the features (``features.logmel_to_audio``); measurements on views with
the analysis (``analysis.pair_gaps``).

Normalisation is left out of the panel: it is an affine rescale that changes no picture, and leaving it
out keeps every stage in log10 mel units, on one colour scale, and turnable back into sound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from . import plots
from .augment import AUGMENTATIONS, MASK_VALUES, AugmentConfig, build_augment
from .data import PATCH_FRAMES, FeatureSet, PackedClips
from .features import DEFAULT_PARAMS, N_MELS, logmel_to_audio
from .runtime import PAPER_SEED
from .views import ViewBuilder

_PAPER = AugmentConfig.paper()


@dataclass(frozen=True)
class Control:
    """One control of the panel. ``kind``: "toggle" (a checkbox), "float" / "int" (a slider over
    [low, high]), "range" (a (min, max) pair of a range slider over [low, high]) or "choice" (a menu of
    ``options``). ``group``: the augmentation it belongs to; ``label``: its caption."""

    kind: str
    default: object
    group: str
    label: str
    low: float = 0.0
    high: float = 1.0
    step: float = 0.01
    options: tuple = ()


def _toggle(field: str, group: str, default=None) -> Control:
    return Control("toggle", getattr(_PAPER, field) if default is None else default, group, group)


def _slider(kind: str, field: str, group: str, label: str, low, high, step) -> Control:
    return Control(kind, getattr(_PAPER, field), group, label, low, high, step)


#: Every control of the panel, in display order; keys are AugmentConfig fields except "mix_back" (-> ``mix``).
#: Slider bounds are the values the panel accepts (wider than the released settings, to exaggerate an effect).
CONTROLS: dict[str, Control] = {
    "mix_back": _toggle("mix", "mix-back", default=_PAPER.mix != "none"),
    "mix_alpha": _slider("float", "mix_alpha", "mix-back", "alpha", 0.0, 1.0, 0.01),
    "time_shift": _toggle("time_shift", "time shift"),
    "time_shift_max": _slider("int", "time_shift_max", "time shift", "max frames", 2, PATCH_FRAMES, 1),
    "freq_shift": _toggle("freq_shift", "frequency shift"),
    "freq_shift_max": _slider("int", "freq_shift_max", "frequency shift", "max bands", 2, N_MELS, 1),
    "random_crop": _toggle("random_crop", "random resized crop"),
    "crop_scale": _slider("range", "crop_scale", "random resized crop", "scale", 0.05, 1.0, 0.01),
    "crop_ratio": _slider("range", "crop_ratio", "random resized crop", "ratio", 0.25, 4.0, 0.05),
    "time_reversal": _toggle("time_reversal", "time reversal"),
    "time_reversal_p": _slider("float", "time_reversal_p", "time reversal", "probability", 0.0, 1.0, 0.05),
    "compander": _toggle("compander", "compander"),
    "comp_alpha": _slider("float", "comp_alpha", "compander", "alpha", 0.1, 1.5, 0.05),
    "freq_mask": _toggle("freq_mask", "frequency masks"),
    "freq_mask_width": _slider("int", "freq_mask_width", "frequency masks", "max width", 1, N_MELS, 1),
    "n_freq_masks": _slider("int", "n_freq_masks", "frequency masks", "count", 0, 5, 1),
    "time_mask": _toggle("time_mask", "time masks"),
    "time_mask_width": _slider("int", "time_mask_width", "time masks", "max width", 1, PATCH_FRAMES, 1),
    "n_time_masks": _slider("int", "n_time_masks", "time masks", "count", 0, 5, 1),
    "mask_value": Control("choice", _PAPER.mask_value, "time masks", "mask value", options=MASK_VALUES),
    "gauss_noise": _toggle("gauss_noise", "Gaussian noise"),
    "noise_max_std": _slider("float", "noise_max_std", "Gaussian noise", "max std", 0.0, 0.5, 0.005),
    "blur": _toggle("blur", "Gaussian blur"),
    "blur_max_ksize": _slider("int", "blur_max_ksize", "Gaussian blur", "max kernel", 1, 21, 2),
    "blur_sigma": _slider("float", "blur_sigma", "Gaussian blur", "sigma", 0.1, 30.0, 0.1),
}

#: Readable names of the stages that :func:`render_views` returns (without the view number).
STAGE_TITLES = {
    "view": "patch",
    "background": "background (before scaling)",
    "mixed": "mix-back",
    "time_shift": "time shift",
    "freq_shift": "frequency shift",
    "random_crop": "random resized crop",
    "time_reversal": "time reversal",
    "compander": "compander",
    "spec_augment": "SpecAugment",
    "gauss_noise": "Gaussian noise",
    "blur": "Gaussian blur",
    "normalise": "normalise",
    "final": "final view",
}

#: The AugmentConfig toggles that switch each augmentation of :data:`~uclser_lib.augment.AUGMENTATIONS` on.
_TOGGLES = {"spec_augment": ("freq_mask", "time_mask")}


def default_controls() -> dict:
    """The control values of the paper's config (without normalisation): ``{name: value}`` for every control."""
    return {name: c.default for name, c in CONTROLS.items()}


def _check_value(name: str, value, c: Control):
    """``value`` converted to the control's type; ValueError naming the control when it does not fit."""
    if c.kind == "toggle":
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"control {name!r} is a checkbox: expected True or False, got {value!r}")
        return bool(value)
    if c.kind == "choice":
        if value not in c.options:
            raise ValueError(f"control {name!r} must be one of {c.options}, got {value!r}")
        return value
    numbers = list(value) if c.kind == "range" and isinstance(value, Sequence) else [value]
    if c.kind == "range" and len(numbers) != 2:
        raise ValueError(f"control {name!r} is a range slider: expected a (min, max) pair, got {value!r}")
    for v in numbers:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, Real) or not math.isfinite(v):
            raise ValueError(f"control {name!r} expects finite numbers, got {value!r}")
        if not c.low <= v <= c.high:
            raise ValueError(f"control {name!r} = {value!r} is outside the slider's range [{c.low}, {c.high}]")
        if c.kind == "int" and int(v) != v:
            raise ValueError(f"control {name!r} expects an integer, got {value!r}")
    if c.kind == "range":
        if numbers[0] > numbers[1]:
            raise ValueError(f"control {name!r} = {value!r}: min must not exceed max")
        return tuple(float(v) for v in numbers)
    return int(value) if c.kind == "int" else float(value)


def config_from_controls(values: Mapping | None = None) -> AugmentConfig:
    """The :class:`AugmentConfig` that control ``values`` describe; missing controls take the paper's values.

    Always ``normalise=False`` (see the module docstring). ValueError for an unknown control, a value of
    the wrong type or outside its slider's range, and whatever AugmentConfig rejects (e.g. an even blur kernel).
    """
    values = dict(values or {})
    unknown = sorted(set(values) - set(CONTROLS))
    if unknown:
        raise ValueError(f"unknown control(s) {unknown}; expected some of {list(CONTROLS)}")
    settings = {name: _check_value(name, values.get(name, c.default), c) for name, c in CONTROLS.items()}
    settings["mix"] = "mix_out_clip" if settings.pop("mix_back") else "none"
    return AugmentConfig(**settings, normalise=False)


def _as_clip(clip, name: str) -> np.ndarray:
    x = np.asarray(clip.cpu() if isinstance(clip, torch.Tensor) else clip, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < PATCH_FRAMES or not np.isfinite(x).all():
        raise ValueError(
            f"{name}: expected a finite log-mel clip (frames >= {PATCH_FRAMES}, bands), got shape {x.shape}"
        )
    return x


def render_views(clip_a, clip_b, values: Mapping | None = None, seed: int = PAPER_SEED) -> dict[str, np.ndarray]:
    """Every stage of the two views of ``clip_a`` (T_a, F) log10 mel, with both backgrounds drawn from ``clip_b``.

    ``values``: control values (see :func:`config_from_controls`); ``seed``: the draw (patch starts,
    lambda, augmentation parameters), the same seed gives the same views. Returns float32 (101, F)
    arrays ``view1/2``, ``background1/2`` and ``mixed1/2`` (with mix-back), ``<step>1/2`` for each
    augmentation switched on, in order, ``final1/2``, and ``lambda`` (0-d; with mix-back).
    """
    if isinstance(seed, (bool, np.bool_)) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    a, b = _as_clip(clip_a, "clip_a"), _as_clip(clip_b, "clip_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"clip_a has {a.shape[1]} bands but clip_b has {b.shape[1]}")
    return augment_views(a, b, config_from_controls(values), int(seed))


def stage_names(stages: Mapping[str, np.ndarray]) -> list[str]:
    """The per-view stages of a :func:`render_views` result, in pipeline order, without "final" (= the last one)."""
    return [k[:-1] for k in stages if k.endswith("1") and k != "final1"]


def single_augmentations(
    patch, values: Mapping | None = None, seed: int = 0, names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Each augmentation alone on one (T, F) log10 patch, with the parameters of control ``values``.

    ``names``: augmentations of :data:`~uclser_lib.augment.AUGMENTATIONS` (default: all but "normalise"),
    each switched on whatever its checkbox says. Each draws from its own generator seeded with ``seed``.
    Returns ``{name: (T, F) float32}`` in that order.
    """
    names = list(names or [n for n in AUGMENTATIONS if n != "normalise"])
    bad = [n for n in names if n not in AUGMENTATIONS or n == "normalise"]
    if bad:
        raise ValueError(
            f"no single augmentation {bad}; expected some of {[n for n in AUGMENTATIONS if n != 'normalise']}"
        )
    switched_on = {t: True for n in names for t in _TOGGLES.get(n, (n,))}
    steps = build_augment(config_from_controls({**dict(values or {}), **switched_on})).steps
    x = torch.as_tensor(np.asarray(patch, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"single_augmentations expects one (T, F) patch, got shape {tuple(x.shape)}")
    return {n: steps[n](x, torch.Generator().manual_seed(seed)).numpy() for n in names}


def draw_views(fig_or_axes, stages: Mapping[str, np.ndarray], vmin: float | None = None, vmax: float | None = None):
    """Both views' stages of a :func:`render_views` result as a 2 x n grid of spectrograms on one colour scale.

    ``fig_or_axes``: a Figure / SubFigure (cleared and filled, with a colour bar) or a (2, n) array of Axes,
    n = ``len(stage_names(stages))``. ``vmin`` / ``vmax`` default to the extremes over all stages drawn.
    Returns the (2, n) Axes.
    """
    names = stage_names(stages)
    if hasattr(fig_or_axes, "subplots"):
        fig_or_axes.clear()
        axes = fig_or_axes.subplots(2, len(names), squeeze=False, sharex=True, sharey=True)
    else:
        axes = np.asarray(fig_or_axes)
        if axes.shape != (2, len(names)):
            raise ValueError(f"draw_views needs (2, {len(names)}) axes for stages {names}, got shape {axes.shape}")
    arrays = [stages[f"{n}{v}"] for n in names for v in (1, 2)]
    vmin = min(float(a.min()) for a in arrays) if vmin is None else vmin
    vmax = max(float(a.max()) for a in arrays) if vmax is None else vmax
    for row in range(2):
        for col, name in enumerate(names):
            title = STAGE_TITLES[name]
            if name == "mixed":
                title += f", λ = {float(stages['lambda']):.3f}"
            if col == len(names) - 1:
                title += f" → view {row + 1}"
            ax = plots.spectrogram(axes[row, col], stages[f"{name}{row + 1}"], title=title, vmin=vmin, vmax=vmax)
            ax.title.set_fontsize(9)
            ax.set(xlabel="frame" if row == 1 else "", ylabel=f"view {row + 1}\nmel band" if col == 0 else "")
    if hasattr(fig_or_axes, "subplots"):
        fig_or_axes.colorbar(axes[0, 0].images[0], ax=axes.ravel().tolist(), shrink=0.8, label="log10 mel energy")
    return axes


# ----------------------------------------------------------------------------------------------------------------------
# The panel


def _panel_source(course_or_clips):
    """(PackedClips, option labels, audio paths or Nones, default choices) of a panel's source.

    The source is a Course, a FeatureSet, PackedClips or a list of (T, F) clips.
    """
    meta = getattr(course_or_clips, "meta", None)
    source = getattr(course_or_clips, "train", course_or_clips)
    if isinstance(source, FeatureSet):
        packed, labels = source.clips, source.labels
        names = [f"{source.classes[c]}: {f}" for c, f in zip(labels, source.fnames)]
        by_fname = {c.fname: c for c in meta.train} if meta is not None else {}
        paths = [meta.audio_path("train", by_fname[f]) if f in by_fname else None for f in source.fnames]
        pool = np.flatnonzero(source.clean) if source.clean.any() else np.arange(len(source))
        choices = [int(pool[labels[pool] == c][0]) for c in range(len(source.classes)) if (labels[pool] == c).any()]
        return packed, names, paths, choices
    if isinstance(source, PackedClips):
        packed = source
    elif isinstance(source, Sequence) and len(source) and all(np.ndim(c) == 2 for c in source):
        packed = PackedClips.from_list([_as_clip(c, f"clip {i}") for i, c in enumerate(source)])
    else:
        raise ValueError(
            "augmentation_panel expects a Course, a FeatureSet, PackedClips or a list of (T, F) clips, "
            f"got {type(source).__name__}"
        )
    return packed, [f"clip {i}" for i in range(len(packed))], [None] * len(packed), list(range(min(len(packed), 20)))


def _control_widget(c: Control):
    import ipywidgets as w

    style, layout = {"description_width": "initial"}, w.Layout(width="250px")
    if c.kind == "toggle":
        return w.Checkbox(value=c.default, description=c.label, indent=False, layout=w.Layout(width="170px"))
    if c.kind == "choice":
        return w.Dropdown(options=c.options, value=c.default, description=c.label, style=style, layout=layout)
    cls = {"float": w.FloatSlider, "int": w.IntSlider, "range": w.FloatRangeSlider}[c.kind]
    extra = {"readout_format": ".3g"} if c.kind != "int" else {}
    return cls(
        value=c.default,
        min=c.low,
        max=c.high,
        step=c.step,
        description=c.label,
        continuous_update=False,
        style=style,
        layout=layout,
        **extra,
    )


def augmentation_panel(
    course_or_clips, choices: Sequence[int] | None = None, seed: int = PAPER_SEED, n_iter: int = 32, audio: bool = True
):
    """An ipywidgets panel: pick a clip and a background clip, switch augmentations, move their sliders.

    ``course_or_clips``: a Course (its train split, with the clips' audio), a FeatureSet, PackedClips or
    a list of (T, F) log-mel clips. ``choices``: clip indices offered (default: one clean clip per class,
    or the first 20). Every change redraws both views' stages (:func:`draw_views`) and, with ``audio``, the
    sound of the mixture and the views (:func:`~uclser_lib.features.logmel_to_audio`, ``n_iter`` Griffin-Lim
    iterations);
    "new random draw" moves to the next seed. Returns a VBox; its ``controls`` attribute maps every
    control name (and "clip", "background", "seed", "draw") to its widget, ``stages`` holds the last render.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import Audio, display

    from .features import load_audio

    packed, names, paths, default_choices = _panel_source(course_or_clips)
    choices = list(default_choices if choices is None else choices)
    bad = [i for i in choices if not 0 <= i < len(packed)]
    if len(choices) < 2 or bad:
        raise ValueError(f"augmentation_panel needs at least 2 clip choices among {len(packed)} clips, got {choices}")
    options = [(names[i], i) for i in choices]
    controls = {
        "clip": w.Dropdown(options=options, value=choices[0], description="clip"),
        "background": w.Dropdown(options=options, value=choices[1], description="background"),
        "seed": w.IntText(value=seed, description="seed", layout=w.Layout(width="180px")),
        "draw": w.Button(description="new random draw", icon="refresh", layout=w.Layout(width="auto")),
    }
    controls.update({name: _control_widget(c) for name, c in CONTROLS.items()})
    groups: dict[str, list] = {}
    for name, c in CONTROLS.items():
        groups.setdefault(c.group, []).append(controls[name])
    figure_out, sound_out, clip_sound_out = w.Output(), w.Output(), w.Output()
    status = w.HTML()

    def clip_array(i):
        return packed.clip(i).cpu().numpy()

    def listen(label, y, out):
        with out:
            print(label)
            display(Audio(y, rate=DEFAULT_PARAMS.sr))

    def sound_of(i):
        if paths[i] is not None:
            return load_audio(paths[i])
        return logmel_to_audio(clip_array(i), n_iter), DEFAULT_PARAMS.sr

    def update_clip_sound(_=None):
        clip_sound_out.clear_output(wait=True)
        if not audio:
            return
        for key in ("clip", "background"):
            y, sr = sound_of(controls[key].value)
            with clip_sound_out:
                print(f"{key}: {names[controls[key].value]}")
                display(Audio(y, rate=sr))

    def update(_=None):
        values = {name: controls[name].value for name in CONTROLS}
        try:
            stages = render_views(
                clip_array(controls["clip"].value),
                clip_array(controls["background"].value),
                values,
                controls["seed"].value,
            )
        except ValueError as err:
            status.value = f"<b style='color:#b00'>{err}</b>"
            return
        status.value = ""
        panel.stages = stages
        figure_out.clear_output(wait=True)
        with figure_out:
            fig = plt.figure(figsize=(2.3 * len(stage_names(stages)) + 1.5, 4.8), layout="constrained")
            draw_views(fig, stages)
            display(fig)
            plt.close(fig)
        sound_out.clear_output(wait=True)
        if audio:
            heard = ["mixed1"] if "mixed1" in stages else []
            for key in [*heard, "final1", "final2"]:
                listen(f"{STAGE_TITLES[key[:-1]]} {key[-1]}", logmel_to_audio(stages[key], n_iter), sound_out)

    def new_draw(_):
        controls["seed"].value += 1

    wrap = w.Layout(flex_flow="row wrap")  # narrow pages (the website's column) wrap rows instead of scrolling
    panel = w.VBox(
        [
            w.HBox([controls["clip"], controls["background"], controls["seed"], controls["draw"]], layout=wrap),
            w.VBox([w.HBox(ws, layout=wrap) for ws in groups.values()]),
            status,
            figure_out,
            w.HBox([clip_sound_out, sound_out]),
        ]
    )
    panel.controls, panel.stages = controls, {}
    for name, widget in controls.items():
        if name == "draw":
            widget.on_click(new_draw)
        else:
            widget.observe(update, names="value")
    for key in ("clip", "background"):
        controls[key].observe(update_clip_sound, names="value")
    update_clip_sound()
    update()
    return panel


def augment_views(
    clip_a: np.ndarray, clip_b: np.ndarray, cfg: AugmentConfig, seed: int, mean=None, std=None
) -> dict[str, np.ndarray]:
    """Every stage of the two views of ``clip_a`` (T_a, F), mixed with backgrounds from ``clip_b`` (T_b, F).

    Both backgrounds come from ``clip_b`` (random starts); under "mix_within_clip" from ``clip_a``.
    ``mean`` / ``std`` for the normalisation default to those of the two clips together.
    Returns (101, F) arrays ``view1``, ``view2``, ``background1``, ``background2``, ``mixed1``, ``mixed2``,
    ``<step>1``, ``<step>2`` for each augmentation of ``cfg`` (e.g. ``random_crop1``), ``final1``, ``final2``,
    and ``lambda`` (a 0-d array).
    """
    clips = [np.asarray(clip_a, dtype=np.float32), np.asarray(clip_b, dtype=np.float32)]
    if mean is None or std is None:
        both = np.concatenate(clips)
        mean, std = float(both.mean()), float(both.std())
    builder = ViewBuilder(PackedClips.from_list(clips), cfg, mean, std)
    record: dict[str, torch.Tensor] = {}
    final = builder.build(torch.tensor([0]), torch.Generator().manual_seed(seed), torch.tensor([[1, 1]]), record)
    out = {"lambda": record.pop("lambda")[0].numpy()} if "lambda" in record else {}
    for name, x in [*record.items(), ("final", final)]:
        out[f"{name}1"], out[f"{name}2"] = x[0].numpy(), x[1].numpy()
    return out


def apply_single(name: str, patch: np.ndarray, params: dict | None = None, seed: int = 0) -> np.ndarray:
    """One augmentation alone: ``AUGMENTATIONS[name](**params)`` on ``patch`` (T, F), drawn with ``seed``."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; expected one of {sorted(AUGMENTATIONS)}")
    try:
        step = AUGMENTATIONS[name](**(params or {}))
    except TypeError as e:
        raise ValueError(f"bad parameters {params!r} for augmentation {name!r}: {e}") from None
    x = torch.as_tensor(np.asarray(patch, dtype=np.float32))
    return step(x, torch.Generator().manual_seed(seed)).numpy()


__all__ = [
    "CONTROLS",
    "apply_single",
    "augment_views",
    "Control",
    "STAGE_TITLES",
    "augmentation_panel",
    "config_from_controls",
    "default_controls",
    "draw_views",
    "render_views",
    "single_augmentations",
    "stage_names",
]
