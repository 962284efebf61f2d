"""A collected sweep as text: the terminal table, leaderboard.json/.csv and report.md.

:func:`write_report` also writes the front's genotypes and, through :mod:`.plots`, the plots.
It reads the leaderboard through :class:`Board`, so this module needs no import of it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Protocol

from snas_ray.errors import SnasRayError
from snas_ray.genotype import save_genotype
from snas_ray.layout import atomic_write_json, atomic_write_text, is_temp_file, output_folder
from snas_ray.results.convergence import plot_budget_convergence
from snas_ray.results.groups import Group
from snas_ray.results.plots import draw_cell, plot_pareto
from snas_ray.results.retrained import GenotypeStats
from snas_ray.results.runs import COLUMN_SETTINGS, COSTS, Row, Skipped

__all__ = [
    "MANIFEST",
    "Board",
    "format_count",
    "format_table",
    "render_markdown",
    "write_report",
]

MANIFEST = ".collect-files.json"  # what collect wrote into its folder, so it deletes only those
_OWNED = ("front", "cells")  # sub-folders whose files collect replaces as the front changes


class Board(Protocol):
    """What a report reads of a collected folder: a ``Leaderboard`` has all of it."""

    root: Path
    metric: str
    cost: str
    rows: list[Row]
    skipped: list[Skipped]
    groups: list[Group]
    swept: list[str]
    warnings: list[str]
    baselines: list[GenotypeStats]

    @property
    def front(self) -> list[Row]:
        """The non-dominated rows, cheapest first."""

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row, best first."""


def format_count(n: float) -> str:
    """A count in K, M or G with three significant digits: ``2663554 -> '2.66M'``."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def _pct(acc: float | None) -> str:
    return "-" if acc is None else f"{100 * acc:.2f}%"


def _lam(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _retrained(rec: dict[str, Any]) -> str:
    if rec.get("retrained_acc_mean") is None:
        return "-"
    std = rec["retrained_acc_std"]
    spread = "" if std is None else f"±{100 * std:.2f}"
    return f"{100 * rec['retrained_acc_mean']:.2f}{spread}% ({rec['retrained_seeds']})"


def format_table(lb: Board, top: int = 10) -> str:
    """The ``top`` ranks for the terminal; ``*`` marks the front. Retrained accuracy (an
    evaluation's mean ± std over seeds) is a column of its own, never ranked."""
    retrained = any(r.retrained for r in lb.rows)
    extra = f" {'retrained test':>19}" if retrained else ""
    lines = [
        f"{'rank':>4} {'front':>5} {'accuracy':>9} {lb.cost:>7}  "
        f"{'estimator':<17} {'lambda':>7} {'seed':>4}{extra}  run"
    ]
    for rec in lb.records()[:top]:
        column = f" {_retrained(rec):>19}" if retrained else ""
        lines.append(
            f"{rec['rank']:>4} {'*' if rec['pareto'] else '':>5} {_pct(rec['acc']):>9} "
            f"{format_count(rec[lb.cost]):>7}  {str(rec['estimator']):<17} "
            f"{_lam(rec['resource_lambda']):>7} {str(rec['seed']):>4}{column}  {rec['run']}"
        )
    budgeted = [rec for rec in lb.records()[:top] if rec["budget"]]
    if budgeted:
        lines.append("budgets (child cost at the budget's size, final lambda):")
        lines += [
            f"  {rec['run']}: budget {format_count(rec['budget'])} {rec['budget_metric']} -> "
            f"child {format_count(rec['budget_achieved'])} "
            f"({100 * (rec['budget_achieved'] / rec['budget'] - 1):+.1f}%), "
            f"lambda {_lam(rec['resource_lambda_final'])}"
            for rec in budgeted
        ]
    if len(lb.rows) > top:
        lines.append(f"... and {len(lb.rows) - top} more runs")
    lines += [
        f"random baseline {g.name} (matches {g.matched_to}): {g.format()}, "
        f"{format_count(g.cost['params'])} params retrained"
        for g in lb.baselines
    ]
    lines += [f"skipped {s.run}: {s.kind}: {s.reason}" for s in lb.skipped]
    lines += [f"warning: {w}" for w in lb.warnings]
    return "\n".join(lines)


def _csv(records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = list(records[0]) if records else ["run", "rank", "pareto", "val_acc"]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in rec.items()} for rec in records)
    return buf.getvalue()


def _written_before(out: Path) -> set[str]:
    """The files an earlier collect listed in ``out``'s manifest (none if unreadable)."""
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in files if isinstance(f, str)}


def _refuse_foreign(out: Path, ours: set[str]) -> None:
    for folder in _OWNED:
        if not (out / folder).is_dir():
            continue
        foreign = sorted(
            f"{folder}/{p.name}"
            for p in (out / folder).iterdir()
            if f"{folder}/{p.name}" not in ours and not is_temp_file(p.name)
        )
        if foreign:
            raise SnasRayError(
                f"collect: {out / folder} holds files collect did not write ({foreign[0]}"
                f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); move them "
                "or choose another --out"
            )


def write_report(lb: Board, out: Path) -> Path:
    """Writes every collect output into ``out``; returns the path of ``report.md``.

    That is leaderboard.json/.csv, front/ (the front's genotypes), cells/ (their diagrams),
    pareto.png, budget.png (when some run has a budget) and report.md, each atomically. A
    manifest lists them: files an earlier collect wrote and this one does not (runs that left
    the front) are deleted, and nothing else ever is; a folder whose ``front/`` or ``cells/``
    holds files of someone else is refused.
    """
    output_folder(out)
    before = _written_before(out)
    _refuse_foreign(out, before)
    now = {"leaderboard.json", "leaderboard.csv", "pareto.png", "report.md"}
    if any(r.result.get("budget") for r in lb.rows):
        now.add("budget.png")
    for r in lb.front:
        now |= {f"front/{r.slug}.json", f"cells/{r.slug}-normal.png", f"cells/{r.slug}-reduce.png"}
    # Listed before they exist, so an interrupted collect never leaves a file of its own
    # unlisted (which the next collect would refuse as someone else's).
    atomic_write_json(out / MANIFEST, {"files": sorted(before | now)})
    records = lb.records()
    atomic_write_json(out / "leaderboard.json", records)
    atomic_write_text(out / "leaderboard.csv", _csv(records))
    for r in lb.front:
        save_genotype(r.genotype, out / "front" / f"{r.slug}.json")
        for cell in ("normal", "reduce"):
            draw_cell(r.genotype, cell, out / "cells" / f"{r.slug}-{cell}.png", title=r.run)
    name = lb.root.name or str(lb.root)
    plot_pareto(
        lb.rows,
        lb.front,
        out / "pareto.png",
        cost=lb.cost,
        metric=lb.metric,
        name=name,
        baselines=lb.baselines,
    )
    plot_budget_convergence(lb.rows, out / "budget.png")  # only when some run has a budget
    path = out / "report.md"
    atomic_write_text(path, render_markdown(lb))
    for name in sorted(before - now):  # runs that left the front; only files, only ours
        folder, _, file = name.partition("/")
        ours = folder in _OWNED and file not in ("", ".", "..") and "/" not in file
        if ours or name == "budget.png":  # budget.png: drawn only while some run has a budget
            if (out / name).is_file():
                (out / name).unlink()
    atomic_write_json(out / MANIFEST, {"files": sorted(now)})
    return path


def _md_table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _md_row(r: Row, rec: dict[str, Any]) -> list[Any]:
    acc = _pct(r.acc)
    costs = [format_count(rec[c]) for c in COSTS]
    lam = _lam(rec["resource_lambda"])
    return [rec["rank"], f"`{r.run}`", acc, *costs, rec["estimator"], lam, rec["seed"]]


def _md_runs(lb: Board) -> list[str]:
    recs = {rec["run"]: rec for rec in lb.records()}
    head = ["rank", "run", "accuracy", *COSTS, "estimator", "λ", "seed"]
    front = [
        _md_row(r, recs[r.run]) + [f"[front/{r.slug}.json](front/{r.slug}.json)"] for r in lb.front
    ]
    extra = [k for k in lb.swept if k not in COLUMN_SETTINGS]
    budgets = any(rec["budget"] for rec in recs.values())
    budget_head = ["budget", "child at budget size", "λ final"] if budgets else []
    rows = [
        _md_row(r, recs[r.run])
        + ["yes" if r.pareto else "", recs[r.run]["genotype"] or "-"]
        + [recs[r.run].get(k, "") for k in extra]
        + (_md_budget(recs[r.run]) if budgets else [])
        for r in lb.rows
    ]
    out = ["## Pareto front (cheapest first)", ""]
    out += ["The genotype files in `front/` are ready for `snas-ray train --genotype FILE`.", ""]
    out += [_md_table([*head, "genotype"], front), "", "## Leaderboard", ""]
    return out + [_md_table([*head, "front", "genotype", *extra, *budget_head], rows), ""]


def _md_budget(rec: dict[str, Any]) -> list[Any]:
    if not rec["budget"]:
        return ["-", "-", "-"]
    budget = f"{format_count(rec['budget'])} {rec['budget_metric']}"
    return [budget, format_count(rec["budget_achieved"]), _lam(rec["resource_lambda_final"])]


def _md_groups(lb: Board) -> list[str]:
    rows = [
        [
            g.id,
            ", ".join(f"{k}={v}" for k, v in g.settings.items()) or "(all equal)",
            len(g.runs),
            f"{100 * g.mean:.2f}" + ("" if g.std is None else f" ± {100 * g.std:.2f}"),
            format_count(g.cost_mean),
            ", ".join(map(str, g.seeds)),
        ]
        for g in lb.groups
    ]
    head = ["group", "settings", "runs", "accuracy %", f"mean {lb.cost}", "seeds"]
    return ["## Settings groups (mean ± std over seeds)", "", _md_table(head, rows), ""]


def _md_retrained(lb: Board) -> list[str]:
    evaluated = [r for r in lb.rows if r.retrained]
    if not evaluated and not lb.baselines:
        return []
    rows = [
        [f"`{r.run}`", r.retrained.name, "search", _pct(r.acc)]
        + [r.retrained.format(), format_count(r.retrained.cost["params"])]
        for r in evaluated
        if r.retrained
    ]
    rows += [
        [f"random, matches {g.matched_to}", g.name, "random", "-", g.format()]
        + [format_count(g.cost["params"])]
        for g in lb.baselines
    ]
    head = ["run", "evaluated as", "source", lb.metric, "retrained test acc", "retrain params"]
    return [
        "## Retrained (snas-ray evaluate)",
        "",
        "Test accuracy of each genotype retrained from scratch, mean ± std over seeds, beside "
        "cost-matched random genotypes (never ranked, never on the front). Costs here are the "
        "retrain network's; see the evaluation's `evaluation.md` for the verdicts.",
        "",
        _md_table(head, rows),
        "",
    ]


def render_markdown(lb: Board) -> str:
    """``report.md``: summary, plot, front, leaderboard, seed groups, cells, skipped runs."""
    out = [
        f"# snas-ray collect: {lb.root.name or lb.root}",
        "",
        f"{len(lb.rows)} runs ranked on **{lb.metric}** (retrained accuracy never ranks), "
        f"{len(lb.front)} on the Pareto front of accuracy against **{lb.cost}**, "
        f"{len(lb.skipped)} skipped. Folder: `{lb.root}`.",
        "",
        f"Swept settings: {', '.join(f'`{k}`' for k in lb.swept) or 'none'}. Costs are those of "
        "each run's evaluation network for one image (FLOPs are multiply-adds, MAC is memory "
        "access in elements).",
        "",
        "![accuracy against cost](pareto.png)",
        "",
    ]
    if any(r.result.get("budget") for r in lb.rows):
        out += ["![child cost per epoch against each budget](budget.png)", ""]
    out += _md_runs(lb) + _md_retrained(lb) + _md_groups(lb) + ["## Cells on the front", ""]
    for r in lb.front:
        out += [f"### `{r.run}` (rank {r.rank}, {_pct(r.acc)})", "", "```", r.genotype.format()]
        out += ["```", "", f"![normal](cells/{r.slug}-normal.png)"]
        out += [f"![reduce](cells/{r.slug}-reduce.png)", ""]
    if lb.skipped or lb.warnings:
        skipped = [[f"`{s.run}`", s.kind, s.reason] for s in lb.skipped]
        out += ["## Skipped runs and warnings", "", _md_table(["run", "kind", "reason"], skipped)]
        out += [""] + [f"- {w}" for w in lb.warnings] + [""]
    out += ["Files: `leaderboard.csv`, `leaderboard.json`, `pareto.png`, `front/`, `cells/`.", ""]
    return "\n".join(out)
