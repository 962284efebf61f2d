"""YAML values checked against dataclass annotations: the parsing under ``snas_ray.config``.

Generic over any tree of frozen dataclasses; knows nothing of the experiment's sections. Values
come from ``yaml.safe_load`` only (never ``eval``); every error is a one-line
:class:`~snas_ray.errors.ConfigError` naming the dotted field.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from snas_ray.errors import ConfigError

__all__ = [
    "build_section",
    "dump_value",
    "read_yaml_mapping",
    "set_dotted",
    "to_plain",
    "unknown_key",
]


def to_plain(value: Any) -> Any:
    """Nested dicts, lists and scalars only (tuples become lists)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def dump_value(value: Any) -> str:
    """``value`` as the YAML text an override ``key=value`` takes."""
    return yaml.safe_dump(to_plain(value), default_flow_style=True).strip().removesuffix("...")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def unknown_key(cls: type, key: str, prefix: str) -> ConfigError:
    names = _field_names(cls)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (allowed: {', '.join(names)})"
    return ConfigError(f"{prefix}{key}", f"unknown key{hint}")


def build_section(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from mapping ``data``, coercing each value to its annotation;
    unknown keys and wrong types are :class:`ConfigError` naming ``prefix`` + the key."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            raise unknown_key(cls, str(key), prefix)
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field (none today; kept for safety)
        raise ConfigError(where, str(exc)) from None


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """Check ``value`` against the annotation ``hint``; allow int -> float, list -> tuple."""
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, prefix=f"{name}.")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, name) for v in value)
        if len(value) != len(args):
            raise ConfigError(name, f"expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, name) for a, v in zip(args, value, strict=True))
    if hint is float:
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept it where a number is expected.
        if isinstance(value, str):
            value = _maybe_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"expected a string, got {value!r}")
        return value
    raise ConfigError(name, f"unsupported type {hint!r}")  # pragma: no cover


def set_dotted(tree: dict[str, Any], dotted: str, value: Any, root: type) -> None:
    """Set ``tree[a][b]... = value`` for ``a.b...``, checking each key against ``root``'s fields."""
    parts = dotted.split(".")
    node = tree
    cls: type = root
    for i, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[:i]) + ("." if i else "")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise unknown_key(cls, part, prefix)
        if not dataclasses.is_dataclass(hints[part]):
            raise ConfigError(".".join(parts[: i + 1]), "is not a section")
        cls = hints[part]
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is not a section")
    prefix = ".".join(parts[:-1]) + ("." if len(parts) > 1 else "")
    if parts[-1] not in typing.get_type_hints(cls):
        raise unknown_key(cls, parts[-1], prefix)
    node[parts[-1]] = value


def _maybe_number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (``safe_load`` only); one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("--config", f"file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError("--config", f"{p} is not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("--config", f"{p} must hold a mapping of sections")
    return loaded
