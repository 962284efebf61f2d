"""Checkpoint files: atomic saves that keep the previous one, and loads that admit plain data
only, always onto the CPU, falling back to the previous checkpoint when the last is unreadable.

Loading onto the CPU keeps RNG states as CPU byte tensors (``torch.set_rng_state`` and
``torch.cuda.set_rng_state`` accept nothing else); tensors reach the model's device through
``load_state_dict``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from snas_ray.errors import CheckpointError
from snas_ray.layout import atomic_write, previous_checkpoint

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "load_latest_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

# Search and retraining checkpoints share this tag; their "kind" key tells them apart.
CHECKPOINT_FORMAT = "snas-ray/search-1"
# What every checkpoint of ours holds besides the job's own state (EpochLoop.state_dict).
_REQUIRED = {"config": dict, "epoch": int, "global_step": int, "model": dict}


def save_checkpoint(
    path: Path | str, state: dict[str, Any], *, keep_previous: bool = False
) -> None:
    """Atomically save a checkpoint dict (tensors, numbers, strings, lists, dicts only); with
    ``keep_previous`` the checkpoint it replaces stays as ``previous.pt`` beside it."""
    previous = previous_checkpoint(Path(path)) if keep_previous else None
    atomic_write(path, lambda f: torch.save(state, f), binary=True, keep_previous=previous)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint` onto the CPU, refusing anything but
    plain data (``weights_only=True``: no code runs from a planted file) and anything that
    lacks what every checkpoint of ours holds."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise CheckpointError(f"checkpoint {path} {what}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a snas-ray checkpoint ({first[:200]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a snas-ray checkpoint")
    for key, kind in _REQUIRED.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            what = "missing" if key not in state else f"not a valid {kind.__name__}"
            raise CheckpointError(f"checkpoint {path} is incomplete ({key!r} is {what})")
    return state


def load_latest_checkpoint(last: Path | str) -> tuple[dict[str, Any], Path] | None:
    """The newest readable of ``last`` and the ``previous.pt`` beside it, and its path; None
    when neither exists.

    An unreadable ``last`` is moved aside (``last.pt.corrupt``, so the next save does not keep
    it as the previous one) and the previous checkpoint is used, with a one-line warning.
    """
    last = Path(last)
    previous = previous_checkpoint(last)
    if not last.exists():
        # A save is renaming last -> previous -> new last right now, or was killed in between.
        return (load_checkpoint(previous), previous) if previous.is_file() else None
    try:
        return load_checkpoint(last), last
    except CheckpointError as exc:
        if not previous.is_file():
            raise
        state = load_checkpoint(previous)
        aside = last.with_name(last.name + ".corrupt")
        with contextlib.suppress(FileNotFoundError):  # another rank of the run moved it first
            os.replace(last, aside)
        logger.warning(
            "%s; resuming from %s (epoch %d) instead, the unreadable file moved to %s",
            exc,
            previous.name,
            state["epoch"],
            aside.name,
        )
        return state, previous
