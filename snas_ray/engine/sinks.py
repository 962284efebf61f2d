"""Where an epoch's record goes: console lines, ``metrics.jsonl`` and TensorBoard, each a hook.

The loop emits; sinks decide. Keys follow ``group/name`` (``train/loss``, ``val/acc_child``):
``/`` is also TensorBoard's grouping and Tune's flattening separator. Step scalars arrive every
``log_every`` steps (the loop reads the device only then), so TensorBoard's per-step curves have
one point per ``log_every`` steps.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from snas_ray.engine.loop import EpochLoop, EpochRecord, HookBase
from snas_ray.layout import atomic_write_text

__all__ = ["ConsoleSink", "JsonlSink", "TensorBoardSink"]

logger = logging.getLogger(__name__)


class ConsoleSink(HookBase):
    """``logging`` lines every ``log_every`` steps and after each epoch, worded by the job."""

    def after_log(self, loop: EpochLoop, step: int, metrics: dict[str, float]) -> None:
        epoch, batch = divmod(step, max(loop.steps_per_epoch, 1))
        logger.info(
            "epoch %d/%d step %d/%d %s",
            epoch + 1,
            loop.epochs,
            batch + 1,
            loop.steps_per_epoch,
            loop.step_line(metrics),
        )

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        logger.info("epoch %d/%d done: %s", record.epoch + 1, loop.epochs, loop.epoch_line(record))
        for name, text in record.texts.items():
            logger.info("%s after epoch %d:\n%s", name, record.epoch + 1, text)


class JsonlSink(HookBase):
    """``metrics.jsonl``: one JSON line per epoch (metrics and artifacts), rewritten atomically.

    On resume, lines for epochs at or after the resumed epoch are dropped, so a finished epoch
    appears exactly once however often the run was interrupted.
    """

    def __init__(self, path: Path, resume_epoch: int = 0) -> None:
        self.path = Path(path)
        self._lines: list[str] = []
        if self.path.is_file():
            # Undecodable bytes become U+FFFD, so a damaged line is skipped like a torn one.
            for line in self.path.read_bytes().decode("utf-8", "replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line cannot happen with atomic writes; skip defensively
                if isinstance(record, dict) and record.get("epoch", math.inf) < resume_epoch:
                    self._lines.append(line)
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, "".join(f"{line}\n" for line in self._lines))

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        line = {"epoch": record.epoch, "step": record.step} | record.metrics | record.artifacts
        self._lines.append(json.dumps(line, sort_keys=False))
        self._write()


class TensorBoardSink(HookBase):
    """TensorBoard scalars and texts under ``log_dir``; the x axis is the global step."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy import, only when used

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def after_log(self, loop: EpochLoop, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        for key, value in record.metrics.items():
            self.writer.add_scalar(key if "/" in key else f"epoch/{key}", value, record.step)
        for name, text in record.texts.items():
            self.writer.add_text(name, f"```\n{text}\n```", record.step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
