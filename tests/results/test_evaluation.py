"""Evaluation verdicts and reports on hand-made retrainings; collect folds them in (no torch)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from run_folders import make_run

from snas_ray.results import collect
from snas_ray.results.evaluation import compare, summarize
from snas_ray.results.evaluation_report import write_evaluation
from snas_ray.results.stats import t_cdf, t_quantile, welch


def test_t_quantiles_match_the_table():
    table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 10: 2.2281, 30: 2.0423}
    for df, q in table.items():
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
        assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-5)
    assert t_quantile(0.95, 5) == pytest.approx(2.0150, abs=1e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.95996, abs=1e-5)


def test_welch_interval_by_hand():
    # Equal variances and sizes: Welch's df is 2(n - 1) = 4 and se = sqrt(2 s^2 / n).
    c = welch([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], 0.95)
    se = math.sqrt(2 * 0.0001 / 3)
    assert c.df == pytest.approx(4.0)
    assert c.diff == pytest.approx(0.10)
    assert c.low == pytest.approx(0.10 - 2.776445 * se) and c.winner == "a"


def _records(search: list[float], randoms: dict[str, list[float]]) -> list[dict]:
    def rec(name, source, acc, seed, matched_to=None):
        return {
            "genotype": f"genotypes/{name}.json",
            "name": name,
            "source": source,
            "matched_to": matched_to,
            "search_run": "../runs/a" if source == "search" else None,
            "params": 20_000 if source == "search" else 21_000,
            "flops": 1_000_000,
            "mac": 200_000,
            "seed": seed,
            "test_acc": acc,
            "run": f"runs/{name}-seed={seed}",
        }

    out = [rec("search-1", "search", a, s) for s, a in enumerate(search)]
    for name, accs in randoms.items():
        out += [rec(name, "random", a, s, "search-1") for s, a in enumerate(accs)]
    return out


def test_overlapping_seeds_are_not_distinguishable():
    records = _records(
        [0.960, 0.972, 0.965],
        {"random-1a": [0.958, 0.975, 0.962], "random-1b": [0.969, 0.955, 0.97]},
    )
    ev = summarize(records)
    assert [v.b for v in ev.pairs] == ["random-1a", "random-1b"]
    for verdict in [*ev.pairs, ev.overall]:
        assert verdict.text.startswith("not distinguishable"), verdict.text
        assert verdict.comparison.winner is None
    assert "3 vs 3 seeds" in ev.pairs[0].text
    assert "3 vs 6 runs" in ev.overall.text  # one front genotype: every retraining counts


def test_a_large_gap_names_the_winner_either_way():
    ev = summarize(_records([0.97, 0.975, 0.98], {"random-1a": [0.80, 0.82, 0.81]}))
    assert ev.pairs[0].text.startswith("search-1 is better: search-1 - random-1a = +16.50 pp")
    assert ev.overall.text.startswith("search is better")
    worse = summarize(_records([0.60, 0.62, 0.61], {"random-1a": [0.90, 0.91, 0.92]}))
    assert worse.pairs[0].text.startswith("random-1a is better")
    assert "one-sided p = " in worse.pairs[0].text


def test_one_seed_is_too_few_to_call():
    verdict = compare("a", [0.99], "b", [0.10], unit="seeds", confidence=0.95)
    assert verdict.text.startswith("not distinguishable") and "too few" in verdict.text


def test_overall_compares_genotype_means_with_two_front_genotypes():
    records = _records([0.9, 0.91], {"random-1a": [0.8, 0.81]})
    second = _records([0.92, 0.93], {"random-1a": [0.82, 0.8]})
    for rec in second:
        rec["name"] = rec["name"].replace("-1", "-2")
        rec["matched_to"] = rec["matched_to"] and "search-2"
    ev = summarize(records + second)
    assert [g.name for g in ev.genotypes] == ["search-1", "random-1a", "search-2", "random-2a"]
    assert "2 vs 2 genotypes" in ev.overall.text


def _evaluated_sweep(root: Path) -> Path:
    """A sweep with two search runs and an evaluation of run ``a`` beside them."""
    make_run(root / "runs", "a", acc=0.70, params=100, lam=1e-2)
    make_run(root / "runs", "b", acc=0.60, params=300, lam=0.0)
    evaluation = root / "evaluate"
    records = _records([0.95, 0.96, 0.955], {"random-1a": [0.99, 0.985, 0.99]})
    for rec in records:  # each retraining is a run folder whose result.json has no val_acc
        run = evaluation / rec["run"]
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"test_acc": rec["test_acc"]}))
        (run / "config.yaml").write_text("seed: 0\n")
    (evaluation / "evaluate.yaml").write_text("evaluate: {}\n")
    write_evaluation(evaluation, records, cost="params", confidence=0.95)
    return root


def test_write_evaluation_files(tmp_path):
    root = _evaluated_sweep(tmp_path)
    text = (root / "evaluate" / "evaluation.md").read_text()
    assert "**Overall:** random is better" in text
    assert "`search-1` vs `random-1a`: random-1a is better" in text
    assert "95.50 ± 0.50% (3 seeds)" in text
    assert (root / "evaluate" / "evaluation.png").stat().st_size > 10_000
    assert len(json.loads((root / "evaluate" / "evaluation.json").read_text())) == 6


def test_collect_folds_retrained_accuracy_into_columns_of_its_own(tmp_path):
    board = collect(_evaluated_sweep(tmp_path))
    # The evaluation's retrain folders are neither runs nor broken runs.
    assert [r.run for r in board.rows] == ["runs/a", "runs/b"] and not board.skipped
    a, b = board.rows
    assert a.acc == a.search_acc == 0.70 and a.rank == 1  # ranked on the search metric only
    assert a.retrained.mean == pytest.approx(0.955) and b.retrained is None
    assert [g.name for g in board.baselines] == ["random-1a"]
    assert [r.run for r in board.front] == ["runs/a"]  # baselines never join the front
    rec = board.records()[0]
    assert rec["acc"] == 0.70 and rec["retrained_acc_mean"] == pytest.approx(0.955)
    assert rec["retrained_seeds"] == 3 and rec["retrained_as"] == "search-1"
    assert "95.50±0.50% (3)" in board.format_table()
    assert "random baseline random-1a (matches search-1): 98.83" in board.format_table()


_COLLECT = """
import sys
from snas_ray.results import collect
report = collect(sys.argv[1]).write()
text = report.read_text()
assert "## Retrained (snas-ray evaluate)" in text and "random, matches search-1" in text
for name in ("torch", "ray"):
    assert name not in sys.modules, f"{name} imported"
print("ok")
"""


def test_collect_of_an_evaluated_sweep_imports_no_torch(tmp_path):
    root = _evaluated_sweep(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECT, str(root)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert (root / "collect" / "pareto.png").is_file()
