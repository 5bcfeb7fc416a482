"""How the model runs: its numeric precision (fp32, or bf16 autocast) and torch.compile.

The training loop, the evaluation and the MBT search all call ``model(inputs)``; wrapping the
network once (:func:`prepare_model`) gives every one of them the same precision and the same
compiled graphs, with no change to their code:

* ``bf16``: the forward runs under ``torch.autocast(device, bfloat16)`` (convolutions and
  matrix products in bf16, what autocast keeps in fp32 in fp32) and the logits come back as
  float32, so the loss reduction, the accumulated metrics and the search's Armijo arithmetic
  (float64 on the host) stay in full precision.
* ``search_precision``: the MBT search's forwards (its gradient forward and every trial,
  always the same precision: the Armijo check subtracts one from the other) run in fp32 by
  default, also when training runs in bf16; ``"train"`` runs them in the training
  precision. On Table 1's search from 100, bf16 moved the found rate by 14%, beyond the
  float-level noise floor there (5.6%); from 1e-2 by 0.3% (docs/precision.md;
  ``scripts/search_precision.py``). The search enters
  :meth:`RunModel.search_scope`.
* ``compile``: one ``torch.compile`` of the network serves the training steps, the
  evaluation (inference mode) and the search (train-mode BatchNorm with frozen running
  statistics, trials in inference mode). Dynamo keeps one graph per such mode and reuses
  it; weights changed in place (the search's trial points) are graph inputs, not guards,
  so trials never recompile.

The wrapper's ``state_dict`` is the network's own (no ``network.`` or ``_orig_mod.``
prefix): checkpoints written with or without compile or bf16 resume under either.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")
SEARCH_PRECISIONS = ("fp32", "train")  # train: the search runs in the training precision


def cpu_compiler_missing() -> str | None:
    """Why torch.compile cannot build CPU kernels here (inductor needs a C++ compiler), or
    None when it can."""
    if any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        return None
    return "no C++ compiler (g++, c++ or clang++) on PATH: inductor needs one on CPU"


def configure_device(device: torch.device) -> None:
    """Process-wide kernel settings for ``device``: cuDNN autotuning on CUDA (the shapes of
    a run repeat every step, so the one-off search for the fastest kernel pays off)."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


class RunModel(nn.Module):
    """``network`` as training runs it: in ``precision``, compiled or not.

    ``network`` stays a registered submodule (``modules()``, ``parameters()``, ``train()``
    reach it as before); the compiled callable is kept outside the module tree, so the
    parameters are listed once and the state dict has the network's keys.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        precision: str = "fp32",
        compile: bool = False,
        search_precision: str = "fp32",
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if search_precision not in SEARCH_PRECISIONS:
            raise ValueError(
                f"search_precision must be one of {SEARCH_PRECISIONS}, got {search_precision!r}"
            )
        self.network = network
        self.precision = precision
        self.search_precision = precision if search_precision == "train" else search_precision
        self.compiled = bool(compile)
        self.device_type = next(network.parameters()).device.type
        # object.__setattr__: an nn.Module attribute would be registered as a second copy.
        forward = torch.compile(network) if compile else network
        object.__setattr__(self, "_run_forward", forward)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp32":
            return self._run_forward(inputs)
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            logits = self._run_forward(inputs)
        return logits.float()  # the loss and everything after it in fp32

    @contextmanager
    def search_scope(self) -> Iterator[None]:
        """Run the forwards inside in the search's precision (``MBTSGD.search`` enters it)."""
        training_precision = self.precision
        self.precision = self.search_precision
        try:
            yield
        finally:
            self.precision = training_precision

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        return self.network.load_state_dict(state_dict, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"precision={self.precision}, compiled={self.compiled}"


def prepare_model(
    network: nn.Module,
    *,
    precision: str = "fp32",
    compile: bool = False,
    search_precision: str = "fp32",
) -> nn.Module:
    """``network`` itself in plain fp32 eager mode (the path is then exactly the old one),
    else a :class:`RunModel` around it."""
    if precision == "fp32" and not compile:
        return network
    return RunModel(
        network, precision=precision, compile=compile, search_precision=search_precision
    )
