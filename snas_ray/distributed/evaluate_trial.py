"""One trial of an evaluation: a complete retraining of one genotype with one seed, under Tune.

In the trial's own process for one worker (as ``snas-ray train`` runs it), or on a nested
TorchTrainer for more. A trial that Tune restarts continues from its run folder's last
checkpoint, and one whose retraining already finished only reports its result again, so
re-running an interrupted evaluation never retrains a finished run. Driver: :mod:`.evaluate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from snas_ray.config import ExperimentConfig
from snas_ray.distributed.launch import LaunchOptions, fetch_result, fit, run_name
from snas_ray.distributed.sweep_trial import TuneReportHook
from snas_ray.distributed.worker import worker_logging
from snas_ray.engine.runfolder import finished_result
from snas_ray.evaluate_spec import evaluate_from_dict
from snas_ray.layout import RunPaths
from snas_ray.retrain import run_retrain

__all__ = ["evaluate_trial", "finished_retrain", "retrain_config"]


def retrain_config(
    base: ExperimentConfig, genotype_file: Path | str, seed: int
) -> ExperimentConfig:
    """The config of one retraining: the evaluation's base with its genotype file and seed."""
    return base.replace(**{"seed": seed, "train.genotype": str(genotype_file)})


def finished_retrain(paths: RunPaths, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The run folder's ``result.json`` if this exact retraining already finished, else None."""
    return finished_result(paths, cfg.to_dict(), cfg.train.epochs)


def evaluate_trial(
    config: dict[str, Any],
    *,
    spec_tree: dict[str, Any],
    runs: dict[str, tuple[str, int]],
    out: str,
    storage: str | None,
    log_level: int,
) -> None:
    """The Tune trainable: retrain ``runs[config["run"]]`` (genotype file, seed) into
    ``OUT/runs/<run>``, reporting each epoch's test accuracy."""
    spec = evaluate_from_dict(spec_tree)
    worker_logging(0, log_level)
    name = config["run"]
    genotype_file, seed = runs[name]
    cfg = retrain_config(spec.base, genotype_file, seed)
    paths = RunPaths(Path(out) / "runs" / name).make()
    summary = finished_retrain(paths, cfg)
    if summary is None:
        threads = max(1, int(spec.tune.cpus_per_worker))
        if spec.tune.workers_per_trial == 1:
            torch.set_num_threads(threads)
            summary = run_retrain(cfg, paths.root, hooks=[TuneReportHook()])
        else:
            options = LaunchOptions(
                workers=spec.tune.workers_per_trial,
                gpus_per_worker=spec.tune.gpus_per_worker,
                cpus_per_worker=spec.tune.cpus_per_worker,
                storage=storage or str(paths.ray_storage),
                max_failures=spec.tune.max_failures,
                name=run_name(paths.root),  # stable: a retried trial resumes its Train run
            )
            result = fit(
                cfg,
                paths,
                options,
                job="retrain",
                extra={"threads": threads},
                callbacks=[TuneReportCallback()],
            )
            summary = fetch_result(result, paths, "retrain")
    tune.report(
        {
            "epoch": summary["epochs_done"] - 1,
            "test_acc": summary["test_acc"],
            "params": summary["params"],
            "done": True,
            "run_dir": str(paths.root),
        }
    )
