"""Ray Tune sweeps end to end on CPU: a complete sweep folder, nested Train trials, and a sweep
whose driver is killed mid-run and then continued by running the same command again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
import yaml
from ray.tune.schedulers import ASHAScheduler
from ray_procs import kill_session
from tb_hparams import read_hparams

from snas_ray.distributed.sweep import _prepare_folder, _scheduler, max_concurrent_trials, run_sweep
from snas_ray.errors import SweepError
from snas_ray.results.leaderboard import collect
from snas_ray.sweep_spec import sweep_from_dict

ROOT = Path(__file__).parents[2]

TINY = {
    "seed": 0,
    "device": "cpu",
    "space": {"layers": 3, "init_channels": 4},
    "search": {"epochs": 2, "batch_size": 4, "eval_batch_size": 8, "log_every": 1000},
    "data": {"name": "synthetic", "image_size": 8, "synthetic_size": 32, "limit": 8},
}


def _spec(sweep, tune=None, **base):
    return sweep_from_dict(TINY | base | {"sweep": sweep, "tune": tune or {}})


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_concurrency_follows_the_cluster():
    # One-worker trials: Tune queues what does not fit (an autoscaler sees the demand).
    one = _spec({"seed": {"grid": list(range(8))}}, {"gpus_per_worker": 0.5})
    assert max_concurrent_trials(one, {"CPU": 4.0, "GPU": 0.0}) == 8
    # Nested trials: only as many drivers as worker groups fit, or they time out waiting.
    ddp = _spec({"seed": {"grid": list(range(8))}}, {"workers_per_trial": 2, "gpus_per_worker": 1})
    assert max_concurrent_trials(ddp, {"CPU": 8.0, "GPU": 8.0}) == 3  # CPUs bind first
    assert max_concurrent_trials(ddp, {"CPU": 64.0, "GPU": 4.0}) == 2
    assert max_concurrent_trials(ddp, {"CPU": 64.0, "GPU": 64.0}) == 8  # never more than trials
    assert max_concurrent_trials(ddp, {"CPU": 0.0, "GPU": 0.0}) == 1
    fixed = _spec({"seed": {"grid": [0, 1]}}, {"max_concurrent_trials": 1})
    assert max_concurrent_trials(fixed, {"CPU": 8.0}) == 1


def test_sweep_leaves_a_complete_sweep_folder(tmp_path):
    spec = _spec(
        {"cost.resource_lambda": {"grid": [0, 0.05]}},
        output={"tensorboard": True},
    )
    out = tmp_path / "sweep"
    rows = run_sweep(spec, out)
    assert not ray.is_initialized()  # the local cluster it started is gone

    runs = sorted((out / "runs").iterdir())
    assert [r.name for r in runs] == ["000-lambda=0", "001-lambda=0.05"]
    for run, lam in zip(runs, (0.0, 0.05), strict=True):
        assert _epochs(run) == [1, 2]
        assert yaml.safe_load((run / "config.yaml").read_text())["cost"]["resource_lambda"] == lam
        result = json.loads((run / "result.json").read_text())
        assert result["resource_lambda"] == lam and result["epochs_done"] == 2
        assert (run / "genotype.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
        assert list((run / "tb").glob("events.out.tfevents.*"))
        # HParams in the run's own event files: its settings, the sweep's columns, the child's
        # final accuracy and cost as the view's metrics.
        hparams = read_hparams(run / "tb")
        assert hparams["session"]["cost.resource_lambda"] == lam and hparams["ended"]
        assert {"cost.resource_lambda", "cost.estimator", "seed"} <= set(hparams["columns"])
        assert hparams["last"]["child/params"] == result["params"]
        assert hparams["last"]["val/acc_child"] == pytest.approx(result["val_acc"])
    assert [r["status"] for r in rows] == ["done", "done"]
    assert json.loads((out / "sweep_results.json").read_text()) == rows
    assert (out / "sweep.yaml").is_file()
    # Tune saw one report per epoch plus the final one, with the progress-table metrics.
    progress = sorted((out / "tune").glob("*/progress.csv"))
    assert len(progress) == 2
    header, *lines = progress[0].read_text().splitlines()
    assert {"val_acc", "expected_params", "epoch"} <= set(header.split(",")) and len(lines) == 3
    # The collector reads the sweep without Ray and skips Tune's own trial folders.
    board = collect(out)
    assert len(board.rows) == 2 and not board.skipped
    assert (out / "collect" / "pareto.png").is_file() and (out / "collect" / "report.md").is_file()


def test_nested_trainer_trials_report_to_tune(tmp_path, monkeypatch):
    spec = _spec(
        {"cost.estimator": {"grid": ["reparametrization", "policy_gradient"]}},
        {"workers_per_trial": 2, "max_concurrent_trials": 1, "max_failures": 0},
        **{"cost": {"resource_lambda": 0.01}},
    )
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    ray.init(
        address="local",
        num_cpus=4,  # a trial's sliver + 2 workers; logical CPUs may exceed the 2 cores
        object_store_memory=200 * 1024**2,
        include_dashboard=True,
    )
    try:
        rows = run_sweep(spec, tmp_path / "sweep", collect=False)
        assert ray.is_initialized()  # a cluster it joined is left running
    finally:
        ray.shutdown()
    assert [r["status"] for r in rows] == ["done", "done"]
    for row in rows:
        run = Path(row["run_dir"])
        assert _epochs(run) == [1, 2]
        assert list((run / "ray").iterdir())  # the Train run's own storage, per trial
        assert json.loads((run / "result.json").read_text())["estimator"] == run.name.split("=")[-1]
    # TuneReportCallback forwarded each epoch's rank-0 report, then the trial's final one.
    for progress in (tmp_path / "sweep" / "tune").glob("*/progress.csv"):
        header, *lines = progress.read_text().splitlines()
        assert "val_acc" in header.split(",") and len(lines) == 3


def test_killed_sweep_driver_resumes_and_runs_every_trial_once(tmp_path):
    tree = TINY | {
        "search": TINY["search"] | {"epochs": 4},
        "data": TINY["data"] | {"image_size": 16, "limit": 64},
        "sweep": {"cost.resource_lambda": {"grid": [0, 0.05]}},
        "tune": {"max_concurrent_trials": 1},
    }
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(tree, sort_keys=False))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "snas_ray", "sweep", "--config", str(config)]
    command += ["--out", str(out)]
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths
    env = os.environ | {"RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    first, second = out / "runs" / "000-lambda=0", out / "runs" / "001-lambda=0.05"

    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            metrics = second / "metrics.jsonl"
            done = metrics.is_file() and len(metrics.read_text().splitlines())
            if (first / "result.json").is_file() and done and 2 <= done < 4:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"sweep ended or stalled before the second trial ran: {proc.stderr.read()}")
    finally:
        kill_session(proc.pid)
    killed_at = _epochs(second)
    finished_before = (first / "result.json").read_bytes()
    finished_mtime = (first / "result.json").stat().st_mtime_ns
    lines_before = (second / "metrics.jsonl").read_text().splitlines()
    assert not (second / "result.json").exists() and 2 <= len(killed_at) < 4

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the sweep" in again.stderr
    # The finished trial was not run again; the interrupted one resumed from its checkpoint,
    # so its finished epochs' lines (wall times included) are untouched, and none repeats.
    assert (first / "result.json").read_bytes() == finished_before
    assert (first / "result.json").stat().st_mtime_ns == finished_mtime
    assert _epochs(first) == _epochs(second) == [1, 2, 3, 4]
    resumed = (second / "metrics.jsonl").read_text().splitlines()
    checkpointed = len(killed_at)  # checkpoint_every 1: each logged epoch was saved first
    assert resumed[: checkpointed - 1] == lines_before[: checkpointed - 1]
    rows = json.loads((out / "sweep_results.json").read_text())
    assert [r["status"] for r in rows] == ["done", "done"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == [first.name, second.name]


def test_a_different_sweep_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.yaml").write_text(
        yaml.safe_dump(_spec({"seed": {"grid": [0, 1]}}).to_dict(), sort_keys=False)
    )
    with pytest.raises(SweepError, match="different sweep"):
        run_sweep(_spec({"seed": {"grid": [0, 2]}}), out)
    assert not ray.is_initialized()


def test_a_rerun_may_change_what_resumed_searches_may_change(tmp_path):
    out = tmp_path / "sweep"
    spec = _spec({"seed": {"grid": [0, 1]}})
    _prepare_folder(spec, out, None)
    moved = _spec(
        {"seed": {"grid": [0, 1]}},
        device="auto",
        output={"tensorboard": False},
        data=TINY["data"] | {"root": "/elsewhere"},  # e.g. a job's fresh working directory
    )
    assert _prepare_folder(moved, out, None) is False  # accepted; nothing to restore yet
    with pytest.raises(SweepError, match=r"cost.ratio=1.0 there, 2.0 here"):
        _prepare_folder(_spec({"seed": {"grid": [0, 1]}}, cost={"ratio": 2.0}), out, None)
    with pytest.raises(SweepError, match=r"sweep.seed=\{'grid': \[0, 1\]\} there, .*\[0, 2\]"):
        _prepare_folder(_spec({"seed": {"grid": [0, 2]}}), out, None)
    with pytest.raises(SweepError, match="no sweep to continue"):
        _prepare_folder(spec, out, True)  # sweep.yaml alone is not a Tune experiment


def test_early_stopping_is_opt_in_and_counts_epochs():
    assert _scheduler(_spec({"seed": {"grid": [0]}})) is None  # FIFO
    asha = _scheduler(
        _spec(
            {"seed": {"grid": [0]}},
            {"early_stopping": True, "grace_epochs": 3},
            search={"epochs": 10},
        )
    )
    assert isinstance(asha, ASHAScheduler)
    assert asha._max_t == 11  # 10 epoch reports + the final one
    assert asha.metric == "val_acc" and asha._reduction_factor == 3.0


def test_early_stopping_stops_trials_without_failing_the_sweep(tmp_path):
    spec = _spec(
        {"seed": {"grid": [0, 1, 2, 3]}},
        {"early_stopping": True, "grace_epochs": 1, "reduction_factor": 2},
        search=TINY["search"] | {"epochs": 3},
    )
    rows = run_sweep(spec, tmp_path / "sweep")  # stopped trials are not an error here
    statuses = [r["status"] for r in rows]
    # Which trials ASHA stops depends on the order their results arrive; none may error.
    assert set(statuses) <= {"done", "stopped"} and "done" in statuses
    for row in rows:
        run = Path(row["run_dir"])  # named like finished ones, for humans and the collector
        assert run.name.startswith(f"{rows.index(row):03d}-seed=")
        assert (run / "result.json").is_file() == (row["status"] == "done")
    board = collect(tmp_path / "sweep")
    assert len(board.rows) == statuses.count("done")


def _sweep_command(tmp_path: Path, tree: dict) -> tuple[list[str], dict[str, str], Path]:
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(tree, sort_keys=False))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "snas_ray", "sweep", "--config", str(config)]
    command += ["--out", str(out), "--no-collect"]
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths
    env = os.environ | {"RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    return command, env, out


@pytest.mark.slow
def test_ctrl_c_with_trials_pending_then_rerun_runs_every_trial_once(tmp_path):
    tree = TINY | {
        "search": TINY["search"] | {"epochs": 3},
        "data": TINY["data"] | {"image_size": 16, "limit": 48},
        "sweep": {"cost.resource_lambda": {"grid": [0, 0.05]}},
        "tune": {"max_concurrent_trials": 1},
    }
    command, env, out = _sweep_command(tmp_path, tree)
    first, second = out / "runs" / "000-lambda=0", out / "runs" / "001-lambda=0.05"
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        metrics = first / "metrics.jsonl"
        # The first trial has logged an epoch; the second waits for its slot.
        while not (metrics.is_file() and metrics.read_text().strip()):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"sweep ended or stalled before its first epoch: {proc.stderr.read()}")
            time.sleep(0.05)
        assert not second.exists()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
        _, stderr = proc.communicate(timeout=120)
    finally:
        kill_session(proc.pid)
    assert proc.returncode != 0
    assert "Traceback" not in stderr and "Tuner.restore" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("snas-ray: ") and "run the same command again" in last, last
    rows = json.loads((out / "sweep_results.json").read_text())
    assert [r["trial"] for r in rows] == [0, 1], stderr[-2000:]
    assert rows[0]["status"] in ("stopped", "error", "done") and rows[1]["status"] == "pending"

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _epochs(first) == _epochs(second) == [1, 2, 3]
    rows = json.loads((out / "sweep_results.json").read_text())
    assert [(r["trial"], r["status"]) for r in rows] == [(0, "done"), (1, "done")]
    assert sorted(p.name for p in (out / "runs").iterdir()) == [first.name, second.name]
