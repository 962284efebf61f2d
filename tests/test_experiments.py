"""Every shipped experiment config loads, validates and builds its supernet."""

from __future__ import annotations

from pathlib import Path

import pytest

from snas_ray.config import load_config
from snas_ray.supernet import Supernet

CONFIGS = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"digits-search.yaml", "cifar10-search-8cell.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path):
    cfg = load_config(path)
    if "sweep" in path.name:
        return
    net = Supernet(cfg.space, num_classes=10, image_size=8 if cfg.data.name == "digits" else 32)
    assert len(net.cells) == cfg.space.layers
