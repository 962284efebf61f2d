"""Honest evaluation on Ray Tune: retrain the front and cost-matched random genotypes, with seeds.

One Tune trial per genotype x seed (:mod:`.evaluate_trial`), each a complete retrain run folder;
FIFO, as many at a time as the cluster fits (local Ray when no cluster is given, as a sweep).
Evaluation folder (default ``SWEEP/evaluate``, see :class:`~snas_ray.layout.EvaluatePaths`)::

    evaluate.yaml      the resolved evaluate config (a re-run must match it to continue)
    plan.json          front genotypes, random draws (seeded), their costs at the retrain size
    genotypes/         one genotype file per candidate
    runs/NAME-seed=S/  one retrain run folder per genotype and seed
    tune/              Tune's experiment state
    evaluation.json    one record per retraining; evaluation.md and evaluation.png

Re-running the same command continues: finished retrainings are kept, interrupted ones resume
from their last checkpoint, errored ones are retried.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune

from snas_ray.config import config_difference
from snas_ray.distributed.evaluate_plan import EvaluationPlan, make_plan
from snas_ray.distributed.evaluate_trial import evaluate_trial, finished_retrain, retrain_config
from snas_ray.distributed.launch import connect
from snas_ray.distributed.sweep import max_concurrent_trials
from snas_ray.errors import EvaluationError
from snas_ray.evaluate_spec import EvaluateSpec, evaluate_from_dict
from snas_ray.genotype import save_genotype
from snas_ray.layout import EvaluatePaths, RunPaths, atomic_write_json, atomic_write_text
from snas_ray.results.evaluation import Evaluation
from snas_ray.results.evaluation_report import write_evaluation
from snas_ray.sweep_spec import SweepOptions

__all__ = ["EvaluationError", "evaluation_records", "prepare_evaluation", "run_evaluation"]

logger = logging.getLogger(__name__)

_DRIVER_CPU = 0.01  # a nested trial only drives its TorchTrainer


@dataclass(frozen=True)
class _Population:
    """What :func:`~.sweep.max_concurrent_trials` reads of a population of trials."""

    options: SweepOptions
    num_trials: int


def _check_saved(spec: EvaluateSpec, plan: EvaluationPlan, paths: EvaluatePaths) -> None:
    """A re-run continues when it retrains the same genotypes with the same config and seeds;
    options that only choose or report them (top, metric, confidence, ...) may change when
    the plan stays the same."""
    if paths.spec.is_file():
        saved = evaluate_from_dict(yaml.safe_load(paths.spec.read_text()))
        diff = config_difference(spec.base.to_dict(), saved.base.to_dict())
        if diff is not None:
            raise EvaluationError(
                f"{paths.root} holds a different evaluation ({diff[0]}={diff[1]!r} there, "
                f"{diff[2]!r} here); choose another --out"
            )
    if paths.plan.is_file():
        old, new = json.loads(paths.plan.read_text()), plan.to_dict()
        key = next((k for k in new if k != "notes" and old.get(k) != new[k]), None)
        if key is not None:
            raise EvaluationError(
                f"{paths.root} holds a different evaluation (its plan.json differs in {key}: "
                "another front, draw, cost match or seeds); choose another --out"
            )


def prepare_evaluation(
    spec: EvaluateSpec, plan: EvaluationPlan, out: Path, resume: bool | None
) -> bool:
    """Write or check evaluate.yaml, plan.json and the genotype files; True when there is a
    Tune experiment to continue."""
    paths = EvaluatePaths(out)
    restorable = tune.Tuner.can_restore(str(paths.tune))
    if resume and not restorable:
        raise EvaluationError(f"--resume: {out} holds no evaluation to continue")
    if restorable and not paths.spec.is_file():
        raise EvaluationError(f"{out} holds a Tune experiment but no evaluate.yaml")
    _check_saved(spec, plan, paths)
    atomic_write_text(paths.spec, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    atomic_write_json(paths.plan, plan.to_dict())
    for c in plan.candidates:
        save_genotype(c.genotype, paths.genotypes / f"{c.name}.json")
    return restorable


def _tuner(spec: EvaluateSpec, plan: EvaluationPlan, out: Path, *, restorable: bool, **kw: Any):
    paths = EvaluatePaths(out)
    runs = {name: (str(paths.genotypes / f"{c.name}.json"), s) for name, c, s in plan.runs()}
    opts = spec.tune
    trainable = tune.with_resources(
        tune.with_parameters(
            evaluate_trial, spec_tree=spec.to_dict(), runs=runs, out=str(out), **kw
        ),
        {"cpu": opts.cpus_per_worker, "gpu": opts.gpus_per_worker}
        if opts.workers_per_trial == 1
        else {"cpu": _DRIVER_CPU},
    )
    space = {"run": tune.grid_search(list(runs))}
    if restorable:
        logger.info("continuing the evaluation in %s", out)
        return tune.Tuner.restore(
            str(paths.tune),
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            param_space=space,
        )
    limit = max_concurrent_trials(_Population(opts, len(runs)), ray.cluster_resources())
    reporter = tune.CLIReporter(
        parameter_columns={"run": "run"},
        metric_columns={"epoch": "epoch", "test_acc": "test acc"},
        max_report_frequency=20,
    )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=limit),
        run_config=tune.RunConfig(
            name=paths.tune.name,
            storage_path=str(out),
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            progress_reporter=reporter,
            verbose=1,
        ),
    )


@contextmanager
def _classic_output():
    # The chosen progress columns need Tune's classic reporter, for this call only.
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


def evaluation_records(
    spec: EvaluateSpec, plan: EvaluationPlan, out: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """One evaluation.json record per finished retraining, and the unfinished run names."""
    paths = EvaluatePaths(out)
    records, missing = [], []
    for name, c, seed in plan.runs():
        genotype_file = paths.genotypes / f"{c.name}.json"
        cfg = retrain_config(spec.base, genotype_file, seed)
        result = finished_retrain(RunPaths(paths.runs / name), cfg)
        if result is None:
            missing.append(name)
            continue
        if result["params"] != c.cost["params"]:
            logger.warning("%s: %s params measured, %s planned", name, result["params"], c.cost)
        search_run = Path(plan.sweep) / c.search_run if c.search_run else None
        records.append(
            {
                "genotype": f"{paths.genotypes.name}/{c.name}.json",
                "name": c.name,
                "source": c.source,
                "matched_to": c.matched_to,
                "search_run": os.path.relpath(search_run, out) if search_run else None,
                "search_acc": c.search_acc,
                "form": c.form,
                "params": result["params"],
                "flops": result["flops"],
                "mac": result["mac"],
                "seed": seed,
                "test_acc": result["test_acc"],
                "best_test_acc": result["best_test_acc"],
                "epochs": result["epochs_done"],
                "run": f"{paths.runs.name}/{name}",
                "draw_seed": plan.draw_seed if c.source == "random" else None,
            }
        )
    return records, missing


def _setting(spec: EvaluateSpec, plan: EvaluationPlan) -> list[str]:
    t, d = spec.base.train, spec.base.data
    forms = sorted({c.form for c in plan.candidates})
    return [
        f"sweep: `{plan.sweep}` (its Pareto front has {plan.front_size} run(s))",
        f"random genotypes: uniform among the {'/'.join(forms)}-form genotypes within "
        f"±{plan.tolerance:.0%} of their match's {plan.cost}, drawn with seed {plan.draw_seed} "
        "(`plan.json`)",
        f"retraining: {t.network} network, C={t.init_channels}, {t.layers} cells, {t.epochs} "
        f"epochs, batch {t.batch_size}, lr {t.lr:g}; data {d.name} at "
        f"{d.image_size or 'native'} px{', limit ' + str(d.limit) if d.limit else ''}; "
        f"seeds {', '.join(map(str, plan.seeds))}",
    ]


def run_evaluation(
    spec: EvaluateSpec,
    sweep_dir: Path | str,
    out: Path | str | None = None,
    *,
    resume: bool | None = None,
    address: str | None = None,
    storage: str | None = None,
    verbose: bool = False,
) -> Evaluation:
    """Plan, run (or continue) and summarise the evaluation of ``sweep_dir``'s front.

    Raises:
        EvaluationError: nothing to evaluate, a different evaluation in ``out``, no random
            match for a front genotype, or retrainings that failed after their retries.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise EvaluationError(f"evaluate: {sweep_dir} is not a folder")
    out = Path(out or sweep_dir / "evaluate").resolve()
    if spec.base.data.root and not Path(spec.base.data.root).is_absolute():
        # Trials run in Tune's trial folders, not in the caller's cwd.
        spec = dataclasses.replace(
            spec, base=spec.base.replace(**{"data.root": str(Path(spec.base.data.root).resolve())})
        )
    plan = make_plan(sweep_dir, spec)
    restorable = prepare_evaluation(spec, plan, out, resume)
    logger.info(
        "evaluate: %d genotype(s) x %d seed(s) = %d retrainings into %s",
        len(plan.candidates),
        len(plan.seeds),
        len(plan.runs()),
        out,
    )
    opts = spec.tune
    nested = opts.workers_per_trial > 1
    started = connect(address, min_cpus=opts.workers_per_trial * opts.cpus_per_worker + nested)
    try:
        level = logging.INFO if verbose else logging.WARNING
        tuner = _tuner(spec, plan, out, restorable=restorable, storage=storage, log_level=level)
        with _classic_output():
            tuner.fit()
    finally:
        if started:
            ray.shutdown()
    records, missing = evaluation_records(spec, plan, out)
    evaluation = write_evaluation(
        out,
        records,
        cost=spec.options.cost,
        confidence=spec.options.confidence,
        notes=plan.notes,
        title=sweep_dir.resolve().name,
        setting=_setting(spec, plan),
    )
    if missing:
        raise EvaluationError(
            f"{len(missing)} of {len(plan.runs())} retrainings unfinished or failed "
            f"({missing[0]}, ...); run the same command again to continue them"
        )
    return evaluation
