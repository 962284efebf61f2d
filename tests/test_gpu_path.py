"""The GPU path, tested on the CPU: precision, compilation, host syncs, CPU-only restore, bench."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_cfg

from snas_ray.cli import main
from snas_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from snas_ray.engine.precision import StepPrecision, compile_module
from snas_ray.errors import CheckpointError
from snas_ray.retrain import build_retrain
from snas_ray.search import build_search

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys) -> str:
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--set", "search.precision=fp8"],
        ["train", "--set", "train.precision=half"],
        ["bench", "--precision", "int8", "--no-reference"],
    ],
)
def test_an_unknown_precision_is_a_one_line_error(argv, capsys):
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "precision" in line and "fp32, bf16, fp16" in line and "Traceback" not in line


def test_fp16_builds_a_scaler_and_checkpoints_it():
    loop = build_search(tiny_cfg("search.precision=fp16"), "cpu")
    assert isinstance(loop.precision.scaler, torch.amp.GradScaler)
    x, y = next(iter(loop.train_loader))
    loop.step(x, y)
    state = loop.job_state()
    assert "scale" in state["scaler"]
    fresh = build_search(tiny_cfg("search.precision=fp16"), "cpu")
    fresh.load_job_state(state)
    assert fresh.precision.scaler.get_scale() == loop.precision.scaler.get_scale()
    assert StepPrecision("fp32", torch.device("cpu"), field="x").scaler is None
    assert StepPrecision("bf16", torch.device("cpu"), field="x").scaler is None


def test_the_step_reads_nothing_to_the_host(monkeypatch):
    """Step metrics stay tensors; the loop reads them only at log points (engine/loop.py).
    Counted: reads made by snas_ray's own code (torch's Adam reads its step counter, a CPU
    tensor even for GPU parameters, which costs no device sync)."""
    loop = build_search(tiny_cfg("cost.resource_lambda=1e-2", "search.precision=bf16"), "cpu")
    x, y = next(iter(loop.train_loader))
    loop.step(x, y)  # first call: lazy initialisation may read shapes
    reads: list[str] = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _name=name, _original=original, **k):
            caller = sys._getframe(1).f_code.co_filename
            if f"{os.sep}snas_ray{os.sep}" in caller:
                reads.append(f"{_name} in {caller}")
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    metrics = [loop.step(x, y) for _ in range(3)]
    monkeypatch.undo()
    assert reads == []
    assert all(isinstance(v, torch.Tensor) for m in metrics for v in m.values())


@pytest.mark.slow
def test_a_compiled_step_matches_an_eager_one():
    """``search.compile`` wraps the supernet's forward in ``torch.compile``; Gumbel noise and
    drop-path masks are drawn outside it, so eager and compiled steps draw the same numbers.
    Compiled here with the ``aot_eager`` backend (dynamo's graph capture and AOT autograd, no
    code generation): inductor needs ~8 minutes for this supernet on 2 cores. Tolerance: 1e-4
    relative on losses, 1e-4/1e-5 on every parameter after two steps."""
    cfg = tiny_cfg("space.drop_path_prob=0.2", "cost.resource_lambda=1e-2")
    eager = build_search(cfg, "cpu")
    compiled = build_search(cfg.replace(**{"search.compile": True}), "cpu")
    assert isinstance(compiled.forward_model, torch._dynamo.eval_frame.OptimizedModule)
    compiled.forward_model = compile_module(compiled.model, True, backend="aot_eager")
    x, y = next(iter(eager.train_loader))
    losses = []
    for loop in (eager, compiled):
        torch.manual_seed(1)
        losses.append([loop.step(x, y)["train/loss"].item() for _ in range(2)])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for a, b in zip(eager.net.parameters(), compiled.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_resume_restores_random_streams_as_cpu_bytes_on_any_gpu_count(
    tmp_path, monkeypatch, caplog
):
    """A checkpoint saved with two GPUs' streams, restored where one GPU is visible: every
    tensor that reaches set_rng_state is a CPU byte tensor, one stream is restored, one line
    says so. (CUDA is simulated: only what reaches torch's setters is inspected.)"""
    loop = build_search(tiny_cfg(), "cpu")
    state = loop.state_dict() | {"rng_cuda": [torch.get_rng_state()] * 2}
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(tmp_path / "last.pt")
    seen: list[tuple[str, torch.dtype, int | None]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda t, i: seen.append((t.device.type, t.dtype, i))
    )
    monkeypatch.setattr(
        torch, "set_rng_state", lambda t: seen.append((t.device.type, t.dtype, None))
    )
    fresh = build_search(tiny_cfg(), "cpu")
    with caplog.at_level(logging.WARNING):
        fresh.load_state_dict(loaded)
    assert seen == [("cpu", torch.uint8, None), ("cpu", torch.uint8, 0)]
    (line,) = [r.getMessage() for r in caplog.records if r.name == "snas_ray.engine.state"]
    assert "2 GPU random streams" in line and "sees 1 GPUs: restored 1" in line


def test_bench_prints_ratios_with_their_spread(capsys):
    argv = ["bench", "--batch", "4", "--image-size", "8", "--steps", "1", "--repeats", "3"]
    sets = ["--set", "space.layers=3", "--set", "space.init_channels=4"]
    assert main([*argv, "--warmup", "0", *sets, "--set", "cost.resource_lambda=0"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["speedup_min"] <= result["speedup"] <= result["speedup_max"]
    assert result["step_ms_min"] <= result["step_ms"] <= result["step_ms_max"]
    assert result["precision"] == "fp32" and result["resource_lambda"] == 0
    assert err.count("repeat ") == 3  # one progress line per repeat


@pytest.mark.parametrize(
    ("flag", "value"), [("--batch", "0"), ("--steps", "-1"), ("--image-size", "100000")]
)
def test_bench_sizes_out_of_range_are_one_line_errors(flag, value, capsys):
    assert main(["bench", flag, value, "--no-reference"]) == 2
    line = _one_line_error(capsys)
    assert flag in line and "must be in" in line


@pytest.mark.slow
def test_the_gpu_acceptance_script_runs_its_stages_on_the_cpu(tmp_path):
    out = tmp_path / "gpu-check.json"
    env = dict(os.environ, PYTHON=sys.executable, RAY_AUTH_MODE="disabled")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    report = json.loads(out.read_text())
    assert done.returncode == 0, (done.stderr[-3000:], report)
    assert [r["precision"] for r in report["bench"]["rows"]] == ["fp32", "fp32", "bf16", "bf16"]
    assert all(r["speedup"] > 0 for r in report["bench"]["rows"])
    assert report["resume"]["epochs"] == 3 and report["resume"]["genotype_equal"]
    assert report["retrain"]["step_ms_median"] > 0
    assert report["ray"]["epochs"] == [1, 2, 3] and report["ray"]["killed_worker_pids"]


def test_a_checkpoint_from_before_the_precision_fields_still_resumes(tmp_path):
    """A config saved before a field existed compares as that field's default (old runs,
    sweeps and evaluations resume); a non-default value still counts as a different run."""
    loop = build_search(tiny_cfg(), "cpu")
    state = loop.state_dict()
    for key in ("precision", "compile", "cudnn_benchmark"):
        del state["config"]["search"][key]
    save_checkpoint(tmp_path / "last.pt", state)
    build_search(tiny_cfg(), "cpu").load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    with pytest.raises(CheckpointError, match="search.precision='fp32', this run has 'bf16'"):
        build_search(tiny_cfg("search.precision=bf16"), "cpu").load_state_dict(
            load_checkpoint(tmp_path / "last.pt")
        )


@pytest.mark.slow
def test_a_compiled_retraining_recompiles_once_as_drop_path_ramps():
    """The network reads its drop-path probability from a buffer: compiled once with drop-path
    off (epoch 0, p = 0) and once with it on, whatever p the ramp reaches (aot_eager, as above)."""
    from torch._dynamo.utils import counters

    sizes = ["train.layers=3", "train.init_channels=4", "train.batch_size=4", "train.epochs=4"]
    cfg = tiny_cfg(
        *sizes, "train.drop_path_prob=0.3", "train.auxiliary=false", "train.compile=true"
    )
    loop = build_retrain(cfg, "cpu")
    torch._dynamo.reset()
    loop.forward_model = compile_module(loop.model, True, backend="aot_eager")
    x, y = next(iter(loop.train_loader))
    before = counters["stats"]["unique_graphs"]
    for epoch in range(4):
        loop.begin_epoch(epoch)
        assert torch.isfinite(loop.step(x, y)["train/loss"])
    assert loop.net.drop_path_prob == pytest.approx(0.3 * 3 / 4)
    assert counters["stats"]["unique_graphs"] - before == 2
