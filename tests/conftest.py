"""Shared fixtures: tiny configs (2 cells, 4 channels, 8 images) that run in seconds on CPU."""

from __future__ import annotations

import os

import pytest
import torch

from snas_ray.config import ExperimentConfig, apply_overrides

# Keep tests deterministic and light on a 2-core machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def tiny_cfg(*overrides: str) -> ExperimentConfig:
    """A 3-cell (1 normal, 2 reduce), 4-channel search on 8 synthetic images, plus overrides."""
    base = [
        "seed=0",
        "device=cpu",
        "space.layers=3",  # cells 1 and 2 reduce, so both cell types exist
        "space.init_channels=4",
        "search.epochs=2",
        "search.batch_size=4",
        "search.eval_batch_size=8",
        "search.log_every=1000",
        "data.name=synthetic",
        "data.image_size=8",
        "data.synthetic_size=32",
        "data.limit=8",
        "output.tensorboard=false",
    ]
    return apply_overrides(ExperimentConfig(), base + list(overrides))


@pytest.fixture
def tiny() -> ExperimentConfig:
    return tiny_cfg()


# Lines a test wants in the CI log: `pytest -q` hides what passing tests print.
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for line in REPORT:
        terminalreporter.write_line(line)
