"""Retraining on Ray Train: the pure-PyTorch :class:`~snas_ray.retrain.RetrainLoop` on N workers.

Launched exactly as the search is (``distributed/train.py``): a TorchTrainer with one worker per GPU
(gloo on CPU), DDP, sharded loaders, all-reduced metrics; rank 0 writes the same run folder as
``snas-ray train`` in-process, and every rank reports once per epoch while rank 0 attaches the
checkpoint. The same command resumes from the newest checkpoint (bit-exact for rank 0's random
stream; other ranks reseed from the epoch).
"""

from __future__ import annotations

import logging
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import yaml
from torch import nn

from snas_ray.config import ExperimentConfig
from snas_ray.distributed.train import (
    STATE_FILE,
    LaunchOptions,
    _fit,
    _mean_over_ranks,
    _shard_loader,
    _worker_device,
    _worker_logging,
    connect,
    run_reporting_root_cause,
)
from snas_ray.engine.checkpoint import save_checkpoint
from snas_ray.errors import DistributedRunError
from snas_ray.layout import RunPaths, atomic_write_json, atomic_write_text
from snas_ray.retrain import RetrainLoop, build_retrain, load_retrain_checkpoint
from snas_ray.retrain_run import checkpoint_hook, make_sinks, write_result

__all__ = ["retrain_fn_per_worker", "run_distributed_retrain"]

logger = logging.getLogger(__name__)


def _prepare_model(net: nn.Module) -> nn.Module:
    # 'none' edges still feed zeros into the graph (network._zeros), so every parameter gets a
    # gradient and DDP needs no search for unused ones.
    return ray.train.torch.prepare_model(net, move_to_device=False)


def _restore(loop: RetrainLoop, paths: RunPaths, rank: int) -> None:
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_retrain_checkpoint(Path(folder) / STATE_FILE, loop.device)
    if paths.last_checkpoint.is_file():
        local = load_retrain_checkpoint(paths.last_checkpoint, loop.device)
        if state is None or local["epoch"] > state["epoch"]:
            state = local
    if state is None:
        return
    loop.load_state_dict(state)
    if rank > 0:  # the checkpoint holds rank 0's random stream only
        torch.manual_seed(loop.cfg.seed + rank + 1_000_003 * loop.epoch)
    else:
        logger.info("resuming after epoch %d", loop.epoch)


def _reporter(paths: RunPaths, rank: int):
    save_local = checkpoint_hook(paths)

    def report(loop: RetrainLoop, record: dict[str, Any]) -> None:
        metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        metrics.update(epoch=loop.epoch - 1, step=loop.global_step)
        name = f"epoch={loop.epoch - 1:04d}"
        if rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        save_local(loop, record)
        with tempfile.TemporaryDirectory(prefix="snas-ray-") as folder:
            save_checkpoint(Path(folder) / STATE_FILE, loop.state_dict())
            checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)

    return report


def retrain_fn_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker of a retraining; rank 0 returns the ``result.json`` dict."""
    cfg = ExperimentConfig.from_dict(config["experiment"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    _worker_logging(rank, int(config.get("log_level", logging.INFO)))
    device = _worker_device(config.get("device", "cpu"))
    paths = RunPaths(Path(config["run_dir"]))
    if rank == 0:
        paths.make()
    loop = build_retrain(
        cfg,
        device,
        prepare_model=_prepare_model,
        prepare_loader=partial(_shard_loader, rank=rank, world=world, seed=cfg.seed),
        rank=rank,
        world_size=world,
        reduce_mean=_mean_over_ranks if world > 1 else (lambda t: t),
    )
    _restore(loop, paths, rank)
    if rank == 0:
        atomic_write_text(paths.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    sink = make_sinks(loop, paths, write=rank == 0)
    try:
        result = run_reporting_root_cause(
            lambda: loop.run(sink, after_epoch=_reporter(paths, rank))
        )
    finally:
        sink.close()
    return {"result": write_result(loop, paths, result) if rank == 0 else None}


def run_distributed_retrain(
    cfg: ExperimentConfig, out: Path | str, options: LaunchOptions | None = None
) -> dict[str, Any]:
    """Retrain (or resume) on Ray into ``out``; returns the ``result.json`` dict."""
    options = options or LaunchOptions()
    paths = RunPaths(Path(out).resolve()).make()
    started = connect(options.address)
    try:
        result = _fit(cfg, paths, options, train_fn=retrain_fn_per_worker)
    finally:
        if started:
            ray.shutdown()
    summary = (result.return_value or {}).get("result")
    if summary is None:
        raise DistributedRunError(f"the Ray retraining into {paths.root} returned no result")
    if not paths.result.is_file():  # rank 0 ran on another node without a shared run folder
        atomic_write_json(paths.result, summary)
    return summary
