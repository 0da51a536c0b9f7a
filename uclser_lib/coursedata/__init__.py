"""The course dataset: a procedural stand-in for FSDnoisy18k, written in FSDnoisy18k's exact layout.

FSDnoisy18k (docs/method.md §2) cannot be downloaded everywhere, so the course can make its own:
the same 20 classes, each with a small sound recipe written in NumPy, mixed over background
noise at a random SNR, split and labelled like FSDnoisy18k (a small clean train subset, a
large train subset with structured label noise, a clean test set) and stored exactly as
FSDnoisy18k is, so one loading code path serves both::

    root/FSDnoisy18k.audio_train/<id>.wav        44.1 kHz, 16-bit PCM, mono
    root/FSDnoisy18k.audio_test/<id>.wav
    root/FSDnoisy18k.meta/train.csv              fname,label,aso_id,manually_verified,noisy_small
    root/FSDnoisy18k.meta/test.csv               fname,label,aso_id
    root/FSDnoisy18k.meta/course_truth.csv       fname,true_label,label_state   (course only; every clip)
    root/FSDnoisy18k.meta/course_manifest.json   preset, seed, rates, library version

Label noise of the noisy subset: a share ``wrong_rate`` of its labels name another class than
the one that sounds, and a share ``incomplete_rate`` name the class that sounds while another
class's event is mixed in. Both draw the other class mostly among the label's confusable
neighbours (:data:`CONFUSABLE_PAIRS`), as web labels do. :func:`plan_dataset` gives every clip's
truth without audio (including the mixed-in class of incomplete labels); :func:`synthesize` one
clean event of a class, to listen to a recipe.

The audio of clip ``i`` depends only on ``(seed, i)`` (and its row of the plan), so an
interrupted :func:`generate` resumes to byte-identical files.

A multi-label version (:mod:`.multilabel`) mixes events of one to three of the 20 classes per clip,
overlapping or one after another, labelled with their classes and those classes' AudioSet ancestors,
and is written in FSD50K's exact layout (``FSD50K.dev_audio``, ``FSD50K.eval_audio``,
``FSD50K.ground_truth/{dev,eval,vocabulary}.csv``) by :func:`generate_multilabel`.
"""

from __future__ import annotations

from .dsp import SAMPLE_RATE, SR
from .multilabel import (
    ML_PRESETS,
    ML_VOCABULARY,
    MULTILABEL_VERSION,
    ONTOLOGY,
    MultiLabelClip,
    MultiLabelPreset,
    course_multilabel_dataset_name,
    generate_multilabel,
    multilabel_preset_of,
    plan_multilabel,
    read_events,
)
from .plan import (
    ASO_IDS,
    CLASS_NOISE_SPREAD,
    CONFUSABLE_PAIRS,
    DATASET_VERSION,
    INCOMPLETE_RATE,
    NEIGHBOUR_SHARE,
    NEIGHBOURS,
    OOV_RATE,
    PRESETS,
    WRONG_RATE,
    ClipPlan,
    CoursePreset,
    plan_dataset,
    relabel,
)
from .recipes import OOV_RECIPES, RECIPES, synthesize
from .writer import MANIFEST, TRUTH_HEADER, generate, read_truth, render_clip

__all__ = [
    "ASO_IDS",
    "CLASS_NOISE_SPREAD",
    "DATASET_VERSION",
    "OOV_RATE",
    "OOV_RECIPES",
    "CONFUSABLE_PAIRS",
    "INCOMPLETE_RATE",
    "MANIFEST",
    "ML_PRESETS",
    "ML_VOCABULARY",
    "MULTILABEL_VERSION",
    "ONTOLOGY",
    "NEIGHBOURS",
    "NEIGHBOUR_SHARE",
    "PRESETS",
    "RECIPES",
    "SAMPLE_RATE",
    "SR",
    "TRUTH_HEADER",
    "WRONG_RATE",
    "ClipPlan",
    "CoursePreset",
    "MultiLabelClip",
    "MultiLabelPreset",
    "course_multilabel_dataset_name",
    "generate",
    "generate_multilabel",
    "multilabel_preset_of",
    "plan_dataset",
    "plan_multilabel",
    "read_events",
    "read_truth",
    "relabel",
    "render_clip",
    "synthesize",
]
