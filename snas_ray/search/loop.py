"""The SNAS search step and its per-epoch evaluation, on the shared engine's loop.

One-level joint training of weights and architecture logits (spec §6, §15); with
``cost.budget`` the penalty's lambda follows a :class:`~snas_ray.space.budget.LambdaController`.
Every epoch reports what the search is doing to the architecture: the derived child's exact
cost, the entropy as a fraction of its maximum, the mean top-op probability and whether the
child sampled most often is the derived one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from snas_ray.config import CostConfig, ExperimentConfig, OptimConfig
from snas_ray.engine.loop import EpochLoop, EpochRecord, identity
from snas_ray.engine.precision import StepPrecision, compile_module, set_cudnn_benchmark
from snas_ray.errors import ConfigError
from snas_ray.genotype import Genotype
from snas_ray.layout import RunPaths
from snas_ray.search.outputs import SearchResult, write_search_outputs
from snas_ray.search.progress import arch_statistics, epoch_line
from snas_ray.space.budget import LambdaController
from snas_ray.space.child_cost import METRICS, ChildCostTable, child_cost_table
from snas_ray.space.cost import resource_penalty
from snas_ray.space.measure import NetworkCost
from snas_ray.space.sampling import gumbel_softmax_sample, one_hot_argmax, temperature
from snas_ray.space.supernet import Supernet, derive_genotype
from snas_ray.sweep_spec import progress_metrics

__all__ = [
    "SearchLoop",
    "SearchResult",
    "budget_outcome",
    "budget_size",
    "learning_rate",
    "make_optimizers",
]

logger = logging.getLogger(__name__)


def learning_rate(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine weight lr for 0-based ``epoch``; stepped before the epoch, as the reference does."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * (epoch + 1) / epochs)) / 2


def make_optimizers(
    net: Supernet, o: OptimConfig
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The weights' SGD and the architecture's optimizer (``optim.arch_optimizer``)."""
    w_optim = torch.optim.SGD(
        net.weight_parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )
    if o.arch_optimizer in ("adam", "adamw"):
        adam = torch.optim.AdamW if o.arch_optimizer == "adamw" else torch.optim.Adam
        betas, decay = o.arch_betas, o.arch_weight_decay
        a_optim = adam(net.arch_parameters(), lr=o.arch_lr, betas=betas, weight_decay=decay)
    else:  # the reference's single-GPU recipe: plain SGD, no momentum, no weight decay
        a_optim = torch.optim.SGD(net.arch_parameters(), lr=o.arch_lr)
    return w_optim, a_optim


class SearchLoop(EpochLoop):
    """The SNAS search algorithm over a supernet, two optimizers and two loaders."""

    kind: ClassVar[str] = "search"
    metric_terms: ClassVar[dict[str, str]] = {
        "train/loss": "total loss",
        "train/loss_task": "task loss",
        "cost/penalty": "penalty",
    }

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
        net: Supernet = self.net  # the engine's unwrapped model, typed
        self.val_loader = val_loader
        self.w_optim, self.a_optim = make_optimizers(net, cfg.optim)
        self.tau_now = self.tau(0)
        # Autocast around the forward only: Gumbel sampling, drop-path masks, the penalty and
        # the optimizers stay float32. The compiled module is the forward (and its backward);
        # tau and lambda never enter it, so their schedules cannot cause a recompile.
        self.precision = StepPrecision(s.precision, device, field="search.precision")
        set_cudnn_benchmark(s.cudnn_benchmark)
        self.forward_model = compile_module(self.model, s.compile)
        layers, channels = budget_size(cfg)
        # The derived child's exact cost at the budget's size (the search's own by default).
        self.child_costs: ChildCostTable = child_cost_table(
            net.primitives,
            init_channels=channels,
            layers=layers,
            num_classes=net.num_classes,
            image_size=net.image_size,
            in_channels=net.in_channels,
        ).to(device)
        self.controller: LambdaController | None = None
        if cfg.cost.budget > 0:
            self._check_budget(layers, channels)
            self.controller = LambdaController(
                cfg.cost.budget,
                start=cfg.cost.resource_lambda,
                gain=cfg.cost.budget_gain,
                steps_per_epoch=self.steps_per_epoch,
                device=device,
            )
        # Per cell type, how often each op was the argmax of a step's sample (this epoch).
        self.sample_counts = torch.zeros(2, *net.log_alpha_normal.shape, device=device)

    def _check_budget(self, layers: int, channels: int) -> None:
        c = self.cfg.cost
        low, high = self.child_costs.reachable(c.budget_metric, self.cfg.search.derivation)
        if not low <= c.budget <= high:
            raise ConfigError(
                "cost.budget",
                f"{c.budget:g} {c.budget_metric} is outside what this space reaches at "
                f"{layers} cells, C={channels}: {low:.4g} to {high:.4g}",
            )

    @property
    def resource_lambda(self) -> torch.Tensor | float:
        """The penalty's weight now: the controller's, or the configured constant."""
        return self.controller.value if self.controller else self.cfg.cost.resource_lambda

    # ----------------------------------------------------------------- schedules
    def tau(self, epoch: int) -> float:
        s = self.cfg.sampling
        return temperature(epoch, self.cfg.search.epochs, s.temp, s.temp_min, s.temp_annealing)

    def lr(self, epoch: int) -> float:
        o = self.cfg.optim
        return learning_rate(epoch, self.cfg.search.epochs, o.lr, o.lr_min)

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        self.sample_counts.zero_()
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
        current epoch's temperature. Nothing here reads a tensor to the host (fp16's scaler
        aside): the metrics come back as device tensors."""
        tau = self.tau_now if tau is None else tau
        self.model.train()
        cfg = self.cfg
        z = self.sample_z(tau)
        keep = self.net.drop_path_keep(x.shape[0], x.device)
        with self.precision.autocast():
            out = self.forward_model(x, z, keep)
        task_loss = F.cross_entropy(out.logits.float(), y)
        if out.logits_aux is not None:
            aux = F.cross_entropy(out.logits_aux.float(), y)
            task_loss = task_loss + cfg.space.auxiliary_weight * aux
        terms = resource_penalty(
            list(self.net.cost_tables),
            z,
            self.net.cell_log_alpha(),
            self.net.reduction,
            tau,
            cfg.cost,
        )
        lam = self.resource_lambda
        loss = task_loss
        if self.controller is not None or cfg.cost.resource_lambda > 0:  # 0: unconstrained
            loss = task_loss + lam * terms.penalty
        self.w_optim.zero_grad(set_to_none=True)
        self.a_optim.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        self.precision.unscale(self.w_optim, self.a_optim)  # both, before either clip
        nn.utils.clip_grad_norm_(self.net.weight_parameters(), cfg.optim.grad_clip)
        nn.utils.clip_grad_norm_(self.net.arch_parameters(), cfg.optim.arch_grad_clip)
        self.precision.step(self.w_optim, self.a_optim)
        with torch.no_grad():
            for zc, red in zip(z, self.net.reduction, strict=True):
                self.sample_counts[int(red)] += one_hot_argmax(zc)
            metrics = {
                "train/loss": loss.detach(),
                "train/loss_task": task_loss.detach(),
                "train/acc1": (out.logits.argmax(1) == y).float().mean(),
                "cost/penalty": terms.penalty.detach(),
                "cost/expected_size": terms.expected["size"].detach(),
                "cost/sampled_size": terms.sampled["size"].detach(),
                # a constant lambda is a Python float: torch.full launches no blocking copy
                "cost/lambda": lam
                if torch.is_tensor(lam)
                else torch.full((), lam, device=x.device),
            }
            if self.controller is not None:  # after the arch step: the child it produced
                child = self.child_metric()
                self.controller.update(child)
                metrics[f"child/{cfg.cost.budget_metric}_step"] = child
        return metrics

    def child_metric(self) -> torch.Tensor:
        """The derived child's cost in the budget's metric, as a device scalar."""
        i = METRICS.index(self.cfg.cost.budget_metric)
        if self.cfg.search.derivation == "snas":
            return self.child_costs.of_argmax(*self.net.arch_parameters())[i]
        return self.child_costs.of_top2(*self.net.arch_parameters())[i]

    def child_cost(self) -> NetworkCost:
        """The derived child's cost at the budget's size (the search's own by default)."""
        return self.child_costs.of_genotype(self.genotype())

    @torch.no_grad()
    def evaluate(self, loader: Any, *, child: bool, tau: float) -> tuple[float, float]:
        """Mean loss and accuracy on ``loader`` with child (argmax) or relaxed-sample weights."""
        self.net.eval()
        totals = torch.zeros(3, device=self.device)  # loss sum, correct, count
        for x, y in loader:
            x, y = self.to_device(x, y)
            z = self.child_z() if child else self.sample_z(tau)
            with self.precision.autocast():
                logits = self.net(x, z).logits.float()
            totals += torch.stack(
                [
                    F.cross_entropy(logits, y, reduction="sum"),
                    (logits.argmax(1) == y).sum().float(),
                    torch.full((), y.numel(), dtype=torch.float32, device=y.device),
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
        """The distribution's statistics (:func:`arch_statistics`), the supernet's expected op
        cost, and the derived child's cost, exact and expected, at the budget's size."""
        net = self.net
        alphas = net.arch_parameters()
        record = arch_statistics(alphas, self.sample_counts, self.reduce_mean)
        probs = [torch.softmax(a, -1) for a in net.cell_log_alpha()]
        for i, kind in enumerate(("size", "flops", "mac")):
            record[f"cost/expected_{kind}"] = float(
                sum((t[i] * p).sum() for t, p in zip(net.cost_tables, probs, strict=True))
            )
        child = self.child_cost()
        expected = self.child_costs.of_expectation(*alphas).tolist()
        for i, metric in enumerate(METRICS):
            record[f"child/{metric}"] = float(getattr(child, metric))
            record[f"child/expected_{metric}"] = expected[i]
        if self.controller is not None:
            record["cost/lambda_now"] = float(self.controller.value)
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
        return epoch_line(self.cfg.cost, record.metrics)

    def progress(self, record: EpochRecord) -> dict[str, Any]:
        """The flat numbers a Ray or Tune report carries for this epoch."""
        return progress_metrics(self.cfg, record.metrics, record.epoch + 1)  # 1-based, as logged

    # ----------------------------------------------------------------- state and result
    def job_state(self) -> dict[str, Any]:
        state = {
            "model": self.net.state_dict(),
            "w_optim": self.w_optim.state_dict(),
            "a_optim": self.a_optim.state_dict(),
            **self.precision.state_dict(),
        }
        if self.controller is not None:
            state["lambda_controller"] = self.controller.state_dict()
        return state

    def load_job_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.w_optim.load_state_dict(state["w_optim"])
        self.a_optim.load_state_dict(state["a_optim"])
        self.precision.load_state_dict(state)
        if self.controller is not None:
            self.controller.load_state_dict(state["lambda_controller"])

    def lambda_final(self) -> float:
        """lambda at the end: the controller's, or the configured one."""
        return float(self.resource_lambda)

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
        at_own_size = budget_size(self.cfg) == (self.cfg.space.layers, self.cfg.space.init_channels)
        child = None if self.controller is None and at_own_size else self.child_cost()
        if self.controller is not None and child is not None:
            budget_outcome(self.cfg.cost, float(getattr(child, self.cfg.cost.budget_metric)))
        return write_search_outputs(
            self.cfg, self.net, paths, result, lambda_final=self.lambda_final(), budget_cost=child
        )


def budget_outcome(cost: CostConfig, achieved: float) -> str:
    """One line on how the child met its budget, logged as a warning when it missed by over
    15%: above it the constraint was too hard for the run's length; far under it, the
    unconstrained search already ends below the budget, which then does not bind."""
    gap = achieved / cost.budget - 1
    line = f"child {achieved:.4g} {cost.budget_metric} for a budget of {cost.budget:.4g} "
    line += f"({100 * gap:+.1f}%)"
    if gap > 0.15:
        line += ": over budget; more epochs or a larger cost.budget_gain let lambda catch up"
    elif gap < -0.15:
        line += ": well under it; a budget above what the unconstrained search picks does not bind"
    (logger.warning if abs(gap) > 0.15 else logger.info)("budget: %s", line)
    return line


def budget_size(cfg: ExperimentConfig) -> tuple[int, int]:
    """(layers, init_channels) of the network the budget, and the child cost, are measured on."""
    c = cfg.cost
    return (c.budget_layers or cfg.space.layers, c.budget_init_channels or cfg.space.init_channels)
