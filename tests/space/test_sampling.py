"""Gumbel-softmax samples, the Concrete log-density and the temperature schedule (spec §4, §5)."""

from __future__ import annotations

import math

import pytest
import torch

from snas_ray.space.sampling import (
    arch_entropy,
    concrete_log_prob,
    gumbel_softmax_sample,
    one_hot_argmax,
    temperature,
)


def test_samples_lie_on_the_simplex():
    a = torch.randn(14, 8)
    z = gumbel_softmax_sample(a, 0.7)
    assert z.shape == a.shape
    assert torch.all(z >= 0)
    assert torch.allclose(z.sum(-1), torch.ones(14), atol=1e-6)


def test_samples_approach_one_hot_as_tau_falls():
    a = torch.randn(200, 8)
    max_weight = {}
    for tau in (5.0, 1.0, 0.1, 0.01):
        g = torch.Generator().manual_seed(0)
        max_weight[tau] = gumbel_softmax_sample(a, tau, generator=g).max(-1).values.mean().item()
    assert max_weight[5.0] < max_weight[1.0] < max_weight[0.1] < max_weight[0.01]
    assert max_weight[0.01] > 0.99
    assert max_weight[5.0] < 0.5


def test_low_tau_sample_frequencies_follow_softmax():
    # The argmax of a Gumbel-perturbed logit vector is distributed as softmax(a).
    a = torch.tensor([2.0, 0.0, -1.0, 1.0])
    g = torch.Generator().manual_seed(1)
    z = gumbel_softmax_sample(a.expand(20000, 4), 0.05, generator=g)
    freq = torch.bincount(z.argmax(-1), minlength=4).float() / 20000
    assert torch.allclose(freq, torch.softmax(a, 0), atol=0.015)


def test_seeded_generator_repeats_and_gradient_reaches_logits():
    a = torch.randn(3, 8, requires_grad=True)
    z1 = gumbel_softmax_sample(a, 1.0, generator=torch.Generator().manual_seed(5))
    z2 = gumbel_softmax_sample(a, 1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(z1, z2)
    (z1[:, 4]).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_log_density_matches_hand_computation():
    a = torch.tensor([[0.3, -0.2, 1.1]])
    z = torch.tensor([[0.2, 0.1, 0.7]])
    tau = 0.5
    # Concrete density: (n-1)! tau^(n-1) prod(alpha_k x_k^(-tau-1)) / (sum alpha_k x_k^-tau)^n
    alpha = [math.exp(v) for v in a[0].tolist()]
    x = z[0].tolist()
    n = 3
    num = math.factorial(n - 1) * tau ** (n - 1)
    for ak, xk in zip(alpha, x, strict=True):
        num *= ak * xk ** (-tau - 1)
    den = sum(ak * xk ** (-tau) for ak, xk in zip(alpha, x, strict=True)) ** n
    expected = math.log(num / den)
    assert concrete_log_prob(a, z, tau).item() == pytest.approx(expected, rel=1e-5)


def test_log_density_uses_ln_5040_for_eight_ops():
    a = torch.zeros(1, 8)
    z = torch.full((1, 8), 1 / 8)
    # uniform logits, uniform point, tau=1: ln 7! + 0 - 2*8*ln(1/8) - 8*ln(8 * 8)
    expected = math.log(5040) - 2 * 8 * math.log(1 / 8) - 8 * math.log(8 * 8)
    assert concrete_log_prob(a, z, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_log_density_integrates_to_about_one_on_two_ops():
    # With n=2 the Concrete lives on a segment; integrate p(x, 1-x) over x numerically.
    a = torch.tensor([0.4, -0.3])
    tau = 0.8
    xs = torch.linspace(1e-3, 1 - 1e-3, 20001)
    z = torch.stack([xs, 1 - xs], -1)
    dens = torch.exp(concrete_log_prob(a.expand(len(xs), 2), z, tau))
    assert torch.trapezoid(dens, xs).item() == pytest.approx(1.0, abs=0.02)


def test_temperature_schedule_matches_reference_values():
    # spec §5 for 150 epochs, tau0=1, tau_min=0.03
    assert temperature(0, 150, 1.0, 0.03) == pytest.approx(0.993533, abs=1e-6)
    assert temperature(1, 150, 1.0, 0.03) == pytest.approx(0.987067, abs=1e-6)
    assert temperature(74, 150, 1.0, 0.03) == pytest.approx(0.515, abs=1e-6)
    assert temperature(148, 150, 1.0, 0.03) == pytest.approx(0.036467, abs=1e-6)
    assert temperature(149, 150, 1.0, 0.03) == pytest.approx(0.03)
    # the run's own epoch count: a 10-epoch run reaches the floor at its last epoch
    assert temperature(9, 10, 1.0, 0.03) == pytest.approx(0.03)
    assert temperature(5, 10, 2.0, 0.03, annealing=False) == 2.0


def test_one_hot_argmax_and_entropy():
    a = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 0.0]])
    assert one_hot_argmax(a).tolist() == [[0, 1, 0], [1, 0, 0]]
    uniform = arch_entropy(torch.zeros(14, 8)).item()
    assert uniform == pytest.approx(14 * math.log(8), rel=1e-5)
    assert arch_entropy(torch.tensor([[20.0, 0, 0, 0]])).item() < 0.01
