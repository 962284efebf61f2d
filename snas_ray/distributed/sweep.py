"""Populations of searches on Ray Tune: one trial per point of a :class:`SweepSpec`.

Train inside Tune (ray-notes §0): each trial is a function that runs a full search, in the
trial's own process for one worker, or through a nested TorchTrainer (reporting to Tune with
``TuneReportCallback``) for more. FIFO scheduling unless early stopping is asked for, since a
single-metric scheduler kills the cheap high-lambda trials a Pareto sweep exists to find.

Sweep folder::

    OUT/sweep.yaml          the resolved sweep (a re-run must match it to continue)
    OUT/runs/NNN-.../       one complete search run folder per trial, named by its settings
    OUT/tune/               Ray Tune's experiment state (resume), per-trial logs, TensorBoard
    OUT/sweep_results.json  per-trial settings, status and result, rewritten at the end
    OUT/collect/            leaderboard, Pareto front and report (``snas-ray collect``)

Re-running the same command continues: finished trials are kept, interrupted ones resume from
their run folder's last checkpoint, errored ones are retried.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune

from snas_ray.config import config_difference, read_config_file, resolve_paths
from snas_ray.distributed.launch import absolute_storage, connect
from snas_ray.distributed.sweep_plan import (
    DRIVER_CPU,
    concurrency_line,
    driver_resources,
    repeats_warning,
)
from snas_ray.distributed.sweep_rows import (
    RESULTS_FILE,
    format_rows,
    raise_for_unfinished,
    summarize,
    summarize_from_folders,
)
from snas_ray.distributed.sweep_trial import sweep_trial
from snas_ray.errors import ConfigError, SweepError
from snas_ray.layout import atomic_write_text
from snas_ray.sweep_spec import SweepSpec, sweep_from_dict

__all__ = ["RESULTS_FILE", "SweepError", "format_rows", "max_concurrent_trials", "run_sweep"]

logger = logging.getLogger(__name__)

SPEC_FILE = "sweep.yaml"
TUNE_DIR = "tune"


def _param_space(spec: SweepSpec) -> dict[str, Any]:
    space: dict[str, Any] = {}
    for p in spec.params:
        if p.kind == "grid":
            space[p.key] = tune.grid_search(list(p.values))
        elif p.kind == "choice":
            space[p.key] = tune.choice(list(p.values))
        elif p.kind == "uniform":
            space[p.key] = tune.uniform(*p.values)
        else:
            space[p.key] = tune.loguniform(*p.values)
    return space


def _trial_resources(spec: SweepSpec) -> dict[str, float]:
    return driver_resources(spec, ray.cluster_resources())  # after connect()


def max_concurrent_trials(spec: SweepSpec, cluster: dict[str, float]) -> int:
    """How many trials may run at once.

    One-worker trials: all of them; Tune starts what the cluster fits and queues the rest,
    which an autoscaler sees as demand. Nested trials: as many as the cluster's CPUs and GPUs
    fit now (at least 1), since a trial waiting for its workers still holds its own slot and
    ends in worker-group start-up timeouts (ray-notes §6.5).
    """
    opts = spec.options
    if opts.max_concurrent_trials:
        return opts.max_concurrent_trials
    if opts.workers_per_trial == 1:
        if opts.gpus_per_worker > 0 and not cluster.get("GPU"):
            logger.warning(
                "trials need %g GPU each and the cluster has none now: they wait for an "
                "autoscaler (set tune.gpus_per_worker: 0 to search on CPUs)",
                opts.gpus_per_worker,
            )
        return spec.num_trials
    need = {
        "CPU": opts.workers_per_trial * opts.cpus_per_worker + DRIVER_CPU,
        "GPU": opts.workers_per_trial * opts.gpus_per_worker,
    }
    fits = [math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
    n = min(fits)
    if n < 1:
        logger.warning(
            "one trial needs %s but the cluster has %s now: one trial at a time "
            "(set tune.max_concurrent_trials on an autoscaling cluster)",
            ", ".join(f"{v:g} {k}" for k, v in need.items() if v > 0),
            ", ".join(f"{cluster.get(k, 0):g} {k}" for k in need),
        )
    return max(1, min(n, spec.num_trials))


def _reporter(spec: SweepSpec) -> tune.CLIReporter:
    params = {p.key: p.key.rsplit(".", 1)[-1] for p in spec.params}
    fixed = {"resource_lambda": "lambda", "estimator": "estimator"}  # shown even when not swept
    metrics = {k: v for k, v in fixed.items() if f"cost.{k}" not in params} | {
        "epoch": "epoch",
        "val_acc": "val_acc",
        "val_acc_relaxed": "relaxed",
        "expected_params": "E[child params]",
        "child_params": "child params",
        "entropy_frac": "entropy",
        "lambda_now": "lambda now",
    }
    return tune.CLIReporter(
        parameter_columns=params, metric_columns=metrics, max_report_frequency=20
    )


def _prepare_folder(spec: SweepSpec, out: Path, resume: bool | None) -> bool:
    """Write or check ``sweep.yaml``; True when there is a Tune experiment to continue.

    A re-run must describe the same searches; fields that may change between an interrupted
    search and its resumption (device, output, data.root, ...) may change here too.
    """
    spec_file = out / SPEC_FILE
    restorable = tune.Tuner.can_restore(str(out / TUNE_DIR))
    if resume and not restorable:
        raise SweepError(f"--resume: {out} holds no sweep to continue (run without --resume)")
    if spec_file.exists():
        saved = _saved_sweep(spec_file)
        what = _first_difference(saved, spec)
        if what is not None:
            raise SweepError(f"{out} holds a different sweep ({what}); choose another --out")
        if restorable and saved.options != spec.options:
            logger.warning(
                "tune: options changed since %s was started; a continued sweep keeps its "
                "concurrency, retries and scheduler, and takes only the new per-trial resources",
                spec_file,
            )
        if restorable:
            return True  # keep the sweep.yaml that describes the running experiment
    elif restorable:
        raise SweepError(f"{out} holds a Tune experiment but no {SPEC_FILE}; choose another --out")
    atomic_write_text(spec_file, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return restorable


def _saved_sweep(spec_file: Path) -> SweepSpec:
    """The sweep a folder's ``sweep.yaml`` describes; one line when it is not one."""
    try:
        return sweep_from_dict(read_config_file(spec_file))
    except ConfigError as exc:
        why = exc.message if exc.field_name == "--config" else f"{exc.field_name}: {exc.message}"
        raise SweepError(
            f"{spec_file} does not hold a readable sweep ({why}); the folder is not a sweep's "
            "or the file was damaged: choose another --out"
        ) from None


def _first_difference(saved: SweepSpec, spec: SweepSpec) -> str | None:
    """The first setting that makes ``spec`` another sweep than ``saved``, as words."""
    diff = config_difference(spec.base.to_dict(), saved.base.to_dict())
    if diff is not None:
        return f"{diff[0]}={diff[1]!r} there, {diff[2]!r} here"
    there = {p.key: p.to_dict() for p in saved.params}
    here = {p.key: p.to_dict() for p in spec.params}
    for key in [*there, *(k for k in here if k not in there)]:
        if there.get(key) != here.get(key):
            return f"sweep.{key}={there.get(key)!r} there, {here.get(key)!r} here"
    return None


def _absolute_roots(spec: SweepSpec) -> SweepSpec:
    # Trials run in Tune's trial folders, not in the caller's cwd (config.paths); a swept path
    # value is resolved by the trial against the driver's folder (sweep_trial's ``workdir``).
    return SweepSpec(resolve_paths(spec.base), spec.params, spec.options)


def _tuner(spec: SweepSpec, out: Path, *, restorable: bool, limit: int, **trial: Any) -> Any:
    """A new Tuner, or the interrupted one restored (same trial ids, so same run folders)."""
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, spec_tree=spec.to_dict(), out=str(out), **trial),
        _trial_resources(spec),
    )
    if restorable:
        logger.info("continuing the sweep in %s", out)
        return tune.Tuner.restore(
            str(out / TUNE_DIR),
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            param_space=_param_space(spec),
        )
    return tune.Tuner(
        trainable,
        param_space=_param_space(spec),
        tune_config=tune.TuneConfig(
            num_samples=spec.num_samples, max_concurrent_trials=limit, scheduler=_scheduler(spec)
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(out),
            failure_config=tune.FailureConfig(max_failures=spec.options.max_failures),
            progress_reporter=_reporter(spec),
            verbose=1,
        ),
    )


class _OurInterruptWords(logging.Filter):
    """Tune's interrupt messages point at ``Tuner.restore()``; a sweep continues when the same
    command runs again, which the CLI's last line says. The stop notice is reworded."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "Stop signal received" in text:
            record.msg = "interrupted: stopping the trials and saving the sweep (Ctrl-C again: now)"
            record.args = ()
            return True
        return not any(s in text for s in ("Tuner.restore", "Trials did not complete"))


def _fit_classic_output(tuner: Any) -> Any:
    # Our progress table (chosen columns) needs Tune's classic reporter, for this call only.
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    words = _OurInterruptWords()
    tune_logger = logging.getLogger("ray.tune.tune")  # where Tune logs its interrupt messages
    tune_logger.addFilter(words)
    try:
        return tuner.fit()
    finally:
        tune_logger.removeFilter(words)
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


def run_sweep(
    spec: SweepSpec,
    out: Path | str,
    *,
    resume: bool | None = None,
    address: str | None = None,
    storage: str | None = None,
    collect: bool = True,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Run a sweep into ``out`` (or continue it); returns one row per trial.

    ``resume``: None continues an interrupted sweep found in ``out`` and starts one otherwise;
    True requires one. ``storage``: Ray Train storage (path or URI) for nested trials
    (default: each trial's run folder). Raises :class:`SweepError` when trials failed after
    their retries or were interrupted.
    """
    out = Path(out).resolve()
    restorable = _prepare_folder(spec, out, resume)
    spec = _absolute_roots(spec)
    rows: list[dict[str, Any]] | None = None
    try:
        results = _fit(
            spec, out, restorable=restorable, address=address, storage=storage, verbose=verbose
        )
        rows = summarize(results, spec, out)
        if collect and any(r["status"] == "done" for r in rows):
            from snas_ray.results import collect as collect_runs

            collect_runs(out).write(out / "collect")  # finds runs/ and skips Tune's folders
    except KeyboardInterrupt:
        # A second Ctrl-C (Tune takes the first and returns its results) or one outside the
        # fit: the trials' states come from their run folders.
        if rows is None:
            summarize_from_folders(spec, out)
        raise
    raise_for_unfinished(rows, spec)
    return rows


def _fit(
    spec: SweepSpec,
    out: Path,
    *,
    restorable: bool,
    address: str | None,
    storage: str | None,
    verbose: bool,
) -> Any:
    """Connect (or start a local cluster), run the Tuner, disconnect what was started."""
    opts = spec.options
    # A nested trial holds a sliver of CPU while its workers hold theirs: one more logical CPU.
    nested = opts.workers_per_trial > 1
    started = connect(address, min_cpus=opts.workers_per_trial * opts.cpus_per_worker + nested)
    try:
        cluster = ray.cluster_resources()
        limit = max_concurrent_trials(spec, cluster)
        logger.info(
            "sweep: %d trial(s), %d worker(s) each; %s; follow with `tensorboard --logdir %s`",
            spec.num_trials,
            opts.workers_per_trial,
            concurrency_line(spec, cluster, limit),
            out / "runs",
        )
        repeats = repeats_warning(spec)
        if repeats:
            logger.warning("%s", repeats)
        level = logging.INFO if verbose else logging.WARNING
        tuner = _tuner(
            spec,
            out,
            restorable=restorable,
            limit=limit,
            storage=absolute_storage(storage),
            log_level=level,
            workdir=os.getcwd(),
        )
        return _fit_classic_output(tuner)
    finally:
        if started:
            ray.shutdown()


def _scheduler(spec: SweepSpec) -> Any:
    opts = spec.options
    if not opts.early_stopping:
        return None  # FIFO: every trial runs to the end
    logger.warning(
        "early stopping on %s: ASHA stops the least accurate trials, which in a lambda sweep "
        "are the cheap ones the Pareto front needs",
        opts.stop_metric,
    )
    return tune.schedulers.ASHAScheduler(
        time_attr="training_iteration",
        metric=opts.stop_metric,
        mode="max",
        max_t=spec.base.search.epochs + 1,  # one report per epoch plus the final one
        grace_period=opts.grace_epochs,
        reduction_factor=opts.reduction_factor,
    )
