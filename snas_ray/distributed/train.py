"""The SNAS search on Ray Train: a TorchTrainer with one worker per GPU (gloo on CPU).

:func:`run_distributed_search` launches :func:`train_fn_per_worker` on N workers. Each runs the
pure-PyTorch :class:`~snas_ray.search.SearchLoop` with DDP, sharded loaders and all-reduced
metrics; rank 0 writes the same run folder as an in-process search, and every epoch every rank
reports while rank 0 attaches the checkpoint. A restarted worker group, or the same command run
again, resumes from the latest checkpoint. Spec §9 and §15; ray-notes §9.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from snas_ray.config import ExperimentConfig
from snas_ray.data import build_datasets, make_loader
from snas_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from snas_ray.errors import DistributedRunError, SnasRayError
from snas_ray.genotype import Genotype, save_genotype
from snas_ray.layout import RunPaths, atomic_write_json
from snas_ray.runfolder import checkpoint_hook, make_sinks, write_config, write_outputs
from snas_ray.search import SearchLoop, build_search, check_same_search, identity
from snas_ray.space.supernet import Supernet
from snas_ray.sweep_spec import progress_metrics

__all__ = [
    "STATE_FILE",
    "DistributedRunError",
    "EpochReporter",
    "LaunchOptions",
    "bench_overhead",
    "connect",
    "run_distributed_search",
    "run_name",
    "train_fn_per_worker",
]

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"  # the one file in each Ray checkpoint folder (save_checkpoint format)
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


# --------------------------------------------------------------------------- worker side
def _worker_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    device = ray.train.torch.get_device()  # this worker's GPU
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _prepare_model(net: Supernet) -> nn.Module:
    # A logit matrix that no cell samples from (no normal cell, e.g. 2 layers) never gets a
    # gradient; only then does DDP need its per-step search for unused parameters. The logits
    # used through z (an argument of forward) and the penalty are still averaged by DDP: their
    # gradients accumulate once per backward like any other parameter's.
    unused = len(set(net.reduction)) < 2
    return ray.train.torch.prepare_model(
        net, move_to_device=False, parallel_strategy_kwargs={"find_unused_parameters": unused}
    )


def _shard_loader(loader: DataLoader, *, rank: int, world: int, seed: int) -> DataLoader:
    """Training: a seeded DistributedSampler (equal step counts, ``set_epoch`` per epoch).
    Validation: every ``world``-th image, unpadded, so the summed counts see each image once."""
    if world == 1:
        return loader
    if isinstance(loader.sampler, SequentialSampler):
        sampler: Any = list(range(rank, len(loader.dataset), world))
    else:
        sampler = DistributedSampler(loader.dataset, world, rank, shuffle=True, seed=seed)
    return make_loader(
        loader.dataset,
        loader.batch_size,
        shuffle=False,
        seed=seed,
        num_workers=loader.num_workers,
        drop_last=loader.drop_last,
        sampler=sampler,
    )


def _mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0)
    return {"cpu": torch.get_rng_state(), "cuda": cuda.to(torch.uint8)}


def _gather_rng(device: torch.device, world: int) -> list[dict[str, torch.Tensor]]:
    # Each rank draws its own Gumbel noise; an exact resume needs every rank's generator.
    own = _rng_state(device)
    if world == 1:
        return [own]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, own)
    return states


def _restore(loop: SearchLoop, paths: RunPaths, rank: int, world: int) -> None:
    """Load the newest of Ray's latest checkpoint and the run folder's ``last.pt``."""
    state, source = None, ""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_checkpoint(Path(folder) / STATE_FILE)
        source = checkpoint.path
    local = None
    if paths.last_checkpoint.is_file():
        local = load_checkpoint(paths.last_checkpoint)
    local_epoch = torch.tensor(local["epoch"] if local else -1, device=loop.device)
    if world > 1:
        # last.pt counts only when every rank sees the same one (a shared run folder).
        both = torch.stack([local_epoch, -local_epoch])
        dist.all_reduce(both, op=dist.ReduceOp.MIN)
        if int(both[0]) != -int(both[1]):
            local = None
    if local is not None and (state is None or local["epoch"] > state["epoch"]):
        state, source = local, str(paths.last_checkpoint)
    if state is None:
        return
    loop.load_state_dict(state)
    ranks = state.get("rng_ranks") or []
    if len(ranks) == world:
        torch.set_rng_state(ranks[rank]["cpu"])
        if loop.device.type == "cuda" and ranks[rank]["cuda"].numel():
            torch.cuda.set_rng_state(ranks[rank]["cuda"], loop.device)
    elif rank > 0:  # saved by another world size: only rank 0's stream is known
        torch.manual_seed(loop.cfg.seed + rank + 1_000_003 * loop.epoch)
    if rank == 0:
        logger.info("resuming after epoch %d from %s", loop.epoch, source)


class EpochReporter:
    """``after_epoch`` hook: every rank calls ``ray.train.report`` once per epoch; rank 0 also
    keeps ``checkpoints/last.pt`` current and attaches the same state as the Ray checkpoint."""

    def __init__(self, paths: RunPaths, rank: int, world: int) -> None:
        self.paths, self.rank, self.world = paths, rank, world
        self.wall_s: list[float] = []  # per epoch, report included (for bench_overhead)
        self.hook_s: list[float] = []  # per epoch, this hook alone
        self._last = time.perf_counter()

    def __call__(self, loop: SearchLoop, record: dict[str, Any]) -> None:
        start = time.perf_counter()
        cfg = loop.cfg
        epoch = loop.epoch - 1  # the finished epoch, 0-based as in metrics.jsonl
        metrics = {
            k: v
            for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        metrics.update(progress_metrics(cfg, record, epoch), step=loop.global_step)
        due = loop.epoch % cfg.output.checkpoint_every == 0 or loop.epoch == cfg.search.epochs
        if not due:
            ray.train.report(metrics)
        else:
            name = f"epoch={epoch:04d}"
            rng = _gather_rng(loop.device, self.world)
            if self.rank != 0:
                ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            else:
                state = loop.state_dict() | {"rng_ranks": rng}
                save_checkpoint(self.paths.last_checkpoint, state)
                with tempfile.TemporaryDirectory(prefix="snas-ray-") as folder:
                    save_checkpoint(Path(folder) / STATE_FILE, state)
                    checkpoint = ray.train.Checkpoint.from_directory(folder)
                    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        now = time.perf_counter()
        self.wall_s.append(now - self._last)
        self.hook_s.append(now - start)
        self._last = now


def _worker_logging(rank: int, level: int) -> None:
    # Rank 0 prints the CLI's console lines (Ray forwards worker stderr); the others only warn.
    package = logging.getLogger("snas_ray")
    package.setLevel(level if rank == 0 else max(level, logging.WARNING))
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        package.addHandler(handler)
    if level > logging.DEBUG:
        # Train logs every report's whole metric dict at INFO, per rank; our epoch line is
        # the readable form. Its logger is named after the module file.
        try:
            from ray.train.v2._internal.execution import context as train_context
        except ImportError:  # pragma: no cover - moved in another Ray version
            return
        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def _placement(context: Any, world: int) -> list[dict[str, Any]]:
    """Every rank's host address and node rank (Train numbers nodes by IP address)."""
    own = {
        "rank": context.get_world_rank(),
        "ip": ray.util.get_node_ip_address(),
        "node_rank": context.get_node_rank(),
        "local_rank": context.get_local_rank(),
    }
    if world == 1:
        return [own]
    every: list[Any] = [None] * world
    dist.all_gather_object(every, own)
    return every


def _describe(p: dict[str, Any]) -> str:
    return f"rank {p['rank']} on {p['ip']} (node {p['node_rank']}, local {p['local_rank']})"


def train_fn_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker of a search.

    Args:
        config: ``train_loop_config``: ``experiment`` (``ExperimentConfig.to_dict()``, validated
            again here), ``run_dir``, ``device`` (``cpu``, or ``cuda`` for this worker's GPU),
            and optionally ``log_level`` and ``threads``.

    Returns:
        ``result``: the ``result.json`` dict (rank 0; None elsewhere); ``placement``: each
        rank's host IP and node rank; ``started_at``,
        ``epoch_wall_s`` and ``hook_s`` (report and checkpoint), which :func:`bench_overhead`
        reads.
    """
    cfg = ExperimentConfig.from_dict(config["experiment"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    _worker_logging(rank, int(config.get("log_level", logging.INFO)))
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    device = _worker_device(config.get("device", "cpu"))
    placement = _placement(context, world)
    if rank == 0:
        logger.info("workers: %s", ", ".join(_describe(p) for p in placement))
    paths = RunPaths(Path(config["run_dir"]))
    if rank == 0:
        paths.make()
    if world > 1 and cfg.data.name == "cifar10" and cfg.data.download:
        # One download per node; the other ranks wait instead of racing on the same files.
        if context.get_local_rank() == 0:
            build_datasets(cfg.data)
        dist.barrier()
    loop = build_search(
        cfg,
        device,
        prepare_model=_prepare_model,
        prepare_loader=partial(_shard_loader, rank=rank, world=world, seed=cfg.seed),
        rank=rank,
        world_size=world,
        reduce_mean=_mean_over_ranks if world > 1 else identity,
    )
    _restore(loop, paths, rank, world)
    if rank == 0:
        write_config(cfg, paths)
    sink = make_sinks(loop, paths, write=rank == 0)
    reporter = EpochReporter(paths, rank, world)
    started_at = time.time()
    try:
        result = run_reporting_root_cause(lambda: loop.run(sink, after_epoch=reporter))
    finally:
        sink.close()
    summary = write_outputs(loop, paths, result) if rank == 0 else None
    timing = {"epoch_wall_s": reporter.wall_s, "hook_s": reporter.hook_s}
    return {"result": summary, "started_at": started_at, "placement": placement} | timing


# --------------------------------------------------------------------------- driver side
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
    return has_gpus


def _fit(
    cfg: ExperimentConfig,
    paths: RunPaths,
    options: LaunchOptions,
    *,
    train_fn: Callable[[dict[str, Any]], Any] = train_fn_per_worker,
    extra: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
) -> ray.train.Result:
    use_gpu = _use_gpu(cfg, options)
    if cfg.data.name == "cifar10" and not Path(cfg.data.root).is_absolute():
        # Workers do not run in the driver's cwd; data.root may differ on resume.
        tree = cfg.to_dict()
        tree["data"]["root"] = str(Path(cfg.data.root).resolve())
        cfg = ExperimentConfig.from_dict(tree)
    resources = {"CPU": options.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = options.gpus_per_worker or 1
    name = options.name or run_name(paths.root)
    storage = options.storage or str(paths.root / "ray")
    loop_config = {
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
        "ray search: %d worker(s) (%s), run %s in %s, out %s",
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
            f"distributed search {name} failed ({_failure_line(exc)}); "
            "run the same command again to resume"
        ) from exc


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


def _failure_line(exc: Exception) -> str:
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


def run_distributed_search(
    cfg: ExperimentConfig,
    out: Path | str,
    options: LaunchOptions | None = None,
    *,
    train_fn: Callable[[dict[str, Any]], Any] = train_fn_per_worker,
) -> dict[str, Any]:
    """Run (or resume) a search on Ray into ``out``; returns the ``result.json`` dict.

    ``train_fn`` replaces the worker function (tests wrap it to inject faults).
    """
    options = options or LaunchOptions()
    paths = RunPaths(Path(out).resolve()).make()
    if paths.last_checkpoint.is_file():  # fail here, not once per restart in every worker
        check_same_search(cfg, load_checkpoint(paths.last_checkpoint))
    started = connect(options.address)
    try:
        result = _fit(cfg, paths, options, train_fn=train_fn)
    finally:
        if started:
            ray.shutdown()
    summary = (result.return_value or {}).get("result")
    if summary is None:
        raise DistributedRunError(f"the Ray run into {paths.root} returned no result")
    if not paths.result.is_file() or json.loads(paths.result.read_text()) != summary:
        # rank 0 ran on another node and the run folder is not shared
        save_genotype(Genotype.from_dict(summary["genotype"]), paths.genotype)
        atomic_write_json(paths.result, summary)
    return summary


# --------------------------------------------------------------------------- overhead
def _time_in_process(cfg: ExperimentConfig, device: torch.device, out: Path) -> dict[str, Any]:
    """Per-epoch wall and checkpoint times of the in-process search (as run_search runs it)."""
    paths = RunPaths(out).make()
    loop = build_search(cfg, device)
    write_config(cfg, paths)
    sink = make_sinks(loop, paths)
    save, walls, hooks, last = checkpoint_hook(paths), [], [], [time.perf_counter()]

    def timed(loop: SearchLoop, record: dict[str, Any]) -> None:
        start = time.perf_counter()
        save(loop, record)
        now = time.perf_counter()
        walls.append(now - last[0])
        hooks.append(now - start)
        last[0] = now

    try:
        loop.run(sink, after_epoch=timed)
    finally:
        sink.close()
    return {"epochs_s": walls, "hook_s": hooks}


def _time_ray(cfg: ExperimentConfig, out: Path, threads: int) -> dict[str, Any]:
    """Per-epoch wall times inside a 1-worker TorchTrainer, plus connect and start-up times."""
    t0 = time.perf_counter()
    started = connect()
    connect_s = time.perf_counter() - t0
    try:
        options = LaunchOptions(
            workers=1,
            cpus_per_worker=min(threads, ray.cluster_resources().get("CPU", 1)),
            gpus_per_worker=1 if cfg.device.startswith("cuda") else 0,
            max_failures=0,
        )
        fit_start = time.time()
        returned = _fit(cfg, RunPaths(out).make(), options, extra={"threads": threads})
        fit_s = time.time() - fit_start
    finally:
        if started:
            ray.shutdown()
    return {
        "epochs_s": returned.return_value["epoch_wall_s"],
        "hook_s": returned.return_value["hook_s"],
        "connect_s": connect_s,
        "startup_s": returned.return_value["started_at"] - fit_start,
        "fit_s": fit_s,
    }


def bench_overhead(
    cfg: ExperimentConfig, *, epochs: int = 4, device: str = "cpu", threads: int = 0
) -> dict[str, Any]:
    """Time the same epochs in-process and through a 1-worker TorchTrainer.

    Both runs use the same data, device and ``threads`` torch threads (0: this process's
    count). ``ratio`` compares the median steady-state epoch (all but the first, report and
    checkpoint included), which on a shared machine carries its noise; ``hook_ratio`` adds
    only the measured extra report + checkpoint time to the in-process epoch. Start-up (Ray
    connect, worker start, model build) is reported separately.
    """
    if epochs < 2:
        raise SnasRayError("bench --ray-overhead needs at least 2 epochs (the first is warm-up)")
    cfg = cfg.replace(**{"search.epochs": epochs, "device": device})
    threads = threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="snas-ray-bench-") as tmp:
        torch.set_num_threads(threads)
        try:
            local = _time_in_process(cfg, torch.device(device), Path(tmp) / "in-process")
        finally:
            torch.set_num_threads(previous)
        remote = _time_ray(cfg, Path(tmp) / "ray", threads)
    steady_local = statistics.median(local["epochs_s"][1:])
    steady_ray = statistics.median(remote["epochs_s"][1:])
    # Report + checkpoint is the only per-epoch work Ray adds; its share is a noise-free view.
    extra_s = statistics.median(remote["hook_s"][1:]) - statistics.median(local["hook_s"][1:])
    return {
        "epochs": epochs,
        "threads": threads,
        "device": device,
        "ratio": steady_ray / steady_local,
        "hook_ratio": (steady_local + extra_s) / steady_local,
        "in_process_epoch_s": steady_local,
        "ray_epoch_s": steady_ray,
        "ray_extra_hook_s": extra_s,
        "in_process_epochs_s": local["epochs_s"],
        "ray_epochs_s": remote["epochs_s"],
        "ray_connect_s": remote["connect_s"],
        "ray_startup_s": remote["startup_s"],
        "ray_fit_s": remote["fit_s"],
    }
