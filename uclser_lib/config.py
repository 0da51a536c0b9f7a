"""YAML configs for the command line: safe loading, ``--key value`` overrides, unknown keys and wrong types rejected."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path

import yaml

__all__ = [
    "CONFIG_DIR",
    "KEY_RANGES",
    "ConfigError",
    "DuplicateKeyError",
    "build",
    "load_yaml",
    "merge",
    "parse_overrides",
    "read_yaml",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config file or override that does not fit the settings it configures."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 numbers such as ``1e-3`` (YAML 1.1 reads them as strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping sets one key twice (YAML forbids it; PyYAML would keep the last value without a word)."""


def _construct_mapping(loader: _Loader, node, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue  # ``<<: *base`` may be overridden by the keys beside it
        key = loader.construct_object(key_node)
        if key in seen:
            raise DuplicateKeyError(
                f"key {key!r} is set twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one"
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_Loader.construct_mapping = _construct_mapping


def load_yaml(text: str):
    """``yaml.safe_load`` of ``text``, but ``1e-3`` is a float (YAML 1.2's numbers), and a key set twice in one
    mapping is a :class:`DuplicateKeyError` (a ``yaml.YAMLError``) naming the key and its lines."""
    return yaml.load(text, Loader=_Loader)


#: Allowed values of the numeric settings, by key name, for every config built by :func:`build`:
#: (lowest, lowest included, highest, highest included, what the setting needs). Every float must be finite.
KEY_RANGES: dict[str, tuple] = {
    "lr": (0, False, math.inf, False, "a number > 0"),
    "momentum": (0, True, 1, False, "a number in [0, 1)"),
    "weight_decay": (0, True, math.inf, False, "a number >= 0"),
    "gamma": (0, False, 1, True, "a number in (0, 1]"),
    "temperature": (0, False, math.inf, False, "a number > 0"),
    "epochs": (1, True, math.inf, False, "an integer >= 1"),
    "batch_size": (1, True, math.inf, False, "an integer >= 1"),
    "probe_epochs": (0, True, math.inf, False, "an integer >= 0"),
    "proj_hidden": (1, True, math.inf, False, "an integer >= 1"),
    "proj_dim": (1, True, math.inf, False, "an integer >= 1"),
    "knn_every": (0, True, math.inf, False, "an integer >= 0 (0: never)"),
    "knn_k": (1, True, math.inf, False, "an integer >= 1"),
    "seed": (0, True, 2**63 - 1, True, "an integer >= 0"),
    "milestones": (1, True, math.inf, False, "a list of epochs >= 1"),
}


def _check_range(where: str, key: str, value) -> None:
    if key not in KEY_RANGES:
        return
    lo, lo_in, hi, hi_in, what = KEY_RANGES[key]
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue  # the type check names it
        ok = math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        if not ok:
            raise ConfigError(f"{where}: expected {what}, got {v!r}")


def read_yaml(path) -> dict:
    """A YAML mapping from ``path`` (``yaml.safe_load``; a key set twice is refused), or a clear error."""
    path = Path(path)
    if not path.is_file():
        shipped = CONFIG_DIR / Path(path).name
        if shipped.is_file():  # "pretrain.yaml" names a shipped config
            path = shipped
        else:
            raise ConfigError(
                f"{path}: no such config file (shipped configs: {sorted(p.name for p in CONFIG_DIR.glob('*.yaml'))})"
            )
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except DuplicateKeyError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def parse_overrides(args: list[str]) -> dict:
    """Command-line overrides to a nested dict; values are parsed as YAML (1.2 numbers: ``1e-3`` is a float).

    ``["--epochs", "10", "--augment.mix_alpha=0.1"]`` -> ``{"epochs": 10, "augment": {"mix_alpha": 0.1}}``:
    ``--key value`` or ``--key=value``.
    """
    pairs, i = [], 0
    while i < len(args):
        key = args[i]
        if not key.startswith("--") or len(key) < 3:
            raise ConfigError(f"{key}: expected an override --key value (or --section.key value, --key=value)")
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 2
        else:
            raise ConfigError(
                f"{key}: expected a value after it (overrides come in --key value pairs or as --key=value)"
            )
        pairs.append((key, value))
    out: dict = {}
    for key, value in pairs:
        *parents, leaf = key[2:].replace("-", "_").split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is set both as a value and as a section")
        try:
            node[leaf] = load_yaml(value)
        except yaml.YAMLError:
            node[leaf] = value  # not YAML: the string itself, whose type the config then checks
    return out


def merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, recursively for nested mappings."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_type(where: str, value, hint):
    origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = set(typing.get_args(hint)) - {Ellipsis} or {typing.Any}
        items = [v if item is typing.Any else _check_type(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def build(cls, values: dict, where: str = "config"):
    """An instance of dataclass ``cls`` from ``values``; unknown keys and wrong types raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a mapping, got {value!r}")
            kwargs[key] = build(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = _check_type(f"{where}.{key}", value, hint)
            _check_range(f"{where}.{key}", key, kwargs[key])
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # the dataclass's own range checks
        key = str(err).split(":", 1)[0]
        raise ConfigError(f"{where}.{err}" if key in names else f"{where}: {err}") from None
