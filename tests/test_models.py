"""Tests for the CIFAR model builders in ``bgd_experiments.models``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bgd_experiments.models import (
    MODEL_BUILDERS,
    SubsampledConv1x1,
    build_model,
    conv1x1,
    count_trainable_parameters,
    densenet121,
    mobilenetv2,
    preactresnet18,
    resnet18,
    senet18,
    use_channels_last,
)

MODEL_NAMES = ("resnet18", "preactresnet18", "mobilenetv2", "senet18", "densenet121")

# Spec table (/work/shared/spec/algorithms.md): parameter counts of the reference
# implementations for 10- and 100-class heads, and their number of BatchNorm2d layers.
EXPECTED_PARAMETERS = {
    ("resnet18", 10): 11_173_962,
    ("resnet18", 100): 11_220_132,
    ("preactresnet18", 10): 11_171_146,
    ("preactresnet18", 100): 11_217_316,
    ("mobilenetv2", 10): 2_296_922,
    ("mobilenetv2", 100): 2_412_212,
    ("senet18", 10): 11_260_354,
    ("senet18", 100): 11_306_524,
    ("densenet121", 10): 6_956_298,
    ("densenet121", 100): 7_048_548,
}
EXPECTED_BATCHNORM_LAYERS = {
    "resnet18": 20,
    "preactresnet18": 16,
    "mobilenetv2": 57,
    "senet18": 17,
    "densenet121": 120,
}


def count_batchnorm_layers(model: nn.Module) -> int:
    return sum(isinstance(module, nn.BatchNorm2d) for module in model.modules())


def test_registry_holds_exactly_the_five_builders() -> None:
    assert set(MODEL_BUILDERS) == set(MODEL_NAMES)
    assert MODEL_BUILDERS["resnet18"] is resnet18
    assert MODEL_BUILDERS["preactresnet18"] is preactresnet18
    assert MODEL_BUILDERS["mobilenetv2"] is mobilenetv2
    assert MODEL_BUILDERS["senet18"] is senet18
    assert MODEL_BUILDERS["densenet121"] is densenet121


@pytest.mark.slow
@pytest.mark.parametrize(("name", "num_classes"), sorted(EXPECTED_PARAMETERS))
def test_full_width_parameter_and_batchnorm_counts_match_reference(
    name: str, num_classes: int
) -> None:
    model = build_model(name, num_classes=num_classes)
    assert count_trainable_parameters(model) == EXPECTED_PARAMETERS[(name, num_classes)]
    assert count_batchnorm_layers(model) == EXPECTED_BATCHNORM_LAYERS[name]
    # The head really has num_classes outputs.
    linear_layers = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert linear_layers[-1].out_features == num_classes


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batchnorm_count_does_not_depend_on_width(name: str) -> None:
    model = build_model(name, num_classes=10, width=0.25)
    assert count_batchnorm_layers(model) == EXPECTED_BATCHNORM_LAYERS[name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_and_backward_at_quarter_width(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, width=0.25)
    images = torch.randn(2, 3, 32, 32)

    model.train()
    logits = model(images)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    parameters_without_grad = [
        parameter_name
        for parameter_name, parameter in model.named_parameters()
        if parameter.grad is None
    ]
    assert parameters_without_grad == []

    model.eval()
    with torch.no_grad():
        eval_logits = model(images)
        eval_logits_again = model(images)
    assert eval_logits.shape == (2, 7)
    assert torch.isfinite(eval_logits).all()
    # Eval mode uses running statistics, so each sample's logits are independent of the batch.
    with torch.no_grad():
        single = model(images[:1])
    torch.testing.assert_close(single, eval_logits[:1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eval_logits, eval_logits_again)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_grows_with_width(name: str) -> None:
    counts = [
        count_trainable_parameters(build_model(name, num_classes=10, width=width))
        for width in (0.0625, 0.125, 0.25, 0.5)
    ]
    assert counts == sorted(counts)
    assert len(set(counts)) == len(counts), f"counts not strictly increasing: {counts}"


def test_tiny_width_keeps_at_least_one_channel() -> None:
    model = build_model("mobilenetv2", num_classes=3, width=1e-3)
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert min(conv.out_channels for conv in convolutions) == 1
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_same_seed_gives_identical_initial_weights_and_different_seed_does_not() -> None:
    def initial_state(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model("senet18", num_classes=10, width=0.25).state_dict()

    first, second, other = initial_state(123), initial_state(123), initial_state(124)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


def test_unknown_name_lists_the_known_models() -> None:
    with pytest.raises(ValueError, match=r"unknown model name 'resnet50'.*densenet121"):
        build_model("resnet50", num_classes=10)


def test_name_is_case_insensitive() -> None:
    model = build_model("ResNet18", num_classes=10, width=0.125)
    assert count_trainable_parameters(model) == count_trainable_parameters(
        resnet18(num_classes=10, width=0.125)
    )


@pytest.mark.parametrize("width", [0, -0.5, float("nan"), float("inf"), "wide", True])
def test_bad_width_is_refused_with_a_helpful_message(width: object) -> None:
    with pytest.raises(ValueError, match=r"width must be a finite number > 0.*got"):
        build_model("resnet18", num_classes=10, width=width)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"width must be a finite number > 0"):
        densenet121(num_classes=10, width=width)  # type: ignore[arg-type]


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, "10", True])
def test_bad_num_classes_is_refused_with_a_helpful_message(num_classes: object) -> None:
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1, got"):
        build_model("mobilenetv2", num_classes=num_classes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1"):
        senet18(num_classes=num_classes)  # type: ignore[arg-type]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("stride", [2, 3])
def test_subsampled_conv1x1_is_the_strided_convolution(memory_format, stride) -> None:
    # The reference is the native strided convolution in NCHW only: in channels_last it is
    # the op oneDNN gets wrong (and may corrupt this process's heap), see layout_check.py.
    torch.manual_seed(0)
    reference = nn.Conv2d(4, 8, kernel_size=1, stride=stride, bias=False)
    subsampled = SubsampledConv1x1(4, 8, kernel_size=1, stride=stride, bias=False)
    subsampled.load_state_dict(reference.state_dict())  # same parameters, same keys
    subsampled = subsampled.to(memory_format=memory_format)
    images = torch.randn(6, 4, 16, 16)
    upstream = torch.randn(6, 8, *reference(images).shape[2:])

    outputs, input_grads, weight_grads = [], [], []
    for conv, layout in ((reference, torch.contiguous_format), (subsampled, memory_format)):
        x = images.clone().contiguous(memory_format=layout).requires_grad_()
        out = conv(x)
        input_grad, weight_grad = torch.autograd.grad(
            out, (x, conv.weight), upstream.contiguous(memory_format=layout)
        )
        outputs.append(out)
        input_grads.append(input_grad)
        weight_grads.append(weight_grad)
    torch.testing.assert_close(outputs[1], outputs[0])
    torch.testing.assert_close(input_grads[1], input_grads[0])
    # The weight gradient sums N*H*W products; the two kernels sum in different orders.
    torch.testing.assert_close(weight_grads[1], weight_grads[0], rtol=1e-4, atol=1e-4)


def test_conv1x1_subsamples_only_narrow_strided_convolutions() -> None:
    assert type(conv1x1(8, 16, stride=2)) is SubsampledConv1x1
    assert type(conv1x1(16, 32, stride=2)) is nn.Conv2d  # the oneDNN path is safe here
    assert type(conv1x1(8, 16)) is nn.Conv2d  # stride 1 never hits the bug
    narrow = build_model("resnet18", num_classes=10, width=0.0625)
    shortcuts = [m for m in narrow.modules() if isinstance(m, SubsampledConv1x1)]
    assert [m.in_channels for m in shortcuts] == [4, 8]  # the third shortcut has 16


LAYOUT_CHECK = Path(__file__).with_name("layout_check.py")


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["auto", "channels_last"])
@pytest.mark.parametrize("isa", ["AVX2", "default"])
def test_every_convolution_of_training_is_right_in_a_dirty_process(isa: str, layout: str) -> None:
    """The five models train in the CPU default layout (and in opt-in channels_last) with
    every convolution's output, input gradient and weight gradient equal to a float64
    recomputation, at oneDNN's AVX2 level and the machine's default, in a process whose
    allocator was used before (oneDNN's channels_last bug hides in fresh memory)."""
    env = {**os.environ, "MALLOC_PERTURB_": "165", "MALLOC_CHECK_": "3"}
    if isa == "default":
        env.pop("ONEDNN_MAX_CPU_ISA", None)
    else:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    command = [sys.executable, str(LAYOUT_CHECK), "--layout", layout, "--batches", "3", "25"]
    # A corrupted heap aborts, segfaults or loops forever (seen at AVX2): all three fail here.
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    expected_layout = (
        "torch.channels_last" if layout == "channels_last" else "torch.contiguous_format"
    )
    assert report["layout"] == expected_layout
    errors = report["errors"]
    assert len(errors) == len(MODEL_NAMES) * 2 * 2 * 2  # models x widths x batches x steps
    wrong = {case: error for case, error in errors.items() if not error < 1e-4}
    assert not wrong, wrong


def test_channels_last_is_the_cuda_default_and_opt_in_on_cpu() -> None:
    assert use_channels_last("auto", "cuda") is True
    assert use_channels_last("auto", "cpu") is False
    assert use_channels_last(True, "cpu") is True
    assert use_channels_last(False, "cuda") is False
    with pytest.raises(ValueError, match="auto, true or false"):
        use_channels_last("yes", "cpu")
