"""What the training loop tells the objects that take part in an epoch, and what it hears back.

``fit`` calls these optional methods on the optimizer and on every callback it is given; an
object provides only those it needs, and the loop knows no optimizer class:

* ``before_epoch(start: EpochStart) -> EpochReport | None`` -- e.g. MBT's learning-rate search;
* ``train()`` / ``eval()`` -- before training steps / before evaluation (schedule-free
  optimizers keep two sets of weights);
* ``before_evaluation(model, batches) -> EpochReport | None`` -- after ``eval()``, with an
  endless iterator of training batches independent of the epoch's (e.g. BatchNorm statistics
  recomputed at the weights that are evaluated); its forward passes count as the epoch's;
* ``after_epoch(end: EpochEnd) -> None`` -- e.g. a plateau rule;
* ``should_stop() -> bool`` -- asked after ``after_epoch``: end the run early;
* ``wants_closure = True`` (an attribute of the optimizer) -- ``step`` gets a
  :class:`MiniBatchLoss` of the step's mini-batch (e.g. a line search's trial losses);
* ``checkpoint_key`` with ``state_dict()`` / ``load_state_dict()`` -- a callback's state in the
  checkpoint (the optimizer's state is saved with the optimizer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class EpochStart:
    """The state of the run as an epoch begins."""

    epoch: int  # 0-based
    model: nn.Module
    loss_fn: nn.Module
    batches: Iterator[Batch]  # the epoch's own batches; what a hook takes, training skips
    fresh_batches: Callable[[], Iterator[Batch]]  # endless batches independent of the epoch's
    num_samples: int  # size of the training set
    progress: Callable[[Any], None] | None = None  # for a long hook (a search) to report to


@dataclass
class EpochReport:
    """What a ``before_epoch`` hook did: extra record fields, a note and its passes."""

    record: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    forward_passes: int = 0
    backward_passes: int = 0


@dataclass
class EpochEnd:
    """The numbers of a finished epoch."""

    epoch: int  # 0-based
    train_loss: float
    plateau_acc: float  # validation accuracy under the clean protocol, else test accuracy
    record: dict[str, Any]


def call_hooks(participants: list[Any], name: str, *args: Any) -> list[Any]:
    """Call method ``name`` on every participant that has it; their answers, in order."""
    answers = []
    for participant in participants:
        method = getattr(participant, name, None)
        if callable(method):
            answers.append(method(*args))
    return answers


class MiniBatchLoss:
    """The closure the loop hands to an optimizer that sets ``wants_closure``.

    ``loss_at_start`` is the mini-batch loss whose gradient is in ``.grad`` already (the
    loop's own forward and backward pass); calling the closure recomputes the loss of the same
    mini-batch at the current parameters, without a backward pass, in the model's current mode
    (training, as the step's loss was computed). ``forward_passes`` counts those calls, so an
    epoch's record counts what the optimizer's trials cost.

    Distributed (a ``reducer``, each rank holding a shard of the global batch): both losses are
    the global batch's (the shards' losses weighted by their sizes, the same bytes on every
    rank) and ``batch_size`` is the global one, so an optimizer deciding on them (a line
    search) takes the same decision on every rank, as DDP's averaged gradient requires.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_at_start: torch.Tensor,
        reducer: Any = None,
    ) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.inputs, self.targets = inputs, targets
        self.reducer = reducer
        local_size = int(targets.shape[0])
        self.batch_size = reducer.total(local_size) if reducer is not None else local_size
        self._weight = local_size / self.batch_size if self.batch_size else 0.0
        self.loss_at_start = self._global(loss_at_start)
        self.forward_passes = 0

    def _global(self, loss: torch.Tensor) -> torch.Tensor:
        if self.reducer is None:
            return loss
        packed = loss.detach().reshape(1).clone()
        self.reducer.weighted_mean_([packed], self._weight)
        return packed[0]

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        self.forward_passes += 1
        return self._global(self.loss_fn(self.model(self.inputs), self.targets))
