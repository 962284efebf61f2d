"""Nothing lost: one writer per run folder, the previous checkpoint kept, no debris, readable
modes, no results overwritten, and a non-finite loss stopping the run in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from snas_ray.cli import main
from snas_ray.engine.checkpoint import load_checkpoint
from snas_ray.engine.loop import EpochLoop
from snas_ray.errors import FolderInUseError
from snas_ray.layout import LOCK_FILE, FolderLock, RunPaths
from snas_ray.search.loop import SearchLoop

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "space.layers=3",
    "space.init_channels=4",
    "search.epochs=2",
    "search.batch_size=4",
    "search.eval_batch_size=8",
    "search.log_every=1000",
    "data.name=synthetic",
    "data.image_size=8",
    "data.synthetic_size=32",
    "data.limit=8",
    "device=cpu",
    "output.tensorboard=false",
]


def _search_argv(out: Path, *sets: str) -> list[str]:
    argv = ["search", "--out", str(out)]
    for item in [*TINY, *sets]:
        argv += ["--set", item]
    return argv


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("snas-ray: error:")]


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# A search that, at the start of its first epoch, says so with a marker file and then waits
# for another marker: the test decides when it may go on, without sleeping on a guess.
_HELD_SEARCH = """
import sys, time
from pathlib import Path
from snas_ray.engine.loop import EpochLoop
from snas_ray.cli import main
started, release = Path(sys.argv[1]), Path(sys.argv[2])
train_epoch = EpochLoop.train_epoch
def held(self, epoch, hooks=()):
    if epoch == 0:
        started.touch()
        while not release.exists():
            time.sleep(0.02)
    return train_epoch(self, epoch, hooks)
EpochLoop.train_epoch = held
sys.exit(main(sys.argv[3:]))
"""


def _start_held_search(tmp_path: Path, out: Path) -> tuple[subprocess.Popen, Path, Path]:
    started, release = tmp_path / "started", tmp_path / "release"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [str(started), str(release), *_search_argv(out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", _HELD_SEARCH, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not started.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the first search never started its first epoch"
        time.sleep(0.02)
    return proc, started, release


def test_a_second_search_into_the_same_folder_is_refused_and_the_first_completes(tmp_path):
    out = tmp_path / "run"
    first, _, release = _start_held_search(tmp_path, out)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "snas_ray", *_search_argv(out)],
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        (line,) = _error_lines(second.stderr)
        assert f"in use by a search (PID {first.pid} on host {os.uname().nodename})" in line
        assert str(out) in line
    finally:
        release.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert _epochs(out) == [1, 2]  # the refused search wrote nothing into the folder
    assert (out / "result.json").is_file()


def test_a_killed_holder_releases_the_lock(tmp_path):
    held = tmp_path / "held"
    code = (
        "import sys, time; from pathlib import Path; from snas_ray.layout import FolderLock; "
        "FolderLock(sys.argv[1]).acquire(); Path(sys.argv[2]).touch(); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), str(held)],
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.time() + 60
        while not held.exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.02)
        with pytest.raises(FolderInUseError, match=f"PID {proc.pid} on host"):
            FolderLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with FolderLock(tmp_path, "search"):  # the kernel dropped the dead holder's lock
        held_by = (tmp_path / LOCK_FILE).read_text().split()
        assert held_by == [os.uname().nodename, str(os.getpid()), "search"]


def test_missing_checkpoint_with_results_is_refused_not_truncated(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_search_argv(out)) == 0
    for checkpoint in (out / "checkpoints").glob("*.pt"):
        checkpoint.unlink()
    metrics = (out / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert main(_search_argv(out, "optim.lr=0.05")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "result.json" in line and "2 epoch line(s) in metrics.jsonl" in line
    assert "no checkpoint" in line
    assert (out / "metrics.jsonl").read_bytes() == metrics
    assert "lr: 0.025" in (out / "config.yaml").read_text()  # the old run's config stays


def test_lines_of_the_same_run_before_its_first_checkpoint_are_redone(tmp_path, monkeypatch):
    # checkpoint_every 10: epochs 0 and 1 are logged, then Ctrl-C before any checkpoint.
    out, sets = tmp_path / "run", ("search.epochs=3", "output.checkpoint_every=10")
    train_epoch = EpochLoop.train_epoch

    def interrupted(self, epoch, hooks=()):
        if epoch == 2:
            raise KeyboardInterrupt
        return train_epoch(self, epoch, hooks)

    monkeypatch.setattr(EpochLoop, "train_epoch", interrupted)
    assert main(_search_argv(out, *sets)) == 130
    assert _epochs(out) == [1, 2] and not list((out / "checkpoints").iterdir())
    monkeypatch.setattr(EpochLoop, "train_epoch", train_epoch)
    assert main(_search_argv(out, *sets, "optim.lr=0.05")) == 2  # another run's lines: kept
    assert main(_search_argv(out, *sets)) == 0  # the same run: started over, as a resume would
    assert _epochs(out) == [1, 2, 3]


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    train_epoch = EpochLoop.train_epoch

    def interrupted(self, epoch, hooks=()):
        if epoch == 2:
            raise KeyboardInterrupt
        return train_epoch(self, epoch, hooks)

    monkeypatch.setattr(EpochLoop, "train_epoch", interrupted)
    assert main(_search_argv(out, "search.epochs=3")) == 130  # Ctrl-C after epoch 1
    paths = RunPaths(out)
    assert load_checkpoint(paths.last_checkpoint)["epoch"] == 2
    assert load_checkpoint(paths.previous_checkpoint)["epoch"] == 1
    paths.last_checkpoint.write_bytes(paths.last_checkpoint.read_bytes()[:5000])
    monkeypatch.setattr(EpochLoop, "train_epoch", train_epoch)
    assert main(_search_argv(out, "search.epochs=3")) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    fallback = [w for w in warnings if "resuming from previous.pt (epoch 1)" in w]
    assert len(fallback) == 1 and "\n" not in fallback[0] and "last.pt" in fallback[0]
    assert _epochs(out) == [1, 2, 3]  # epoch 2 is trained again, and listed once
    assert load_checkpoint(paths.last_checkpoint)["epoch"] == 3
    assert (paths.checkpoints / "last.pt.corrupt").is_file()


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path):
    out = tmp_path / "run"
    stale = [out / "checkpoints" / ".last.pt.k2x_9ab1.tmp", out / ".result.json.abcdefgh.tmp"]
    kept = [out / "notes.tmp", out / ".hidden.tmp", out / "checkpoints" / "mine.pt.tmp"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    assert main(_search_argv(out)) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_run_files_get_the_umask_modes(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert main(_search_argv(out, "output.tensorboard=true")) == 0
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"last.pt", "previous.pt", "result.json", "config.yaml", LOCK_FILE} <= {
        p.name for p in files
    }
    modes = {p.relative_to(out).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


def test_a_nan_step_stops_in_one_line_and_keeps_the_previous_epoch(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    step = SearchLoop.step

    def poisoned(self, x, y, tau=None):
        metrics = step(self, x, y, tau)
        if self.epoch >= 1:  # the second epoch onwards: the penalty turns NaN
            metrics["cost/penalty"] = torch.tensor(float("nan"))
        return metrics

    monkeypatch.setattr(SearchLoop, "step", poisoned)
    assert main(_search_argv(out, "search.epochs=3")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("snas-ray: error: epoch 2 step 1: cost/penalty (penalty) is not finite")
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert _epochs(out) == [1]
    assert not (out / "result.json").exists()
