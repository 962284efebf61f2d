"""Retrain a genotype from scratch (spec §11) on the shared engine: the evaluation network's loop.

``build_retrain(cfg, device)`` returns a :class:`RetrainLoop`, built like ``build_search``;
:func:`run_retrain` runs it into a run folder and :func:`evaluate_checkpoint` tests a saved one.
Nothing here imports Ray.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from snas_ray.config import ExperimentConfig, TrainConfig, apply_overrides
from snas_ray.data import DataSplits, build_datasets, make_loader
from snas_ray.engine.checkpoint import load_checkpoint
from snas_ray.engine.loop import EpochLoop, EpochRecord, HookBase, identity
from snas_ray.engine.precision import StepPrecision, compile_module, set_cudnn_benchmark
from snas_ray.engine.runfolder import resolve_device, run_in_folder
from snas_ray.errors import CheckpointError, ConfigError, DataError
from snas_ray.genotype import Genotype
from snas_ray.layout import RunPaths, atomic_write_json
from snas_ray.published import load_genotype
from snas_ray.space.measure import genotype_cost
from snas_ray.space.network import NetworkCIFAR, NetworkImageNet

__all__ = [
    "RetrainLoop",
    "RetrainResult",
    "build_network",
    "build_retrain",
    "evaluate_checkpoint",
    "load_retrain_checkpoint",
    "run_retrain",
]

logger = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    """What a finished retraining produced; accuracies are fractions of the test split."""

    epochs_done: int
    test_acc1: float
    test_acc5: float
    best: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)


def build_network(t: TrainConfig, genotype: Genotype, splits: DataSplits) -> nn.Module:
    """The evaluation network of ``genotype`` for the ``train`` section and the data's shape."""
    shape = {"init_channels": t.init_channels, "layers": t.layers, "auxiliary": t.auxiliary}
    if t.network == "imagenet":
        if splits.in_channels != 3:
            raise ConfigError("train.network", "imagenet networks take 3-channel images")
        return NetworkImageNet(genotype, num_classes=splits.num_classes, **shape)
    return NetworkCIFAR(
        genotype,
        num_classes=splits.num_classes,
        in_channels=splits.in_channels,
        image_size=splits.image_size,
        **shape,
    )


class RetrainLoop(EpochLoop):
    """SGD on one evaluation network; test top-1/top-5 after every epoch."""

    kind: ClassVar[str] = "retrain"
    metric_terms: ClassVar[dict[str, str]] = {"train/loss": "task loss"}

    def __init__(
        self,
        cfg: ExperimentConfig,
        model: nn.Module,
        genotype: Genotype,
        train_loader: Any,
        test_loader: Any,
        device: torch.device,
        *,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        reduce_mean: Callable[[torch.Tensor], torch.Tensor] = identity,
    ) -> None:
        t = cfg.train
        super().__init__(
            model=model,
            train_loader=train_loader,
            device=device,
            config=cfg.to_dict(),
            epochs=t.epochs,
            steps_per_epoch=t.steps_per_epoch,
            log_every=t.log_every,
            seed=cfg.seed,
            channels_last=t.channels_last,
            reduce_mean=reduce_mean,
        )
        self.cfg, self.genotype, self.test_loader = cfg, genotype, test_loader
        self.input_shape = input_shape  # one image (channels, side, side), for result.json's cost
        self.optimizer = torch.optim.SGD(
            self.net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )
        self.best: dict[str, float] = {}
        # Drop-path draws inside the network; a compiled graph draws from eager's generator.
        self.precision = StepPrecision(t.precision, device, field="train.precision")
        set_cudnn_benchmark(t.cudnn_benchmark)
        self.forward_model = compile_module(self.model, t.compile)

    # ----------------------------------------------------------------- schedules
    def lr(self, epoch: int) -> float:
        """The lr of 0-based ``epoch``. The reference steps its scheduler before each epoch, so it
        skips the peak and spends its last epoch at 0; here epoch e uses the value at e."""
        t = self.cfg.train
        if t.lr_schedule == "step":
            return t.lr * t.lr_gamma**epoch
        return t.lr_min + (t.lr - t.lr_min) * (1 + math.cos(math.pi * epoch / t.epochs)) / 2

    def drop_path_prob(self, epoch: int) -> float:
        """Linear ramp p_e = drop_path_prob * e / epochs, set at the start of epoch e (§11.1)."""
        return self.cfg.train.drop_path_prob * epoch / self.cfg.train.epochs

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        lr, p = self.lr(epoch), self.drop_path_prob(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.drop_path_prob = p
        return {"lr/weights": lr, "train/drop_path_prob": p}

    # ----------------------------------------------------------------- the algorithm
    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One SGD step: (label-smoothed) CE + auxiliary_weight * aux CE, clip, update."""
        t = self.cfg.train
        self.model.train()
        with self.precision.autocast():
            logits, logits_aux = self.forward_model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=t.label_smoothing)
        if logits_aux is not None:
            aux = F.cross_entropy(logits_aux.float(), y, label_smoothing=t.label_smoothing)
            loss = loss + t.auxiliary_weight * aux
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        self.precision.unscale(self.optimizer)
        nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip)
        self.precision.step(self.optimizer)
        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean()
        return {"train/loss": loss.detach(), "train/acc1": acc}

    @torch.no_grad()
    def evaluate(self, loader: Any | None = None) -> tuple[float, float, float]:
        """Mean cross-entropy, top-1 and top-5 accuracy on ``loader`` (default: the test split)."""
        self.net.eval()
        totals = torch.zeros(4, device=self.device)  # loss sum, top-1, top-5, count
        for x, y in self.test_loader if loader is None else loader:
            x, y = self.to_device(x, y)
            with self.precision.autocast():
                logits = self.net(x)[0].float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == y[:, None]
            totals += torch.stack(
                [
                    F.cross_entropy(logits, y, reduction="sum"),
                    hits[:, 0].sum().float(),
                    hits.any(1).sum().float(),
                    torch.full((), y.numel(), dtype=torch.float32, device=y.device),
                ]
            )
        totals = self.reduce_mean(totals)
        n = max(float(totals[3]), 1.0)
        return float(totals[0]) / n, float(totals[1]) / n, float(totals[2]) / n

    def evaluate_epoch(self, epoch: int) -> dict[str, float]:
        test_loss, acc1, acc5 = self.evaluate()
        if acc1 > self.best.get("test_acc1", -1.0):
            # best_epoch: 1-based, as the log and metrics.jsonl number epochs
            self.best = {"test_acc1": acc1, "test_acc5": acc5, "best_epoch": float(epoch + 1)}
        return {
            "test/loss": test_loss,
            "test/acc1": acc1,
            "test/acc5": acc5,
            "best/test_acc1": self.best["test_acc1"],
        }

    def step_line(self, metrics: dict[str, float]) -> str:
        return f"loss {metrics['train/loss']:.4f} acc {metrics['train/acc1']:.3f}"

    def epoch_line(self, record: EpochRecord) -> str:
        m = record.metrics
        return (
            f"train loss {m['train/loss']:.4f} acc {m['train/acc1']:.3f} | "
            f"test acc {m['test/acc1']:.4f} top-5 {m['test/acc5']:.4f} "
            f"(best {m['best/test_acc1']:.4f}) | "
            f"lr {m['lr/weights']:.4g} drop-path {m['train/drop_path_prob']:.3f} | "
            f"{m['time/epoch_s']:.1f}s"
        )

    def progress(self, record: EpochRecord) -> dict[str, Any]:
        """The flat numbers a Ray or Tune report carries for this epoch."""
        return {"epoch": record.epoch + 1, "test_acc": record.metrics["test/acc1"]}  # 1-based

    # ----------------------------------------------------------------- state and result
    def job_state(self) -> dict[str, Any]:
        return {
            "genotype": self.genotype.to_dict(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best": dict(self.best),
            **self.precision.state_dict(),
        }

    def load_job_state(self, state: dict[str, Any]) -> None:
        if state.get("genotype") != self.genotype.to_dict():
            raise CheckpointError("checkpoint was made with another genotype (use a new --out)")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state)
        self.best = dict(state.get("best", {}))
        if "epoch" in self.best:  # saved before epochs were numbered from 1
            self.best["best_epoch"] = self.best.pop("epoch") + 1

    def result(self) -> RetrainResult:
        m = self.last_metrics
        return RetrainResult(
            self.epoch, m.get("test/acc1", math.nan), m.get("test/acc5", math.nan), self.best, m
        )

    def write_outputs(self, paths: RunPaths, result: RetrainResult) -> dict[str, Any]:
        """``result.json``: final and best test accuracy, cost, genotype. ``test_acc`` (final
        top-1) is what ``collect`` folds into its leaderboard from ``<run>/retrain/``."""
        cfg = self.cfg
        channels, side, _ = self.input_shape
        cost = genotype_cost(
            self.genotype,
            init_channels=cfg.train.init_channels,
            layers=cfg.train.layers,
            num_classes=self.net.classifier.out_features,
            image_size=side,
            in_channels=channels,
            imagenet=cfg.train.network == "imagenet",
        )
        summary = {
            "test_acc": result.test_acc1,
            "test_acc5": result.test_acc5,
            "best_test_acc": result.best.get("test_acc1", math.nan),
            "best_test_acc5": result.best.get("test_acc5", math.nan),
            "best_epoch": int(result.best.get("best_epoch", 0)),  # 1-based; 0: none
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
            "genotype": self.genotype.to_dict(),
            "final_metrics": dict(result.last_metrics),
        }
        atomic_write_json(paths.result, summary)
        return summary


def build_retrain(
    cfg: ExperimentConfig,
    device: torch.device | str,
    *,
    genotype: Genotype | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] = identity,
    prepare_loader: Callable[[Any], Any] = identity,
    rank: int = 0,
    world_size: int = 1,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = identity,
) -> RetrainLoop:
    """Datasets, network (``cfg.train.genotype`` unless ``genotype`` is given), loaders, SGD.

    The network is initialised from ``cfg.seed`` on every rank; augmentation and drop-path then
    draw from ``seed + rank``. Training uses the train split, evaluation the test split.
    """
    device = torch.device(device)
    genotype = genotype if genotype is not None else load_genotype(cfg.train.genotype)
    splits = build_datasets(cfg.data)
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise DataError("data: the train or test split is empty (check data.limit)")
    torch.manual_seed(cfg.seed)
    net = build_network(cfg.train, genotype, splits).to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    t = cfg.train
    loader = functools.partial(
        make_loader,
        seed=cfg.seed,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
    )
    train_loader = prepare_loader(
        loader(splits.train, max(1, t.batch_size // world_size), shuffle=True)
    )
    test_loader = prepare_loader(
        loader(splits.test, t.eval_batch_size, shuffle=False, persistent=True)
    )
    model = prepare_model(net)
    torch.manual_seed(cfg.seed + rank)
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    loaders = (train_loader, test_loader)
    return RetrainLoop(
        cfg, model, genotype, *loaders, device, input_shape=shape, reduce_mean=reduce_mean
    )


def load_retrain_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load ``path`` onto the CPU, refusing search checkpoints."""
    state = load_checkpoint(path)
    if state.get("kind") != RetrainLoop.kind:
        raise CheckpointError(f"checkpoint {path} is a search checkpoint, not a retraining one")
    if not isinstance(state.get("genotype"), dict):
        raise CheckpointError(f"checkpoint {path} is incomplete ('genotype' is missing)")
    return state


def run_retrain(
    cfg: ExperimentConfig,
    out: Path | str,
    *,
    resume: bool = True,
    hooks: Sequence[HookBase] = (),
) -> dict[str, Any]:
    """Retrain (or resume) in-process into ``out``; returns the ``result.json`` dict."""
    paths = RunPaths(Path(out)).make()
    device = resolve_device(cfg.device)
    loop = build_retrain(cfg, device)
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
    result = run_in_folder(
        loop,
        paths,
        resume=resume,
        tensorboard=cfg.output.tensorboard,
        checkpoint_every=cfg.output.checkpoint_every,
        hooks=hooks,
    )
    return loop.write_outputs(paths, result)


def evaluate_checkpoint(
    path: Path | str, overrides: list[str] | None = None, device: str | None = None
) -> dict[str, Any]:
    """Test-split loss, top-1 and top-5 of the model in a retraining checkpoint.

    ``overrides`` (``key=value``) adjust the saved config, e.g. ``data.root`` on another machine.
    """
    state = load_retrain_checkpoint(path)
    cfg = apply_overrides(state["config"], list(overrides or []))
    dev = resolve_device(device or cfg.device)
    genotype = Genotype.from_dict(state["genotype"])
    splits = build_datasets(cfg.data)
    net = build_network(cfg.train, genotype, splits)
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
        "epoch": int(state["epoch"]),  # epochs done = the 1-based number of the last one
        "epochs": cfg.train.epochs,
        "images": len(splits.test),
        "genotype_source": cfg.train.genotype,
    }
