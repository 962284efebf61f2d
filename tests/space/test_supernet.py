"""Supernet structure, mixed edges and genotype derivation (spec §2, §3, §8)."""

from __future__ import annotations

import pytest
import torch

from snas_ray.config import SpaceConfig
from snas_ray.genotype import PRIMITIVES
from snas_ray.space.sampling import gumbel_softmax_sample
from snas_ray.space.supernet import (
    MixedOp,
    Supernet,
    derive_genotype,
    edge_index,
    num_edges,
    reduction_layers,
)


def _net(**kw) -> Supernet:
    torch.manual_seed(0)
    space = SpaceConfig(**({"layers": 2, "init_channels": 4} | kw))
    return Supernet(space, num_classes=10, image_size=8)


def test_edge_numbering_and_reductions():
    assert num_edges() == 14
    assert [edge_index(3, s) for s in range(5)] == [9, 10, 11, 12, 13]
    assert reduction_layers(8) == (2, 5)
    assert reduction_layers(20) == (6, 13)


def test_paper_supernets_build_with_expected_widths():
    net8 = Supernet(SpaceConfig(layers=8, init_channels=16), num_classes=10, image_size=32)
    assert net8.reduction == [False, False, True, False, False, True, False, False]
    assert net8.classifier.in_features == 256
    net20 = Supernet(SpaceConfig(layers=20, init_channels=36), num_classes=10, image_size=32)
    assert net20.classifier.in_features == 576
    assert sum(net20.reduction) == 2 and len(net20.cells) == 20


def test_forward_shapes_and_aux_head_only_in_training():
    net = Supernet(
        SpaceConfig(layers=3, init_channels=4, auxiliary=True), num_classes=7, image_size=16
    )
    z = [gumbel_softmax_sample(a, 1.0) for a in net.cell_log_alpha()]
    out = net(torch.randn(2, 3, 16, 16), z)
    assert out.logits.shape == (2, 7) and out.logits_aux.shape == (2, 7)
    net.eval()
    assert net(torch.randn(2, 3, 16, 16), z).logits_aux is None


def test_log_alpha_are_registered_parameters_in_state_dict():
    net = _net()
    names = {n for n, _ in net.named_parameters()}
    assert {"log_alpha_normal", "log_alpha_reduce"} <= names
    assert "log_alpha_normal" in net.state_dict()
    arch = {id(p) for p in net.arch_parameters()}
    assert not arch & {id(p) for p in net.weight_parameters()}
    # init N(1, 0.01)
    assert abs(net.log_alpha_normal.mean().item() - 1.0) < 0.01


def test_edge_weights_select_ops():
    # With a one-hot z on 'none' for every edge, nodes output zeros: the logits are bias only.
    net = _net(drop_path_prob=0.0)
    net.eval()
    none_only = torch.zeros(14, 8)
    none_only[:, PRIMITIVES.index("none")] = 1
    out = net(torch.randn(3, 3, 8, 8), [none_only, none_only]).logits
    assert torch.allclose(out, net.classifier.bias.expand(3, 10), atol=1e-6)


def test_drop_path_only_in_training():
    net = _net(drop_path_prob=0.5)
    z = [gumbel_softmax_sample(a, 1.0) for a in net.cell_log_alpha()]
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    assert torch.equal(net(x, z).logits, net(x, z).logits)
    net.train()
    torch.manual_seed(1)
    a = net(x, z).logits
    torch.manual_seed(2)
    b = net(x, z).logits
    assert not torch.allclose(a, b)


def _logits_favouring(ops_per_edge: dict[int, str], strength=5.0) -> torch.Tensor:
    a = torch.zeros(14, 8)
    for e, op in ops_per_edge.items():
        a[e, PRIMITIVES.index(op)] = strength
    return a


def test_snas_derivation_is_argmax_per_edge_including_none():
    a = _logits_favouring({0: "sep_conv_3x3", 1: "none", 2: "skip_connect", 3: "dil_conv_5x5"})
    a[4, PRIMITIVES.index("max_pool_3x3")] = 7.0  # strongest edge of node 1
    g = derive_genotype(a, a, PRIMITIVES, "snas")
    assert len(g.normal) == 14 and g.is_edge_all
    nodes = g.node_inputs("normal")
    assert nodes[0] == [("sep_conv_3x3", 0), ("none", 1)]
    # node 1 sorted by strength: edge 4 (from state 2) first, then sources 0, 1
    assert nodes[1] == [("max_pool_3x3", 2), ("skip_connect", 0), ("dil_conv_5x5", 1)]
    assert ("sep_conv_3x3", 0) in [(op, src) for _, op, src in g.active_edges("normal")]
    assert all(op != "none" for _, op, _ in g.active_edges("normal"))


def test_top2_derivation_excludes_none():
    a = _logits_favouring({0: "none", 1: "sep_conv_3x3"}, strength=9.0)
    a[0, PRIMITIVES.index("skip_connect")] = 2.0
    g = derive_genotype(a, a, PRIMITIVES, "top2")
    assert len(g.normal) == 8
    nodes = g.node_inputs("normal")
    assert nodes[0] == [("sep_conv_3x3", 1), ("skip_connect", 0)]
    assert all(op != "none" for op, _ in g.normal)


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fast_mixed_edge_matches_the_reference_computation(channels_last):
    """The supernet's fast path (edge weight folded into each op's last BN, one shared ReLU per
    edge, 'none' skipped, the CPU depthwise backward as a forward conv and the strided dilated
    conv on the even phase) computes what every op's plain forward times its weight computes:
    outputs, every gradient (weights, BN affine, z) and the BN running statistics."""
    import copy

    fast = _net(layers=3, init_channels=8, drop_path_prob=0.0)  # cells 1, 2 reduce (stride 2)
    reference = copy.deepcopy(fast)
    for m in reference.modules():
        if isinstance(m, MixedOp):
            m.compute_all_ops()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 16, 16)
    z = [torch.softmax(torch.randn(num_edges(), len(PRIMITIVES)), -1) for _ in range(3)]
    target = torch.randn(4, 10)
    grads, outs = [], []
    for net in (fast, reference):
        net.train()
        if channels_last:
            net.to(memory_format=torch.channels_last)
        zs = [zi.clone().requires_grad_(True) for zi in z]
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        logits = net(xin, zs).logits
        (logits * target).sum().backward()
        outs.append(logits.detach())
        grads.append([zi.grad for zi in zs] + [p.grad for p in net.weight_parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for a, b in zip(*grads, strict=True):
        if a is None or b is None:  # a parameter only 'none'-adjacent code would touch
            assert a is None or not a.any()
            continue
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    for a, b in zip(fast.buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5)
