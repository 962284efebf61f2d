"""The SNAS supernet: mixed edges, search cells, macro structure, genotype derivation.

Spec §2-§3 and §8. The architecture logits ``log_alpha_normal`` / ``log_alpha_reduce`` are
``nn.Parameter``s of the module, so every checkpoint carries them (spec §15). Cost tables are
computed analytically at build time and stored as buffers (never inside ``forward``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from snas_ray.config import SpaceConfig
from snas_ray.genotype import Genotype, genotype_from_nodes
from snas_ray.space.cost import edge_cost_tables
from snas_ray.space.ops import AuxiliaryHead, FactorizedReduce, ReLUConvBN, drop_path, make_op

__all__ = [
    "STEPS",
    "MULTIPLIER",
    "num_edges",
    "edge_index",
    "reduction_layers",
    "MixedOp",
    "SearchCell",
    "Supernet",
    "SupernetOutput",
    "derive_genotype",
    "unwrap",
]

STEPS = 4  # intermediate nodes per cell
MULTIPLIER = 4  # the cell output concatenates the last MULTIPLIER states


def num_edges(steps: int = STEPS) -> int:
    """Edges in a cell: node i has i + 2 inputs (14 for 4 nodes)."""
    return sum(i + 2 for i in range(steps))


def edge_index(node: int, src: int) -> int:
    """Index of the edge from state ``src`` into intermediate node ``node`` (spec §2)."""
    return node * (node + 3) // 2 + src


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Cells that reduce resolution and double width: ``L // 3`` and ``2L // 3``."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


class MixedOp(nn.Module):
    """One edge: ``sum_k z_k * op_k(x)`` over every candidate op.

    'none' contributes ``z * 0`` and no gradient to anything, so it is skipped. The other ops run
    their ``scaled`` fast path (space/ops.py): ``z_k`` folded into the op's last BN and one ReLU
    of ``x`` shared by every op that starts with one.
    """

    def __init__(self, primitives: tuple[str, ...], c: int, stride: int, affine: bool) -> None:
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, c, stride, affine) for name in primitives)
        self._active = [i for i, name in enumerate(primitives) if name != "none"]
        self._reference = False

    def compute_all_ops(self) -> None:
        """Run as the reference does (for benchmarks that compare with it): every op, 'none'
        included, through its plain ``forward``, each output multiplied by its weight."""
        self._active = list(range(len(self.ops)))
        self._reference = True

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self._reference:
            out = z[0] * self.ops[0](x)
            for k in range(1, len(self.ops)):
                out = out + z[k] * self.ops[k](x)
            return out
        x_relu = torch.relu(x)
        out = None
        for k in self._active:
            op = self.ops[k]
            if hasattr(op, "scaled"):
                term = op.scaled(x, x_relu, z[k])
            else:
                term = z[k] * op(x)
            out = term if out is None else out + term
        return out


class SearchCell(nn.Module):
    """A cell of the supernet: two preprocessed inputs, 4 nodes, 14 mixed edges."""

    def __init__(
        self,
        *,
        primitives: tuple[str, ...],
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        affine: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c, affine)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine)
        self.edges = nn.ModuleList()
        for node in range(STEPS):
            for src in range(node + 2):
                stride = 2 if reduction and src < 2 else 1
                self.edges.append(MixedOp(primitives, c, stride, affine))

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        z: torch.Tensor,
        drop_prob: float,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The cell's output; ``keep`` ``[E, N]`` scales each edge's output per sample (drawn
        drop-path masks); without it, drop-path draws its masks here."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(STEPS):
            total = None
            for src, h in enumerate(states):
                e = edge_index(node, src)
                out = self.edges[e](h, z[e])
                if keep is not None:
                    out = out * keep[e].to(out.dtype).view(-1, 1, 1, 1)
                elif self.training and drop_prob > 0:
                    out = drop_path(out, drop_prob)
                total = out if total is None else total + out
            states.append(total)
        return torch.cat(states[-MULTIPLIER:], dim=1)


@dataclass
class SupernetOutput:
    """Logits of the main classifier and, in training with an auxiliary head, of that head."""

    logits: torch.Tensor
    logits_aux: torch.Tensor | None = None


class Supernet(nn.Module):
    """Stem, ``layers`` search cells (reductions at L/3 and 2L/3), classifier (spec §3)."""

    def __init__(
        self, space: SpaceConfig, *, num_classes: int, image_size: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.space = space
        self.num_classes, self.image_size, self.in_channels = num_classes, image_size, in_channels
        self.primitives = tuple(space.primitives)
        self.drop_path_prob = space.drop_path_prob
        c = space.init_channels
        c_curr = space.stem_multiplier * c
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr)
        )
        c_pp, c_p, c_curr = c_curr, c_curr, c
        side = image_size
        reductions = reduction_layers(space.layers)
        self.cells = nn.ModuleList()
        self.reduction: list[bool] = []
        tables = []
        reduction_prev = False
        self.aux_index = 2 * space.layers // 3
        aux_channels, aux_side = 0, 0
        for i in range(space.layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = SearchCell(
                primitives=self.primitives,
                c_pp=c_pp,
                c_p=c_p,
                c=c_curr,
                reduction=reduction,
                reduction_prev=reduction_prev,
                affine=space.bn_affine,
            )
            tables.append(edge_cost_tables(self.primitives, c_curr, reduction, side))
            if reduction:
                side //= 2
            self.cells.append(cell)
            self.reduction.append(reduction)
            reduction_prev = reduction
            c_pp, c_p = c_p, MULTIPLIER * c_curr
            if i == self.aux_index:
                aux_channels, aux_side = c_p, side
        # Constant cost tables [layers, 3, E, n_ops]; a buffer so they follow .to(device).
        self.register_buffer("cost_tables", torch.stack(tables), persistent=False)
        self.auxiliary = (
            AuxiliaryHead(aux_channels, num_classes, aux_side) if space.auxiliary else None
        )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        shape = (num_edges(), len(self.primitives))
        self.log_alpha_normal = nn.Parameter(
            torch.empty(shape).normal_(space.alpha_init_mean, space.alpha_init_std)
        )
        self.log_alpha_reduce = nn.Parameter(
            torch.empty(shape).normal_(space.alpha_init_mean, space.alpha_init_std)
        )

    @property
    def has_unused_parameters(self) -> bool:
        """True when one cell type never occurs (e.g. 2 layers: both cells reduce), so its
        logit matrix never gets a gradient; DDP then needs its search for unused parameters."""
        return len(set(self.reduction)) < 2

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits, normal first."""
        return [self.log_alpha_normal, self.log_alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture logits."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def cell_log_alpha(self) -> list[torch.Tensor]:
        """Per cell, the logits it samples from (shared by all cells of a type)."""
        return [self.log_alpha_reduce if r else self.log_alpha_normal for r in self.reduction]

    def drop_path_keep(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """Drop-path masks for one training step, ``[layers, E, batch]``: 0 or ``1 / (1 - p)``
        per sample and edge, drawn in one call (None when drop-path is off). Drawn outside the
        forward pass so that a compiled forward sees no random op."""
        p = self.drop_path_prob
        if p <= 0:
            return None
        keep = torch.empty(len(self.cells), num_edges(), batch, device=device)
        return keep.bernoulli_(1.0 - p).div_(1.0 - p)

    def forward(
        self, x: torch.Tensor, z: list[torch.Tensor], keep: torch.Tensor | None = None
    ) -> SupernetOutput:
        """Run the supernet with per-cell edge weights ``z[i]`` of shape ``[E, n_ops]`` and, in
        training, the drop-path masks of :meth:`drop_path_keep` (drawn here when not given)."""
        s0 = s1 = self.stem(x)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            cell_keep = keep[i] if keep is not None and self.training else None
            s0, s1 = s1, cell(s0, s1, z[i], self.drop_path_prob, cell_keep)
            if i == self.aux_index and self.auxiliary is not None and self.training:
                logits_aux = self.auxiliary(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return SupernetOutput(logits, logits_aux)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def _node_edges(log_alpha: torch.Tensor, primitives: tuple[str, ...], method: str) -> list:
    p = torch.softmax(log_alpha.detach().float().cpu(), dim=-1)
    none = primitives.index("none") if "none" in primitives else None
    nodes = []
    for node in range(STEPS):
        entries = []
        for src in range(node + 2):
            row = p[edge_index(node, src)]
            if method == "top2" and none is not None:
                row = row.clone()
                row[none] = -1.0  # DARTS-style: 'none' never wins an edge
            k = int(row.argmax())
            entries.append((float(row[k]), src, primitives[k]))
        # Stable sort on strength: ties keep source order, as the reference's sort does.
        entries.sort(key=lambda t: -t[0])
        if method == "top2":
            entries = entries[:2]
        nodes.append([(op, src) for _, src, op in entries])
    return nodes


def derive_genotype(
    log_alpha_normal: torch.Tensor,
    log_alpha_reduce: torch.Tensor,
    primitives: tuple[str, ...],
    method: str = "snas",
) -> Genotype:
    """Derive the child architecture from the logits (spec §8).

    ``snas`` keeps every edge labelled with its argmax op ('none' included): the 14-entry
    edge_all genotype whose non-'none' edges form the child. ``top2`` is DARTS's rule: per node,
    the two strongest edges by best non-'none' probability, labelled with that op.
    """
    if method not in ("snas", "top2"):
        raise ValueError(f"unknown derivation {method!r} (allowed: snas, top2)")
    return genotype_from_nodes(
        _node_edges(log_alpha_normal, primitives, method),
        _node_edges(log_alpha_reduce, primitives, method),
    )
