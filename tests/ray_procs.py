"""Killing a process with everything it started, as a crash or a lost host would.

Ray's daemons (GCS, raylet, workers) stay in the session of the process that started them, so
SIGKILL to a session is "this machine's Ray and the driver died at once".
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def session_processes(sid: int) -> list[int]:
    """PIDs whose session id is ``sid`` (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the name: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def kill_session(sid: int, *, wait_s: float = 20) -> None:
    """SIGKILL every process of session ``sid`` and wait until they are gone."""
    for pid in session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + wait_s
    while session_processes(sid) and time.time() < deadline:
        time.sleep(0.2)
