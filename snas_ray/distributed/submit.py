"""Send a snas-ray command to a running Ray cluster as a Ray job (the Job Submission API).

The project folder travels as the job's ``working_dir`` (zipped through the cluster's object
store, so it works without a package index); the command runs on the head node as
``python -m snas_ray ...`` with that folder as its working directory. The cluster's token, if
this machine has one (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``), goes in an ``Authorization``
header through the SDK's public ``headers`` argument. ray-notes §4, §12.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from snas_ray.errors import JobFailedError, SnasRayError

__all__ = ["EXCLUDES", "JobFailedError", "auth_headers", "submit"]

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


def auth_headers() -> dict[str, str]:
    """The ``Authorization`` header for the cluster's token, as ``ray job submit`` would send it.

    Ray's token sources, first found wins: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``,
    ``~/.ray/auth_token``. With ``RAY_AUTH_MODE`` unset a token that exists is sent (the SDK alone
    sends none and a token cluster answers 401); ``RAY_AUTH_MODE=disabled`` sends none.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        try:
            token = path.expanduser().read_text().strip()
        except OSError:
            token = ""
    if not token and os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        raise SnasRayError(
            "RAY_AUTH_MODE=token but no token found (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token): copy the cluster's token here"
        )
    return {"Authorization": f"Bearer {token}"} if token else {}


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
    try:
        client = JobSubmissionClient(address, headers=auth_headers())
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
