"""Two Ray hosts with their own IP addresses on this one machine (network namespaces joined by a
veth pair, ``cluster/local/netns-hosts.sh``), started with ``cluster/local/start-ray.sh`` and
token authentication, as a user would on two machines:

1. a 2-worker search runs one worker per host (node ranks 0 and 1), checkpointing to a folder
   both hosts see; the worker host's Ray node is killed mid-search and started again, and the
   run finishes without losing or repeating a finished epoch;
2. a sweep submitted with ``snas-ray submit`` through the head's job API completes, its two
   trials on the two hosts.

Needs root (CAP_NET_ADMIN) and iproute2; skipped with the reason where they are missing.
Traffic stays on the two hosts' addresses and loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPORT
from ray_procs import kill_session

ROOT = Path(__file__).parents[2]
HOSTS = ROOT / "cluster" / "local" / "netns-hosts.sh"
START = ROOT / "cluster" / "local" / "start-ray.sh"
PREFIX = f"snasray{os.getpid() % 100000}"  # unique if two suites share a machine
SUBNET = f"10.77.{os.getpid() % 250}"
HEAD_IP, WORKER_IP = f"{SUBNET}.1", f"{SUBNET}.2"
PORT = 6390

TINY = {
    "seed": 0,
    "device": "cpu",
    "space": {"layers": 3, "init_channels": 4},
    "search": {"epochs": 5, "batch_size": 4, "eval_batch_size": 8, "log_every": 1000},
    "data": {"name": "synthetic", "image_size": 16, "synthetic_size": 64, "limit": 32},
}


def _why_not() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (the ip command)"
    return None


class TwoHosts:
    def __init__(self, home: Path) -> None:
        venv_bin = str(Path(sys.executable).parent)
        self.env = os.environ | {
            "HOME": str(home),  # the cluster's token lives in HOME/.ray/auth_token
            "RAY_AUTH_MODE": "token",
            "RAY": str(Path(venv_bin) / "ray"),
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "SNASRAY_NETNS": PREFIX,
            "SNASRAY_SUBNET": SUBNET,
            "OMP_NUM_THREADS": "1",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
        }
        self.sessions: dict[str, int] = {}
        self.temp_dirs = [tempfile.mkdtemp(prefix=f"r{i}-", dir="/tmp") for i in (0, 1)]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(HOSTS), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def popen(
        self, host: int, command: list[str], log: Path, *, env: dict | None = None
    ) -> subprocess.Popen:
        with open(log, "ab") as f:
            return subprocess.Popen(
                [str(HOSTS), "exec", str(host), *command],
                env=env or self.env,
                cwd=ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_node(self, name: str, log: Path) -> None:
        """``start-ray.sh`` on host 0 (head) or 1 (worker); its daemons keep its session."""
        if name == "head":
            host, args = 0, ["head", "--ip", HEAD_IP, "--port", str(PORT), "--num-cpus", "1"]
        else:
            host, args = 1, ["worker", f"{HEAD_IP}:{PORT}", "--ip", WORKER_IP, "--num-cpus", "1"]
        # Real hosts have their own /tmp: sharing one, a node's runtime-env cleanup deletes
        # the job's working_dir under the other (both hosts see the same session folder).
        args += [f"--temp-dir={self.temp_dirs[host]}", "--disable-usage-stats"]
        proc = self.popen(host, ["bash", str(START), *args], log)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        self.sessions[name] = proc.pid

    def kill_node(self, name: str) -> None:
        kill_session(self.sessions.pop(name))


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    reason = _why_not()
    if reason:
        pytest.skip(f"multi-host test: {reason}")
    cluster = TwoHosts(tmp_path_factory.mktemp("home"))
    made = cluster.run("up")
    if made.returncode != 0:
        cluster.run("down")
        pytest.skip(f"multi-host test: cannot create network namespaces ({made.stderr.strip()})")
    logs = tmp_path_factory.mktemp("logs")
    try:
        cluster.start_node("head", logs / "head.log")
        cluster.start_node("worker", logs / "worker.log")
        yield cluster
    finally:
        for name in list(cluster.sessions):
            cluster.kill_node(name)
        cluster.run("down")
        for folder in cluster.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def _write(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_host_search_survives_losing_the_worker_host(hosts, tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="shared-", dir=tmp_path))  # both hosts see it
    out, storage, log = shared / "search", shared / "ray", tmp_path / "search.log"
    config = _write(tmp_path / "search.yaml", TINY)
    command = ["snas-ray", "search", "--config", str(config), "--workers", "2"]
    command += ["--address", f"{HEAD_IP}:{PORT}", "--out", str(out), "--storage", str(storage)]
    driver = hosts.popen(0, command, log)
    try:
        deadline = time.time() + 240
        while len(_lines(out)) < 2:  # two epochs finished and checkpointed
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        hosts.kill_node("worker")
        before = _lines(out)
        time.sleep(3)
        hosts.start_node("worker", tmp_path / "worker-again.log")
        assert driver.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if driver.poll() is None:
            kill_session(driver.pid)
    text = log.read_text()
    placements = re.findall(r"workers: (rank \d .*)", text)
    assert len(placements) >= 2, text[-4000:]  # the first start and the restart
    first = re.findall(r"rank (\d) on ([\d.]+) \(node (\d), local (\d)\)", placements[0])
    # One worker per host; Train numbers the hosts 0 and 1 (in either order).
    assert sorted(ip for _, ip, _, _ in first) == [HEAD_IP, WORKER_IP], placements[0]
    assert sorted(node for _, _, node, _ in first) == ["0", "1"], placements[0]
    REPORT.append(f"multi-host search: {placements[0]}")
    # The run resumed from a checkpoint: epochs already logged keep their lines (wall times
    # included), except possibly the last one, logged before its checkpoint was written.
    assert _epochs(out) == list(range(1, 6))
    assert _lines(out)[: len(before) - 1] == before[: len(before) - 1]
    assert "resuming after epoch" in text
    assert json.loads((out / "result.json").read_text())["epochs_done"] == 5


def _lines(run: Path) -> list[str]:
    path = run / "metrics.jsonl"
    return path.read_text().splitlines() if path.is_file() else []


def test_sweep_submitted_through_the_job_api_runs_on_both_hosts(hosts, tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="shared-", dir=tmp_path))
    tree = TINY | {
        "search": TINY["search"] | {"epochs": 2},
        "sweep": {"cost.resource_lambda": {"grid": [0, 0.05]}},
    }
    config = _write(shared / "sweep.yaml", tree)
    out, log = shared / "sweep", tmp_path / "submit.log"
    command = ["snas-ray", "submit", "--address", "http://127.0.0.1:8265", "--working-dir"]
    command += [str(ROOT), "--", "sweep", "--config", str(config), "--out", str(out)]
    # As a user would: RAY_AUTH_MODE unset, the token in ~/.ray/auth_token; the head's
    # dashboard listens on its loopback.
    env = {k: v for k, v in hosts.env.items() if k != "RAY_AUTH_MODE"}
    submitter = hosts.popen(0, command, log, env=env)
    try:
        assert submitter.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if submitter.poll() is None:
            kill_session(submitter.pid)
    rows = json.loads((out / "sweep_results.json").read_text())
    assert [r["status"] for r in rows] == ["done", "done"]
    ips = set()
    for result in (out / "tune").glob("*/result.json"):
        ips |= {json.loads(line)["node_ip"] for line in result.read_text().splitlines()}
    assert ips == {HEAD_IP, WORKER_IP}, ips
    REPORT.append(f"multi-host sweep via job API: trials ran on {sorted(ips)}")
