"""Today's baselines, wired to the training loop through the hooks of :mod:`bgd_experiments.hooks`.

The optimizers themselves are the maintainers' packages (``schedulefree``, ``dog-optimizer``);
the subclasses here add only what their READMEs ask a training loop to do:

* :class:`ScheduleFreeSGD` -- ``train()``/``eval()`` switch the weights between y (gradients)
  and x (evaluation); before evaluation, BatchNorm statistics are recomputed at x with a few
  training batches in train mode ("Caveats" of the schedulefree README);
* :class:`AveragedDoG` -- DoG with the package's polynomial-decay iterate averager; the
  averaged weights are evaluated and the training weights restored afterwards;
* :class:`CosineSGD` -- the practitioner's SGD with a cosine schedule over the run's epochs;
* :class:`Prodigy`, :class:`DAdaptSGD` -- the packages' classes, unchanged but for the rate
  they adapted (d * lr), which every one of these adds to the epoch's record as
  ``effective_lr`` (the record's ``lr`` is the constant multiplier of the method).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import dadaptation
import prodigyopt
import torch
from dog import DoG, PolynomialDecayAverager
from schedulefree import SGDScheduleFree
from torch import nn

from bgd_experiments.hooks import Batch, EpochEnd, EpochReport, EpochStart


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


@torch.no_grad()
def recompute_batch_norm(
    model: nn.Module,
    batches: Iterator[Batch],
    num_batches: int,
    num_samples: int | None = None,
) -> int:
    """Forward ``num_batches`` batches in train mode (no gradient) so the BatchNorm running
    statistics describe the current weights; the model's mode is restored. At most one epoch
    of batches when ``num_samples`` (the training-set size) is given, as a loop over one
    epoch's loader would. Returns the forward passes made."""
    was_training = model.training
    model.train()
    forwards = 0
    for inputs, _ in itertools.islice(batches, num_batches):
        if forwards == 0 and num_samples is not None:
            num_batches = min(num_batches, math.ceil(num_samples / inputs.shape[0]))
        if forwards == num_batches:
            break
        model(inputs)
        forwards += 1
    model.train(was_training)
    return forwards


def _rate_report(rate: float) -> EpochReport:
    return EpochReport(record={"effective_lr": rate})


class _ReportsAdaptedRate:
    """For the methods that keep their distance estimate d in the param group: reports the
    rate d * lr they adapted, before each evaluation."""

    param_groups: list[dict[str, Any]]

    def before_evaluation(self, model: nn.Module, batches: Iterator[Batch]) -> EpochReport:
        group = self.param_groups[0]
        return _rate_report(float(group["d"]) * float(group["lr"]))


class Prodigy(_ReportsAdaptedRate, prodigyopt.Prodigy):
    """``prodigyopt.Prodigy``; reports its adapted rate d * lr before each evaluation."""


class DAdaptSGD(_ReportsAdaptedRate, dadaptation.DAdaptSGD):
    """``dadaptation.DAdaptSGD``; reports its adapted rate d * lr before each evaluation."""


class ScheduleFreeSGD(SGDScheduleFree):
    """``schedulefree.SGDScheduleFree`` with BatchNorm statistics recomputed before evaluation.

    The loop calls ``train()`` before an epoch's steps and ``eval()`` before evaluating (and the
    checkpoint is written in eval mode, as the README asks); ``before_evaluation`` then runs
    ``bn_batches`` training batches forward at the evaluation weights x (README:
    ``itertools.islice(train_loader, 50)``, i.e. 50 batches or one epoch, whichever is fewer).
    """

    def __init__(self, params: Any, bn_batches: int = 50, **settings: Any) -> None:
        if not bn_batches >= 0:
            raise ValueError(f"bn_batches must be >= 0, got {bn_batches}")
        super().__init__(params, **settings)
        self.bn_batches = bn_batches
        self.num_samples: int | None = None

    def before_epoch(self, start: EpochStart) -> None:
        self.num_samples = int(start.num_samples)

    def before_evaluation(self, model: nn.Module, batches: Iterator[Batch]) -> EpochReport:
        if self.param_groups[0]["train_mode"]:
            raise RuntimeError("before_evaluation expects the optimizer in eval mode")
        report = _rate_report(float(self.param_groups[0]["scheduled_lr"]))
        if self.bn_batches and has_batch_norm(model):
            report.forward_passes = recompute_batch_norm(
                model, batches, self.bn_batches, self.num_samples
            )
            report.record["bn_recompute_batches"] = report.forward_passes
        return report


class AveragedDoG(DoG):
    """``dog.DoG`` with the package's ``PolynomialDecayAverager`` (DoG's README: "DoG must be
    combined with iterate averaging"), whose averaged weights are the ones evaluated.

    The averager needs the model, which the loop hands over before the first epoch; it then
    steps after every optimizer step. ``eval()`` swaps the averaged weights (parameters and
    BatchNorm buffers, as the package averages the state dict) into the model, and
    ``after_epoch`` (before the checkpoint) or ``train()`` swaps the training weights back.
    The averager's state travels in the optimizer's state dict.
    """

    AVERAGER_KEY = "polynomial_decay_averager"

    def __init__(self, params: Any, averager_gamma: float = 8.0, **settings: Any) -> None:
        if not averager_gamma >= 0:
            raise ValueError(f"averager_gamma must be >= 0, got {averager_gamma}")
        super().__init__(params, **settings)
        self.averager_gamma = averager_gamma
        self.averager: PolynomialDecayAverager | None = None
        self._pending_averager_state: dict[str, Any] | None = None
        self._training_weights: dict[str, torch.Tensor] | None = None

    def before_epoch(self, start: EpochStart) -> None:
        if self.averager is None:
            self.averager = PolynomialDecayAverager(start.model, gamma=self.averager_gamma)
            if self._pending_averager_state is not None:
                self.averager.load_state_dict(self._pending_averager_state)
                self._pending_averager_state = None

    def step(self, closure: Any = None) -> Any:
        loss = super().step(closure)
        if self.averager is not None:
            self.averager.step()
        return loss

    @torch.no_grad()
    def eval(self) -> None:
        if self.averager is None or self._training_weights is not None:
            return
        model = self.averager.base_model
        self._training_weights = {key: value.clone() for key, value in model.state_dict().items()}
        model.load_state_dict(self.averager.averaged_model.state_dict())

    @torch.no_grad()
    def train(self) -> None:
        if self.averager is not None and self._training_weights is not None:
            self.averager.base_model.load_state_dict(self._training_weights)
            self._training_weights = None

    def before_evaluation(self, model: nn.Module, batches: Iterator[Batch]) -> EpochReport | None:
        etas = self.param_groups[0].get("eta")  # DoG's step, set by its first step
        return _rate_report(float(etas[0])) if etas else None

    def after_epoch(self, end: EpochEnd) -> None:
        self.train()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        averager = self.averager.state_dict() if self.averager else self._pending_averager_state
        state[self.AVERAGER_KEY] = averager
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        averager = state_dict.pop(self.AVERAGER_KEY, None)
        super().load_state_dict(state_dict)
        if averager is not None and self.averager is not None:
            self.averager.load_state_dict(averager)
        else:
            self._pending_averager_state = averager


class CosineSGD(torch.optim.SGD):
    """SGD whose rate follows a cosine from ``lr`` towards 0 over ``total_epochs``, set
    before each epoch: lr_e = lr * (1 + cos(pi * e / total_epochs)) / 2 for epoch e = 0, 1, ...
    (torch's CosineAnnealingLR stepped per epoch, in closed form, so a resumed run needs no
    scheduler state)."""

    def __init__(self, params: Any, total_epochs: int, **settings: Any) -> None:
        if not (type(total_epochs) is int and total_epochs >= 1):
            raise ValueError(f"total_epochs must be an integer >= 1, got {total_epochs!r}")
        super().__init__(params, **settings)
        self.total_epochs = total_epochs
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def before_epoch(self, start: EpochStart) -> None:
        factor = (
            1 + math.cos(math.pi * min(start.epoch, self.total_epochs) / self.total_epochs)
        ) / 2
        for group in self.param_groups:
            group["lr"] = group["initial_lr"] * factor
