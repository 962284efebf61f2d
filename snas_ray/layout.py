"""Every file name of a run folder and a sweep folder, the one atomic writer, the folder lock.

Stdlib only (``snas-ray collect`` imports this without torch). Every file a run writes goes
through :func:`atomic_write`: a temp file in the same folder, ``fsync``, then ``os.replace``, so a
reader or a crash sees the old file or the new one, never a mix. One process at a time writes a
run or sweep folder: :class:`FolderLock`, an ``flock`` that a dead process releases by itself.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from snas_ray.errors import FolderInUseError, SnasRayError

__all__ = [
    "EVALUATE_SPEC",
    "TEMP_SUFFIX",
    "EvaluatePaths",
    "LOCK_FILE",
    "FolderLock",
    "RunPaths",
    "SweepPaths",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "is_temp_file",
    "output_folder",
    "previous_checkpoint",
    "remove_stale_temps",
]

TEMP_SUFFIX = ".tmp"  # temp files are ".<name>.<random>.tmp" beside their target
EVALUATE_SPEC = "evaluate.yaml"  # marks an evaluation folder (see EvaluatePaths)
# What mkstemp makes of our prefix and suffix: ".<name>." + 8 random characters + ".tmp".
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))
LOCK_FILE = ".snas-ray.lock"  # in a run or sweep folder; holds the writer's host and PID


def previous_checkpoint(last: Path) -> Path:
    """Where the checkpoint before ``last`` is kept (``checkpoints/previous.pt``)."""
    return Path(last).with_name("previous.pt")


@dataclass(frozen=True)
class RunPaths:
    """The layout of one run folder (a search or a retraining).

    ``collect`` reads only ``genotype.json``, ``result.json`` and ``config.yaml``, plus
    ``retrain/result.json`` when the run's genotype was retrained there.
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

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
    def previous_checkpoint(self) -> Path:
        """The checkpoint before ``last.pt``, the fallback when ``last.pt`` is unreadable."""
        return previous_checkpoint(self.last_checkpoint)

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def genotype(self) -> Path:
        return self.root / "genotype.json"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def ray_storage(self) -> Path:
        """Ray Train's storage when ``--storage`` is not given."""
        return self.root / "ray"

    @property
    def retrain(self) -> RunPaths:
        """The retraining of this run's genotype that ``collect --retrain`` writes."""
        return RunPaths(self.root / "retrain")

    def make(self) -> RunPaths:
        """Create the folder and its checkpoint sub-folder."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class SweepPaths:
    """The layout of one sweep folder: one run folder per trial under ``runs/``."""

    root: Path

    @property
    def spec(self) -> Path:
        """The resolved sweep; a re-run must match it to continue."""
        return self.root / "sweep.yaml"

    @property
    def results(self) -> Path:
        return self.root / "sweep_results.json"

    @property
    def tune(self) -> Path:
        """Tune's experiment folder (its name is also the experiment's name)."""
        return self.root / "tune"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def collect(self) -> Path:
        """Where the sweep's own ``collect`` writes its leaderboard and report."""
        return self.root / "collect"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    def run(self, dirname: str) -> RunPaths:
        return RunPaths(self.runs / dirname)


@dataclass(frozen=True)
class EvaluatePaths:
    """The layout of one evaluation folder (``snas-ray evaluate``, default ``SWEEP/evaluate``).

    Its ``evaluate.yaml`` also marks it for the collector, which never takes the retrainings
    under ``runs/`` for search runs.
    """

    root: Path

    @property
    def spec(self) -> Path:
        """The resolved evaluate config; a re-run must match it to continue."""
        return self.root / EVALUATE_SPEC

    @property
    def plan(self) -> Path:
        """What is retrained: the front genotypes, the random draws and their costs."""
        return self.root / "plan.json"

    @property
    def genotypes(self) -> Path:
        return self.root / "genotypes"

    @property
    def runs(self) -> Path:
        """One complete retrain run folder per genotype and seed."""
        return self.root / "runs"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def json(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def markdown(self) -> Path:
        return self.root / "evaluation.md"

    @property
    def plot(self) -> Path:
        return self.root / "evaluation.png"


def output_folder(path: Path | str, flag: str = "--out") -> Path:
    """Create the folder ``path`` (and its parents); a one-line error when it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SnasRayError(f"{flag} {path} is a file, not a folder (choose a folder)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SnasRayError(f"{flag} {path}: cannot create the folder ({exc.strerror})") from None
    return path


class FolderLock:
    """An exclusive ``flock`` on ``folder/.snas-ray.lock`` for one writing process.

    The kernel drops the lock when the process dies, however it dies, so a killed run never
    leaves a stale lock. The file keeps the holder's host and PID for the refusal message; it
    stays in the folder (deleting it would let two processes lock two different files).
    """

    def __init__(self, folder: Path | str, what: str = "") -> None:
        self.path = Path(folder) / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderInUseError` naming the holder; never waits."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise FolderInUseError(
                f"{self.path.parent} is in use by {_describe_holder(holder)}; wait for it to "
                "end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()} {self.what}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    host, pid, what = ([*text.split(maxsplit=2), "", "", ""])[:3]
    if not pid.isdigit():  # the holder is between taking the lock and writing its name
        return "another process"
    return f"{'a ' + what if what else 'another process'} (PID {pid} on host {host})"


def is_temp_file(name: str) -> bool:
    """Whether ``name`` is the temp file of an :func:`atomic_write` (finished or not)."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(root: Path | str) -> list[Path]:
    """Delete the temp files interrupted :func:`atomic_write` calls left under ``root``.

    Only names of the form ``.<name>.<8 random characters>.tmp`` are touched. Call it only
    while holding the folder's :class:`FolderLock`: a live writer's temp file looks the same.
    """
    removed = []
    for folder, _, files in os.walk(root):
        for name in files:
            if is_temp_file(name):
                path = Path(folder) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _umask() -> int:
    # The umask can only be read by setting it; put it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(
    path: Path | str,
    write: Callable[[IO[Any]], Any],
    *,
    binary: bool,
    keep_previous: Path | None = None,
) -> None:
    """Write ``path`` through ``write(file)`` so readers see the old file or the new one.

    The file gets the permissions ``open()`` would give it (0666 less the umask), not
    ``mkstemp``'s 0600, so colleagues on a shared folder can read results. With
    ``keep_previous``, the file being replaced is first renamed there (both renames are atomic;
    between them only ``keep_previous`` exists).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.is_file():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    atomic_write(path, lambda f: f.write(data), binary=True)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON; NaN and infinities are refused (they are not
    JSON, and no result of ours may hold one)."""
    bad = _non_finite(obj, "")
    if bad is not None:
        raise SnasRayError(f"refusing to write {path}: {bad[0] or 'the value'} is {bad[1]}")
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _non_finite(obj: Any, where: str) -> tuple[str, float] | None:
    """(dotted place, value) of the first NaN or infinity in ``obj``, else None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where, obj
    items = (
        obj.items()
        if isinstance(obj, dict)
        else enumerate(obj)
        if isinstance(obj, (list, tuple))
        else ()
    )
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None
