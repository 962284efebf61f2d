"""The derived child's cost as a lookup table: exact, and cheap enough for every search step.

An evaluation network's cost is additive over its edges: the stem, the cell preprocessing and
the classifier are the same for every genotype, and each edge adds the cost of its one op at
that cell's width and resolution (the summing of node inputs counts in no metric). So the cost
of any child is ``base + sum over (cell type, edge) of table[type, edge, op]``, with the base
and every op measured once by :func:`~snas_ray.space.measure.measure_cost`, the very function
``result.json`` uses. A test checks the table against building and measuring whole networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from snas_ray.genotype import Genotype, genotype_from_nodes
from snas_ray.space.measure import NetworkCost, measure_cost
from snas_ray.space.network import NetworkCIFAR
from snas_ray.space.ops import make_op
from snas_ray.space.supernet import STEPS, edge_index, num_edges

__all__ = ["METRICS", "ChildCostTable", "child_cost_table"]

METRICS = ("params", "flops", "mac")
_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class ChildCostTable:
    """Cost of a child network of a given size, split into a fixed base and per-edge op costs.

    Attributes:
        primitives: The op names, in the order of the table's last axis.
        base: ``[3]`` params, flops, mac of the network whose every edge is 'none'.
        table: ``[2, E, n_ops, 3]`` what op k on edge e of every normal (0) or reduction (1)
            cell adds, summed over the cells of that type.
    """

    primitives: tuple[str, ...]
    base: torch.Tensor
    table: torch.Tensor

    def to(self, device: torch.device | str) -> ChildCostTable:
        return ChildCostTable(self.primitives, self.base.to(device), self.table.to(device))

    def of_genotype(self, genotype: Genotype) -> NetworkCost:
        """The cost ``measure_cost`` gives the genotype's network at this size (params w/o aux)."""
        total = self.base.clone()
        for t, cell in enumerate(_TYPES):
            for node, entries in enumerate(genotype.node_inputs(cell)):
                for op, src in entries:
                    total += self.table[t, edge_index(node, src), self.primitives.index(op)]
        params, flops, mac = (int(round(float(v))) for v in total)
        return NetworkCost(params=params, params_aux=params, flops=flops, mac=mac)

    def of_argmax(self, log_alpha_normal: torch.Tensor, log_alpha_reduce: torch.Tensor):
        """``[3]`` cost of the 'snas' derivation (argmax op on every edge), on the logits' device,
        without leaving it (no host sync: the search calls this every step)."""
        total = self.base
        for t, a in enumerate((log_alpha_normal, log_alpha_reduce)):
            index = a.detach().argmax(-1)  # [E]
            rows = self.table[t, torch.arange(a.shape[0], device=a.device), index]  # [E, 3]
            total = total + rows.sum(0)
        return total

    def of_expectation(self, log_alpha_normal: torch.Tensor, log_alpha_reduce: torch.Tensor):
        """``[3]`` expected cost of a child drawn op by op from softmax(logits): the quantity
        the child's cost converges to as the distribution sharpens (no host sync)."""
        total = self.base
        for t, a in enumerate((log_alpha_normal, log_alpha_reduce)):
            probs = torch.softmax(a.detach().double(), -1)  # [E, n_ops]
            total = total + (probs[..., None] * self.table[t]).sum((0, 1))
        return total

    def of_top2(self, log_alpha_normal: torch.Tensor, log_alpha_reduce: torch.Tensor):
        """``[3]`` cost of the 'top2' derivation (``derive_genotype``'s rule: per node the two
        edges with the strongest non-'none' op, ties to the lower source), on the device."""
        none = self.primitives.index("none") if "none" in self.primitives else None
        total = self.base
        for t, a in enumerate((log_alpha_normal, log_alpha_reduce)):
            p = torch.softmax(a.detach().float(), dim=-1)
            if none is not None:
                p = p.clone()
                p[:, none] = -1.0
            strength, op = p.max(-1)  # [E]
            for node in range(STEPS):
                first = edge_index(node, 0)
                order = torch.sort(-strength[first : first + node + 2], stable=True).indices
                edges = first + order[:2]
                total = total + self.table[t, edges, op[edges]].sum(0)
        return total

    def reachable(self, metric: str, derivation: str = "snas") -> tuple[float, float]:
        """The cheapest and the dearest child in ``metric`` that ``derivation`` can produce:
        'snas' gives every edge any op; 'top2' two edges per node, each with a non-'none' op."""
        i = METRICS.index(metric)
        per_edge = self.table[..., i]  # [2, E, n_ops]
        if derivation == "snas":
            low = per_edge.min(-1).values.sum()
            high = per_edge.max(-1).values.sum()
            return float(self.base[i] + low), float(self.base[i] + high)
        keep = [k for k, op in enumerate(self.primitives) if op != "none"]
        real = per_edge[..., keep]
        low = high = float(self.base[i])
        for t in range(2):
            for node in range(STEPS):
                edges = [edge_index(node, src) for src in range(node + 2)]
                cheap = sorted(float(real[t, e].min()) for e in edges)
                dear = sorted((float(real[t, e].max()) for e in edges), reverse=True)
                low, high = low + sum(cheap[:2]), high + sum(dear[:2])
        return low, high


def _empty_genotype(primitives: tuple[str, ...]) -> Genotype:
    none = "none" if "none" in primitives else primitives[0]
    nodes = [[(none, src) for src in range(node + 2)] for node in range(STEPS)]
    return genotype_from_nodes(nodes, nodes)


def child_cost_table(
    primitives: tuple[str, ...],
    *,
    init_channels: int,
    layers: int,
    num_classes: int,
    image_size: int,
    in_channels: int = 3,
) -> ChildCostTable:
    """Measure the base network and each (op, width, stride, side) once; a few hundred ms."""
    shell = NetworkCIFAR(
        _empty_genotype(primitives),
        init_channels=init_channels,
        layers=layers,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
    )
    sides: list[int] = []
    handles = [
        cell.register_forward_pre_hook(lambda _m, args: sides.append(args[1].shape[-1]))
        for cell in shell.cells
    ]
    try:
        base = measure_cost(shell, (1, in_channels, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    cache: dict[tuple[str, int, int, int], torch.Tensor] = {}

    def op_row(op: str, c: int, stride: int, side: int) -> torch.Tensor:
        key = (op, c, stride, side)
        if key not in cache:
            if op == "none":
                cache[key] = torch.zeros(3, dtype=torch.float64)
            else:
                single = _Single(make_op(op, c, stride, affine=True))
                cost = measure_cost(single, (1, c, side, side))
                cache[key] = torch.tensor([cost.params, cost.flops, cost.mac], dtype=torch.float64)
        return cache[key]

    table = torch.zeros(2, num_edges(), len(primitives), 3, dtype=torch.float64)
    for cell, side in zip(shell.cells, sides, strict=True):
        c = _out_channels(cell.preprocess1)
        t = int(cell.reduction)
        for node in range(STEPS):
            for src in range(node + 2):
                stride = 2 if cell.reduction and src < 2 else 1
                edge_side = (side + 1) // 2 if cell.reduction and src >= 2 else side
                for k, op in enumerate(primitives):
                    table[t, edge_index(node, src), k] += op_row(op, c, stride, edge_side)
    base_row = torch.tensor([base.params, base.flops, base.mac], dtype=torch.float64)
    return ChildCostTable(tuple(primitives), base_row, table)


class _Single(nn.Module):
    """Wraps one op so ``measure_cost`` sees a module with parameters (pooling has none)."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op
        self.anchor = nn.Parameter(torch.zeros(0))  # gives measure_cost a device and dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels
