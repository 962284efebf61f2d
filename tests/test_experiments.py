"""Every shipped experiment config loads, validates and builds its supernet."""

from __future__ import annotations

from pathlib import Path

import pytest

from snas_ray.config import load_config
from snas_ray.evaluate_spec import load_evaluate
from snas_ray.space.supernet import Supernet
from snas_ray.sweep_spec import load_sweep

CONFIGS = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"digits-search.yaml", "cifar10-search-8cell.yaml", "digits-sweep.yaml"} <= names


def test_digits_sweep_is_two_lambdas_by_three_estimators():
    spec = load_sweep(CONFIGS[0].parent / "digits-sweep.yaml")
    points = spec.grid_points()
    assert spec.num_trials == len(points) == 6
    assert {p["cost.resource_lambda"] for p in points} == {0.0, 1e-2}
    assert {p["cost.estimator"] for p in points} == {
        "reparametrization",
        "discrete",
        "policy_gradient",
    }
    assert spec.base.data.name == "digits" and spec.options.early_stopping is False


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path):
    if "sweep" in path.name:
        spec = load_sweep(path)
        assert spec.num_trials >= 2
        cfg = spec.base
    elif "evaluate" in path.name:
        cfg = load_evaluate(path).base
    else:
        cfg = load_config(path)
    net = Supernet(cfg.space, num_classes=10, image_size=8 if cfg.data.name == "digits" else 32)
    assert len(net.cells) == cfg.space.layers


def test_digits_budget_sweep_is_three_budgets_of_the_demo_search():
    spec = load_sweep(CONFIGS[0].parent / "digits-budget-sweep.yaml")
    budgets = sorted(p["cost.budget"] for p in spec.grid_points())
    assert len(budgets) == 3 and budgets[0] < budgets[1] < budgets[2]
    demo = load_config(CONFIGS[0].parent / "digits-search.yaml")
    assert spec.base.space == demo.space and spec.base.optim == demo.optim
    assert spec.base.search.epochs == demo.search.epochs
