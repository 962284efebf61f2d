"""Where an epoch's record goes: console lines, ``metrics.jsonl`` and TensorBoard, each a hook.

The loop emits; sinks decide. Keys follow ``group/name`` (``train/loss``, ``val/acc_child``):
``/`` is also TensorBoard's grouping and Tune's flattening separator. Step scalars arrive every
``log_every`` steps (the loop reads the device only then), so TensorBoard's per-step curves have
one point per ``log_every`` steps.

Epochs are numbered from 1 wherever people or files see them (the log's ``epoch 3/10``,
``metrics.jsonl``'s ``"epoch": 3``, Tune's table, ``best_epoch``, ``train --test``): epoch N is
the N-th, after which ``epochs_done`` is N. :class:`EpochRecord` keeps the loop's 0-based index;
:func:`epoch_number` converts.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from snas_ray.config import config_difference, flatten
from snas_ray.engine.loop import EpochLoop, EpochRecord, HookBase
from snas_ray.layout import atomic_write_text

__all__ = [
    "ConsoleSink",
    "JsonlSink",
    "TensorBoardSink",
    "epoch_number",
    "hparam_settings",
    "hparams_experiment",
]

logger = logging.getLogger(__name__)


def epoch_number(record: EpochRecord) -> int:
    """The 1-based number people and files use for ``record``'s epoch."""
    return record.epoch + 1


class ConsoleSink(HookBase):
    """``logging`` lines every ``log_every`` steps and after each epoch, worded by the job."""

    def after_log(self, loop: EpochLoop, step: int, metrics: dict[str, float]) -> None:
        epoch, batch = divmod(step, max(loop.steps_per_epoch, 1))
        logger.info(
            "epoch %d/%d step %d/%d %s",
            epoch + 1,  # 1-based, as epoch_number
            loop.epochs,
            batch + 1,
            loop.steps_per_epoch,
            loop.step_line(metrics),
        )

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        number = epoch_number(record)
        logger.info("epoch %d/%d done: %s", number, loop.epochs, loop.epoch_line(record))
        for name, text in record.texts.items():
            logger.info("%s after epoch %d:\n%s", name, number, text)


class JsonlSink(HookBase):
    """``metrics.jsonl``: one JSON line per epoch (metrics and artifacts), rewritten atomically.

    On resume after ``resume_epoch`` finished epochs, lines numbered above it are dropped, so a
    finished epoch appears exactly once however often the run was interrupted. A file written
    before epochs were numbered from 1 (its first line is ``"epoch": 0``) is renumbered.
    """

    def __init__(self, path: Path, resume_epoch: int = 0) -> None:
        self.path = Path(path)
        records = []
        if self.path.is_file():
            # Undecodable bytes become U+FFFD, so a damaged line is skipped like a torn one.
            for line in self.path.read_bytes().decode("utf-8", "replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line cannot happen with atomic writes; skip defensively
                if isinstance(record, dict):
                    records.append(record)
        shift = 1 if any(r.get("epoch") == 0 for r in records) else 0  # a 0-based file
        self._lines: list[str] = []
        for record in records:
            if "epoch" in record and shift:
                record = record | {"epoch": record["epoch"] + shift}
            if record.get("epoch", math.inf) <= resume_epoch:
                self._lines.append(json.dumps(record, sort_keys=False))
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, "".join(f"{line}\n" for line in self._lines))

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        line = {"epoch": epoch_number(record), "step": record.step} | record.metrics
        self._lines.append(json.dumps(line | record.artifacts, sort_keys=False))
        self._write()


class TensorBoardSink(HookBase):
    """TensorBoard scalars and texts under ``log_dir``; the x axis is the global step.

    The run's settings go into its own event files as HParams session data: a session start
    (every config field a resume may not change, :func:`hparam_settings`) before training and
    a session end after it. Nothing goes to a separate timestamped run, as ``add_hparams``
    would write; the HParams view's metrics are the run's own last scalar values
    (``val/acc_child``, ``child/params``, ...), so a log dir of runs compares in one table.
    """

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy import, only when used

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def before_train(self, loop: EpochLoop) -> None:
        _, start, _ = _hparams_summaries(hparam_settings(loop.config))
        self.writer.file_writer.add_summary(start)

    def after_log(self, loop: EpochLoop, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        for key, value in record.metrics.items():
            self.writer.add_scalar(key if "/" in key else f"epoch/{key}", value, record.step)
        for name, text in record.texts.items():
            self.writer.add_text(name, f"```\n{text}\n```", record.step)
        self.writer.flush()

    def after_train(self, loop: EpochLoop) -> None:
        _, _, end = _hparams_summaries({})  # status: success
        self.writer.file_writer.add_summary(end, loop.global_step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _hparam_value(value: Any) -> Any:
    # The HParams plugin takes numbers, strings and booleans; lists and None become text.
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return value
    return json.dumps(value)


def hparam_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A run's HParams settings: its flattened config (dotted keys) without the fields a resume
    may change (paths, logging, device), as numbers, strings or JSON text."""
    flat = flatten(config)
    return {
        k: _hparam_value(v)
        for k, v in flat.items()
        if config_difference({k: 0}, {k: 1}) is not None
    }


def _hparams_summaries(
    settings: dict[str, Any],
    metrics: dict[str, str] | None = None,
    domains: dict[str, list[Any]] | None = None,
) -> tuple[Any, Any, Any]:
    from torch.utils.tensorboard.summary import hparams

    return hparams(settings, dict.fromkeys(metrics or {}, 0.0), domains)


def hparams_experiment(settings: dict[str, list[Any]], metrics: dict[str, str]) -> Any:
    """An HParams experiment summary: the table's columns for a set of runs (a sweep).

    Args:
        settings: Dotted config key -> the values runs take (all of one type; a discrete
            domain in the view).
        metrics: Scalar tag the runs write -> the column's title.

    Returns:
        A ``Summary`` proto for a writer's ``file_writer.add_summary``.
    """
    from tensorboard.plugins.hparams import plugin_data_pb2

    first = {k: _hparam_value(v[0]) for k, v in settings.items()}
    domains = {k: [_hparam_value(x) for x in v] for k, v in settings.items()}
    domains = {k: v for k, v in domains.items() if not isinstance(first[k], (int, float))}
    experiment, _, _ = _hparams_summaries(first, metrics, domains)
    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.metric_infos:
        info.display_name = metrics[info.name.tag]
    value.metadata.plugin_data.content = data.SerializeToString()
    return experiment
