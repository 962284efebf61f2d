"""What an evaluation retrains and how: the ``evaluate:`` and ``tune:`` sections of its config.

An evaluate config is a retrain config (the ``train:`` and ``data:`` sections every retraining
starts from) plus::

    evaluate:
      top: 0             # front genotypes to retrain, most accurate first; 0: the whole front
      random: 2          # cost-matched random genotypes drawn per front genotype
      seeds: 3           # retrainings per genotype, with seeds seed, seed + 1, ...
      cost: params       # the metric random genotypes are matched in: params, flops or mac
      tolerance: 0.1     # matched within +-10% of the front genotype's cost
    tune:                # how the retrainings run (the sweeps' section, see sweep_spec)
      cpus_per_worker: 1

Costs are those of the retrain network (``train.init_channels``, ``train.layers``, the data's
image size). Everything is validated here, before Ray starts; nothing here imports Ray or torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from snas_ray.config import ExperimentConfig, apply_overrides, build_section, read_config_file
from snas_ray.errors import ConfigError
from snas_ray.sweep_spec import SweepOptions

__all__ = ["COSTS", "EvaluateOptions", "EvaluateSpec", "evaluate_from_dict", "load_evaluate"]

COSTS = ("params", "flops", "mac")


@dataclass(frozen=True)
class EvaluateOptions:
    """The ``evaluate:`` section: which genotypes, how many seeds, how random ones are matched."""

    top: int = 0  # front genotypes, most accurate first; 0: all of the front
    random: int = 2  # cost-matched random genotypes per front genotype
    seeds: int = 3  # retrainings per genotype: seeds seed, seed + 1, ..., seed + seeds - 1
    cost: str = "params"  # params | flops | mac, at the retrain network's size
    tolerance: float = 0.1  # a random genotype's cost is within +-tolerance of its match's
    draw_seed: int = 0  # seeds the random draws (recorded in evaluation.json)
    max_tries: int = 200  # candidate draws per random genotype before giving up
    metric: str = "val_acc"  # the search metric that ranks the front (collect's --metric)
    confidence: float = 0.95  # of the verdict's interval on the difference of means

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"evaluate.{name}", message)

        check(self.top >= 0, "top", "must be >= 0 (0: the whole front)")
        check(self.random >= 0, "random", "must be >= 0")
        check(self.seeds >= 1, "seeds", "must be >= 1")
        check(
            self.cost in COSTS, "cost", f"unknown value {self.cost!r} (allowed: params, flops, mac)"
        )
        check(0 < self.tolerance < 1, "tolerance", "must be in (0, 1), e.g. 0.1 for +-10%")
        check(self.max_tries >= 1, "max_tries", "must be >= 1")
        check(bool(self.metric), "metric", "must name a result.json accuracy key")
        check(0.5 <= self.confidence < 1, "confidence", "must be in [0.5, 1), e.g. 0.95")


@dataclass(frozen=True)
class EvaluateSpec:
    """A validated evaluation: the retrain config, what to retrain, and how trials run."""

    base: ExperimentConfig
    options: EvaluateOptions
    tune: SweepOptions

    def seeds(self) -> list[int]:
        """The retrain seeds of every genotype."""
        return [self.base.seed + i for i in range(self.options.seeds)]

    def to_dict(self) -> dict[str, Any]:
        """The evaluate config as YAML would hold it (``evaluate_from_dict`` reads it back)."""
        return self.base.to_dict() | {
            "evaluate": dataclasses.asdict(self.options),
            "tune": dataclasses.asdict(self.tune),
        }


def _split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """``--set`` items: base config keys, ``evaluate.FIELD=value`` and ``tune.FIELD=value``."""
    base, evaluate, tune = [], {}, {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, _, rest = key.strip().partition(".")
        if sep and section in ("evaluate", "tune") and rest:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ConfigError(key, f"cannot read {raw!r} as YAML") from None
            (evaluate if section == "evaluate" else tune)[rest] = value
        else:
            base.append(item)
    return base, evaluate, tune


def evaluate_from_dict(tree: dict[str, Any], overrides: list[str] | None = None) -> EvaluateSpec:
    """Build and validate an evaluation from its YAML tree (what ``to_dict`` returns)."""
    tree = dict(tree)
    if "sweep" in tree:
        raise ConfigError("sweep", "belongs to a sweep config; an evaluate config has evaluate:")
    sections = {}
    for name in ("evaluate", "tune"):
        section = tree.pop(name, None) or {}
        if not isinstance(section, dict):
            raise ConfigError(name, f"expected a mapping, got {type(section).__name__}")
        sections[name] = section
    base_overrides, evaluate_set, tune_set = _split_overrides(overrides or [])
    base = apply_overrides(ExperimentConfig.from_dict(tree), base_overrides)
    options = build_section(
        EvaluateOptions, {**sections["evaluate"], **evaluate_set}, prefix="evaluate."
    )
    tune = build_section(SweepOptions, {**sections["tune"], **tune_set}, prefix="tune.")
    if tune.early_stopping:
        raise ConfigError(
            "tune.early_stopping", "an evaluation retrains every genotype to the end (use false)"
        )
    return EvaluateSpec(base, options, tune)


def load_evaluate(
    path: str | Path | None, overrides: list[str] | None = None, *, defaults: dict | None = None
) -> EvaluateSpec:
    """Read an evaluate config; ``--set`` may change base keys, ``evaluate.F`` or ``tune.F``.

    ``defaults`` (a config tree) stands in for the file when ``path`` is None.
    """
    tree = read_config_file(path) if path is not None else dict(defaults or {})
    return evaluate_from_dict(tree, overrides)
