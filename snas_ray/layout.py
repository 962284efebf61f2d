"""Every file name of a run folder and a sweep folder, and the one atomic writer.

Stdlib only (``snas-ray collect`` imports this without torch). Every file a run writes goes
through :func:`atomic_write`: a temp file in the same folder, ``fsync``, then ``os.replace``, so a
reader or a crash sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "EVALUATE_SPEC",
    "TEMP_SUFFIX",
    "EvaluatePaths",
    "RunPaths",
    "SweepPaths",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]

TEMP_SUFFIX = ".tmp"  # temp files are ".<name>.<random>.tmp" beside their target
EVALUATE_SPEC = "evaluate.yaml"  # marks an evaluation folder (see EvaluatePaths)


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


def _umask() -> int:
    # The umask can only be read by setting it; put it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path | str, write: Callable[[IO[Any]], Any], *, binary: bool) -> None:
    """Write ``path`` through ``write(file)`` so readers see the old file or the new one.

    The file gets the permissions ``open()`` would give it (0666 less the umask), not
    ``mkstemp``'s 0600, so colleagues on a shared folder can read results.
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
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
