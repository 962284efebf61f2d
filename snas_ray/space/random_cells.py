"""Random genotypes matched in cost: uniform over a derivation form's genotypes in a cost band.

Rejection from the unconstrained uniform almost never lands near a constrained search's child
(issue 14: 600 uniform draws at the digits size gave none within 2x of a lambda=1e-2 child), so
draws come from an exact sampler over the additive :class:`~.child_cost.ChildCostTable`. A
genotype is a choice of one option per *slot*: per (cell type, edge) one op for the ``snas``
form (every edge, 'none' included), per (cell type, node) two source edges with a non-'none' op
each for the ``top2`` form. Its cost is the base plus one table value per slot, so a dynamic
programme over (slot, binned cost) counts the genotypes of every binned cost exactly, and
walking it backwards draws uniformly among those whose binned cost lies in a band widened by
the worst rounding. Keeping only draws whose exact cost is inside the band then leaves a draw
uniform over the band itself (rejection from a uniform superset).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from snas_ray.errors import SnasRayError
from snas_ray.genotype import Genotype, genotype_from_nodes
from snas_ray.space.child_cost import METRICS, ChildCostTable
from snas_ray.space.supernet import STEPS, edge_index

__all__ = ["FORMS", "MatchedSampler", "NoMatchError", "canonical", "genotype_form"]

FORMS = ("snas", "top2")
_TYPES = ("normal", "reduce")
_MAX_BINS = 400_000  # memory and time stay small even for 20-cell CIFAR tables
_SLACK_SHARE = 0.05  # rounding may widen the band by at most this share of its width


class NoMatchError(SnasRayError):
    """No genotype of the form could be drawn inside the cost band."""


def genotype_form(genotype: Genotype) -> str:
    """``snas`` for the 14-entry edge_all layout, ``top2`` for two real ops from two distinct
    sources per node; anything else has no form a random draw could imitate."""
    if genotype.is_edge_all:
        return "snas"
    for cell in _TYPES:
        nodes = genotype.node_inputs(cell)
        ok = len(nodes) == STEPS and all(
            len(node) == 2 and node[0][1] != node[1][1] and "none" not in (node[0][0], node[1][0])
            for node in nodes
        )
        if not ok:
            raise SnasRayError(
                f"genotype {cell} cell: neither the snas (edge_all) nor the top2 form, so no "
                "random genotype of its form can be drawn"
            )
    return "top2"


def canonical(genotype: Genotype) -> tuple:
    """A key equal for genotypes that build the same network: entry order within a node and
    the order of a cell's concat do not matter."""
    key = []
    for cell in _TYPES:
        nodes = tuple(tuple(sorted(node)) for node in genotype.node_inputs(cell))
        concat = genotype.normal_concat if cell == "normal" else genotype.reduce_concat
        key.append((nodes, tuple(sorted(concat))))
    return tuple(key)


@dataclass(frozen=True)
class _Slot:
    """One independent choice: its options' node entries and their costs (``[n, 3]``)."""

    cell: int  # 0 normal, 1 reduce
    node: int
    options: tuple[tuple[tuple[str, int], ...], ...]  # per option, the (op, src) entries it adds
    costs: torch.Tensor  # float64 [n_options, 3]


def _slots(table: ChildCostTable, form: str) -> list[_Slot]:
    ops = table.primitives
    slots = []
    for t in range(2):
        for node in range(STEPS):
            if form == "snas":
                for src in range(node + 2):
                    e = edge_index(node, src)
                    options = tuple(((op, src),) for op in ops)
                    slots.append(_Slot(t, node, options, table.table[t, e].clone()))
                continue
            real = [k for k, op in enumerate(ops) if op != "none"]
            options, rows = [], []
            for a, b in itertools.combinations(range(node + 2), 2):
                for ka, kb in itertools.product(real, real):
                    options.append(((ops[ka], a), (ops[kb], b)))
                    ea, eb = edge_index(node, a), edge_index(node, b)
                    rows.append(table.table[t, ea, ka] + table.table[t, eb, kb])
            slots.append(_Slot(t, node, tuple(options), torch.stack(rows)))
    return slots


class MatchedSampler:
    """Uniform draws of ``form`` genotypes whose exact ``metric`` cost lies in ``[low, high]``.

    Example:
        >>> sampler = MatchedSampler(table, "snas", "params")  # doctest: +SKIP
        >>> g = sampler.draw(9_000, 11_000, torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    def __init__(self, table: ChildCostTable, form: str, metric: str) -> None:
        if form not in FORMS:
            raise SnasRayError(f"unknown derivation form {form!r} (allowed: {', '.join(FORMS)})")
        if metric not in METRICS:
            raise SnasRayError(f"unknown cost {metric!r} (allowed: {', '.join(METRICS)})")
        self.table, self.form, self.metric = table.to("cpu"), form, metric
        self.slots = _slots(self.table, form)
        self._column = METRICS.index(metric)

    def reachable(self) -> tuple[float, float]:
        """The cheapest and dearest genotype of the form, in the metric."""
        return self.table.reachable(self.metric, self.form)

    def cost(self, genotype: Genotype) -> float:
        """The exact cost, in the metric, of ``genotype``'s network at the table's size."""
        return float(getattr(self.table.of_genotype(genotype), self.metric))

    def draw(
        self, low: float, high: float, generator: torch.Generator, *, max_tries: int = 200
    ) -> Genotype:
        """One genotype drawn uniformly among those of cost in ``[low, high]``.

        Raises:
            NoMatchError: no genotype of the form lies in the band, or ``max_tries`` candidate
                draws all fell outside it.
        """
        plan = self._programme(low, high)
        if plan is None:
            lo, hi = self.reachable()
            raise NoMatchError(
                f"no {self.form} genotype has {self.metric} in [{low:,.0f}, {high:,.0f}] "
                f"(this space reaches {lo:,.0f}..{hi:,.0f})"
            )
        for _ in range(max_tries):
            genotype = self._walk_back(plan, generator)
            if low <= self.cost(genotype) <= high:
                return genotype
        raise NoMatchError(
            f"{max_tries} draws of {self.form} genotypes missed {self.metric} "
            f"[{low:,.0f}, {high:,.0f}]"
        )

    # ----------------------------------------------------------------- the dynamic programme
    def _programme(self, low: float, high: float) -> _Programme | None:
        col = self._column
        costs = [s.costs[:, col] for s in self.slots]
        floor = sum(float(c.min()) for c in costs)
        span = sum(float(c.max() - c.min()) for c in costs)
        width = max(_SLACK_SHARE * (high - low) / len(costs), span / _MAX_BINS, 1e-9)
        bins = [torch.round((c - c.min()) / width).long() for c in costs]
        offset = float(self.table.base[col]) + floor
        slack = len(costs) / 2  # each rounding moves a slot by at most half a bin
        counts = [torch.ones(1, dtype=torch.float64)]
        for b in bins:
            mult = torch.bincount(b).to(torch.float64)
            prev = counts[-1]
            new = torch.zeros(len(prev) + len(mult) - 1, dtype=torch.float64)
            for shift in torch.nonzero(mult).flatten().tolist():
                new[shift : shift + len(prev)] += mult[shift] * prev
            counts.append(new)
        first = max(0, math.ceil((low - offset) / width - slack))
        last = min(len(counts[-1]) - 1, math.floor((high - offset) / width + slack))
        if last < first or float(counts[-1][first : last + 1].sum()) == 0.0:
            return None
        return _Programme(counts, bins, first, last)

    def _walk_back(self, plan: _Programme, generator: torch.Generator) -> Genotype:
        window = plan.counts[-1][plan.first : plan.last + 1]
        total = plan.first + int(torch.multinomial(window, 1, generator=generator))
        chosen: list[int] = [0] * len(self.slots)
        for i in range(len(self.slots) - 1, -1, -1):
            prev, b = plan.counts[i], plan.bins[i]
            rest = total - b
            ok = (rest >= 0) & (rest < len(prev))
            weights = torch.where(ok, prev[rest.clamp(0, len(prev) - 1)], torch.zeros(()))
            chosen[i] = int(torch.multinomial(weights, 1, generator=generator))
            total = int(rest[chosen[i]])
        return self._genotype(chosen)

    def _genotype(self, chosen: list[int]) -> Genotype:
        nodes: list[list[list[tuple[str, int]]]] = [[[] for _ in range(STEPS)] for _ in _TYPES]
        for slot, k in zip(self.slots, chosen, strict=True):
            nodes[slot.cell][slot.node].extend(slot.options[k])
        return genotype_from_nodes(nodes[0], nodes[1])


@dataclass(frozen=True)
class _Programme:
    counts: list[torch.Tensor]  # counts[i][r]: genotypes of the first i slots with binned cost r
    bins: list[torch.Tensor]  # per slot, each option's binned cost above the slot's cheapest
    first: int  # the widened band, in bins above the cheapest genotype
    last: int
