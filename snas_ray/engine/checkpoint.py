"""Checkpoint files: atomic saves, and loads that admit plain data only, always onto the CPU.

Loading onto the CPU keeps RNG states as CPU byte tensors (``torch.set_rng_state`` and
``torch.cuda.set_rng_state`` accept nothing else); tensors reach the model's device through
``load_state_dict``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from snas_ray.errors import CheckpointError
from snas_ray.layout import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

# Search and retraining checkpoints share this tag; their "kind" key tells them apart.
CHECKPOINT_FORMAT = "snas-ray/search-1"


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Atomically save a checkpoint dict (tensors, numbers, strings, lists, dicts only)."""
    atomic_write(path, lambda f: torch.save(state, f), binary=True)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint` onto the CPU, refusing anything but
    plain data (``weights_only=True``: no code runs from a planted file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a snas-ray checkpoint ({first})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a snas-ray checkpoint")
    return state
