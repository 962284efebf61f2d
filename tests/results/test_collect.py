"""Tests for snas_ray.results: collect, leaderboard and report on hand-made run folders."""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
import types
from pathlib import Path

import pytest
import yaml
from run_folders import make_run

from snas_ray.cli import main
from snas_ray.published import REGISTRY, load_genotype
from snas_ray.results import collect, pareto_front
from snas_ray.results.convergence import child_cost_history


def test_pareto_front_hand_placed() -> None:
    points = {
        "cheapest": (0.70, 5),
        "equal_acc_dearer": (0.70, 8),  # same accuracy as "cheapest", more cost
        "twin_a": (0.80, 10),  # identical twins: neither dominates the other
        "twin_b": (0.80, 10),
        "equal_cost_worse": (0.83, 20),  # same cost as "mid", less accurate
        "mid": (0.85, 20),
        "dominated": (0.85, 25),
        "equal_cost_top_worse": (0.90, 40),
        "top": (0.95, 40),
    }
    flags = dict(zip(points, pareto_front(list(points.values())), strict=True))
    assert {name for name, on in flags.items() if on} == {
        "cheapest",
        "twin_a",
        "twin_b",
        "mid",
        "top",
    }
    assert pareto_front([]) == []


def test_pareto_front_is_the_non_dominated_set() -> None:
    # Small integer grids force many ties in accuracy, in cost and in both.
    rng = random.Random(0)
    for _ in range(200):
        pts = [(rng.randint(0, 4), rng.randint(0, 4)) for _ in range(rng.randint(1, 12))]
        expected = [
            not any(b[0] >= a[0] and b[1] <= a[1] and (b[0] > a[0] or b[1] < a[1]) for b in pts)
            for a in pts
        ]
        assert pareto_front(pts) == expected


def test_ranks_front_and_costs(tmp_path: Path) -> None:
    make_run(tmp_path, "a", acc=0.90, params=300, lam=0.0)
    make_run(tmp_path, "b", acc=0.90, params=200, lam=1e-3)  # ties a, cheaper: a off the front
    make_run(tmp_path, "c", acc=0.80, params=100, lam=1e-2)
    make_run(tmp_path, "d", acc=0.80, params=150, lam=1e-2, est="discrete")
    make_run(tmp_path, "nested/deeper/e", acc=0.95, params=400, lam=1e-4)
    lb = collect(tmp_path)
    assert [r.run for r in lb.rows] == ["nested/deeper/e", "b", "a", "c", "d"]
    assert [r.rank for r in lb.rows] == [1, 2, 2, 4, 4]
    assert {r.run for r in lb.rows if r.pareto} == {"nested/deeper/e", "b", "c"}
    assert [r.run for r in lb.front] == ["c", "b", "nested/deeper/e"]  # cheapest first
    # Another cost axis: flops = 10 * params keeps the same front here.
    assert {r.run for r in collect(tmp_path, cost="flops").front} == {"nested/deeper/e", "b", "c"}
    assert [r.search_acc for r in collect(tmp_path, metric="val_acc_relaxed").rows][0] == 0.475
    assert collect(tmp_path, metric="val/acc_child").rows[0].search_acc == 0.95
    assert lb.skipped == [] and lb.warnings == []


def test_seeds_aggregate_to_mean_and_sample_std(tmp_path: Path) -> None:
    for seed, acc in enumerate([0.80, 0.84, 0.88]):
        make_run(tmp_path, f"lam1e-3-s{seed}", acc=acc, params=100 + seed, lam=1e-3, seed=seed)
    make_run(tmp_path, "lam0-s0", acc=0.70, params=90, lam=0.0)
    make_run(tmp_path, "lam0-lr-s0", acc=0.75, params=90, lam=0.0, lr=0.1)
    lb = collect(tmp_path)
    assert lb.swept == ["cost.resource_lambda", "optim.lr", "seed"]
    by_runs = {g.runs: g for g in lb.groups}
    three = by_runs[("lam1e-3-s0", "lam1e-3-s1", "lam1e-3-s2")]
    assert three.mean == pytest.approx(0.84)
    assert three.std == pytest.approx(0.04)  # sample std: sqrt((0.04^2 + 0 + 0.04^2) / 2)
    assert three.seeds == (0, 1, 2) and three.cost_mean == pytest.approx(101)
    assert three.settings == {"cost.resource_lambda": 1e-3, "optim.lr": 0.05}
    assert by_runs[("lam0-s0",)].std is None and by_runs[("lam0-s0",)].mean == 0.70
    assert [g.id for g in lb.groups] == [1, 2, 3] and lb.groups[0] is three
    rec = {r["run"]: r for r in lb.records()}
    assert rec["lam1e-3-s2"]["group_mean"] == pytest.approx(0.84)
    assert rec["lam1e-3-s2"]["group_size"] == 3
    assert rec["lam0-lr-s0"]["optim.lr"] == 0.1  # a swept field becomes a column


def test_fields_a_resume_may_change_do_not_split_groups(tmp_path: Path) -> None:
    # Exactly config.RESUME_MAY_DIFFER is bookkeeping: where or how fast a run writes.
    for seed, (device, tb, log_every, root) in enumerate(
        [("cpu", True, 50, "data"), ("cuda", False, 7, "/elsewhere")]
    ):
        run = make_run(tmp_path, f"s{seed}", acc=0.80 + seed / 100, params=100, seed=seed)
        config = yaml.safe_load((run / "config.yaml").read_text())
        config |= {"device": device, "output": {"tensorboard": tb, "checkpoint_every": seed + 1}}
        config |= {"train": {"log_every": log_every, "channels_last": bool(seed)}}
        config |= {"search": {"eval_batch_size": 64 * (seed + 1)}, "data": {"root": root}}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    lb = collect(tmp_path)
    assert lb.swept == ["seed"]
    assert [g.runs for g in lb.groups] == [("s0", "s1")]
    assert "device" not in lb.rows[0].settings and "optim.lr" in lb.rows[0].settings


def test_broken_and_unfinished_runs_are_reported_and_skipped(tmp_path: Path) -> None:
    make_run(tmp_path, "good", acc=0.9, params=100)
    make_run(tmp_path, "unfinished", acc=0.5, params=100, epochs_done=1)
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "running" / "metrics.jsonl").write_text("")
    bad_json = make_run(tmp_path, "bad_json", acc=0.9, params=1)
    (bad_json / "result.json").write_text("{not json")
    missing = make_run(tmp_path, "missing", acc=0.9, params=1)
    data = json.loads((missing / "result.json").read_text())
    del data["flops"]
    (missing / "result.json").write_text(json.dumps(data))
    nan = make_run(tmp_path, "nan", acc=math.nan, params=1)
    listed = make_run(tmp_path, "not_object", acc=0.9, params=1)
    (listed / "result.json").write_text("[1, 2]")
    bad_genotype = make_run(tmp_path, "bad_genotype", acc=0.9, params=1)
    (bad_genotype / "genotype.json").write_text('{"normal": []}')
    bad_config = make_run(tmp_path, "bad_config", acc=0.9, params=1)
    (bad_config / "config.yaml").write_text("a: [unclosed\n")
    # Ray Tune's own trial bookkeeping is not a run folder, and neither is collect's output.
    (tmp_path / "tune_trial").mkdir()
    (tmp_path / "tune_trial" / "result.json").write_text('{"training_iteration": 1}\n{}\n')
    (tmp_path / "tune_trial" / "progress.csv").write_text("a\n1\n")
    make_run(tmp_path / "collect", "old_output", acc=1.0, params=1)
    assert nan.exists()

    lb = collect(tmp_path)
    assert [r.run for r in lb.rows] == ["good"]
    kinds = {s.run: (s.kind, s.reason) for s in lb.skipped}
    assert set(kinds) == {
        "unfinished",
        "running",
        "bad_json",
        "missing",
        "nan",
        "not_object",
        "bad_genotype",
        "bad_config",
    }
    assert kinds["unfinished"] == ("unfinished", "1 of 2 epochs done")
    assert kinds["running"] == ("unfinished", "no result.json yet")
    assert kinds["bad_json"][0] == "broken" and "invalid JSON" in kinds["bad_json"][1]
    assert "missing field 'flops'" in kinds["missing"][1]
    assert kinds["nan"][1] == "result.json: holds NaN, not a finite number"
    assert "not an object" in kinds["not_object"][1]
    assert "genotype" in kinds["bad_genotype"][1] and "config.yaml" in kinds["bad_config"][1]
    assert all(
        kind == "broken" for run, (kind, _) in kinds.items() if "unfinished" != run != "running"
    )
    table = lb.format_table()
    assert "skipped bad_json: broken: result.json: invalid JSON" in table


def test_write_outputs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep, "rep-s0", acc=0.90, params=200, lam=1e-3, genotype="SNAS_mild")
    make_run(sweep, "rep-s1", acc=0.86, params=220, lam=1e-3, seed=1, genotype="DARTS_V2")
    make_run(
        sweep, "disc", acc=0.80, params=100, lam=1e-2, est="discrete", genotype="SNAS_aggressive"
    )
    make_run(sweep, "pg", acc=0.70, params=150, lam=1e-2, est="policy_gradient")
    (sweep / "broken").mkdir()
    (sweep / "broken" / "result.json").write_text("{")
    lb = collect(sweep)
    out = tmp_path / "out"
    report = lb.write(out)

    records = json.loads((out / "leaderboard.json").read_text())
    assert isinstance(records, list) and len(records) == 4
    for key in ("run", "val_acc", "params", "flops", "mac", "pareto", "rank", "estimator"):
        assert all(key in rec for rec in records), key
    assert {"resource_lambda", "seed", "genotype", "group_mean", "group_std"} <= set(records[0])
    assert records[0]["run"] == "rep-s0" and records[0]["genotype"] == "rep-s0/genotype.json"
    assert [rec["pareto"] for rec in records] == [True, False, True, False]
    header = (out / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["run", "rank", "pareto"] and "mac" in header

    front = sorted(p.name for p in (out / "front").iterdir())
    assert front == ["disc.json", "rep-s0.json"]
    assert load_genotype(out / "front" / "rep-s0.json") == REGISTRY["SNAS_mild"]
    assert load_genotype(out / "front" / "disc.json") == REGISTRY["SNAS_aggressive"]
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["disc-normal.png", "disc-reduce.png", "rep-s0-normal.png", "rep-s0-reduce.png"]
    for png in [out / "pareto.png", *(out / "cells").iterdir()]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    text = report.read_text()
    assert report == out / "report.md"
    needles = ["![accuracy against cost](pareto.png)", "cells/rep-s0-normal.png", "broken"]
    needles += ["front/disc.json", "mean ± std", "| 1 | `rep-s0` | 90.00% |"]
    for needle in needles:
        assert needle in text, needle
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temp files

    # A later collect with a new front replaces front/ and cells/ files.
    make_run(sweep, "best", acc=0.99, params=50)
    collect(sweep).write(out)
    assert sorted(p.name for p in (out / "front").iterdir()) == ["best.json"]
    assert len(list((out / "cells").iterdir())) == 2


def test_an_old_retrain_folder_no_longer_outranks_the_search(tmp_path: Path) -> None:
    # Retrained and search accuracy are never ranked together (issue 14): a retrain/ folder
    # inside a run is part of that run, and only an evaluation's columns show retrained numbers.
    make_run(tmp_path, "a", acc=0.90, params=200)
    b = make_run(tmp_path, "b", acc=0.80, params=300)
    (b / "retrain").mkdir()
    (b / "retrain" / "result.json").write_text(json.dumps({"test_acc": 0.97}))
    lb = collect(tmp_path)
    assert [(r.run, r.acc) for r in lb.rows] == [("a", 0.90), ("b", 0.80)]
    assert lb.records()[1]["retrained_acc_mean"] is None and not lb.warnings


def test_retrain_is_a_shortcut_to_evaluate(tmp_path: Path, monkeypatch, capsys) -> None:
    make_run(tmp_path, "a", acc=0.90, params=200)
    make_run(tmp_path, "b", acc=0.80, params=100)
    calls = []

    def run_evaluation(spec, sweep_dir, out=None, **kw):
        calls.append((spec.options, spec.base.train.epochs, Path(sweep_dir), out))
        return types.SimpleNamespace(lines=lambda: [], genotypes=[], notes=["a note"], cost="mac")

    fake = types.ModuleType("snas_ray.distributed.evaluate")
    fake.run_evaluation = run_evaluation
    monkeypatch.setitem(sys.modules, "snas_ray.distributed.evaluate", fake)
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"train": {"epochs": 3}, "evaluate": {"random": 1}}))
    argv = ["collect", str(tmp_path), "--retrain", "2", "--cost", "mac"]
    assert main(argv + ["--retrain-config", str(config)]) == 0
    [(options, epochs, sweep_dir, out)] = calls
    assert (options.top, options.random, options.cost, options.metric) == (2, 1, "mac", "val_acc")
    assert epochs == 3 and sweep_dir == tmp_path and out is None  # into SWEEP_DIR/evaluate
    assert "note: a note" in capsys.readouterr().out


def test_cli_collect(tmp_path: Path, capsys) -> None:
    for i, (acc, params) in enumerate([(0.9, 300), (0.8, 100), (0.85, 400)]):
        make_run(tmp_path / "sweep", f"run{i}", acc=acc, params=params, lam=10.0**-i)
    assert main(["collect", str(tmp_path / "sweep"), "--cost", "mac", "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["rank", "front", "accuracy", "mac"]
    assert out[1].split()[:4] == ["1", "*", "90.00%", "900"]
    assert out[3] == "... and 1 more runs"
    assert (tmp_path / "sweep" / "collect" / "report.md").is_file()
    assert main(["collect", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_cost_and_rank_order_tie_breaks_are_stable(tmp_path: Path) -> None:
    # Equal accuracy and cost: both on the front, same rank, ordered by run name.
    for name in ("y", "x"):
        make_run(tmp_path, name, acc=0.5, params=10)
    lb = collect(tmp_path)
    assert [(r.run, r.rank, r.pareto) for r in lb.rows] == [("x", 1, True), ("y", 1, True)]
    assert list(itertools.chain.from_iterable(g.runs for g in lb.groups)) == ["x", "y"]


def test_empty_folder_and_single_run_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    lb = collect(tmp_path / "empty")
    assert lb.rows == [] and lb.front == [] and lb.skipped == []
    lb.write(tmp_path / "empty-out")
    assert json.loads((tmp_path / "empty-out" / "leaderboard.json").read_text()) == []
    assert (tmp_path / "empty-out" / "pareto.png").is_file()
    run = make_run(tmp_path, "one", acc=0.5, params=10)
    lb = collect(run)  # a run folder on its own
    assert [(r.run, r.slug, r.pareto) for r in lb.rows] == [(".", "run", True)]
    assert lb.write() == run / "collect" / "report.md"  # the default output folder
    assert collect(run).rows[0].run == "."  # and its output is not read back as a run


def test_budgeted_runs_show_budget_against_achieved_cost(tmp_path: Path) -> None:
    for name, budget, params in (("b30k", 30_000, 31_000), ("b60k", 60_000, 55_000)):
        run = make_run(tmp_path, name, acc=0.8, params=params)
        result = json.loads((run / "result.json").read_text())
        result |= {"budget": budget, "budget_metric": "params", "resource_lambda_final": 2e-3}
        result["budget_cost"] = {
            "layers": 5,
            "init_channels": 8,
            "params": params,
            "flops": 1,
            "mac": 1,
        }
        (run / "result.json").write_text(json.dumps(result))
        epochs = [{"epoch": e, "child/params": params * (1.75 - e / 4)} for e in (1, 2, 3)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    make_run(tmp_path, "free", acc=0.85, params=90_000)
    lb = collect(tmp_path)
    recs = {rec["run"]: rec for rec in lb.records()}
    assert recs["b30k"]["budget"] == 30_000 and recs["b30k"]["budget_achieved"] == 31_000
    assert recs["b60k"]["resource_lambda_final"] == 2e-3
    assert recs["free"]["budget"] is None and recs["free"]["budget_achieved"] is None
    table = lb.format_table()
    assert "b30k: budget 30K params -> child 31K (+3.3%)" in table
    assert "b60k: budget 60K params -> child 55K (-8.3%)" in table
    out = lb.write(tmp_path / "collect")
    assert "child at budget size" in out.read_text()
    assert "(budget.png)" in out.read_text() and (out.parent / "budget.png").stat().st_size > 0
    assert child_cost_history(tmp_path / "b30k", "params") == [
        (1, 46_500.0),
        (2, 38_750.0),
        (3, 31_000.0),
    ]
    # A metrics.jsonl from before epochs were 1-based is shifted, not drawn one epoch early.
    old = [{"epoch": e, "child/params": 10.0 * e} for e in (0, 1)]
    (tmp_path / "b30k" / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in old))
    assert child_cost_history(tmp_path / "b30k", "params") == [(1, 0.0), (2, 10.0)]


def test_no_budget_no_budget_plot(tmp_path: Path) -> None:
    make_run(tmp_path, "free", acc=0.85, params=90_000)
    out = collect(tmp_path).write(tmp_path / "collect")
    assert not (out.parent / "budget.png").exists() and "budget.png" not in out.read_text()


@pytest.mark.parametrize(
    ("result", "config", "reason"),
    [
        ({"val_acc": 1.5}, None, "result.json: val_acc is 1.5, outside [0, 1]"),
        ({"val_acc_relaxed": -0.1}, None, "result.json: val_acc_relaxed is -0.1, outside [0, 1]"),
        ({"params": -5}, None, "result.json: params is -5, outside [0, 1e+18]"),
        ({"flops": 10**400}, None, "result.json: flops is huge, outside [0, 1e+18]"),
        ({"epochs": 10**12, "epochs_done": 10**12}, None, "result.json: epochs_done is"),
        ({"budget": -1.0}, None, "result.json: budget is -1, outside"),
        ({}, "seed: 0\nstarted: 2024-01-01\n", "config.yaml: started holds a date (2024-01-01)"),
        ({}, "seed: 0\nx: !!binary aGk=\n", "config.yaml: x holds a bytes"),
        ({}, "seed: 0\noptim: {lr: .nan}\n", "config.yaml: optim.lr is nan"),
        ({}, "seed: 0\nseed: 1\n", "duplicate key 'seed'"),
    ],
)
def test_result_files_out_of_range_are_skipped_with_a_reason(
    tmp_path: Path, result: dict, config: str | None, reason: str
) -> None:
    make_run(tmp_path, "good", acc=0.5, params=10)
    bad = make_run(tmp_path, "bad", acc=0.5, params=10)
    data = json.loads((bad / "result.json").read_text()) | result
    (bad / "result.json").write_text(json.dumps(data))
    if config is not None:
        (bad / "config.yaml").write_text(config)
    lb = collect(tmp_path)
    assert [r.run for r in lb.rows] == ["good"]
    ((run, kind, why),) = [(s.run, s.kind, s.reason) for s in lb.skipped]
    assert (run, kind) == ("bad", "broken") and reason in why and "\n" not in why
    lb.write(tmp_path / "out")  # and nothing of it reaches the written files
    assert "NaN" not in (tmp_path / "out" / "leaderboard.json").read_text()


def test_collect_deletes_only_files_it_wrote(tmp_path: Path, capsys) -> None:
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    make_run(sweep, "a", acc=0.9, params=300)
    loser = make_run(sweep, "b", acc=0.8, params=100)  # on the front until it is beaten
    assert main(["collect", str(sweep), "--out", str(out)]) == 0
    assert (out / "front" / "b.json").is_file() and (out / "cells" / "b-normal.png").is_file()
    (out / "notes.md").write_text("mine")
    result = json.loads((loser / "result.json").read_text()) | {"params": 400}
    (loser / "result.json").write_text(json.dumps(result))  # b drops off the front
    assert main(["collect", str(sweep), "--out", str(out)]) == 0
    assert not (out / "front" / "b.json").exists() and not (out / "cells" / "b-reduce.png").exists()
    assert (out / "front" / "a.json").is_file() and (out / "notes.md").read_text() == "mine"
    # A file of someone else's in front/ stops collect before it writes anything.
    (out / "front" / "keep.json").write_text("{}")
    board = (out / "leaderboard.json").read_bytes()
    capsys.readouterr()
    assert main(["collect", str(sweep), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snas-ray: error: collect:") and "front/keep.json" in err
    assert "\n" not in err and (out / "front" / "keep.json").read_text() == "{}"
    assert (out / "leaderboard.json").read_bytes() == board
