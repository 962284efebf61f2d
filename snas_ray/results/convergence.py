"""How budgeted searches got to their budgets: the derived child's cost per epoch, per run.

``budget.png`` puts each budgeted run's child cost (read from its ``metrics.jsonl``) against the
epoch, with its budget as a dashed line of the same colour, so a person sees at a glance whether
each search converged to what was asked and how fast. Runs without a budget are not drawn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from snas_ray.layout import RunPaths
from snas_ray.results.figures import pyplot, save_figure
from snas_ray.results.runs import Row

__all__ = ["child_cost_history", "plot_budget_convergence"]


def child_cost_history(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """(epoch, derived child's ``metric``) for each epoch line of the run's ``metrics.jsonl``.

    Epochs are 1-based as every file writes them now; a file from before that (its first
    epoch is 0) is shifted. Lines without the field (a run from before the child's cost was
    logged) or unreadable ones are left out; an empty list means there is nothing to draw.
    """
    path = RunPaths(run_dir).metrics
    points: list[tuple[int, float]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return points
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        value = record.get(f"child/{metric}") if isinstance(record, dict) else None
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(value, (int, float)) and isinstance(epoch, int):
            points.append((epoch, float(value)))
    shift = 1 if points and min(e for e, _ in points) == 0 else 0
    return [(e + shift, v) for e, v in points]


def plot_budget_convergence(rows: Sequence[Row], path: Path) -> bool:
    """Draw ``budget.png`` at ``path`` for the budgeted ``rows``; False when none has a budget.

    The child's cost is the one the search logged each epoch, at the size its budget is measured
    at (``cost.budget_layers``/``budget_init_channels``), the same quantity as the budget.
    """
    budgeted = [r for r in rows if r.result.get("budget")]
    curves = []
    for r in sorted(budgeted, key=lambda r: (float(r.result["budget"]), r.run)):
        metric = str(r.result.get("budget_metric", "params"))
        history = child_cost_history(r.path, metric)
        if history:
            curves.append((r, metric, float(r.result["budget"]), history))
    if not curves:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for index, (r, metric, budget, history) in enumerate(curves):
        colour = f"C{index % 10}"
        epochs, costs = zip(*history, strict=True)
        ax.plot(epochs, costs, marker="o", ms=3, color=colour, label=f"{r.run} ({metric})")
        ax.axhline(budget, color=colour, ls="--", lw=1)
    metrics = sorted({metric for _, metric, _, _ in curves})
    unit = {"params": "parameters", "flops": "multiply-adds", "mac": "memory access (elements)"}
    ax.set_yscale("log")
    ticker = plt.matplotlib.ticker
    ax.yaxis.set_major_formatter(ticker.EngFormatter())  # 20k, 50k: counts, not 2x10^4
    ax.yaxis.set_minor_formatter(ticker.EngFormatter())
    ax.set_xlabel("epoch")
    ax.set_ylabel("derived child: " + ", ".join(unit.get(m, m) for m in metrics))
    ax.set_title("child cost per epoch (dashed: its budget)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)
    return True
