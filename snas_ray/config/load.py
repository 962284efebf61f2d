"""Building an :class:`ExperimentConfig`: defaults -> YAML file -> ``--set key=value``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snas_ray.config.sections import ExperimentConfig
from snas_ray.config.typed_yaml import (
    parse_override_value,
    read_yaml_mapping,
    set_dotted,
    to_plain,
)
from snas_ray.errors import ConfigError

__all__ = ["apply_overrides", "load_config", "read_config_file"]


def apply_overrides(
    base: ExperimentConfig | dict[str, Any], overrides: list[str]
) -> ExperimentConfig:
    """Apply ``key=value`` strings (values parsed as YAML, never eval)."""
    tree = base.to_dict() if isinstance(base, ExperimentConfig) else to_plain(base)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                item, "override must look like key=value (e.g. cost.resource_lambda=1e-3)"
            )
        value = parse_override_value(raw, key.strip())
        set_dotted(tree, key.strip(), value, ExperimentConfig)
    return ExperimentConfig.from_dict(tree)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (safe types, no repeated keys); one-line errors."""
    return read_yaml_mapping(path)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``; validated, frozen."""
    tree = read_yaml_mapping(path) if path is not None else {}
    if "evaluate" in tree:
        raise ConfigError("evaluate", "belongs to an evaluate config: run `snas-ray evaluate`")
    for section in ("sweep", "tune"):
        if section in tree:
            raise ConfigError(section, "belongs to a sweep config: run it with `snas-ray sweep`")
    cfg = ExperimentConfig.from_dict(tree)
    return apply_overrides(cfg, overrides or [])
