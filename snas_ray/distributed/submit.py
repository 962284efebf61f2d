"""Send a snas-ray command to a running Ray cluster as a Ray job (the Job Submission API).

The project folder travels as the job's ``working_dir`` (zipped through the cluster's object
store, so it works without a package index); the command runs on the head node as
``python -m snas_ray ...`` with that folder as its working directory. Token authentication is
Ray's: set ``RAY_AUTH_MODE=token`` and keep the cluster's token in ``~/.ray/auth_token`` (or
``RAY_AUTH_TOKEN``). ray-notes §4.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from snas_ray.errors import JobFailedError, SnasRayError

__all__ = ["EXCLUDES", "JobFailedError", "submit"]

logger = logging.getLogger(__name__)

# Never upload these: environments, data, outputs (Ray caps working_dir at a few hundred MB).
EXCLUDES = [
    ".venv",
    ".git",
    "runs",
    "data",
    "out",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
]


_POLL_S = 5.0


def _use_token_if_present() -> None:
    # As `ray job submit` does: with RAY_AUTH_MODE unset, a token on this machine switches
    # token auth on (the SDK alone sends no token, and the cluster answers 401).
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # pragma: no cover - moved in another Ray version
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


async def _follow(client: JobSubmissionClient, job_id: str, on_log: Callable[[str], None]) -> None:
    async for chunk in client.tail_job_logs(job_id):  # ends when the job does
        on_log(chunk)


def submit(
    command: list[str],
    *,
    address: str,
    working_dir: Path | str = ".",
    wait: bool = True,
    on_log: Callable[[str], None] | None = None,
) -> str:
    """Submit ``snas-ray <command>`` as a Ray job; with ``wait``, follow it to the end.

    ``on_log`` receives the job's log as it grows. Returns the job id; raises
    :class:`JobFailedError` when a waited-for job does not succeed.
    """
    _use_token_if_present()
    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SnasRayError(f"cannot reach the Ray dashboard at {address} ({first})") from None
    job_id = client.submit_job(
        entrypoint=shlex.join(["python", "-m", "snas_ray", *command]),
        runtime_env={"working_dir": str(Path(working_dir).resolve()), "excludes": EXCLUDES},
    )
    logger.info("submitted %s to %s", job_id, address)
    if not wait:
        return job_id
    asyncio.run(_follow(client, job_id, on_log or (lambda _text: None)))
    status = client.get_job_status(job_id)
    while not status.is_terminal():  # the log stream ended early (a dropped connection)
        time.sleep(_POLL_S)
        status = client.get_job_status(job_id)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        message = (info.message or "see its log").strip().splitlines()[0]
        raise JobFailedError(f"job {job_id} {status.value}: {message}")
    return job_id
