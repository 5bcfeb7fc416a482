"""Pieces shared by the fast and the reference MBT search: result type, argument checks,
model-mode handling, the guards' arithmetic and the status rules.

The decision logic (the two-way backtracking on each mini-batch) is written twice on purpose,
once in each implementation, so that the test comparing them checks two independent codings.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("bgd_experiments.optim")

# The authors' code widens [lr_min, lr_max] = [1e-6, 100] by an absolute 1e-8 on both ends
# so that rates reached by repeated halving/doubling are not rejected by rounding. We keep
# their numbers at the defaults and scale the lower slack with lr_min for other bounds.
_LR_MAX_SLACK = 1e-8
_LR_MIN_RELATIVE_SLACK = 1e-2

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@dataclass
class SearchResult:
    """What one MBT learning-rate search found and what it cost.

    ``lr == mean(sigmas) * ratio`` whenever ``sigmas`` is not empty; when a non-finite
    search produced no usable sigma, ``lr`` is the optimizer's rate before the search
    (left unchanged) and ``sigmas`` is empty.
    """

    lr: float  # the rate set on the optimizer (mean sigma * ratio)
    mean_sigma: float  # nan when no sigma was usable
    sigmas: list[float]  # accepted sigma per search batch (those used for lr)
    start_lr: float
    alpha: float
    trials: int  # trial (no-grad) loss evaluations
    forward_passes: int  # all forwards of the search (gradient + trial)
    backward_passes: int
    wall_time: float  # seconds
    status: str  # "ok" | "saturated" | "nonfinite"
    message: str
    ratio: float = 1.0  # sqrt(batch_size / num_samples), or 1 without rescaling
    batch_size: int = 0  # size of the first search batch (used for the ratio)
    num_batches: int = 0  # search batches actually processed
    guard_hits: int = 0  # batches whose search ended on the lr_min/lr_max/decrease guard
    trials_skipped: int = 0  # trials the fast path proved unnecessary (see mbt_search)
    restored: bool = True  # weights/buffers restored to their pre-search values
    dropped_sigmas: list[float] = field(default_factory=list)  # sigmas excluded (nonfinite)


@dataclass(frozen=True)
class Guards:
    """The authors' stopping guards for one search: sigma in [low, high] and a minimum
    predicted decrease sigma * ||g||^2 > min_decrease."""

    low: float
    high: float
    min_decrease: float

    @classmethod
    def from_bounds(cls, lr_min: float, lr_max: float, min_decrease: float) -> Guards:
        low = lr_min - min(1e-8, _LR_MIN_RELATIVE_SLACK * lr_min)
        return cls(low=low, high=lr_max + _LR_MAX_SLACK, min_decrease=min_decrease)

    def allows(self, sigma: float, grad_norm_sq: float) -> bool:
        return sigma * grad_norm_sq > self.min_decrease and self.low <= sigma <= self.high


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_search_arguments(
    *,
    start_lr: float,
    alpha: float,
    beta: float,
    num_batches: int,
    num_samples: int | None,
    lr_min: float,
    lr_max: float,
    min_decrease: float,
) -> None:
    """Raise ValueError with a clear message for any invalid search setting (the one check
    of them: the searches and MBTSGD's constructor call it; ``num_samples=None`` skips it)."""
    if not _check_real("lr_min", lr_min) > 0:
        raise ValueError(f"lr_min must be a finite number > 0, got {lr_min!r}")
    if not _check_real("lr_max", lr_max) > lr_min:
        raise ValueError(f"lr_max must be finite and > lr_min={lr_min}, got {lr_max!r}")
    # A start below lr_min is allowed: the first batch then accepts it as it is (a guard
    # hit), as the authors' code does when the rate it carries over is that small.
    if not 0 < _check_real("start_lr", start_lr) <= lr_max:
        raise ValueError(f"start_lr must lie in (0, lr_max] = (0, {lr_max}], got {start_lr!r}")
    if not 0 < _check_real("alpha", alpha) < 1:
        raise ValueError(f"alpha must satisfy 0 < alpha < 1, got {alpha!r}")
    if not 0 < _check_real("beta", beta) < 1:
        raise ValueError(f"beta must satisfy 0 < beta < 1, got {beta!r}")
    _check_count("num_batches", num_batches, 1)
    if num_samples is not None:
        _check_count("num_samples", num_samples, 1)
    if not _check_real("min_decrease", min_decrease) >= 0:
        raise ValueError(f"min_decrease must be a finite number >= 0, got {min_decrease!r}")


class Reducer(Protocol):
    """How a search running on several processes combines its per-process values
    (``bgd_experiments.distributed.BatchReducer``); None in a single process."""

    def total(self, count: int) -> int:
        """The global batch size, given this process's share of it."""
        ...

    def weighted_mean_(self, tensors: Sequence[torch.Tensor], weight: float) -> None:
        """Each tensor, in place, becomes the sum over processes of ``weight * tensor``."""
        ...


@dataclass(frozen=True)
class SearchSettings:
    """The settings of one MBT search (both searches take them as keywords; the contract is
    ``mbt_search``'s docstring). Checked when built."""

    start_lr: float
    num_samples: int
    alpha: float = 1e-4
    beta: float = 0.5
    num_batches: int = 20
    rescale: bool = True
    keep_search_steps: bool = False
    lr_min: float = 1e-6
    lr_max: float = 100.0
    min_decrease: float = 1e-7
    progress: ProgressFn | None = None  # told after every batch
    # Several processes, each holding a shard of every batch: losses and the gradient are
    # averaged over them before any decision (None: one process).
    reducer: Reducer | None = None

    # The settings an optimizer keeps between searches (the rest are given per search).
    TUNABLE: ClassVar[tuple[str, ...]] = (
        "alpha",
        "beta",
        "num_batches",
        "rescale",
        "keep_search_steps",
        "lr_min",
        "lr_max",
        "min_decrease",
    )

    def __post_init__(self) -> None:
        checked = inspect.signature(check_search_arguments).parameters
        check_search_arguments(**{name: getattr(self, name) for name in checked})


def trainable_parameters(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module | None = None
) -> list[torch.Tensor]:
    """The parameters the search moves: those of the optimizer that require gradients (and,
    given ``model``, at least one of them must be the model's, or no loss would move)."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    if not params:
        raise ValueError("the optimizer holds no parameter that requires a gradient")
    if model is not None:
        own = {id(p) for p in model.parameters()}
        if not any(id(p) in own for p in params):
            raise ValueError(
                "the optimizer holds none of the model's parameters: build it from "
                "model.parameters() (the search moves the optimizer's parameters)"
            )
    return params


def rescale_ratio(batch_size: int, num_samples: int, rescale: bool) -> float:
    """sqrt(batch_size / N), computed as the authors' code does (1 / sqrt(N / batch_size))."""
    if not rescale:
        return 1.0
    return float(1.0 / np.sqrt(num_samples / batch_size))


def mean_of(sigmas: Sequence[float]) -> float:
    """Mean as numpy computes it, the authors' running mean (bit-for-bit)."""
    return float(np.mean(sigmas))


# compute_loss(model, batch) -> scalar loss: how a search reads batches of any shape.
ComputeLoss = Callable[[nn.Module, Any], torch.Tensor]


def split_batch(batch: object, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a batch, moved to the model's device when needed."""
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        keys = f" with keys {list(batch)}" if isinstance(batch, dict) else ""
        raise TypeError(
            f"the search reads a batch as (inputs, targets), got {type(batch).__name__}{keys}"
            "; pass compute_loss=lambda model, batch: <scalar loss> to search other batches"
        )
    inputs, targets = batch
    if inputs.device != device:
        inputs = inputs.to(device, non_blocking=True)
    if targets.device != device:
        targets = targets.to(device, non_blocking=True)
    return inputs, targets


def batch_size_of(batch: object) -> int:
    """Leading dimension of the first tensor found in a batch (tensor, sequence or dict)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    items = batch.values() if isinstance(batch, dict) else batch
    if isinstance(items, tuple | list) or isinstance(batch, dict):
        for item in items:
            try:
                return batch_size_of(item)
            except TypeError:
                continue
    raise TypeError(f"cannot find a tensor (to count the batch size) in a {type(batch).__name__}")


def batch_to(batch: Any, device: torch.device) -> Any:
    """The batch with every tensor in it (nested in dicts, lists, tuples) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: batch_to(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(batch_to(value, device) for value in batch)
    return batch


def check_sgd(optimizer: torch.optim.Optimizer) -> None:
    """The search sets a rate for plain gradient steps; only SGD's lr means that rate."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise TypeError(
            f"the MBT search sets the lr of an SGD optimizer (torch.optim.SGD or MBTSGD), got "
            f"{type(optimizer).__name__}: its lr would not be a gradient step's rate"
        )


@contextmanager
def search_mode(model: nn.Module) -> Iterator[None]:
    """Train mode (BatchNorm uses batch statistics, as in the authors' code, for L and for
    every trial alike), dropout off; every module's own flag is restored afterwards."""
    previous = [(module, module.training) for module in model.modules()]
    model.train()
    for module in model.modules():
        if isinstance(module, DROPOUT_TYPES):
            module.eval()
    try:
        yield
    finally:
        for module, was_training in previous:
            module.training = was_training


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers that update running statistics in train mode."""
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]


@contextmanager
def running_stats_frozen(layers: Sequence[nn.Module], frozen: bool = True) -> Iterator[None]:
    """BatchNorm in train mode without touching its buffers.

    With ``track_running_stats`` off, a training-mode BatchNorm normalises with the batch
    statistics exactly as before but neither updates running_mean/var nor increments
    num_batches_tracked (unlike the momentum-0 trick, which still writes NaN into the
    running statistics when a trial point overflows).
    """
    if not frozen:
        yield
        return
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True


def snapshot_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) pairs for every buffer of the model (small: BN statistics)."""
    return [(buffer, buffer.detach().clone()) for buffer in model.buffers()]


def restore_buffers(snapshot: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for buffer, saved in snapshot:
            buffer.copy_(saved)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def classify(
    *,
    sigmas: Sequence[float],
    start_lr: float,
    guard_hits: int,
    num_batches: int,
    nonfinite_message: str | None,
) -> tuple[str, str]:
    """Status and message of a finished search."""
    if nonfinite_message is not None:
        return "nonfinite", nonfinite_message
    if guard_hits == num_batches:
        return "saturated", (
            f"every one of the {num_batches} search batches stopped on a guard "
            "(lr_min, lr_max or the minimum decrease); the rate is a bound, not a search result"
        )
    if all(sigma == start_lr for sigma in sigmas):
        return "saturated", (
            f"every search batch accepted the start rate {start_lr:g} unchanged; "
            "the search never moved from its start"
        )
    return "ok", f"searched {num_batches} batches"


def finish_result(result: SearchResult) -> SearchResult:
    """Log the outcome: one INFO line, or a WARNING for nonfinite/saturated searches."""
    summary = (
        f"MBT search: lr={result.lr:.6g} (mean sigma {result.mean_sigma:.6g} x ratio "
        f"{result.ratio:.4g}), start {result.start_lr:g}, alpha {result.alpha:g}, "
        f"{result.num_batches} batches, {result.trials} trials, {result.wall_time:.2f}s"
    )
    if result.status == "ok":
        logger.info(summary)
    else:
        logger.warning("%s -- status %s: %s", summary, result.status.upper(), result.message)
    return result


@dataclass(frozen=True)
class SearchProgress:
    """Where a running search is: after batch ``batch`` of ``num_batches``, ``trials`` so far."""

    batch: int
    num_batches: int
    trials: int


ProgressFn = Callable[[SearchProgress], None]


@dataclass
class SearchTally:
    """What a search counts as it goes. Both searches (fast and reference) fill one and end
    with :meth:`result`, so their results are built, worded and logged alike."""

    start_lr: float
    alpha: float
    num_batches: int  # batches asked for
    began: float = field(default_factory=time.perf_counter)
    sigmas: list[float] = field(default_factory=list)  # sigma_i accepted on batch B_i
    dropped: list[float] = field(default_factory=list)  # sigmas excluded (non-finite)
    trials: int = 0
    trials_skipped: int = 0
    gradient_passes: int = 0
    guard_hits: int = 0
    processed: int = 0  # batches seen
    batch_size: int = 0  # of the first batch
    ratio: float = 1.0  # sqrt(batch_size / num_samples), or 1 without rescaling
    failure: str | None = None  # why the search went non-finite
    progress: ProgressFn | None = None  # told after every batch

    def take_batch(
        self,
        index: int,
        batch: object,
        device: torch.device,
        settings: SearchSettings,
        global_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Count batch ``index`` and split it; the first batch fixes the batch size (the
        global one, ``global_size``, when each process holds a shard) and the ratio
        sqrt(batch_size / num_samples)."""
        inputs, targets = split_batch(batch, device)
        self.count_batch(index, int(inputs.shape[0]), settings, global_size)
        return inputs, targets

    def count_batch(
        self, index: int, size: int, settings: SearchSettings, global_size: int | None = None
    ) -> None:
        """Count batch ``index`` of ``size`` samples (see :meth:`take_batch`)."""
        self.processed = index + 1
        if index == 0:
            self.batch_size = int(global_size if global_size is not None else size)
            if self.batch_size > settings.num_samples:
                raise ValueError(
                    f"num_samples ({settings.num_samples}) is smaller than one search batch "
                    f"({self.batch_size}): pass the size of the training set, len(train_set)"
                )
            self.ratio = rescale_ratio(self.batch_size, settings.num_samples, settings.rescale)

    def batch_done(self) -> None:
        if self.progress is not None:
            self.progress(SearchProgress(self.processed, self.num_batches, self.trials))

    def drop_last_sigma(self) -> float:
        """Exclude the last accepted sigma (it led to non-finite weights)."""
        self.dropped.append(self.sigmas.pop())
        return self.dropped[-1]

    def result(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        previous_lr: float,
        keep_search_steps: bool,
        restored: bool,
    ) -> SearchResult:
        """Set lr = mean(sigmas) * ratio on the optimizer (unchanged without a usable sigma),
        classify the outcome, log it, and return the result."""
        if self.sigmas:
            mean_sigma = mean_of(self.sigmas)
            lr = mean_sigma * self.ratio
            set_learning_rate(optimizer, lr)
        else:
            mean_sigma, lr = math.nan, previous_lr
        failure = self.failure
        if failure is not None:
            failure += f"; lr {'from the remaining sigmas' if self.sigmas else 'left unchanged'}"
            if keep_search_steps:
                failure += "; keep mode rolled back to the search's start"
        status, message = classify(
            sigmas=self.sigmas,
            start_lr=self.start_lr,
            guard_hits=self.guard_hits,
            num_batches=len(self.sigmas),
            nonfinite_message=failure,
        )
        if status == "ok" and self.processed < self.num_batches:
            message += f" (the batch source ran out: {self.processed} of {self.num_batches})"
        device = trainable_parameters(optimizer)[0].device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return finish_result(
            SearchResult(
                lr=lr,
                mean_sigma=mean_sigma,
                sigmas=self.sigmas,
                start_lr=self.start_lr,
                alpha=self.alpha,
                trials=self.trials,
                forward_passes=self.gradient_passes + self.trials,
                backward_passes=self.gradient_passes,
                wall_time=time.perf_counter() - self.began,
                status=status,
                message=message,
                ratio=self.ratio,
                batch_size=self.batch_size,
                num_batches=self.processed,
                guard_hits=self.guard_hits,
                trials_skipped=self.trials_skipped,
                restored=restored,
                dropped_sigmas=self.dropped,
            )
        )
