"""The command line as users run it: errors are one line with exit status 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TINY = [
    "--set",
    "space.layers=3",
    "--set",
    "space.init_channels=4",
    "--set",
    "search.epochs=1",
    "--set",
    "search.batch_size=4",
    "--set",
    "data.name=synthetic",
    "--set",
    "data.image_size=8",
    "--set",
    "data.synthetic_size=32",
    "--set",
    "data.limit=8",
    "--set",
    "device=cpu",
]


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "snas_ray", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("snas-ray: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--set", "cost.resouce_lambda=1"], ["cost.resouce_lambda", "cost.resource_lambda"]),
        (["--set", "search.epochs=abc"], ["search.epochs", "integer"]),
        (["--set", "cost.resource_lambda=-0.1"], ["cost.resource_lambda", ">= 0"]),
        (["--set", "cost.estimator=reinforce"], ["cost.estimator", "policy_gradient"]),
        (["--set", "space.primitives=[none,sep_conv_9x9]"], ["space.primitives", "sep_conv_9x9"]),
        (["--config", "does/not/exist.yaml"], ["--config", "not found"]),
    ],
)
def test_bad_config_is_one_line_error(args, needles, tmp_path):
    _assert_one_line_error(run_cli("search", *args, "--out", str(tmp_path / "r")), *needles)


def test_missing_dataset_folder_is_one_line_error(tmp_path):
    proc = run_cli(
        "search",
        *TINY,
        "--set",
        "data.name=cifar10",
        "--set",
        f"data.root={tmp_path}/nope",
        "--set",
        "data.download=false",
        "--out",
        str(tmp_path / "r"),
    )
    _assert_one_line_error(proc, "data.root", "CIFAR-10 not found")


def test_corrupt_checkpoint_is_one_line_error(tmp_path):
    ckpt = tmp_path / "r" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x00garbage")
    _assert_one_line_error(run_cli("search", *TINY, "--out", str(tmp_path / "r")), "corrupt")


def test_unknown_genotype_is_one_line_error():
    _assert_one_line_error(run_cli("genotype", "SNAS_mld"), "SNAS_mild")


def test_search_end_to_end_prints_result(tmp_path):
    proc = run_cli("search", *TINY, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["epochs_done"] == 1 and summary["params"] > 0
    assert "epoch 1/1 done" in proc.stderr  # progress is visible
    assert (tmp_path / "r" / "result.json").is_file()


def test_search_help_does_not_import_ray():
    code = (
        "import sys; from snas_ray.cli import main\n"
        "try:\n    main(['search', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_no_ray_import_outside_distributed():
    import ast
    from pathlib import Path

    import snas_ray

    root = Path(snas_ray.__file__).parent
    for path in root.rglob("*.py"):
        if "distributed" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "ray" or n.startswith("ray.") for n in names), path
