"""Every error snas-ray raises on purpose, under one root.

The CLI prints a :class:`SnasRayError` as one line and exits non-zero; anything else is a bug and
keeps its traceback. Errors pickle, since Ray copies and ships errors raised in trials.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DistributedRunError",
    "EvaluationError",
    "FolderInUseError",
    "GenotypeError",
    "JobFailedError",
    "SnasRayError",
    "SweepError",
]


class SnasRayError(Exception):
    """Base of every user-facing error; the CLI prints it as one line and exits non-zero."""


class ConfigError(SnasRayError):
    """A config key or value is wrong; the message names the dotted field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"config error: {field_name}: {message}")
        self.field_name, self.message = field_name, message

    def __reduce__(self) -> tuple[Any, ...]:  # Ray copies and pickles errors raised in trials
        return (type(self), (self.field_name, self.message))


class GenotypeError(SnasRayError, ValueError):
    """A genotype is malformed or unknown (also a ValueError: it is bad input to a parser)."""


class DataError(SnasRayError):
    """The data cannot be found, read or split; the message names the ``data.*`` field to fix."""


class CheckpointError(SnasRayError):
    """A checkpoint is missing, unreadable, not one of ours, or from a different run."""


class FolderInUseError(SnasRayError):
    """Another process holds the run or sweep folder's lock; the message names its host and PID."""


class DistributedRunError(SnasRayError):
    """A Ray Train run failed (after its restarts); re-running the same command resumes it."""


class SweepError(SnasRayError):
    """A sweep cannot start, or ended with failed trials; re-running the same command resumes it."""


class EvaluationError(SnasRayError):
    """An evaluation cannot be planned or ended with failed retrainings; re-running resumes it."""


class JobFailedError(SnasRayError):
    """A job submitted to a Ray cluster ended in a state other than SUCCEEDED."""
