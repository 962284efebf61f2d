"""What a sweep varies and how it runs: the ``sweep:`` and ``tune:`` sections of a sweep config.

A sweep config is an experiment config (the base search every trial starts from) plus::

    sweep:                                  # dotted config key -> values
      cost.resource_lambda: {grid: [0, 1e-3, 1e-2]}
      cost.estimator: {grid: [reparametrization, discrete, policy_gradient]}
      seed: {grid: [0, 1]}
      optim.arch_lr: {loguniform: [1e-4, 1e-2], samples: 4}
    tune:                                   # how trials run (SweepOptions)
      cpus_per_worker: 1

Grids are crossed; random keys (``uniform``, ``loguniform``, ``choice``) draw a new value for
every trial, and the whole grid is repeated ``samples`` times (Ray Tune's ``num_samples``).
Every value is validated against the config schema here, before Ray starts. Nothing here
imports Ray; :mod:`snas_ray.distributed.sweep` turns a :class:`SweepSpec` into a Tune run.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from snas_ray.config import (
    ExperimentConfig,
    apply_overrides,
    build_section,
    dump_value,
    read_config_file,
)
from snas_ray.errors import ConfigError

__all__ = [
    "DISTRIBUTIONS",
    "ParamSpec",
    "SweepOptions",
    "SweepSpec",
    "load_sweep",
    "progress_metrics",
    "sweep_from_dict",
    "trial_dirname",
]

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform")
MAX_TRIALS = 10_000  # beyond this a sweep is a typo (Tune would only queue trials forever)
# Short names for run-folder names; other keys use their last dotted part.
_SHORT = {"cost.resource_lambda": "lambda", "cost.estimator": "est"}


@dataclass(frozen=True)
class SweepOptions:
    """The ``tune:`` section: trial resources, concurrency, retries, optional early stopping."""

    workers_per_trial: int = 1  # 1: the search runs inside the trial; >1: a nested TorchTrainer
    cpus_per_worker: float = 1.0  # also the trial's torch threads (at least 1)
    gpus_per_worker: float = 0.0  # fractions only when workers_per_trial == 1
    max_concurrent_trials: int = 0  # 0: as resources allow (nested trials: as they fit now)
    max_failures: int = 2  # retries of a failed trial (it resumes from its last checkpoint)
    early_stopping: bool = False  # ASHA on stop_metric; kills cheap high-lambda trials first
    stop_metric: str = "val_acc"
    grace_epochs: int = 2
    reduction_factor: float = 3.0

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"tune.{name}", message)

        check(1 <= self.workers_per_trial <= 1024, "workers_per_trial", "must be in [1, 1024]")
        check(0 < self.cpus_per_worker <= 1024, "cpus_per_worker", "must be in (0, 1024]")
        check(0 <= self.gpus_per_worker <= 64, "gpus_per_worker", "must be in [0, 64]")
        fractional = 0 < self.gpus_per_worker < 1 or not float(self.gpus_per_worker).is_integer()
        check(
            not (fractional and self.workers_per_trial > 1),
            "gpus_per_worker",
            "fractional GPUs only with workers_per_trial: 1 (DDP ranks need whole GPUs)",
        )
        check(self.max_concurrent_trials >= 0, "max_concurrent_trials", "must be >= 0 (0: auto)")
        check(self.max_failures >= -1, "max_failures", "must be >= -1 (-1: retry forever)")
        check(
            self.stop_metric in ("val_acc", "val_acc_relaxed"),
            "stop_metric",
            f"unknown value {self.stop_metric!r} (allowed: val_acc, val_acc_relaxed)",
        )
        check(self.grace_epochs >= 1, "grace_epochs", "must be >= 1")
        check(self.reduction_factor > 1, "reduction_factor", "must be > 1")


@dataclass(frozen=True)
class ParamSpec:
    """One swept key: ``kind`` is a member of :data:`DISTRIBUTIONS`."""

    key: str
    kind: str
    values: tuple[Any, ...]  # grid/choice: the values; uniform/loguniform: (low, high)
    samples: int = 1  # random kinds: trials per grid point (Tune's num_samples)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {self.kind: list(self.values)}
        if self.kind not in ("grid",) and self.samples != 1:
            body["samples"] = self.samples
        return body


def _parse_param(key: str, body: Any, base: ExperimentConfig) -> ParamSpec:
    where = f"sweep.{key}"
    if not isinstance(body, dict):
        # A bare value or list is the commonest slip; say what to write instead.
        kinds = ", ".join(DISTRIBUTIONS)
        raise ConfigError(where, f"expected e.g. {{grid: [...]}} (one of {kinds})")
    kinds = [k for k in body if k in DISTRIBUTIONS]
    extra = [k for k in body if k not in DISTRIBUTIONS and k != "samples"]
    if extra or len(kinds) != 1:
        bad = extra[0] if extra else "/".join(kinds) or "nothing"
        raise ConfigError(
            where, f"got {bad!r}: give exactly one of {', '.join(DISTRIBUTIONS)} (plus samples)"
        )
    kind = kinds[0]
    raw = body[kind]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}.{kind}", "expected a non-empty list")
    samples = body.get("samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_TRIALS:
        raise ConfigError(f"{where}.samples", f"must be an integer in [1, {MAX_TRIALS}]")
    if kind == "grid" and "samples" in body:
        raise ConfigError(f"{where}.samples", "applies to random kinds; repeat a grid with tune")
    values: list[Any] = []
    if kind in ("uniform", "loguniform"):
        if len(raw) != 2:
            raise ConfigError(f"{where}.{kind}", "expected [low, high]")
        try:
            low, high = (float(v) for v in raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{kind}", f"expected two numbers, got {raw!r}") from None
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ConfigError(f"{where}.{kind}", "needs low < high (and low > 0 for loguniform)")
        raw = [low, high]
    for value in raw:  # each value (or bound) must make a valid config
        try:
            checked = apply_overrides(base, [f"{key}={dump_value(value)}"])
        except ConfigError as exc:
            inner = exc.message if exc.field_name == key else f"{exc.field_name}: {exc.message}"
            raise ConfigError(where, f"value {value!r}: {inner}") from None
        values.append(_read_dotted(checked.to_dict(), key))
    return ParamSpec(key, kind, tuple(values), samples)


def _read_dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the base config, the swept keys, and how trials run."""

    base: ExperimentConfig
    params: tuple[ParamSpec, ...]
    options: SweepOptions

    @property
    def num_samples(self) -> int:
        """Repeats of the grid (Tune's ``num_samples``): the largest ``samples`` of any key."""
        return max((p.samples for p in self.params), default=1)

    @property
    def num_trials(self) -> int:
        grid = math.prod(len(p.values) for p in self.params if p.kind == "grid")
        return grid * self.num_samples

    def grid_points(self) -> list[dict[str, Any]]:
        """Every assignment of the grid keys (random keys are drawn by Tune)."""
        grid = [p for p in self.params if p.kind == "grid"]
        return [
            dict(zip([p.key for p in grid], combo, strict=True))
            for combo in itertools.product(*(p.values for p in grid))
        ]

    def trial_config(self, assignment: dict[str, Any]) -> ExperimentConfig:
        """The base config with one trial's values (dotted key -> value) applied."""
        unknown = set(assignment) - {p.key for p in self.params}
        if unknown:
            raise ConfigError(f"sweep.{sorted(unknown)[0]}", "is not a swept key of this sweep")
        return apply_overrides(self.base, [f"{k}={dump_value(v)}" for k, v in assignment.items()])

    def to_dict(self) -> dict[str, Any]:
        """The sweep config as YAML would hold it (``load_sweep`` reads it back)."""
        return self.base.to_dict() | {
            "sweep": {p.key: p.to_dict() for p in self.params},
            "tune": dataclasses.asdict(self.options),
        }

    def identity(self) -> dict[str, Any]:
        """What must match for a re-run to continue this sweep (not how it is scheduled)."""
        return {"base": self.base.to_dict(), "sweep": {p.key: p.to_dict() for p in self.params}}


def trial_dirname(index: int, assignment: dict[str, Any]) -> str:
    """``003-lambda=0.001-est=discrete-seed=1``: sortable, readable, filesystem-safe."""
    parts = [f"{index:03d}"]
    for key, value in assignment.items():
        short = _SHORT.get(key, key.rsplit(".", 1)[-1])
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{short}={text}")
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts))[:120]


def _split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """``--set`` items: base config keys, ``sweep.KEY={...}`` and ``tune.FIELD=value``."""
    base, sweep, tune = [], {}, {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, _, rest = key.strip().partition(".")
        if sep and section in ("sweep", "tune") and rest:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ConfigError(key, f"cannot read {raw!r} as YAML") from None
            (sweep if section == "sweep" else tune)[rest] = value
        else:
            base.append(item)
    return base, sweep, tune


def load_sweep(path: str | Path | None, overrides: list[str] | None = None) -> SweepSpec:
    """Read a sweep config; ``--set`` may change base keys, ``sweep.KEY`` or ``tune.FIELD``."""
    tree = read_config_file(path) if path is not None else {}
    return sweep_from_dict(tree, overrides)


def sweep_from_dict(tree: dict[str, Any], overrides: list[str] | None = None) -> SweepSpec:
    """Build and validate a sweep from its YAML tree (what :meth:`SweepSpec.to_dict` returns)."""
    tree = dict(tree)
    sweep_tree = tree.pop("sweep", None) or {}
    tune_tree = tree.pop("tune", None) or {}
    for name, section in (("sweep", sweep_tree), ("tune", tune_tree)):
        if not isinstance(section, dict):
            raise ConfigError(name, f"expected a mapping, got {type(section).__name__}")
    base_overrides, sweep_set, tune_set = _split_overrides(overrides or [])
    base = apply_overrides(ExperimentConfig.from_dict(tree), base_overrides)
    sweep_tree = {**sweep_tree, **sweep_set}
    if not sweep_tree:
        example = "cost.resource_lambda: {grid: [0, 1e-3]}"
        raise ConfigError("sweep", f"names nothing to vary (e.g. {example})")
    params = tuple(_parse_param(str(k), v, base) for k, v in sweep_tree.items())
    repeats = {p.samples for p in params if p.kind != "grid"}
    if len(repeats) > 1:  # Tune has one num_samples for the whole sweep
        got = ", ".join(map(str, sorted(repeats)))
        raise ConfigError("sweep", f"random keys must share one samples value (got {got})")
    options = build_section(SweepOptions, {**tune_tree, **tune_set}, prefix="tune.")
    spec = SweepSpec(base, params, options)
    if spec.num_trials > MAX_TRIALS:
        raise ConfigError("sweep", f"makes {spec.num_trials} trials; at most {MAX_TRIALS}")
    return spec


def progress_metrics(cfg: ExperimentConfig, record: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The flat per-epoch numbers a sweep's progress table and schedulers read; ``epoch`` is the
    1-based number the log and ``metrics.jsonl`` use (epochs done after it)."""
    return {
        "epoch": epoch,
        "val_acc": record.get("val/acc_child", float("nan")),
        "val_acc_relaxed": record.get("val/acc_relaxed", float("nan")),
        # The expected child (drawn from the softmax) in the same units as the derived child.
        "expected_params": record.get("child/expected_params", float("nan")),
        "child_params": record.get("child/params", float("nan")),
        "child_flops": record.get("child/flops", float("nan")),
        "child_mac": record.get("child/mac", float("nan")),
        "entropy_frac": record.get("arch/entropy_frac", float("nan")),
        "tau": record.get("arch/tau", float("nan")),
        "resource_lambda": cfg.cost.resource_lambda,
        "lambda_now": record.get("cost/lambda_now", cfg.cost.resource_lambda),
        "estimator": cfg.cost.estimator,
    }
