"""CIFAR variants (3x3 stem) of the five networks used in the paper's experiments.

ResNet18 and PreActResNet18 (He et al. 2016), MobileNetV2 (Sandler et al. 2018), SENet18
(Hu et al. 2018) and DenseNet121 with growth rate 32 (Huang et al. 2017), laid out as in
kuangliu/pytorch-cifar, the code the paper's authors used. At ``width=1.0`` each model has
exactly the reference's trainable parameter count; smaller widths shrink every channel count
``c`` to ``max(1, round(c * width))`` for cheap CPU runs.

Usage::

    torch.manual_seed(seed)  # builders use PyTorch's default initialisation
    model = build_model("resnet18", num_classes=10)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._common import SubsampledConv1x1, conv1x1, validate_builder_args
from .densenet import densenet121
from .mobilenetv2 import mobilenetv2
from .resnet import preactresnet18, resnet18
from .senet import senet18

MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "preactresnet18": preactresnet18,
    "mobilenetv2": mobilenetv2,
    "senet18": senet18,
    "densenet121": densenet121,
}


def build_model(name: str, num_classes: int, width: float = 1.0) -> nn.Module:
    """Build one of :data:`MODEL_BUILDERS` by name (case-insensitive).

    Args:
        name: one of ``resnet18``, ``preactresnet18``, ``mobilenetv2``, ``senet18``,
            ``densenet121``.
        num_classes: size of the linear head (10 for CIFAR-10, 100 for CIFAR-100); >= 1.
        width: channel multiplier > 0; 1.0 is the paper's model.

    Returns:
        The model, initialised by PyTorch's defaults from the current global RNG state.

    Raises:
        ValueError: for an unknown name, ``num_classes < 1`` or ``width <= 0``.
    """
    if not isinstance(name, str) or name.lower() not in MODEL_BUILDERS:
        raise ValueError(f"unknown model name {name!r}; expected one of {sorted(MODEL_BUILDERS)}")
    num_classes, width = validate_builder_args(num_classes, width)
    return MODEL_BUILDERS[name.lower()](num_classes=num_classes, width=width)


def use_channels_last(setting: bool | str, device: torch.device | str) -> bool:
    """Whether to train in channels_last (NHWC): ``setting`` is ``"auto"``, True or False.

    ``auto`` is channels_last on CUDA and NCHW on every other device: torch 2.14.1's oneDNN
    computes wrong weight gradients (and corrupts the heap) for some channels_last
    convolutions on CPU, depending on the ISA level (docs/cpu-memory-layout.md;
    ``scripts/scan_onednn.py``). NCHW is the layout that scan found right everywhere.
    """
    if setting == "auto":
        return torch.device(device).type == "cuda"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"channels_last must be auto, true or false, got {setting!r}")


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of scalar parameters with ``requires_grad`` (BatchNorm buffers excluded)."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


__all__ = [
    "MODEL_BUILDERS",
    "SubsampledConv1x1",
    "build_model",
    "conv1x1",
    "count_trainable_parameters",
    "densenet121",
    "mobilenetv2",
    "preactresnet18",
    "resnet18",
    "senet18",
    "use_channels_last",
]
