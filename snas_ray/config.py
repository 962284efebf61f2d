"""One typed experiment config: dataclass defaults -> YAML file -> ``--set key=value`` -> validate.

Every section is a frozen dataclass; ``ExperimentConfig.to_dict()`` / ``from_dict()`` round-trip
exactly, and the dict is what crosses process boundaries (workers, checkpoints, ``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from snas_ray.errors import ConfigError
from snas_ray.genotype import PRIMITIVES

__all__ = [
    "SpaceConfig",
    "SamplingConfig",
    "CostConfig",
    "OptimConfig",
    "SearchConfig",
    "DatasetConfig",
    "OutputConfig",
    "TrainConfig",
    "ExperimentConfig",
    "load_config",
    "read_config_file",
    "apply_overrides",
    "build_section",
    "dump_value",
    "config_difference",
    "flatten",
    "RESUME_MAY_DIFFER",
    "ESTIMATORS",
    "SEPARATIONS",
]

ESTIMATORS = ("reparametrization", "discrete", "policy_gradient")
SEPARATIONS = ("all", "size", "flops", "mac")
DATASETS = ("cifar10", "digits", "synthetic", "imagenet")


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(field_name, message)


def _one_of(value: str, allowed: tuple[str, ...], field_name: str) -> None:
    _check(value in allowed, field_name, f"unknown value {value!r} (allowed: {', '.join(allowed)})")


@dataclass(frozen=True)
class SpaceConfig:
    """The supernet: cell count, width, candidate ops (spec §1-§3)."""

    layers: int = 8
    init_channels: int = 16
    stem_multiplier: int = 3
    primitives: tuple[str, ...] = PRIMITIVES
    bn_affine: bool = False
    auxiliary: bool = False
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.3
    alpha_init_mean: float = 1.0
    alpha_init_std: float = 0.01

    def __post_init__(self) -> None:
        _check(self.layers >= 1, "space.layers", "must be >= 1")
        _check(self.init_channels >= 2, "space.init_channels", "must be >= 2")
        _check(self.init_channels % 2 == 0, "space.init_channels", "must be even")
        _check(self.stem_multiplier >= 1, "space.stem_multiplier", "must be >= 1")
        _check(len(self.primitives) >= 2, "space.primitives", "needs at least 2 ops")
        _check(
            len(set(self.primitives)) == len(self.primitives), "space.primitives", "has duplicates"
        )
        for op in self.primitives:
            _one_of(op, PRIMITIVES, "space.primitives")
        _check(0.0 <= self.drop_path_prob < 1.0, "space.drop_path_prob", "must be in [0, 1)")
        _check(self.auxiliary_weight >= 0, "space.auxiliary_weight", "must be >= 0")
        _check(self.alpha_init_std >= 0, "space.alpha_init_std", "must be >= 0")


@dataclass(frozen=True)
class SamplingConfig:
    """Gumbel-softmax sampling and the temperature schedule (spec §4, §5, §15)."""

    temp: float = 1.0
    temp_min: float = 0.03
    temp_annealing: bool = True
    resample: str = "type"  # "type": one z per cell type per step; "cell": one z per cell

    def __post_init__(self) -> None:
        _check(self.temp > 0, "sampling.temp", "must be > 0")
        _check(self.temp_min > 0, "sampling.temp_min", "must be > 0")
        _check(self.temp_min <= self.temp, "sampling.temp_min", "must be <= sampling.temp")
        _one_of(self.resample, ("type", "cell"), "sampling.resample")


@dataclass(frozen=True)
class CostConfig:
    """Resource constraint: lambda, estimator, penalty form (spec §7, §15)."""

    resource_lambda: float = 0.0
    estimator: str = "reparametrization"
    log_penalty: bool = True
    separation: str = "all"
    ratio: float = 1.0
    minus_baseline: bool = True

    def __post_init__(self) -> None:
        _check(
            self.resource_lambda >= 0,
            "cost.resource_lambda",
            f"must be >= 0 (got {self.resource_lambda}; 0 means unconstrained)",
        )
        _one_of(self.estimator, ESTIMATORS, "cost.estimator")
        _one_of(self.separation, SEPARATIONS, "cost.separation")
        _check(self.ratio >= 0, "cost.ratio", "must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    """Weight (SGD, cosine) and architecture (Adam by default) optimizers (spec §6.2, §15)."""

    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_optimizer: str = "adam"
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    arch_grad_clip: float = 10.0

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "must be > 0")
        _check(0 <= self.lr_min <= self.lr, "optim.lr_min", "must be in [0, optim.lr]")
        _check(self.momentum >= 0, "optim.momentum", "must be >= 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        _check(self.grad_clip > 0, "optim.grad_clip", "must be > 0")
        _one_of(self.arch_optimizer, ("adam", "sgd"), "optim.arch_optimizer")
        _check(self.arch_lr >= 0, "optim.arch_lr", "must be >= 0")
        _check(len(self.arch_betas) == 2, "optim.arch_betas", "needs two values")
        _check(self.arch_weight_decay >= 0, "optim.arch_weight_decay", "must be >= 0")
        _check(self.arch_grad_clip > 0, "optim.arch_grad_clip", "must be > 0")


@dataclass(frozen=True)
class SearchConfig:
    """The search loop: epochs, batch, derivation, logging cadence."""

    epochs: int = 150
    batch_size: int = 64
    derivation: str = "snas"  # "snas": argmax per edge minus 'none'; "top2": DARTS-style
    steps_per_epoch: int = 0  # 0 = the whole train split each epoch
    eval_batch_size: int = 256
    log_every: int = 50
    channels_last: bool = True  # NHWC tensors: 1.4x faster depthwise convs on CPU (see bench)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "search.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "search.batch_size", "must be >= 1")
        _one_of(self.derivation, ("snas", "top2"), "search.derivation")
        _check(self.steps_per_epoch >= 0, "search.steps_per_epoch", "must be >= 0")
        _check(self.eval_batch_size >= 1, "search.eval_batch_size", "must be >= 1")
        _check(self.log_every >= 1, "search.log_every", "must be >= 1")


@dataclass(frozen=True)
class DatasetConfig:
    """Which data, where it lives, how it is split (validation is never the test set)."""

    name: str = "cifar10"
    root: str = "data"
    download: bool = True
    val_fraction: float = 0.1
    val_on_test: bool = False
    split_seed: int = 0
    limit: int = 0
    image_size: int = 0
    augment: bool = True
    cutout: int = 0
    synthetic_size: int = 512
    num_workers: int = 0

    def __post_init__(self) -> None:
        _one_of(self.name, DATASETS, "data.name")
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction", "must be in (0, 1)")
        _check(self.limit >= 0, "data.limit", "must be >= 0 (0 = all)")
        _check(self.image_size >= 0, "data.image_size", "must be >= 0 (0 = native)")
        _check(self.cutout >= 0, "data.cutout", "must be >= 0")
        _check(self.synthetic_size >= 4, "data.synthetic_size", "must be >= 4")
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0")


@dataclass(frozen=True)
class OutputConfig:
    """What a run writes besides its metrics and genotype."""

    tensorboard: bool = True
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        _check(self.checkpoint_every >= 1, "output.checkpoint_every", "must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Retraining a genotype from scratch (spec §11); defaults are the CIFAR-10 paper settings."""

    genotype: str = "SNAS_mild_edge_all"  # registry name or genotype.json path
    network: str = "cifar"  # "cifar" (stem + cells) or "imagenet" (two stride-2 stems)
    init_channels: int = 36
    layers: int = 20
    epochs: int = 600
    batch_size: int = 96
    eval_batch_size: int = 256
    lr: float = 0.025
    lr_schedule: str = "cosine"  # "cosine" down to lr_min, or "step": lr * lr_gamma ** epoch
    lr_min: float = 0.0
    lr_gamma: float = 0.97
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2  # reached at the last epoch; linear ramp from 0
    label_smoothing: float = 0.0  # training loss only; evaluation is plain cross-entropy
    steps_per_epoch: int = 0  # 0 = the whole train split each epoch
    log_every: int = 50
    channels_last: bool = True

    def __post_init__(self) -> None:
        _check(bool(self.genotype), "train.genotype", "must name a genotype or a file")
        _one_of(self.network, ("cifar", "imagenet"), "train.network")
        _check(self.init_channels >= 2, "train.init_channels", "must be >= 2")
        _check(self.layers >= 1, "train.layers", "must be >= 1")
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _one_of(self.lr_schedule, ("cosine", "step"), "train.lr_schedule")
        _check(0 <= self.lr_min <= self.lr, "train.lr_min", "must be in [0, train.lr]")
        _check(0 < self.lr_gamma <= 1, "train.lr_gamma", "must be in (0, 1]")
        _check(self.momentum >= 0, "train.momentum", "must be >= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.grad_clip > 0, "train.grad_clip", "must be > 0")
        _check(self.auxiliary_weight >= 0, "train.auxiliary_weight", "must be >= 0")
        _check(0.0 <= self.drop_path_prob < 1.0, "train.drop_path_prob", "must be in [0, 1)")
        _check(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)")
        _check(self.steps_per_epoch >= 0, "train.steps_per_epoch", "must be >= 0")
        _check(self.log_every >= 1, "train.log_every", "must be >= 1")


@dataclass(frozen=True)
class ExperimentConfig:
    """The root config: one section per component plus the run seed."""

    seed: int = 0
    device: str = "auto"
    space: SpaceConfig = field(default_factory=SpaceConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    data: DatasetConfig = field(default_factory=DatasetConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
            "device",
            f"unknown device {self.device!r} (allowed: auto, cpu, cuda, cuda:N, mps)",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of built-in types (tuples become lists)."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Build and validate from a nested dict; unknown keys are errors."""
        return build_section(cls, data, prefix="")

    def replace(self, **overrides: Any) -> ExperimentConfig:
        """A copy with dotted-key overrides applied and re-validated."""
        return apply_overrides(self, [f"{k}={dump_value(v)}" for k, v in overrides.items()])


# Fields that may change between an interrupted run and its resumption, for every job (search,
# retraining, a sweep's trials) and for collect's grouping of runs: where files live, how much is
# logged, the device and memory layout, evaluation batch sizes. Nothing here changes what is
# learned. An entry ending in "." covers a whole section.
RESUME_MAY_DIFFER = (
    "device",
    "output.",
    "search.log_every",
    "search.eval_batch_size",
    "search.channels_last",
    "train.log_every",
    "train.eval_batch_size",
    "train.channels_last",
    "data.root",
    "data.num_workers",
    "data.download",
)


def _may_differ(key: str) -> bool:
    return any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUME_MAY_DIFFER)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def config_difference(
    current: dict[str, Any], saved: dict[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first field (dotted key, saved value, current value) that makes two config dicts
    different runs; None when only :data:`RESUME_MAY_DIFFER` fields differ."""
    a, b = flatten(current), flatten(saved)
    for key in sorted(set(a) | set(b)):
        if not _may_differ(key) and a.get(key) != b.get(key):
            return key, b.get(key), a.get(key)
    return None


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def dump_value(value: Any) -> str:
    return yaml.safe_dump(_to_plain(value), default_flow_style=True).strip().removesuffix("...")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key(cls: type, key: str, prefix: str) -> ConfigError:
    names = _field_names(cls)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (allowed: {', '.join(names)})"
    return ConfigError(f"{prefix}{key}", f"unknown key{hint}")


def build_section(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown_key(cls, str(key), prefix)
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


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    cls: type = ExperimentConfig
    for i, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[:i]) + ("." if i else "")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise _unknown_key(cls, part, prefix)
        if not dataclasses.is_dataclass(hints[part]):
            raise ConfigError(".".join(parts[: i + 1]), "is not a section")
        cls = hints[part]
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is not a section")
    prefix = ".".join(parts[:-1]) + ("." if len(parts) > 1 else "")
    if parts[-1] not in typing.get_type_hints(cls):
        raise _unknown_key(cls, parts[-1], prefix)
    node[parts[-1]] = value


def apply_overrides(
    base: ExperimentConfig | dict[str, Any], overrides: list[str]
) -> ExperimentConfig:
    """Apply ``key=value`` strings (values parsed with ``yaml.safe_load``, never eval)."""
    tree = base.to_dict() if isinstance(base, ExperimentConfig) else _to_plain(base)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                item, "override must look like key=value (e.g. cost.resource_lambda=1e-3)"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return ExperimentConfig.from_dict(tree)


def _maybe_number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_config_file(path: str | Path) -> dict[str, Any]:
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


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``; validated, frozen."""
    tree = read_config_file(path) if path is not None else {}
    for section in ("sweep", "tune"):
        if section in tree:
            raise ConfigError(section, "belongs to a sweep config: run it with `snas-ray sweep`")
    cfg = ExperimentConfig.from_dict(tree)
    return apply_overrides(cfg, overrides or [])
