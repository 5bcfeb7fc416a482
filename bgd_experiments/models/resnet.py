"""ResNet18 and PreActResNet18, CIFAR variants (3x3 stem, no max-pool).

References:
    K. He, X. Zhang, S. Ren, J. Sun. "Deep Residual Learning for Image Recognition", CVPR 2016.
    K. He, X. Zhang, S. Ren, J. Sun. "Identity Mappings in Deep Residual Networks", ECCV 2016
    (the pre-activation block).

The CIFAR layout follows the one used by the paper's authors (kuangliu/pytorch-cifar): a 3x3
stride-1 stem convolution to 64 channels, four stages of two basic blocks with 64/128/256/512
channels (stride 1, 2, 2, 2), global average pooling and a linear head. Projection shortcuts are
1x1 convolutions (followed by BatchNorm in ResNet18, bare in PreActResNet18). At width 1.0 this
gives 11,173,962 (ResNet18) and 11,171,146 (PreActResNet18) trainable parameters for 10 classes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (
    conv1x1,
    conv3x3,
    global_average_pool,
    scale_channels,
    validate_builder_args,
)

# Channels and first-block strides of the four stages; two blocks per stage for depth 18.
STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = (2, 2, 2, 2)


def resnet18_stages(
    block_type: Callable[[int, int, int], nn.Module], in_channels: int, width: float
) -> tuple[list[nn.Sequential], int]:
    """The four stages of two blocks each (ResNet18's layout), and their output channels.

    ``block_type(in_channels, out_channels, stride)`` builds one block; the first block of a
    stage takes the stage's stride.
    """
    stages: list[nn.Sequential] = []
    for base_channels, stride, num_blocks in zip(
        STAGE_CHANNELS, STAGE_STRIDES, BLOCKS_PER_STAGE, strict=True
    ):
        out_channels = scale_channels(base_channels, width)
        blocks = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            blocks.append(block_type(in_channels, out_channels, block_stride))
            in_channels = out_channels
        stages.append(nn.Sequential(*blocks))
    return stages, in_channels


class BasicBlock(nn.Module):
    """Post-activation residual block: conv-BN-ReLU-conv-BN, add shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al., ECCV 2016): BN-ReLU-conv, BN-ReLU-conv, add.

    The projection shortcut (when shape changes) is a bare 1x1 convolution applied to the
    pre-activated input, as in the identity-mappings paper.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = conv1x1(in_channels, out_channels, stride)

    def branch_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual branch's output and the shortcut's, before they are added."""
        preactivated = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(preactivated)
        out = self.conv1(preactivated)
        return self.conv2(F.relu(self.bn2(out))), residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, residual = self.branch_and_shortcut(x)
        return branch + residual


class CifarResNet(nn.Module):
    """Four-stage CIFAR ResNet with a 3x3 stem; ``block_type`` picks post- or pre-activation."""

    def __init__(
        self,
        block_type: type[BasicBlock] | type[PreActBlock],
        num_classes: int,
        width: float,
    ) -> None:
        super().__init__()
        self.preactivation = block_type is PreActBlock
        stem_channels = scale_channels(STAGE_CHANNELS[0], width)
        self.conv1 = conv3x3(3, stem_channels)
        # Pre-activation nets start each block with BN, so the stem has no BN of its own.
        self.bn1: nn.Module = nn.Identity() if self.preactivation else nn.BatchNorm2d(stem_channels)

        stages, in_channels = resnet18_stages(block_type, stem_channels, width)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if not self.preactivation:
            out = F.relu(self.bn1(out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # Like the reference PreActResNet18, no final BN-ReLU before pooling.
        return self.linear(global_average_pool(out))


def resnet18(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """CIFAR ResNet18 (He et al. 2016); 11,173,962 parameters for 10 classes at width 1.0."""
    num_classes, width = validate_builder_args(num_classes, width)
    return CifarResNet(BasicBlock, num_classes, width)


def preactresnet18(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """CIFAR pre-activation ResNet18 (He et al. 2016b); 11,171,146 parameters for 10 classes."""
    num_classes, width = validate_builder_args(num_classes, width)
    return CifarResNet(PreActBlock, num_classes, width)
