"""Run a loop into a run folder: resume from ``last.pt`` (or ``previous.pt``), ``config.yaml``,
sinks, checkpoints; and the device a run asked for, checked against this machine.

Both jobs go through :func:`run_in_folder`; the Ray worker uses :func:`folder_hooks` and
:func:`write_config` the same way, so every run folder has one layout however it was run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from snas_ray.config import config_difference
from snas_ray.engine.checkpoint import load_latest_checkpoint
from snas_ray.engine.hooks import CheckpointHook
from snas_ray.engine.loop import EpochLoop, HookBase
from snas_ray.engine.sinks import ConsoleSink, JsonlSink, TensorBoardSink
from snas_ray.errors import CheckpointError, ConfigError
from snas_ray.layout import RunPaths, atomic_write_text

__all__ = [
    "finished_result",
    "available_memory",
    "check_no_orphan_results",
    "folder_hooks",
    "resolve_device",
    "resume_from_folder",
    "run_hooks",
    "run_in_folder",
    "write_config",
]

logger = logging.getLogger(__name__)


_DEVICE = re.compile(r"(cpu|mps|cuda)(:(\d{1,4}))?")


def resolve_device(name: str, field_name: str = "device") -> torch.device:
    """``auto`` means CUDA when present, else CPU; anything else must exist on this machine.

    Checked here, where a run builds its model, rather than when its config is validated: the
    same config is read on a laptop by ``submit``, on a GPU-less head and in every worker.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _DEVICE.fullmatch(name)
    if match is None:
        raise ConfigError(field_name, f"unknown device {name!r} (allowed: auto, cpu, cuda, cuda:N)")
    kind, index = match.group(1), match.group(3)
    if kind == "cpu" and index not in (None, "0"):
        raise ConfigError(field_name, f"{name}: there is one CPU device (use cpu)")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(field_name, f"{name} requested but CUDA is not available (use cpu)")
        if index is not None and int(index) >= count:
            raise ConfigError(
                field_name, f"{name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
            )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(field_name, f"{name} requested but MPS is not available (use cpu)")
    return torch.device(name)


def available_memory(device: torch.device) -> int | None:
    """Bytes a new model could still take on ``device`` (free GPU memory; on the CPU the
    kernel's MemAvailable, capped by a cgroup limit); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        text = Path("/proc/meminfo").read_text()
        meminfo = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        free = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def write_config(config: dict[str, Any], paths: RunPaths) -> None:
    """The resolved config, as YAML that ``--config`` reads back."""
    atomic_write_text(paths.config, yaml.safe_dump(config, sort_keys=False))


def resume_from_folder(loop: EpochLoop, paths: RunPaths) -> bool:
    """Load the folder's newest readable checkpoint (``last.pt``, else ``previous.pt``) into
    ``loop``; True if there was one."""
    found = load_latest_checkpoint(paths.last_checkpoint)
    if found is None:
        return False
    state, path = found
    loop.load_state_dict(state)
    logger.info("resuming %s after epoch %d (%s)", paths.root, loop.epoch, path.name)
    return True


def check_no_orphan_results(paths: RunPaths, config: dict[str, Any]) -> None:
    """Refuse to start from scratch over results an earlier run left without a checkpoint.

    Starting over would empty ``metrics.jsonl`` and mix the old ``result.json`` with a new
    ``config.yaml``. Allowed: epoch lines of this same run (same ``config.yaml``, unfinished)
    written before its first checkpoint, which starting over replaces as a resume would.
    """
    found = [p.name for p in (paths.result, paths.genotype) if p.is_file()]
    try:
        lines = [ln for ln in paths.metrics.read_bytes().splitlines() if ln.strip()]
    except OSError:
        lines = []
    if lines and (found or not _same_run(paths, config)):
        found.append(f"{len(lines)} epoch line(s) in {paths.metrics.name}")
    if found:
        raise CheckpointError(
            f"{paths.root} holds results of an earlier run ({', '.join(found)}) but no "
            "checkpoint to continue from; choose another --out, or delete them to start over"
        )


def _same_run(paths: RunPaths, config: dict[str, Any]) -> bool:
    try:
        saved = yaml.safe_load(paths.config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(saved, dict) and config_difference(config, saved) is None


def folder_hooks(
    loop: EpochLoop, paths: RunPaths, *, write: bool, tensorboard: bool
) -> list[HookBase]:
    """Console lines always; ``metrics.jsonl`` and TensorBoard only where ``write`` (rank 0)."""
    hooks: list[HookBase] = [ConsoleSink()]
    if write:
        hooks.append(JsonlSink(paths.metrics, resume_epoch=loop.epoch))
        if tensorboard:
            hooks.append(TensorBoardSink(paths.tensorboard, purge_step=loop.global_step or None))
    return hooks


def run_hooks(loop: EpochLoop, hooks: Sequence[HookBase]) -> Any:
    """``loop.train(hooks)``, closing every hook however it ends."""
    try:
        return loop.train(hooks)
    finally:
        for hook in hooks:
            hook.close()


def run_in_folder(
    loop: EpochLoop,
    paths: RunPaths,
    *,
    resume: bool,
    tensorboard: bool,
    checkpoint_every: int,
    hooks: Sequence[HookBase] = (),
) -> Any:
    """Resume (when asked and possible), write ``config.yaml``, then train with the folder's
    sinks, the checkpoint hook and ``hooks`` (which run after the checkpoint is saved)."""
    if not (resume and resume_from_folder(loop, paths)):
        check_no_orphan_results(paths, loop.config)
    write_config(loop.config, paths)
    checkpoint = CheckpointHook(paths.last_checkpoint, checkpoint_every)
    own = folder_hooks(loop, paths, write=True, tensorboard=tensorboard)
    return run_hooks(loop, [*own, checkpoint, *hooks])


def finished_result(paths: RunPaths, config: dict[str, Any], epochs: int) -> dict[str, Any] | None:
    """The run folder's ``result.json`` if this exact run (``config``: only the fields
    ``RESUME_MAY_DIFFER`` names may differ) finished all ``epochs``, else None; for drivers that
    skip work a killed predecessor already finished."""
    if not paths.result.is_file() or not paths.config.is_file():
        return None
    try:
        summary = json.loads(paths.result.read_text())
        saved = yaml.safe_load(paths.config.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(saved, dict) or not isinstance(summary, dict):
        return None
    if config_difference(config, saved) is not None:
        return None
    return summary if summary.get("epochs_done") == epochs else None
