"""SENet18, CIFAR variant: pre-activation ResNet18 blocks with squeeze-and-excitation.

Reference:
    J. Hu, L. Shen, G. Sun. "Squeeze-and-Excitation Networks", CVPR 2018.

Layout as in the implementation the paper's authors used (kuangliu/pytorch-cifar): a 3x3 stem
convolution followed by BatchNorm-ReLU, four stages of two pre-activation basic blocks
(64/128/256/512 channels, strides 1, 2, 2, 2), global average pooling and a linear head. Each
block recalibrates its residual branch with an SE gate: global average pool, 1x1 conv (with
bias) to ``channels // 16``, ReLU, 1x1 conv (with bias) back, sigmoid. Projection shortcuts are
bare 1x1 convolutions. At width 1.0: 11,260,354 trainable parameters for 10 classes, 17
BatchNorm2d layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (
    conv3x3,
    global_average_pool,
    scale_channels,
    validate_builder_args,
)
from .resnet import STAGE_CHANNELS, PreActBlock, resnet18_stages

# Squeeze ratio of the SE gate (Hu et al. use r = 16).
SE_REDUCTION = 16


class SqueezeExcitation(nn.Module):
    """Channel gate: sigmoid(W2 relu(W1 mean_hw(x))) scales each channel of ``x``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // SE_REDUCTION)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))
        return x * gate


class SEPreActBlock(PreActBlock):
    """Pre-activation basic block whose residual branch passes through an SE gate."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.se = SqueezeExcitation(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, residual = self.branch_and_shortcut(x)
        return self.se(branch) + residual


class SENet18(nn.Module):
    """CIFAR SENet18 built from :class:`SEPreActBlock`."""

    def __init__(self, num_classes: int, width: float) -> None:
        super().__init__()
        stem_channels = scale_channels(STAGE_CHANNELS[0], width)
        self.conv1 = conv3x3(3, stem_channels)
        self.bn1 = nn.BatchNorm2d(stem_channels)

        stages, in_channels = resnet18_stages(SEPreActBlock, stem_channels, width)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(global_average_pool(out))


def senet18(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """CIFAR SENet18 (Hu et al. 2018); 11,260,354 parameters for 10 classes at width 1.0."""
    num_classes, width = validate_builder_args(num_classes, width)
    return SENet18(num_classes, width)
