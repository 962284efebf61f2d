"""Cost tables (spec §1.3) and the resource estimators (spec §7, §15)."""

from __future__ import annotations

import pytest
import torch

from snas_ray.config import CostConfig, SpaceConfig
from snas_ray.genotype import PRIMITIVES
from snas_ray.space.cost import edge_cost_tables, op_cost, resource_penalty
from snas_ray.space.sampling import gumbel_softmax_sample
from snas_ray.space.supernet import Supernet


def test_op_costs_match_hand_values_for_c4_h8():
    c, h = 4, 8
    # sep_conv_3x3, stride 1: size = 2*4*9 + (4+4)*4 = 104, flops = 104*64, mac = 64*(28+4)+104
    assert op_cost("sep_conv_3x3", c, 1, h) == (104, 104 * 64, 64 * 32 + 104)
    # stride 2: y = 4 -> flops 104*16, mac 16*(40+4)+104
    assert op_cost("sep_conv_3x3", c, 2, h) == (104, 104 * 16, 16 * 44 + 104)
    # dil_conv_5x5: size = 4*25 + 16 = 116
    assert op_cost("dil_conv_5x5", c, 1, h) == (116, 116 * 64, 64 * (12 + 4) + 116)
    assert op_cost("dil_conv_5x5", c, 2, h) == (116, 116 * 16, 16 * (24 + 4) + 116)
    # skip: identity costs memory only; at stride 2 it is a FactorizedReduce with 2*4*2 weights
    assert op_cost("skip_connect", c, 1, h) == (0, 0, 2 * 4 * 64)
    assert op_cost("skip_connect", c, 2, h) == (16, 16 * 16, 2 * 16 * (16 + 2) + 16)
    # pooling: 9 ops per output element, no weights
    assert op_cost("max_pool_3x3", c, 1, h) == (0, 9 * 4 * 64, 2 * 4 * 64)
    assert op_cost("avg_pool_3x3", c, 2, h) == (0, 9 * 4 * 16, 5 * 4 * 16)
    assert op_cost("none", c, 2, h) == (0, 0, 0)


def test_op_cost_size_equals_real_conv_weights():
    from snas_ray.space.ops import make_op

    for name in PRIMITIVES:
        for stride in (1, 2):
            op = make_op(name, 6, stride, affine=False)  # no BN weights: size counts convs only
            n = sum(p.numel() for p in op.parameters())
            assert op_cost(name, 6, stride, 8).size == n, (name, stride)


def test_reduction_cell_table_uses_stride_and_halved_side():
    t = edge_cost_tables(PRIMITIVES, 4, True, 8)
    assert t.shape == (3, 14, 8)
    sep3 = PRIMITIVES.index("sep_conv_3x3")
    skip = PRIMITIVES.index("skip_connect")
    # edge 0 (node 0 <- state 0) has stride 2 on an 8x8 input
    assert t[1, 0, sep3] == 104 * 16
    # edge 4 (node 1 <- node 0) has stride 1 on the already halved 4x4 map
    assert t[1, 4, sep3] == 104 * 16
    assert t[2, 4, skip] == 2 * 4 * 16
    assert t[0, 4, skip] == 0 and t[0, 0, skip] == 16


def test_supernet_tables_follow_channels_and_resolution():
    net = Supernet(SpaceConfig(layers=5, init_channels=4), num_classes=10, image_size=16)
    sep3 = PRIMITIVES.index("sep_conv_3x3")
    # cell 0: C=4 at 16x16; cell 1 reduces (C=8, 16 -> 8); cell 3 reduces (C=16, 8 -> 4)
    assert net.reduction == [False, True, False, True, False]
    assert net.cost_tables[0, 1, 0, sep3] == op_cost("sep_conv_3x3", 4, 1, 16).flops
    assert net.cost_tables[1, 1, 0, sep3] == op_cost("sep_conv_3x3", 8, 2, 16).flops
    assert net.cost_tables[2, 1, 0, sep3] == op_cost("sep_conv_3x3", 8, 1, 8).flops
    assert net.cost_tables[4, 2, 9, sep3] == op_cost("sep_conv_3x3", 16, 1, 4).mac


def _setup(n_cells=3):
    torch.manual_seed(0)
    tables = [edge_cost_tables(PRIMITIVES, 4, i == 1, 8) for i in range(n_cells)]
    reduction = [i == 1 for i in range(n_cells)]
    alpha_n = torch.zeros(14, 8, requires_grad=True)
    alpha_r = torch.zeros(14, 8, requires_grad=True)
    return tables, reduction, alpha_n, alpha_r


@pytest.mark.parametrize("estimator", ["reparametrization", "discrete", "policy_gradient"])
@pytest.mark.parametrize("log_penalty", [True, False])
def test_penalty_alone_moves_logits_toward_cheaper_ops(estimator, log_penalty):
    tables, reduction, alpha_n, alpha_r = _setup()
    cfg = CostConfig(resource_lambda=1.0, estimator=estimator, log_penalty=log_penalty)
    optim = torch.optim.Adam([alpha_n, alpha_r], lr=0.05)

    @torch.no_grad()
    def expected_size():
        p = torch.softmax(alpha_n, -1)
        return float(sum((t[0] * p).sum() for t, r in zip(tables, reduction, strict=True) if not r))

    before = expected_size()
    for _ in range(150):
        per_cell = [alpha_r if r else alpha_n for r in reduction]
        z = [gumbel_softmax_sample(a, 1.0) for a in per_cell]
        terms = resource_penalty(tables, z, per_cell, reduction, 1.0, cfg)
        optim.zero_grad()
        terms.penalty.backward()
        optim.step()
    after = expected_size()
    assert after < 0.6 * before, (before, after)
    # the most expensive op (sep_conv_5x5) lost probability on every edge of the normal cell
    sep5 = PRIMITIVES.index("sep_conv_5x5")
    assert torch.all(torch.softmax(alpha_n, -1)[:, sep5] < 1 / 8)


@pytest.mark.parametrize("estimator", ["reparametrization", "discrete", "policy_gradient"])
def test_penalty_terms_report_expected_and_sampled_costs(estimator):
    tables, reduction, alpha_n, alpha_r = _setup()
    per_cell = [alpha_r if r else alpha_n for r in reduction]
    z = [gumbel_softmax_sample(a, 1.0) for a in per_cell]
    terms = resource_penalty(tables, z, per_cell, reduction, 1.0, CostConfig(estimator=estimator))
    uniform = sum(float(t[0].sum()) / 8 for t in tables)
    assert terms.expected["size"].item() == pytest.approx(uniform, rel=1e-5)
    assert terms.sampled["size"].item() > 0
    assert terms.penalty.requires_grad


def test_discrete_penalty_hand_value_linear_size():
    tables, reduction, alpha_n, alpha_r = _setup(n_cells=1)
    z = [torch.full((14, 8), 1 / 8)]
    cfg = CostConfig(estimator="discrete", log_penalty=False, separation="size")
    terms = resource_penalty(tables, z, [alpha_n], [False], 1.0, cfg)
    # uniform softmax: per-edge expected size = mean of the row; P = sum over edges / 1 cell
    assert terms.penalty.item() == pytest.approx(float(tables[0][0].mean(-1).sum()), rel=1e-6)


def test_normalisers_use_real_cell_counts():
    tables, reduction, alpha_n, alpha_r = _setup(n_cells=1)
    z = [torch.full((14, 8), 1 / 8)]
    cfg = CostConfig(estimator="discrete", log_penalty=False, separation="size")
    one = resource_penalty(tables, z, [alpha_n], [False], 1.0, cfg).penalty
    three = resource_penalty(tables * 3, z * 3, [alpha_n] * 3, [False] * 3, 1.0, cfg).penalty
    assert three.item() == pytest.approx(one.item(), rel=1e-6)  # mean over normal cells
