"""Which rank caused a failed Ray Train run, and a worker-side wait that lets Train see it.

When one rank dies, its peers' next collective fails too ("Connection closed by peer"); Train
then reports every rank's error. The line a user reads must name the rank that died.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch.distributed as dist

__all__ = [
    "failure_line",
    "is_peer_failure",
    "peer_failure_grace_s",
    "root_failure",
    "run_reporting_root_cause",
]


# Words of the error a rank raises when a collective fails because a *peer* went away: it is a
# consequence of another rank's failure, never the root cause (gloo and NCCL wordings).
_PEER_LOST = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "socket closed",
    "nccl communicator was aborted",
    "remote process exited",
)


def is_peer_failure(error: BaseException) -> bool:
    """True when ``error`` is a collective that failed because another rank went away."""
    text = str(error).lower()
    return isinstance(error, dist.DistBackendError) or any(w in text for w in _PEER_LOST)


def _cause_rank(rank: int, error: BaseException) -> tuple[int, int]:
    # A worker whose process died (Train's health check failed) is the likeliest root cause;
    # then an exception our code raised; last a rank that only saw its peer vanish.
    if not isinstance(error, Exception) or type(error).__module__.startswith("ray."):
        return (0, rank)
    return (2 if is_peer_failure(error) else 1, rank)


def root_failure(failures: dict[int, BaseException]) -> tuple[int, BaseException] | None:
    """The (rank, error) that most likely caused a worker-group failure, or None."""
    if not failures:
        return None
    rank = min(failures, key=lambda r: _cause_rank(r, failures[r]))
    return rank, failures[rank]


def failure_line(exc: Exception) -> str:
    """One line for the root-cause rank: a traceback's last line names the exception."""
    found = root_failure(getattr(exc, "worker_failures", None) or {})
    where, error = (f"rank {found[0]}: ", found[1]) if found else ("", exc)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return where + (lines[-1] if lines else type(error).__name__)[:300]


def peer_failure_grace_s() -> float:
    """How long a rank that saw a peer vanish waits before failing: two of Train's health-check
    intervals, so the controller records the dead peer (the root cause) first."""
    try:
        interval = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0"))
    except ValueError:
        interval = 2.0
    return 2 * max(interval, 0.0) + 1.0


def run_reporting_root_cause(run: Callable[[], Any]) -> Any:
    """Call ``run``; a peer-lost collective error is re-raised only after the grace period."""
    try:
        return run()
    except Exception as exc:
        if dist.is_initialized() and is_peer_failure(exc):
            time.sleep(peer_failure_grace_s())
        raise
