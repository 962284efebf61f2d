"""The GPU acceptance check: four stages, each writing its figures to one JSON file as it ends.

Run as ``bash scripts/gpu-check.sh`` or ``python scripts/gpu_check.py`` from a checkout: it puts the
checkout on ``PYTHONPATH`` itself and installs nothing (it needs torch, torchvision, numpy and
PyYAML, and says which are missing before it starts). Stages:

1. ``bench``: the bench matrix (fp32/bf16 x eager/compiled) against the reference-style step at
   lambda = 0.
2. ``resume``: a CIFAR-sized synthetic search in bf16 is killed after its first epoch and run
   again; its epoch lines must match an uninterrupted run's within bf16's tolerance.
3. ``retrain``: bf16 steps of the 20-cell C=36 evaluation network (step time, peak memory).
4. ``ray``: where Ray is installed, a 1-worker Ray Train search loses its worker mid-run
   (killed) and Ray Train restarts it from the last checkpoint; without Ray, skipped in a line.

``--cpu`` runs the same stages at tiny sizes on the CPU (CI runs it). A stage that fails or
times out records why and the next one still runs; the exit status is 1 if any stage failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Sizes per mode: the GPU sizes, and tiny ones for a CI run on two cores.
SIZES = {
    "gpu": {"layers": 8, "channels": 16, "batch": 64, "steps": 10, "repeats": 3, "image": 32,
            "search_batch": 64, "train_layers": 20, "train_channels": 36, "train_batch": 64,
            "train_steps": 20, "samples": 2048, "timeout": 240},
    "cpu": {"layers": 3, "channels": 4, "batch": 8, "steps": 2, "repeats": 2, "image": 8,
            "search_batch": 16, "train_layers": 3, "train_channels": 4, "train_batch": 8,
            "train_steps": 2, "samples": 96, "timeout": 240},
}  # fmt: skip
# bf16 keeps 8 bits of mantissa: a resumed run's losses and accuracies may differ from an
# uninterrupted run's by GPU reduction order alone; on the CPU the two are bit-identical.
TOLERANCE = {"abs": 0.02, "rel": 0.02}
COMPARED = ("train/loss", "train/acc1", "val/acc_child", "val/acc_relaxed", "arch/tau")


ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout with nothing installed: this process and the commands it starts import
# snas_ray from here.
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
NEEDED = ("torch", "torchvision", "numpy", "yaml")  # yaml: PyYAML reads every config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (for CI)")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="JSON file")
    parser.add_argument("--only", action="append", help="run only this stage (repeatable)")
    args = parser.parse_args(argv)
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        print(f"gpu-check: missing Python packages: {', '.join(missing)}", file=sys.stderr)
        return 2
    import torch

    mode = "cpu" if args.cpu else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; use --cpu for the tiny CPU run", file=sys.stderr)
        return 2
    sizes = SIZES[mode]
    report: dict[str, Any] = {"mode": mode, "python": sys.version.split()[0], **_versions()}
    if mode == "gpu":
        report["gpu"] = torch.cuda.get_device_name(0)
    stages: list[tuple[str, Callable[[dict[str, Any], str, dict[str, Any]], None]]] = [
        ("bench", _bench),
        ("resume", _resume),
        ("retrain", _retrain),
        ("ray", _ray),
    ]
    failed = False
    device = "cuda" if mode == "gpu" else "cpu"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        os.environ["GPU_CHECK_TMP"] = tmp
        for name, stage in stages:
            if args.only and name not in args.only:
                continue
            print(f"gpu-check: stage {name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            result: dict[str, Any] = {"ok": True}
            try:
                stage(sizes, device, result)  # fills result as it goes
            except Exception as exc:  # recorded with what the stage had, and the next one runs
                last = traceback.format_exc().strip().splitlines()[-1]
                result |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "at": last}
            result["seconds"] = round(time.perf_counter() - start, 1)
            failed |= not result["ok"]
            report[name] = result
            _write_json(args.out, report)
            print(f"gpu-check: stage {name}: {_summary(result)}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def _versions() -> dict[str, str]:
    import torch

    out = {"torch": torch.__version__}  # "ray" is the name of a stage
    try:
        import ray

        out["ray_version"] = ray.__version__
    except ImportError:
        out["ray_version"] = "absent"
    return out


def _summary(result: dict[str, Any]) -> str:
    if not result["ok"]:
        return f"FAILED ({result['error'].splitlines()[0][:200]})"
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    return f"ok in {result['seconds']} s"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _cli(*args: str, timeout: float) -> tuple[str, str]:
    """Runs ``snas-ray ARGS`` from this checkout in its own session (a timeout kills compile
    workers too); returns (stdout, stderr), raises with stderr's tail."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "snas_ray", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        why = f"snas-ray {args[0]}: no result within {timeout:.0f} s: {err[-1500:]}"
        raise TimeoutError(why) from None
    if proc.returncode != 0:
        raise RuntimeError(f"snas-ray {args[0]} exited {proc.returncode}: {err[-1500:]}")
    return out, err


def _search_sets(s: dict[str, Any], device: str, epochs: int, precision: str) -> list[str]:
    sets = {
        "device": device,
        "data.name": "synthetic",
        "data.image_size": s["image"] if device == "cpu" else 32,
        "data.synthetic_size": s["samples"],
        "space.layers": s["layers"],
        "space.init_channels": s["channels"],
        "search.epochs": epochs,
        "search.batch_size": s["search_batch"],
        "search.eval_batch_size": s["search_batch"],
        "search.precision": precision,
        "search.log_every": 10,
        "output.tensorboard": "false",
    }
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


def _bench(s: dict[str, Any], device: str, result: dict[str, Any]) -> None:
    """The matrix, one configuration per command, so that each row that finishes is kept."""
    common = [
        "--device", device, "--batch", str(s["batch"]), "--image-size", str(s["image"]),
        "--steps", str(s["steps"]), "--repeats", str(s["repeats"]), "--warmup", "1",
        "--set", f"space.layers={s['layers']}", "--set", f"space.init_channels={s['channels']}",
        "--set", "cost.resource_lambda=0",
    ]  # fmt: skip
    # On two CPU cores inductor needs minutes per graph: the CPU run captures graphs only.
    backend = ["--compile-backend", "aot_eager"] if device == "cpu" else []
    result["rows"] = []
    for precision in ("fp32", "bf16"):
        for compiled in ([], ["--compile", *backend]):
            out, _ = _cli("bench", *common, "--precision", precision, *compiled,
                          timeout=s["timeout"] * (2 if compiled else 1))  # fmt: skip
            result["rows"].append(json.loads(out.strip().splitlines()[-1]))


def _epoch_lines(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _wait_for_epochs(run: Path, proc: subprocess.Popen, n: int, timeout: float) -> None:
    """Until the run's metrics.jsonl has ``n`` lines and its checkpoint exists."""
    deadline = time.time() + timeout
    while len(_epoch_lines(run)) < n or not (run / "checkpoints" / "last.pt").is_file():
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended (exit {proc.returncode}) before epoch {n}")
        if time.time() > deadline:
            raise TimeoutError(f"no epoch {n} within {timeout:.0f} s")
        time.sleep(0.2)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _resume(s: dict[str, Any], device: str, result: dict[str, Any]) -> None:
    tmp = Path(os.environ["GPU_CHECK_TMP"])
    sets = _search_sets(s, device, 3, "bf16")
    _cli("search", "--out", str(tmp / "whole"), *sets, timeout=s["timeout"])
    result["uninterrupted"] = [e["val/acc_child"] for e in _epoch_lines(tmp / "whole")]
    killed = tmp / "killed"
    cmd = [sys.executable, "-m", "snas_ray", "search", "--out", str(killed), *sets]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        _wait_for_epochs(killed, proc, 1, s["timeout"])
    finally:
        _kill_group(proc)
    _, err = _cli("search", "--out", str(killed), *sets, timeout=s["timeout"])
    if "resuming" not in err:
        raise AssertionError("the second run did not resume from the killed run's checkpoint")
    whole, resumed = _epoch_lines(tmp / "whole"), _epoch_lines(killed)
    if [e["epoch"] for e in resumed] != [e["epoch"] for e in whole]:
        raise AssertionError(f"epochs {[e['epoch'] for e in resumed]} after the resume")
    worst = 0.0
    for a, b in zip(whole, resumed, strict=True):
        for key in COMPARED:
            diff = abs(a[key] - b[key])
            if diff > TOLERANCE["abs"] + TOLERANCE["rel"] * abs(a[key]):
                raise AssertionError(f"epoch {a['epoch']} {key}: {b[key]} resumed vs {a[key]}")
            worst = max(worst, diff)
    result |= {
        "epochs": len(whole),
        "max_abs_difference": worst,
        "tolerance": TOLERANCE,
        "genotype_equal": whole[-1]["genotype"] == resumed[-1]["genotype"],
        "val_acc_child": [e["val/acc_child"] for e in resumed],
    }


def _retrain(s: dict[str, Any], device: str, result: dict[str, Any]) -> None:
    import torch

    from snas_ray.config import load_config
    from snas_ray.retrain import build_retrain

    cfg = load_config(None, [
        f"device={device}", "data.name=synthetic", f"data.synthetic_size={s['samples']}",
        f"data.image_size={32 if device == 'cuda' else s['image']}",
        f"train.layers={s['train_layers']}", f"train.init_channels={s['train_channels']}",
        f"train.batch_size={s['train_batch']}", "train.precision=bf16", "train.epochs=1",
    ])  # fmt: skip
    loop = build_retrain(cfg, device)
    x, y = loop.to_device(*next(iter(loop.train_loader)))
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    loop.step(x, y)  # warm-up (cuDNN, allocator)
    times, losses = [], []
    for _ in range(s["train_steps"]):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        losses.append(loop.step(x, y)["train/loss"])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - start) * 1000)
    losses = [float(v) for v in losses]
    if not all(math.isfinite(v) for v in losses):
        raise AssertionError(f"non-finite retrain loss: {losses}")
    times.sort()
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    result |= {
        "layers": s["train_layers"],
        "init_channels": s["train_channels"],
        "batch": s["train_batch"],
        "step_ms_median": round(times[len(times) // 2], 1),
        "step_ms_min": round(times[0], 1),
        "step_ms_max": round(times[-1], 1),
        "peak_memory_mb": None if peak is None else round(peak, 1),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
    }


def _ray(s: dict[str, Any], device: str, result: dict[str, Any]) -> None:
    if importlib.util.find_spec("ray") is None:
        result["skipped"] = "Ray is not installed here"
        return
    tmp = Path(os.environ["GPU_CHECK_TMP"])
    run = tmp / "ray"
    gpus = ["--gpus-per-worker", "1"] if device == "cuda" else []
    sets = _search_sets(s, device if device == "cpu" else "auto", 3, "fp32")
    cmd = [sys.executable, "-m", "snas_ray", "search", "--out", str(run), "--workers", "1",
           "--max-failures", "1", *gpus, *sets]  # fmt: skip
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)  # fmt: skip
    try:
        _wait_for_epochs(run, proc, 1, s["timeout"])
        killed = _kill_train_workers(proc.pid)
        out, err = proc.communicate(timeout=s["timeout"] * 2)
    finally:
        _kill_group(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"the Ray search exited {proc.returncode}: {err[-1500:]}")
    epochs = [e["epoch"] for e in _epoch_lines(run)]
    if epochs != [1, 2, 3]:
        raise AssertionError(f"epochs {epochs} after the worker was lost")
    result |= {"killed_worker_pids": killed, "epochs": epochs}
    result["result"] = json.loads(out.splitlines()[-1])


def _kill_train_workers(session: int) -> list[int]:
    """SIGKILL the Ray Train worker processes of the run in ``session``; returns their PIDs."""
    found = subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", "RayTrainWorker"],
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    pids = [int(p) for p in found if _session(int(p)) == session]
    if not pids:
        raise RuntimeError("no RayTrainWorker process to kill")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


if __name__ == "__main__":
    sys.exit(main())
