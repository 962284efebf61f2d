"""Building a search from its config and running it into a run folder.

``build_search(cfg, device)`` returns a :class:`~snas_ray.search.loop.SearchLoop`;
:func:`run_search` runs it in-process (resume, sinks, checkpoints, ``genotype.json``,
``result.json``). The Ray layer calls ``build_search`` with ``prepare_model`` /
``prepare_loader``, a rank and ``reduce_mean``; nothing here imports Ray.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snas_ray.config import ExperimentConfig
from snas_ray.data import build_datasets, make_loader
from snas_ray.engine.loop import HookBase, identity
from snas_ray.engine.runfolder import available_memory, resolve_device, run_in_folder
from snas_ray.errors import DataError
from snas_ray.layout import RunPaths
from snas_ray.search.loop import SearchLoop
from snas_ray.search.memory import check_search_fits
from snas_ray.space.supernet import Supernet

__all__ = ["build_search", "run_search"]

logger = logging.getLogger(__name__)

# Adam moves a logit by at most about lr per step, so lr x steps bounds how far the
# distribution can travel. The reference's recipe: 3e-4 x 150 epochs x 782 steps ~ 35.
ARCH_TRAVEL = 35.0
ARCH_TRAVEL_MIN = 5.0  # below this a run warns: its result would be an argmax over noise


def build_search(
    cfg: ExperimentConfig,
    device: torch.device | str,
    *,
    prepare_model: Callable[[nn.Module], nn.Module] = identity,
    prepare_loader: Callable[[Any], Any] = identity,
    rank: int = 0,
    world_size: int = 1,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = identity,
) -> SearchLoop:
    """Datasets, supernet, loaders and optimizers for ``cfg``, ready to ``train``.

    The model is initialised from ``cfg.seed`` on every rank (identical start); sampling and
    augmentation then use ``seed + rank`` so each rank draws its own architecture sample.
    """
    device = torch.device(device)
    check_search_fits(cfg, available_memory(device), world_size=world_size)
    splits = build_datasets(cfg.data)
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise DataError("data: the train or validation split is empty (check data.limit)")
    torch.manual_seed(cfg.seed)
    net = Supernet(
        cfg.space,
        num_classes=splits.num_classes,
        image_size=splits.image_size,
        in_channels=splits.in_channels,
    ).to(device)
    if cfg.search.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = prepare_model(net)
    loader = functools.partial(
        make_loader,
        seed=cfg.seed,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
    )
    batch = max(1, cfg.search.batch_size // world_size)
    train_loader = prepare_loader(loader(splits.train, batch, shuffle=True))
    val_loader = prepare_loader(
        loader(splits.val, cfg.search.eval_batch_size, shuffle=False, persistent=True)
    )
    torch.manual_seed(cfg.seed + rank)
    loop = SearchLoop(cfg, model, train_loader, val_loader, device, reduce_mean=reduce_mean)
    travel = cfg.optim.arch_lr * cfg.search.epochs * loop.steps_per_epoch
    if rank == 0 and cfg.optim.arch_optimizer != "sgd" and travel < ARCH_TRAVEL_MIN:
        logger.warning(
            "optim.arch_lr x steps = %.3g: the logits can move at most that far, too little for "
            "the architecture to converge (the reference moves ~35: 3e-4 x 117K steps; "
            "raise optim.arch_lr to about %.2g for this run's %d steps)",
            travel,
            ARCH_TRAVEL / (cfg.search.epochs * loop.steps_per_epoch),
            cfg.search.epochs * loop.steps_per_epoch,
        )
    return loop


def run_search(
    cfg: ExperimentConfig,
    out: Path | str,
    *,
    resume: bool = True,
    hooks: Sequence[HookBase] = (),
) -> dict[str, Any]:
    """Run (or resume) a search in-process into ``out``; returns the ``result.json`` dict.

    ``hooks`` run after each epoch's checkpoint is saved (a sweep trial reports there).
    """
    paths = RunPaths(Path(out)).make()
    device = resolve_device(cfg.device)
    loop = build_search(cfg, device)
    budget = f", budget {cfg.cost.budget:g} {cfg.cost.budget_metric}" if cfg.cost.budget > 0 else ""
    logger.info(
        "search: %s on %s, %d cells C=%d, %d epochs x %d steps, lambda=%g (%s)%s, out %s",
        cfg.data.name,
        device,
        cfg.space.layers,
        cfg.space.init_channels,
        cfg.search.epochs,
        loop.steps_per_epoch,
        cfg.cost.resource_lambda,
        cfg.cost.estimator,
        budget,
        paths.root,
    )
    result = run_in_folder(
        loop,
        paths,
        resume=resume,
        tensorboard=cfg.output.tensorboard,
        checkpoint_every=cfg.output.checkpoint_every,
        hooks=hooks,
    )
    return loop.write_outputs(paths, result)
