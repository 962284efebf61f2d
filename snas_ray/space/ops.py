"""Candidate operations of the SNAS search space (spec §1.2) and their shared building blocks.

``OPS`` maps an op name to a constructor ``(C, stride, affine) -> nn.Module``. Cell ops keep the
channel count; only the first layer of an op carries its stride.

Every op that ends in a BatchNorm also has ``scaled(x, x_relu, scale)``, the supernet's fast
path for ``scale * op(x)``: the edge weight ``z_k`` rides in the final BN's affine weight (one
kernel instead of a BN and a multiply, forward and backward), the op reads a ReLU of its input
that the mixed edge computed once for all its ops, and on the CPU a stride-1 depthwise conv
takes its input gradient from a forward conv (see :func:`depthwise_conv`). ``forward`` stays the
plain module path (evaluation networks, the benchmark's reference-style step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "OPS",
    "Zero",
    "FactorizedReduce",
    "ReLUConvBN",
    "SepConv",
    "DilConv",
    "AuxiliaryHead",
    "batch_norm_scaled",
    "depthwise_conv",
    "drop_path",
    "make_op",
]


class Zero(nn.Module):
    """The 'none' op: zeros of the output shape, so no gradient reaches the input."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs, the second shifted by one pixel."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even output width, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)

    def scaled(self, x: torch.Tensor, x_relu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``scale * self(x)`` from the shared ``x_relu`` (module docstring)."""
        out = torch.cat([self.conv_1(x_relu), self.conv_2(x_relu[:, :, 1:, 1:])], dim=1)
        return batch_norm_scaled(self.bn, out, scale)


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN; the cell preprocessing block (not a candidate op)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class _ReLUOpBN(nn.Sequential):
    """ReLU, then convs (and ReLUs), then a BN: the shape of every conv op of the space."""

    def scaled(self, x: torch.Tensor, x_relu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``scale * self(x)`` from the shared ``x_relu`` (module docstring)."""
        h = x_relu
        for m in list(self)[1:-1]:
            h = depthwise_conv(m, h) if isinstance(m, nn.Conv2d) else m(h)
        return batch_norm_scaled(self[-1], h, scale)


class DilConv(_ReLUOpBN):
    """One separable stage: ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in,
                c_in,
                kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=c_in,
                bias=False,
            ),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(_ReLUOpBN):
    """Two separable stages; only the first depthwise conv carries the stride (spec §1.2)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True
    ) -> None:
        super().__init__(
            *DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            *DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class _Conv7x1_1x7(_ReLUOpBN):
    """AmoebaNet's factorised 7x7 conv; the stride is split across both convs."""

    def __init__(self, c: int, stride: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(c, c, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class _PoolBN(nn.Sequential):
    """Unlike DARTS, SNAS's pooling ops own a BN, in search and in the final networks alike."""

    def scaled(self, x: torch.Tensor, x_relu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``scale * self(x)`` (the pool reads ``x``, not the ReLU)."""
        return batch_norm_scaled(self[1], self[0](x), scale)


def _pool(kind: str, c: int, stride: int, affine: bool) -> nn.Module:
    pool: nn.Module
    if kind == "max":
        pool = nn.MaxPool2d(3, stride=stride, padding=1)
    else:
        pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    return _PoolBN(pool, nn.BatchNorm2d(c, affine=affine))


OpFactory = Callable[[int, int, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: _pool("max", c, stride, affine),
    "avg_pool_3x3": lambda c, stride, affine: _pool("avg", c, stride, affine),
    "skip_connect": lambda c, stride, affine: (
        nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    ),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "sep_conv_7x7": lambda c, stride, affine: SepConv(c, c, 7, stride, 3, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
    "conv_7x1_1x7": lambda c, stride, affine: _Conv7x1_1x7(c, stride, affine),
}


def make_op(name: str, c: int, stride: int, affine: bool) -> nn.Module:
    """Build op ``name``; an unknown name is a ``KeyError`` listing the known ones."""
    try:
        factory = OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r} (known: {', '.join(OPS)})") from None
    return factory(c, stride, affine)


def batch_norm_scaled(bn: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale * bn(x)`` as one batch-norm call: ``scale`` (a scalar tensor) becomes the affine
    weight (times the BN's own weight and bias when it has them). Running statistics update
    exactly as in ``bn(x)``; the gradient reaches ``scale`` through the BN's weight gradient."""
    if bn.weight is None:
        # contiguous: the CPU kernel misreads a stride-0 weight in backward
        weight, bias = scale.expand(bn.num_features).contiguous(), None
    else:
        weight, bias = bn.weight * scale, bn.bias * scale
    momentum = bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative average, as nn.BatchNorm2d does
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        bn.running_mean if not bn.training or bn.track_running_stats else None,
        bn.running_var if not bn.training or bn.track_running_stats else None,
        weight,
        bias,
        use_batch,
        momentum or 0.0,
        bn.eps,
    )


class _DepthwiseSame(torch.autograd.Function):
    """Stride-1 'same' depthwise conv whose input gradient is a forward conv with the kernel
    flipped. oneDNN's own backward is 1.5-10x slower than its forward for these shapes on CPU
    (dilated kernels most); the weight gradient stays oneDNN's."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, padding: Any, dilation: Any):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, None, 1, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        groups = x.shape[1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip(-1, -2)
            grad_x = F.conv2d(grad, flipped, None, 1, ctx.padding, ctx.dilation, groups)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                None,
                [1, 1],
                list(ctx.padding),
                list(ctx.dilation),
                False,
                [0, 0],
                groups,
                [False, True, False],
            )[1]
        return grad_x, grad_w, None, None


def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, faster on the CPU for the space's depthwise convs (float32, no autocast).

    A stride-1 'same' depthwise conv goes through :class:`_DepthwiseSame`. A stride-2 conv
    dilated by 2 with 'same' padding reads only the even rows and columns of its input, so it is
    the undilated stride-1 conv of that even phase (3-6x faster than oneDNN's strided dilated
    backward). Elsewhere (GPU, autocast, other shapes) this is just ``conv(x)``.
    """
    k, p, d, stride = conv.kernel_size, conv.padding, conv.dilation, conv.stride
    if not (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.bias is None
        and not isinstance(p, str)
        and all(2 * p[i] == d[i] * (k[i] - 1) for i in range(2))
    ):
        return conv(x)
    if stride == (1, 1):
        return _DepthwiseSame.apply(x, conv.weight, p, d)
    if stride == (2, 2) and d == (2, 2):
        even = x[:, :, ::2, ::2]
        if x.is_contiguous(memory_format=torch.channels_last):
            even = even.contiguous(memory_format=torch.channels_last)
        half = ((k[0] - 1) // 2, (k[1] - 1) // 2)
        return _DepthwiseSame.apply(even, conv.weight, half, (1, 1))
    return conv(x)


def drop_path(x: torch.Tensor, drop_prob: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (out of place).

    ``drop_prob`` may be a 0-dim tensor: a compiled network then reads a value, not a constant,
    so a ramping probability does not recompile it. The mask is drawn in float32."""
    if not torch.is_tensor(drop_prob) and drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.rand(x.size(0), 1, 1, 1, device=x.device) < keep
    return x * (mask / keep).to(x.dtype)


class AuxiliaryHead(nn.Module):
    """CIFAR auxiliary classifier (spec §3), read after the second reduction cell.

    The reference pools an 8x8 map with a 5x5/3 window to 2x2; other input sizes (digits at 16px
    gives 4x4) pool adaptively to the same 2x2 so the head works at any resolution.
    """

    def __init__(self, c: int, num_classes: int, feature_side: int) -> None:
        super().__init__()
        pool: nn.Module
        if feature_side == 8:
            pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        else:
            pool = nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # out of place: the cell output is reused by the next cells
            pool,
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
