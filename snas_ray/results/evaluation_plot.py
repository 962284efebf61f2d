"""Plots of retrained accuracy: front genotypes beside their cost-matched random genotypes.

:func:`draw_retrained` draws mean ± std test accuracy against cost on one axes (used by
``evaluation.png`` and by collect's ``pareto.png``, always on axes of its own, never on the
search-accuracy axes); :func:`plot_evaluation` adds the verdicts' intervals beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snas_ray.results.evaluation import Evaluation
from snas_ray.results.figures import pyplot, save_figure
from snas_ray.results.retrained import GenotypeStats

__all__ = ["draw_retrained", "plot_evaluation"]

_SEARCH, _RANDOM = "C0", "C1"


def _units(values: Sequence[float]) -> tuple[float, str]:
    top = max(values, default=0.0)
    return next(((s, u) for s, u in ((1e9, "G"), (1e6, "M"), (1e3, "K")) if top >= s), (1.0, ""))


def draw_retrained(ax: Any, genotypes: Sequence[GenotypeStats], cost: str) -> None:
    """Mean ± std retrained test accuracy (%) against ``cost``: front genotypes as stars joined
    cheapest first (the front as retrained), random genotypes as squares, each tied to its
    match by a dotted line."""
    scale, unit = _units([g.cost[cost] for g in genotypes])
    where = {g.name: (g.cost[cost] / scale, 100 * g.mean) for g in genotypes}
    search = sorted((g for g in genotypes if g.source == "search"), key=lambda g: g.cost[cost])
    for g in genotypes:
        if g.matched_to in where:
            (x0, y0), (x1, y1) = where[g.matched_to], where[g.name]
            ax.plot([x0, x1], [y0, y1], ls=":", color="0.6", lw=0.9, zorder=1)
    if len(search) > 1:
        xs, ys = zip(*(where[g.name] for g in search), strict=True)
        ax.plot(xs, ys, color="black", lw=1.1, zorder=2, label="front genotypes (retrained)")
    for g in genotypes:
        x, y = where[g.name]
        is_search = g.source == "search"
        ax.errorbar(
            x,
            y,
            yerr=None if g.std is None else 100 * g.std,
            fmt="*" if is_search else "s",
            ms=13 if is_search else 7,
            color=_SEARCH if is_search else _RANDOM,
            mec="black" if is_search else "none",
            capsize=3,
            zorder=3,
        )
        ax.annotate(g.name, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=7)
    ax.plot([], [], "*", color=_SEARCH, mec="black", ms=10, label="search (front)")
    ax.plot([], [], "s", color=_RANDOM, ms=6, label="random, cost-matched")
    ax.set_xlabel(f"{cost}" + (f" ({unit})" if unit else "") + " of the retrain network")
    ax.set_ylabel("retrained test accuracy (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.margins(0.15)


def _draw_verdicts(ax: Any, ev: Evaluation) -> None:
    verdicts = ([ev.overall] if ev.overall else []) + ev.pairs
    for i, v in enumerate(verdicts):
        c = v.comparison
        y = len(verdicts) - 1 - i
        colour = {"a": _SEARCH, "b": _RANDOM}.get(c.winner or "", "0.45")
        if c.low is not None and c.high is not None:
            ax.plot([100 * c.low, 100 * c.high], [y, y], color=colour, lw=2.2)
        ax.plot(100 * c.diff, y, "o", color=colour, ms=6)
    labels = [("overall" if v is ev.overall else f"{v.a} vs {v.b}") for v in verdicts]
    ax.set_yticks(range(len(verdicts)), labels[::-1], fontsize=8)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel(f"search - random test accuracy (pp), {ev.confidence:.0%} CI")
    ax.set_title(
        "blue: search better, orange: random better, grey: not distinguishable", fontsize=8
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(verdicts) - 0.3)


def plot_evaluation(ev: Evaluation, path: Path, *, title: str = "") -> None:
    """``evaluation.png``: retrained accuracy against cost, and each verdict's interval."""
    plt = pyplot()
    verdicts = len(ev.pairs) + (1 if ev.overall else 0)
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(13, 4.8),
        layout="constrained",  # room for the verdicts' long tick labels between the panels
        gridspec_kw={"width_ratios": [3, 2] if verdicts else [3, 0.01]},
    )
    draw_retrained(left, ev.genotypes, ev.cost)
    left.legend(fontsize=8, loc="best")
    seeds = "/".join(str(n) for n in sorted({g.n for g in ev.genotypes}))
    left.set_title(f"{title + ': ' if title else ''}{len(ev.genotypes)} genotypes x {seeds} seeds")
    if verdicts:
        _draw_verdicts(right, ev)
    else:
        right.axis("off")
    save_figure(fig, path)
