"""Retrain a genotype from scratch (spec §11): the evaluation network and its training loop.

``build_retrain(cfg, device)`` returns a :class:`RetrainLoop`, built like ``build_search``: the Ray
layer injects ``prepare_model`` / ``prepare_loader``, a rank and ``reduce_mean``; nothing here
imports Ray. The in-process driver behind ``snas-ray train`` (run folder, sinks, result.json,
test mode) is :mod:`snas_ray.retrain_run`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snas_ray.config import ExperimentConfig, load_config
from snas_ray.data import DataSplits, build_datasets, make_loader
from snas_ray.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from snas_ray.errors import CheckpointError, ConfigError, SnasRayError
from snas_ray.genotype import Genotype, load_genotype
from snas_ray.space.network import NetworkCIFAR, NetworkImageNet

__all__ = [
    "RetrainLoop",
    "RetrainResult",
    "build_network",
    "build_retrain",
    "load_retrain_checkpoint",
    "retrain_genotype",
]

logger = logging.getLogger(__name__)

_KIND = "retrain"  # checkpoints share checkpoint.py's format tag; this key tells them apart
# Fields that may change between an interrupted run and its resumption.
_MAY_DIFFER = (
    "device",
    "output.",
    "train.log_every",
    "train.eval_batch_size",
    "data.root",
    "data.num_workers",
    "data.download",
)


def _identity(x: Any) -> Any:
    return x


@dataclass
class RetrainResult:
    """What a finished retraining produced; accuracies are fractions of the test split."""

    epochs_done: int
    test_acc1: float
    test_acc5: float
    best: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, Any] = field(default_factory=dict)


def build_network(cfg: ExperimentConfig, genotype: Genotype, splits: DataSplits) -> nn.Module:
    """The evaluation network of ``genotype`` for ``cfg.train`` and the data's shape."""
    t = cfg.train
    shape = {"init_channels": t.init_channels, "layers": t.layers, "auxiliary": t.auxiliary}
    if t.network == "imagenet":
        if splits.in_channels != 3:
            raise ConfigError("train.network", "imagenet networks take 3-channel images")
        return NetworkImageNet(genotype, num_classes=splits.num_classes, **shape)
    return NetworkCIFAR(
        genotype,
        num_classes=splits.num_classes,
        in_channels=splits.in_channels,
        image_size=splits.image_size,
        **shape,
    )


class RetrainLoop:
    """SGD on one evaluation network; test top-1/top-5 after every epoch."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        model: nn.Module,
        genotype: Genotype,
        train_loader: Any,
        test_loader: Any,
        device: torch.device,
        *,
        rank: int = 0,
        world_size: int = 1,
        reduce_mean: Callable[[torch.Tensor], torch.Tensor] = _identity,
    ) -> None:
        self.cfg, self.model, self.genotype = cfg, model, genotype
        self.net: nn.Module = getattr(model, "module", model)  # the network inside DDP
        self.train_loader, self.test_loader = train_loader, test_loader
        self.device, self.rank, self.world_size = device, rank, world_size
        self.reduce_mean = reduce_mean
        t = cfg.train
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.optimizer = torch.optim.SGD(
            self.net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )
        self.input_shape = (3, 32, 32)  # one image, for result.json's cost; set by build_retrain
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best: dict[str, float] = {}
        self.last_metrics: dict[str, Any] = {}
        full = len(train_loader)
        self.steps_per_epoch = min(full, t.steps_per_epoch or full)

    # ----------------------------------------------------------------- schedules
    def lr(self, epoch: int) -> float:
        """The lr of 0-based ``epoch``. The reference steps its scheduler before each epoch, so it
        skips the peak and spends its last epoch at 0; here epoch e uses the value at e."""
        t = self.cfg.train
        if t.lr_schedule == "step":
            return t.lr * t.lr_gamma**epoch
        return t.lr_min + (t.lr - t.lr_min) * (1 + math.cos(math.pi * epoch / t.epochs)) / 2

    def drop_path_prob(self, epoch: int) -> float:
        """Linear ramp p_e = drop_path_prob * e / epochs, set at the start of epoch e (§11.1)."""
        return self.cfg.train.drop_path_prob * epoch / self.cfg.train.epochs

    # ----------------------------------------------------------------- the algorithm
    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One SGD step: (label-smoothed) CE + auxiliary_weight * aux CE, clip, update."""
        t = self.cfg.train
        self.model.train()
        logits, logits_aux = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=t.label_smoothing)
        if logits_aux is not None:
            aux = F.cross_entropy(logits_aux, y, label_smoothing=t.label_smoothing)
            loss = loss + t.auxiliary_weight * aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip)
        self.optimizer.step()
        self.global_step += 1
        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean()
        return {"train/loss": float(loss.detach()), "train/acc1": float(acc)}

    @torch.no_grad()
    def evaluate(self, loader: Any | None = None) -> tuple[float, float, float]:
        """Mean cross-entropy, top-1 and top-5 accuracy on ``loader`` (default: the test split)."""
        self.net.eval()
        totals = torch.zeros(4, device=self.device)  # loss sum, top-1, top-5, count
        for x, y in self.test_loader if loader is None else loader:
            x, y = self._to_device(x, y)
            logits, _ = self.net(x)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == y[:, None]
            totals += torch.stack(
                [
                    F.cross_entropy(logits, y, reduction="sum"),
                    hits[:, 0].sum().float(),
                    hits.any(1).sum().float(),
                    torch.tensor(float(y.numel()), device=self.device),
                ]
            )
        totals = self.reduce_mean(totals)
        n = max(float(totals[3]), 1.0)
        return float(totals[0]) / n, float(totals[1]) / n, float(totals[2]) / n

    def train_epoch(self, epoch: int, sink: Any) -> dict[str, Any]:
        """Train one epoch at its lr and drop-path rate, then test; return the epoch record."""
        start = time.perf_counter()
        lr, p = self.lr(epoch), self.drop_path_prob(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.drop_path_prob = p
        _set_epoch(self.train_loader, epoch, self.cfg.seed)
        sums = torch.zeros(2, device=self.device)
        n = 0
        for batch, (x, y) in enumerate(self.train_loader):
            if batch >= self.steps_per_epoch:
                break
            metrics = self.step(*self._to_device(x, y))
            sink.log_step(self.global_step - 1, metrics)
            sums += torch.tensor([metrics["train/loss"], metrics["train/acc1"]], device=self.device)
            n += 1
        means = self.reduce_mean(sums / max(n, 1)).tolist()
        test_loss, acc1, acc5 = self.evaluate()
        if acc1 > self.best.get("test_acc1", -1.0):
            self.best = {"test_acc1": acc1, "test_acc5": acc5, "epoch": float(epoch)}
        return {
            "train/loss": means[0],
            "train/acc1": means[1],
            "test/loss": test_loss,
            "test/acc1": acc1,
            "test/acc5": acc5,
            "best/test_acc1": self.best["test_acc1"],
            "lr/weights": lr,
            "train/drop_path_prob": p,
            "time/epoch_s": time.perf_counter() - start,
        }

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly; the lr schedule is a function of ``epoch``."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": _KIND,
            "config": self.cfg.to_dict(),
            "genotype": self.genotype.to_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "best": dict(self.best),
            "last_metrics": dict(self.last_metrics),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; config and genotype must describe the same run."""
        _check_same_run(self.cfg.to_dict(), state.get("config", {}))
        if state.get("genotype") != self.genotype.to_dict():
            raise CheckpointError("checkpoint was made with another genotype (use a new --out)")
        try:
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng_cpu"])
            if state["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint does not fit this network ({first})") from None
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.best = dict(state.get("best", {}))
        self.last_metrics = dict(state.get("last_metrics", {}))

    def run(
        self, sink: Any, after_epoch: Callable[[RetrainLoop, dict[str, Any]], None] | None = None
    ) -> RetrainResult:
        """Train from ``self.epoch`` to ``train.epochs``; ``after_epoch`` saves checkpoints."""
        for epoch in range(self.epoch, self.cfg.train.epochs):
            record = self.train_epoch(epoch, sink)
            self.epoch, self.last_metrics = epoch + 1, record
            sink.log_epoch(epoch, self.global_step, record)
            if after_epoch is not None:
                after_epoch(self, record)
        m = self.last_metrics
        return RetrainResult(
            self.epoch, m.get("test/acc1", math.nan), m.get("test/acc5", math.nan), self.best, m
        )


def _set_epoch(loader: Any, epoch: int, seed: int) -> None:
    # Exact resume needs the shuffle order of epoch e to depend only on (seed, e).
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed * 100_003 + epoch)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        flat.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return flat


def _check_same_run(current: dict[str, Any], saved: dict[str, Any]) -> None:
    a, b = _flatten(current), _flatten(saved)
    for key in sorted(set(a) | set(b)):
        if not key.startswith(_MAY_DIFFER) and a.get(key) != b.get(key):
            raise CheckpointError(
                f"checkpoint was made with {key}={b.get(key)!r}, this run has {a.get(key)!r} "
                "(use a new --out folder to start a different run)"
            )


def build_retrain(
    cfg: ExperimentConfig,
    device: torch.device | str,
    *,
    genotype: Genotype | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] = _identity,
    prepare_loader: Callable[[Any], Any] = _identity,
    rank: int = 0,
    world_size: int = 1,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = _identity,
) -> RetrainLoop:
    """Datasets, network (``cfg.train.genotype`` unless ``genotype`` is given), loaders, SGD.

    The network is initialised from ``cfg.seed`` on every rank; augmentation and drop-path then
    draw from ``seed + rank``. Training uses the train split, evaluation the test split.
    """
    device = torch.device(device)
    genotype = genotype if genotype is not None else load_genotype(cfg.train.genotype)
    splits = build_datasets(cfg.data)
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise SnasRayError("data: the train or test split is empty (check data.limit)")
    torch.manual_seed(cfg.seed)
    net = build_network(cfg, genotype, splits).to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    t, workers = cfg.train, cfg.data.num_workers
    train_loader = prepare_loader(
        make_loader(
            splits.train,
            max(1, t.batch_size // world_size),
            shuffle=True,
            seed=cfg.seed,
            num_workers=workers,
        )
    )
    test_loader = prepare_loader(
        make_loader(
            splits.test, t.eval_batch_size, shuffle=False, seed=cfg.seed, num_workers=workers
        )
    )
    model = prepare_model(net)
    torch.manual_seed(cfg.seed + rank)
    loop = RetrainLoop(
        cfg,
        model,
        genotype,
        train_loader,
        test_loader,
        device,
        rank=rank,
        world_size=world_size,
        reduce_mean=reduce_mean,
    )
    loop.input_shape = (splits.in_channels, splits.image_size, splits.image_size)
    return loop


def load_retrain_checkpoint(path: Path | str, device: torch.device | str) -> dict[str, Any]:
    """Load ``path`` with :func:`load_checkpoint`, refusing search checkpoints."""
    state = load_checkpoint(path)
    if state.get("kind") != _KIND:
        raise CheckpointError(f"checkpoint {path} is a search checkpoint, not a retraining one")
    return state


def retrain_genotype(
    genotype_file: Path | str, out: Path | str, *, config: Path | str | None = None
) -> dict[str, Any]:
    """Retrain the genotype in ``genotype_file`` with ``config`` (defaults if None) into ``out``;
    the entry point ``collect --retrain`` calls."""
    from snas_ray.retrain_run import run_retrain

    cfg = load_config(config).replace(**{"train.genotype": str(genotype_file)})
    return run_retrain(cfg, out)
