"""DenseNet121 (growth rate 32), CIFAR variant.

Reference:
    G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger. "Densely Connected Convolutional
    Networks", CVPR 2017 (DenseNet-BC: bottleneck layers and compression 0.5).

Layout as in the implementation the paper's authors used (kuangliu/pytorch-cifar): a 3x3 stem
convolution to ``2 * growth`` channels (no BatchNorm, no pooling); four dense blocks of
(6, 12, 24, 16) bottleneck layers (BN-ReLU-1x1 conv to ``4 * growth``, BN-ReLU-3x3 conv to
``growth``, concatenated to the input); transitions (BN-ReLU-1x1 conv halving the channels,
2x2 average pool) between blocks; final BN-ReLU, global average pooling and a linear head.
At width 1.0: 6,956,298 trainable parameters for 10 classes and 120 BatchNorm2d layers.

``width`` scales the growth rate, the bottleneck width and the stem channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._common import conv1x1, conv3x3, global_average_pool, scale_channels, validate_builder_args

GROWTH_RATE = 32
LAYERS_PER_BLOCK = (6, 12, 24, 16)
BOTTLENECK_FACTOR = 4  # bottleneck 1x1 conv outputs 4 * growth channels (DenseNet-BC)
COMPRESSION = 0.5  # transitions keep this fraction of channels


class DenseBottleneck(nn.Module):
    """One dense layer: produces ``growth`` new channels and concatenates them to the input."""

    def __init__(self, in_channels: int, bottleneck_channels: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv1x1(in_channels, bottleneck_channels)
        self.bn2 = nn.BatchNorm2d(bottleneck_channels)
        self.conv2 = conv3x3(bottleneck_channels, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        # New features first, then the input (channel order only matters for reproducibility).
        return torch.cat([out, x], dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv to compress channels, then 2x2 average pooling to halve resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = conv1x1(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), kernel_size=2)


class DenseNet(nn.Module):
    """CIFAR DenseNet-BC with four dense blocks."""

    def __init__(
        self,
        layers_per_block: tuple[int, ...],
        num_classes: int,
        width: float,
    ) -> None:
        super().__init__()
        growth = scale_channels(GROWTH_RATE, width)
        bottleneck_channels = scale_channels(BOTTLENECK_FACTOR * GROWTH_RATE, width)
        channels = scale_channels(2 * GROWTH_RATE, width)
        self.conv1 = conv3x3(3, channels)

        dense_blocks: list[nn.Sequential] = []
        transitions: list[nn.Module] = []
        for block_index, num_layers in enumerate(layers_per_block):
            layers = []
            for _ in range(num_layers):
                layers.append(DenseBottleneck(channels, bottleneck_channels, growth))
                channels += growth
            dense_blocks.append(nn.Sequential(*layers))
            if block_index < len(layers_per_block) - 1:
                compressed = max(1, math.floor(channels * COMPRESSION))
                transitions.append(Transition(channels, compressed))
                channels = compressed
        self.dense1, self.dense2, self.dense3, self.dense4 = dense_blocks
        self.trans1, self.trans2, self.trans3 = transitions
        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = self.dense4(out)
        out = F.relu(self.bn(out))
        return self.linear(global_average_pool(out))


def densenet121(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """CIFAR DenseNet121, growth 32 (Huang et al. 2017); 6,956,298 parameters for 10 classes."""
    num_classes, width = validate_builder_args(num_classes, width)
    return DenseNet(LAYERS_PER_BLOCK, num_classes, width)
