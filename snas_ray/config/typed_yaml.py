"""YAML values checked against dataclass annotations: the parsing under ``snas_ray.config``.

Generic over any tree of frozen dataclasses; knows nothing of the experiment's sections. Values
come from PyYAML's safe loader only (never ``eval``), which here also refuses a repeated key;
numbers must be finite; every error is a one-line
:class:`~snas_ray.errors.ConfigError` naming the dotted field.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from snas_ray.errors import ConfigError

__all__ = [
    "MAX_INT",
    "build_section",
    "dump_value",
    "parse_override_value",
    "parse_yaml",
    "read_yaml_mapping",
    "set_dotted",
    "to_plain",
    "unknown_key",
]

MAX_INT = 2**63 - 1  # no config integer may exceed what torch and numpy hold in an int64


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding the same key twice (PyYAML keeps the
    last one silently, so a config's first setting would vanish without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str, field_name: str) -> Any:
    """``text`` parsed as YAML (safe types only, no duplicate keys); a :class:`ConfigError`
    naming ``field_name`` and ``where`` (a file, a line) when it is not valid YAML."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        detail = f": {problem}" if problem and "duplicate key" in problem else ""
        raise ConfigError(field_name, f"{where} is not valid YAML{at}{detail}") from None
    except RecursionError:
        raise ConfigError(field_name, f"{where} is nested too deeply") from None


def parse_override_value(raw: str, key: str) -> Any:
    """The value of ``--set key=raw``: YAML where it parses (``1e-3``, ``[0.5, 0.9]``), else the
    text itself; a flow mapping with a repeated key is an error naming ``key``."""
    try:
        return yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(key, f"{exc.problem} in {raw!r}") from None
    except (yaml.YAMLError, RecursionError):
        return raw


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
        if not math.isfinite(value) or abs(value) > 1e300:  # 10**400 is an int, inf as a float
            raise ConfigError(name, f"expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}")
        if abs(value) > MAX_INT:
            raise ConfigError(name, f"{value} is out of range (at most {MAX_INT} in magnitude)")
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


def read_yaml_mapping(path: str | Path, field_name: str = "--config") -> dict[str, Any]:
    """The mapping a YAML file holds (safe types only, no duplicate keys); every problem is a
    one-line :class:`ConfigError` naming ``field_name``: missing, not a regular file,
    unreadable, not UTF-8, not YAML, or not a mapping."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(field_name, f"file not found: {p}")
    if not p.is_file():  # a folder, or a FIFO that would block the read forever
        raise ConfigError(field_name, f"{p} is not a regular file")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(field_name, f"cannot read {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(field_name, f"{p} is not UTF-8 text (byte {exc.start})") from None
    loaded = parse_yaml(text, str(p), field_name)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(field_name, f"{p} must hold a mapping of sections")
    return loaded
