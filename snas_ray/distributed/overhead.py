"""``snas-ray bench --ray-overhead``: the same search epochs in-process and in a 1-worker
TorchTrainer, to show what Ray's report and checkpoint cost per epoch."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch

from snas_ray.config import ExperimentConfig
from snas_ray.distributed.launch import LaunchOptions, connect, fit
from snas_ray.engine.hooks import CheckpointHook
from snas_ray.engine.loop import EpochLoop, EpochRecord, HookBase
from snas_ray.engine.runfolder import folder_hooks, run_hooks, write_config
from snas_ray.errors import SnasRayError
from snas_ray.layout import RunPaths
from snas_ray.search import build_search

__all__ = ["bench_overhead"]


class _TimedCheckpoint(HookBase):
    """The in-process checkpoint hook, timed the way the Ray worker's report hook is."""

    def __init__(self, checkpoint: CheckpointHook) -> None:
        self.checkpoint = checkpoint
        self.wall_s: list[float] = []
        self.hook_s: list[float] = []
        self._last = time.perf_counter()

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        start = time.perf_counter()
        self.checkpoint.after_epoch(loop, record)
        now = time.perf_counter()
        self.wall_s.append(now - self._last)
        self.hook_s.append(now - start)
        self._last = now


def _time_in_process(cfg: ExperimentConfig, device: torch.device, out: Path) -> dict[str, Any]:
    """Per-epoch wall and checkpoint times of the in-process search (as run_search runs it)."""
    paths = RunPaths(out).make()
    loop = build_search(cfg, device)
    write_config(loop.config, paths)
    timed = _TimedCheckpoint(CheckpointHook(paths.last_checkpoint, cfg.output.checkpoint_every))
    hooks = folder_hooks(loop, paths, write=True, tensorboard=cfg.output.tensorboard)
    run_hooks(loop, [*hooks, timed])
    return {"epochs_s": timed.wall_s, "hook_s": timed.hook_s}


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
        returned = fit(cfg, RunPaths(out).make(), options, extra={"threads": threads})
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
