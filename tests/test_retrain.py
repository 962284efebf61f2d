"""Retraining a genotype: both forms step, drop-path ramps, resume is exact, ImageFolder, digits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_cfg
from PIL import Image
from resume_check import check_resume

from snas_ray import cli
from snas_ray.config import load_config
from snas_ray.engine.checkpoint import load_checkpoint
from snas_ray.engine.loop import NonFiniteError
from snas_ray.errors import ConfigError
from snas_ray.genotype import save_genotype
from snas_ray.published import get_genotype
from snas_ray.retrain import RetrainLoop, build_retrain, run_retrain

_TINY = (
    "train.layers=3",
    "train.init_channels=4",
    "train.epochs=3",
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.log_every=1000",
    "train.auxiliary=true",
    "train.drop_path_prob=0.3",
)


def tiny_train_cfg(*overrides: str):
    return tiny_cfg(*_TINY, *overrides)


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["SNAS_mild", "SNAS_mild_edge_all"])
def test_one_step_each_genotype_form(name):
    loop = build_retrain(tiny_train_cfg(), "cpu", genotype=get_genotype(name))
    before = _params(loop.net)
    x, y = next(iter(loop.train_loader))
    metrics = loop.step(x, y)
    assert np.isfinite(float(metrics["train/loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.net.parameters(), strict=True))
    loss, acc1, acc5 = loop.evaluate()
    assert np.isfinite(loss) and 0 <= acc1 <= acc5 <= 1


def _epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_drop_path_ramp_and_exact_resume(tmp_path):
    # Ctrl-C at the start of epoch 2 of 3 (epoch 1 draws drop-path masks), then the same
    # retraining into the same folder.
    runs = check_resume("retrain", tiny_train_cfg(), tmp_path, stop_at=2)
    records = _epochs(runs.whole)
    # Linear ramp p_e = drop_path_prob * e / epochs, set at the start of epoch e.
    assert [r["train/drop_path_prob"] for r in records] == pytest.approx([0.0, 0.1, 0.2])
    assert runs.resumed_result["epochs_done"] == 3


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    # From epoch 1 on every batch is NaN: the loss is NaN from epoch 1's first step.
    cfg = tiny_train_cfg("train.epochs=2")
    to_device = RetrainLoop.to_device

    def poisoned(self, x, y):
        x, y = to_device(self, x, y)
        return (torch.full_like(x, float("nan")) if self.epoch >= 1 else x), y

    monkeypatch.setattr(RetrainLoop, "to_device", poisoned)
    with pytest.raises(NonFiniteError, match=r"^epoch 2 step 1: train/loss.* is not finite"):
        run_retrain(cfg, tmp_path / "run")
    # Epoch 0's checkpoint and record are kept; nothing of epoch 1 was saved.
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert [r["epoch"] for r in _epochs(tmp_path / "run")] == [1]
    assert not (tmp_path / "run" / "result.json").exists()
    # The kept checkpoint resumes: with clean data the run finishes from epoch 1.
    monkeypatch.setattr(RetrainLoop, "to_device", to_device)
    assert run_retrain(cfg, tmp_path / "run")["epochs_done"] == 2
    assert [r["epoch"] for r in _epochs(tmp_path / "run")] == [1, 2]


def _write_image_folder(root: Path, per_class: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for k, cls in enumerate(("ants", "bees")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) // (k + 1)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagenet_network_trains_one_step_on_image_folder(tmp_path):
    _write_image_folder(tmp_path / "tiny-imagenet", {"train": 3, "val": 2})
    cfg = tiny_train_cfg(
        "data.name=imagenet",
        f"data.root={tmp_path / 'tiny-imagenet'}",
        "data.image_size=32",
        "data.val_on_test=true",
        "data.limit=0",
        "train.network=imagenet",
        "train.init_channels=8",
    )
    loop = build_retrain(cfg, "cpu", genotype=get_genotype("SNAS_moderate"))
    assert len(loop.train_loader.dataset) == 6 and len(loop.test_loader.dataset) == 4
    x, y = next(iter(loop.train_loader))
    assert x.shape[1:] == (3, 32, 32)
    before = _params(loop.net)
    assert np.isfinite(float(loop.step(x, y)["train/loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.net.parameters(), strict=True))
    assert loop.net.classifier.out_features == 2
    _, acc1, acc5 = loop.evaluate()
    assert acc5 == 1.0 and 0 <= acc1 <= 1  # top-5 of two classes always hits


def test_digits_from_genotype_json_well_above_chance_and_test_mode(tmp_path, capsys):
    save_genotype(get_genotype("SNAS_mild"), tmp_path / "genotype.json")  # as a search leaves it
    config = tmp_path / "digits.yaml"
    config.write_text(
        "device: cpu\n"
        "train: {init_channels: 6, layers: 3, epochs: 2, batch_size: 64, lr: 0.05,\n"
        "        auxiliary: false, drop_path_prob: 0.1, log_every: 1000}\n"
        "data: {name: digits, image_size: 8, val_on_test: true}\n"
        "output: {tensorboard: true}\n"
    )
    cfg = load_config(config).replace(**{"train.genotype": str(tmp_path / "genotype.json")})
    result = run_retrain(cfg, tmp_path / "run")
    assert result["test_acc"] > 0.6, result  # chance is 0.1
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["genotype"] == get_genotype("SNAS_mild").to_dict()
    assert saved["epochs_done"] == 2 and saved["params"] > 0 and saved["flops"] > 0
    assert any((tmp_path / "run" / "tb").iterdir())

    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    assert cli.main(["train", "--test", "--checkpoint", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert f"test top-1 {result['test_acc']:.4f}" in out
    assert json.loads(out.splitlines()[-1])["test_acc"] == pytest.approx(result["test_acc"])


@pytest.mark.slow
def test_a_bf16_retraining_learns_on_digits(tmp_path):
    sets = ["device=cpu", "data.name=digits", "data.image_size=8", "data.val_on_test=true"]
    sets += ["train.genotype=SNAS_mild", "train.init_channels=6", "train.layers=3"]
    sets += ["train.epochs=2", "train.batch_size=64", "train.lr=0.05", "train.auxiliary=false"]
    sets += ["train.precision=bf16", "train.log_every=1000", "output.tensorboard=false"]
    result = run_retrain(load_config(None, sets), tmp_path / "run")
    assert result["test_acc"] > 0.6, result  # chance is 0.1


def test_bad_genotype_name_is_one_line_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snas_ray", "train", "--genotype", "SNAS_mildd"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("snas-ray: error: unknown genotype 'SNAS_mildd'")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_train_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="train.network"):
        tiny_train_cfg("train.network=resnet")
    with pytest.raises(ConfigError, match="train.drop_path_prob"):
        tiny_train_cfg("train.drop_path_prob=1.5")
