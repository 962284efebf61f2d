"""What a search reports about its architecture each epoch, and the epoch's progress line.

The statistics say how far the distribution has come (entropy, also as a fraction of its
maximum E ln n per cell type; mean top-op probability; whether the child sampled most often
this epoch is the derived one), and what the user would receive (the derived child's cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from snas_ray.config import CostConfig
from snas_ray.space.sampling import arch_entropy

__all__ = ["arch_statistics", "count", "epoch_line"]


@torch.no_grad()
def arch_statistics(
    alphas: Sequence[torch.Tensor],
    sample_counts: torch.Tensor,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, float]:
    """Entropy, top-op probability and sampled-vs-derived agreement of ``alphas`` (normal,
    reduce); ``sample_counts`` ``[2, E, n_ops]`` counts each op as a step's sampled argmax."""
    max_entropy = alphas[0].shape[0] * math.log(alphas[0].shape[1])
    entropy = [float(arch_entropy(a)) for a in alphas]
    counts = reduce_mean(sample_counts.clone())
    sampled = counts.argmax(-1)
    derived = torch.stack([a.argmax(-1) for a in alphas])
    used = counts.sum(-1).sum(-1) > 0  # a cell type the net lacks has no samples
    match = (sampled == derived)[used].float().mean() if used.any() else torch.ones(())
    return {
        "arch/entropy_normal": entropy[0],
        "arch/entropy_reduce": entropy[1],
        "arch/entropy_frac": sum(entropy) / (2 * max_entropy),
        "arch/entropy_frac_normal": entropy[0] / max_entropy,
        "arch/entropy_frac_reduce": entropy[1] / max_entropy,
        "arch/top_prob": float(torch.stack([a.softmax(-1).amax(-1) for a in alphas]).mean()),
        "arch/sampled_match": float(match),
    }


def count(n: float) -> str:
    """``38338 -> '38.3K'``: a count with three significant digits."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _budget_note(cost: CostConfig, m: dict[str, float]) -> str:
    if cost.budget <= 0:
        return ""
    off = 100 * (m[f"child/{cost.budget_metric}"] / cost.budget - 1)
    return f" budget {count(cost.budget)} {cost.budget_metric} ({off:+.1f}%)"


def epoch_line(cost: CostConfig, m: dict[str, float]) -> str:
    """One line per epoch: training, validation, schedule, the child and the distribution."""
    return (
        f"train loss {m['train/loss']:.4f} acc {m['train/acc1']:.3f} | "
        f"val child acc {m['val/acc_child']:.3f} relaxed acc {m['val/acc_relaxed']:.3f} | "
        f"tau {m['arch/tau']:.3f} lr {m['lr/weights']:.4g} | "
        f"child {count(m['child/params'])} params, {count(m['child/flops'])} FLOPs, "
        f"{count(m['child/mac'])} memory access "
        f"(expected {count(m['child/expected_params'])} params){_budget_note(cost, m)} | "
        f"entropy {100 * m['arch/entropy_frac']:.0f}% top-p {m['arch/top_prob']:.2f} "
        f"lambda {m.get('cost/lambda_now', m['cost/lambda']):.3g} | "
        f"{m['time/epoch_s']:.1f}s"
    )
