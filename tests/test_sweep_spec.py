"""Sweep configs: what varies, validated before Ray starts (no Ray here)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import yaml

from snas_ray.cli import main
from snas_ray.config import load_config
from snas_ray.errors import ConfigError
from snas_ray.sweep_spec import (
    SweepOptions,
    load_sweep,
    progress_metrics,
    sweep_from_dict,
    trial_dirname,
)

BASE = {"device": "cpu", "data": {"name": "synthetic"}}


def _write(tmp_path, tree):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_grid_is_crossed_and_each_trial_gets_its_values(tmp_path):
    tree = BASE | {
        "sweep": {
            "cost.resource_lambda": {"grid": [0, "1e-3", 1e-2]},
            "cost.estimator": {"grid": ["discrete", "policy_gradient"]},
            "seed": {"grid": [0, 1]},
        },
        "tune": {"cpus_per_worker": 2},
    }
    spec = load_sweep(_write(tmp_path, tree))
    assert spec.num_trials == 12 and spec.num_samples == 1
    assert spec.params[0].values == (0.0, 1e-3, 1e-2)  # YAML's "1e-3" string read as a number
    cfg = spec.trial_config({"cost.resource_lambda": 1e-3, "cost.estimator": "discrete", "seed": 1})
    assert (cfg.cost.resource_lambda, cfg.cost.estimator, cfg.seed) == (1e-3, "discrete", 1)
    assert cfg.device == "cpu" and cfg.data.name == "synthetic"
    assert spec.options == SweepOptions(cpus_per_worker=2.0)


def test_random_keys_repeat_the_grid_and_round_trip(tmp_path):
    tree = BASE | {
        "sweep": {
            "cost.resource_lambda": {"loguniform": [1e-4, 1e-1], "samples": 4},
            "cost.estimator": {"grid": ["discrete", "reparametrization"]},
            "optim.arch_lr": {"choice": [1e-3, 3e-3], "samples": 4},
        }
    }
    spec = load_sweep(_write(tmp_path, tree))
    assert spec.num_samples == 4 and spec.num_trials == 8
    again = sweep_from_dict(spec.to_dict())
    assert again == spec and again.identity() == spec.identity()


def test_overrides_reach_base_sweep_and_tune(tmp_path):
    tree = BASE | {"sweep": {"cost.resource_lambda": {"grid": [0, 1]}}}
    spec = load_sweep(
        _write(tmp_path, tree),
        [
            "search.epochs=3",
            "sweep.seed={grid: [4, 5, 6]}",
            "tune.max_concurrent_trials=2",
        ],
    )
    assert spec.base.search.epochs == 3
    assert spec.num_trials == 6
    assert spec.options.max_concurrent_trials == 2


@pytest.mark.parametrize(
    ("sweep", "tune", "field", "text"),
    [
        ({"cost.resource_lambda": {"grid": [0, -1e-3]}}, {}, "sweep.cost.resource_lambda", ">= 0"),
        ({"cost.estimator": {"grid": ["reinforce"]}}, {}, "sweep.cost.estimator", "allowed"),
        ({"cost.estimatr": {"grid": ["discrete"]}}, {}, "sweep.cost.estimatr", "did you mean"),
        ({"cost.resource_lambda": [0, 1e-3]}, {}, "sweep.cost.resource_lambda", "grid"),
        ({"cost.resource_lambda": {"grid": []}}, {}, "sweep.cost.resource_lambda.grid", "empty"),
        ({"cost.resource_lambda": {"gird": [0]}}, {}, "sweep.cost.resource_lambda", "gird"),
        ({"cost.resource_lambda": {"loguniform": [0, 1]}}, {}, "loguniform", "low > 0"),
        ({"cost.resource_lambda": {"grid": [0], "samples": 2}}, {}, ".samples", "random"),
        ({"seed": {"grid": [0]}}, {"cpus_per_wrker": 1}, "tune.cpus_per_wrker", "did you mean"),
        ({"seed": {"grid": [0]}}, {"workers_per_trial": 0}, "tune.workers_per_trial", "[1, 1024]"),
        ({"seed": {"grid": [0]}}, {"cpus_per_worker": 1e9}, "tune.cpus_per_worker", "(0, 1024]"),
        ({"optim.lr": {"uniform": [0.1, 1], "samples": 10**9}}, {}, ".samples", "10000"),
        (
            {"seed": {"grid": list(range(200))}, "data.split_seed": {"grid": list(range(60))}},
            {},
            "sweep",
            "12000 trials",
        ),
        (
            {"seed": {"grid": [0]}},
            {"workers_per_trial": 2, "gpus_per_worker": 0.5},
            "tune.gpus_per_worker",
            "whole GPUs",
        ),
        ({}, {}, "sweep", "nothing to vary"),
        (
            {"seed": {"choice": [0, 1], "samples": 2}, "optim.lr": {"uniform": [0.1, 1]}},
            {},
            "sweep",
            "one samples value",
        ),
    ],
)
def test_bad_sweeps_name_the_field(tmp_path, sweep, tune, field, text):
    with pytest.raises(ConfigError) as info:
        load_sweep(_write(tmp_path, BASE | {"sweep": sweep, "tune": tune}))
    message = str(info.value)
    assert field in message and text in message
    assert "\n" not in message


def test_search_refuses_a_sweep_config(tmp_path):
    path = _write(tmp_path, BASE | {"sweep": {"seed": {"grid": [0, 1]}}})
    with pytest.raises(ConfigError, match="snas-ray sweep"):
        load_config(path)


def test_cli_reports_a_bad_sweep_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, BASE | {"sweep": {"cost.resource_lambda": {"grid": [-1]}}})
    assert main(["sweep", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snas-ray: error:") and "sweep.cost.resource_lambda" in err
    assert "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing started


def test_config_errors_survive_copy_and_pickle():
    # Ray copies and pickles exceptions raised inside trials and workers.
    error = ConfigError("cost.estimator", "unknown value 'x'")
    for clone in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert str(clone) == str(error) and clone.field_name == "cost.estimator"


def test_trial_folder_names_say_the_settings():
    name = trial_dirname(3, {"cost.resource_lambda": 1e-3, "cost.estimator": "discrete", "seed": 1})
    assert name == "003-lambda=0.001-est=discrete-seed=1"
    assert "/" not in trial_dirname(0, {"data.root": "/a/b"})


def test_progress_metrics_are_flat_numbers_from_a_record():
    spec = sweep_from_dict(BASE | {"sweep": {"cost.resource_lambda": {"grid": [0.5]}}})
    cfg = spec.trial_config({"cost.resource_lambda": 0.5})
    record = {"val/acc_child": 0.7, "val/acc_relaxed": 0.8, "child/expected_params": 12.0}
    metrics = progress_metrics(cfg, record, 4)
    assert metrics["epoch"] == 4 and metrics["val_acc"] == 0.7
    assert metrics["expected_params"] == 12.0 and metrics["resource_lambda"] == 0.5


@pytest.mark.parametrize(
    ("job", "text"),
    [
        (["--", "bench"], "one of: search, sweep, evaluate, train, collect"),
        (["--", "sweep", "--config", "experiments/digits-sweep.yaml"], "absolute --out"),
        (["--", "search", "--out", "runs/x"], "absolute --out"),
        (
            [
                "--",
                "sweep",
                "--config",
                "experiments/digits-sweep.yaml",
                "--out",
                "/mnt/s",
                "--set",
                "tune.cpus_per_wrker=2",
            ],
            "tune.cpus_per_wrker",
        ),
    ],
)
def test_submit_checks_the_job_before_contacting_a_cluster(job, text, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    address = "http://127.0.0.1:9"  # nothing listens there; never reached
    assert main(["submit", "--address", address, *job]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snas-ray: error:") and text in err and "\n" not in err
