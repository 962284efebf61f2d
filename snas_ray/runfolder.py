"""Run a search into a run folder: config.yaml, metrics, TensorBoard, checkpoints, results.

This is the in-process driver behind ``snas-ray search``; the Ray Train layer reuses
:func:`make_sinks` and :func:`write_outputs` so both produce the same folder layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from snas_ray.config import ExperimentConfig
from snas_ray.engine.checkpoint import save_checkpoint
from snas_ray.engine.sinks import JsonlSink, LoggingSink, MultiSink, TensorBoardSink
from snas_ray.genotype import save_genotype
from snas_ray.layout import RunPaths, atomic_write_json, atomic_write_text
from snas_ray.search import SearchLoop, SearchResult, build_search, resume_if_possible
from snas_ray.space.network import genotype_cost

__all__ = ["resolve_device", "make_sinks", "write_outputs", "checkpoint_hook", "run_search"]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU; anything else is taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from snas_ray.errors import ConfigError

        raise ConfigError("device", f"{name} requested but CUDA is not available (use cpu or auto)")
    return device


def make_sinks(loop: SearchLoop, paths: RunPaths, *, write: bool = True) -> MultiSink:
    """Console lines always; JSONL and TensorBoard only where ``write`` (rank 0)."""
    cfg = loop.cfg
    sinks: list[Any] = [LoggingSink(cfg.search.log_every, cfg.search.epochs, loop.steps_per_epoch)]
    if write:
        sinks.append(JsonlSink(paths.metrics, resume_epoch=loop.epoch))
        if cfg.output.tensorboard:
            sinks.append(TensorBoardSink(paths.tensorboard, purge_step=loop.global_step or None))
    return MultiSink(sinks)


def checkpoint_hook(paths: RunPaths):
    """An ``after_epoch`` hook that atomically saves ``checkpoints/last.pt``."""

    def save(loop: SearchLoop, record: dict[str, Any]) -> None:
        every = loop.cfg.output.checkpoint_every
        if loop.epoch % every == 0 or loop.epoch == loop.cfg.search.epochs:
            save_checkpoint(paths.last_checkpoint, loop.state_dict())

    return save


def write_outputs(loop: SearchLoop, paths: RunPaths, result: SearchResult) -> dict[str, Any]:
    """Write ``genotype.json`` and ``result.json`` (the child's cost as an evaluation network)."""
    cfg = loop.cfg
    net = loop.net
    save_genotype(result.genotype, paths.genotype)
    cost = genotype_cost(
        result.genotype,
        init_channels=cfg.space.init_channels,
        layers=cfg.space.layers,
        num_classes=net.num_classes,
        image_size=net.image_size,
        in_channels=net.in_channels,
    )
    metrics = {k: v for k, v in result.last_metrics.items() if not k.startswith("_")}
    summary = {
        "val_acc": result.val_acc,
        "val_acc_relaxed": result.val_acc_relaxed,
        "params": cost.params,
        "flops": cost.flops,
        "mac": cost.mac,
        "epochs_done": result.epochs_done,
        "epochs": cfg.search.epochs,
        "resource_lambda": cfg.cost.resource_lambda,
        "estimator": cfg.cost.estimator,
        "seed": cfg.seed,
        "dataset": cfg.data.name,
        "layers": cfg.space.layers,
        "init_channels": cfg.space.init_channels,
        "derivation": cfg.search.derivation,
        "genotype": result.genotype.to_dict(),
        "final_metrics": {k: v for k, v in metrics.items() if k != "genotype"},
    }
    atomic_write_json(paths.result, summary)
    return summary


def write_config(cfg: ExperimentConfig, paths: RunPaths) -> None:
    """The resolved config, as YAML that ``--config`` reads back."""
    atomic_write_text(paths.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def run_search(
    cfg: ExperimentConfig,
    out: Path | str,
    *,
    resume: bool = True,
    on_epoch: Callable[[SearchLoop, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a search in-process into ``out``; returns the ``result.json`` dict.

    ``on_epoch`` runs after each epoch's checkpoint is saved (a sweep trial reports there).
    """
    paths = RunPaths(Path(out)).make()
    device = resolve_device(cfg.device)
    loop = build_search(cfg, device)
    if resume:
        resume_if_possible(loop, paths)
    write_config(cfg, paths)
    logger.info(
        "search: %s on %s, %d cells C=%d, %d epochs x %d steps, lambda=%g (%s), out %s",
        cfg.data.name,
        device,
        cfg.space.layers,
        cfg.space.init_channels,
        cfg.search.epochs,
        loop.steps_per_epoch,
        cfg.cost.resource_lambda,
        cfg.cost.estimator,
        paths.root,
    )
    save = checkpoint_hook(paths)

    def after_epoch(loop: SearchLoop, record: dict[str, Any]) -> None:
        save(loop, record)  # first: a trial killed during its report keeps this epoch
        if on_epoch is not None:
            on_epoch(loop, record)

    sink = make_sinks(loop, paths)
    try:
        result = loop.run(sink, after_epoch=after_epoch)
    finally:
        sink.close()
    return write_outputs(loop, paths, result)
