"""Run-folder layout, atomic writes and safe checkpoint loading.

Every file a run writes goes through a temp file and ``os.replace``, so an interrupted run never
leaves a half-written result, log or checkpoint. Checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snas_ray.config import SnasRayError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "RunPaths",
    "atomic_write_text",
    "atomic_write_json",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "snas-ray/search-1"


class CheckpointError(SnasRayError):
    """A checkpoint is missing, unreadable or not one of ours."""


@dataclass(frozen=True)
class RunPaths:
    """The layout of one run folder; ``collect`` reads only genotype.json and result.json."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def genotypes(self) -> Path:
        return self.root / "genotypes.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def genotype(self) -> Path:
        return self.root / "genotype.json"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    def make(self) -> RunPaths:
        """Create the folder and its checkpoint sub-folder."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self


def _atomic_write(path: Path, write: Any, mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a mix."""
    _atomic_write(Path(path), lambda f: f.write(text), "w")


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Atomically save a checkpoint dict (tensors, numbers, strings, lists, dicts only)."""
    _atomic_write(Path(path), lambda f: torch.save(state, f), "wb")


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint`, refusing anything but plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a snas-ray checkpoint ({first})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a snas-ray search checkpoint")
    return state
