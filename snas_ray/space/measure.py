"""The measured cost of an evaluation network: parameters, multiply-adds and memory access.

Forward hooks count one eval-mode pass of one image; :data:`COST_SETTINGS` are the evaluation
networks ``snas-ray cost`` measures a genotype in (spec §11.2, §11.3, §15).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from snas_ray.genotype import Genotype
from snas_ray.space.network import AuxiliaryHeadImageNet, NetworkCIFAR, NetworkImageNet
from snas_ray.space.ops import AuxiliaryHead

__all__ = [
    "COST_SETTINGS",
    "CostSetting",
    "NetworkCost",
    "count_parameters",
    "evaluation_cost",
    "genotype_cost",
    "measure_cost",
]

_AUX_HEADS = (AuxiliaryHead, AuxiliaryHeadImageNet)
# Layers whose reads and writes count in MAC (Conv2d and Linear also in FLOPs); ReLU and BN
# count in neither.
_COUNTED = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def count_parameters(module: nn.Module, exclude_aux: bool = True) -> int:
    """Number of parameter elements, by default leaving out auxiliary heads (as papers report)."""
    skip: set[int] = set()
    if exclude_aux:
        for m in module.modules():
            if isinstance(m, _AUX_HEADS):
                skip.update(id(p) for p in m.parameters())
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)


@dataclass(frozen=True)
class NetworkCost:
    """Measured cost of a network for one image.

    Attributes:
        params: Parameter elements without the auxiliary head (the figure papers report).
        params_aux: Parameter elements including the auxiliary head.
        flops: Multiply-adds over every Conv2d and Linear (ReLU, BN and pooling are ignored).
        mac: Memory access in elements (ShuffleNet-V2): input + output + weights (biases
            left out, as in spec §1.3) of every Conv2d, Linear and pooling layer.
    """

    params: int
    params_aux: int
    flops: int
    mac: int


def measure_cost(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> NetworkCost:
    """Measure ``model`` with forward hooks on one eval-mode pass of a zero input.

    Eval mode means the auxiliary head does not run, so it counts in ``params_aux`` only. Counts
    are per image whatever the batch in ``input_shape``. Hooks are removed and every submodule's
    training flag restored afterwards.
    """
    totals = {"flops": 0, "mac": 0}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        n = output.shape[0]
        x_el, y_el = inputs[0].numel() // n, output.numel() // n
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            w_el = module.weight.numel()
            totals["flops"] += y_el * (module.in_channels // module.groups) * k_h * k_w
        elif isinstance(module, nn.Linear):
            w_el = module.weight.numel()
            totals["flops"] += module.in_features * module.out_features
        else:
            w_el = 0  # pooling reads and writes, but holds no weights
        totals["mac"] += x_el + y_el + w_el

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED)]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        ref = next(model.parameters(), torch.zeros(()))  # input on the model's device and dtype
        with torch.no_grad():
            model(torch.zeros(input_shape, device=ref.device, dtype=ref.dtype))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return NetworkCost(
        params=count_parameters(model, exclude_aux=True),
        params_aux=count_parameters(model, exclude_aux=False),
        flops=totals["flops"],
        mac=totals["mac"],
    )


def genotype_cost(
    genotype: Genotype,
    *,
    init_channels: int,
    layers: int,
    num_classes: int = 10,
    image_size: int = 32,
    in_channels: int = 3,
    auxiliary: bool = False,
    imagenet: bool = False,
) -> NetworkCost:
    """Build the child network of ``genotype`` on CPU and measure it with :func:`measure_cost`.

    Raises:
        ValueError: for ``imagenet=True`` with ``in_channels != 3`` (the ImageNet stem is RGB).
    """
    shape = {"init_channels": init_channels, "layers": layers, "num_classes": num_classes}
    model: nn.Module
    if imagenet:
        if in_channels != 3:
            raise ValueError(f"imagenet networks take 3 input channels, got {in_channels}")
        model = NetworkImageNet(genotype, auxiliary=auxiliary, **shape)
    else:
        model = NetworkCIFAR(
            genotype, auxiliary=auxiliary, in_channels=in_channels, image_size=image_size, **shape
        )
    return measure_cost(model, (1, in_channels, image_size, image_size))


@dataclass(frozen=True)
class CostSetting:
    """The evaluation network ``snas-ray cost`` builds for one dataset.

    Attributes:
        dataset: Dataset name.
        init_channels: Channels of the first cell (C).
        layers: Number of cells (L).
        image_size: Input side in pixels.
        num_classes: Classifier outputs.
        imagenet: Build ``NetworkImageNet`` (two stride-2 stems) instead of ``NetworkCIFAR``.
    """

    dataset: str
    init_channels: int
    layers: int
    image_size: int
    num_classes: int
    imagenet: bool = False


# cifar10: the paper's retraining network (spec §11.2); imagenet: the mobile setting (§11.3,
# §15); digits: the width, depth and 8 px input of experiments/digits-search.yaml (3 channels,
# as data.py repeats the grey level), so costs compare with a digits search's result.json.
COST_SETTINGS = {
    "cifar10": CostSetting("cifar10", 36, 20, 32, 10),
    "imagenet": CostSetting("imagenet", 48, 14, 224, 1000, imagenet=True),
    "digits": CostSetting("digits", 8, 5, 8, 10),
}


def evaluation_cost(
    genotype: Genotype, setting: CostSetting, *, auxiliary: bool = False
) -> NetworkCost:
    """Builds the evaluation network of ``genotype`` at ``setting`` and measures one image."""
    return genotype_cost(
        genotype,
        init_channels=setting.init_channels,
        layers=setting.layers,
        num_classes=setting.num_classes,
        image_size=setting.image_size,
        auxiliary=auxiliary,
        imagenet=setting.imagenet,
    )
