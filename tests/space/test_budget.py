"""The lambda controller: up when over budget, down when under, always positive and finite."""

from __future__ import annotations

import math

import torch

from snas_ray.space.budget import LAMBDA_RANGE, LAMBDA_START, LambdaController


def _controller(**kw):
    args = {"start": 1e-3, "gain": 2.0, "steps_per_epoch": 10} | kw
    return LambdaController(1000.0, **args)


def test_lambda_rises_over_budget_and_falls_under_it():
    c = _controller()
    start = float(c.value)
    for _ in range(5):
        c.update(torch.tensor(1500.0))
    over = float(c.value)
    assert over > start
    for _ in range(5):
        c.update(torch.tensor(500.0))
    assert float(c.value) < over
    # A step moves ln(lambda) by at most gain / steps_per_epoch, however far off the cost is.
    before = float(c.log_lambda)
    c.update(torch.tensor(1e12))
    assert math.isclose(float(c.log_lambda) - before, 0.2, rel_tol=1e-9)
    # At the budget lambda holds.
    before = float(c.log_lambda)
    c.update(torch.tensor(1000.0))
    assert float(c.log_lambda) == before


def test_lambda_stays_positive_and_finite():
    c = _controller(gain=50.0)
    for cost in [0.0, -5.0, float("nan"), 1e-30] * 50:
        c.update(torch.tensor(cost))
        assert 0 < float(c.value) < math.inf
    assert math.isclose(float(c.value), LAMBDA_RANGE[0], rel_tol=1e-5)
    for _ in range(200):
        c.update(torch.tensor(float("inf")))
    assert math.isclose(float(c.value), LAMBDA_RANGE[1], rel_tol=1e-5)


def test_zero_start_uses_the_documented_start_and_state_round_trips():
    c = _controller(start=0.0)
    assert math.isclose(float(c.value), LAMBDA_START, rel_tol=1e-6)
    c.update(torch.tensor(3000.0))
    copy = _controller(start=0.5)
    copy.load_state_dict(c.state_dict())
    assert float(copy.log_lambda) == float(c.log_lambda)
    for cost in (900.0, 1200.0, 700.0):
        c.update(torch.tensor(cost))
        copy.update(torch.tensor(cost))
    assert float(copy.log_lambda) == float(c.log_lambda)
