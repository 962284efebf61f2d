"""What an evaluation retrains: the best front genotypes and cost-matched random ones.

The front is the one ``collect`` computes; identical genotypes found by several runs are retrained
once. Costs are exact, from the additive child-cost table at the *retrain* network's size, and
random genotypes are drawn uniformly among the genotypes of the front genotype's derivation form
whose cost lies within the tolerance (:class:`~snas_ray.space.random_cells.MatchedSampler`),
from one generator seeded with ``evaluate.draw_seed``: the same sweep and config always give the
same plan, which is what lets a re-run continue an evaluation. No Ray here.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snas_ray.errors import ConfigError, EvaluationError
from snas_ray.evaluate_spec import EvaluateSpec
from snas_ray.genotype import PRIMITIVES, Genotype
from snas_ray.results import Row, collect
from snas_ray.space.child_cost import ChildCostTable, child_cost_table
from snas_ray.space.random_cells import MatchedSampler, NoMatchError, canonical, genotype_form

__all__ = ["Candidate", "EvaluationPlan", "make_plan"]

logger = logging.getLogger(__name__)

# Image side each dataset's loader gives when data.image_size is 0, and its channels/classes
# (digits are replicated to 3 channels); the costs are those of the network retrain builds.
_NATIVE = {"digits": (16, 3, 10), "cifar10": (32, 3, 10), "synthetic": (32, 3, 10)}


@dataclass(frozen=True)
class Candidate:
    """One genotype to retrain.

    Attributes:
        name: ``search-1`` (the most accurate front genotype), ``random-1a`` (its first match).
        source: ``search`` or ``random``.
        genotype: The cell pair.
        form: Its derivation form, ``snas`` or ``top2``.
        cost: ``params``, ``flops``, ``mac`` of its retrain network.
        matched_to: For a random genotype, the name of the front genotype it matches.
        search_run: For a front genotype, its run folder relative to the sweep folder.
        search_acc: The search metric of that run.
        also_found_by: Other front runs that derived the same genotype.
    """

    name: str
    source: str
    genotype: Genotype
    form: str
    cost: dict[str, int]
    matched_to: str | None = None
    search_run: str | None = None
    search_acc: float | None = None
    also_found_by: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self) | {"genotype": self.genotype.to_dict()}
        return out | {"also_found_by": list(self.also_found_by)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        fields = d | {"genotype": Genotype.from_dict(d["genotype"])}
        return cls(**fields | {"also_found_by": tuple(d.get("also_found_by", ()))})


@dataclass(frozen=True)
class EvaluationPlan:
    """The genotypes of an evaluation, how they were matched, and the seeds of each."""

    sweep: str
    cost: str
    tolerance: float
    draw_seed: int
    seeds: tuple[int, ...]
    front_size: int
    candidates: tuple[Candidate, ...]
    notes: tuple[str, ...] = ()

    def runs(self) -> list[tuple[str, Candidate, int]]:
        """``(run name, candidate, seed)`` for every retraining, e.g. ``search-1-seed=0``."""
        return [(f"{c.name}-seed={s}", c, s) for c in self.candidates for s in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out |= {"seeds": list(self.seeds), "notes": list(self.notes)}
        return out | {"candidates": [c.to_dict() for c in self.candidates]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationPlan:
        candidates = tuple(Candidate.from_dict(c) for c in d["candidates"])
        fields = d | {"seeds": tuple(d["seeds"]), "notes": tuple(d.get("notes", ()))}
        return cls(**fields | {"candidates": candidates})


def _pick_front(rows: list[Row], top: int) -> tuple[list[tuple[Row, list[str]]], list[str]]:
    """The ``top`` most accurate distinct front genotypes (0: all), each with the other runs
    that found it; and a note when the front holds fewer than asked for."""
    picked: dict[tuple, tuple[Row, list[str]]] = {}
    for row in sorted(rows, key=lambda r: (r.rank, r.run)):
        key = canonical(row.genotype)
        if key in picked:
            picked[key][1].append(row.run)
        else:
            picked[key] = (row, [])
    distinct = list(picked.values())
    notes = []
    if top and len(distinct) < top:
        notes.append(
            f"the Pareto front has {len(distinct)} distinct genotype(s), fewer than the {top} "
            f"asked for: retraining {len(distinct)}"
        )
    return (distinct[:top] if top else distinct), notes


def _cost_table(spec: EvaluateSpec, primitives: tuple[str, ...]) -> ChildCostTable:
    t, data = spec.base.train, spec.base.data
    if t.network != "cifar":
        raise ConfigError("train.network", "evaluate matches costs on the cifar network only")
    if data.name not in _NATIVE:
        raise ConfigError("data.name", f"evaluate supports {', '.join(_NATIVE)} (cost table)")
    side, channels, classes = _NATIVE[data.name]
    return child_cost_table(
        primitives,
        init_channels=t.init_channels,
        layers=t.layers,
        num_classes=classes,
        image_size=data.image_size or side,
        in_channels=channels,
    )


def _primitives(rows: list[Row]) -> tuple[str, ...]:
    found = {tuple(r.settings.get("space.primitives") or PRIMITIVES) for r in rows}
    if len(found) > 1:
        raise EvaluationError("the front's runs searched different op sets (space.primitives)")
    return found.pop()


def _draw_matches(
    row_name: str,
    target: Candidate,
    sampler: MatchedSampler,
    spec: EvaluateSpec,
    generator: torch.Generator,
) -> list[Genotype]:
    opts = spec.options
    value = target.cost[opts.cost]
    low, high = value * (1 - opts.tolerance), value * (1 + opts.tolerance)
    seen = {canonical(target.genotype)}
    drawn: list[Genotype] = []
    try:
        for _ in range(opts.random):
            for _ in range(opts.max_tries):  # a repeat (or the front genotype) is drawn again
                genotype = sampler.draw(low, high, generator, max_tries=opts.max_tries)
                if canonical(genotype) not in seen:
                    break
            else:
                raise NoMatchError(f"{opts.max_tries} draws gave only genotypes already taken")
            seen.add(canonical(genotype))
            drawn.append(genotype)
    except NoMatchError as exc:
        raise EvaluationError(
            f"no cost-matched random genotype for {target.name} ({row_name}, "
            f"{value:,} {opts.cost} at the retrain size, +-{opts.tolerance:.0%}): {exc} "
            "(widen evaluate.tolerance or change the retrain size)"
        ) from None
    return drawn


def make_plan(sweep_dir: Path | str, spec: EvaluateSpec) -> EvaluationPlan:
    """The evaluation of ``sweep_dir``'s front under ``spec``; deterministic.

    Raises:
        EvaluationError: no finished search run, or no random match for a front genotype.
    """
    opts = spec.options
    board = collect(sweep_dir, metric=opts.metric, cost=opts.cost)
    if not board.front:
        raise EvaluationError(f"{sweep_dir}: no finished search run, so no front to evaluate")
    picked, notes = _pick_front(board.front, opts.top)
    table = _cost_table(spec, _primitives([row for row, _ in picked]))
    generator = torch.Generator().manual_seed(opts.draw_seed)
    samplers: dict[str, MatchedSampler] = {}
    candidates: list[Candidate] = []
    for i, (row, twins) in enumerate(picked, 1):
        form = genotype_form(row.genotype)
        sampler = samplers.setdefault(form, MatchedSampler(table, form, opts.cost))
        cost = dataclasses.asdict(table.of_genotype(row.genotype))
        front = Candidate(
            f"search-{i}",
            "search",
            row.genotype,
            form,
            {k: cost[k] for k in ("params", "flops", "mac")},
            search_run=row.run,
            search_acc=row.search_acc,
            also_found_by=tuple(twins),
        )
        candidates.append(front)
        for j, genotype in enumerate(_draw_matches(row.run, front, sampler, spec, generator)):
            cost = dataclasses.asdict(table.of_genotype(genotype))
            cost = {k: cost[k] for k in ("params", "flops", "mac")}
            name = f"random-{i}{chr(ord('a') + j) if j < 26 else j}"
            candidates.append(
                Candidate(name, "random", genotype, form, cost, matched_to=front.name)
            )
    for note in notes:
        logger.warning("evaluate: %s", note)
    return EvaluationPlan(
        sweep=str(Path(sweep_dir).resolve()),
        cost=opts.cost,
        tolerance=opts.tolerance,
        draw_seed=opts.draw_seed,
        seeds=tuple(spec.seeds()),
        front_size=len(board.front),
        candidates=tuple(candidates),
        notes=tuple(notes),
    )
