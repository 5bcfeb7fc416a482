"""MobileNetV2, CIFAR variant (stride-1 stem and first stages, for 32x32 inputs).

Reference:
    M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. "MobileNetV2: Inverted Residuals
    and Linear Bottlenecks", CVPR 2018.

Layout as in the implementation the paper's authors used (kuangliu/pytorch-cifar): 3x3 stem
convolution to 32 channels with stride 1; seven stages of inverted-residual blocks given as
(expansion, out channels, blocks, first stride) = (1,16,1,1), (6,24,2,1), (6,32,3,2),
(6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1); a 1x1 convolution to 1280 channels; global
average pooling and a linear head. Every block has a 1x1 expansion convolution (also when the
expansion is 1). Stride-1 blocks add a residual: the identity when channels match, otherwise a
1x1 convolution + BatchNorm projection (a deviation from the paper that the reference keeps).
At width 1.0: 2,296,922 trainable parameters for 10 classes and 57 BatchNorm2d layers.

``width`` scales the stem, every stage's output channels and the final 1280 channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import conv1x1, conv3x3, global_average_pool, scale_channels, validate_builder_args

STEM_CHANNELS = 32
FINAL_CHANNELS = 1280
# (expansion factor, output channels, number of blocks, stride of the first block)
STAGE_CONFIG = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 1 here (2 in ImageNet MobileNetV2) keeps resolution for CIFAR
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise 3x3 - linear project (1x1), each followed by BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = expansion * in_channels
        self.stride = stride
        self.conv1 = conv1x1(in_channels, hidden)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(
            hidden, hidden, kernel_size=3, stride=stride, padding=1, groups=hidden, bias=False
        )
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = conv1x1(hidden, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride == 1 and in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv1x1(in_channels, out_channels), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))  # linear bottleneck: no activation after projection
        if self.stride == 1:
            out = out + self.shortcut(x)
        return out


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2 with a channel ``width`` multiplier."""

    def __init__(self, num_classes: int, width: float) -> None:
        super().__init__()
        stem_channels = scale_channels(STEM_CHANNELS, width)
        self.conv1 = conv3x3(3, stem_channels)
        self.bn1 = nn.BatchNorm2d(stem_channels)

        blocks: list[nn.Module] = []
        in_channels = stem_channels
        for expansion, base_channels, num_blocks, stride in STAGE_CONFIG:
            out_channels = scale_channels(base_channels, width)
            for block_stride in [stride] + [1] * (num_blocks - 1):
                blocks.append(InvertedResidual(in_channels, out_channels, expansion, block_stride))
                in_channels = out_channels
        self.layers = nn.Sequential(*blocks)

        final_channels = scale_channels(FINAL_CHANNELS, width)
        self.conv2 = conv1x1(in_channels, final_channels)
        self.bn2 = nn.BatchNorm2d(final_channels)
        self.linear = nn.Linear(final_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(global_average_pool(out))


def mobilenetv2(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """CIFAR MobileNetV2 (Sandler et al. 2018); 2,296,922 parameters for 10 classes at 1.0."""
    num_classes, width = validate_builder_args(num_classes, width)
    return MobileNetV2(num_classes, width)
