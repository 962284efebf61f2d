"""Run a retraining into a run folder, and evaluate a saved retraining checkpoint.

The in-process driver behind ``snas-ray train``: ``config.yaml``, ``metrics.jsonl``, ``tb/``,
``checkpoints/last.pt`` (every epoch; the same command resumes) and ``result.json``. The Ray
Train layer (``distributed/retrain.py``) reuses :func:`make_sinks`, :func:`checkpoint_hook` and
:func:`write_result`, so both write the same folder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from snas_ray.config import ExperimentConfig, apply_overrides
from snas_ray.data import build_datasets, make_loader
from snas_ray.engine.checkpoint import save_checkpoint
from snas_ray.engine.sinks import JsonlSink, MultiSink, TensorBoardSink
from snas_ray.errors import CheckpointError, ConfigError
from snas_ray.genotype import Genotype
from snas_ray.layout import RunPaths, atomic_write_json, atomic_write_text
from snas_ray.retrain import (
    RetrainLoop,
    RetrainResult,
    build_network,
    build_retrain,
    load_retrain_checkpoint,
)
from snas_ray.space.network import genotype_cost

__all__ = [
    "ProgressSink",
    "checkpoint_hook",
    "evaluate_checkpoint",
    "make_sinks",
    "resolve_device",
    "run_retrain",
    "write_result",
]

logger = logging.getLogger(__name__)


class ProgressSink:
    """Console lines through ``logging``: every ``every`` steps and after each epoch."""

    def __init__(self, every: int, epochs: int, steps_per_epoch: int) -> None:
        self.every, self.epochs, self.steps = every, epochs, max(steps_per_epoch, 1)

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if (step + 1) % self.every == 0:
            epoch, batch = divmod(step, self.steps)
            logger.info(
                "epoch %d/%d step %d/%d loss %.4f acc %.3f",
                epoch + 1,
                self.epochs,
                batch + 1,
                self.steps,
                metrics["train/loss"],
                metrics["train/acc1"],
            )

    def log_epoch(self, epoch: int, step: int, m: dict[str, Any]) -> None:
        logger.info(
            "epoch %d/%d done: train loss %.4f acc %.3f | test acc %.4f top-5 %.4f (best %.4f) | "
            "lr %.4g drop-path %.3f | %.1fs",
            epoch + 1,
            self.epochs,
            m["train/loss"],
            m["train/acc1"],
            m["test/acc1"],
            m["test/acc5"],
            m["best/test_acc1"],
            m["lr/weights"],
            m["train/drop_path_prob"],
            m["time/epoch_s"],
        )

    def close(self) -> None:
        pass


def make_sinks(loop: RetrainLoop, paths: RunPaths, *, write: bool = True) -> MultiSink:
    """Console always; ``metrics.jsonl`` and TensorBoard only where ``write`` (rank 0)."""
    t = loop.cfg.train
    sinks: list[Any] = [ProgressSink(t.log_every, t.epochs, loop.steps_per_epoch)]
    if write:
        sinks.append(JsonlSink(paths.metrics, resume_epoch=loop.epoch))
        if loop.cfg.output.tensorboard:
            sinks.append(TensorBoardSink(paths.tensorboard, purge_step=loop.global_step or None))
    return MultiSink(sinks)


def checkpoint_hook(paths: RunPaths) -> Callable[[RetrainLoop, dict[str, Any]], None]:
    """An ``after_epoch`` hook that atomically saves ``checkpoints/last.pt``."""

    def save(loop: RetrainLoop, record: dict[str, Any]) -> None:
        every = loop.cfg.output.checkpoint_every
        if loop.epoch % every == 0 or loop.epoch == loop.cfg.train.epochs:
            save_checkpoint(paths.last_checkpoint, loop.state_dict())

    return save


def write_result(loop: RetrainLoop, paths: RunPaths, result: RetrainResult) -> dict[str, Any]:
    """``result.json``: final and best test accuracy, cost, genotype. ``test_acc`` (final top-1)
    is what ``collect`` folds into its leaderboard from ``<run>/retrain/result.json``."""
    cfg, net = loop.cfg, loop.net
    channels, side, _ = loop.input_shape
    cost = genotype_cost(
        loop.genotype,
        init_channels=cfg.train.init_channels,
        layers=cfg.train.layers,
        num_classes=net.classifier.out_features,
        image_size=side,
        in_channels=channels,
        imagenet=cfg.train.network == "imagenet",
    )
    summary = {
        "test_acc": result.test_acc1,
        "test_acc5": result.test_acc5,
        "best_test_acc": result.best.get("test_acc1", math.nan),
        "best_test_acc5": result.best.get("test_acc5", math.nan),
        "best_epoch": int(result.best.get("epoch", -1)),
        "params": cost.params,
        "params_aux": cost.params_aux,
        "flops": cost.flops,
        "mac": cost.mac,
        "epochs_done": result.epochs_done,
        "epochs": cfg.train.epochs,
        "seed": cfg.seed,
        "dataset": cfg.data.name,
        "network": cfg.train.network,
        "layers": cfg.train.layers,
        "init_channels": cfg.train.init_channels,
        "genotype_source": cfg.train.genotype,
        "genotype": loop.genotype.to_dict(),
        "final_metrics": result.last_metrics,
    }
    atomic_write_json(paths.result, summary)
    return summary


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{name} requested but CUDA is not available (use cpu or auto)")
    return torch.device(name)


def run_retrain(cfg: ExperimentConfig, out: Path | str, *, resume: bool = True) -> dict[str, Any]:
    """Retrain (or resume) in-process into ``out``; returns the ``result.json`` dict."""
    paths = RunPaths(Path(out)).make()
    device = resolve_device(cfg.device)
    loop = build_retrain(cfg, device)
    if resume and paths.last_checkpoint.exists():
        loop.load_state_dict(load_retrain_checkpoint(paths.last_checkpoint, device))
        logger.info("resuming %s after epoch %d", paths.root, loop.epoch)
    atomic_write_text(paths.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    t = cfg.train
    logger.info(
        "train: %s on %s, %s C=%d L=%d, %d epochs x %d steps, out %s",
        t.genotype,
        device,
        t.network,
        t.init_channels,
        t.layers,
        t.epochs,
        loop.steps_per_epoch,
        paths.root,
    )
    sink = make_sinks(loop, paths)
    try:
        result = loop.run(sink, after_epoch=checkpoint_hook(paths))
    finally:
        sink.close()
    return write_result(loop, paths, result)


def evaluate_checkpoint(
    path: Path | str, overrides: list[str] | None = None, device: str | None = None
) -> dict[str, Any]:
    """Test-split loss, top-1 and top-5 of the model in a retraining checkpoint.

    ``overrides`` (``key=value``) adjust the saved config, e.g. ``data.root`` on another machine.
    """
    state = load_retrain_checkpoint(path, "cpu")
    cfg = apply_overrides(state["config"], list(overrides or []))
    dev = resolve_device(device or cfg.device)
    genotype = Genotype.from_dict(state["genotype"])
    splits = build_datasets(cfg.data)
    net = build_network(cfg, genotype, splits)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit its network ({exc})") from None
    loader = make_loader(splits.test, cfg.train.eval_batch_size, shuffle=False, seed=cfg.seed)
    loop = RetrainLoop(cfg, net.to(dev), genotype, loader, loader, dev)
    loss, acc1, acc5 = loop.evaluate()
    return {
        "test_loss": loss,
        "test_acc": acc1,
        "test_acc5": acc5,
        "epoch": int(state["epoch"]),
        "images": len(splits.test),
        "genotype_source": cfg.train.genotype,
    }
