"""The SNAS search on the shared engine: one-level joint training of weights and arch logits.

``build_search(cfg, device)`` returns a :class:`SearchLoop`; :func:`run_search` runs it into a
run folder (resume, sinks, checkpoints, ``genotype.json``, ``result.json``). The Ray layer
injects ``prepare_model`` / ``prepare_loader``, a rank and ``reduce_mean``; nothing here
imports Ray. Spec: shared/docs/snas-spec.md §6, §15.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from snas_ray.config import ExperimentConfig
from snas_ray.data import build_datasets, make_loader
from snas_ray.engine.loop import EpochLoop, EpochRecord, HookBase, identity
from snas_ray.engine.runfolder import resolve_device, run_in_folder
from snas_ray.errors import DataError
from snas_ray.genotype import Genotype, save_genotype
from snas_ray.layout import RunPaths, atomic_write_json
from snas_ray.space.cost import resource_penalty
from snas_ray.space.measure import genotype_cost
from snas_ray.space.sampling import arch_entropy, gumbel_softmax_sample, one_hot_argmax, temperature
from snas_ray.space.supernet import Supernet, derive_genotype
from snas_ray.sweep_spec import progress_metrics

__all__ = [
    "SearchLoop",
    "SearchResult",
    "build_search",
    "learning_rate",
    "run_search",
    "search_outputs",
]

logger = logging.getLogger(__name__)


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
    last_metrics: dict[str, float] = field(default_factory=dict)


class SearchLoop(EpochLoop):
    """The SNAS search algorithm over a supernet, two optimizers and two loaders."""

    kind: ClassVar[str] = "search"

    def __init__(
        self,
        cfg: ExperimentConfig,
        model: nn.Module,
        train_loader: Any,
        val_loader: Any,
        device: torch.device,
        *,
        reduce_mean: Callable[[torch.Tensor], torch.Tensor] = identity,
    ) -> None:
        s = cfg.search
        super().__init__(
            model=model,
            train_loader=train_loader,
            device=device,
            config=cfg.to_dict(),
            epochs=s.epochs,
            steps_per_epoch=s.steps_per_epoch,
            log_every=s.log_every,
            seed=cfg.seed,
            channels_last=s.channels_last,
            reduce_mean=reduce_mean,
        )
        self.cfg = cfg
        self.net: Supernet = self.net
        self.val_loader = val_loader
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
        self.tau_now = self.tau(0)

    # ----------------------------------------------------------------- schedules
    def tau(self, epoch: int) -> float:
        s = self.cfg.sampling
        return temperature(epoch, self.cfg.search.epochs, s.temp, s.temp_min, s.temp_annealing)

    def lr(self, epoch: int) -> float:
        o = self.cfg.optim
        return learning_rate(epoch, self.cfg.search.epochs, o.lr, o.lr_min)

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        self.tau_now, lr = self.tau(epoch), self.lr(epoch)
        for group in self.w_optim.param_groups:
            group["lr"] = lr
        return {"arch/tau": self.tau_now, "lr/weights": lr}

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

    def step(
        self, x: torch.Tensor, y: torch.Tensor, tau: float | None = None
    ) -> dict[str, torch.Tensor]:
        """One search step: sample z, forward, task loss + lambda * penalty, one backward, both
        optimizers (spec §6.4 without the diagnostic backward passes). ``tau`` defaults to the
        current epoch's temperature."""
        tau = self.tau_now if tau is None else tau
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
        with torch.no_grad():
            acc = (out.logits.argmax(1) == y).float().mean()
        return {
            "train/loss": loss.detach(),
            "train/loss_task": task_loss.detach(),
            "train/acc1": acc,
            "cost/penalty": terms.penalty.detach(),
            "cost/expected_size": terms.expected["size"].detach(),
            "cost/sampled_size": terms.sampled["size"].detach(),
        }

    @torch.no_grad()
    def evaluate(self, loader: Any, *, child: bool, tau: float) -> tuple[float, float]:
        """Mean loss and accuracy on ``loader`` with child (argmax) or relaxed-sample weights."""
        self.net.eval()
        totals = torch.zeros(3, device=self.device)  # loss sum, correct, count
        for x, y in loader:
            x, y = self.to_device(x, y)
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

    def evaluate_epoch(self, epoch: int) -> dict[str, float]:
        """Child (argmax) and relaxed-sample validation, then the architecture's statistics."""
        child_loss, child_acc = self.evaluate(self.val_loader, child=True, tau=self.tau_now)
        relaxed_loss, relaxed_acc = self.evaluate(self.val_loader, child=False, tau=self.tau_now)
        return {
            "val/loss_child": child_loss,
            "val/acc_child": child_acc,
            "val/loss_relaxed": relaxed_loss,
            "val/acc_relaxed": relaxed_acc,
        } | self.arch_metrics()

    @torch.no_grad()
    def arch_metrics(self) -> dict[str, float]:
        """Entropy of each cell type's distribution and the expected cost under the softmax."""
        net = self.net
        probs = [torch.softmax(a, -1) for a in net.cell_log_alpha()]
        record = {
            "arch/entropy_normal": float(arch_entropy(net.log_alpha_normal)),
            "arch/entropy_reduce": float(arch_entropy(net.log_alpha_reduce)),
        }
        for i, kind in enumerate(("size", "flops", "mac")):
            record[f"cost/expected_{kind}"] = float(
                sum((t[i] * p).sum() for t, p in zip(net.cost_tables, probs, strict=True))
            )
        return record

    def artifacts(self) -> dict[str, Any]:
        return {"genotype": self.genotype().to_dict()}

    def texts(self) -> dict[str, str]:
        return {"genotype": self.genotype().format()}

    def step_line(self, metrics: dict[str, float]) -> str:
        return (
            f"loss {metrics['train/loss']:.4f} acc {metrics['train/acc1']:.3f} "
            f"penalty {metrics['cost/penalty']:.4g} tau {self.tau_now:.3f}"
        )

    def epoch_line(self, record: EpochRecord) -> str:
        m = record.metrics
        return (
            f"train loss {m['train/loss']:.4f} acc {m['train/acc1']:.3f} | "
            f"val child acc {m['val/acc_child']:.3f} relaxed acc {m['val/acc_relaxed']:.3f} | "
            f"tau {m['arch/tau']:.3f} lr {m['lr/weights']:.4g} | "
            f"expected params {m['cost/expected_size']:.0f} | {m['time/epoch_s']:.1f}s"
        )

    def progress(self, record: EpochRecord) -> dict[str, Any]:
        """The flat numbers a Ray or Tune report carries for this epoch."""
        return progress_metrics(self.cfg, record.metrics, record.epoch)

    # ----------------------------------------------------------------- state and result
    def job_state(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "w_optim": self.w_optim.state_dict(),
            "a_optim": self.a_optim.state_dict(),
        }

    def load_job_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.w_optim.load_state_dict(state["w_optim"])
        self.a_optim.load_state_dict(state["a_optim"])

    def result(self) -> SearchResult:
        m = self.last_metrics
        return SearchResult(
            epochs_done=self.epoch,
            genotype=self.genotype(),
            val_acc=float(m.get("val/acc_child", float("nan"))),
            val_acc_relaxed=float(m.get("val/acc_relaxed", float("nan"))),
            last_metrics=dict(m),
        )

    def write_outputs(self, paths: RunPaths, result: SearchResult) -> dict[str, Any]:
        """Write ``genotype.json`` and ``result.json``; returns the latter's dict."""
        return search_outputs(self.cfg, self.net, paths, result)


def search_outputs(
    cfg: ExperimentConfig, net: Supernet, paths: RunPaths, result: SearchResult
) -> dict[str, Any]:
    """``genotype.json`` and ``result.json`` (the child's cost as an evaluation network)."""
    save_genotype(result.genotype, paths.genotype)
    cost = genotype_cost(
        result.genotype,
        init_channels=cfg.space.init_channels,
        layers=cfg.space.layers,
        num_classes=net.num_classes,
        image_size=net.image_size,
        in_channels=net.in_channels,
    )
    summary = {
        "val_acc": result.val_acc,
        "val_acc_relaxed": result.val_acc_relaxed,
        "params": cost.params,
        "flops": cost.flops,
        "mac": cost.mac,
        "epochs_done": result.epochs_done,
        "epochs": cfg.search.epochs,
        "resource_lambda": cfg.cost.resource_lambda,
        "estimator": cfg.cost.estimator,
        "seed": cfg.seed,
        "dataset": cfg.data.name,
        "layers": cfg.space.layers,
        "init_channels": cfg.space.init_channels,
        "derivation": cfg.search.derivation,
        "genotype": result.genotype.to_dict(),
        "final_metrics": dict(result.last_metrics),
    }
    atomic_write_json(paths.result, summary)
    return summary


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
    """Datasets, supernet, loaders and optimizers for ``cfg``, ready to ``train``.

    The model is initialised from ``cfg.seed`` on every rank (identical start); sampling and
    augmentation then use ``seed + rank`` so each rank draws its own architecture sample.
    """
    device = torch.device(device)
    splits = build_datasets(cfg.data)
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise DataError("data: the train or validation split is empty (check data.limit)")
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
    workers = cfg.data.num_workers
    train_loader = prepare_loader(
        make_loader(
            splits.train,
            max(1, cfg.search.batch_size // world_size),
            shuffle=True,
            seed=cfg.seed,
            num_workers=workers,
        )
    )
    val_loader = prepare_loader(
        make_loader(
            splits.val,
            cfg.search.eval_batch_size,
            shuffle=False,
            seed=cfg.seed,
            num_workers=workers,
        )
    )
    torch.manual_seed(cfg.seed + rank)
    return SearchLoop(cfg, model, train_loader, val_loader, device, reduce_mean=reduce_mean)


def run_search(
    cfg: ExperimentConfig,
    out: Path | str,
    *,
    resume: bool = True,
    hooks: Sequence[HookBase] = (),
) -> dict[str, Any]:
    """Run (or resume) a search in-process into ``out``; returns the ``result.json`` dict.

    ``hooks`` run after each epoch's checkpoint is saved (a sweep trial reports there).
    """
    paths = RunPaths(Path(out)).make()
    device = resolve_device(cfg.device)
    loop = build_search(cfg, device)
    logger.info(
        "search: %s on %s, %d cells C=%d, %d epochs x %d steps, lambda=%g (%s), out %s",
        cfg.data.name,
        device,
        cfg.space.layers,
        cfg.space.init_channels,
        cfg.search.epochs,
        loop.steps_per_epoch,
        cfg.cost.resource_lambda,
        cfg.cost.estimator,
        paths.root,
    )
    result = run_in_folder(
        loop,
        paths,
        resume=resume,
        tensorboard=cfg.output.tensorboard,
        checkpoint_every=cfg.output.checkpoint_every,
        hooks=hooks,
    )
    return loop.write_outputs(paths, result)
