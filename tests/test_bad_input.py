"""Every kind of bad input stops before work starts, in one line naming the field or file.

One table, one case per kind the fuzzing pass of issue 13 found: each runs ``snas-ray`` (in this
process, through ``cli.main``) and asserts the exit status, a single error line, no traceback,
the field named and that the run folder got no checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from run_folders import make_run

from snas_ray.cli import main
from snas_ray.engine.checkpoint import CHECKPOINT_FORMAT

TINY = [
    "space.layers=3",
    "space.init_channels=4",
    "search.epochs=1",
    "search.batch_size=4",
    "search.eval_batch_size=8",
    "data.name=synthetic",
    "data.image_size=8",
    "data.synthetic_size=32",
    "data.limit=8",
    "device=cpu",
    "output.tensorboard=false",
]


def _search(*sets: str, out: str = "{d}/out") -> list[str]:
    argv = ["search", "--out", out]
    for item in [*TINY, *sets]:
        argv += ["--set", item]
    return argv


@dataclasses.dataclass
class Case:
    argv: list[str]
    named: list[str]  # what the one error line must mention
    setup: Callable[[Path], None] | None = None


def _write(name: str, data: str | bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def _checkpoint(kind: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        path = d / "ck.pt"
        if kind == "zero":
            path.write_bytes(b"")
        elif kind == "truncated":
            torch.save({"format": CHECKPOINT_FORMAT, "model": {"w": torch.zeros(4096)}}, path)
            path.write_bytes(path.read_bytes()[:1000])
        else:  # ours in format, without the model
            torch.save(
                {"format": CHECKPOINT_FORMAT, "config": {}, "epoch": 1, "global_step": 1}, path
            )

    return setup


def _sweep_text(sweep: str, tune: str = "") -> str:
    tree: dict = {}
    for item in TINY:
        key, value = item.split("=")
        *sections, name = key.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = yaml.safe_load(value)
    return yaml.safe_dump(tree) + f"sweep:\n{sweep}" + (f"tune:\n{tune}" if tune else "")


def _sweep_config(sweep: str, tune: str = "") -> Callable[[Path], None]:
    return _write("sweep.yaml", _sweep_text(sweep, tune))


def _saved_sweep(text: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        _sweep_config("  seed: {grid: [0, 1]}\n")(d)
        _write("out/sweep.yaml", text)(d)

    return setup


def _broken_runs(d: Path) -> None:
    run = make_run(d / "runs", "a", acc=0.5, params=10)
    (run / "result.json").write_text("{not json")


def _good_runs(d: Path) -> None:
    make_run(d / "runs", "a", acc=0.5, params=10)


SWEEP = ["sweep", "--config", "{d}/sweep.yaml", "--out", "{d}/out", "--no-collect"]
CASES = {
    "config not UTF-8": Case(
        _search() + ["--config", "{d}/c.yaml"], ["--config", "UTF-8"], _write("c.yaml", b"s: \xff")
    ),
    "config a folder": Case(_search() + ["--config", "{d}"], ["--config", "not a regular file"]),
    "duplicate YAML key": Case(
        _search() + ["--config", "{d}/c.yaml"],
        ["--config", "duplicate key 'epochs'", "line 3"],
        _write("c.yaml", "search:\n  epochs: 1\n  epochs: 2\n"),
    ),
    "NaN": Case(_search("optim.lr=.nan"), ["optim.lr", "finite"]),
    "infinity": Case(_search("cost.resource_lambda=.inf"), ["cost.resource_lambda", "finite"]),
    "NaN as text": Case(_search("sampling.temp=nan"), ["sampling.temp", "finite"]),
    "huge integer": Case(_search("search.log_every=10**30"), ["search.log_every"]),
    "absurd layers": Case(_search("space.layers=1000000"), ["space.layers", "[1, 100]"]),
    "absurd channels": Case(_search("space.init_channels=4096"), ["space.init_channels"]),
    "absurd image side": Case(_search("data.image_size=100000"), ["data.image_size"]),
    "absurd batch": Case(_search("search.batch_size=10000000"), ["search.batch_size"]),
    "absurd epochs": Case(_search("search.epochs=10000000"), ["search.epochs"]),
    "supernet beyond memory": Case(
        _search("search.batch_size=65536", "data.image_size=32", "space.layers=8"),
        ["search.batch_size", "GiB"],
    ),
    "image side the cells cannot halve": Case(_search("data.image_size=6"), ["data.image_size"]),
    "Adam beta of 1": Case(
        _search("optim.arch_betas=[1.0, 0.999]"), ["optim.arch_betas", "[0, 1)"]
    ),
    "malformed device": Case(_search("device=cuda:x"), ["device", "cuda:x"]),
    "seed beyond 2**32": Case(_search("seed=4294967296"), ["seed"]),
    "negative split seed": Case(_search("data.split_seed=-1"), ["data.split_seed"]),
    "odd train width": Case(
        ["train", "--genotype", "SNAS_mild", "--set", "train.init_channels=5"],
        ["train.init_channels", "even"],
    ),
    "--out a file": Case(_search(out="{d}/file"), ["--out", "is a file"], _write("file", "x")),
    "--out empty": Case(_search(out=""), ["--out", "empty"]),
    "genotype nested too deeply": Case(
        ["genotype", "{d}/g.json"], ["g.json", "nested too deeply"], _write("g.json", "[" * 10**5)
    ),
    "cost width search rejects": Case(
        ["cost", "SNAS_mild", "--init-channels", "3"], ["--init-channels", "even"]
    ),
    "collect empty folder": Case(["collect", "{d}"], ["collect", "no run folders"]),
    "collect no usable run": Case(
        ["collect", "{d}/runs"], ["collect", "1 skipped", "invalid JSON"], _broken_runs
    ),
    "collect unknown metric": Case(
        ["collect", "{d}/runs", "--metric", "acc"], ["--metric", "val_acc"], _good_runs
    ),
    "collect negative top": Case(["collect", "{d}/runs", "--top", "-1"], ["--top"], _good_runs),
    "collect negative retrain": Case(
        ["collect", "{d}/runs", "--retrain", "-2"], ["--retrain"], _good_runs
    ),
    "zero-byte checkpoint": Case(
        ["train", "--test", "--checkpoint", "{d}/ck.pt"], ["ck.pt", "corrupt"], _checkpoint("zero")
    ),
    "truncated checkpoint": Case(
        ["train", "--test", "--checkpoint", "{d}/ck.pt"],
        ["ck.pt", "corrupt"],
        _checkpoint("truncated"),
    ),
    "checkpoint missing a key": Case(
        ["train", "--test", "--checkpoint", "{d}/ck.pt"],
        ["ck.pt", "'model' is missing"],
        _checkpoint("keys"),
    ),
    "sweep bound not finite": Case(
        SWEEP,
        ["sweep.cost.resource_lambda", "finite"],
        _sweep_config("  cost.resource_lambda: {uniform: [0, .inf]}\n"),
    ),
    "tune option not finite": Case(
        SWEEP,
        ["tune.cpus_per_worker", "finite"],
        _sweep_config("  seed: {grid: [0]}\n", "  cpus_per_worker: .inf\n"),
    ),
    "corrupt sweep.yaml": Case(SWEEP, ["out/sweep.yaml", "not valid YAML"], _saved_sweep("a: [\n")),
    "empty sweep.yaml": Case(SWEEP, ["out/sweep.yaml", "sweep: names nothing"], _saved_sweep("")),
    "different sweep": Case(
        SWEEP,
        ["different sweep", "sweep.seed={'grid': [0, 2]} there"],
        _saved_sweep(_sweep_text("  seed: {grid: [0, 2]}\n")),
    ),
    # A device this machine lacks (CUDA index past the last GPU, or CUDA on a CPU machine) is
    # refused where the device is resolved, not when the config is validated.
    "absent device": Case(_search(f"device=cuda:{torch.cuda.device_count()}"), ["device", "cuda:"]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_bad_input_is_one_line_naming_the_field(case: Case, tmp_path: Path, capsys) -> None:
    if case.setup is not None:
        case.setup(tmp_path)
    argv = [a.replace("{d}", str(tmp_path)) for a in case.argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors: usage, then one error line
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if re.match(r"snas-ray( \w+)?: error:", line)]
    assert len(errors) == 1, err
    for needle in case.named:
        assert needle in errors[0], errors[0]
    assert not list(tmp_path.rglob("*.pt")) or argv[0] == "train"  # no work started
