"""Adapting lambda so that the derived child meets a cost budget (dual ascent on ln lambda).

The constrained search is ``min L_err  s.t.  cost(child) <= budget``; its Lagrangian is
``L_err + lambda * P`` with ``lambda >= 0``. Dual ascent raises lambda while the constraint is
violated and lowers it while there is slack. Stepping ``ln lambda`` instead of lambda keeps it
positive and makes the step scale-free: lambdas that matter span orders of magnitude (1e-5 to
1e-1 on the log penalty), and a fixed additive step would be too slow at one end and unstable at
the other. The error is ``ln(cost / budget)``, clipped to [-1, 1], so one bad step cannot move
lambda by more than ``gain / steps_per_epoch`` e-folds.

The measured cost is the derived child's (what the user receives), read from the exact
:class:`~snas_ray.space.child_cost.ChildCostTable`, not the expected cost under the softmax,
which sits far from it while the distribution is still wide. The update is a pure function of
the logits, which every Ray Train rank holds identically, so lambda is identical on all ranks.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["LAMBDA_START", "LAMBDA_RANGE", "LambdaController"]

# Where ln lambda starts when cost.resource_lambda is 0 (a log-space update cannot leave 0): the
# middle of the range where the log penalty matters, a tenth of the reference README's 1.5e-3.
LAMBDA_START = 1e-4
# lambda is kept inside this range so that a budget the search cannot follow (e.g. one the
# unconstrained search is already under) does not drive it to 0 or infinity.
LAMBDA_RANGE = (1e-8, 10.0)


class LambdaController:
    """Integral controller on ``ln lambda``; its state is one tensor on the search's device."""

    def __init__(
        self,
        budget: float,
        *,
        start: float,
        gain: float,
        steps_per_epoch: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if budget <= 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        self.budget = float(budget)
        self.step_gain = float(gain) / max(1, steps_per_epoch)
        start = start if start > 0 else LAMBDA_START
        low, high = LAMBDA_RANGE
        self.log_bounds = (math.log(low), math.log(high))
        self.log_lambda = torch.tensor(
            math.log(min(max(start, low), high)), dtype=torch.float64, device=device
        )

    @property
    def value(self) -> torch.Tensor:
        """lambda as a float32 scalar tensor (no host sync)."""
        return self.log_lambda.exp().float()

    def update(self, cost: torch.Tensor) -> None:
        """One dual-ascent step from the child's current cost (a scalar tensor)."""
        error = torch.log(cost.double().clamp_min(1.0) / self.budget)
        error = torch.nan_to_num(error, nan=0.0).clamp(-1.0, 1.0)  # a NaN cost holds lambda
        self.log_lambda = (self.log_lambda + self.step_gain * error).clamp(*self.log_bounds)

    def state_dict(self) -> dict[str, Any]:
        return {"log_lambda": self.log_lambda.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_lambda = state["log_lambda"].to(self.log_lambda.device, torch.float64)
