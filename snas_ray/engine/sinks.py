"""Metric sinks: the loop emits ``dict[str, float]`` reports, sinks decide where they go.

Keys follow ``group/name`` (``train/loss``, ``val/acc_child``, ``arch/tau``): ``/`` is also
TensorBoard's grouping and Tune's flattening separator.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol

from snas_ray.layout import atomic_write_text

__all__ = ["MetricSink", "JsonlSink", "TensorBoardSink", "LoggingSink", "MultiSink"]

logger = logging.getLogger(__name__)


class MetricSink(Protocol):
    """Where the search loop's scalars go."""

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Per-step scalars at global optimizer step ``step``."""

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        """One record per finished epoch (0-based ``epoch``)."""

    def close(self) -> None:
        """Flush and release files."""


class JsonlSink:
    """``metrics.jsonl``: one JSON line per epoch, rewritten atomically after each epoch.

    On resume, lines for epochs at or after the resumed epoch are dropped, so a finished epoch
    appears exactly once however often the run was interrupted.
    """

    def __init__(self, path: Path, resume_epoch: int = 0) -> None:
        self.path = Path(path)
        self._lines: list[str] = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line cannot happen with atomic writes; skip defensively
                if isinstance(record, dict) and record.get("epoch", math.inf) < resume_epoch:
                    self._lines.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in self._lines))

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        # "_"-prefixed keys are for people (console, TensorBoard), not for the record.
        record = {"epoch": epoch, "step": step}
        record.update({k: v for k, v in metrics.items() if not k.startswith("_")})
        self._lines.append(json.dumps(record, sort_keys=False))
        atomic_write_text(self.path, "".join(f"{line}\n" for line in self._lines))

    def close(self) -> None:
        pass


class TensorBoardSink:
    """TensorBoard scalars under ``log_dir``; the x axis is the global optimizer step."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy import, only when used

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{key}" if "/" not in key else key, value, step)
        if "_genotype_text" in metrics:
            self.writer.add_text("genotype", f"```\n{metrics['_genotype_text']}\n```", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class LoggingSink:
    """Human-readable lines through ``logging``: every ``every`` steps and after each epoch."""

    def __init__(self, every: int = 50, epochs: int = 0, steps_per_epoch: int = 0) -> None:
        self.every = every
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if (step + 1) % self.every:
            return
        where = ""
        if self.steps_per_epoch:
            epoch, batch = divmod(step, self.steps_per_epoch)
            where = f"epoch {epoch + 1}/{self.epochs} step {batch + 1}/{self.steps_per_epoch} "
        logger.info(
            "%sloss %.4f acc %.3f penalty %.4g tau %.3f",
            where,
            metrics.get("train/loss", float("nan")),
            metrics.get("train/acc1", float("nan")),
            metrics.get("cost/penalty", float("nan")),
            metrics.get("arch/tau", float("nan")),
        )

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        logger.info(
            "epoch %d/%d done: train loss %.4f acc %.3f | val child acc %.3f relaxed acc %.3f | "
            "tau %.3f lr %.4g | expected params %.0f | %.1fs",
            epoch + 1,
            self.epochs,
            metrics.get("train/loss", float("nan")),
            metrics.get("train/acc1", float("nan")),
            metrics.get("val/acc_child", float("nan")),
            metrics.get("val/acc_relaxed", float("nan")),
            metrics.get("arch/tau", float("nan")),
            metrics.get("lr/weights", float("nan")),
            metrics.get("cost/expected_size", float("nan")),
            metrics.get("time/epoch_s", float("nan")),
        )
        if "_genotype_text" in metrics:
            logger.info("genotype after epoch %d:\n%s", epoch + 1, metrics["_genotype_text"])

    def close(self) -> None:
        pass


class MultiSink:
    """Fan one report out to several sinks."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = list(sinks)

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log_step(step, metrics)

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.log_epoch(epoch, step, metrics)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
