"""Shared helpers for the CIFAR model builders: argument validation and channel scaling."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn


def validate_builder_args(num_classes: object, width: object) -> tuple[int, float]:
    """Check builder arguments and return them as ``(int, float)``.

    Raises:
        ValueError: if ``num_classes`` is not an integer >= 1 or ``width`` is not a finite
            number > 0. The message names the value given and the allowed range.
    """
    # bool is an Integral subclass; True classes would be a silent bug, so refuse it.
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral):
        raise ValueError(
            f"num_classes must be an integer >= 1, got {num_classes!r} "
            f"(type {type(num_classes).__name__})"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes}")
    if isinstance(width, bool) or not isinstance(width, Real):
        raise ValueError(
            f"width must be a finite number > 0 (1.0 = the paper's model), got {width!r} "
            f"(type {type(width).__name__})"
        )
    if not math.isfinite(float(width)) or width <= 0:
        raise ValueError(
            f"width must be a finite number > 0 (1.0 = the paper's model), got {width}"
        )
    return int(num_classes), float(width)


def scale_channels(channels: int, width: float) -> int:
    """Channel count after the width multiplier: ``max(1, round(channels * width))``."""
    return max(1, round(channels * width))


def global_average_pool(features: torch.Tensor) -> torch.Tensor:
    """Average over the spatial dimensions, giving ``(N, C)``.

    A plain mean is used instead of ``AdaptiveAvgPool2d`` because the latter's CUDA backward is
    non-deterministic; on the 4x4 maps that CIFAR inputs produce it equals ``avg_pool2d(x, 4)``.
    """
    return features.mean(dim=(2, 3))


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


# Below this many input channels a strided 1x1 convolution subsamples its input itself; see
# SubsampledConv1x1.
NARROW_STRIDED_CONV_CHANNELS = 16


class SubsampledConv1x1(nn.Conv2d):
    """A strided 1x1 convolution computed as "keep every stride-th pixel, then 1x1 conv".

    The two are the same function (a 1x1 kernel with padding 0 only reads the pixels its
    stride lands on) with the same parameters and state_dict keys as ``nn.Conv2d``. It exists
    because oneDNN's weight gradient for a strided 1x1 convolution in channels_last layout
    is wrong on CPU for few input channels (torch 2.14.1): wrong numbers, an endless loop or
    a corrupted heap, depending on the ISA level and on what the process ran before
    (``scripts/scan_onednn.py``; docs/cpu-memory-layout.md). The trainer's CPU default is
    NCHW, where the native convolution is right; in opt-in channels_last, :func:`conv1x1`
    uses this class for the shapes the scan found wrong. Only the narrow models (width <
    0.25) have such shortcuts. The explicit subsample makes a width-0.0625 ResNet18 training
    step 2-7% slower (batch 50-200) and its forward under 1% slower.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row_stride, column_stride = self.stride
        return F.conv2d(x[:, :, ::row_stride, ::column_stride], self.weight, self.bias)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (projection shortcuts and bottlenecks).

    Strided ones with fewer than :data:`NARROW_STRIDED_CONV_CHANNELS` input channels are a
    :class:`SubsampledConv1x1` (same function and parameters), which avoids a oneDNN bug.
    """
    conv_class = (
        SubsampledConv1x1
        if stride != 1 and in_channels < NARROW_STRIDED_CONV_CHANNELS
        else nn.Conv2d
    )
    return conv_class(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
