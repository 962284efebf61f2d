"""Test helper: the one resume check both jobs go through, in-process or on Ray Train.

:func:`check_resume` runs a job three times: uninterrupted into ``whole/``, interrupted at the
start of epoch ``stop_at`` (after epoch ``stop_at - 1``'s checkpoint is written) into
``split/``, then again into ``split/``. The resumed run must end exactly where the
uninterrupted one did: the same ``metrics.jsonl`` records and ``result.json`` (timings aside),
the same final checkpoint (weights, optimizers, every random stream), and, at the start of the
first resumed epoch, every rank's torch random state equal to the uninterrupted run's there.

Every run trains with a probed ``train_epoch`` that records, per rank, each epoch it starts and
the torch random state at that point (``<probes>/epochs-<rank>``, ``<probes>/rng-<rank>-<e>.pt``),
and a budgeted search's ``ln lambda`` at the epoch's end (``<probes>/lambda-<rank>-<e>.pt``).
For Ray runs the probe is built by a factory so cloudpickle ships it by value (this module is
not importable inside Ray workers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from snas_ray.engine.checkpoint import load_checkpoint

__all__ = ["ResumeRuns", "check_resume", "comparable", "records"]

TIMING_PREFIX = "time/"  # wall-clock fields, the only ones allowed to differ


def comparable(value: Any) -> Any:
    """``value`` without timing fields (``time/*`` keys), at any depth."""
    if isinstance(value, dict):
        return {
            k: comparable(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.startswith(TIMING_PREFIX))
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def records(run: Path) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` records of ``run``, one per finished epoch."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_state(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Checkpoint contents equal exactly (tensors bit for bit), timing fields aside."""
    if isinstance(a, dict):
        a, b = comparable(a), comparable(b)
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@dataclass
class ResumeRuns:
    """What :func:`check_resume` ran, for a test's own further checks."""

    whole: Path  # the uninterrupted run folder
    split: Path  # the interrupted-then-resumed run folder
    whole_result: dict[str, Any]
    resumed_result: dict[str, Any]
    probes: dict[str, Path]  # "whole", "interrupted", "resumed" -> that run's probe folder

    def rng(self, run: str, rank: int, epoch: int) -> torch.Tensor:
        """Rank ``rank``'s torch random state at the start of epoch ``epoch`` of ``run``."""
        return torch.load(self.probes[run] / f"rng-{rank}-{epoch}.pt")

    def log_lambda(self, run: str, rank: int, epoch: int) -> torch.Tensor:
        """A budgeted search's ``ln lambda`` on rank ``rank`` at the end of epoch ``epoch``."""
        return torch.load(self.probes[run] / f"lambda-{rank}-{epoch}.pt")

    def epochs_started(self, run: str, rank: int = 0) -> list[int]:
        return [int(e) for e in (self.probes[run] / f"epochs-{rank}").read_text().split()]


def _probe_factory(probes: str, stop_at: int | None, interrupt: str):
    """A wrapper for ``train_epoch`` that records each epoch start and the random state then,
    and raises at the start of epoch ``stop_at`` (``KeyboardInterrupt`` in-process, a
    ``RuntimeError`` in a Ray worker, where KeyboardInterrupt means something else)."""

    def wrap(train_epoch, rank: int):
        from pathlib import Path

        import torch

        folder = Path(probes)

        def probed_train_epoch(self, epoch, hooks=()):
            if epoch == stop_at:
                if interrupt == "keyboard":
                    raise KeyboardInterrupt  # Ctrl-C while training epoch ``stop_at``
                raise RuntimeError(f"resume check: stopped rank {rank} at epoch {epoch}")
            with (folder / f"epochs-{rank}").open("a") as f:
                f.write(f"{epoch}\n")
            torch.save(torch.get_rng_state(), folder / f"rng-{rank}-{epoch}.pt")
            record = train_epoch(self, epoch, hooks)
            controller = getattr(self, "controller", None)  # a budgeted search's lambda
            if controller is not None:
                torch.save(controller.log_lambda.cpu(), folder / f"lambda-{rank}-{epoch}.pt")
            return record

        return probed_train_epoch

    return wrap


def _ray_worker_fn(job: str, probes: str, stop_at: int | None):
    """``train_fn_per_worker`` with the probe patched into the worker process only."""
    wrap = _probe_factory(probes, stop_at, "error")

    def train_fn(config):
        import ray.train

        from snas_ray.distributed.worker import train_fn_per_worker
        from snas_ray.retrain import RetrainLoop
        from snas_ray.search import SearchLoop

        cls = SearchLoop if job == "search" else RetrainLoop
        rank = ray.train.get_context().get_world_rank()
        cls.train_epoch = wrap(cls.train_epoch, rank)
        return train_fn_per_worker(config)

    return train_fn


def _run(job: str, cfg, out: Path, probes: Path, *, workers: int, stop_at: int | None):
    probes.mkdir(parents=True, exist_ok=True)
    if workers == 0:
        from snas_ray.retrain import RetrainLoop, run_retrain
        from snas_ray.search import SearchLoop, run_search

        cls, run = (SearchLoop, run_search) if job == "search" else (RetrainLoop, run_retrain)
        wrap = _probe_factory(str(probes), stop_at, "keyboard")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cls, "train_epoch", wrap(cls.train_epoch, 0))
            return run(cfg, out)
    from snas_ray.distributed import LaunchOptions, launch

    options = LaunchOptions(workers=workers, max_failures=0)
    return launch(job, cfg, out, options, train_fn=_ray_worker_fn(job, str(probes), stop_at))


def check_resume(
    job: str, cfg, tmp_path: Path, *, workers: int = 0, stop_at: int = 1
) -> ResumeRuns:
    """Assert that ``job`` (``search`` or ``retrain``) of ``cfg``, interrupted at the start of
    epoch ``stop_at`` and run again into the same folder, ends exactly as an uninterrupted run.

    ``workers=0`` runs in-process (``run_search`` / ``run_retrain``); ``workers=N`` runs on Ray
    Train with N workers (the caller provides the Ray cluster); an interrupted Ray run fails
    with ``DistributedRunError`` and is resumed by launching it again.
    """
    assert job in ("search", "retrain"), job
    epochs = cfg.search.epochs if job == "search" else cfg.train.epochs
    assert 1 <= stop_at < epochs, (stop_at, epochs)
    ranks = range(max(workers, 1))
    whole, split = tmp_path / "whole", tmp_path / "split"
    probes = {name: tmp_path / f"probes-{name}" for name in ("whole", "interrupted", "resumed")}

    whole_result = _run(job, cfg, whole, probes["whole"], workers=workers, stop_at=None)
    assert whole_result["epochs_done"] == epochs

    if workers == 0:
        stopped: Any = pytest.raises(KeyboardInterrupt)
    else:
        from snas_ray.errors import DistributedRunError

        stopped = pytest.raises(DistributedRunError, match=f"stopped rank \\d at epoch {stop_at}")
    with stopped:
        _run(job, cfg, split, probes["interrupted"], workers=workers, stop_at=stop_at)
    # Stopped with epoch stop_at - 1's checkpoint and records, and no outputs.
    assert load_checkpoint(split / "checkpoints" / "last.pt")["epoch"] == stop_at
    assert [r["epoch"] for r in records(split)] == list(range(1, stop_at + 1))  # 1-based
    assert not (split / "result.json").exists()
    before = (split / "metrics.jsonl").read_text().splitlines()

    resumed_result = _run(job, cfg, split, probes["resumed"], workers=workers, stop_at=None)
    runs = ResumeRuns(whole, split, whole_result, resumed_result, probes)

    # Every rank continued at epoch stop_at: no finished epoch was lost or trained again, and
    # the finished epochs' records (wall times included) were kept, not rewritten.
    for rank in ranks:
        assert runs.epochs_started("interrupted", rank) == list(range(stop_at))
        assert runs.epochs_started("resumed", rank) == list(range(stop_at, epochs))
    assert (split / "metrics.jsonl").read_text().splitlines()[:stop_at] == before
    assert [r["epoch"] for r in records(split)] == list(range(1, epochs + 1))

    # The same run: every epoch's metrics, the result, the final state.
    assert comparable(records(split)) == comparable(records(whole))
    assert comparable(resumed_result) == comparable(whole_result)
    assert json.loads((split / "result.json").read_text()) == resumed_result
    assert_same_state(
        load_checkpoint(whole / "checkpoints" / "last.pt"),
        load_checkpoint(split / "checkpoints" / "last.pt"),
    )

    # Each rank's random stream was restored: the resumed epoch starts from the state the
    # uninterrupted run had there; with several ranks, each rank has its own stream.
    for rank in ranks:
        # Only meaningful if the epochs before the stop drew random numbers (a retraining's
        # epoch 0 has drop-path 0 and draws none: stop a retraining at epoch 2 or later).
        drawn = runs.rng("whole", rank, stop_at)
        assert not torch.equal(drawn, runs.rng("whole", rank, 0)), "no random draws to restore"
        restored = runs.rng("resumed", rank, stop_at)
        assert torch.equal(restored, drawn), f"rank {rank}'s random state was not restored"
    if workers > 1:
        first = runs.rng("whole", 0, stop_at)
        assert all(not torch.equal(first, runs.rng("whole", r, stop_at)) for r in ranks[1:])
    return runs
