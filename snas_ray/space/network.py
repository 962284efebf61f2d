"""Fixed evaluation networks built from a ``Genotype`` (retraining); ``measure.py`` costs them.

Spec §11.1 (CIFAR child network), §11.3 (ImageNet), §15 (one init, both genotype forms).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from snas_ray.genotype import Genotype
from snas_ray.space.ops import AuxiliaryHead, FactorizedReduce, ReLUConvBN, drop_path, make_op
from snas_ray.space.supernet import reduction_layers

__all__ = ["AuxiliaryHeadImageNet", "Cell", "NetworkCIFAR", "NetworkImageNet"]


class Cell(nn.Module):
    """A fixed cell: two preprocessed inputs, one node per ``genotype.node_inputs`` group.

    Reads 8-entry (two per node, any node count) and 14-entry edge_all genotypes alike, because
    the grouping comes from the genotype. 'none' entries build no module, so both forms of a SNAS
    cell have the same ``state_dict``; in forward they still add zeros (see ``_zeros``).
    """

    def __init__(
        self,
        genotype: Genotype,
        *,
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        cell = "reduce" if reduction else "normal"
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.ops = nn.ModuleList()
        # Per node: (index into self.ops, or None for 'none'; source state; stride).
        self._nodes: list[list[tuple[int | None, int, int]]] = []
        for entries in genotype.node_inputs(cell):
            node = []
            for op, src in entries:
                stride = 2 if reduction and src < 2 else 1
                if op == "none":
                    node.append((None, src, stride))
                else:
                    node.append((len(self.ops), src, stride))
                    self.ops.append(make_op(op, c, stride, affine=True))
            self._nodes.append(node)
        self.concat = tuple(getattr(genotype, f"{cell}_concat"))
        self.multiplier = len(self.concat)

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: torch.Tensor | None
    ) -> torch.Tensor:
        """Cell output: the channel concatenation of the ``concat`` states; ``drop_prob`` (a
        0-dim tensor, or None for no drop-path) applies in training."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in self._nodes:
            total = None
            for k, src, stride in node:
                if k is None:
                    out = _zeros(states[src], stride)
                else:
                    op = self.ops[k]
                    out = op(states[src])
                    # The reference exempts identity skips from drop-path (spec §11.1).
                    if self.training and drop_prob is not None and not isinstance(op, nn.Identity):
                        out = drop_path(out, drop_prob)
                total = out if total is None else total + out
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


def _zeros(x: torch.Tensor, stride: int) -> torch.Tensor:
    # The 'none' op (ops.Zero): zeros of the output shape, also for nodes whose entries are all
    # 'none'. Computed from x rather than skipped, as the reference does, so every input the
    # genotype names stays in the autograd graph: a cell input read only by 'none' entries (e.g.
    # SNAS_aggressive's reduce cell) gets zero gradients, not None, so DDP needs no
    # find_unused_parameters and weight decay treats it as the reference does.
    return x[:, :, ::stride, ::stride].mul(0.0)


class AuxiliaryHeadImageNet(nn.Module):
    """ImageNet auxiliary classifier (spec §11.3), read after cell ``2L // 3``.

    The reference pools a 7x7 map (224 px input) with a 5x5/2 window to 2x2; other sides pool
    adaptively to the same 2x2. Pooling holds no state, so the choice is made per call and the
    network need not know its input resolution.
    """

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)  # out of place: the cell output is reused afterwards
        self.pool_7x7 = nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False)
        self.pool_any = nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.pool_7x7 if x.shape[-2:] == (7, 7) else self.pool_any
        return self.classifier(self.features(pool(self.relu(x))).flatten(1))


def _halve(side: int) -> int:
    # Every stride-2 layer here (3x3 pad 1, 1x1 pad 0, pooling pad 1) rounds up.
    return (side + 1) // 2


class _Network(nn.Module):
    """Cells, auxiliary head and classifier shared by the CIFAR and ImageNet networks.

    ``drop_path_prob`` is a float for the trainer to set (every epoch: a linear ramp); the
    forward reads it from a 0-dim buffer and a flag, so that a compiled network recompiles once,
    when drop-path turns on, and not at every step of the ramp. The buffer is not saved.
    """

    @property
    def drop_path_prob(self) -> float:
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, p: float) -> None:
        if "_drop_prob" not in self._buffers:
            self.register_buffer("_drop_prob", torch.zeros(()), persistent=False)
        self._drop_path_prob, self._drop_active = float(p), p > 0
        self._drop_prob.fill_(float(p))

    def _build(
        self,
        genotype: Genotype,
        *,
        c_stem: int,
        c: int,
        layers: int,
        num_classes: int,
        reduction_prev: bool,
        aux_head: Callable[[int], nn.Module] | None,
    ) -> None:
        reductions = reduction_layers(layers)
        self.aux_index = 2 * layers // 3
        self.cells = nn.ModuleList()
        c_pp, c_p, c_curr = c_stem, c_stem, c
        self.auxiliary_head: nn.Module | None = None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = Cell(
                genotype,
                c_pp=c_pp,
                c_p=c_p,
                c=c_curr,
                reduction=reduction,
                reduction_prev=reduction_prev,
            )
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_index and aux_head is not None:
                self.auxiliary_head = aux_head(c_p)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # One scheme for 8-entry and edge_all genotypes (spec §15), the reference model.py's:
        # convs N(0, sqrt(2 / (k_h k_w C_out))) (He, fan_out), BN gamma 1 / beta 0, Linear
        # He-normal on fan_in with bias 0. model_edge_all.py's PyTorch-default init is dropped.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def _forward_cells(
        self, s0: torch.Tensor, s1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self._drop_prob if self._drop_active else None)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux


class NetworkCIFAR(_Network):
    """CIFAR-style child network (spec §3, §11.1): 3x3 stem to 3C, ``layers`` cells, GAP, Linear.

    ``drop_path_prob`` is set by the trainer every epoch (linear ramp; see :class:`_Network`).
    """

    def __init__(
        self,
        genotype: Genotype,
        *,
        init_channels: int,
        layers: int,
        num_classes: int,
        auxiliary: bool = False,
        in_channels: int = 3,
        image_size: int = 32,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.drop_path_prob = drop_path_prob
        c_stem = 3 * init_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)
        )
        # The aux head reads the output of cell 2L // 3, after the reductions up to it.
        aux_side = image_size
        for _ in (r for r in reduction_layers(layers) if r <= 2 * layers // 3):
            aux_side = _halve(aux_side)
        self._build(
            genotype,
            c_stem=c_stem,
            c=init_channels,
            layers=layers,
            num_classes=num_classes,
            reduction_prev=False,
            aux_head=(lambda c: AuxiliaryHead(c, num_classes, aux_side)) if auxiliary else None,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and the auxiliary logits in training mode with an auxiliary head (else None)."""
        s = self.stem(x)
        return self._forward_cells(s, s)


class NetworkImageNet(_Network):
    """ImageNet child network (spec §11.3): two stride-4 and stride-8 stems, cells, GAP, Linear.

    Defaults are the mobile setting (C = 48, 14 layers; spec §15). The final pooling is adaptive
    rather than the reference's AvgPool 7, so resolutions other than 224 also run.
    """

    def __init__(
        self,
        genotype: Genotype,
        *,
        init_channels: int = 48,
        layers: int = 14,
        num_classes: int = 1000,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.drop_path_prob = drop_path_prob
        c = init_channels
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, c // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),  # out of place: stem0's output is also cell 0's s0
            nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        self._build(
            genotype,
            c_stem=c,
            c=c,
            layers=layers,
            num_classes=num_classes,
            # s0 comes from stem0, one resolution above s1, so cell 0 factor-reduces it.
            reduction_prev=True,
            aux_head=(lambda c: AuxiliaryHeadImageNet(c, num_classes)) if auxiliary else None,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and the auxiliary logits in training mode with an auxiliary head (else None)."""
        s0 = self.stem0(x)
        return self._forward_cells(s0, self.stem1(s0))
