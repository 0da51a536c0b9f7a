"""The dataset chooser (uclser_lib.datasets): its naming helpers, and the one protocol every prepared dataset meets."""

import inspect
import types
import typing
from pathlib import Path

import numpy as np
import pytest

from uclser_lib import datasets
from uclser_lib.datasets import ClipLists, Course, PreparedDataset, course_dataset_name, describe
from uclser_lib.folders import FolderError, RealDataset


def test_describe_names_the_course_dataset_version_and_preset():
    assert describe("course2_course") == "course dataset v2 (course preset)"
    assert describe("course_tiny") == "course dataset v1 (tiny preset)"
    assert describe(course_dataset_name("smoke")).endswith("(smoke preset)")
    assert describe("esc50") == "esc50" and describe("my_recordings") == "my_recordings"


def conforms(value, hint) -> bool:
    """``value`` is of the annotated type ``hint`` (unions, None, ``list[...]`` / ``dict[...]`` items, protocols)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(conforms(value, a) for a in args)
    if hint is None or hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    return isinstance(value, hint)


def members(protocol) -> tuple[dict, dict]:
    """The annotated properties ``{name: type}`` and methods ``{name: signature}`` that ``protocol`` declares."""
    props, methods = {}, {}
    for name, v in vars(protocol).items():
        if name.startswith("_"):
            continue
        if isinstance(v, property):
            props[name] = typing.get_type_hints(v.fget, vars(datasets))["return"]
        elif callable(v):
            methods[name] = inspect.signature(v)
    return props, methods


def check_meets(obj, protocol) -> None:
    assert isinstance(obj, protocol), f"{type(obj).__name__} is not a {protocol.__name__}"
    props, methods = members(protocol)
    for name, hint in props.items():
        value = getattr(obj, name)
        assert conforms(value, hint), f"{type(obj).__name__}.{name} is {type(value).__name__}, declared {hint}"
    for name, sig in methods.items():
        have = inspect.signature(getattr(obj, name)).parameters
        want = [p for p in sig.parameters if p != "self"]
        assert list(have)[: len(want)] == want, f"{type(obj).__name__}.{name}{tuple(have)}: declared {sig}"
        extra = [p for p in list(have)[len(want) :] if have[p].default is inspect.Parameter.empty]
        assert not extra, f"{type(obj).__name__}.{name}: parameters {extra} beyond the protocol need defaults"


def test_the_protocol_lists_what_callers_use():
    props, methods = members(PreparedDataset)
    assert {"root", "name", "train", "test", "meta", "labelled", "unlabelled", "classes"} <= set(props)
    assert {"check", "check_task", "splits"} <= set(methods)
    assert typing.get_type_hints(datasets.prepare)["return"] is PreparedDataset


def test_course_and_real_dataset_both_meet_the_protocol():
    course = datasets.prepare("tiny", progress=False)
    labels = course.train.labels  # the same clips in three folds, as ESC-50's five
    folds = np.array([(labels[:i] == y).sum() % 3 + 1 for i, y in enumerate(labels)])
    real = RealDataset(course.root, "tiny in folds", course.train, folds=folds, features_dir=course.features_dir)
    for ds in (course, real):
        check_meets(ds, PreparedDataset)
        check_meets(ds.meta, ClipLists)
        assert ds.labelled is not None and ds.check_task("clean") is None and ds.check_task("noisy") is None
        splits = ds.splits(0)
        assert {"pretrain", "val", "test", "clean_train", "clean_val"} <= set(splits)
        assert conforms(splits, typing.get_type_hints(PreparedDataset.splits, vars(datasets))["return"])
    assert isinstance(course, Course) and course.unlabelled is None and course.classes == course.train.classes
    # a folder of unlabelled audio only: callers see ``labelled is None``; what needs labels is refused, one line
    bare = RealDataset(Path(course.root), "unlabelled only", None, unlabelled=course.train)
    assert bare.labelled is None and bare.unlabelled is course.train
    for needs_labels in (lambda: bare.check_task("clean"), lambda: bare.classes, lambda: bare.splits(0)):
        with pytest.raises(FolderError, match="no labelled clips"):
            needs_labels()
