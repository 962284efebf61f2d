"""Send a snas-ray command to a running Ray cluster as a Ray job (the Job Submission API).

The project folder travels as the job's ``working_dir`` (zipped through the cluster's object
store, so it works without a package index); the command runs on the head node as
``python -m snas_ray ...`` with that folder as its working directory. Token authentication is
Ray's: set ``RAY_AUTH_MODE=token`` and keep the cluster's token in ``~/.ray/auth_token`` (or
``RAY_AUTH_TOKEN``). ray-notes §4.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from snas_ray.config import SnasRayError

__all__ = ["EXCLUDES", "JobFailedError", "submit"]

logger = logging.getLogger(__name__)

# Never upload these: environments, data, outputs (Ray caps working_dir at a few hundred MB).
EXCLUDES = [".venv", ".git", "runs", "data", "*.egg-info", "__pycache__", ".pytest_cache"]
_POLL_S = 2.0


class JobFailedError(SnasRayError):
    """The submitted job ended in FAILED or STOPPED."""


def submit(
    command: list[str],
    *,
    address: str,
    working_dir: Path | str = ".",
    wait: bool = True,
    out=sys.stdout,
) -> str:
    """Submit ``snas-ray <command>`` as a Ray job; with ``wait``, stream its log to the end.

    Returns the job id. Raises :class:`JobFailedError` when a waited-for job does not succeed.
    """
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
        print(f"{job_id}\nfollow with: ray job logs -f --address {address} {job_id}", file=out)
        return job_id
    shown = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        out.write(logs[shown:])
        out.flush()
        shown = len(logs)
        if status.is_terminal():
            break
        time.sleep(_POLL_S)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        raise JobFailedError(f"job {job_id} {status.value}: {info.message or 'see its log'}")
    return job_id
