"""Launch a search or a retraining on Ray Train: a TorchTrainer with one worker per GPU.

:func:`launch` connects (or starts a local cluster), fits :func:`~.worker.train_fn_per_worker`
on N workers (gloo on CPU, NCCL on GPUs) and returns rank 0's ``result.json``. The Train run's
name is stable per run folder, so the same command run again resumes from the latest
checkpoint. ``run_distributed_search`` and ``run_distributed_retrain`` are the two jobs' names
for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from snas_ray.config import ExperimentConfig, resolve_paths
from snas_ray.distributed.failures import failure_line
from snas_ray.distributed.worker import JOBS, train_fn_per_worker
from snas_ray.engine.checkpoint import load_latest_checkpoint
from snas_ray.engine.runfolder import check_no_orphan_results
from snas_ray.engine.state import check_resumable
from snas_ray.errors import DistributedRunError, SnasRayError
from snas_ray.layout import RunPaths, atomic_write_text

__all__ = [
    "LaunchOptions",
    "absolute_storage",
    "connect",
    "fetch_result",
    "fit",
    "launch",
    "run_distributed_retrain",
    "run_distributed_search",
    "run_name",
]

logger = logging.getLogger(__name__)

_OBJECT_STORE_BYTES = 256 * 1024**2  # only configs and return values travel through it


@dataclass(frozen=True)
class LaunchOptions:
    """Where and how wide to run: the ``--workers ... --max-failures`` flags of ``search``."""

    workers: int = 1
    gpus_per_worker: float | None = None  # None: 1 if the cluster has GPUs and device allows
    cpus_per_worker: float = 1.0
    address: str | None = None  # None: start a local cluster; "auto" or HOST:PORT: join one
    storage: str | None = None  # None: <out>/ray; multi-node runs need shared storage or a URI
    max_failures: int = 3
    name: str | None = None  # None: run_name(out), stable so a re-run resumes

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise SnasRayError(f"--workers must be >= 1 for a Ray run (got {self.workers})")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise SnasRayError("--gpus-per-worker must be >= 0")
        if self.max_failures < -1:
            raise SnasRayError("--max-failures must be >= -1 (-1 = retry forever)")


def run_name(out: Path | str) -> str:
    """A stable Train run name for a run folder (no timestamp, so re-runs find the run)."""
    root = Path(out).resolve()
    return f"snas-{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


def connect(address: str | None = None, *, min_cpus: float = 0) -> bool:
    """Join the Ray cluster at ``address`` or start a small local one; False if already joined.

    A local cluster gets a 256 MiB object store instead of 30% of RAM, and at least
    ``min_cpus`` logical CPUs (a nested sweep trial needs its workers' CPUs plus a sliver for
    itself). Authentication is Ray's default (token mode since 2.59); set ``RAY_AUTH_MODE`` to
    change it (ray-notes §5, §12).
    """
    if ray.is_initialized():
        return False
    if address is None and "RAY_ADDRESS" not in os.environ:
        # "local": a new cluster even if `ray start` left one running (join it with "auto").
        # The dashboard serves the State API that Train's placement-group cleaner polls.
        # Ray counts CPUs itself (cgroup limits included); raise the count only when needed.
        cpus = math.ceil(min_cpus) if min_cpus > (os.cpu_count() or 1) else None
        context = ray.init(
            address="local",
            num_cpus=cpus,
            object_store_memory=_OBJECT_STORE_BYTES,
            include_dashboard=True,
        )
    else:
        context = ray.init(address=address)
    if context.dashboard_url:
        logger.info("Ray dashboard: http://%s", context.dashboard_url)
    return True


def absolute_storage(storage: str | None) -> str | None:
    """``--storage`` as Train needs it: a local path made absolute (Train's workers do not run in
    the driver's working directory); a URI (``s3://...``, ``gs://...``) as given."""
    if storage is None or "://" in storage:
        return storage
    return os.path.normpath(Path(storage).expanduser().absolute())


def _use_gpu(cfg: ExperimentConfig, options: LaunchOptions) -> bool:
    if options.gpus_per_worker is not None:
        if options.gpus_per_worker > 0 and cfg.device == "cpu":
            raise SnasRayError("--gpus-per-worker > 0 contradicts device=cpu")
        return options.gpus_per_worker > 0
    if cfg.device == "cpu":
        return False
    has_gpus = ray.cluster_resources().get("GPU", 0) >= 1
    if cfg.device.startswith("cuda") and not has_gpus:
        raise SnasRayError(f"device={cfg.device} but the Ray cluster has no GPUs")
    if not has_gpus and (options.address or "RAY_ADDRESS" in os.environ):
        # Ray cannot say whether an autoscaler could add GPU nodes, so say what happens and
        # how to ask for GPUs (a request it can see), instead of guessing.
        logger.warning(
            "device auto: the Ray cluster shows no GPU now, so the %d worker(s) train on CPU; "
            "to train on GPUs pass --gpus-per-worker 1 (an autoscaler then adds GPU nodes)",
            options.workers,
        )
    return has_gpus


def fit(
    cfg: ExperimentConfig,
    paths: RunPaths,
    options: LaunchOptions,
    *,
    job: str = "search",
    train_fn: Callable[[dict[str, Any]], Any] = train_fn_per_worker,
    extra: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
) -> ray.train.Result:
    """Fit ``train_fn`` on ``options.workers`` Ray Train workers into ``paths``; the Train result.

    Relative path fields of ``cfg`` are resolved against this process's working directory
    (callers in another folder, like a sweep trial, resolve them first); ``extra`` joins the
    ``train_loop_config`` and ``callbacks`` the ``RunConfig`` (a sweep trial's Tune reports).
    """
    cfg = resolve_paths(cfg)  # Train runs its workers in the run's own folder (ray-notes §10)
    use_gpu = _use_gpu(cfg, options)
    resources = {"CPU": options.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = options.gpus_per_worker or 1
    name = options.name or run_name(paths.root)
    storage = options.storage or str(paths.ray_storage)
    loop_config = {
        "job": job,
        "experiment": cfg.to_dict(),
        "run_dir": str(paths.root),
        "device": "cuda" if use_gpu else "cpu",
        "log_level": logging.getLogger("snas_ray").getEffectiveLevel(),
    } | (extra or {})
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=options.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=options.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
    )
    logger.info(
        "ray %s: %d worker(s) (%s), run %s in %s, out %s",
        job,
        options.workers,
        "GPU" if use_gpu else "CPU, gloo",
        name,
        storage,
        paths.root,
    )
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise DistributedRunError(
            f"distributed {job} {name} failed ({failure_line(exc)}); "
            "run the same command again to resume"
        ) from exc


def launch(
    job: str,
    cfg: ExperimentConfig,
    out: Path | str,
    options: LaunchOptions | None = None,
    *,
    train_fn: Callable[[dict[str, Any]], Any] = train_fn_per_worker,
) -> dict[str, Any]:
    """Run (or resume) ``job`` (``search`` or ``retrain``) on Ray into ``out``; returns the
    ``result.json`` dict. ``train_fn`` replaces the worker function (tests inject faults)."""
    if job not in JOBS:
        raise SnasRayError(f"unknown job {job!r} (allowed: {', '.join(JOBS)})")
    options = options or LaunchOptions()
    options = dataclasses.replace(options, storage=absolute_storage(options.storage))
    cfg = resolve_paths(cfg)  # Train runs its workers in another working directory
    paths = RunPaths(Path(out).resolve()).make()
    found = load_latest_checkpoint(paths.last_checkpoint)
    if found is not None:  # fail here, not once per restart in every worker
        check_resumable(job, cfg.to_dict(), found[0])
    elif (
        options.storage is None
        and not (paths.ray_storage / (options.name or run_name(out))).exists()
    ):
        check_no_orphan_results(paths, cfg.to_dict())  # nothing to resume: do not overwrite
    started = connect(options.address)
    try:
        result = fit(cfg, paths, options, job=job, train_fn=train_fn)
    finally:
        if started:
            ray.shutdown()
    return fetch_result(result, paths, job)


def fetch_result(result: ray.train.Result, paths: RunPaths, job: str) -> dict[str, Any]:
    """Rank 0's ``result.json`` dict from a finished fit; the files rank 0 wrote are mirrored
    into ``paths`` when it ran on a node that does not share the run folder."""
    returned = result.return_value or {}
    if returned.get("result") is None:
        raise DistributedRunError(f"the Ray {job} into {paths.root} returned no result")
    for name, text in (returned.get("files") or {}).items():
        target = paths.root / name
        if not target.is_file() or target.read_text() != text:
            atomic_write_text(target, text)
    return returned["result"]


def run_distributed_search(
    cfg: ExperimentConfig, out: Path | str, options: LaunchOptions | None = None, **kw: Any
) -> dict[str, Any]:
    """:func:`launch` of a search."""
    return launch("search", cfg, out, options, **kw)


def run_distributed_retrain(
    cfg: ExperimentConfig, out: Path | str, options: LaunchOptions | None = None, **kw: Any
) -> dict[str, Any]:
    """:func:`launch` of a retraining."""
    return launch("retrain", cfg, out, options, **kw)
