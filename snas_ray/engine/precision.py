"""How a loop's step runs on its device: autocast precision, the fp16 gradient scaler,
``torch.compile`` and ``cudnn.benchmark``. Knows no SNAS; search and retraining share it.

``fp32`` runs as written. ``bf16`` and ``fp16`` run the model's forward (and so its backward)
under ``torch.autocast``; parameters, optimizer states and anything the job computes outside
:meth:`StepPrecision.autocast` stay float32. ``fp16`` adds a :class:`torch.amp.GradScaler`,
whose state travels in the checkpoint. Its skip-a-bad-step decision reads one flag to the host
per optimizer (two in a search step): the only host syncs in an fp16 step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from snas_ray.errors import ConfigError

__all__ = ["DTYPES", "StepPrecision", "compile_module", "set_cudnn_benchmark"]

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class StepPrecision:
    """Autocast and (fp16) loss scaling for one loop; ``field`` names the config key in errors."""

    def __init__(self, precision: str, device: torch.device, *, field: str) -> None:
        if precision not in DTYPES:
            raise ConfigError(field, f"unknown value {precision!r} (allowed: {', '.join(DTYPES)})")
        self.name = precision
        self.dtype = DTYPES[precision]
        self.device_type = torch.device(device).type
        self.scaler: torch.amp.GradScaler | None = None
        if precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device_type)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The model's forward runs inside this; a no-op for fp32."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled first under fp16."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, *optimizers: torch.optim.Optimizer) -> None:
        """Bring every optimizer's gradients back to their true scale (before any clipping)."""
        if self.scaler is not None:
            for optimizer in optimizers:
                self.scaler.unscale_(optimizer)

    def step(self, *optimizers: torch.optim.Optimizer) -> None:
        """Step every optimizer (fp16: each skips its step on an inf/NaN gradient of its own, as
        ``GradScaler`` does), then update the scale once."""
        if self.scaler is None:
            for optimizer in optimizers:
                optimizer.step()
            return
        for optimizer in optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state (empty without one)."""
        return {} if self.scaler is None else {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a missing scaler state is a ``KeyError``."""
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])


def compile_module(module: nn.Module, enabled: bool, backend: str = "inductor") -> nn.Module:
    """``torch.compile(module, backend=backend)`` when ``enabled`` (compiled lazily, at the first
    call), else the module itself. Random ops inside an inductor graph fall back to eager's
    generator (``fallback_random``), so a compiled step draws the same numbers as an eager one.
    ``aot_eager`` captures the same graphs without generating code: a quick check of the
    compiled path (on 2 CPU cores inductor needs minutes for the tiny test supernet)."""
    if not enabled:
        return module
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    return torch.compile(module, backend=backend)


def set_cudnn_benchmark(enabled: bool) -> None:
    """Turn cuDNN's algorithm autotuning on or off for this process (a no-op without CUDA)."""
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = enabled
