"""A first day on a real cluster, without starting one: the sweep's start line, the driver
resource, the CPU line for device auto, storage paths, the job API's token and path rule."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import ray

from snas_ray.cli import main
from snas_ray.config import ExperimentConfig
from snas_ray.distributed import LaunchOptions, launch
from snas_ray.distributed.launch import absolute_storage, fit
from snas_ray.distributed.submit import auth_headers
from snas_ray.distributed.sweep_plan import (
    DRIVER_RESOURCE,
    concurrency_line,
    driver_resources,
    identical_trials,
    repeats_warning,
)
from snas_ray.errors import SnasRayError
from snas_ray.layout import RunPaths
from snas_ray.sweep_spec import load_sweep, sweep_from_dict

ROOT = Path(__file__).parents[2]
launch_module = sys.modules["snas_ray.distributed.launch"]  # the package exports launch()
BASE = {"device": "cpu", "data": {"name": "synthetic"}}


def _spec(sweep: dict, tune: dict | None = None, **base) -> object:
    return sweep_from_dict(BASE | base | {"sweep": sweep, "tune": tune or {}})


@pytest.mark.parametrize(
    ("config", "trials", "repeats"),
    [
        ("digits-sweep.yaml", 6, 2),
        ("cifar10-sweep.yaml", 30, 4),
        ("cifar10-budget-sweep.yaml", 3, 0),
    ],
)
def test_lambda_zero_repeats_in_the_ready_sweeps(config, trials, repeats):
    spec = load_sweep(ROOT / "experiments" / config, [])
    assert (spec.num_trials, identical_trials(spec)) == (trials, repeats)
    warning = repeats_warning(spec)
    assert (warning is None) == (repeats == 0)
    if warning:
        assert f"{repeats} of {trials} trials repeat" in warning and "cost.estimator" in warning


def test_repeats_need_lambda_zero_no_budget_and_only_penalty_keys_differing():
    est = {"grid": ["reparametrization", "discrete"]}
    assert identical_trials(_spec({"cost.estimator": est})) == 1
    assert identical_trials(_spec({"cost.estimator": est, "seed": {"grid": [0, 1]}})) == 2
    assert identical_trials(_spec({"cost.estimator": est}, cost={"resource_lambda": 1e-3})) == 0
    assert identical_trials(_spec({"cost.estimator": est}, cost={"budget": 1e4})) == 0
    # A key drawn at random makes every trial its own search.
    drawn = {"cost.estimator": est, "optim.arch_lr": {"uniform": [1e-4, 1e-3]}}
    assert identical_trials(_spec(drawn)) == 0


def test_the_concurrency_line_says_what_runs_now():
    digits = load_sweep(ROOT / "experiments" / "digits-sweep.yaml", [])
    line = concurrency_line(digits, {"CPU": 2.0}, limit=6)
    assert line.startswith("2 at a time on the cluster's 2 CPU now (1 CPU per trial)")
    assert "the other 4 wait in Tune's queue" in line
    gpu = _spec({"seed": {"grid": list(range(4))}}, {"gpus_per_worker": 1})
    assert concurrency_line(gpu, {"CPU": 16.0, "GPU": 0.0}, limit=4).startswith("0 at a time")
    assert "wait" not in concurrency_line(gpu, {"CPU": 16.0, "GPU": 8.0}, limit=4)


def test_nested_drivers_take_the_driver_resource_where_the_cluster_has_it():
    nested = _spec({"seed": {"grid": [0, 1]}}, {"workers_per_trial": 2})
    assert driver_resources(nested, {"CPU": 8.0}) == {"cpu": 0.01}
    assert driver_resources(nested, {"CPU": 8.0, DRIVER_RESOURCE: 1000.0}) == {
        "cpu": 0.01,
        DRIVER_RESOURCE: 1.0,
    }
    one = _spec({"seed": {"grid": [0, 1]}}, {"gpus_per_worker": 1})
    assert driver_resources(one, {DRIVER_RESOURCE: 1000.0}) == {"cpu": 1.0, "gpu": 1.0}


def test_device_auto_on_a_cluster_without_gpus_says_it_trains_on_cpu(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    seen = {}

    class Trainer:  # records the scaling config instead of starting workers
        def __init__(self, *args, scaling_config, **kwargs):
            seen["gpu"] = scaling_config.use_gpu

        def fit(self):
            raise SnasRayError("stop here")

    monkeypatch.setattr(launch_module, "TorchTrainer", Trainer)
    caplog.set_level(logging.WARNING, logger="snas_ray")
    cfg = ExperimentConfig().replace(**{"data.root": str(tmp_path)})
    options = LaunchOptions(workers=4, address="10.0.0.1:6379")
    with pytest.raises(SnasRayError, match="stop here"):
        fit(cfg, RunPaths(tmp_path), options)
    assert seen["gpu"] is False
    (line,) = [r.message for r in caplog.records]
    assert "no GPU now" in line and "train on CPU" in line and "--gpus-per-worker 1" in line
    caplog.clear()
    with pytest.raises(SnasRayError, match="stop here"):  # a local cluster: no line
        fit(cfg, RunPaths(tmp_path), LaunchOptions(workers=4))
    assert not caplog.records


def test_fit_and_launch_resolve_relative_paths_against_the_working_directory(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.chdir(tmp_path)

    class Trainer:  # records the worker config instead of starting workers
        def __init__(self, *args, train_loop_config, **kwargs):
            seen["fit"] = train_loop_config["experiment"]

        def fit(self):
            raise SnasRayError("stop here")

    monkeypatch.setattr(launch_module, "TorchTrainer", Trainer)
    with pytest.raises(SnasRayError, match="stop here"):
        fit(ExperimentConfig(device="cpu"), RunPaths(tmp_path), LaunchOptions())
    assert seen["fit"]["data"]["root"] == str(tmp_path / "data")

    monkeypatch.setattr(launch_module, "connect", lambda address: False)
    monkeypatch.setattr(launch_module, "fit", lambda cfg, *a, **k: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(launch_module, "fetch_result", lambda *a: {})
    cfg = ExperimentConfig().replace(**{"train.genotype": "g/genotype.json"})
    launch("retrain", cfg, "out", LaunchOptions(storage="ckpt"))
    assert seen["cfg"].data.root == str(tmp_path / "data")
    assert seen["cfg"].train.genotype == str(tmp_path / "g" / "genotype.json")


def test_storage_is_made_absolute_unless_it_is_a_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_storage("ray") == str(tmp_path / "ray")
    assert absolute_storage("s3://bucket/prefix") == "s3://bucket/prefix"
    assert absolute_storage(None) is None


def test_the_token_goes_in_a_header_through_the_public_sdk(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert auth_headers() == {}  # no token anywhere: nothing to send
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    assert auth_headers() == {"Authorization": "Bearer from-file"}
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "other"))
    (tmp_path / "other").write_text("from-path")
    assert auth_headers() == {"Authorization": "Bearer from-path"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_headers() == {}
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / "other").unlink()
    with pytest.raises(SnasRayError, match="no token found"):
        auth_headers()


def test_submit_source_has_no_private_ray_import():
    text = (ROOT / "snas_ray" / "distributed" / "submit.py").read_text()
    assert "ray._private" not in text


@pytest.mark.parametrize(
    ("job", "text"),
    [
        (["search", "--out", "/s/x", "--storage", "ray"], "absolute --storage"),
        (["train", "--genotype", "runs/a/genotype.json", "--out", "/s/x"], "under runs/"),
        (["train", "--genotype", "nowhere/g.json", "--out", "/s/x"], "is not in --working-dir"),
        (["search", "--config", "missing.yaml", "--out", "/s/x"], "--config missing.yaml"),
        (["train", "--test", "--checkpoint", "runs/x"], "under runs/"),
        (["collect", "runs/sweep"], "SWEEP_DIR runs/sweep is relative and under runs/"),
        (
            ["train", "--config", "experiments/imagenet-train.yaml", "--out", "/s/x"],
            "data.root data/imagenet is relative and under data/",
        ),
    ],
)
def test_submit_refuses_paths_the_job_cannot_see(job, text, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["submit", "--address", "http://127.0.0.1:9", "--", *job]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snas-ray: error: submit") and text in err and "\n" not in err


def test_submit_accepts_paths_inside_the_upload_and_absolute_ones(monkeypatch, tmp_path):
    import snas_ray.distributed.submit as submit_module

    sent = []
    monkeypatch.setattr(submit_module, "submit", lambda job, **kw: sent.append(job) or "id")
    monkeypatch.chdir(ROOT)
    jobs = [
        ["sweep", "--config", "experiments/cifar10-sweep.yaml", "--out", "/s/x"],  # download
        ["train", "--genotype", str(tmp_path / "g.json"), "--out", "/s/x"],
        [
            "search",
            "--config",
            "experiments/digits-search.yaml",
            "--out",
            "/s/x",
            "--storage",
            "s3://b/p",
        ],
    ]
    for job in jobs:
        assert main(["submit", "--address", "http://127.0.0.1:9", "--no-wait", "--", *job]) == 0
    assert sent == jobs
