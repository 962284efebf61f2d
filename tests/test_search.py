"""The search loop: one step, the penalty's reach, exact resume, run-folder outputs."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_cfg
from resume_check import check_resume

from snas_ray.engine.checkpoint import load_checkpoint
from snas_ray.errors import CheckpointError
from snas_ray.layout import RunPaths
from snas_ray.search import build_search, learning_rate, run_search
from snas_ray.space.cost import resource_penalty


def _batch(loop):
    return next(iter(loop.train_loader))


def test_one_step_changes_weights_and_logits():
    loop = build_search(tiny_cfg("cost.resource_lambda=1e-2"), "cpu")
    weights = [p.detach().clone() for p in loop.net.weight_parameters()]
    alphas = [p.detach().clone() for p in loop.net.arch_parameters()]
    x, y = _batch(loop)
    metrics = loop.step(x, y, tau=1.0)
    assert all(k in metrics for k in ("train/loss", "train/acc1", "cost/penalty"))
    moved_w = sum(
        not torch.equal(a, b) for a, b in zip(weights, loop.net.weight_parameters(), strict=True)
    )
    assert moved_w > len(weights) // 2
    assert all(
        not torch.equal(a, b) for a, b in zip(alphas, loop.net.arch_parameters(), strict=True)
    )


@pytest.mark.parametrize("estimator", ["reparametrization", "discrete", "policy_gradient"])
def test_penalty_gives_no_gradient_to_the_weights(estimator):
    loop = build_search(tiny_cfg(f"cost.estimator={estimator}"), "cpu")
    net = loop.net
    z = loop.sample_z(1.0)
    x, _ = _batch(loop)
    net(x, z)  # the penalty must not depend on anything the forward pass touched
    terms = resource_penalty(
        list(net.cost_tables), z, net.cell_log_alpha(), net.reduction, 1.0, loop.cfg.cost
    )
    grads = torch.autograd.grad(
        terms.penalty, net.weight_parameters() + net.arch_parameters(), allow_unused=True
    )
    n_w = len(net.weight_parameters())
    assert all(g is None or not g.any() for g in grads[:n_w])
    assert any(g is not None and g.abs().sum() > 0 for g in grads[n_w:])


def _arch_grads(cfg, scale_tables: float):
    loop = build_search(cfg, "cpu")
    loop.net.cost_tables.mul_(scale_tables)
    x, y = _batch(loop)
    torch.manual_seed(7)
    loop.step(x, y, tau=1.0)
    return torch.cat([p.grad.flatten() for p in loop.net.arch_parameters()])


@pytest.mark.parametrize("estimator", ["reparametrization", "discrete", "policy_gradient"])
def test_lambda_zero_leaves_the_penalty_out_of_the_loss(estimator):
    # Same batch and sample: the cost tables only matter to the gradient when lambda > 0.
    base = ("space.drop_path_prob=0", f"cost.estimator={estimator}", "cost.log_penalty=false")
    off = tiny_cfg("cost.resource_lambda=0", *base)
    assert torch.equal(_arch_grads(off, 1.0), _arch_grads(off, 3.0))
    on = tiny_cfg("cost.resource_lambda=1e-3", *base)
    assert not torch.allclose(_arch_grads(on, 1.0), _arch_grads(on, 3.0))


def test_lr_schedule_matches_reference():
    assert learning_rate(0, 150, 0.025, 0.001) == pytest.approx(0.0249974, abs=1e-7)
    assert learning_rate(74, 150, 0.025, 0.001) == pytest.approx(0.013, abs=1e-6)
    assert learning_rate(149, 150, 0.025, 0.001) == pytest.approx(0.001)


def test_resume_in_process_ends_as_an_uninterrupted_run(tmp_path):
    # Ctrl-C at the start of epoch 1 of 2, then the same search into the same folder.
    runs = check_resume("search", tiny_cfg("cost.resource_lambda=1e-3"), tmp_path)
    assert runs.resumed_result["epochs_done"] == 2
    assert runs.resumed_result["genotype"] == runs.whole_result["genotype"]


def test_run_folder_is_complete(tmp_path):
    result = run_search(tiny_cfg("output.tensorboard=true"), tmp_path / "run")
    root = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "genotype.json", "result.json"):
        assert (root / name).is_file(), name
    assert any((root / "tb").iterdir())
    assert (root / "checkpoints" / "last.pt").is_file()
    saved = json.loads((root / "result.json").read_text())
    assert saved == result
    for key in (
        "val_acc",
        "params",
        "flops",
        "mac",
        "epochs_done",
        "resource_lambda",
        "estimator",
        "seed",
    ):
        assert key in saved
    assert 0.0 <= saved["val_acc"] <= 1.0 and saved["params"] > 0
    lines = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]  # 1-based, as the log says
    for key in (
        "train/loss",
        "val/acc_child",
        "val/acc_relaxed",
        "arch/tau",
        "lr/weights",
        "cost/expected_size",
        "cost/sampled_size",
        "arch/entropy_normal",
    ):
        assert key in lines[-1], key
    # the saved config reads back as the same config
    from snas_ray.config import ExperimentConfig

    assert ExperimentConfig.from_dict(
        yaml.safe_load((root / "config.yaml").read_text())
    ) == tiny_cfg("output.tensorboard=true")


def test_finished_run_is_not_retrained(tmp_path):
    cfg = tiny_cfg()
    first = run_search(cfg, tmp_path / "r")
    again = run_search(cfg, tmp_path / "r")
    assert again["epochs_done"] == first["epochs_done"] == 2
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_a_different_search(tmp_path):
    run_search(tiny_cfg(), tmp_path / "r")
    with pytest.raises(CheckpointError, match="cost.resource_lambda"):
        run_search(tiny_cfg("cost.resource_lambda=0.5"), tmp_path / "r")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    paths = RunPaths(tmp_path / "r").make()
    paths.last_checkpoint.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        run_search(tiny_cfg(), paths.root)
    truncated = tmp_path / "t.pt"
    torch.save({"format": "x"}, truncated)
    with pytest.raises(CheckpointError, match="not a snas-ray"):
        load_checkpoint(truncated)
