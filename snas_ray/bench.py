"""Throughput and memory of the search step, with a ratio against a reference-style step.

Times what one search step does (sample, forward, loss with penalty, backward, both optimizer
steps) on synthetic data, and the same step done the way the SNAS reference does it (every op
evaluated including 'none', NCHW, float32, eager, three backward passes when the penalty is on;
spec §6.4, §14.8), so the printed ratio says what our implementation buys on the machine at hand.

The two are timed alternately, ``repeats`` times, so that a shared machine's slow spells fall
on both; the ratio of each pair is reported as median, min and max. At ``cost.resource_lambda=0``
the reference's diagnostic passes vanish and the ratio measures the implementation alone.
"""

from __future__ import annotations

import logging
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from snas_ray.config import PRECISIONS, ExperimentConfig
from snas_ray.engine.precision import compile_module
from snas_ray.errors import ConfigError
from snas_ray.search import SearchLoop
from snas_ray.space.cost import resource_penalty
from snas_ray.space.supernet import MixedOp, Supernet

__all__ = ["BenchResult", "Spread", "bench_matrix", "bench_search_step", "format_table"]

logger = logging.getLogger(__name__)

# Bounds of the command's sizes: beyond them a typo would hang the machine, not measure it.
_LIMITS = {"batch": 65536, "image_size": 1024, "steps": 10_000, "warmup": 10_000, "repeats": 1000}


@dataclass(frozen=True)
class Spread:
    """Median, min and max of repeated measurements."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


@dataclass(frozen=True)
class BenchResult:
    """Figures of one benchmark configuration; ``to_dict`` is what the CLI prints as JSON."""

    device: str
    precision: str
    compiled: bool
    compile_backend: str | None
    batch_size: int
    image_size: int
    layers: int
    init_channels: int
    resource_lambda: float
    steps: int
    repeats: int
    threads: int
    step_ms: Spread
    first_step_s: float  # includes compilation when compiled
    peak_memory_mb: float
    reference_step_ms: Spread | None
    speedup: Spread | None  # reference step time / our step time, per alternated pair

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.step_ms.median / 1000)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if not isinstance(v, Spread | None)
        }
        out["images_per_s"] = round(self.images_per_s, 2)
        for name in ("step_ms", "reference_step_ms", "speedup"):
            spread = getattr(self, name)
            if spread is not None:
                digits = 3 if name == "speedup" else 1
                out[name] = round(spread.median, digits)
                out[f"{name}_min"] = round(spread.low, digits)
                out[f"{name}_max"] = round(spread.high, digits)
        if self.reference_step_ms is not None:
            out["reference_images_per_s"] = round(
                self.batch_size / (self.reference_step_ms.median / 1000), 2
            )
        return out


def check_sizes(**sizes: int) -> None:
    """Every size at least 1 (warmup at least 0) and within the command's bounds."""
    for name, value in sizes.items():
        low = 0 if name == "warmup" else 1
        if not low <= value <= _LIMITS[name]:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"bench {flag}", f"must be in [{low}, {_LIMITS[name]}], got {value}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference_step(loop: SearchLoop, x: torch.Tensor, y: torch.Tensor, tau: float) -> None:
    """The reference's step: all ops incl. 'none', diagnostic backward passes when constrained."""
    loop.model.train()
    z = loop.sample_z(tau)
    out = loop.model(x, z)
    task = F.cross_entropy(out.logits, y)
    net = loop.net
    terms = resource_penalty(
        list(net.cost_tables), z, net.cell_log_alpha(), net.reduction, tau, loop.cfg.cost
    )
    loss = task + loop.cfg.cost.resource_lambda * terms.penalty
    if loop.cfg.cost.resource_lambda > 0:
        for part in (terms.penalty, task):
            torch.autograd.grad(part, net.arch_parameters(), retain_graph=True, allow_unused=True)
    loop.w_optim.zero_grad(set_to_none=True)
    loop.a_optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.weight_parameters(), loop.cfg.optim.grad_clip)
    torch.nn.utils.clip_grad_norm_(net.arch_parameters(), loop.cfg.optim.arch_grad_clip)
    loop.w_optim.step()
    loop.a_optim.step()


def _loop(cfg: ExperimentConfig, device: torch.device, image_size: int, batch) -> SearchLoop:
    torch.manual_seed(cfg.seed)
    net = Supernet(cfg.space, num_classes=10, image_size=image_size).to(device)
    if cfg.search.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return SearchLoop(cfg, net, [batch], [batch], device)


def _reference_loop(
    cfg: ExperimentConfig, device: torch.device, image_size: int, batch
) -> SearchLoop:
    """The reference's way: NCHW float32 tensors, eager, every op computed ('none' too)."""
    plain = {"search.channels_last": False, "search.precision": "fp32", "search.compile": False}
    ref = _loop(cfg.replace(**plain), device, image_size, batch)
    for m in ref.net.modules():
        if isinstance(m, MixedOp):
            m.compute_all_ops()
    return ref


def _time(step: Callable[[], Any], device: torch.device, steps: int) -> float:
    """Seconds per step over ``steps`` steps."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / max(1, steps)


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset (the reference model's weights and optimizer
    states, which stay allocated, included); CPU: the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident memory (never reset)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_search_step(
    cfg: ExperimentConfig,
    device: torch.device,
    *,
    batch_size: int,
    image_size: int = 32,
    steps: int = 5,
    warmup: int = 2,
    repeats: int = 3,
    compare_reference: bool = True,
    compile_backend: str = "inductor",
    progress: Callable[[str], None] = logger.info,
) -> BenchResult:
    """Time ``repeats`` x ``steps`` search steps at ``batch_size`` on random images.

    Sizes are checked first (:func:`check_sizes`). Precision and compilation come from
    ``cfg.search`` (``compile_backend``: see :func:`~snas_ray.engine.precision.compile_module`).
    With ``compare_reference``, each repeat times the reference-style step right after ours,
    and the ratio is taken per pair.
    """
    check_sizes(batch=batch_size, image_size=image_size, steps=steps, warmup=warmup)
    check_sizes(repeats=repeats)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    loop = _loop(cfg, device, image_size, (x, y))
    if cfg.search.compile and compile_backend != "inductor":
        loop.forward_model = compile_module(loop.model, True, compile_backend)
    xf = x.contiguous(memory_format=loop.memory_format)
    tau = loop.tau(0)
    ref = _reference_loop(cfg, device, image_size, (x, y)) if compare_reference else None
    first = _time(lambda: loop.step(xf, y, tau), device, 1)  # compiles, when compiled
    _time(lambda: loop.step(xf, y, tau), device, warmup)
    ours, theirs, peak = [], [], 0.0
    if ref is not None:
        _time(lambda: _reference_step(ref, x, y, tau), device, max(1, warmup))
    for r in range(repeats):
        if device.type == "cuda":  # the peak of our steps only, not of the reference's
            torch.cuda.reset_peak_memory_stats(device)
        ours.append(_time(lambda: loop.step(xf, y, tau), device, steps) * 1000)
        peak = max(peak, _peak_memory_mb(device))
        if ref is not None:
            theirs.append(_time(lambda: _reference_step(ref, x, y, tau), device, steps) * 1000)
        versus = f", reference {theirs[-1]:.1f} ms ({theirs[-1] / ours[-1]:.2f}x)" if ref else ""
        progress(f"bench {_name(cfg)}: repeat {r + 1}/{repeats}: step {ours[-1]:.1f} ms{versus}")
    return BenchResult(
        device=str(device),
        precision=cfg.search.precision,
        compiled=cfg.search.compile,
        compile_backend=compile_backend if cfg.search.compile else None,
        batch_size=batch_size,
        image_size=image_size,
        layers=cfg.space.layers,
        init_channels=cfg.space.init_channels,
        resource_lambda=cfg.cost.resource_lambda,
        steps=steps,
        repeats=repeats,
        threads=torch.get_num_threads(),
        step_ms=Spread.of(ours),
        first_step_s=round(first, 2),
        peak_memory_mb=round(peak, 1),
        reference_step_ms=Spread.of(theirs) if theirs else None,
        speedup=Spread.of([t / o for t, o in zip(theirs, ours, strict=True)]) if theirs else None,
    )


def _name(cfg: ExperimentConfig) -> str:
    return f"{cfg.search.precision} {'compiled' if cfg.search.compile else 'eager'}"


def bench_matrix(
    cfg: ExperimentConfig,
    device: torch.device,
    *,
    precisions: Sequence[str] = ("fp32", "bf16"),
    compiled: Sequence[bool] = (False, True),
    **kwargs: Any,
) -> list[BenchResult]:
    """:func:`bench_search_step` for every precision x eager/compiled pair, in that order."""
    for p in precisions:
        if p not in PRECISIONS:
            raise ConfigError(
                "bench --precision", f"unknown {p!r}; allowed: {', '.join(PRECISIONS)}"
            )
    return [
        bench_search_step(
            cfg.replace(**{"search.precision": p, "search.compile": c}), device, **kwargs
        )
        for p in precisions
        for c in compiled
    ]


def format_table(results: Sequence[BenchResult]) -> str:
    """One line per configuration: step time, images/s, memory, ratio (median [min, max])."""
    head = (
        f"{'precision':<9} {'mode':<8} {'step ms':>24} {'img/s':>9} {'peak MiB':>9} {'vs ref':>22}"
    )
    lines = [head]
    for r in results:
        s = r.step_ms
        step = f"{s.median:.1f} [{s.low:.1f}, {s.high:.1f}]"
        ratio = (
            "-"
            if r.speedup is None
            else (f"{r.speedup.median:.2f}x [{r.speedup.low:.2f}, {r.speedup.high:.2f}]")
        )
        mode = f"compiled ({r.compile_backend})" if r.compiled else "eager"
        lines.append(
            f"{r.precision:<9} {mode:<20} {step:>24} {r.images_per_s:>9.1f} "
            f"{r.peak_memory_mb:>9.1f} {ratio:>22}"
        )
    return "\n".join(lines)
