"""The loop's own part of a checkpoint: random streams, and whether a checkpoint may be resumed.

Random states are saved and restored as CPU byte tensors, the only form ``torch.set_rng_state``
and ``torch.cuda.set_rng_state`` accept; checkpoints therefore always load onto the CPU.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from snas_ray.config import config_difference
from snas_ray.errors import CheckpointError

__all__ = [
    "check_resumable",
    "get_rng_state",
    "rank_rng_state",
    "set_rank_rng_state",
    "set_rng_state",
]

logger = logging.getLogger(__name__)


def get_rng_state() -> dict[str, Any]:
    """This process's CPU stream and every visible GPU's stream."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"rng_cpu": torch.get_rng_state(), "rng_cuda": list(cuda)}


def _cpu_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`get_rng_state`; on another GPU count restore what fits and say so."""
    torch.set_rng_state(_cpu_bytes(state["rng_cpu"]))
    saved = list(state.get("rng_cuda") or [])
    if not saved or not torch.cuda.is_available():
        return
    visible = torch.cuda.device_count()
    for index, rng in enumerate(saved[:visible]):
        torch.cuda.set_rng_state(_cpu_bytes(rng), index)
    if len(saved) != visible:
        logger.warning(
            "checkpoint holds %d GPU random streams, this process sees %d GPUs: restored %d "
            "(the run continues; its GPU random numbers differ from an uninterrupted run)",
            len(saved),
            visible,
            min(len(saved), visible),
        )


def rank_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """One rank's streams: its CPU generator and its own GPU's (empty on CPU)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0)
    return {"cpu": torch.get_rng_state(), "cuda": _cpu_bytes(cuda)}


def set_rank_rng_state(saved: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore :func:`rank_rng_state` on this rank."""
    torch.set_rng_state(_cpu_bytes(saved["cpu"]))
    if device.type == "cuda" and saved["cuda"].numel():
        torch.cuda.set_rng_state(_cpu_bytes(saved["cuda"]), device)


def check_resumable(kind: str, config: dict[str, Any], state: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``state`` was saved by a ``kind`` run of ``config``.

    Only the fields ``config.RESUME_MAY_DIFFER`` names may differ (paths, logging, device).
    """
    saved_kind = state.get("kind", "search")  # search checkpoints had no "kind" before
    if saved_kind != kind:
        raise CheckpointError(f"the checkpoint is a {saved_kind} checkpoint, not a {kind} one")
    diff = config_difference(config, state.get("config", {}))
    if diff is not None:
        key, was, now = diff
        raise CheckpointError(
            f"checkpoint was made with {key}={was!r}, this run has {now!r} "
            f"(use a new --out folder to start a different {kind})"
        )
