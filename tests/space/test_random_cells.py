"""Cost-matched random genotypes: reproducible, inside the band, uniform, and a clear no-match."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from snas_ray.genotype import PRIMITIVES
from snas_ray.published import REGISTRY
from snas_ray.space.child_cost import ChildCostTable, child_cost_table
from snas_ray.space.random_cells import MatchedSampler, NoMatchError, canonical, genotype_form
from snas_ray.space.supernet import num_edges


@pytest.fixture(scope="module")
def digits_table() -> ChildCostTable:
    # The digits retrain network (C=8, 5 cells, 16x16 images, 3 channels).
    return child_cost_table(
        PRIMITIVES, init_channels=8, layers=5, num_classes=10, image_size=16, in_channels=3
    )


@pytest.mark.parametrize(
    ("form", "metric", "target"),
    [("snas", "params", 20_000), ("snas", "flops", 1.1e6), ("top2", "params", 35_000)],
)
def test_draws_repeat_from_their_seed_and_land_in_the_band(digits_table, form, metric, target):
    sampler = MatchedSampler(digits_table, form, metric)
    low, high = 0.9 * target, 1.1 * target

    def draws(seed: int) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [sampler.draw(low, high, gen) for _ in range(12)]

    first = draws(7)
    assert first == draws(7)  # the same seed gives the same genotypes, in order
    assert first != draws(8)
    for genotype in first:
        assert low <= sampler.cost(genotype) <= high
        assert genotype_form(genotype) == form
        # The exact cost is the one result.json would report for the retrained network.
        assert sampler.cost(genotype) == getattr(digits_table.of_genotype(genotype), metric)
    assert len({canonical(g) for g in first}) == len(first)  # a big band: no repeats


def test_a_band_outside_the_space_is_refused_with_its_range(digits_table):
    sampler = MatchedSampler(digits_table, "snas", "params")
    low, high = sampler.reachable()
    with pytest.raises(NoMatchError, match=r"no snas genotype has params in \[9,000, 11,000\]"):
        sampler.draw(9_000, 11_000, torch.Generator().manual_seed(0))
    assert low > 11_000  # every child has the stem and classifier
    edge = sampler.draw(low, low * 1.001, torch.Generator().manual_seed(0))
    assert sampler.cost(edge) == low  # the cheapest child: every edge 'none'


def _unit_table() -> ChildCostTable:
    # Two ops; 'skip_connect' costs 1 param on every edge of either cell, 'none' nothing, so a
    # genotype's cost is its number of skips and the band [10, 12] holds every genotype with
    # 10, 11 or 12 of the 28 edges on skip.
    table = torch.zeros(2, num_edges(), 2, 3, dtype=torch.float64)
    table[:, :, 1, :] = 1.0
    return ChildCostTable(("none", "skip_connect"), torch.zeros(3, dtype=torch.float64), table)


def test_draws_are_uniform_over_the_band():
    sampler = MatchedSampler(_unit_table(), "snas", "params")
    gen = torch.Generator().manual_seed(0)
    n = 3000
    draws = [sampler.draw(10, 12, gen) for _ in range(n)]
    counts = Counter(int(sampler.cost(g)) for g in draws)
    weights = {k: math.comb(28, k) for k in (10, 11, 12)}
    total = sum(weights.values())
    for k, w in weights.items():  # how many skips: binomial weights, within 4 sigma
        p = w / total
        assert abs(counts[k] - n * p) < 4 * math.sqrt(n * p * (1 - p)), (k, counts)
    # Every edge is on skip equally often (uniformity over genotypes, not only over costs).
    expected = sum(k * w for k, w in weights.items()) / total / 28
    per_edge = Counter(
        (cell, node, src)
        for g in draws
        for cell in ("normal", "reduce")
        for node, entries in enumerate(g.node_inputs(cell))
        for op, src in entries
        if op == "skip_connect"
    )
    assert len(per_edge) == 28
    for hits in per_edge.values():
        assert abs(hits / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_forms_of_published_and_derived_genotypes():
    assert genotype_form(REGISTRY["SNAS_mild"]) == "top2"  # two real ops from two sources
    assert genotype_form(REGISTRY["SNAS_mild_edge_all"]) == "snas"
