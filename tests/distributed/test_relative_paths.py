"""``train --workers 2`` with a relative genotype file and a relative data root, through Ray on
CPU: Train runs its workers in the run's own folder, so only paths the driver resolved are found.

CIFAR-10 (the test's tiny copy in the real on-disk format) rather than digits, because digits
ships inside scikit-learn and never reads ``data.root``: a root left relative would go unnoticed.
"""

from __future__ import annotations

import json
import os

import pytest
import ray
import yaml
from cifar_files import write_cifar10

from snas_ray.cli import main
from snas_ray.genotype import save_genotype
from snas_ray.published import get_genotype

CONFIG = {
    "seed": 0,
    "device": "cpu",
    "train": {
        "layers": 3,
        "init_channels": 4,
        "epochs": 2,
        "batch_size": 8,
        "eval_batch_size": 16,
        "log_every": 1000,
        "auxiliary": False,
    },
    "data": {"name": "cifar10", "root": "cifar", "download": False, "augment": False},
    "output": {"tensorboard": False},
}


@pytest.mark.slow
@pytest.mark.ray
def test_train_on_two_workers_finds_relative_genotype_and_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    write_cifar10(tmp_path / "cifar", n_train=32, n_test=16)
    save_genotype(get_genotype("SNAS_mild"), tmp_path / "found" / "genotype.json")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(CONFIG))
    argv = ["train", "--config", "train.yaml", "--genotype", "found/genotype.json"]
    argv += ["--workers", "2", "--out", "run", "--storage", "ckpt"]
    try:
        assert main(argv) == 0
    finally:
        if ray.is_initialized():  # launch shuts down the cluster it started; never leave one
            ray.shutdown()
    assert not ray.is_initialized()
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["epochs_done"] == 2 and 0 <= result["test_acc"] <= 1
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["root"] == str(tmp_path / "cifar")
    assert saved["train"]["genotype"] == str(tmp_path / "found" / "genotype.json")
    # --storage was relative too: the checkpoints are where the driver meant.
    assert any((tmp_path / "ckpt").rglob("state.pt"))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert os.getcwd() == str(tmp_path)
