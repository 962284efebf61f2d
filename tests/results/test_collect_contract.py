"""Collect ranks any folder that keeps the run-folder contract, and draws identical results once."""

from __future__ import annotations

import json
from pathlib import Path

from run_folders import make_run

from snas_ray.results import collect
from snas_ray.results.plots import COST_LABELS, identical_points


def _drop(run: Path, *keys: str) -> None:
    data = json.loads((run / "result.json").read_text())
    for key in keys:
        del data[key]
    (run / "result.json").write_text(json.dumps(data))


def test_a_run_without_epochs_ranks_with_its_completeness_unknown(tmp_path: Path) -> None:
    # The contract promises val_acc, params, flops, mac, epochs_done and the settings; an older
    # snas-ray, a hand-made folder or another tool may leave out the planned "epochs".
    _drop(make_run(tmp_path, "older", acc=0.8, params=100), "epochs")
    make_run(tmp_path, "current", acc=0.7, params=50)
    lb = collect(tmp_path)
    assert [r.run for r in lb.rows] == ["older", "current"] and not lb.skipped
    assert lb.warnings == ["older: result.json has no 'epochs': whether it finished is unknown"]
    records = {rec["run"]: rec for rec in lb.records()}
    assert records["older"]["epochs"] is None and records["current"]["epochs"] == 2
    assert "warning: older: result.json has no 'epochs'" in lb.format_table()
    lb.write(tmp_path / "out")  # the report and CSV take the missing value
    assert "whether it finished is unknown" in (tmp_path / "out" / "report.md").read_text()


def test_a_run_missing_a_promised_key_is_still_broken(tmp_path: Path) -> None:
    _drop(make_run(tmp_path, "no_done", acc=0.8, params=100), "epochs_done")
    (skipped,) = collect(tmp_path).skipped
    assert skipped.kind == "broken" and "'epochs_done'" in skipped.reason


def test_identical_results_are_one_point_with_a_count(tmp_path: Path) -> None:
    # A lambda-0 sweep: every estimator finds the same child; the leaderboard keeps each run.
    for est in ("reparametrization", "discrete", "policy_gradient"):
        make_run(tmp_path, f"lam0-{est}", acc=0.65, params=295, est=est)
    make_run(tmp_path, "lam1", acc=0.6, params=100, lam=0.01, genotype="DARTS")
    lb = collect(tmp_path)
    assert len(lb.rows) == 4
    points = identical_points(lb.rows, "params")
    assert sorted(len(p) for p in points) == [1, 3]
    lb.write(tmp_path / "out")
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 0


def test_same_cost_and_accuracy_but_another_child_is_another_point(tmp_path: Path) -> None:
    make_run(tmp_path, "a", acc=0.65, params=295, genotype="SNAS_mild")
    make_run(tmp_path, "b", acc=0.65, params=295, genotype="DARTS")
    assert len(identical_points(collect(tmp_path).rows, "params")) == 2


def test_mac_is_labelled_memory_access() -> None:
    assert "memory access" in COST_LABELS["mac"] and "multiply-adds" in COST_LABELS["flops"]


def test_retrainings_of_different_genotypes_are_not_one_seed_group(tmp_path: Path) -> None:
    # train.genotype (a path) may differ between runs of one setting; the genotype may not.
    for name, genotype in (("a", "SNAS_mild"), ("b", "DARTS")):
        run = make_run(tmp_path, name, acc=0.9, params=100, genotype=genotype)
        data = json.loads((run / "result.json").read_text())
        (run / "result.json").write_text(json.dumps(data | {"genotype_source": f"{name}.json"}))
    assert len(collect(tmp_path).groups) == 2
