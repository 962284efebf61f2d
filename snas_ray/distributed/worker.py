"""One Ray Train worker, for a search or a retraining: the engine's loop with a report hook.

Each worker builds the job's loop with DDP, sharded loaders and all-reduced metrics, resumes
from the newest of Ray's checkpoint and the run folder's ``last.pt``, and trains. Rank 0 writes
the run folder exactly as an in-process run does; every rank reports once per epoch and rank 0
attaches the checkpoint, which holds every rank's random streams. Spec §9, §15; ray-notes §9.
"""

from __future__ import annotations

import logging
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from snas_ray.config import ExperimentConfig
from snas_ray.data import build_datasets, make_loader
from snas_ray.distributed.failures import run_reporting_root_cause
from snas_ray.engine.checkpoint import load_checkpoint, load_latest_checkpoint, save_checkpoint
from snas_ray.engine.hooks import CheckpointHook
from snas_ray.engine.loop import EpochLoop, EpochRecord, HookBase, identity
from snas_ray.engine.runfolder import folder_hooks, run_hooks, write_config
from snas_ray.engine.state import rank_rng_state, set_rank_rng_state
from snas_ray.layout import RunPaths
from snas_ray.retrain import build_retrain
from snas_ray.search import build_search

__all__ = ["JOBS", "STATE_FILE", "ReportHook", "train_fn_per_worker", "worker_logging"]

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"  # the one file in each Ray checkpoint folder (save_checkpoint format)
JOBS = {"search": build_search, "retrain": build_retrain}  # job name -> loop builder


def _worker_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    device = ray.train.torch.get_device()  # this worker's GPU
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _prepare_model(net: nn.Module) -> nn.Module:
    # DDP's per-step search for unused parameters costs time; only a supernet with one cell
    # type absent needs it. Logits used through z (an argument of forward) and the penalty are
    # still averaged: their gradients accumulate once per backward like any other parameter's.
    unused = bool(getattr(net, "has_unused_parameters", False))
    return ray.train.torch.prepare_model(
        net, move_to_device=False, parallel_strategy_kwargs={"find_unused_parameters": unused}
    )


def _shard_loader(loader: DataLoader, *, rank: int, world: int, seed: int) -> DataLoader:
    """Training: a seeded DistributedSampler (equal step counts, ``set_epoch`` per epoch).
    Evaluation: every ``world``-th image, unpadded, so the summed counts see each image once."""
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
        pin_memory=loader.pin_memory,
        persistent=loader.persistent_workers,
    )


def _mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def _gather_rng(device: torch.device, world: int) -> list[dict[str, torch.Tensor]]:
    # Each rank draws its own noise (Gumbel samples, augmentation, drop-path); an exact resume
    # needs every rank's generators.
    own = rank_rng_state(device)
    if world == 1:
        return [own]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, own)
    return states


def restore(loop: EpochLoop, paths: RunPaths, rank: int, world: int) -> None:
    """Load the newest of Ray's latest checkpoint and the run folder's ``last.pt`` (``previous.pt``
    when ``last.pt`` is unreadable), then this rank's random streams (reseeded from the epoch
    when saved by another world size)."""
    state, source = None, ""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_checkpoint(Path(folder) / STATE_FILE)
        source = checkpoint.path
    found = load_latest_checkpoint(paths.last_checkpoint)  # previous.pt if last.pt is corrupt
    local, local_path = found if found is not None else (None, None)
    if world > 1:
        # last.pt counts only when every rank sees the same one (a shared run folder).
        epoch = torch.tensor(local["epoch"] if local else -1, device=loop.device)
        both = torch.stack([epoch, -epoch])
        dist.all_reduce(both, op=dist.ReduceOp.MIN)
        if int(both[0]) != -int(both[1]):
            local = None
    if local is not None and (state is None or local["epoch"] > state["epoch"]):
        state, source = local, str(local_path)
    if state is None:
        return
    loop.load_state_dict(state)
    ranks = state.get("rng_ranks") or []
    if len(ranks) == world:
        set_rank_rng_state(ranks[rank], loop.device)
    elif rank > 0:  # saved by another world size: only rank 0's stream is known
        torch.manual_seed(loop.seed + rank + 1_000_003 * loop.epoch)
    if rank == 0:
        logger.info("resuming after epoch %d from %s", loop.epoch, source)


class ReportHook(HookBase):
    """Every rank calls ``ray.train.report`` once per epoch (Ray requires it); when a checkpoint
    is due, rank 0 keeps ``last.pt`` current and attaches the same state, which holds every
    rank's random streams, as the Ray checkpoint."""

    def __init__(self, checkpoint: CheckpointHook, rank: int, world: int) -> None:
        self.checkpoint, self.rank, self.world = checkpoint, rank, world
        self.wall_s: list[float] = []  # per epoch, report included (bench --ray-overhead)
        self.hook_s: list[float] = []  # per epoch, this hook alone
        self._last = time.perf_counter()

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        start = time.perf_counter()
        metrics: dict[str, Any] = dict(record.metrics)
        metrics.update(loop.progress(record), step=loop.global_step)
        name = f"epoch={loop.epoch:04d}"  # 1-based: the epochs done, as metrics.jsonl numbers it
        if not self.checkpoint.due(loop):
            ray.train.report(metrics)
        else:
            rng = _gather_rng(loop.device, self.world)  # a collective: every rank takes part
            if self.rank != 0:
                ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            else:
                state = loop.state_dict() | {"rng_ranks": rng}
                self.checkpoint.save(state)
                with tempfile.TemporaryDirectory(prefix="snas-ray-") as folder:
                    save_checkpoint(Path(folder) / STATE_FILE, state)
                    checkpoint = ray.train.Checkpoint.from_directory(folder)
                    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        now = time.perf_counter()
        self.wall_s.append(now - self._last)
        self.hook_s.append(now - start)
        self._last = now


def worker_logging(rank: int, level: int) -> None:
    """Rank 0 prints the CLI's console lines (Ray forwards worker stderr); the others only warn."""
    package = logging.getLogger("snas_ray")
    package.setLevel(level if rank == 0 else max(level, logging.WARNING))
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        package.addHandler(handler)
    if level > logging.DEBUG:
        # Train logs every report's whole metric dict at INFO, per rank; our epoch line is
        # the readable form. Its logger is named after the module file (a private module, so
        # guarded: without it the logs are only noisier).
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


def _outputs(paths: RunPaths) -> dict[str, str]:
    # What rank 0 wrote, for a driver whose run folder is not shared with rank 0's node.
    return {p.name: p.read_text() for p in (paths.result, paths.genotype) if p.is_file()}


def train_fn_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker of a search or a retraining.

    Args:
        config: ``train_loop_config``: ``job`` (``search`` or ``retrain``), ``experiment``
            (``ExperimentConfig.to_dict()``, validated again here), ``run_dir``, ``device``
            (``cpu``, or ``cuda`` for this worker's GPU), and optionally ``log_level`` and
            ``threads``.

    Returns:
        ``result``: the ``result.json`` dict and ``files``: the run-folder files rank 0 wrote
        (rank 0; None elsewhere); ``placement``: each rank's host IP and node rank;
        ``started_at``, ``epoch_wall_s`` and ``hook_s`` (report and checkpoint), which
        ``bench --ray-overhead`` reads.
    """
    cfg = ExperimentConfig.from_dict(config["experiment"])
    build = JOBS[config.get("job", "search")]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    worker_logging(rank, int(config.get("log_level", logging.INFO)))
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
    loop = build(
        cfg,
        device,
        prepare_model=_prepare_model,
        prepare_loader=partial(_shard_loader, rank=rank, world=world, seed=cfg.seed),
        rank=rank,
        world_size=world,
        reduce_mean=_mean_over_ranks if world > 1 else identity,
    )
    restore(loop, paths, rank, world)
    if rank == 0:
        write_config(loop.config, paths)
    hooks = folder_hooks(loop, paths, write=rank == 0, tensorboard=cfg.output.tensorboard)
    reporter = ReportHook(
        CheckpointHook(paths.last_checkpoint, cfg.output.checkpoint_every), rank, world
    )
    started_at = time.time()
    result = run_reporting_root_cause(lambda: run_hooks(loop, [*hooks, reporter]))
    summary = loop.write_outputs(paths, result) if rank == 0 else None
    return {
        "result": summary,
        "files": _outputs(paths) if rank == 0 else None,
        "started_at": started_at,
        "placement": placement,
        "epoch_wall_s": reporter.wall_s,
        "hook_s": reporter.hook_s,
    }
