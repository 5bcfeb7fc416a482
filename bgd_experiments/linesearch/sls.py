"""SLS: stochastic gradient descent with a per-step Armijo line search on the mini-batch.

Vaswani, Mishkin, Laradji, Schmidt, Gidel, Lacoste-Julien, "Painless Stochastic Gradient:
Interpolation, Line-Search, and Convergence Rates" (NeurIPS 2019), Algorithms 1-2 (SGD with
the stochastic Armijo condition and backtracking) with the step-size reset of Algorithm 2's
option 1. Step k, on the mini-batch loss f_k with gradient g = grad f_k(w_k):

* start from the previous accepted step, grown: eta <- min(eta_{k-1} * gamma^(b/n), eta_max)
  (b the batch size, n the training-set size: a factor gamma per epoch);
* backtrack eta <- beta_b * eta until f_k(w_k - eta g) <= f_k(w_k) - c * eta * ||g||^2;
* w_{k+1} = w_k - eta g.

The paper's defaults, used here: c = 0.1, beta_b = 0.9, gamma = 2, eta_max = 10, eta_0 = 1
(Section 7, "SGD + Armijo"; the same values are the defaults of the authors' ``sls`` code).
No momentum and no weight decay: the direction is the mini-batch gradient.

``step(closure)`` needs the gradient in ``.grad`` already and a closure that recomputes the
mini-batch loss *without* a backward pass (the training loop hands it a
:class:`bgd_experiments.hooks.MiniBatchLoss`, which also carries f_k(w_k) as
``loss_at_start``; a plain closure is called once more for it). Trial forward passes run in
the model's training mode, as the step's own loss, so BatchNorm layers normalise with batch
statistics (and update their running statistics) as in the authors' code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .armijo import armijo_holds

PAPER_DEFAULTS = {"lr": 1.0, "c": 0.1, "beta_b": 0.9, "gamma": 2.0, "eta_max": 10.0}


class SLS(torch.optim.Optimizer):
    """SGD + stochastic Armijo line search with step-size reset (see the module docstring).

    ``lr`` is the first trial step eta_0 and, after each step, the accepted step (so the
    checkpointed ``param_groups`` carry the search's state). ``batches_per_epoch`` fixes the
    reset exponent b/n = 1/batches_per_epoch; when None, b is the closure's batch size and n
    the training-set size the loop announces before each epoch (1 before any announcement, e.g.
    full-batch use). A search that finds no acceptable step within ``max_backtracks`` trials
    leaves the weights where they were and keeps the shrunken step for the next one.
    """

    wants_closure = True

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        c: float = 0.1,
        beta_b: float = 0.9,
        gamma: float = 2.0,
        eta_max: float = 10.0,
        max_backtracks: int = 100,
        batches_per_epoch: int | None = None,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < c < 1:
            raise ValueError(f"c must be in (0, 1), got {c}")
        if not 0 < beta_b < 1:
            raise ValueError(f"beta_b must be in (0, 1), got {beta_b}")
        if not gamma >= 1:
            raise ValueError(f"gamma must be >= 1, got {gamma}")
        if not eta_max >= lr:
            raise ValueError(f"eta_max must be >= lr, got {eta_max} < {lr}")
        if not max_backtracks >= 1:
            raise ValueError(f"max_backtracks must be >= 1, got {max_backtracks}")
        if batches_per_epoch is not None and not batches_per_epoch >= 1:
            raise ValueError(f"batches_per_epoch must be null or >= 1, got {batches_per_epoch}")
        super().__init__(params, {"lr": lr})
        self.c, self.beta_b, self.gamma, self.eta_max = c, beta_b, gamma, eta_max
        self.max_backtracks = max_backtracks
        self.batches_per_epoch = batches_per_epoch
        self.num_samples: int | None = None
        self.last_trials = 0  # loss evaluations of the last step's search
        self.last_accepted = True

    def before_epoch(self, start: Any) -> None:
        """Learn the training-set size n of the reset rule from the loop."""
        self.num_samples = int(start.num_samples)

    def _reset_exponent(self, closure: Callable[[], torch.Tensor]) -> float:
        if self.batches_per_epoch is not None:
            return 1.0 / self.batches_per_epoch
        batch_size = getattr(closure, "batch_size", None)
        if batch_size is None or not self.num_samples:
            return 1.0
        return batch_size / self.num_samples

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("SLS needs a closure that recomputes the mini-batch loss")
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        loss_at_start = getattr(closure, "loss_at_start", None)
        current = float(closure() if loss_at_start is None else loss_at_start)
        grads = [p.grad for p in params]
        start = [p.detach().clone() for p in params]
        grad_norm_sq = float(sum(g.double().pow(2).sum() for g in grads)) if grads else 0.0
        group = self.param_groups[0]
        eta = min(group["lr"] * self.gamma ** self._reset_exponent(closure), self.eta_max)
        self.last_trials, self.last_accepted = 0, True
        if grad_norm_sq <= 1e-16:  # a stationary point of the mini-batch: nothing to search
            return torch.as_tensor(current)
        for _ in range(self.max_backtracks):
            torch._foreach_copy_(params, start)
            torch._foreach_add_(params, grads, alpha=-eta)
            self.last_trials += 1
            if armijo_holds(float(closure()), current, eta, grad_norm_sq, self.c):
                break
            eta *= self.beta_b
        else:
            torch._foreach_copy_(params, start)
            self.last_accepted = False
        for other in self.param_groups:
            other["lr"] = eta
        return torch.as_tensor(current)
