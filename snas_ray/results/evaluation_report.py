"""An evaluation as files: evaluation.json, evaluation.md and evaluation.png."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snas_ray.layout import EvaluatePaths, atomic_write_json, atomic_write_text
from snas_ray.results.evaluation import Evaluation, summarize
from snas_ray.results.evaluation_plot import plot_evaluation
from snas_ray.results.report import format_count

__all__ = ["format_evaluation", "render_evaluation", "write_evaluation"]


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows])


def _rows(ev: Evaluation) -> list[list[Any]]:
    rows = []
    for g in ev.genotypes:
        seeds = ", ".join(f"{100 * a:.2f}" for a in g.accs)
        source = g.source if g.source == "search" else f"random (matches {g.matched_to})"
        rows.append(
            [f"`{g.name}`", source, *(format_count(g.cost[k]) for k in ("params", "flops", "mac"))]
            + [g.format(), seeds, f"[{Path(g.genotype).name}]({g.genotype})"]
        )
    return rows


def format_evaluation(ev: Evaluation) -> str:
    """A short table and the verdicts, for the terminal."""
    lines = [f"{'genotype':<12} {'source':<8} {ev.cost:>8}  {'test acc (mean ± std)':<28}"]
    for g in ev.genotypes:
        lines.append(
            f"{g.name:<12} {g.source:<8} {format_count(g.cost[ev.cost]):>8}  {g.format():<28}"
        )
    return "\n".join(lines + ev.lines() + [f"note: {n}" for n in ev.notes])


def render_evaluation(ev: Evaluation, *, title: str = "", setting: Sequence[str] = ()) -> str:
    """evaluation.md: what was compared, the table, the verdicts and how to read them."""
    n_seeds = sorted({g.n for g in ev.genotypes})
    search = sum(g.source == "search" for g in ev.genotypes)
    random = len(ev.genotypes) - search
    out = [
        f"# snas-ray evaluate{': ' + title if title else ''}",
        "",
        f"{search} front genotype(s) and {random} random genotype(s) matched to them in "
        f"**{ev.cost}** at the retrain network's size, each retrained from scratch with "
        f"{'/'.join(map(str, n_seeds))} seed(s); {len(ev.records)} retrainings in all. Test "
        "accuracy is the final epoch's, on the test split.",
        "",
        "![test accuracy against cost](evaluation.png)",
        "",
        "## Verdict",
        "",
    ]
    if ev.overall:
        out += [f"**Overall:** {ev.overall.text}.", ""]
    out += [f"- `{v.a}` vs `{v.b}`: {v.text}." for v in ev.pairs] or ["No random genotypes."]
    out += [
        "",
        f"A side is called better only when the {ev.confidence:.0%} interval of the difference of "
        "mean test accuracy (Welch's t, which does not assume equal variances) excludes zero. "
        "Pairs compare seeds; the overall line compares genotype means when each side has two "
        "or more genotypes, else every retraining of each side.",
        "",
        "## Genotypes (test accuracy over seeds)",
        "",
        _table(
            ["genotype", "source", "params", "flops", "mac", "test acc", "per seed %", "file"],
            _rows(ev),
        ),
        "",
    ]
    if setting:
        out += ["## Setting", ""] + [f"- {line}" for line in setting] + [""]
    if ev.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in ev.notes] + [""]
    out += ["Files: `evaluation.json` (one record per retraining), `plan.json`, `runs/`.", ""]
    return "\n".join(out)


def write_evaluation(
    root: Path | str,
    records: list[dict[str, Any]],
    *,
    cost: str,
    confidence: float,
    notes: Sequence[str] = (),
    title: str = "",
    setting: Sequence[str] = (),
) -> Evaluation:
    """Writes evaluation.json, evaluation.png and evaluation.md into ``root``; ``setting``
    lines (how genotypes were drawn and retrained) go into the report as they are."""
    paths = EvaluatePaths(Path(root))
    evaluation = summarize(records, cost=cost, confidence=confidence, notes=notes)
    atomic_write_json(paths.json, records)
    plot_evaluation(evaluation, paths.plot, title=title)
    text = render_evaluation(evaluation, title=title, setting=setting)
    atomic_write_text(paths.markdown, text)
    return evaluation
