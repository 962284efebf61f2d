"""Runs that share every setting but the seed, and which config fields a sweep varied."""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from typing import Any

from snas_ray.results.runs import Row

__all__ = ["Group", "group_runs"]


@dataclass(frozen=True)
class Group:
    """Runs that share every setting but the seed, with their accuracy as mean ± std.

    ``std`` is the sample standard deviation (n - 1), None for a single run.
    """

    id: int
    settings: dict[str, Any]
    runs: tuple[str, ...]
    seeds: tuple[Any, ...]
    mean: float
    std: float | None
    cost_mean: float


def group_runs(rows: list[Row], cost: str) -> tuple[list[Group], list[str]]:
    """Groups ``rows`` by every setting but the seed and sets each row's ``group``.

    Returns:
        The groups, best mean accuracy first (ids 1, 2, ...), and the swept config fields:
        those whose values differ between the rows.
    """
    # Grouping and "swept" use only keys every run has, so one config-less run does not
    # make every config field look swept.
    common = set.intersection(*(set(r.settings) for r in rows)) if rows else set()
    norm = {k: {json.dumps(r.settings[k], sort_keys=True) for r in rows} for k in common}
    swept = sorted(k for k in common if len(norm[k]) > 1)
    by_key: dict[str, list[Row]] = {}
    for r in rows:
        key = json.dumps({k: r.settings[k] for k in common if k != "seed"}, sort_keys=True)
        # A retraining's genotype is one of its settings (train.genotype, its file, may move).
        retrained = r.result.get("genotype") if "genotype_source" in r.result else None
        key += json.dumps(retrained, sort_keys=True)
        by_key.setdefault(key, []).append(r)
    groups = []
    for members in (sorted(m, key=lambda r: r.run) for m in by_key.values()):
        accs = [r.acc for r in members]
        groups.append(
            Group(
                id=0,
                settings={k: members[0].settings[k] for k in swept if k != "seed"},
                runs=tuple(r.run for r in members),
                seeds=tuple(r.settings.get("seed") for r in members),
                mean=statistics.fmean(accs),
                std=statistics.stdev(accs) if len(accs) > 1 else None,
                cost_mean=statistics.fmean(float(r.result[cost]) for r in members),
            )
        )
    groups.sort(key=lambda g: (-g.mean, g.cost_mean, g.runs))
    groups = [dataclasses.replace(g, id=i) for i, g in enumerate(groups, 1)]
    run_group = {run: g.id for g in groups for run in g.runs}
    for r in rows:
        r.group = run_group[r.run]
    return groups, swept
