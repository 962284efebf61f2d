"""Honest evaluation: the plan (front, cost-matched draws, notes) and a Ray Tune evaluation
whose driver is killed mid-run and then continued by running the same command again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
import yaml
from ray_procs import kill_session
from run_folders import make_run

from snas_ray.cli import main
from snas_ray.distributed.evaluate import prepare_evaluation
from snas_ray.distributed.evaluate_plan import make_plan
from snas_ray.errors import EvaluationError
from snas_ray.evaluate_spec import evaluate_from_dict
from snas_ray.results import collect

ROOT = Path(__file__).parents[2]

# A retraining small enough for seconds: 3 cells of width 4 on 16x16 synthetic images.
TINY = {
    "seed": 0,
    "device": "cpu",
    "train": {
        "init_channels": 4,
        "layers": 3,
        "epochs": 5,
        "batch_size": 8,
        "eval_batch_size": 16,
        "auxiliary": False,
        "log_every": 1000,
    },
    "data": {"name": "synthetic", "image_size": 16, "synthetic_size": 64, "limit": 48},
    "output": {"tensorboard": False},
}


def _sweep(root: Path) -> Path:
    make_run(root / "runs", "a", acc=0.90, params=300, genotype="SNAS_mild")
    make_run(root / "runs", "b", acc=0.80, params=200, genotype="DARTS_V2", lam=1e-2)
    make_run(root / "runs", "c", acc=0.70, params=100, genotype="DARTS_V2", lam=1e-2, seed=1)
    make_run(root / "runs", "off", acc=0.60, params=500, genotype="DARTS_V1")
    return root


def _spec(**evaluate):
    return evaluate_from_dict(TINY | {"evaluate": {"random": 2, "seeds": 2} | evaluate})


def test_plan_takes_the_front_matches_costs_and_repeats(tmp_path):
    sweep = _sweep(tmp_path)
    plan = make_plan(sweep, _spec())
    names = [(c.name, c.source, c.matched_to) for c in plan.candidates]
    assert names == [
        ("search-1", "search", None),
        ("random-1a", "random", "search-1"),
        ("random-1b", "random", "search-1"),
        ("search-2", "search", None),
        ("random-2a", "random", "search-2"),
        ("random-2b", "random", "search-2"),
    ]
    s1, s2 = plan.candidates[0], plan.candidates[3]
    assert (s1.search_run, s2.search_run) == ("runs/a", "runs/b")  # most accurate first
    assert s2.also_found_by == ("runs/c",)  # the same genotype is retrained once
    for c in plan.candidates[1:3]:
        assert abs(c.cost["params"] / s1.cost["params"] - 1) <= 0.1 and c.form == "top2"
    assert plan.seeds == (0, 1) and len(plan.runs()) == 12
    assert make_plan(sweep, _spec()) == plan  # seeded: a re-run plans the same draws
    assert make_plan(sweep, _spec(draw_seed=1)) != plan


def test_plan_says_when_the_front_is_smaller_than_asked(tmp_path):
    plan = make_plan(_sweep(tmp_path), _spec(top=5, random=0))
    assert plan.notes == (
        "the Pareto front has 2 distinct genotype(s), fewer than the 5 asked for: retraining 2",
    )
    assert [c.name for c in plan.candidates] == ["search-1", "search-2"]


def test_no_match_names_the_genotype(tmp_path):
    sweep = _sweep(tmp_path)
    with pytest.raises(EvaluationError) as info:
        make_plan(sweep, _spec(tolerance=0.001, max_tries=3, random=30))
    message = str(info.value)
    assert message.startswith("no cost-matched random genotype for search-1 (runs/a, ")
    assert "widen evaluate.tolerance" in message and "\n" not in message


@pytest.mark.slow
@pytest.mark.ray
def test_killed_evaluation_resumes_without_retraining_finished_runs(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "runs", "a", acc=0.90, params=300, genotype="SNAS_mild")
    config = tmp_path / "evaluate.yaml"
    tree = TINY | {"evaluate": {"random": 1, "seeds": 2}, "tune": {"max_concurrent_trials": 1}}
    config.write_text(yaml.safe_dump(tree, sort_keys=False))
    command = [sys.executable, "-m", "snas_ray", "evaluate", str(sweep), "--config", str(config)]
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths
    env = os.environ | {"RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    runs = sweep / "evaluate" / "runs"
    first, second = runs / "search-1-seed=0", runs / "search-1-seed=1"

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
            if (first / "result.json").is_file() and done and 1 <= done < 5:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"evaluation ended or stalled before the second run: {proc.stderr.read()}")
    finally:
        kill_session(proc.pid)
    finished = (first / "result.json").read_bytes()
    finished_mtime = (first / "result.json").stat().st_mtime_ns
    assert not (second / "result.json").exists()

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the evaluation" in again.stderr
    assert (first / "result.json").read_bytes() == finished  # not retrained
    assert (first / "result.json").stat().st_mtime_ns == finished_mtime
    epochs = [
        json.loads(line)["epoch"] for line in (second / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3, 4, 5]  # resumed from its checkpoint; no epoch twice
    records = json.loads((sweep / "evaluate" / "evaluation.json").read_text())
    assert sorted((r["name"], r["seed"]) for r in records) == [
        ("random-1a", 0),
        ("random-1a", 1),
        ("search-1", 0),
        ("search-1", 1),
    ]
    plan = json.loads((sweep / "evaluate" / "plan.json").read_text())
    for rec in records:  # the planned cost is what each retraining measured
        planned = next(c for c in plan["candidates"] if c["name"] == rec["name"])["cost"]
        assert {k: rec[k] for k in planned} == planned
    assert "overall: " in again.stdout and (sweep / "evaluate" / "evaluation.png").is_file()
    board = collect(sweep)  # the evaluation folder is not mistaken for broken searches
    assert [r.run for r in board.rows] == ["runs/a"] and not board.skipped
    assert board.rows[0].retrained.n == 2 and [g.name for g in board.baselines] == ["random-1a"]


def test_cli_errors_are_one_line_before_ray_starts(tmp_path, capsys):
    config = tmp_path / "evaluate.yaml"
    config.write_text(yaml.safe_dump(TINY | {"evaluate": {"tolerance": 2}}))
    assert main(["evaluate", str(tmp_path), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "snas-ray: error: config error: evaluate.tolerance: must be in (0, 1), e.g. 0.1 for +-10%"
    )
    config.write_text(yaml.safe_dump(TINY))
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty"), "--config", str(config), "--seeds", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("empty: no finished search run, so no front to evaluate")
    assert not ray.is_initialized()


def test_a_rerun_continues_only_the_same_evaluation(tmp_path):
    sweep, out = _sweep(tmp_path), tmp_path / "sweep" / "evaluate"
    spec = _spec(top=1)
    assert prepare_evaluation(spec, make_plan(sweep, spec), out, None) is False
    assert sorted(p.name for p in (out / "genotypes").iterdir()) == [
        "random-1a.json",
        "random-1b.json",
        "search-1.json",
    ]
    # Options that only choose or report the same genotypes may change.
    prepare_evaluation(_spec(top=1, confidence=0.9), make_plan(sweep, spec), out, None)
    longer = evaluate_from_dict({**TINY, "train": TINY["train"] | {"epochs": 9}})
    with pytest.raises(EvaluationError, match=r"train.epochs=5 there, 9 here"):
        prepare_evaluation(longer, make_plan(sweep, spec), out, None)
    more = _spec(top=1, seeds=3)
    with pytest.raises(EvaluationError, match="plan.json differs in seeds"):
        prepare_evaluation(more, make_plan(sweep, more), out, None)
    with pytest.raises(EvaluationError, match="no evaluation to continue"):
        prepare_evaluation(spec, make_plan(sweep, spec), out, True)
