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
import time
from collections.abc import Iterable

import torch
from torch import nn

from ._common import (
    Guards,
    SearchResult,
    check_search_arguments,
    classify,
    finish_result,
    mean_of,
    rescale_ratio,
    search_mode,
    set_learning_rate,
    split_batch,
    trainable_parameters,
)
from .search import LossFn


def mbt_search_reference(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    start_lr: float,
    alpha: float = 1e-4,
    beta: float = 0.5,
    num_batches: int = 20,
    num_samples: int,
    rescale: bool = True,
    keep_search_steps: bool = False,
    lr_min: float = 1e-6,
    lr_max: float = 100.0,
    min_decrease: float = 1e-7,
) -> SearchResult:
    """Reference MBT search; same arguments, contract and result as ``mbt_search``."""
    check_search_arguments(
        start_lr=start_lr,
        alpha=alpha,
        beta=beta,
        num_batches=num_batches,
        num_samples=num_samples,
        lr_min=lr_min,
        lr_max=lr_max,
        min_decrease=min_decrease,
    )
    began = time.perf_counter()
    guards = Guards.from_bounds(lr_min, lr_max, min_decrease)
    x = trainable_parameters(optimizer)
    device = x[0].device
    previous_lr = float(optimizer.param_groups[0]["lr"])
    model_before = copy.deepcopy(model.state_dict())
    optimizer_before = copy.deepcopy(optimizer.state_dict())

    sigmas: list[float] = []  # sigma_i accepted on batch B_i
    dropped: list[float] = []
    trials = gradient_passes = guard_hits = processed = batch_size = 0
    rho_ratio = 1.0
    failure: str | None = None

    with search_mode(model):
        for i, batch in enumerate(itertools.islice(batches, num_batches)):
            processed = i + 1
            X, Y = split_batch(batch, device)
            if i == 0:
                batch_size = int(X.shape[0])
                rho_ratio = rescale_ratio(batch_size, num_samples, rescale)

            if not all(bool(torch.isfinite(p).all()) for p in x):
                failure = f"the weights became non-finite after the search step of batch {i - 1}"
                dropped.append(sigmas.pop())
                break

            # L = L_B(x_i) and g = grad L_B(x_i): one forward and one backward.
            optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                L_tensor = loss_fn(model(X), Y)
                L_tensor.backward()
            gradient_passes += 1
            L = L_tensor.item()
            g = [p.grad.detach().clone() if p.grad is not None else None for p in x]
            g_norm_sq = sum(
                torch.linalg.vector_norm(gj).double().item() ** 2 for gj in g if gj is not None
            )
            if not (math.isfinite(L) and math.isfinite(g_norm_sq)):
                failure = f"non-finite loss or gradient norm on search batch {i}"
                if sigmas:
                    dropped.append(sigmas.pop())
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
                nonlocal trials
                step(sigma)
                with torch.no_grad():
                    trial_loss = loss_fn(model(X), Y).item()
                trials += 1
                return trial_loss - L + alpha * sigma * g_norm_sq

            def fails(value: float) -> bool:
                return value > 0 or math.isnan(value)

            # Two-way backtracking, written like the authors' loop: evaluate, then test.
            sigma = start_lr if i == 0 else max(guards.low, mean_of(sigmas))
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
            guard_hits += not guards_ok
            sigmas.append(sigma)

            # x_{i+1} = x_i - sigma_i * sqrt(rho) * g  (buffers as after the gradient pass).
            step_from_x_i(sigma * rho_ratio)

        if batch_size == 0:
            raise ValueError("mbt_search_reference got no batch to search on")
        if failure is None and not all(bool(torch.isfinite(p).all()) for p in x):
            failure = "the weights became non-finite after the search step of the last batch"
            dropped.append(sigmas.pop())

        restore = not keep_search_steps or failure is not None
        if restore:
            model.load_state_dict(model_before)
            optimizer.load_state_dict(optimizer_before)
        optimizer.zero_grad(set_to_none=True)

    if sigmas:
        mean_sigma = mean_of(sigmas)
        lr = mean_sigma * rho_ratio
        set_learning_rate(optimizer, lr)
    else:
        mean_sigma, lr = math.nan, previous_lr
    status, message = classify(
        sigmas=sigmas,
        start_lr=start_lr,
        guard_hits=guard_hits,
        num_batches=len(sigmas),
        nonfinite_message=failure,
    )
    return finish_result(
        SearchResult(
            lr=lr,
            mean_sigma=mean_sigma,
            sigmas=sigmas,
            start_lr=start_lr,
            alpha=alpha,
            trials=trials,
            forward_passes=gradient_passes + trials,
            backward_passes=gradient_passes,
            wall_time=time.perf_counter() - began,
            status=status,
            message=message,
            ratio=rho_ratio,
            batch_size=batch_size,
            num_batches=processed,
            guard_hits=guard_hits,
            trials_skipped=0,
            restored=restore,
            dropped_sigmas=dropped,
        )
    )
