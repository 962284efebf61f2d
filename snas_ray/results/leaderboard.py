"""Collect search runs into a leaderboard: rank by accuracy, mark the Pareto front on cost.

Reads the run folders under a sweep folder (:mod:`.runs`), groups runs that differ only in seed
(:mod:`.groups`), folds in the retrained accuracy of any evaluation found there
(:mod:`.evaluation`: its own columns, never ranked with the search accuracy), and writes the
leaderboard, the front's genotypes, the plots and the report (:mod:`.report`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snas_ray.errors import SnasRayError
from snas_ray.layout import RunPaths
from snas_ray.results import report
from snas_ray.results.evaluation import find_evaluations, read_evaluation, summarize
from snas_ray.results.groups import Group, group_runs
from snas_ray.results.retrained import GenotypeStats
from snas_ray.results.runs import (
    ACC_METRICS,
    COLUMN_SETTINGS,
    COSTS,
    Row,
    Skipped,
    find_run_folders,
    read_run,
)

__all__ = ["Leaderboard", "collect", "pareto_front"]

logger = logging.getLogger(__name__)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Flags the non-dominated ``(accuracy, cost)`` points: accuracy up, cost down.

    A point is dominated when another has accuracy >= and cost <=, one of them strictly.
    Identical points therefore all stay on the front; of two with equal cost only the more
    accurate one does, and of two with equal accuracy only the cheaper one.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    flags = [False] * len(points)
    best_cheaper = -math.inf  # best accuracy among strictly cheaper points
    for _, same_cost in itertools.groupby(order, key=lambda i: points[i][1]):
        same = list(same_cost)
        top = points[same[0]][0]  # the most accurate at this cost comes first
        for j in same:
            flags[j] = top > best_cheaper and points[j][0] == top
        best_cheaper = max(best_cheaper, top)
    return flags


@dataclass
class Leaderboard:
    """Ranked runs of one folder, best first, with the front, the groups and what was skipped.

    Attributes:
        root: The collected folder.
        metric: The result.json key ranked on (retrained accuracy never ranks).
        cost: The cost axis of the front: ``params``, ``flops`` or ``mac``.
        rows: Complete runs, ranked.
        skipped: Broken and unfinished run folders.
        groups: Settings shared by runs that differ only in seed, best mean first.
        swept: Config fields (dotted) whose values differ between the ranked runs.
        warnings: Problems that did not stop a run from ranking (e.g. an unreadable evaluation).
        baselines: Cost-matched random genotypes an evaluation retrained: listed and drawn
            beside the front's retrained accuracy, never ranked and never on the front.
    """

    root: Path
    metric: str
    cost: str
    rows: list[Row]
    skipped: list[Skipped] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    baselines: list[GenotypeStats] = field(default_factory=list)

    @property
    def front(self) -> list[Row]:
        """The non-dominated runs, cheapest first."""
        return sorted(
            (r for r in self.rows if r.pareto), key=lambda r: (r.result[self.cost], -r.acc)
        )

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row, the rows of ``leaderboard.json`` and ``.csv``."""
        groups = {g.id: g for g in self.groups}
        out = []
        for r in self.rows:
            g = groups[r.group]
            rec: dict[str, Any] = {"run": r.run, "rank": r.rank, "pareto": r.pareto}
            rec["val_acc"] = r.result.get("val_acc")
            rec |= {self.metric: r.search_acc, "acc": r.acc} | {k: r.result[k] for k in COSTS}
            rec |= {key: r.setting(key) for key in ("estimator", "resource_lambda", "seed")}
            rec |= budget_fields(r.result)
            rec |= {k: r.settings.get(k) for k in self.swept if k not in COLUMN_SETTINGS}
            rec |= {"group": g.id, "group_size": len(g.runs), "group_mean": g.mean}
            rec |= {"group_std": g.std, "epochs_done": r.result["epochs_done"]}
            rec |= {"epochs": r.result.get("epochs"), "genotype": r.genotype_file}  # None: unknown
            rec |= retrained_fields(r.retrained)
            out.append(rec)
        return out

    def format_table(self, top: int = 10) -> str:
        """A short ranked table for the terminal (``*`` marks the front)."""
        return report.format_table(self, top)

    def write(self, out: Path | str | None = None) -> Path:
        """Writes leaderboard.json/.csv, front/, cells/, pareto.png and report.md into ``out``
        (default: the ``collect`` folder of :attr:`root`, which collect itself never reads).

        See :func:`~snas_ray.results.report.write_report`. Returns the path of ``report.md``.
        """
        return report.write_report(self, Path(out) if out else self.root / "collect")


def retrained_fields(stats: GenotypeStats | None) -> dict[str, Any]:
    """The retrained columns of a leaderboard record: test accuracy mean, std and seeds, the
    retrain network's cost and the evaluation's name for the genotype; Nones if not retrained."""
    if stats is None:
        keys = ("retrained_acc_mean", "retrained_acc_std", "retrained_seeds", "retrained_params")
        return dict.fromkeys(keys) | {"retrained_as": None}
    return {
        "retrained_acc_mean": stats.mean,
        "retrained_acc_std": stats.std,
        "retrained_seeds": stats.n,
        "retrained_params": stats.cost["params"],
        "retrained_as": stats.name,
    }


def _fold_evaluations(root: Path, rows: list[Row], warnings: list[str]) -> list[GenotypeStats]:
    """Attach each evaluated front genotype's retrained accuracy to its search run; return the
    evaluations' random baselines."""
    by_path = {r.path.resolve(): r for r in rows}
    baselines: list[GenotypeStats] = []
    for folder in find_evaluations(root):
        try:
            evaluation = summarize(read_evaluation(folder))
        except ValueError as exc:
            warnings.append(f"evaluation skipped: {exc}")
            continue
        for stats in evaluation.genotypes:
            if stats.source != "search":
                baselines.append(stats)
                continue
            row = by_path.get((folder / (stats.search_run or "")).resolve())
            if row is None or not stats.search_run:
                warnings.append(f"{folder.name}: {stats.name}'s search run is not collected here")
            else:
                row.retrained = stats
    return baselines


def budget_fields(result: dict[str, Any]) -> dict[str, Any]:
    """A budgeted run's budget, the cost its child reached in that metric (at the size the
    budget was measured at) and the lambda it ended with; Nones for a run without a budget."""
    budget = result.get("budget") or None
    metric = result.get("budget_metric", "params") if budget else None
    at_size = result.get("budget_cost", result)
    return {
        "budget": budget,
        "budget_metric": metric,
        "budget_achieved": at_size.get(metric) if metric else None,
        "resource_lambda_final": result.get("resource_lambda_final") if budget else None,
    }


def collect(path: Path | str, *, metric: str = "val_acc", cost: str = "params") -> Leaderboard:
    """Reads every run folder under ``path`` into a ranked :class:`Leaderboard`.

    Broken folders (unreadable or invalid files, missing fields) and unfinished runs (no
    result.json, or fewer epochs done than planned) are listed in ``skipped``, never raised.
    A folder named ``collect`` directly under ``path`` (the default output) is not read.

    Args:
        path: A sweep folder, any folder of run folders, or one run folder.
        metric: The accuracy key of result.json (or of its ``final_metrics``) to rank on.
        cost: The cost of the front: ``params``, ``flops`` or ``mac``.

    Raises:
        SnasRayError: if ``path`` is not a folder, or ``cost`` or ``metric`` is unknown.
    """
    root = Path(path)
    if not root.is_dir():
        raise SnasRayError(f"collect: {root} is not a folder")
    if cost not in COSTS:
        raise SnasRayError(f"collect: unknown cost {cost!r}; allowed: {', '.join(COSTS)}")
    if metric not in ACC_METRICS:
        raise SnasRayError(
            f"collect: --metric: unknown {metric!r}; allowed: {', '.join(ACC_METRICS)}"
        )
    rows: list[Row] = []
    skipped: list[Skipped] = []
    warnings: list[str] = []
    for folder in find_run_folders(root, exclude=[root / "collect"]):
        run = folder.relative_to(root).as_posix()
        read = read_run(RunPaths(folder), run, metric, warnings)
        if isinstance(read, Row):
            rows.append(read)
        else:
            skipped.append(read)
    rows.sort(key=lambda r: (-r.acc, r.result[cost], r.run))
    for i, r in enumerate(rows):
        r.rank = i + 1 if i == 0 or r.acc != rows[i - 1].acc else rows[i - 1].rank
    for r, flag in zip(rows, pareto_front([(r.acc, r.result[cost]) for r in rows]), strict=True):
        r.pareto = flag
    groups, swept = group_runs(rows, cost)
    baselines = _fold_evaluations(root, rows, warnings)
    lb = Leaderboard(root, metric, cost, rows, skipped, groups, swept, warnings, baselines)
    logger.info(
        "collect: %d runs ranked, %d on the front, %d skipped",
        len(rows),
        len(lb.front),
        len(skipped),
    )
    return lb
