"""Whether a search can run at all, checked before any data or model is built.

Geometry: every reduction cell halves the image side with a factorized reduce that needs an
even side. Memory: a *lower bound* of what training the supernet takes (the weights of its
pointwise convolutions with their gradients and momentum, and the one output per candidate op
per edge that the relaxed mixture keeps for its backward pass), against what the device has
free. A run refused here could never have finished; one allowed here may still be tight.
"""

from __future__ import annotations

from snas_ray.config import ExperimentConfig
from snas_ray.errors import ConfigError
from snas_ray.space.supernet import STEPS, num_edges, reduction_layers

__all__ = ["NATIVE_SIDE", "check_search_fits", "supernet_bytes"]

# The image side each dataset has when data.image_size is 0 (what snas_ray.data builds).
NATIVE_SIDE = {"cifar10": 32, "digits": 16, "synthetic": 32, "imagenet": 224}
_FLOAT = 4  # bytes per float32
# Pointwise (C x C) convolutions per op: a separable conv stacks two, a dilated conv one.
_POINTWISE = {"sep_conv_3x3": 2, "sep_conv_5x5": 2, "sep_conv_7x7": 2}
_POINTWISE |= {"dil_conv_3x3": 1, "dil_conv_5x5": 1}
_GIB = 2**30


def _cells(cfg: ExperimentConfig, side: int) -> list[tuple[int, int]]:
    """(channels, output side) of each search cell."""
    reductions = reduction_layers(cfg.space.layers)
    channels, cells = cfg.space.init_channels, []
    for i in range(cfg.space.layers):
        if i in reductions:
            channels, side = channels * 2, side // 2
        cells.append((channels, side))
    return cells


def supernet_bytes(cfg: ExperimentConfig, side: int) -> tuple[int, int]:
    """(bytes for weights + gradients + momentum, activation bytes per image): lower bounds."""
    ops = [op for op in cfg.space.primitives if op != "none"]
    pointwise = sum(_POINTWISE.get(op, 0) for op in ops)
    edges = num_edges(STEPS)
    params = sum(edges * pointwise * c * c for c, _ in _cells(cfg, side))
    per_image = sum(edges * len(ops) * c * s * s for c, s in _cells(cfg, side))
    return 3 * params * _FLOAT, per_image * _FLOAT


def _in_memory_data_bytes(cfg: ExperimentConfig, side: int) -> int:
    """What digits and synthetic data hold in memory (CIFAR-10 and ImageNet load lazily)."""
    images = {"digits": 1797, "synthetic": cfg.data.synthetic_size * 3 // 2}
    return images.get(cfg.data.name, 0) * 3 * side * side * _FLOAT


def check_search_fits(cfg: ExperimentConfig, available: int | None, *, world_size: int = 1) -> None:
    """Raise :class:`ConfigError` naming the field to change when the search cannot run:
    an image side the reduction cells cannot halve, or more memory than ``available`` bytes
    (None: unknown, not checked)."""
    side = cfg.data.image_size or NATIVE_SIDE[cfg.data.name]
    factor = 2 ** len(reduction_layers(cfg.space.layers))
    if side % factor:
        raise ConfigError(
            "data.image_size",
            f"{side} cannot be halved by the {factor.bit_length() - 1} reduction cells of "
            f"space.layers={cfg.space.layers} (use a multiple of {factor})",
        )
    if available is None:
        return
    data = _in_memory_data_bytes(cfg, side)
    weights, per_image = supernet_bytes(cfg, side)
    batch = max(1, cfg.search.batch_size // world_size)
    if data + weights + batch * per_image <= available:
        return
    have, net = f"{available / _GIB:.1f} GiB available", _describe(cfg, side)
    if data > available / 2:
        grown = cfg.data.image_size > NATIVE_SIDE[cfg.data.name]
        field = "data.image_size" if grown or cfg.data.name == "digits" else "data.synthetic_size"
        why = f"the {cfg.data.name} images, held in memory, take {_gib(data)} at {side}x{side}"
    elif weights > available / 2:
        field, why = "space.init_channels", f"the weights of {net} take at least {_gib(weights)}"
    elif data + weights + per_image > available:
        field = "data.image_size"
        why = f"one image through {net} needs at least {_gib(data + weights + per_image)}"
    else:
        field = "search.batch_size"
        fits = (available - data - weights) // per_image * world_size
        why = f"a batch of {batch} through {net} needs at least "
        why += f"{_gib(data + weights + batch * per_image)} (at most {fits} images fit)"
    raise ConfigError(field, f"{why}, {have} on this device (lower {field})")


def _gib(n: float) -> str:
    return f"{n / _GIB:.1f} GiB"


def _describe(cfg: ExperimentConfig, side: int) -> str:
    return f"{cfg.space.layers} cells of C={cfg.space.init_channels} at {side}x{side}"
