"""Per-op resource costs (params, FLOPs, MAC) and the three SNAS resource estimators.

Cost formulas: shared/docs/snas-spec.md §1.3. Penalty and estimators: §7, with the fixes of §15
(real cell counts as normalisers, a true score-function policy gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import torch

from snas_ray.config import CostConfig
from snas_ray.space.sampling import concrete_log_prob

__all__ = [
    "COST_KINDS",
    "Estimator",
    "OpCost",
    "op_cost",
    "edge_cost_tables",
    "CostTerms",
    "resource_penalty",
]

COST_KINDS = ("size", "flops", "mac")
# The reference's mix of the three linear costs for separation 'all' (spec §7; unexplained).
_ALL_WEIGHTS = {"size": 0.43 * 2.0, "flops": 0.43 / 4000.0, "mac": 0.43 / 100.0}


class Estimator(StrEnum):
    """How the penalty's gradient reaches the architecture logits (spec §7)."""

    REPARAMETRIZATION = "reparametrization"
    DISCRETE = "discrete"
    POLICY_GRADIENT = "policy_gradient"


class OpCost(NamedTuple):
    """Raw counts for one op on one edge: weights, multiply-accumulates, memory accesses."""

    size: int
    flops: int
    mac: int


def op_cost(name: str, c: int, stride: int, h: int) -> OpCost:
    """Cost of cell op ``name`` with ``c`` channels in and out on an ``h x h`` input (spec §1.3)."""
    y = h if stride == 1 else h // 2
    s1 = stride == 1
    if name == "none":
        return OpCost(0, 0, 0)
    if name == "skip_connect":
        if s1:
            return OpCost(0, 0, 2 * c * h * h)
        size = 2 * c * (c // 2)
        return OpCost(size, size * y * y, 2 * y * y * (4 * c + c // 2) + size)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return OpCost(0, 9 * c * y * y, (2 if s1 else 5) * c * y * y)
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        size = 2 * c * k * k + 2 * c * c
        return OpCost(size, size * y * y, y * y * ((7 if s1 else 10) * c + c) + size)
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        size = c * k * k + c * c
        return OpCost(size, size * y * y, y * y * ((3 if s1 else 6) * c + c) + size)
    raise KeyError(f"op {name!r} has no cost formula")


def edge_cost_tables(
    primitives: tuple[str, ...], c: int, reduction: bool, h: int, steps: int = 4
) -> torch.Tensor:
    """Cost tables of one cell: ``[3, E, n_ops]`` (size, flops, mac) for input side ``h``.

    In a reduction cell the edges leaving the two cell inputs use stride 2; ``h`` is the side of
    the cell's inputs.
    """
    rows = []
    for node in range(steps):
        for src in range(node + 2):
            stride = 2 if reduction and src < 2 else 1
            # Intermediate nodes of a reduction cell already have the halved side.
            side = h // 2 if reduction and src >= 2 else h
            rows.append([op_cost(op, c, stride, side) for op in primitives])
    table = [[[getattr(cost, kind) for cost in row] for row in rows] for kind in COST_KINDS]
    return torch.tensor(table, dtype=torch.float64).float()


@dataclass(frozen=True)
class CostTerms:
    """What the estimator computed for one step; tensors are scalars."""

    penalty: torch.Tensor  # P (before resource_lambda), differentiable in log_alpha
    expected: dict[str, torch.Tensor]  # expected size/flops/mac per cell under softmax, all cells
    sampled: dict[str, torch.Tensor]  # size/flops/mac of the relaxed sample z, all cells


def _clean(v: torch.Tensor) -> torch.Tensor:
    # The reference replaces |v| < 1 by 1 before taking logs (this also cuts the gradient there).
    return torch.where(v.abs() >= 1.0, v, torch.ones_like(v))


def _combine(per_kind: dict[str, torch.Tensor], separation: str, log: bool) -> torch.Tensor:
    """Per-edge cost from the per-kind per-edge costs: one kind, or the reference's 'all' mix."""
    if separation != "all":
        return per_kind[separation]
    if log:
        return sum(per_kind[k] for k in COST_KINDS) / 3.0
    return sum(_ALL_WEIGHTS[k] * per_kind[k] for k in COST_KINDS)


def _cell_penalty(
    tables: torch.Tensor,
    z: torch.Tensor,
    log_alpha: torch.Tensor,
    tau: float,
    cfg: CostConfig,
) -> torch.Tensor:
    """Sum over the edges of one cell of the per-edge penalty for ``cfg.estimator``."""
    p = torch.softmax(log_alpha, dim=-1)
    estimator = Estimator(cfg.estimator)
    log = cfg.log_penalty
    if estimator is Estimator.DISCRETE:
        per_kind = {k: (tables[i] * p).sum(-1) for i, k in enumerate(COST_KINDS)}
        if log:
            per_kind = {k: torch.log(_clean(v)) for k, v in per_kind.items()}
        return _combine(per_kind, cfg.penalty_separation, log).sum()

    if estimator is Estimator.REPARAMETRIZATION:
        per_kind = {k: (tables[i] * z).sum(-1) for i, k in enumerate(COST_KINDS)}
        if log:
            per_kind = {k: torch.log(_clean(v).abs()) for k, v in per_kind.items()}
        return _combine(per_kind, cfg.penalty_separation, log).sum()

    # Policy gradient: a score-function estimator. The reward and the sample are detached so the
    # only path to log_alpha is d log p(z | log_alpha); the expected cost is the baseline (§15).
    z_fixed = z.detach()
    with torch.no_grad():
        sampled = {k: (tables[i] * z_fixed).sum(-1) for i, k in enumerate(COST_KINDS)}
        baseline = {k: (tables[i] * p).sum(-1) for i, k in enumerate(COST_KINDS)}
        if log:
            sampled = {k: torch.log(_clean(v).abs()) for k, v in sampled.items()}
            baseline = {k: torch.log(_clean(v)) for k, v in baseline.items()}
        reward = _combine(sampled, cfg.penalty_separation, log)
        if cfg.minus_baseline:
            reward = reward - _combine(baseline, cfg.penalty_separation, log)
    logp = concrete_log_prob(log_alpha, z_fixed, tau)
    return (logp * reward).sum()


def resource_penalty(
    tables: list[torch.Tensor],
    z: list[torch.Tensor],
    log_alpha: list[torch.Tensor],
    reduction: list[bool],
    tau: float,
    cfg: CostConfig,
) -> CostTerms:
    """Combined penalty ``P = P_normal / n_normal + ratio * P_reduce / n_reduce`` (spec §7, §15).

    Args:
        tables: per cell, ``[3, E, n_ops]`` cost tables.
        z: per cell, the relaxed sample ``[E, n_ops]`` used in the forward pass.
        log_alpha: per cell, the logits that ``z`` was sampled from.
        reduction: per cell, whether it is a reduction cell.
        tau: the current temperature (policy gradient's density needs it).
        cfg: the cost section.
    """
    sums: dict[bool, list[torch.Tensor]] = {False: [], True: []}
    for t, zc, ac, red in zip(tables, z, log_alpha, reduction, strict=True):
        sums[red].append(_cell_penalty(t, zc, ac, tau, cfg))
    penalty = torch.zeros((), device=z[0].device)
    if sums[False]:
        penalty = penalty + torch.stack(sums[False]).sum() / len(sums[False])
    if sums[True]:
        penalty = penalty + cfg.ratio * torch.stack(sums[True]).sum() / len(sums[True])
    with torch.no_grad():
        expected = {k: torch.zeros((), device=z[0].device) for k in COST_KINDS}
        sampled = {k: torch.zeros((), device=z[0].device) for k in COST_KINDS}
        for t, zc, ac in zip(tables, z, log_alpha, strict=True):
            p = torch.softmax(ac, dim=-1)
            for i, k in enumerate(COST_KINDS):
                expected[k] += (t[i] * p).sum()
                sampled[k] += (t[i] * zc).sum()
    return CostTerms(penalty=penalty, expected=expected, sampled=sampled)
