"""The pure-PyTorch SNAS search: one-level joint training of weights and architecture logits.

``build_search(cfg, device)`` returns a :class:`SearchLoop`; ``loop.run(sink, paths)`` trains,
validates, checkpoints every epoch, resumes exactly, and writes the run folder. The Ray layers
inject ``prepare_model`` / ``prepare_loader``, a rank, and an ``after_epoch`` hook; nothing here
imports Ray. Spec: shared/docs/snas-spec.md §6, §15.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snas_ray.config import ExperimentConfig
from snas_ray.data import build_datasets, make_loader
from snas_ray.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from snas_ray.errors import CheckpointError, SnasRayError
from snas_ray.genotype import Genotype
from snas_ray.layout import RunPaths
from snas_ray.space.cost import resource_penalty
from snas_ray.space.sampling import arch_entropy, gumbel_softmax_sample, one_hot_argmax, temperature
from snas_ray.space.supernet import Supernet, derive_genotype, unwrap

__all__ = [
    "SearchLoop",
    "SearchResult",
    "build_search",
    "search_difference",
    "check_same_search",
    "learning_rate",
    "identity",
]

logger = logging.getLogger(__name__)


def identity(x: Any) -> Any:
    """Default for the ``prepare_*`` injection points: leave the object as it is."""
    return x


def learning_rate(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine weight lr for 0-based ``epoch``; stepped before the epoch, as the reference does."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * (epoch + 1) / epochs)) / 2


@dataclass
class SearchResult:
    """What a finished (or resumed-to-the-end) search produced."""

    epochs_done: int
    genotype: Genotype
    val_acc: float
    val_acc_relaxed: float
    last_metrics: dict[str, Any] = field(default_factory=dict)


def _set_epoch(loader: Any, epoch: int, seed: int) -> None:
    # Exact resume needs the shuffle order of epoch e to depend only on (seed, e).
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed * 100_003 + epoch)


class SearchLoop:
    """The SNAS search algorithm over a supernet, two optimizers and two loaders."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        model: nn.Module,
        train_loader: Any,
        val_loader: Any,
        device: torch.device,
        *,
        rank: int = 0,
        world_size: int = 1,
        reduce_mean: Callable[[torch.Tensor], torch.Tensor] = identity,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.net: Supernet = unwrap(model)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.reduce_mean = reduce_mean
        self.memory_format = (
            torch.channels_last if cfg.search.channels_last else torch.contiguous_format
        )
        o = cfg.optim
        self.w_optim = torch.optim.SGD(
            self.net.weight_parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
        if o.arch_optimizer == "adam":
            self.a_optim: torch.optim.Optimizer = torch.optim.Adam(
                self.net.arch_parameters(),
                lr=o.arch_lr,
                betas=o.arch_betas,
                weight_decay=o.arch_weight_decay,
            )
        else:  # the reference's single-GPU recipe: plain SGD, no momentum, no weight decay
            self.a_optim = torch.optim.SGD(self.net.arch_parameters(), lr=o.arch_lr)
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.last_metrics: dict[str, Any] = {}
        full = len(train_loader)
        self.steps_per_epoch = min(full, cfg.search.steps_per_epoch or full)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    # ----------------------------------------------------------------- schedules
    def tau(self, epoch: int) -> float:
        s = self.cfg.sampling
        return temperature(epoch, self.cfg.search.epochs, s.temp, s.temp_min, s.temp_annealing)

    def lr(self, epoch: int) -> float:
        o = self.cfg.optim
        return learning_rate(epoch, self.cfg.search.epochs, o.lr, o.lr_min)

    # ----------------------------------------------------------------- the algorithm
    def sample_z(self, tau: float) -> list[torch.Tensor]:
        """Relaxed one-hot weights per cell: one draw per cell type, or per cell."""
        if self.cfg.sampling.resample == "cell":
            return [gumbel_softmax_sample(a, tau) for a in self.net.cell_log_alpha()]
        z_normal = gumbel_softmax_sample(self.net.log_alpha_normal, tau)
        z_reduce = gumbel_softmax_sample(self.net.log_alpha_reduce, tau)
        return [z_reduce if r else z_normal for r in self.net.reduction]

    def child_z(self) -> list[torch.Tensor]:
        """One-hot argmax weights: the derived child evaluated on the supernet."""
        normal = one_hot_argmax(self.net.log_alpha_normal.detach())
        reduce = one_hot_argmax(self.net.log_alpha_reduce.detach())
        return [reduce if r else normal for r in self.net.reduction]

    def step(self, x: torch.Tensor, y: torch.Tensor, tau: float) -> dict[str, float]:
        """One search step: sample z, forward, task loss + lambda * penalty, one backward, both
        optimizers (spec §6.4 without the diagnostic backward passes)."""
        self.model.train()
        cfg = self.cfg
        z = self.sample_z(tau)
        out = self.model(x, z)
        task_loss = F.cross_entropy(out.logits, y)
        if out.logits_aux is not None:
            task_loss = task_loss + cfg.space.auxiliary_weight * F.cross_entropy(out.logits_aux, y)
        terms = resource_penalty(
            list(self.net.cost_tables),
            z,
            self.net.cell_log_alpha(),
            self.net.reduction,
            tau,
            cfg.cost,
        )
        loss = task_loss
        if cfg.cost.resource_lambda > 0:  # lambda = 0 is the unconstrained search
            loss = task_loss + cfg.cost.resource_lambda * terms.penalty
        self.w_optim.zero_grad(set_to_none=True)
        self.a_optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.weight_parameters(), cfg.optim.grad_clip)
        nn.utils.clip_grad_norm_(self.net.arch_parameters(), cfg.optim.arch_grad_clip)
        self.w_optim.step()
        self.a_optim.step()
        self.global_step += 1
        with torch.no_grad():
            acc = (out.logits.argmax(1) == y).float().mean()
        return {
            "train/loss": float(loss.detach()),
            "train/loss_task": float(task_loss.detach()),
            "train/acc1": float(acc),
            "cost/penalty": float(terms.penalty.detach()),
            "cost/expected_size": float(terms.expected["size"]),
            "cost/sampled_size": float(terms.sampled["size"]),
            "arch/tau": tau,
        }

    @torch.no_grad()
    def evaluate(self, loader: Any, *, child: bool, tau: float) -> tuple[float, float]:
        """Mean loss and accuracy on ``loader`` with child (argmax) or relaxed-sample weights."""
        self.net.eval()
        totals = torch.zeros(3, device=self.device)  # loss sum, correct, count
        for x, y in loader:
            x, y = self._to_device(x, y)
            z = self.child_z() if child else self.sample_z(tau)
            logits = self.net(x, z).logits
            totals += torch.stack(
                [
                    F.cross_entropy(logits, y, reduction="sum"),
                    (logits.argmax(1) == y).sum().float(),
                    torch.tensor(float(y.numel()), device=self.device),
                ]
            )
        totals = self.reduce_mean(totals)
        count = max(float(totals[2]), 1.0)
        return float(totals[0]) / count, float(totals[1]) / count

    def genotype(self) -> Genotype:
        return derive_genotype(
            self.net.log_alpha_normal,
            self.net.log_alpha_reduce,
            self.net.primitives,
            self.cfg.search.derivation,
        )

    def train_epoch(self, epoch: int, sink: Any) -> dict[str, Any]:
        """Train one epoch at its lr and tau; return the epoch's metric record."""
        start = time.perf_counter()
        tau, lr = self.tau(epoch), self.lr(epoch)
        for group in self.w_optim.param_groups:
            group["lr"] = lr
        _set_epoch(self.train_loader, epoch, self.cfg.seed)
        sums: dict[str, float] = {}
        n = 0
        for batch, (x, y) in enumerate(self.train_loader):
            if batch >= self.steps_per_epoch:
                break
            x, y = self._to_device(x, y)
            metrics = self.step(x, y, tau)
            sink.log_step(self.global_step - 1, metrics)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        means = torch.tensor([sums[k] / max(n, 1) for k in sorted(sums)], device=self.device)
        means = self.reduce_mean(means)
        record: dict[str, Any] = dict(zip(sorted(sums), means.tolist(), strict=True))
        child_loss, child_acc = self.evaluate(self.val_loader, child=True, tau=tau)
        relaxed_loss, relaxed_acc = self.evaluate(self.val_loader, child=False, tau=tau)
        record.update(self._arch_metrics())
        record.update(
            {
                "arch/tau": tau,
                "lr/weights": lr,
                "val/loss_child": child_loss,
                "val/acc_child": child_acc,
                "val/loss_relaxed": relaxed_loss,
                "val/acc_relaxed": relaxed_acc,
                "time/epoch_s": time.perf_counter() - start,
            }
        )
        return record

    @torch.no_grad()
    def _arch_metrics(self) -> dict[str, Any]:
        net = self.net
        probs = [torch.softmax(a, -1) for a in net.cell_log_alpha()]
        record: dict[str, Any] = {
            "arch/entropy_normal": float(arch_entropy(net.log_alpha_normal)),
            "arch/entropy_reduce": float(arch_entropy(net.log_alpha_reduce)),
        }
        for i, kind in enumerate(("size", "flops", "mac")):
            record[f"cost/expected_{kind}"] = float(
                sum((t[i] * p).sum() for t, p in zip(net.cost_tables, probs, strict=True))
            )
        genotype = self.genotype()
        record["genotype"] = genotype.to_dict()
        record["_genotype_text"] = genotype.format()
        return record

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model (incl. log_alpha), optimizers, RNG."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.net.state_dict(),
            "w_optim": self.w_optim.state_dict(),
            "a_optim": self.a_optim.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "last_metrics": {k: v for k, v in self.last_metrics.items() if not k.startswith("_")},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the config must describe the same search."""
        _check_same_search(self.cfg.to_dict(), state.get("config", {}))
        try:
            self.net.load_state_dict(state["model"])
            self.w_optim.load_state_dict(state["w_optim"])
            self.a_optim.load_state_dict(state["a_optim"])
            torch.set_rng_state(state["rng_cpu"])
            if state["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint does not fit this supernet ({first})") from None
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.last_metrics = dict(state.get("last_metrics", {}))

    # ----------------------------------------------------------------- driver
    def run(
        self,
        sink: Any,
        after_epoch: Callable[[SearchLoop, dict[str, Any]], None] | None = None,
    ) -> SearchResult:
        """Train from ``self.epoch`` to ``search.epochs``; ``after_epoch`` saves checkpoints."""
        epochs = self.cfg.search.epochs
        for epoch in range(self.epoch, epochs):
            record = self.train_epoch(epoch, sink)
            self.epoch = epoch + 1
            self.last_metrics = record
            sink.log_epoch(epoch, self.global_step, record)
            if after_epoch is not None:
                after_epoch(self, record)
        return SearchResult(
            epochs_done=self.epoch,
            genotype=self.genotype(),
            val_acc=float(self.last_metrics.get("val/acc_child", float("nan"))),
            val_acc_relaxed=float(self.last_metrics.get("val/acc_relaxed", float("nan"))),
            last_metrics=self.last_metrics,
        )


# Fields that may change between an interrupted run and its resumption.
_MAY_DIFFER = {"device", "output", "search.log_every", "data.num_workers", "data.root"}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def search_difference(
    current: dict[str, Any], saved: dict[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first config field (dotted key, saved value, current value) that makes two configs
    different searches; None when only fields that may change on resume differ."""
    a, b = _flatten(current), _flatten(saved)
    for key in sorted(set(a) | set(b)):
        if key in _MAY_DIFFER or key.split(".")[0] in _MAY_DIFFER:
            continue
        if a.get(key) != b.get(key):
            return key, b.get(key), a.get(key)
    return None


def _check_same_search(current: dict[str, Any], saved: dict[str, Any]) -> None:
    diff = search_difference(current, saved)
    if diff is not None:
        key, was, now = diff
        raise CheckpointError(
            f"checkpoint was made with {key}={was!r}, this run has {now!r} "
            "(use a new --out folder to start a different search)"
        )


def check_same_search(cfg: ExperimentConfig, state: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``state`` was saved by the search ``cfg`` describes
    (what :meth:`SearchLoop.load_state_dict` checks, without building a loop)."""
    _check_same_search(cfg.to_dict(), state.get("config", {}))


def build_search(
    cfg: ExperimentConfig,
    device: torch.device | str,
    *,
    prepare_model: Callable[[nn.Module], nn.Module] = identity,
    prepare_loader: Callable[[Any], Any] = identity,
    rank: int = 0,
    world_size: int = 1,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = identity,
) -> SearchLoop:
    """Datasets, supernet, loaders and optimizers for ``cfg``, ready to ``run``.

    The model is initialised from ``cfg.seed`` on every rank (identical start); sampling and
    augmentation then use ``seed + rank`` so each rank draws its own architecture sample.
    """
    device = torch.device(device)
    splits = build_datasets(cfg.data)
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise SnasRayError("data: the train or validation split is empty (check data.limit)")
    torch.manual_seed(cfg.seed)
    net = Supernet(
        cfg.space,
        num_classes=splits.num_classes,
        image_size=splits.image_size,
        in_channels=splits.in_channels,
    ).to(device)
    if cfg.search.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = prepare_model(net)
    per_rank_batch = max(1, cfg.search.batch_size // world_size)
    train_loader = prepare_loader(
        make_loader(
            splits.train,
            per_rank_batch,
            shuffle=True,
            seed=cfg.seed,
            num_workers=cfg.data.num_workers,
        )
    )
    val_loader = prepare_loader(
        make_loader(
            splits.val,
            cfg.search.eval_batch_size,
            shuffle=False,
            seed=cfg.seed,
            num_workers=cfg.data.num_workers,
        )
    )
    torch.manual_seed(cfg.seed + rank)
    loop = SearchLoop(
        cfg,
        model,
        train_loader,
        val_loader,
        device,
        rank=rank,
        world_size=world_size,
        reduce_mean=reduce_mean,
    )
    return loop


def resume_if_possible(loop: SearchLoop, paths: RunPaths) -> bool:
    """Load ``paths.last_checkpoint`` into ``loop`` when it exists; True if it did."""
    if not paths.last_checkpoint.exists():
        return False
    state = load_checkpoint(paths.last_checkpoint)
    loop.load_state_dict(state)
    logger.info("resuming %s after epoch %d", paths.root, loop.epoch)
    return True
