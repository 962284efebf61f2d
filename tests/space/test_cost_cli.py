"""Tests for ``snas-ray cost``: paper-setting parameter counts and an independent FLOP count."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from snas_ray.cli import main
from snas_ray.genotype import save_genotype
from snas_ray.published import REGISTRY
from snas_ray.space.measure import COST_SETTINGS, CostSetting
from snas_ray.space.network import NetworkCIFAR, NetworkImageNet

# Millions of parameters without the auxiliary head of the reference evaluation network (C=36,
# 20 cells, auxiliary), as tests/test_network.py measures it; DARTS reports 3.3M for DARTS_V2.
PAPER_PARAMS_M = {
    "SNAS_mild": 2.66,
    "SNAS_mild_edge_all": 2.66,
    "SNAS_moderate": 2.85,
    "SNAS_aggressive": 2.31,
    "DARTS_V2": 3.35,
}


@pytest.fixture(autouse=True)
def one_thread():
    # Measuring runs one image; on a shared 2-core machine a second OpenMP thread spin-waits
    # for a busy core and makes each forward 20x slower, so these tests use one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _cost(*args: str) -> dict:
    """``snas-ray cost ARGS --json`` in-process; cached, as each call builds a network."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["cost", *args, "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("name", PAPER_PARAMS_M)
def test_paper_setting_param_counts(name: str) -> None:
    cost = _cost(name, "--auxiliary")
    assert (cost["init_channels"], cost["layers"], cost["image_size"]) == (36, 20, 32)
    assert cost["auxiliary"] is True
    assert round(cost["params"] / 1e6, 2) == PAPER_PARAMS_M[name]
    assert cost["params_aux"] > cost["params"]  # the head counts only in params_aux
    assert cost["flops"] > cost["mac"] > 0


def _conv_linear_macs(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Multiply-adds of every Conv2d and Linear, counted by thop (an independent counter)."""
    thop = pytest.importorskip("thop", reason="thop (dev extra) counts FLOPs independently")

    def ignore(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        pass  # BN, pooling: outside "convolution and linear layers"

    others = (nn.BatchNorm2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.ReLU)
    model.eval()
    with torch.no_grad():
        macs, _ = thop.profile(
            model,
            inputs=(torch.zeros(shape),),
            custom_ops=dict.fromkeys(others, ignore),
            verbose=False,
        )
    return float(macs)


def _network(name: str, setting: CostSetting) -> nn.Module:
    shape = {"init_channels": setting.init_channels, "layers": setting.layers}
    shape["num_classes"] = setting.num_classes
    if setting.imagenet:
        return NetworkImageNet(REGISTRY[name], auxiliary=True, **shape)
    return NetworkCIFAR(REGISTRY[name], auxiliary=True, image_size=setting.image_size, **shape)


@pytest.mark.parametrize(
    ("name", "dataset"),
    [(name, "cifar10") for name in ("SNAS_mild", "SNAS_moderate", "SNAS_aggressive", "DARTS_V2")]
    + [("SNAS_mild_edge_all", "imagenet"), ("NASNet", "digits")],
)
def test_flops_agree_with_thop(name: str, dataset: str) -> None:
    pytest.importorskip("thop", reason="thop (dev extra) counts FLOPs independently")
    cost = _cost(name, "--auxiliary") if dataset == "cifar10" else _cost(name, "--dataset", dataset)
    setting = COST_SETTINGS[dataset]
    model = _network(name, setting)
    side = setting.image_size
    reference = _conv_linear_macs(model, (1, 3, side, side))
    assert cost["flops"] == pytest.approx(reference, rel=0.01)


def test_table_overrides_and_files(tmp_path: Path, capsys) -> None:
    assert main(["cost", "SNAS_mild", "--auxiliary"]) == 0
    table = capsys.readouterr().out
    assert "2,663,542 (2.66M, without auxiliary head)" in table
    assert "params + aux  3,139,968" in table and "multiply-adds" in table
    assert main(["cost", "SNAS_mild", "--dataset", "digits"]) == 0
    table = capsys.readouterr().out
    assert "digits: 3x8x8, 10 classes" in table and "params + aux" not in table
    path = tmp_path / "found.json"
    save_genotype(REGISTRY["DARTS_V2"], path)
    small = _cost(str(path), "--init-channels", "16", "--layers", "8")
    assert (small["init_channels"], small["layers"]) == (16, 8)
    assert small["params"] == small["params_aux"] < 3_351_502
    digits = _cost("SNAS_mild", "--dataset", "digits")
    assert (digits["init_channels"], digits["layers"], digits["image_size"]) == (8, 5, 8)
    assert main(["cost", "SNAS_mild", "--layers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "snas-ray: error: --layers must be in [1, 100] (got 0), as for space.* and train.*"
    )


def _snas_ray() -> list[str]:
    script = Path(sys.executable).with_name("snas-ray")
    return [str(script)] if script.exists() else [shutil.which("snas-ray") or "snas-ray"]


def test_cli_subprocess() -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    run = {"capture_output": True, "text": True, "timeout": 300, "env": env}
    ok = subprocess.run([*_snas_ray(), "cost", "SNAS_mild", "--json"], **run)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["params"] == 2_663_542
    bad = subprocess.run([*_snas_ray(), "cost", "SNAS_mlid"], **run)
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snas-ray: error: unknown genotype 'SNAS_mlid'")
    assert "did you mean 'SNAS_mild'" in lines[0]
