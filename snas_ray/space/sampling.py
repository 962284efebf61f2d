"""Gumbel-softmax (Concrete) sampling, its log-density and the temperature schedule.

Pure functions of tensors; formulas from shared/docs/snas-spec.md §4, §5 and §15.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "GUMBEL_EPS",
    "LOGP_EPS",
    "gumbel_softmax_sample",
    "one_hot_argmax",
    "concrete_log_prob",
    "temperature",
    "arch_entropy",
]

# U is clamped away from 0 and 1 so that -log(-log U) stays finite (spec §14.20).
GUMBEL_EPS = 1e-10
# The reference clamps W and the per-op density terms at 1e-4 (spec §4).
LOGP_EPS = 1e-4


def gumbel_softmax_sample(
    log_alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Relaxed one-hot sample ``z = softmax((log_alpha + G) / tau)`` over the last axis.

    Gradients reach ``log_alpha`` pathwise (no straight-through step), as in the reference.

    Args:
        log_alpha: architecture logits, ``[..., n_ops]``.
        tau: temperature (> 0).
        generator: optional RNG, for repeatable samples in tests.
    """
    u = torch.rand(
        log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype
    )
    u = u.clamp(GUMBEL_EPS, 1.0 - GUMBEL_EPS)
    gumbel = -torch.log(-torch.log(u))
    return torch.softmax((log_alpha + gumbel) / tau, dim=-1)


def one_hot_argmax(log_alpha: torch.Tensor) -> torch.Tensor:
    """The derived child's weights: one-hot at each row's argmax (ties go to the first op)."""
    index = log_alpha.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(log_alpha).scatter_(-1, index, 1.0)


def concrete_log_prob(log_alpha: torch.Tensor, z: torch.Tensor, tau: float) -> torch.Tensor:
    """Log-density of ``z`` under Concrete(exp(log_alpha), tau), one value per row.

    ``ln Γ(n) + (n-1) ln τ + Σ a_k - (τ+1) Σ ln x_k - n ln Σ max(ε, x_k^-τ e^a_k)`` with
    ``x = max(z, ε)`` (spec §4). ``ln Γ(n)`` replaces the reference's hard-coded ``ln 5040``,
    which is the same number for 8 ops. The sum is taken in log space for stability.
    """
    n = log_alpha.shape[-1]
    x = z.clamp_min(LOGP_EPS)
    log_x = torch.log(x)
    log_terms = (log_alpha - tau * log_x).clamp_min(math.log(LOGP_EPS))
    return (
        math.lgamma(n)
        + (n - 1) * math.log(tau)
        + log_alpha.sum(-1)
        - (tau + 1) * log_x.sum(-1)
        - n * torch.logsumexp(log_terms, dim=-1)
    )


def temperature(
    epoch: int, epochs: int, temp: float, temp_min: float, annealing: bool = True
) -> float:
    """Temperature used during 0-based ``epoch``: linear from ``temp`` to ``temp_min``.

    ``τ_e = max(τ_min, τ_min + (τ0 - τ_min)(1 - (e+1)/epochs))``. The reference divides by a
    hard-coded 150; using the run's own epoch count gives the same values for 150 epochs (§15).
    """
    if not annealing:
        return temp
    value = temp_min + (temp - temp_min) * (1.0 - (epoch + 1) / epochs)
    return max(temp_min, value)


def arch_entropy(log_alpha: torch.Tensor) -> torch.Tensor:
    """Entropy ``-Σ p ln p`` of softmax(log_alpha) summed over all entries (p clamped at 1e-4)."""
    p = torch.softmax(log_alpha, dim=-1).clamp_min(LOGP_EPS)
    return -(p * torch.log(p)).sum()
