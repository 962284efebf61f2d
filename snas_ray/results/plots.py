"""Plots of a collected sweep: accuracy against cost with its Pareto front, and cell diagrams.

matplotlib (Agg) is imported on first use, so importing this module stays cheap; cells are laid
out by hand, as no graphviz binary can be assumed. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snas_ray.genotype import Genotype
from snas_ray.results.evaluation_plot import draw_retrained
from snas_ray.results.figures import pyplot, save_figure
from snas_ray.results.retrained import GenotypeStats
from snas_ray.results.runs import Row

__all__ = ["COST_LABELS", "draw_cell", "identical_points", "plot_pareto"]


_ESTIMATOR_COLOURS = {"reparametrization": "C0", "discrete": "C1", "policy_gradient": "C2"}


# Axis titles: "MAC" is memory access (the SNAS paper's cost), not multiply-accumulates.
COST_LABELS = {
    "params": "parameters",
    "flops": "FLOPs (multiply-adds)",
    "mac": "MAC: memory access (elements read + written)",
}


def identical_points(rows: Sequence[Row], cost: str) -> list[list[Row]]:
    """Runs with the same accuracy, cost and genotype (a lambda-0 sweep's estimators search the
    same thing), each set drawn as one point with a count; sets in first-seen order."""
    sets: dict[str, list[Row]] = {}
    for r in rows:
        key = repr((r.acc, float(r.result[cost]), r.genotype.to_dict()))
        sets.setdefault(key, []).append(r)
    return list(sets.values())


def _figure(retrained: Sequence[GenotypeStats], cost: str) -> tuple[Any, Any]:
    """The figure and the search-accuracy axes; retrained genotypes get axes of their own."""
    plt = pyplot()
    if not retrained:
        return plt.subplots(figsize=(7.5, 4.8))
    fig, (ax, right) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    draw_retrained(right, retrained, cost)
    right.legend(fontsize=8, loc="best")
    right.set_title("evaluation: retrained from scratch (separate axes)")
    return fig, ax


def plot_pareto(
    rows: Sequence[Row],
    front: Sequence[Row],
    path: Path,
    *,
    cost: str,
    metric: str,
    name: str,
    baselines: Sequence[GenotypeStats] = (),
) -> None:
    """Accuracy against ``cost``: one point per distinct result, coloured by estimator, sized
    and labelled by lambda (``xN`` when N runs found the identical child, e.g. every estimator
    at lambda 0); the ``front`` (cheapest first) ringed in black and joined by a step line.
    ``name`` (the collected folder) opens the title. Runs an evaluation retrained, and its
    random ``baselines``, get a second panel of their own: retrained test accuracy is never
    drawn on the search-accuracy axes."""
    retrained = [r.retrained for r in rows if r.retrained] + list(baselines)
    fig, ax = _figure(retrained, cost)
    costs = [float(r.result[cost]) for r in rows]
    scale, unit = next(
        ((s, u) for s, u in ((1e9, "G"), (1e6, "M"), (1e3, "K")) if max(costs, default=0) >= s),
        (1.0, ""),
    )
    lams = sorted({r.setting("resource_lambda") or 0.0 for r in rows})
    colours = dict(_ESTIMATOR_COLOURS)
    points = identical_points(rows, cost)
    for same in points:
        _point(ax, same, colours, lams, x=float(same[0].result[cost]) / scale, n_points=len(points))
    if front:
        xs = [r.result[cost] / scale for r in front]
        ax.step(xs, [100 * r.acc for r in front], where="post", color="black", lw=1.2, zorder=2)
    drawn = {str(p[0].setting("estimator")) for p in points if _one_estimator(p)}
    for est, colour in colours.items():
        if est in drawn:
            ax.scatter([], [], color=colour, label=est)
    if not all(_one_estimator(p) for p in points):
        ax.scatter([], [], color="0.35", label="×N: N runs, identical child")
    ax.plot([], [], color="black", lw=1.2, marker="o", mfc="white", label="Pareto front")
    # Outside the axes, so the legend never hides a run (below them when a panel is beside).
    beside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "ncol": 4}
    ax.legend(fontsize=8, title="estimator (size: λ)", **(below if retrained else beside))
    if costs and min(costs) > 0 and max(costs) > 10 * min(costs):
        ax.set_xscale("log")
    label = COST_LABELS.get(cost, cost) + (f" ({unit})" if unit else "")
    ax.set_xlabel(f"{label} of the evaluation network, one image")
    ax.set_ylabel(f"{metric} (%) of the search")
    distinct = f" ({len(points)} distinct)" if len(points) < len(rows) else ""
    ax.set_title(f"{name}: {len(rows)} runs{distinct}, {len(front)} on the front")
    ax.grid(alpha=0.3)
    ax.margins(0.12)
    save_figure(fig, path)


def _one_estimator(same: list[Row]) -> bool:
    return len({str(r.setting("estimator")) for r in same}) == 1


def _point(ax: Any, same: list[Row], colours: dict, lams: list, *, x: float, n_points: int) -> None:
    # One marker for runs with an identical result; grey when their estimators differ.
    r = same[0]
    for est in sorted({str(s.setting("estimator")) for s in same}):
        colours.setdefault(est, f"C{len(colours)}")
    colour = colours[str(r.setting("estimator"))] if _one_estimator(same) else "0.35"
    lam = r.setting("resource_lambda") or 0.0
    size = 40 + 160 * lams.index(lam) / max(len(lams) - 1, 1)
    pareto = any(s.pareto for s in same)
    ax.scatter(
        x,
        100 * r.acc,
        s=size,
        marker="o",
        color=colour,
        alpha=0.9 if pareto else 0.45,
        edgecolors="black" if pareto else "none",
        linewidths=1.4,
        zorder=3,
    )
    if pareto or n_points <= 15 or len(same) > 1:  # label every point of a small plot
        count = f" ×{len(same)}" if len(same) > 1 else ""
        ax.annotate(
            f"λ={lam:g}{count}",
            (x, 100 * r.acc),
            xytext=(6, 5),
            textcoords="offset points",
            fontsize=7,
            color="0.25",
        )


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
    plt = pyplot()
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
    save_figure(fig, path)


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
