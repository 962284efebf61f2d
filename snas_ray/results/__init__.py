"""Reading run folders into a leaderboard, its Pareto front, report and plots; no torch import.

``collect(folder)`` gives a ranked :class:`Leaderboard`; ``Leaderboard.write()`` writes the
report. Modules, lowest first: ``retrained``, ``stats``, ``runs``, ``groups``, ``evaluation``,
``evaluation_plot``, ``plots``, ``report``, ``evaluation_report``, ``leaderboard``.
"""

from snas_ray.results.groups import Group
from snas_ray.results.leaderboard import Leaderboard, collect, pareto_front
from snas_ray.results.plots import draw_cell, plot_pareto
from snas_ray.results.report import (
    Board,
    format_count,
    format_table,
    render_markdown,
    write_report,
)
from snas_ray.results.retrained import GenotypeStats
from snas_ray.results.runs import COSTS, Row, Skipped, find_run_folders

__all__ = [
    "COSTS",
    "Board",
    "GenotypeStats",
    "Group",
    "Leaderboard",
    "Row",
    "Skipped",
    "collect",
    "draw_cell",
    "find_run_folders",
    "format_count",
    "format_table",
    "pareto_front",
    "plot_pareto",
    "render_markdown",
    "write_report",
]
