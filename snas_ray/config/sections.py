"""The experiment config's sections: frozen dataclasses that validate themselves.

``ExperimentConfig.to_dict()`` / ``from_dict()`` round-trip exactly, and the dict is what crosses
process boundaries (workers, checkpoints, ``config.yaml``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from snas_ray.config.typed_yaml import build_section, set_dotted, to_plain
from snas_ray.errors import ConfigError
from snas_ray.genotype import PRIMITIVES

__all__ = [
    "BUDGET_METRICS",
    "BUDGET_SEPARATION",
    "CostConfig",
    "DATASETS",
    "DatasetConfig",
    "ESTIMATORS",
    "ExperimentConfig",
    "OptimConfig",
    "OutputConfig",
    "SEPARATIONS",
    "SamplingConfig",
    "SearchConfig",
    "SpaceConfig",
    "TrainConfig",
]

ESTIMATORS = ("reparametrization", "discrete", "policy_gradient")
SEPARATIONS = ("all", "size", "flops", "mac")
BUDGET_METRICS = ("params", "flops", "mac")
BUDGET_SEPARATION = {"params": "size", "flops": "flops", "mac": "mac"}
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
    # A target cost for the derived child: lambda then adapts during the search (space/budget.py).
    budget: float = 0.0  # 0 = off: lambda stays resource_lambda
    budget_metric: str = "params"
    budget_layers: int = 0  # size of the network the budget is measured on; 0 = the search's
    budget_init_channels: int = 0
    budget_gain: float = 2.0  # change of ln(lambda) per epoch when the child is e times its budget

    def __post_init__(self) -> None:
        _check(
            self.resource_lambda >= 0,
            "cost.resource_lambda",
            f"must be >= 0 (got {self.resource_lambda}; 0 means unconstrained)",
        )
        _one_of(self.estimator, ESTIMATORS, "cost.estimator")
        _one_of(self.separation, SEPARATIONS, "cost.separation")
        _check(self.ratio >= 0, "cost.ratio", "must be >= 0")
        _check(self.budget >= 0, "cost.budget", f"must be >= 0 (got {self.budget}; 0 = no budget)")
        _one_of(self.budget_metric, BUDGET_METRICS, "cost.budget_metric")
        _check(self.budget_layers >= 0, "cost.budget_layers", "must be >= 0 (0 = search.layers)")
        _check(
            self.budget_init_channels >= 0,
            "cost.budget_init_channels",
            "must be >= 0 (0 = space.init_channels)",
        )
        _check(self.budget_gain > 0, "cost.budget_gain", "must be > 0")
        if self.budget > 0:
            wanted = BUDGET_SEPARATION[self.budget_metric]
            _check(
                self.separation in ("all", wanted),
                "cost.separation",
                f"{self.separation!r} contradicts cost.budget_metric {self.budget_metric!r}: "
                f"with a budget the penalty acts on the budget's metric (use {wanted!r} or 'all')",
            )

    @property
    def penalty_separation(self) -> str:
        """The cost the penalty measures: the budget's metric when there is a budget."""
        return BUDGET_SEPARATION[self.budget_metric] if self.budget > 0 else self.separation


@dataclass(frozen=True)
class OptimConfig:
    """Weight (SGD, cosine) and architecture (Adam by default) optimizers (spec §6.2, §15)."""

    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # adamw: Adam with decoupled weight decay. The reference's coupled (L2) decay pulls every
    # logit toward 0 at the full learning rate once the loss gradient is small (Adam normalises
    # the decay term), which holds the distribution near uniform; see README, "Convergence".
    arch_optimizer: str = "adamw"
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
        _one_of(self.arch_optimizer, ("adamw", "adam", "sgd"), "optim.arch_optimizer")
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
        return to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Build and validate from a nested dict; unknown keys are errors."""
        return build_section(cls, data, prefix="")

    def replace(self, **overrides: Any) -> ExperimentConfig:
        """A copy with dotted-key overrides (``**{"cost.budget": 3e6}``) applied, re-validated."""
        tree = self.to_dict()
        for key, value in overrides.items():
            set_dotted(tree, key, to_plain(value), ExperimentConfig)
        return ExperimentConfig.from_dict(tree)
