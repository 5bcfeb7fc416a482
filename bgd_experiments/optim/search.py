"""The MBT learning-rate search (Truong & Nguyen 2020, Section 3.5), fast implementation.

Same decisions as the authors' published code and as :func:`mbt_search_reference`, without
their costs: no state_dict deep copy per trial, no autograd graph for trial losses, trial
steps written in place with ``torch._foreach`` ops, one host synchronisation per search batch
(loss, ||g||^2 and the finiteness check fetched together) plus one per trial (its loss, which
decides the next trial and cannot be avoided).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ._common import (
    ComputeLoss,
    Guards,
    ProgressFn,
    Reducer,
    SearchResult,
    SearchSettings,
    SearchTally,
    batch_norm_layers,
    batch_size_of,
    batch_to,
    check_sgd,
    mean_of,
    restore_buffers,
    running_stats_frozen,
    search_mode,
    snapshot_buffers,
    split_batch,
    trainable_parameters,
)

LossFn = torch.nn.Module | object  # any callable (outputs, targets) -> scalar loss tensor


def mbt_search(
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    *,
    start_lr: float,
    num_samples: int,
    alpha: float = 1e-4,
    beta: float = 0.5,
    num_batches: int = 20,
    rescale: bool = True,
    keep_search_steps: bool = False,
    lr_min: float = 1e-6,
    lr_max: float = 100.0,
    min_decrease: float = 1e-7,
    progress: ProgressFn | None = None,
    reducer: Reducer | None = None,
    compute_loss: ComputeLoss | None = None,
) -> SearchResult:
    """Find a learning rate by two-way backtracking on mini-batches and set it on ``optimizer``.

    Example (any loop; ``batches`` may be the training loader: the first ``num_batches`` are
    read)::

        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        result = mbt_search(model, nn.CrossEntropyLoss(), loader, opt,
                            start_lr=0.01, num_samples=len(train_set))
        print(result.lr)  # now set on every param group of opt

    Batches other than ``(inputs, targets)`` (dicts, several inputs): pass
    ``loss_fn=None, compute_loss=lambda model, batch: <scalar loss>``; the batch size is the
    leading dimension of the first tensor in the batch. ``optimizer`` must be SGD (or
    :class:`MBTSGD`): the rate found is one for plain gradient steps. ``num_samples`` is the
    training set's size. The loss searched is ``loss_fn``'s (or ``compute_loss``'s) only:
    an optimizer's ``weight_decay`` is not part of Armijo's condition.

    Contract:

    * **Batches consumed**: exactly the first ``num_batches`` items of ``batches`` (fewer if
      it runs out; nothing beyond is pulled), so a training loop can hand over its epoch
      iterator and continue with the rest.
    * **Per batch B_i** (at the current point x_i): one forward+backward gives L = L_B(x_i)
      and g; trials evaluate L_B(x_i - sigma*g) on the same batch without autograd and
      accept when ``L_B(x_i - sigma*g) - L + alpha*sigma*||g||^2 <= 0`` (NaN fails). The
      first batch starts at ``start_lr``, later ones at max(lr_min, mean of sigmas so far).
      A failing start is halved (times beta) until it holds; a holding start is grown
      (divided by beta) while it holds, then stepped back once. Guards: stop on a batch when
      sigma leaves [lr_min, lr_max] or sigma*||g||^2 <= min_decrease (so a ``start_lr``
      below lr_min, which a carried-over start can be, is accepted as it is). Then one SGD step
      x_{i+1} = x_i - sigma_i*ratio*g walks the search forward.
    * **Result**: lr = mean(sigma_i) * ratio, ratio = sqrt(batch_size / num_samples) (1 if
      ``rescale`` is False); set on every param group.
    * **Restored** (default, ``keep_search_steps=False``): weights, every model buffer
      (BatchNorm running statistics, num_batches_tracked) bit-exactly; the optimizer's state
      is never touched. Gradients of the optimizer's parameters are left as None.
      With ``keep_search_steps=True`` (a documented deviation from the paper) the k SGD
      steps stay as training progress, and BatchNorm running statistics receive the k
      gradient forwards' updates exactly as the training steps they replace would; trial
      forwards never touch BatchNorm buffers in either mode.
    * **Modes**: the model runs in train mode (BatchNorm on batch statistics, for L and the
      trials alike, as the authors do) with dropout off; every module's mode is restored.
    * **Counts**: ``trials`` no-grad trial forwards, ``forward_passes`` = gradient forwards +
      trials, ``backward_passes`` = gradient backwards.
    * **Faithful trial savings**: a trial at a sigma that already violates a guard is never
      evaluated (the authors' code evaluates it and then ignores its value), so this path
      may report fewer trials than the reference with the very same sigmas.
    * **Several processes** (``reducer``, e.g. one per GPU under ``torchrun``): each process
      passes its shard of every batch; L, g and every trial loss are replaced by their
      count-weighted mean over the processes before any test, so every process takes the
      same decisions, finds the same sigmas and walks to the same weights; the ratio uses
      the global batch size. BatchNorm normalises each shard on its own unless the model
      uses SyncBatchNorm.
    * **Robustness**: if L or ||g||^2 is not finite, or the weights are not finite after a
      search step, the search stops with status "nonfinite" and a WARNING; the sigma whose
      step led there is dropped, lr comes from the sigmas before it (or stays unchanged if
      none), and in keep mode the weights and buffers are rolled back to the search's start.
      A search whose batches all stop on a guard, or that only ever accepts ``start_lr``,
      has status "saturated".
    """
    settings = SearchSettings(
        start_lr=start_lr,
        num_samples=num_samples,
        alpha=alpha,
        beta=beta,
        num_batches=num_batches,
        rescale=rescale,
        keep_search_steps=keep_search_steps,
        lr_min=lr_min,
        lr_max=lr_max,
        min_decrease=min_decrease,
        progress=progress,
        reducer=reducer,
    )
    return search_with(settings, model, loss_fn, batches, optimizer, compute_loss=compute_loss)


def _batch_objective(
    model: nn.Module,
    loss_fn: LossFn | None,
    compute_loss: ComputeLoss | None,
    batch: Any,
    device: torch.device,
) -> tuple[Callable[[], torch.Tensor], int]:
    """The mean loss of ``batch`` at the model's current weights, and this process's share
    of the batch (its number of examples)."""
    if compute_loss is None:
        assert loss_fn is not None
        inputs, targets = split_batch(batch, device)  # refuses other shapes
        return _pair_loss(model, loss_fn, inputs, targets), len(targets)
    return _batch_loss(model, compute_loss, batch_to(batch, device)), batch_size_of(batch)


def _non_finite(
    weights_value: float, loss_value: float, norm_sq: float, index: int, tally: SearchTally
) -> str | None:
    """Why the search must stop at batch ``index`` (None: all finite)."""
    if not math.isfinite(weights_value):
        return (
            f"the weights became non-finite after the search step of batch {index - 1}"
            f" (sigma {tally.sigmas[-1]:g})"
        )
    if not (math.isfinite(loss_value) and math.isfinite(norm_sq)):
        what = "loss" if not math.isfinite(loss_value) else "gradient norm"
        return f"non-finite {what} at the current point on search batch {index}"
    return None


def search_with(
    s: SearchSettings,
    model: nn.Module,
    loss_fn: LossFn | None,
    batches: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    *,
    compute_loss: ComputeLoss | None = None,
) -> SearchResult:
    """:func:`mbt_search` with its settings as one (checked) object."""
    check_sgd(optimizer)
    if (loss_fn is None) == (compute_loss is None):
        raise TypeError("pass exactly one of loss_fn (outputs, targets) or compute_loss")
    tally = SearchTally(
        start_lr=s.start_lr, alpha=s.alpha, num_batches=s.num_batches, progress=s.progress
    )
    guards = Guards.from_bounds(s.lr_min, s.lr_max, s.min_decrease)
    reducer = s.reducer
    params = trainable_parameters(optimizer, model)
    device = params[0].device
    previous_lr = float(optimizer.param_groups[0]["lr"])
    bn_layers = batch_norm_layers(model)

    with search_mode(model), torch.no_grad():
        # One copy of the weights and buffers per search: the restore point (and, in keep
        # mode, the rollback point should the search go non-finite).
        start_point = [p.detach().clone() for p in params]
        saved_buffers = snapshot_buffers(model)
        current_point = [torch.empty_like(p) for p in params]  # x_i, refilled per batch
        pending_weight_check: torch.Tensor | None = None

        try:
            for index, batch in enumerate(itertools.islice(batches, s.num_batches)):
                evaluate, local_size = _batch_objective(model, loss_fn, compute_loss, batch, device)
                # Several processes: each holds a shard of B_i; its share weighs its means.
                global_size = local_size if reducer is None else reducer.total(local_size)
                share = local_size / global_size
                tally.count_batch(index, local_size, s, global_size)

                optimizer.zero_grad(set_to_none=True)
                with torch.enable_grad(), running_stats_frozen(bn_layers, not s.keep_search_steps):
                    loss = evaluate()
                    loss.backward()
                tally.gradient_passes += 1

                has_grad = [p.grad is not None for p in params]
                stepped = [p for p, used in zip(params, has_grad, strict=True) if used]
                saved = [c for c, used in zip(current_point, has_grad, strict=True) if used]
                grads = [p.grad for p in stepped]
                if reducer is not None:
                    # L and g of the global batch, before anything is decided on them.
                    loss = loss.detach().clone()
                    reducer.weighted_mean_([loss, *grads], share)
                grad_norm_sq = (
                    torch.stack(torch._foreach_norm(grads)).double().square().sum()
                    if grads
                    else torch.zeros((), dtype=torch.float64, device=device)
                )
                weights_check = (
                    pending_weight_check
                    if pending_weight_check is not None
                    else torch.zeros((), dtype=torch.float64, device=device)
                )
                # The one host synchronisation of this batch.
                loss_value, norm_sq, weights_value = torch.stack(
                    [loss.detach().double(), grad_norm_sq, weights_check]
                ).tolist()
                del loss

                tally.failure = _non_finite(weights_value, loss_value, norm_sq, index, tally)
                if tally.failure is not None:
                    if tally.sigmas:
                        tally.failure += (
                            f"; dropped sigma {tally.drop_last_sigma():g} that led there"
                        )
                    break

                torch._foreach_copy_(saved, stepped)
                trial = TrialPoint(evaluate, bn_layers, reducer, share)
                trial.set_point(stepped, grads, saved)
                trial.set_reference(loss_value, norm_sq, s.alpha)

                start = s.start_lr if index == 0 else max(guards.low, mean_of(tally.sigmas))
                sigma, hit_guard = _two_way_backtracking(trial, start, s.beta, guards)
                tally.guard_hits += hit_guard
                tally.trials_skipped += trial.skipped
                tally.sigmas.append(sigma)

                tally.trials += trial.trials
                # The search walks forward: x_{i+1} = x_i - sigma_i * ratio * g.
                trial.move_to(sigma * tally.ratio)
                pending_weight_check = torch.stack(torch._foreach_norm(stepped)).double().sum()
                tally.batch_done()
        except BaseException:
            # Interrupted (error, KeyboardInterrupt): never leave a trial point behind.
            torch._foreach_copy_(params, start_point)
            restore_buffers(saved_buffers)
            optimizer.zero_grad(set_to_none=True)
            raise

        if tally.batch_size == 0:
            raise ValueError("mbt_search got no batch to search on")
        if (
            tally.failure is None
            and pending_weight_check is not None
            and not math.isfinite(float(pending_weight_check))
        ):
            tally.failure = (
                "the weights became non-finite after the search step of the last batch; "
                f"dropped sigma {tally.drop_last_sigma():g}"
            )

        restore = not s.keep_search_steps or tally.failure is not None
        if restore:
            torch._foreach_copy_(params, start_point)
            restore_buffers(saved_buffers)
        optimizer.zero_grad(set_to_none=True)

    return tally.result(
        optimizer, previous_lr=previous_lr, keep_search_steps=s.keep_search_steps, restored=restore
    )


def _pair_loss(
    model: nn.Module, loss_fn: Any, inputs: torch.Tensor, targets: torch.Tensor
) -> Callable[[], torch.Tensor]:
    return lambda: loss_fn(model(inputs), targets)


def _batch_loss(
    model: nn.Module, compute_loss: ComputeLoss, batch: Any
) -> Callable[[], torch.Tensor]:
    return lambda: compute_loss(model, batch)


class TrialPoint:
    """The trial points x_i - sigma*g of one search batch, written in place into the weights.

    Every trial starts from the saved copy of x_i (a memory copy, bit-exact) rather than
    undoing the previous trial by adding sigma*g back, which is not exact in floating point.
    The very first trial needs no copy: the weights still are x_i.
    """

    def __init__(
        self,
        evaluate: Callable[[], torch.Tensor],
        bn_layers: list[nn.Module],
        reducer: Reducer | None = None,
        share: float = 1.0,
    ) -> None:
        self.evaluate, self.bn_layers = evaluate, bn_layers
        self.reducer, self.share = reducer, share
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.saved_point: list[torch.Tensor] = []
        self.loss_value = self.norm_sq = self.alpha = 0.0
        self.at_saved_point = True
        self.trials = self.skipped = 0

    def set_point(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], saved_point: list[torch.Tensor]
    ) -> None:
        """The weights to move, g, and the saved copy of x_i (the weights equal it now)."""
        self.params, self.grads, self.saved_point = params, grads, saved_point
        self.at_saved_point = True

    def set_reference(self, loss_value: float, norm_sq: float, alpha: float) -> None:
        """L_B(x_i), ||g||^2 and alpha of the Armijo check."""
        self.loss_value, self.norm_sq, self.alpha = loss_value, norm_sq, alpha

    def move_to(self, sigma: float) -> None:
        """Set the weights to x_i - sigma*g (the same arithmetic as SGD's step)."""
        with torch.no_grad():
            if not self.at_saved_point:
                torch._foreach_copy_(self.params, self.saved_point)
            torch._foreach_add_(self.params, self.grads, alpha=-sigma)
        self.at_saved_point = False

    def armijo_check(self, sigma: float) -> float:
        """L_B(x_i - sigma*g) - L_B(x_i) + alpha*sigma*||g||^2; accepted when <= 0."""
        self.move_to(sigma)
        # inference_mode, not just no_grad: no version counters or view tracking either.
        with torch.inference_mode(), running_stats_frozen(self.bn_layers):
            trial_loss_tensor = self.evaluate()
        if self.reducer is not None:  # the global batch's loss: the same on every process
            trial_loss_tensor = trial_loss_tensor.clone()
            self.reducer.weighted_mean_([trial_loss_tensor], self.share)
        trial_loss = float(trial_loss_tensor)
        self.trials += 1
        return trial_loss - self.loss_value + self.alpha * sigma * self.norm_sq


def _two_way_backtracking(
    trial: TrialPoint, start: float, beta: float, guards: Guards
) -> tuple[float, bool]:
    """(accepted sigma, whether a guard ended the search) for one batch.

    A failing start is multiplied by beta until it holds; a holding start is divided by
    beta while it keeps holding, then stepped back once. A sigma outside the guards ends
    the search without evaluating its trial: the authors' code evaluates it but its value
    cannot change the outcome, so skipping it keeps their decisions exactly.
    """
    sigma = start
    if not guards.allows(sigma, trial.norm_sq):
        trial.skipped += 1
        return sigma, True
    check = trial.armijo_check(sigma)
    if check > 0 or math.isnan(check):  # fails (NaN counts as failure): shrink
        while True:
            sigma *= beta
            if not guards.allows(sigma, trial.norm_sq):
                trial.skipped += 1
                return sigma, True
            check = trial.armijo_check(sigma)
            if not (check > 0 or math.isnan(check)):
                return sigma, False
    if check < 0:  # holds: grow while it keeps holding, then step back to the last that held
        hit_guard = False
        while True:
            sigma /= beta
            if not guards.allows(sigma, trial.norm_sq):
                trial.skipped += 1
                hit_guard = True
                break
            check = trial.armijo_check(sigma)
            if not check < 0:
                break
        return sigma * beta, hit_guard
    return sigma, False  # check == 0 exactly: the start is accepted as it is
