"""Wall-clock timing that waits for the device, for the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on CPU, where work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, function: Callable[[], object]) -> tuple[float, object]:
    """Seconds ``function()`` takes on ``device``, queued work included, and its value."""
    synchronize(device)
    began = time.perf_counter()
    value = function()
    synchronize(device)
    return time.perf_counter() - began, value
