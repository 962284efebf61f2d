"""Throughput and memory of the search step, with a ratio against a reference-style step.

Times what one search step does (sample, forward, loss with penalty, backward, both optimizer
steps) on synthetic data, and the same step done the way the SNAS reference does it (every op
evaluated including 'none', three backward passes when the penalty is on; spec §6.4, §14.8),
so the printed ratio says what our fixes buy on the machine at hand.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from snas_ray.config import ExperimentConfig
from snas_ray.search import SearchLoop
from snas_ray.space.cost import resource_penalty
from snas_ray.space.supernet import MixedOp, Supernet

__all__ = ["BenchResult", "bench_search_step"]


@dataclass(frozen=True)
class BenchResult:
    """Figures of one benchmark run; ``to_dict`` is what the CLI prints as JSON."""

    device: str
    batch_size: int
    image_size: int
    layers: int
    init_channels: int
    steps: int
    images_per_s: float
    step_ms: float
    peak_memory_mb: float
    reference_images_per_s: float | None
    speedup_vs_reference: float | None
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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


def _time_steps(step, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def bench_search_step(
    cfg: ExperimentConfig,
    device: torch.device,
    *,
    batch_size: int,
    image_size: int = 32,
    steps: int = 5,
    warmup: int = 2,
    compare_reference: bool = True,
) -> BenchResult:
    """Time ``steps`` search steps at ``batch_size`` on random images of side ``image_size``."""
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    loop = _loop(cfg, device, image_size, (x, y))
    xf = x.contiguous(memory_format=loop.memory_format)
    tau = loop.tau(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _time_steps(lambda: loop.step(xf, y, tau), device, warmup, steps)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is in KiB on Linux: the process's peak resident memory
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ref_ips = None
    if compare_reference:
        # The reference keeps NCHW tensors and computes every op, 'none' included.
        ref = _loop(cfg.replace(**{"search.channels_last": False}), device, image_size, (x, y))
        for m in ref.net.modules():
            if isinstance(m, MixedOp):
                m.compute_all_ops()
        ref_seconds = _time_steps(
            lambda: _reference_step(ref, x, y, tau), device, max(1, warmup // 2), steps
        )
        ref_ips = batch_size / ref_seconds
    ips = batch_size / seconds
    return BenchResult(
        device=str(device),
        batch_size=batch_size,
        image_size=image_size,
        layers=cfg.space.layers,
        init_channels=cfg.space.init_channels,
        steps=steps,
        images_per_s=round(ips, 2),
        step_ms=round(seconds * 1000, 1),
        peak_memory_mb=round(peak, 1),
        reference_images_per_s=None if ref_ips is None else round(ref_ips, 2),
        speedup_vs_reference=None if ref_ips is None else round(ips / ref_ips, 3),
        threads=torch.get_num_threads(),
    )
