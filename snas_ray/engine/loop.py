"""The epoch loop that search and retraining share, after detectron2's ``TrainerBase``.

The loop owns epochs, device moves, the seeded batch order, per-rank means, the step counter,
its own state (epoch, step, random streams) and the hook events. A job subclasses
:class:`EpochLoop` and supplies one step, its schedules, its evaluation, its extra state and its
result. Nothing here knows SNAS.

The step contract: :meth:`EpochLoop.step` returns its metrics as tensors on the device; the loop
sums them there, with the first non-finite step flagged, and reads them to Python only every
``log_every`` steps and at the end of the epoch, so a step never waits for the GPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from snas_ray.engine.checkpoint import CHECKPOINT_FORMAT
from snas_ray.engine.state import check_resumable, get_rng_state, set_rng_state
from snas_ray.errors import CheckpointError, SnasRayError

__all__ = ["EpochLoop", "EpochRecord", "HookBase", "NonFiniteError", "StepMeter", "identity"]

logger = logging.getLogger(__name__)


def identity(x: Any) -> Any:
    """Default for the ``prepare_*`` and ``reduce_mean`` injection points."""
    return x


class NonFiniteError(SnasRayError):
    """A step produced a NaN or infinite metric; the run stops, keeping its last checkpoint."""


_KEPT = "stopped (the last checkpoint is kept: lower the learning rates or check the data)"


@dataclass
class EpochRecord:
    """What one finished epoch reports.

    Attributes:
        epoch: 0-based epoch index.
        step: Global optimizer steps done at the end of the epoch.
        metrics: ``group/name`` scalars (the same on every rank).
        artifacts: JSON-able values that are not scalars (the search's genotype); the JSONL
            sink writes them as fields of the epoch's line.
        texts: Text for people (console, TensorBoard), keyed like ``artifacts``.
    """

    epoch: int
    step: int
    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


class HookBase:
    """Callbacks the loop fires (detectron2's ``HookBase``); each does nothing by default."""

    def before_train(self, loop: EpochLoop) -> None:
        """Once, before the first epoch this call runs (after any resume)."""

    def after_log(self, loop: EpochLoop, step: int, metrics: dict[str, float]) -> None:
        """Every ``log_every`` steps, with that step's metrics (0-based global ``step``)."""

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        """After each epoch; ``loop.epoch`` already counts it."""

    def after_train(self, loop: EpochLoop) -> None:
        """Once, after the last epoch."""

    def close(self) -> None:
        """Release files; called whether training ended or failed."""


class StepMeter:
    """Sums step metrics on the device and remembers the first step with a non-finite value."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.keys: list[str] = []
        self.total: torch.Tensor | None = None
        self.last: torch.Tensor | None = None
        self.count = 0
        self._seen = torch.zeros((), dtype=torch.long, device=device)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self._bad_values: torch.Tensor | None = None

    def add(self, metrics: dict[str, torch.Tensor | float]) -> None:
        if not self.keys:
            self.keys = list(metrics)
        values = torch.stack(
            [torch.as_tensor(metrics[k], device=self.device).detach().float() for k in self.keys]
        )
        bad = ~torch.isfinite(values).all()
        new_bad = bad & (self._first_bad < 0)
        self._first_bad = torch.where(new_bad, self._seen, self._first_bad)
        if self._bad_values is None:
            self._bad_values = torch.zeros_like(values)
        self._bad_values = torch.where(new_bad, values, self._bad_values)
        self._seen = self._seen + 1
        self.total = values if self.total is None else self.total + values
        self.last = values
        self.count += 1

    def first_bad(self) -> tuple[int, list[str]] | None:
        """(0-based step within the epoch, non-finite keys) of the first bad step; a host read."""
        index = int(self._first_bad)
        if index < 0 or self._bad_values is None:
            return None
        values = self._bad_values.tolist()
        bad = [k for k, v in zip(self.keys, values, strict=True) if not math.isfinite(v)]
        return index, bad

    def read_last(self) -> dict[str, float]:
        assert self.last is not None
        return dict(zip(self.keys, self.last.tolist(), strict=True))

    def mean(self, reduce_mean: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        if self.total is None:
            return {}
        means = reduce_mean(self.total / self.count)
        return dict(zip(self.keys, means.tolist(), strict=True))


def set_epoch(loader: Any, epoch: int, seed: int) -> None:
    """Make epoch ``epoch``'s batch order depend only on ``(seed, epoch)`` (exact resume)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed * 100_003 + epoch)


class EpochLoop:
    """Epochs of steps over ``train_loader``, with hooks; subclasses supply the job.

    Subclasses set :attr:`kind` and implement :meth:`begin_epoch`, :meth:`step`,
    :meth:`evaluate_epoch`, :meth:`job_state`, :meth:`load_job_state` and :meth:`result`; they
    may add :meth:`artifacts`, :meth:`texts`, :meth:`step_line` and :meth:`epoch_line`.
    """

    kind: ClassVar[str] = ""
    # Step metric -> the term it is, for the error that stops a run on a non-finite value.
    metric_terms: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        *,
        model: nn.Module,
        train_loader: Any,
        device: torch.device,
        config: dict[str, Any],
        epochs: int,
        steps_per_epoch: int,
        log_every: int,
        seed: int,
        channels_last: bool = False,
        reduce_mean: Callable[[torch.Tensor], torch.Tensor] = identity,
    ) -> None:
        self.model = model
        self.net: nn.Module = getattr(model, "module", model)  # the network inside DDP
        self.train_loader = train_loader
        self.device = device
        self.config = config
        self.epochs = epochs
        full = len(train_loader)
        self.steps_per_epoch = min(full, steps_per_epoch or full)
        self.log_every = max(1, log_every)
        self.seed = seed
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.reduce_mean = reduce_mean
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ what a job supplies
    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Apply epoch ``epoch``'s schedules (lr, temperature, ...); return them as metrics."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch already on the device; metrics stay tensors."""
        raise NotImplementedError

    def evaluate_epoch(self, epoch: int) -> dict[str, float]:
        """End-of-epoch evaluation, already averaged over ranks."""
        raise NotImplementedError

    def job_state(self) -> dict[str, Any]:
        """The job's part of a checkpoint (model, optimizers, ...)."""
        raise NotImplementedError

    def load_job_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`job_state`; a misfit raises KeyError, RuntimeError or ValueError."""
        raise NotImplementedError

    def result(self) -> Any:
        """What :meth:`train` returns once every epoch is done."""
        raise NotImplementedError

    def artifacts(self) -> dict[str, Any]:
        return {}

    def texts(self) -> dict[str, str]:
        return {}

    def step_line(self, metrics: dict[str, float]) -> str:
        return f"loss {metrics.get('train/loss', float('nan')):.4f}"

    def epoch_line(self, record: EpochRecord) -> str:
        return f"train loss {record.metrics.get('train/loss', float('nan')):.4f}"

    # ------------------------------------------------------------------ the loop
    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def train(self, hooks: Sequence[HookBase] = ()) -> Any:
        """Train from ``self.epoch`` to ``self.epochs``, firing ``hooks``; return :meth:`result`."""
        for hook in hooks:
            hook.before_train(self)
        for epoch in range(self.epoch, self.epochs):
            record = self.train_epoch(epoch, hooks)
            self.epoch, self.last_metrics = epoch + 1, record.metrics
            for hook in hooks:
                hook.after_epoch(self, record)
        for hook in hooks:
            hook.after_train(self)
        return self.result()

    def train_epoch(self, epoch: int, hooks: Sequence[HookBase] = ()) -> EpochRecord:
        """One epoch of steps, then its evaluation; returns the epoch's record."""
        start = time.perf_counter()
        schedule = self.begin_epoch(epoch)
        set_epoch(self.train_loader, epoch, self.seed)
        meter = StepMeter(self.device)
        for batch, (x, y) in enumerate(self.train_loader):
            if batch >= self.steps_per_epoch:
                break
            meter.add(self.step(*self.to_device(x, y)))
            self.global_step += 1
            if self.global_step % self.log_every == 0:
                self._check_finite(meter, epoch)
                metrics = meter.read_last()
                for hook in hooks:
                    hook.after_log(self, self.global_step - 1, metrics)
        self._check_finite(meter, epoch)
        metrics = meter.mean(self.reduce_mean) | schedule | self.evaluate_epoch(epoch)
        metrics["time/epoch_s"] = time.perf_counter() - start
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:  # e.g. an evaluation loss; nothing non-finite reaches a file or a checkpoint
            raise NonFiniteError(f"epoch {epoch + 1}: {self._terms(bad)} is not finite; {_KEPT}")
        return EpochRecord(epoch, self.global_step, metrics, self.artifacts(), self.texts())

    def _terms(self, keys: list[str]) -> str:
        named = [f"{k} ({self.metric_terms[k]})" if k in self.metric_terms else k for k in keys]
        return ", ".join(named) or "a metric"

    def _check_finite(self, meter: StepMeter, epoch: int) -> None:
        bad = meter.first_bad()
        if bad is not None:
            index, keys = bad
            raise NonFiniteError(
                f"epoch {epoch + 1} step {index + 1}: {self._terms(keys)} is not finite; {_KEPT}"
            )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the job's state, epoch, step, random streams."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": self.kind,
            "config": self.config,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "last_metrics": dict(self.last_metrics),
            **get_rng_state(),
            **self.job_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuse a checkpoint of another job or another run."""
        check_resumable(self.kind, self.config, state)
        try:
            self.load_job_state(state)
            set_rng_state(state)
            epoch, step = int(state["epoch"]), int(state["global_step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"checkpoint does not fit this {self.kind} ({first})") from None
        self.epoch, self.global_step = epoch, step
        self.last_metrics = {
            k: v for k, v in state.get("last_metrics", {}).items() if isinstance(v, (int, float))
        }
