"""The MBT search written plainly, in the paper's notation, for checking the fast path.

Clarity first: state_dict copies, one trial = reload x_i, step to x_i - sigma*g, evaluate.
It evaluates every trial the authors' code evaluates (also those at a sigma a guard already
rejects), so its trial count equals theirs. Decisions, rescaling, restore and statuses are
those of :func:`bgd_experiments.optim.mbt_search`, whose docstring states the contract.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ._common import (
    Guards,
    SearchResult,
    SearchSettings,
    SearchTally,
    mean_of,
    search_mode,
    trainable_parameters,
)
from .search import LossFn


def mbt_search_reference(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    **settings: Any,
) -> SearchResult:
    """Reference MBT search; same arguments, contract and result as ``mbt_search``."""
    return reference_search_with(SearchSettings(**settings), model, loss_fn, batches, optimizer)


def reference_search_with(
    s: SearchSettings,
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
) -> SearchResult:
    """:func:`mbt_search_reference` with its settings as one (checked) object."""
    if s.reducer is not None:
        raise ValueError(
            "the reference search runs in one process; a distributed run needs implementation=fast"
        )
    alpha, beta = s.alpha, s.beta  # the paper's symbols
    tally = SearchTally(
        start_lr=s.start_lr, alpha=alpha, num_batches=s.num_batches, progress=s.progress
    )
    guards = Guards.from_bounds(s.lr_min, s.lr_max, s.min_decrease)
    x = trainable_parameters(optimizer, model)
    device = x[0].device
    previous_lr = float(optimizer.param_groups[0]["lr"])
    model_before = copy.deepcopy(model.state_dict())
    optimizer_before = copy.deepcopy(optimizer.state_dict())
    sigmas = tally.sigmas  # sigma_i accepted on batch B_i

    with search_mode(model):
        for i, batch in enumerate(itertools.islice(batches, s.num_batches)):
            X, Y = tally.take_batch(i, batch, device, s)  # B_i

            if not all(bool(torch.isfinite(p).all()) for p in x):
                tally.failure = (
                    f"the weights became non-finite after the search step of batch {i - 1}"
                    f"; dropped sigma {tally.drop_last_sigma():g} that led there"
                )
                break

            # L = L_B(x_i) and g = grad L_B(x_i): one forward and one backward.
            optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                L_tensor = loss_fn(model(X), Y)
                L_tensor.backward()
            tally.gradient_passes += 1
            L = L_tensor.item()
            g = [p.grad.detach().clone() if p.grad is not None else None for p in x]
            g_norm_sq = sum(
                torch.linalg.vector_norm(gj).double().item() ** 2 for gj in g if gj is not None
            )
            if not (math.isfinite(L) and math.isfinite(g_norm_sq)):
                tally.failure = f"non-finite loss or gradient norm on search batch {i}"
                if sigmas:
                    tally.failure += f"; dropped sigma {tally.drop_last_sigma():g} that led there"
                break
            x_i = copy.deepcopy(model.state_dict())  # weights and BN buffers at x_i

            def step_from_x_i(sigma: float, x_i: dict = x_i, g: list = g) -> None:
                """Weights <- x_i - sigma * g (buffers <- those at x_i)."""
                model.load_state_dict(x_i)
                with torch.no_grad():
                    for p, gj in zip(x, g, strict=True):
                        if gj is not None:
                            p.add_(gj, alpha=-sigma)

            def armijo(sigma: float, X: torch.Tensor = X, Y: torch.Tensor = Y, L: float = L,
                       g_norm_sq: float = g_norm_sq, step=step_from_x_i) -> float:  # fmt: skip
                """L_B(x_i - sigma g) - L_B(x_i) + alpha sigma ||g||^2 (<= 0: Armijo holds)."""
                step(sigma)
                with torch.no_grad():
                    trial_loss = loss_fn(model(X), Y).item()
                tally.trials += 1
                return trial_loss - L + alpha * sigma * g_norm_sq

            def fails(value: float) -> bool:
                return value > 0 or math.isnan(value)

            # Two-way backtracking, written like the authors' loop: evaluate, then test.
            sigma = s.start_lr if i == 0 else max(guards.low, mean_of(sigmas))
            check, guards_ok = armijo(sigma), guards.allows(sigma, g_norm_sq)
            if fails(check) and guards_ok:
                while fails(check) and guards_ok:
                    sigma = sigma * beta
                    check, guards_ok = armijo(sigma), guards.allows(sigma, g_norm_sq)
            elif check < 0 and guards_ok:
                while check < 0 and guards_ok:
                    sigma = sigma / beta
                    check, guards_ok = armijo(sigma), guards.allows(sigma, g_norm_sq)
                sigma = sigma * beta  # step back to the last sigma that held
            tally.guard_hits += not guards_ok
            sigmas.append(sigma)

            # x_{i+1} = x_i - sigma_i * ratio * g, ratio = sqrt(rho) (buffers as after the
            # gradient pass).
            step_from_x_i(sigma * tally.ratio)
            tally.batch_done()

        if tally.batch_size == 0:
            raise ValueError("mbt_search_reference got no batch to search on")
        if tally.failure is None and not all(bool(torch.isfinite(p).all()) for p in x):
            tally.failure = (
                "the weights became non-finite after the search step of the last batch; "
                f"dropped sigma {tally.drop_last_sigma():g}"
            )

        restore = not s.keep_search_steps or tally.failure is not None
        if restore:
            model.load_state_dict(model_before)
            optimizer.load_state_dict(optimizer_before)
        optimizer.zero_grad(set_to_none=True)

    return tally.result(
        optimizer, previous_lr=previous_lr, keep_search_steps=s.keep_search_steps, restored=restore
    )
