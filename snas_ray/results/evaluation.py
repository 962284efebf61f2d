"""An evaluation's retrainings as statistics: per-genotype accuracy over seeds and verdicts.

``evaluation.json`` holds one object per retraining (genotype, source, matched_to, costs, seed,
test_acc, run). :func:`summarize` groups them per genotype and compares each front genotype with
each of its cost-matched random genotypes, and all front genotypes with all random ones, by
Welch's interval on the difference of mean test accuracy (:mod:`.stats`): a side wins only when
the interval excludes zero, otherwise the verdict is "not distinguishable". No torch here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snas_ray.layout import EVALUATE_SPEC, EvaluatePaths
from snas_ray.results.retrained import GenotypeStats
from snas_ray.results.stats import Comparison, welch

__all__ = [
    "REQUIRED",
    "Evaluation",
    "Verdict",
    "compare",
    "find_evaluations",
    "read_evaluation",
    "summarize",
]

# Fields every evaluation.json record has (more may follow).
REQUIRED = ("genotype", "name", "source", "matched_to", "params", "flops", "mac", "seed")
REQUIRED += ("test_acc", "run")


@dataclass(frozen=True)
class Verdict:
    """``a`` against ``b``: the comparison and its plain sentence."""

    a: str
    b: str
    comparison: Comparison
    unit: str  # what was counted: "seeds", "genotypes" or "runs"
    text: str


def compare(
    a: str,
    a_accs: Sequence[float],
    b: str,
    b_accs: Sequence[float],
    *,
    unit: str,
    confidence: float,
) -> Verdict:
    """The verdict on mean(a) - mean(b), in percentage points, naming the winner if any."""
    c = welch(list(a_accs), list(b_accs), confidence)
    counts = f"{c.n_a} vs {c.n_b} {unit}"
    diff = f"{a} - {b} = {100 * c.diff:+.2f} pp"
    if c.low is None or c.high is None:
        text = f"not distinguishable: {diff}; {counts} are too few to estimate the spread"
    else:
        ci = f"{c.confidence:.0%} CI [{100 * c.low:+.2f}, {100 * c.high:+.2f}] pp"
        p = f"one-sided p = {c.p_greater:.3g}" if c.winner == "a" else ""
        p = f"one-sided p = {1 - c.p_greater:.3g}" if c.winner == "b" else p
        if c.winner is None:
            text = f"not distinguishable: {diff}, {ci} includes 0 ({counts}, Welch t)"
        else:
            winner = a if c.winner == "a" else b
            text = f"{winner} is better: {diff}, {ci} ({counts}, Welch t, {p})"
    return Verdict(a, b, c, unit, text)


@dataclass
class Evaluation:
    """Per-genotype statistics and verdicts of one evaluation.

    Attributes:
        records: The evaluation.json records.
        genotypes: Front genotypes in name order, each followed by its random matches.
        pairs: One verdict per front genotype and each of its random matches.
        overall: Front genotypes against random ones (genotype means when each side has two or
            more genotypes, else every retraining's accuracy), or None without random ones.
        cost: The metric random genotypes were matched in.
        confidence: Of every interval.
        notes: Lines the report repeats (e.g. a front smaller than asked for).
    """

    records: list[dict[str, Any]]
    genotypes: list[GenotypeStats]
    pairs: list[Verdict]
    overall: Verdict | None
    cost: str
    confidence: float
    notes: list[str] = field(default_factory=list)

    def stats(self, name: str) -> GenotypeStats:
        return next(g for g in self.genotypes if g.name == name)

    def lines(self) -> list[str]:
        """The verdicts as plain lines, overall first (for the terminal)."""
        out = [f"overall: {self.overall.text}"] if self.overall else []
        return out + [f"{v.a} vs {v.b}: {v.text}" for v in self.pairs]


def _group(records: list[dict[str, Any]]) -> list[GenotypeStats]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_name.setdefault(rec["name"], []).append(rec)
    stats = []
    for name, recs in by_name.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        first = recs[0]
        stats.append(
            GenotypeStats(
                name=name,
                source=first["source"],
                genotype=first["genotype"],
                cost={
                    k: sum(float(r[k]) for r in recs) / len(recs)
                    for k in ("params", "flops", "mac")
                },
                accs=tuple(float(r["test_acc"]) for r in recs),
                seeds=tuple(int(r["seed"]) for r in recs),
                matched_to=first.get("matched_to"),
                search_run=first.get("search_run"),
            )
        )
    search = sorted((g for g in stats if g.source == "search"), key=lambda g: _order(g.name))
    ordered = []
    for s in search:
        ordered.append(s)
        ordered += sorted((g for g in stats if g.matched_to == s.name), key=lambda g: g.name)
    return ordered + [g for g in stats if g not in ordered]


def _order(name: str) -> tuple[int, str]:
    tail = name.rsplit("-", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def summarize(
    records: list[dict[str, Any]],
    *,
    cost: str = "params",
    confidence: float = 0.95,
    notes: Sequence[str] = (),
) -> Evaluation:
    """Group ``records`` per genotype and give the pair and overall verdicts."""
    genotypes = _group(records)
    search = [g for g in genotypes if g.source == "search"]
    random = [g for g in genotypes if g.source == "random"]
    pairs = [
        compare(s.name, s.accs, r.name, r.accs, unit="seeds", confidence=confidence)
        for s in search
        for r in random
        if r.matched_to == s.name
    ]
    overall = None
    if search and random:
        if len(search) >= 2 and len(random) >= 2:
            a, b, unit = [g.mean for g in search], [g.mean for g in random], "genotypes"
        else:  # one front genotype: its seeds against every random retraining
            a = [x for g in search for x in g.accs]
            b = [x for g in random for x in g.accs]
            unit = "runs"
        overall = compare("search", a, "random", b, unit=unit, confidence=confidence)
    return Evaluation(records, genotypes, pairs, overall, cost, confidence, list(notes))


def read_evaluation(folder: Path | str) -> list[dict[str, Any]]:
    """The records of ``folder``'s evaluation.json; ValueError naming what is wrong."""
    path = EvaluatePaths(Path(folder)).json
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of records")
    for i, rec in enumerate(records):
        missing = [k for k in REQUIRED if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise ValueError(f"{path}: record {i}: missing {', '.join(missing)}")
    return records


def find_evaluations(root: Path | str) -> list[Path]:
    """Evaluation folders (holding evaluate.yaml and evaluation.json) under ``root``."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if EVALUATE_SPEC in files:
            dirs[:] = []
            if "evaluation.json" in files:
                found.append(Path(folder))
    return found
