"""YAML configs for the command line: safe loading, ``--key value`` overrides, unknown keys and wrong types rejected."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

__all__ = ["CONFIG_DIR", "ConfigError", "build", "merge", "parse_overrides", "read_yaml"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config file or override that does not fit the settings it configures."""


def read_yaml(path) -> dict:
    """A YAML mapping from ``path`` (``yaml.safe_load``), or a clear error."""
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
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def parse_overrides(args: list[str]) -> dict:
    """Command-line overrides to a nested dict; values are parsed as YAML.

    ``["--epochs", "10", "--augment.mix_alpha", "0.1"]`` -> ``{"epochs": 10, "augment": {"mix_alpha": 0.1}}``.
    """
    if len(args) % 2:
        raise ConfigError(f"overrides come in '--key value' pairs, got {args}")
    out: dict = {}
    for key, value in zip(args[::2], args[1::2]):
        if not key.startswith("--") or len(key) < 3:
            raise ConfigError(f"override {key!r} should look like --key (or --section.key)")
        *parents, leaf = key[2:].replace("-", "_").split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
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
    try:
        return cls(**kwargs)
    except ValueError as err:  # the dataclass's own range checks
        raise ConfigError(f"{where}: {err}") from None
