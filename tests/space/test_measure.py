"""Tests for snas_ray.space.measure: parameters, FLOPs and MAC of evaluation networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from snas_ray.published import REGISTRY
from snas_ray.space.measure import NetworkCost, count_parameters, genotype_cost, measure_cost
from snas_ray.space.network import NetworkCIFAR, NetworkImageNet


def test_measure_cost_hand_computed() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),  # 8x8 out
        nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),  # depthwise
        nn.MaxPool2d(2),  # 4x4 out
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    flops = 256 * 3 * 9 + 256 * 1 * 9 + 64 * 10
    mac = (192 + 256 + 108) + (256 + 256 + 36) + (256 + 64) + (64 + 10 + 640)
    params = 108 + 36 + 650
    for batch in (1, 3):  # counts are per image
        assert measure_cost(model, (batch, 3, 8, 8)) == NetworkCost(params, params, flops, mac)


def test_measure_cost_matches_flop_counter() -> None:
    # FlopCounterMode counts 2 FLOPs per multiply-add for convolutions and matmuls.
    model = NetworkCIFAR(
        REGISTRY["SNAS_moderate_edge_all"],
        init_channels=4,
        layers=3,
        num_classes=10,
        image_size=16,
        auxiliary=True,
    )
    model.train()
    cost = measure_cost(model, (1, 3, 16, 16))
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 3, 16, 16))
    total = counter.get_total_flops()
    assert abs(2 * cost.flops - total) <= 0.01 * total
    assert cost.mac > 0


def test_params_aux() -> None:
    with_aux = genotype_cost(REGISTRY["SNAS_mild"], init_channels=8, layers=5, auxiliary=True)
    without = genotype_cost(REGISTRY["SNAS_mild"], init_channels=8, layers=5)
    assert with_aux.params_aux > with_aux.params == without.params == without.params_aux
    # The aux head never runs in eval, so it adds nothing to flops or mac.
    assert (with_aux.flops, with_aux.mac) == (without.flops, without.mac)


def test_genotype_cost_matches_measure_cost() -> None:
    g = REGISTRY["DARTS_V2"]
    cost = genotype_cost(g, init_channels=8, layers=5, image_size=16, in_channels=1)
    model = NetworkCIFAR(g, init_channels=8, layers=5, num_classes=10, in_channels=1, image_size=16)
    assert cost == measure_cost(model, (1, 1, 16, 16))
    imagenet = genotype_cost(
        g, init_channels=8, layers=5, num_classes=10, image_size=64, imagenet=True
    )
    assert imagenet.params == count_parameters(
        NetworkImageNet(g, init_channels=8, layers=5, num_classes=10)
    )
    with pytest.raises(ValueError, match="3 input channels"):
        genotype_cost(g, init_channels=8, layers=5, in_channels=1, imagenet=True)
