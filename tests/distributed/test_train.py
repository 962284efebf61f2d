"""Ray Train search: 2 gloo workers end to end, killed workers, a re-launched run, overhead.

One local cluster (2 logical CPUs, 200 MB object store) serves the whole module, and each
worker-group start costs 15-30 s on 2 cores, so the first test walks one search through all
three failure stories. Worker functions are built by a factory so cloudpickle ships them by
value (this module is not importable inside Ray workers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
import yaml
from conftest import tiny_cfg
from resume_check import check_resume, records

from snas_ray.cli import main
from snas_ray.config import resolve_paths
from snas_ray.distributed import LaunchOptions, bench_overhead, run_distributed_search, run_name
from snas_ray.engine.checkpoint import load_checkpoint
from snas_ray.errors import CheckpointError, DistributedRunError
from snas_ray.published import load_genotype
from snas_ray.search import SearchLoop, build_search, run_search

_ENV = {
    "RAY_AUTH_MODE": "disabled",  # no ~/.ray/auth_token in tests (ray-notes §5)
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",  # notice dead workers and checkpoints quickly
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


def _worker_fn(probes: Path, crashes: tuple[tuple[int, int], ...] = ()):
    """``train_fn_per_worker`` plus test probes, patched into the worker process only.

    Each rank saves its parameters and first Gumbel sample after its first step of the first
    attempt (``probes/<rank>.pt``); rank 0 appends every epoch it starts to ``probes/epochs``.
    crashes: (rank, epoch) pairs: that rank hard-exits at the start of that epoch, once (a
    marker file in ``probes`` survives the restart).
    """

    def train_fn(config):
        import os
        import time
        from pathlib import Path

        import ray.train
        import torch

        from snas_ray.distributed.worker import train_fn_per_worker
        from snas_ray.search import SearchLoop

        rank = ray.train.get_context().get_world_rank()
        step, sample_z, train_epoch = SearchLoop.step, SearchLoop.sample_z, SearchLoop.train_epoch
        dump = Path(probes) / f"{rank}.pt"

        def probe_sample_z(self, tau):
            z = sample_z(self, tau)
            if not hasattr(self, "first_z"):
                self.first_z = [t.detach().cpu().clone() for t in z]
            return z

        def probe_step(self, x, y, tau=None):
            metrics = step(self, x, y, tau)
            if not dump.exists():
                params = {n: p.detach().cpu().clone() for n, p in self.net.named_parameters()}
                torch.save({"params": params, "z": self.first_z}, dump)
            return metrics

        def probe_train_epoch(self, epoch, sink):
            if rank == 0:
                with (Path(probes) / "epochs").open("a") as f:
                    f.write(f"{epoch}\n")
            marker = Path(probes) / f"crashed-{rank}-{epoch}"
            if (rank, epoch) in crashes and not marker.exists():
                marker.touch()
                time.sleep(2.0)  # let the controller register the last checkpoint first
                os._exit(1)
            return train_epoch(self, epoch, sink)

        SearchLoop.step, SearchLoop.sample_z = probe_step, probe_sample_z
        SearchLoop.train_epoch = probe_train_epoch
        return train_fn_per_worker(config)

    return train_fn


def _epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _same_params_after_one_step(probes: Path) -> dict[str, torch.Tensor]:
    a, b = torch.load(probes / "0.pt"), torch.load(probes / "1.pt")
    assert a["params"].keys() == b["params"].keys()
    for name, value in a["params"].items():
        assert torch.equal(value, b["params"][name]), name
    assert not torch.equal(a["z"][-1], b["z"][-1])  # each rank drew its own Gumbel sample
    return a["params"]


@pytest.mark.ray
def test_two_gloo_workers_search_survive_a_kill_and_a_relaunch(ray_cluster, tmp_path, capsys):
    cfg = tiny_cfg("search.epochs=3", "output.tensorboard=true", "cost.resource_lambda=1e-3")
    out, probes = tmp_path / "run", tmp_path / "probes"
    probes.mkdir()
    # Rank 1 dies at the start of epoch 1 (one restart allowed: resumed), then again at the
    # start of epoch 2 (no restart left: the run fails).
    with pytest.raises(DistributedRunError, match="rank 1: .*run the same command again"):
        run_distributed_search(
            cfg,
            out,
            LaunchOptions(workers=2, max_failures=1),
            train_fn=_worker_fn(probes, crashes=((1, 1), (1, 2))),
        )
    # After the first DDP-averaged step both ranks hold the same weights and logits.
    params = _same_params_after_one_step(probes)
    initial = build_search(cfg, "cpu").net
    for name in ("log_alpha_normal", "log_alpha_reduce"):
        assert not torch.equal(getattr(initial, name), params[name]), name
    # The restart resumed after epoch 0; no finished epoch was lost or repeated.
    assert (probes / "epochs").read_text().split() == ["0", "1", "1", "2"]
    assert _epochs(out) == [1, 2]
    before = (out / "metrics.jsonl").read_text().splitlines()

    # The same command again (through the CLI) continues from the last epoch.
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    argv = ["search", "--config", str(config), "--out", str(out), "--workers", "2"]
    assert main([*argv, "--max-failures", "0"]) == 0
    summary = json.loads((out / "result.json").read_text())
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["epochs_done"] == 3
    assert _epochs(out) == [1, 2, 3]
    # Epochs 0 and 1 were not re-run: their records (wall times included) are unchanged.
    assert (out / "metrics.jsonl").read_text().splitlines()[:2] == before

    # The run folder has the in-process layout.
    for name in ("config.yaml", "metrics.jsonl", "genotype.json", "result.json"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    assert summary["epochs_done"] == 3
    # The config as the workers got it: paths made absolute (config.paths).
    assert yaml.safe_load((out / "config.yaml").read_text()) == resolve_paths(cfg).to_dict()

    # In-process code derives the same genotype from Ray's final checkpoint, and last.pt
    # (what --workers 0 would resume from) holds the same state.
    checkpoints = sorted((out / "ray" / run_name(out)).glob("epoch=*/state.pt"))
    assert checkpoints[-1].parent.name == "epoch=0003"  # after the 3rd epoch (1-based)
    state = load_checkpoint(checkpoints[-1])
    assert state["epoch"] == 3 and len(state["rng_ranks"]) == 2
    loop = build_search(cfg, "cpu")
    loop.load_state_dict(state)
    assert loop.genotype() == load_genotype(out / "genotype.json")
    assert loop.genotype().to_dict() == summary["genotype"]
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    for key, value in state["model"].items():
        assert torch.equal(value, last["model"][key]), key


@pytest.mark.ray
def test_two_gloo_workers_search_resume_exactly_with_every_ranks_random_state(
    ray_cluster, tmp_path
):
    # Stopped at the start of epoch 1 of 2 on both ranks, then launched again into the same
    # folder: the same records, result and final state as an uninterrupted 2-worker search,
    # and each rank's own Gumbel stream restored (check_resume). With a budget, so that the
    # lambda trajectory must resume exactly too, and stay identical on both ranks.
    cfg = tiny_cfg("cost.resource_lambda=1e-3", "cost.budget=2500")
    runs = check_resume("search", cfg, tmp_path, workers=2)
    for run, epochs in (("whole", (0, 1)), ("resumed", (1,))):
        for epoch in epochs:
            assert torch.equal(runs.log_lambda(run, 0, epoch), runs.log_lambda(run, 1, epoch))
    trajectory = [float(runs.log_lambda("whole", 0, e)) for e in (0, 1)]
    assert trajectory[1] > trajectory[0] > float(torch.tensor(1e-3).double().log()), trajectory
    assert [r["cost/lambda_now"] for r in records(runs.split)] == [
        r["cost/lambda_now"] for r in records(runs.whole)
    ]
    ranks = load_checkpoint(runs.split / "checkpoints" / "last.pt")["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["cpu"], ranks[1]["cpu"])
    assert load_genotype(runs.split / "genotype.json").to_dict() == runs.whole_result["genotype"]


@pytest.mark.ray
def test_ray_continues_an_in_process_run_with_idle_normal_logits(
    ray_cluster, tmp_path, monkeypatch
):
    # 2 layers: both cells reduce, so log_alpha_normal never gets a gradient (DDP must cope).
    cfg = tiny_cfg("space.layers=2", "search.epochs=3")
    out, probes = tmp_path / "run", tmp_path / "probes"
    probes.mkdir()
    train_epoch = SearchLoop.train_epoch

    def interrupted(self, epoch, sink):
        if epoch == 1:
            raise KeyboardInterrupt  # an in-process (--workers 0) run stopped after epoch 0
        return train_epoch(self, epoch, sink)

    monkeypatch.setattr(SearchLoop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, out)
    monkeypatch.setattr(SearchLoop, "train_epoch", train_epoch)
    before = (out / "metrics.jsonl").read_text()

    # A different search into the same folder fails at once, before any worker starts.
    with pytest.raises(CheckpointError, match="resource_lambda"):
        run_distributed_search(cfg.replace(**{"cost.resource_lambda": 0.5}), out)

    summary = run_distributed_search(
        cfg, out, LaunchOptions(workers=2, max_failures=0), train_fn=_worker_fn(probes)
    )
    assert summary["epochs_done"] == 3
    assert (probes / "epochs").read_text().split() == ["1", "2"]  # continued from last.pt
    assert _epochs(out) == [1, 2, 3]
    assert (out / "metrics.jsonl").read_text().startswith(before)
    params = _same_params_after_one_step(probes)
    initial = build_search(cfg, "cpu").net
    assert torch.equal(initial.log_alpha_normal, params["log_alpha_normal"])
    assert not torch.equal(initial.log_alpha_reduce, params["log_alpha_reduce"])


@pytest.mark.ray
def test_bench_overhead_reports_a_ratio(ray_cluster):
    result = bench_overhead(tiny_cfg(), epochs=2, threads=1)
    assert result["ratio"] > 0 and result["hook_ratio"] > 0 and result["ray_startup_s"] > 0
    assert len(result["ray_epochs_s"]) == len(result["in_process_epochs_s"]) == 2


def test_search_without_workers_never_imports_ray(tmp_path):
    # The in-process driver is stubbed: this is about imports, not about searching.
    code = (
        "import sys\n"
        "import snas_ray.search\n"
        "from snas_ray.cli import main\n"
        "keys = ('val_acc', 'params', 'flops', 'mac', 'epochs_done')\n"
        "snas_ray.search.run_search = lambda cfg, out, resume: dict.fromkeys(keys, 0)\n"
        "try:\n"
        "    main(['search', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"assert main(['search', '--workers', '0', '--out', {str(tmp_path)!r}]) == 0\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_ray_flags_need_workers(capsys):
    assert main(["search", "--address", "auto"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_the_failure_line_names_the_rank_that_died_not_its_peers():
    from ray.exceptions import RayActorError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

    from snas_ray.distributed.failures import root_failure

    peer = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:1")
    died = WorkerHealthCheckFailedError("A worker health check failed.", failure=RayActorError())
    own = ValueError("data: the train split is empty")
    # Rank 0 only saw its peer vanish; rank 1's process died: rank 1 is the cause.
    assert root_failure({0: peer, 1: died})[0] == 1
    assert root_failure({0: peer, 2: own, 3: died})[0] == 3
    # An exception our code raised outranks a peer-lost collective error.
    assert root_failure({0: peer, 1: own})[0] == 1
    assert root_failure({0: peer, 1: peer})[0] == 0
    assert root_failure({}) is None
