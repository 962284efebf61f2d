"""Ray Train retraining: two gloo workers write the same run folder as an in-process run."""

from __future__ import annotations

import json
import os

import pytest
from conftest import tiny_cfg

from snas_ray.retrain import run_retrain

ray = pytest.importorskip("ray")

from snas_ray.distributed import LaunchOptions, run_distributed_retrain  # noqa: E402

_TINY = (
    "train.genotype=SNAS_mild_edge_all",
    "train.layers=3",
    "train.init_channels=4",
    "train.epochs=2",
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.log_every=1000",
    "train.drop_path_prob=0.2",
)


@pytest.mark.ray
def test_two_gloo_workers_retrain_with_the_in_process_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg = tiny_cfg(*_TINY)
    local = run_retrain(cfg, tmp_path / "local")
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2)
    try:
        remote = run_distributed_retrain(cfg, tmp_path / "ray", LaunchOptions(workers=2))
    finally:
        ray.shutdown()
    assert remote.keys() == local.keys()
    assert remote["epochs_done"] == 2 and 0 <= remote["test_acc"] <= 1
    assert remote["params"] == local["params"]
    lines = (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    local_lines = (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[0].keys() == json.loads(local_lines[0]).keys()
    assert os.path.isfile(tmp_path / "ray" / "checkpoints" / "last.pt")
