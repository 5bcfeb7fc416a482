"""Every convolution of the five models, as training runs it, against a float64 recomputation.

Run as a script in its own interpreter (``tests/test_models.py`` does, under several
``ONEDNN_MAX_CPU_ISA`` levels), because a oneDNN bug can corrupt the heap of the process that
hits it. The allocator is dirtied first and ``MALLOC_PERTURB_`` should be set: memory that
was never used is zero and hides the bug.

Each model trains a few SGD steps in the given layout. Hooks record, for every convolution
call, its input, weight, output and the gradient flowing into its output; the output, the
input gradient and the weight gradient are then recomputed from those in float64 NCHW
(torch has no oneDNN kernel for float64, so the reference is independent). Comparing layer
by layer keeps the check exact: whole-model gradients of the narrowest models differ between
float32 and float64 by up to a few percent through BatchNorm on tiny batches.
Prints one JSON object: the largest relative error per model, width, batch and step.

    python tests/layout_check.py --layout auto      # the trainer's CPU default
    python tests/layout_check.py --layout channels_last
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch import nn

from bgd_experiments.models import MODEL_BUILDERS, build_model, use_channels_last


class ConvRecorder:
    """Records every convolution call of a model during one forward and backward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[dict] = []
        self.handles = []
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                self.handles.append(module.register_forward_hook(self._forward))
                self.handles.append(module.register_full_backward_hook(self._backward))

    def _forward(self, module: nn.Conv2d, inputs, output) -> None:
        self.calls.append(
            {
                "module": module,
                "input": inputs[0].detach().clone(),
                "weight": module.weight.detach().clone(),
                "output": output.detach().clone(),
            }
        )

    def _backward(self, module: nn.Conv2d, grad_input, grad_output) -> None:
        # Backward visits the calls in reverse; each module is called once per forward.
        call = next(c for c in reversed(self.calls) if c["module"] is module)
        call["input_grad"] = grad_input[0].detach().clone()
        call["output_grad"] = grad_output[0].detach().clone()

    def largest_error(self) -> float:
        """Largest error of any convolution's output, input or weight gradient.

        Each error is relative to the largest sum of absolute products behind an entry (the
        same convolution of absolute values): a weight gradient that cancels to ~0, as
        BatchNorm's scale invariance makes it for a 1-channel input, is then judged by the
        size of its terms, not by its own rounding noise.
        """
        worst = 0.0
        for call in self.calls:
            module = call["module"]
            settings = (module.stride, module.padding, module.dilation, module.groups)
            exact, bound = (
                self._recompute(settings, call["input"], call["weight"], call["output_grad"]),
                self._recompute(
                    settings, call["input"].abs(), call["weight"].abs(), call["output_grad"].abs()
                ),
            )
            references = list(exact)
            bias = module.bias
            if bias is not None:  # the bias only shifts the output
                references[0] = references[0] + bias.detach().double().view(1, -1, 1, 1)
            values = [call["output"], call["input_grad"], module.weight.grad]
            for value, reference, size in zip(values, references, bound, strict=True):
                error = (value.double() - reference).abs().max().item()
                worst = max(worst, error / max(size.max().item(), 1e-30))
        return worst

    @staticmethod
    def _recompute(settings, x, w, upstream) -> tuple[torch.Tensor, ...]:
        """Output, input gradient and weight gradient of one convolution in float64 NCHW."""
        x = x.double().contiguous().requires_grad_()
        w = w.double().contiguous().requires_grad_()
        out = F.conv2d(x, w, None, *settings)
        return (out, *torch.autograd.grad(out, (x, w), upstream.double()))


def dirty_the_allocator() -> None:
    """Fill and free buffers of many sizes, and run convolutions, before the real work."""
    buffers = []
    for size in [2**k for k in range(8, 23)] * 2:
        buffers.append(torch.full((size,), float("nan")))
        if len(buffers) > 4:
            buffers.pop(0)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        conv = nn.Conv2d(8, 16, 3, padding=1).to(memory_format=memory_format)
        conv(torch.randn(5, 8, 16, 16).contiguous(memory_format=memory_format)).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", choices=["auto", "channels_last", "contiguous"])
    parser.add_argument("--models", nargs="+", default=list(MODEL_BUILDERS))
    parser.add_argument("--widths", nargs="+", type=float, default=[0.0625, 0.125])
    parser.add_argument("--batches", nargs="+", type=int, default=[3, 8, 25])
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    setting = {"auto": "auto", "channels_last": True, "contiguous": False}[args.layout]
    layout = torch.channels_last if use_channels_last(setting, "cpu") else torch.contiguous_format
    dirty_the_allocator()
    torch.manual_seed(0)
    errors: dict[str, float] = {}
    for name in args.models:
        for width in args.widths:
            model = build_model(name, num_classes=10, width=width).to(memory_format=layout)
            sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            for batch in args.batches:
                for step in range(args.steps):
                    images = torch.randn(batch, 3, 32, 32).contiguous(memory_format=layout)
                    images.requires_grad_()  # so the stem convolution's input gradient runs too
                    labels = torch.randint(0, 10, (batch,))
                    recorder = ConvRecorder(model)
                    sgd.zero_grad()
                    F.cross_entropy(model(images), labels).backward()
                    for handle in recorder.handles:
                        handle.remove()
                    errors[f"{name}@{width:g} batch {batch} step {step}"] = recorder.largest_error()
                    sgd.step()
    print(json.dumps({"layout": str(layout), "errors": errors}))


if __name__ == "__main__":
    main()
