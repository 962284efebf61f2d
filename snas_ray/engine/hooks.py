"""The checkpoint hook: ``checkpoints/last.pt`` every ``checkpoint_every`` epochs and at the end,
the one it replaces kept as ``checkpoints/previous.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snas_ray.engine.checkpoint import save_checkpoint
from snas_ray.engine.loop import EpochLoop, EpochRecord, HookBase

__all__ = ["CheckpointHook", "checkpoint_due"]


def checkpoint_due(loop: EpochLoop, every: int) -> bool:
    """Whether the epoch just finished is saved: every ``every`` epochs, and always the last."""
    return loop.epoch % max(every, 1) == 0 or loop.epoch == loop.epochs


class CheckpointHook(HookBase):
    """Atomically saves the loop's state to ``path`` when :func:`checkpoint_due`, keeping the
    checkpoint it replaces as ``previous.pt`` (the fallback when ``last.pt`` is unreadable).

    It runs before any reporting hook, so a process killed while reporting keeps the epoch.
    """

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every = Path(path), every

    def due(self, loop: EpochLoop) -> bool:
        return checkpoint_due(loop, self.every)

    def save(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.path, state, keep_previous=True)

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        if self.due(loop):
            self.save(loop.state_dict())
