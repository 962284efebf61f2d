"""Reports: a genotype's evaluation cost, and a collected sweep as tables, plots and Markdown.

The sweep half draws with matplotlib (Agg, loaded on first use) and writes every file
atomically; cell diagrams are laid out by hand, as no graphviz binary can be assumed.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snas_ray.genotype import Genotype, save_genotype
from snas_ray.layout import atomic_write_json, atomic_write_text
from snas_ray.space.network import NetworkCost, genotype_cost

if TYPE_CHECKING:
    from snas_ray.results.leaderboard import Leaderboard

__all__ = [
    "COST_SETTINGS",
    "CostSetting",
    "draw_cell",
    "evaluation_cost",
    "format_count",
    "format_table",
    "plot_pareto",
    "render_markdown",
    "write_report",
]


@dataclass(frozen=True)
class CostSetting:
    """The evaluation network ``snas-ray cost`` builds for one dataset.

    Attributes:
        dataset: Dataset name.
        init_channels: Channels of the first cell (C).
        layers: Number of cells (L).
        image_size: Input side in pixels.
        num_classes: Classifier outputs.
        imagenet: Build ``NetworkImageNet`` (two stride-2 stems) instead of ``NetworkCIFAR``.
    """

    dataset: str
    init_channels: int
    layers: int
    image_size: int
    num_classes: int
    imagenet: bool = False


# cifar10: the paper's retraining network (spec §11.2); imagenet: the mobile setting (§11.3,
# §15); digits: the width, depth and 8 px input of experiments/digits-search.yaml (3 channels,
# as data.py repeats the grey level), so costs compare with a digits search's result.json.
COST_SETTINGS = {
    "cifar10": CostSetting("cifar10", 36, 20, 32, 10),
    "imagenet": CostSetting("imagenet", 48, 14, 224, 1000, imagenet=True),
    "digits": CostSetting("digits", 8, 5, 8, 10),
}


def evaluation_cost(
    genotype: Genotype, setting: CostSetting, *, auxiliary: bool = False
) -> NetworkCost:
    """Builds the evaluation network of ``genotype`` at ``setting`` and measures one image."""
    return genotype_cost(
        genotype,
        init_channels=setting.init_channels,
        layers=setting.layers,
        num_classes=setting.num_classes,
        image_size=setting.image_size,
        auxiliary=auxiliary,
        imagenet=setting.imagenet,
    )


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


def format_table(lb: Leaderboard, top: int = 10) -> str:
    """The ``top`` ranks for the terminal; ``*`` marks the front, ``R`` a retrained accuracy."""
    lines = [
        f"{'rank':>4} {'front':>5} {'accuracy':>9} {lb.cost:>7}  "
        f"{'estimator':<17} {'lambda':>7} {'seed':>4}  run"
    ]
    for rec in lb.records()[:top]:
        acc = _pct(rec["acc"]) + ("R" if rec["acc_source"] == "retrain" else "")
        lines.append(
            f"{rec['rank']:>4} {'*' if rec['pareto'] else '':>5} {acc:>9} "
            f"{format_count(rec[lb.cost]):>7}  {str(rec['estimator']):<17} "
            f"{_lam(rec['resource_lambda']):>7} {str(rec['seed']):>4}  {rec['run']}"
        )
    if len(lb.rows) > top:
        lines.append(f"... and {len(lb.rows) - top} more runs")
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


def write_report(lb: Leaderboard, out: Path) -> Path:
    """Writes every collect output into ``out`` (see ``Leaderboard.write``); returns report.md."""
    records = lb.records()
    atomic_write_json(out / "leaderboard.json", records)
    atomic_write_text(out / "leaderboard.csv", _csv(records))
    for folder, pattern in (("front", "*.json"), ("cells", "*.png")):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for old in (out / folder).glob(pattern):
            old.unlink()
    for r in lb.front:
        save_genotype(r.genotype, out / "front" / f"{r.slug}.json")
        for cell in ("normal", "reduce"):
            draw_cell(r.genotype, cell, out / "cells" / f"{r.slug}-{cell}.png", title=r.run)
    plot_pareto(lb, out / "pareto.png")
    path = out / "report.md"
    atomic_write_text(path, render_markdown(lb))
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    # savefig into memory, then the same temp-file + os.replace as checkpoint's atomic writes.
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    _pyplot().close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_ESTIMATOR_COLOURS = {"reparametrization": "C0", "discrete": "C1", "policy_gradient": "C2"}


def plot_pareto(lb: Leaderboard, path: Path) -> None:
    """Accuracy against cost: one point per run, coloured by estimator, sized and labelled
    by lambda; the front ringed in black and joined by a step line; retrained runs as stars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    costs = [float(r.result[lb.cost]) for r in lb.rows]
    scale, unit = next(
        ((s, u) for s, u in ((1e9, "G"), (1e6, "M"), (1e3, "K")) if max(costs, default=0) >= s),
        (1.0, ""),
    )
    lams = sorted({r.setting("resource_lambda") or 0.0 for r in lb.rows})
    colours = dict(_ESTIMATOR_COLOURS)
    for r, cost in zip(lb.rows, costs, strict=True):
        colour = colours.setdefault(str(r.setting("estimator")), f"C{len(colours)}")
        lam = r.setting("resource_lambda") or 0.0
        size = 40 + 160 * lams.index(lam) / max(len(lams) - 1, 1)
        ax.scatter(
            cost / scale,
            100 * r.acc,
            s=size * (2 if r.acc_source == "retrain" else 1),
            marker="*" if r.acc_source == "retrain" else "o",
            color=colour,
            alpha=0.9 if r.pareto else 0.45,
            edgecolors="black" if r.pareto else "none",
            linewidths=1.4,
            zorder=3,
        )
        if r.pareto or len(lb.rows) <= 15:
            ax.annotate(
                f"λ={lam:g}",
                (cost / scale, 100 * r.acc),
                xytext=(6, 5),
                textcoords="offset points",
                fontsize=7,
                color="0.25",
            )
    front = lb.front
    if front:
        xs = [r.result[lb.cost] / scale for r in front]
        ax.step(xs, [100 * r.acc for r in front], where="post", color="black", lw=1.2, zorder=2)
    for est, colour in colours.items():
        if any(str(r.setting("estimator")) == est for r in lb.rows):
            ax.scatter([], [], color=colour, label=est)
    ax.plot([], [], color="black", lw=1.2, marker="o", mfc="white", label="Pareto front")
    retrained = any(r.acc_source == "retrain" for r in lb.rows)
    if retrained:
        ax.scatter([], [], marker="*", color="0.4", s=80, label="retrained test_acc")
    # Outside the axes, so the legend never hides a run.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="estimator (size: λ)")
    if costs and min(costs) > 0 and max(costs) > 10 * min(costs):
        ax.set_xscale("log")
    ax.set_xlabel(f"{lb.cost}" + (f" ({unit})" if unit else "") + " of the evaluation network")
    ax.set_ylabel(f"{lb.metric} (%)" + (", retrained test_acc where ★" if retrained else ""))
    ax.set_title(f"{lb.root.name or lb.root}: {len(lb.rows)} runs, {len(front)} on the front")
    ax.grid(alpha=0.3)
    ax.margins(0.12)
    _save(fig, path)


# Node colours of the DARTS-style cell plots: inputs green, intermediate blue, output yellow.
_NODE_STYLE = {"input": "#b7e4c7", "node": "#a9c9ff", "empty": "#e0e0e0", "output": "#ffe08a"}


_NODE_BOX = {"boxstyle": "round,pad=0.4", "ec": "0.3"}
# An edge and its label share a colour per op family, so crossing edges stay attributable.
_OP_COLOURS = {
    "sep_conv": "#1f5fa8",
    "dil_conv": "#7b3fa0",
    "max_pool": "#c0392b",
    "avg_pool": "#d35400",
    "skip_connect": "#2e7d32",
}
_LABEL_BOX = {"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.9}
_INCH = 0.62  # inches per data unit of a cell diagram
_CHAR_W, _TEXT_H = 0.13, 0.42  # one 8 pt label character and a label, in data units, padded


def draw_cell(genotype: Genotype, cell: str, path: Path, *, title: str = "") -> None:
    """Draws one cell as a DAG: c_{k-2}, c_{k-1} -> nodes 0..n-1 -> c_{k}, edges labelled by
    op; 'none' entries are left out, and a node with only 'none' inputs is greyed."""
    plt = _pyplot()
    steps = genotype.steps(cell)
    # The nodes sit on one horizontal line; the two inputs fan out to them from above and
    # below, so no straight input edge crosses a node.
    pos = {0: (0.0, 2.4), 1: (0.0, -2.4), -1: (3.2 + 3.4 * steps, 0.0)}
    pos |= {k + 2: (3.2 + 3.4 * k, 0.0) for k in range(steps)}
    fig, ax = plt.subplots(figsize=(_INCH * (pos[-1][0] + 2.0), _INCH * 6.2))
    ax.set_aspect("equal")  # data and display angles agree, so labels sit on their curves
    ax.axis("off")
    active = {state for state, _, _ in genotype.active_edges(cell)}
    taken = []  # boxes (x0, y0, x1, y1) of nodes and labels already drawn
    for state, (x, y) in pos.items():
        kind = {0: "input", 1: "input", -1: "output"}.get(state, "node")
        kind = "empty" if kind == "node" and state not in active else kind
        name = {0: "$c_{k-2}$", 1: "$c_{k-1}$", -1: "$c_{k}$"}.get(state, str(state - 2))
        box = _NODE_BOX | {"fc": _NODE_STYLE[kind]}
        ax.text(x, y, name, ha="center", va="center", fontsize=12, zorder=4, bbox=box)
        half = 0.7 if state in (0, 1, -1) else 0.45
        taken.append((x - half, y - 0.4, x + half, y + 0.4))
    seen: dict[tuple[int, int], int] = {}
    edges = genotype.active_edges(cell)
    for state, op, src in sorted(edges, key=lambda e: (e[0] - e[2], e[0])):  # short ones first
        repeat = seen[(src, state)] = seen.get((src, state), -1) + 1
        # Inputs fan in and neighbours join straight; longer hops arc above the nodes between.
        rad = 0.0 if src < 2 or state == src + 1 else -0.3
        rad += 0.2 * repeat * (1 if src == 1 else -1)  # a repeated pair bends apart
        colour = next((c for kind, c in _OP_COLOURS.items() if op.startswith(kind)), "0.2")
        _edge(ax, pos[src], pos[state], rad, colour=colour)
        t_order = (0.7, 0.6, 0.8, 0.5, 0.4) if src < 2 else (0.5, 0.62, 0.38, 0.72, 0.28)
        _label(ax, pos[src], pos[state], rad, op, colour, t_order, taken)
    for state in getattr(genotype, f"{cell}_concat"):
        rad = 0.0 if state == steps + 1 or state < 2 else 0.25  # below the line, under nodes
        _edge(ax, pos[state], pos[-1], rad, colour="0.6", dashed=True)
    ax.set_xlim(-1.0, pos[-1][0] + 1.0)
    ax.set_ylim(-3.1, 3.1)
    ax.set_title(f"{title}: {cell} cell" if title else f"{cell} cell", fontsize=11)
    _save(fig, path)


def _edge(ax: Any, a: Any, b: Any, rad: float, *, colour: str, dashed: bool = False) -> None:
    from matplotlib.patches import FancyArrowPatch

    style = {"color": colour, "lw": 1.1, "linestyle": "--" if dashed else "-", "zorder": 1}
    style |= {"arrowstyle": "-|>", "mutation_scale": 12, "shrinkA": 16, "shrinkB": 16}
    arrow = FancyArrowPatch(a, b, connectionstyle=f"arc3,rad={rad}", **style)
    ax.add_patch(arrow)


def _label(
    ax: Any, a: Any, b: Any, rad: float, text: str, colour: str, ts: tuple, taken: list
) -> None:
    # matplotlib's arc3 is a quadratic Bezier through mid + rad * (dy, -dx). Of a few points
    # along it, the label takes the first whose box overlaps nothing drawn, else the least
    # crowded one: fan-in edges share a height at equal t, so their labels need spreading.
    (x0, y0), (x1, y1) = a, b
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    w, h = _CHAR_W * len(text) / 2, _TEXT_H / 2
    best = None
    for t in ts:
        x = (1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t**2 * x1
        y = (1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t**2 * y1
        box = (x - w, y - h, x + w, y + h)
        hits = sum(_overlap(box, other) for other in taken)
        if best is None or hits < best[0]:
            best = (hits, x, y, box)
        if hits == 0:
            break
    _, x, y, box = best
    taken.append(box)
    kw = {"ha": "center", "va": "center", "fontsize": 8, "zorder": 5, "bbox": _LABEL_BOX}
    ax.text(x, y, text, color=colour, **kw)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _md_table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


_COSTS = ("params", "flops", "mac")


def _md_row(r: Any, rec: dict[str, Any]) -> list[Any]:
    acc = _pct(r.acc) + (" (retrained)" if r.acc_source == "retrain" else "")
    costs = [format_count(rec[c]) for c in _COSTS]
    lam = _lam(rec["resource_lambda"])
    return [rec["rank"], f"`{r.run}`", acc, *costs, rec["estimator"], lam, rec["seed"]]


def _md_runs(lb: Leaderboard) -> list[str]:
    recs = {rec["run"]: rec for rec in lb.records()}
    head = ["rank", "run", "accuracy", *_COSTS, "estimator", "λ", "seed"]
    front = [
        _md_row(r, recs[r.run]) + [f"[front/{r.slug}.json](front/{r.slug}.json)"] for r in lb.front
    ]
    extra = [k for k in lb.swept if k not in ("seed", "cost.resource_lambda", "cost.estimator")]
    rows = [
        _md_row(r, recs[r.run])
        + ["yes" if r.pareto else "", recs[r.run]["genotype"] or "-"]
        + [recs[r.run].get(k, "") for k in extra]
        for r in lb.rows
    ]
    out = ["## Pareto front (cheapest first)", ""]
    out += ["The genotype files in `front/` are ready for `snas-ray train --genotype FILE`.", ""]
    out += [_md_table([*head, "genotype"], front), "", "## Leaderboard", ""]
    return out + [_md_table([*head, "front", "genotype", *extra], rows), ""]


def _md_groups(lb: Leaderboard) -> list[str]:
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


def render_markdown(lb: Leaderboard) -> str:
    """``report.md``: summary, plot, front, leaderboard, seed groups, cells, skipped runs."""
    out = [
        f"# snas-ray collect: {lb.root.name or lb.root}",
        "",
        f"{len(lb.rows)} runs ranked on **{lb.metric}** (a retrained `test_acc`, where present, "
        f"replaces it), {len(lb.front)} on the Pareto front of accuracy against **{lb.cost}**, "
        f"{len(lb.skipped)} skipped. Folder: `{lb.root}`.",
        "",
        f"Swept settings: {', '.join(f'`{k}`' for k in lb.swept) or 'none'}. Costs are those of "
        "each run's evaluation network for one image (FLOPs are multiply-adds, MAC is memory "
        "access in elements).",
        "",
        "![accuracy against cost](pareto.png)",
        "",
    ]
    out += _md_runs(lb) + _md_groups(lb) + ["## Cells on the front", ""]
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
