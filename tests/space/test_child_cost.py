"""The child-cost table equals building and measuring the child network, for any genotype."""

from __future__ import annotations

import pytest
import torch

from snas_ray.genotype import PRIMITIVES
from snas_ray.space.child_cost import child_cost_table
from snas_ray.space.measure import genotype_cost
from snas_ray.space.supernet import derive_genotype

SIZES = [(8, 5, 8, 10), (6, 4, 8, 10), (16, 8, 32, 10)]  # C, layers, image side, classes


@pytest.mark.parametrize(("c", "layers", "side", "classes"), SIZES)
def test_table_cost_equals_the_measured_network(c, layers, side, classes):
    table = child_cost_table(
        PRIMITIVES, init_channels=c, layers=layers, num_classes=classes, image_size=side
    )
    gen = torch.Generator().manual_seed(c * layers)
    for trial in range(4):
        normal = torch.randn(14, 8, generator=gen) * (1 + trial)
        reduce = torch.randn(14, 8, generator=gen) * (1 + trial)
        for derivation in ("snas", "top2"):
            genotype = derive_genotype(normal, reduce, PRIMITIVES, derivation)
            measured = genotype_cost(
                genotype, init_channels=c, layers=layers, num_classes=classes, image_size=side
            )
            assert table.of_genotype(genotype) == measured, (derivation, trial)
        for derivation, on_device in (("snas", table.of_argmax), ("top2", table.of_top2)):
            child = genotype_cost(
                derive_genotype(normal, reduce, PRIMITIVES, derivation),
                init_channels=c,
                layers=layers,
                num_classes=classes,
                image_size=side,
            )
            assert on_device(normal, reduce).tolist() == [child.params, child.flops, child.mac]


def test_reachable_range_is_the_cheapest_and_dearest_child():
    table = child_cost_table(PRIMITIVES, init_channels=8, layers=5, num_classes=10, image_size=8)
    low, high = table.reachable("params")
    # Every edge 'none' is the cheapest child; the dearest takes each edge's largest op.
    cheapest = table.of_argmax(
        torch.eye(8)[[0] * 14] * 5, torch.eye(8)[[0] * 14] * 5
    )  # 'none' is op 0
    assert PRIMITIVES[0] == "none"
    assert low == cheapest[0] == table.base[0]
    dear = table.table[..., 0].argmax(-1)  # [2, E]
    dearest = table.of_argmax(torch.eye(8)[dear[0]], torch.eye(8)[dear[1]])
    assert high == dearest[0]
    # The digits demo's space: the issue measured about 15.5K to 168K parameters.
    assert 15_000 < low < 16_000 and 160_000 < high < 170_000
    t_low, t_high = table.reachable("params", "top2")
    assert low < t_low < t_high < high


def test_expected_child_cost_is_the_mean_over_sampled_children():
    table = child_cost_table(PRIMITIVES, init_channels=6, layers=4, num_classes=10, image_size=8)
    gen = torch.Generator().manual_seed(0)
    normal, reduce = torch.randn(14, 8, generator=gen), torch.randn(14, 8, generator=gen)
    # Monte Carlo: children drawn op by op from softmax(logits), costed exactly.
    draws = 4000
    total = torch.zeros(3, dtype=torch.float64)
    for _ in range(draws):
        pick = [
            torch.multinomial(a.softmax(-1), 1, generator=gen).squeeze(1) for a in (normal, reduce)
        ]
        total += table.of_argmax(torch.eye(8)[pick[0]], torch.eye(8)[pick[1]])
    expected = table.of_expectation(normal, reduce)
    assert torch.allclose(expected, total / draws, rtol=0.02)
    # A sharp distribution's expected child is its argmax child.
    sharp = [1e4 * a for a in (normal, reduce)]
    assert torch.allclose(table.of_expectation(*sharp), table.of_argmax(*sharp))
