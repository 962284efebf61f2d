"""Real learning on real data (scikit-learn's digits): the search learns, lambda buys cheaper cells."""

from __future__ import annotations

import json

import pytest

from snas_ray.config import ExperimentConfig, apply_overrides
from snas_ray.runfolder import run_search

DIGITS = [
    "device=cpu",
    "data.name=digits",
    "data.image_size=8",
    "space.layers=3",
    "space.init_channels=8",
    "space.drop_path_prob=0",
    "search.batch_size=64",
    "search.epochs=4",
    "search.log_every=1000",
    "optim.lr=0.05",
    "optim.arch_lr=3e-3",
    "output.tensorboard=false",
]


def _search(tmp_path, name, *extra):
    cfg = apply_overrides(ExperimentConfig(), DIGITS + list(extra))
    result = run_search(cfg, tmp_path / name)
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return result, [json.loads(line) for line in lines]


@pytest.mark.slow
def test_digits_search_learns_and_lambda_makes_the_child_cheaper(tmp_path):
    free, history = _search(tmp_path, "free", "cost.resource_lambda=0")
    losses = [r["train/loss_task"] for r in history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert free["val_acc"] > 0.5, free  # 10 classes: chance is 0.1
    assert history[-1]["val/acc_relaxed"] > 0.5

    cheap, history_cheap = _search(tmp_path, "cheap", "cost.resource_lambda=0.5")
    assert cheap["params"] < 0.7 * free["params"], (cheap["params"], free["params"])
    assert history_cheap[-1]["cost/expected_size"] < history[-1]["cost/expected_size"]
