"""One trial of a sweep: a full search into ``OUT/runs/<settings>``, reporting to Tune.

In the trial's own process for one worker (as ``snas-ray search`` runs it), or through a nested
TorchTrainer whose rank-0 reports reach Tune with ``TuneReportCallback``. A trial restarted by
Tune (retry, resumed sweep) continues from its run folder's last checkpoint, and one whose
search already finished only reports its result again. Driver side: :mod:`.sweep`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from snas_ray.config import ExperimentConfig, flatten, resolve_paths
from snas_ray.distributed.launch import LaunchOptions, fetch_result, fit, run_name
from snas_ray.distributed.worker import worker_logging
from snas_ray.engine.loop import EpochLoop, EpochRecord, HookBase
from snas_ray.engine.runfolder import finished_result
from snas_ray.layout import RunPaths
from snas_ray.search import run_search
from snas_ray.sweep_spec import SweepSpec, progress_metrics, sweep_from_dict, trial_dirname

__all__ = [
    "HPARAM_METRICS",
    "TuneReportHook",
    "sweep_trial",
    "trial_index",
    "write_hparams_experiment",
]


def _final_metrics(cfg: ExperimentConfig, summary: dict[str, Any]) -> dict[str, Any]:
    final = summary.get("final_metrics", {})
    child = summary.get("budget_cost", summary)  # the size the epochs' child cost is measured at
    return progress_metrics(cfg, final, summary["epochs_done"]) | {
        "child_params": child["params"],
        "child_flops": child["flops"],
        "child_mac": child["mac"],
        "done": True,
    }


def _finished(paths: RunPaths, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The run folder's result if this exact search already finished (a driver killed late)."""
    return finished_result(paths, cfg.to_dict(), cfg.search.epochs)


# The HParams view's metric columns: the last value of each scalar a search run writes.
HPARAM_METRICS = {
    "val/acc_child": "child val acc",
    "val/acc_relaxed": "relaxed val acc",
    "child/params": "child params",
    "child/flops": "child FLOPs (multiply-adds)",
    "child/mac": "child MAC (memory access, elements)",
}
_SHOWN = ("cost.resource_lambda", "cost.estimator", "seed")  # columns even when not swept


def write_hparams_experiment(spec: SweepSpec, paths: RunPaths) -> None:
    """The sweep's HParams columns (swept keys and lambda, estimator, seed; the child's accuracy
    and cost) into the run's TensorBoard folder. Every trial writes the same one, so the view
    of ``OUT/runs`` shows the sweep whichever run TensorBoard reads it from."""
    from torch.utils.tensorboard import SummaryWriter

    from snas_ray.engine.sinks import hparams_experiment

    settings = {key: [value] for key, value in flatten(spec.base.to_dict()).items()}
    settings = {key: settings[key] for key in _SHOWN}
    settings |= {p.key: list(p.values) for p in spec.params}
    writer = SummaryWriter(log_dir=str(paths.tensorboard))
    try:
        writer.file_writer.add_summary(hparams_experiment(settings, HPARAM_METRICS))
    finally:
        writer.close()


class TuneReportHook(HookBase):
    """Reports each epoch's progress numbers to Tune (after the epoch's checkpoint is saved)."""

    def after_epoch(self, loop: EpochLoop, record: EpochRecord) -> None:
        tune.report(loop.progress(record))


def _search_in_trial(cfg: ExperimentConfig, paths: RunPaths, threads: int) -> dict[str, Any]:
    """The search in this trial's process (one worker), as ``snas-ray search`` runs it."""
    torch.set_num_threads(threads)

    return run_search(cfg, paths.root, hooks=[TuneReportHook()])


def _search_nested(
    cfg: ExperimentConfig, paths: RunPaths, spec: SweepSpec, threads: int, storage: str | None
) -> dict[str, Any]:
    """The search on ``workers_per_trial`` Ray Train workers; their reports reach Tune."""
    opts = spec.options
    options = LaunchOptions(
        workers=opts.workers_per_trial,
        gpus_per_worker=opts.gpus_per_worker,
        cpus_per_worker=opts.cpus_per_worker,
        storage=storage or str(paths.root / "ray"),
        max_failures=opts.max_failures,
        name=run_name(paths.root),  # stable, so a retried trial resumes the same Train run
    )
    result = fit(cfg, paths, options, extra={"threads": threads}, callbacks=[TuneReportCallback()])
    return fetch_result(result, paths, "search")


def trial_index(trial_id: str) -> int:
    # Tune numbers trials per experiment ("5351b_00004") and keeps ids across a restore.
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else int(hashlib.sha1(trial_id.encode()).hexdigest()[:6], 16)


def sweep_trial(
    config: dict[str, Any],
    *,
    spec_tree: dict[str, Any],
    out: str,
    storage: str | None,
    log_level: int,
    workdir: str,
) -> None:
    """The Tune trainable: one search of the sweep, into ``OUT/runs/<settings>``.

    ``workdir`` is the driver's working directory: Tune runs the trial in its own folder, so a
    swept relative path (a ``data.root`` grid) is resolved against the driver's."""
    spec = sweep_from_dict(spec_tree)
    worker_logging(0, log_level)  # a handler in this process; WARNING unless --verbose
    assignment = {p.key: config[p.key] for p in spec.params}
    cfg = resolve_paths(spec.trial_config(assignment), workdir)
    index = trial_index(tune.get_context().get_trial_id())
    paths = RunPaths(Path(out) / "runs" / trial_dirname(index, assignment)).make()
    summary = _finished(paths, cfg)
    if summary is None and cfg.output.tensorboard:
        write_hparams_experiment(spec, paths)
    if summary is None:
        threads = max(1, int(spec.options.cpus_per_worker))
        if spec.options.workers_per_trial == 1:
            summary = _search_in_trial(cfg, paths, threads)
        else:
            summary = _search_nested(cfg, paths, spec, threads, storage)
    tune.report(_final_metrics(cfg, summary) | {"run_dir": str(paths.root)})
