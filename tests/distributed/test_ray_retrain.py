"""Ray Train retraining: two gloo workers write the in-process layout and resume exactly."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import tiny_cfg
from resume_check import check_resume, records

from snas_ray.engine.checkpoint import load_checkpoint
from snas_ray.retrain import run_retrain

ray = pytest.importorskip("ray")

from snas_ray.distributed import run_name  # noqa: E402

_TINY = (
    "train.genotype=SNAS_mild_edge_all",
    "train.layers=3",
    "train.init_channels=4",
    "train.epochs=3",
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.log_every=1000",
    "train.drop_path_prob=0.3",
)

_ENV = {
    "RAY_AUTH_MODE": "disabled",  # no ~/.ray/auth_token in tests (ray-notes §5)
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",  # notice failed workers and checkpoints quickly
}


@pytest.fixture(scope="module")
def ray_cluster():
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)  # before init: Ray's processes inherit the driver's environment
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=True,  # Train's placement-group cleaner polls the State API
    )
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.ray
def test_two_gloo_workers_retrain_resume_exactly_with_every_ranks_random_state(
    ray_cluster, tmp_path
):
    cfg = tiny_cfg(*_TINY)
    # Stopped at the start of epoch 2 of 3 (epoch 1 draws drop-path masks on every rank),
    # then launched again into the same folder.
    runs = check_resume("retrain", cfg, tmp_path / "ray", workers=2, stop_at=2)

    # Every rank's random stream is in the checkpoint, each rank's its own, and the resumed
    # run's final streams are the uninterrupted run's (check_resume: also at epoch 2's start).
    ranks = load_checkpoint(runs.split / "checkpoints" / "last.pt")["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["cpu"], ranks[1]["cpu"])
    final = sorted((runs.split / "ray" / run_name(runs.split)).glob("epoch=*/state.pt"))
    assert final[-1].parent.name == "epoch=0003"  # after the 3rd epoch (1-based)
    assert all(
        torch.equal(a["cpu"], b["cpu"])
        for a, b in zip(ranks, load_checkpoint(final[-1])["rng_ranks"], strict=True)
    )

    # The run folder has the in-process layout.
    local = run_retrain(cfg, tmp_path / "local")
    remote = runs.resumed_result
    assert remote.keys() == local.keys()
    assert remote["epochs_done"] == 3 and 0 <= remote["test_acc"] <= 1
    assert remote["params"] == local["params"]
    assert [r["epoch"] for r in records(runs.split)] == [1, 2, 3]
    assert records(runs.split)[0].keys() == records(tmp_path / "local")[0].keys()
    assert json.loads((runs.split / "result.json").read_text()) == remote
