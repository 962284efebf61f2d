"""Run a loop into a run folder: resume from ``last.pt``, ``config.yaml``, sinks, checkpoints.

Both jobs go through :func:`run_in_folder`; the Ray worker uses :func:`folder_hooks` and
:func:`write_config` the same way, so every run folder has one layout however it was run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import yaml

from snas_ray.engine.checkpoint import load_checkpoint
from snas_ray.engine.hooks import CheckpointHook
from snas_ray.engine.loop import EpochLoop, HookBase
from snas_ray.engine.sinks import ConsoleSink, JsonlSink, TensorBoardSink
from snas_ray.errors import ConfigError
from snas_ray.layout import RunPaths, atomic_write_text

__all__ = [
    "folder_hooks",
    "resolve_device",
    "resume_from_folder",
    "run_hooks",
    "run_in_folder",
    "write_config",
]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU; anything else is taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{name} requested but CUDA is not available (use cpu or auto)")
    return device


def write_config(config: dict[str, Any], paths: RunPaths) -> None:
    """The resolved config, as YAML that ``--config`` reads back."""
    atomic_write_text(paths.config, yaml.safe_dump(config, sort_keys=False))


def resume_from_folder(loop: EpochLoop, paths: RunPaths) -> bool:
    """Load ``paths.last_checkpoint`` into ``loop`` when it exists; True if it did."""
    if not paths.last_checkpoint.exists():
        return False
    loop.load_state_dict(load_checkpoint(paths.last_checkpoint))
    logger.info("resuming %s after epoch %d", paths.root, loop.epoch)
    return True


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
    if resume:
        resume_from_folder(loop, paths)
    write_config(loop.config, paths)
    checkpoint = CheckpointHook(paths.last_checkpoint, checkpoint_every)
    own = folder_hooks(loop, paths, write=True, tensorboard=tensorboard)
    return run_hooks(loop, [*own, checkpoint, *hooks])
