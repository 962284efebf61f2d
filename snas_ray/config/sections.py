"""The experiment config's sections: frozen dataclasses that validate themselves.

``ExperimentConfig.to_dict()`` / ``from_dict()`` round-trip exactly, and the dict is what crosses
process boundaries (workers, checkpoints, ``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import re
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
    "MAX_BATCH",
    "MAX_CHANNELS",
    "MAX_IMAGE_SIDE",
    "MAX_LAYERS",
    "MAX_SEED",
    "OptimConfig",
    "OutputConfig",
    "PRECISIONS",
    "SEPARATIONS",
    "SamplingConfig",
    "SearchConfig",
    "SpaceConfig",
    "TrainConfig",
    "check_network_size",
]

ESTIMATORS = ("reparametrization", "discrete", "policy_gradient")
SEPARATIONS = ("all", "size", "flops", "mac")
BUDGET_METRICS = ("params", "flops", "mac")
BUDGET_SEPARATION = {"params": "size", "flops": "flops", "mac": "mac"}
DATASETS = ("cifar10", "digits", "synthetic", "imagenet")
# Bounds that no experiment reaches (the paper's largest network: 20 cells of C=48 on 224-pixel
# images), so a typo or a hostile value stops here instead of hanging or exhausting memory;
# whether a supernet within them fits the machine is checked when it is built.
MAX_LAYERS = 100
MAX_CHANNELS = 1024
MAX_IMAGE_SIDE = 1024
MAX_BATCH = 65536
MAX_EPOCHS = 100_000
MAX_COUNT = 10**9  # steps, logging and checkpoint intervals, data.limit
MAX_SEED = 2**32 - 1  # numpy and scikit-learn refuse larger seeds; torch gets seed*100003+epoch
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,4})?")
PRECISIONS = ("fp32", "bf16", "fp16")  # autocast dtype of the step; fp16 adds a GradScaler


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(field_name, message)


def _in_range(value: int, low: int, high: int, field_name: str, note: str = "") -> None:
    _check(low <= value <= high, field_name, f"must be in [{low}, {high}]{note} (got {value})")


def check_network_size(layers: int, init_channels: int, prefix: str) -> None:
    """Cells and width of any network built here: bounded, and C even (a reduction cell's
    factorized reduce splits its channels in two halves)."""
    _in_range(layers, 1, MAX_LAYERS, f"{prefix}layers")
    _in_range(init_channels, 2, MAX_CHANNELS, f"{prefix}init_channels")
    _check(init_channels % 2 == 0, f"{prefix}init_channels", f"must be even (got {init_channels})")


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
        check_network_size(self.layers, self.init_channels, "space.")
        _in_range(self.stem_multiplier, 1, 16, "space.stem_multiplier")
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
        _in_range(self.budget_layers, 0, MAX_LAYERS, "cost.budget_layers", " (0 = space.layers)")
        _in_range(
            self.budget_init_channels,
            0,
            MAX_CHANNELS,
            "cost.budget_init_channels",
            " (0 = space.init_channels)",
        )
        _check(self.budget_init_channels % 2 == 0, "cost.budget_init_channels", "must be even")
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
        _check(
            all(0.0 <= b < 1.0 for b in self.arch_betas),
            "optim.arch_betas",
            f"each must be in [0, 1) as Adam requires (got {list(self.arch_betas)})",
        )
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
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler)
    compile: bool = False  # torch.compile the supernet's forward and backward
    cudnn_benchmark: bool = False  # let cuDNN pick conv algorithms by timing (not bit-exact)

    def __post_init__(self) -> None:
        _one_of(self.precision, PRECISIONS, "search.precision")
        _in_range(self.epochs, 1, MAX_EPOCHS, "search.epochs")
        _in_range(self.batch_size, 1, MAX_BATCH, "search.batch_size")
        _one_of(self.derivation, ("snas", "top2"), "search.derivation")
        _in_range(self.steps_per_epoch, 0, MAX_COUNT, "search.steps_per_epoch", " (0 = all)")
        _in_range(self.eval_batch_size, 1, MAX_BATCH, "search.eval_batch_size")
        _in_range(self.log_every, 1, MAX_COUNT, "search.log_every")


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
        _in_range(self.split_seed, 0, MAX_SEED, "data.split_seed")
        _in_range(self.limit, 0, MAX_COUNT, "data.limit", " (0 = all)")
        _in_range(self.image_size, 0, MAX_IMAGE_SIDE, "data.image_size", " (0 = native)")
        _in_range(self.cutout, 0, MAX_IMAGE_SIDE, "data.cutout")
        _in_range(self.synthetic_size, 4, 100_000, "data.synthetic_size")
        _in_range(self.num_workers, 0, 128, "data.num_workers")


@dataclass(frozen=True)
class OutputConfig:
    """What a run writes besides its metrics and genotype."""

    tensorboard: bool = True
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        _in_range(self.checkpoint_every, 1, MAX_COUNT, "output.checkpoint_every")


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
    precision: str = "fp32"  # fp32 | bf16 | fp16, as search.precision
    compile: bool = False  # torch.compile the network's forward and backward
    cudnn_benchmark: bool = False

    def __post_init__(self) -> None:
        _one_of(self.precision, PRECISIONS, "train.precision")
        _check(bool(self.genotype), "train.genotype", "must name a genotype or a file")
        _one_of(self.network, ("cifar", "imagenet"), "train.network")
        check_network_size(self.layers, self.init_channels, "train.")
        _in_range(self.epochs, 1, MAX_EPOCHS, "train.epochs")
        _in_range(self.batch_size, 1, MAX_BATCH, "train.batch_size")
        _in_range(self.eval_batch_size, 1, MAX_BATCH, "train.eval_batch_size")
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
        _in_range(self.steps_per_epoch, 0, MAX_COUNT, "train.steps_per_epoch", " (0 = all)")
        _in_range(self.log_every, 1, MAX_COUNT, "train.log_every")


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
        _in_range(self.seed, 0, MAX_SEED, "seed")
        # The form only: whether this machine has the device is checked where it is resolved,
        # since submit, a GPU-less head and every worker validate the same config.
        _check(
            _DEVICE.fullmatch(self.device) is not None,
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
