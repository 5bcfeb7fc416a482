"""Deterministic gradient-descent methods with backtracking line searches (paper, Sections 2-3).

Every method takes an objective (see :mod:`.objectives`) and a start point ``x0`` (a tensor, or
a list of tensors), works in the dtype/device of ``x0``, and returns a :class:`RunResult`.

Iteration n evaluates f and grad f at x_n (one ``value_and_grad``), stops if ||g_n|| <= grad_tol
(or if f/g are not finite, or n == max_iter), and otherwise picks a step and moves to x_{n+1}.
Its record holds x_n (optional), f(x_n), ||g_n||, the accepted step size and the function and
gradient evaluations spent in that iteration (its ``value_and_grad`` plus every trial point).
The totals in the result also count the final ``value_and_grad`` at the last point, so
``total = sum over records + (1, 1)``; after a failed search (stop reason
``line_search_failed``) they also include that search's trial points.

Stop reasons: ``grad_tol`` (||g|| <= grad_tol), ``max_iter``, ``non_finite`` (f or g is NaN or
infinite, e.g. Standard GD diverging) and ``line_search_failed`` (no grid step passed Armijo:
once trial points round to x_n the search gives up; this happens when the decrease Armijo asks
for is below the floating-point resolution of f).

Step sizes of the backtracking searches live on the grid delta0 * beta^k (k an integer, k < 0
only for the Unbounded method) and are computed from the integer k, so that growing a step back
up lands exactly on delta0 rather than on delta0 times a rounding error.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch import Tensor

from .armijo import armijo_holds, direction_condition_holds
from .objectives import Objective, Point

# Stop reasons. "line_search_failed": no step on the grid passed Armijo within max_backtracks
# halvings (only possible through rounding, e.g. when x - sigma*g == x in floating point).
STOP_GRAD_TOL = "grad_tol"
STOP_MAX_ITER = "max_iter"
STOP_NON_FINITE = "non_finite"
STOP_LINE_SEARCH_FAILED = "line_search_failed"

DEFAULT_MAX_BACKTRACKS = 1000
# A failing search starts checking whether trial points still differ from x after this many
# shrinks (checking earlier would cost an extra comparison in every ordinary search).
_CHECK_STALL_AFTER = 20
# Points with more entries than this are not recorded unless record_points=True.
_AUTO_RECORD_MAX_NUMEL = 10_000

DirectionFn = Callable[[Point, Point, int], Point]
Callback = Callable[[int, "IterationRecord"], None]


class LineSearchError(RuntimeError):
    """No acceptable step size was found (raised inside a step, turned into a stop reason)."""


class DirectionConditionError(ValueError):
    """A caller-supplied direction violates condition (i); Inexact Backtracking GD rejects it."""


# --- Point arithmetic: a single tensor, or a list of tensors ---------------------------------


def _copy_point(x: Point) -> Point:
    if isinstance(x, Tensor):
        return x.detach().clone()
    return [t.detach().clone() for t in x]


def _add_scaled(x: Point, scale: float, v: Point) -> Point:
    """x + scale * v, as a new point."""
    if isinstance(x, Tensor):
        return torch.add(x, v, alpha=scale)
    return list(torch._foreach_add(list(x), list(v), alpha=scale))


def _scaled(v: Point, scale: float) -> Point:
    if isinstance(v, Tensor):
        return v * scale
    return list(torch._foreach_mul(list(v), scale))


def _dot(a: Point, b: Point) -> float:
    if isinstance(a, Tensor):
        return torch.dot(a.reshape(-1), b.reshape(-1)).item()
    parts = [torch.dot(ai.reshape(-1), bi.reshape(-1)) for ai, bi in zip(a, b, strict=True)]
    return torch.stack(parts).sum().item()


def _norm(a: Point) -> float:
    if isinstance(a, Tensor):
        return torch.linalg.vector_norm(a).item()
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(a)))).item()


def _points_equal(a: Point, b: Point) -> bool:
    if isinstance(a, Tensor):
        return torch.equal(a, b)
    return all(torch.equal(ai, bi) for ai, bi in zip(a, b, strict=True))


def _numel(x: Point) -> int:
    if isinstance(x, Tensor):
        return x.numel()
    return sum(t.numel() for t in x)


def _flat_floats(x: Point) -> list[float]:
    if isinstance(x, Tensor):
        return x.detach().reshape(-1).tolist()
    return [value for t in x for value in t.detach().reshape(-1).tolist()]


# --- Records and results ---------------------------------------------------------------------


@dataclass(frozen=True)
class IterationRecord:
    """One iteration: the state at x_n and the step taken from it."""

    iteration: int
    point: tuple[float, ...] | None
    value: float
    grad_norm: float
    step_size: float
    function_evals: int
    gradient_evals: int


class IterationRecords(Sequence[IterationRecord]):
    """Per-iteration records stored column-wise (10^6 iterations fit in a few tens of MB).

    Index it for :class:`IterationRecord` objects, or read the columns directly:
    ``values``, ``grad_norms``, ``step_sizes``, ``function_evals``, ``gradient_evals`` and
    ``points`` (a list of tuples, or None when points are not recorded).
    """

    def __init__(self, record_points: bool, dimension: int) -> None:
        self.record_points = record_points
        self.dimension = dimension
        self.values = array("d")
        self.grad_norms = array("d")
        self.step_sizes = array("d")
        self.function_evals = array("q")
        self.gradient_evals = array("q")
        self._flat_points = array("d")

    def append(
        self,
        point: Point,
        value: float,
        grad_norm: float,
        step_size: float,
        function_evals: int,
        gradient_evals: int,
    ) -> None:
        self.values.append(value)
        self.grad_norms.append(grad_norm)
        self.step_sizes.append(step_size)
        self.function_evals.append(function_evals)
        self.gradient_evals.append(gradient_evals)
        if self.record_points:
            self._flat_points.extend(_flat_floats(point))

    def __len__(self) -> int:
        return len(self.values)

    def _point(self, index: int) -> tuple[float, ...] | None:
        if not self.record_points:
            return None
        start = index * self.dimension
        return tuple(self._flat_points[start : start + self.dimension])

    @property
    def points(self) -> list[tuple[float, ...]] | None:
        if not self.record_points:
            return None
        return [self._point(i) for i in range(len(self))]  # type: ignore[misc]

    @overload
    def __getitem__(self, index: int) -> IterationRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[IterationRecord]: ...

    def __getitem__(self, index: int | slice) -> IterationRecord | list[IterationRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return IterationRecord(
            iteration=index,
            point=self._point(index),
            value=self.values[index],
            grad_norm=self.grad_norms[index],
            step_size=self.step_sizes[index],
            function_evals=self.function_evals[index],
            gradient_evals=self.gradient_evals[index],
        )

    def __iter__(self) -> Iterator[IterationRecord]:
        for i in range(len(self)):
            yield self[i]


@dataclass
class RunResult:
    """Outcome of one run: records, the final point and a summary."""

    method: str
    settings: dict[str, Any]
    records: IterationRecords
    x: Point
    value: float
    grad_norm: float
    iterations: int
    stop_reason: str
    function_evals: int
    gradient_evals: int
    wall_time_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_step_size(self) -> float:
        """The last accepted step size (NaN when no step was taken)."""
        return self.records.step_sizes[-1] if len(self.records) else math.nan

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (the final point as a flat list when it has few entries)."""
        point = _flat_floats(self.x) if _numel(self.x) <= _AUTO_RECORD_MAX_NUMEL else None
        return {
            "method": self.method,
            "settings": self.settings,
            "final_point": point,
            "final_value": self.value,
            "final_grad_norm": self.grad_norm,
            "final_step_size": self.final_step_size,
            "iterations": self.iterations,
            "stop_reason": self.stop_reason,
            "function_evals": self.function_evals,
            "gradient_evals": self.gradient_evals,
            "wall_time_s": self.wall_time_s,
            **self.extra,
        }


class _CountingObjective:
    """Counts evaluations: value = 1 function eval; value_and_grad = 1 function + 1 gradient."""

    __slots__ = ("function_evals", "gradient_evals", "objective")

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.function_evals = 0
        self.gradient_evals = 0

    def value(self, x: Point) -> float:
        self.function_evals += 1
        return self.objective.value(x).item()

    def value_and_grad(self, x: Point) -> tuple[float, Point]:
        self.function_evals += 1
        self.gradient_evals += 1
        value, grad = self.objective.value_and_grad(x)
        return value.item(), grad


# A step rule maps (x_n, f(x_n), g_n, ||g_n||, counter) to (x_{n+1}, accepted step size).
StepRule = Callable[[Point, float, Point, float, _CountingObjective], tuple[Point, float]]


def _run(
    method: str,
    settings: dict[str, Any],
    objective: Objective,
    x0: Point,
    rule: StepRule,
    *,
    grad_tol: float,
    max_iter: int,
    record_points: bool | None,
    callback: Callback | None,
) -> RunResult:
    if max_iter < 0:
        raise ValueError("max_iter must be >= 0")
    counter = _CountingObjective(objective)
    x = _copy_point(x0)
    dimension = _numel(x)
    if record_points is None:
        record_points = isinstance(x, Tensor) and dimension <= _AUTO_RECORD_MAX_NUMEL
    records = IterationRecords(record_points, dimension)
    settings = {**settings, "grad_tol": grad_tol, "max_iter": max_iter}
    started = time.perf_counter()
    iteration = 0
    while True:
        function_before, gradient_before = counter.function_evals, counter.gradient_evals
        value, grad = counter.value_and_grad(x)
        grad_norm = _norm(grad)
        if not (math.isfinite(value) and math.isfinite(grad_norm)):
            stop_reason = STOP_NON_FINITE
            break
        if grad_norm <= grad_tol:
            stop_reason = STOP_GRAD_TOL
            break
        if iteration >= max_iter:
            stop_reason = STOP_MAX_ITER
            break
        try:
            x_next, step = rule(x, value, grad, grad_norm, counter)
        except LineSearchError:
            stop_reason = STOP_LINE_SEARCH_FAILED
            break
        records.append(
            x,
            value,
            grad_norm,
            step,
            counter.function_evals - function_before,
            counter.gradient_evals - gradient_before,
        )
        if callback is not None:
            callback(iteration, records[iteration])
        x = x_next
        iteration += 1
    return RunResult(
        method=method,
        settings=settings,
        records=records,
        x=x,
        value=value,
        grad_norm=grad_norm,
        iterations=iteration,
        stop_reason=stop_reason,
        function_evals=counter.function_evals,
        gradient_evals=counter.gradient_evals,
        wall_time_s=time.perf_counter() - started,
    )


def _check_search_settings(alpha: float, beta: float, delta0: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    if not delta0 > 0.0:
        raise ValueError(f"delta0 must be > 0, got {delta0}")


class _GridSearch:
    """Armijo tests along x - sigma*v for sigma = delta0 * beta^k."""

    def __init__(self, alpha: float, beta: float, delta0: float, max_backtracks: int) -> None:
        self.alpha = alpha
        self.beta = beta
        self.delta0 = delta0
        self.max_backtracks = max_backtracks

    def step(self, exponent: int) -> float:
        return self.delta0 * self.beta**exponent

    def try_step(
        self,
        counter: _CountingObjective,
        x: Point,
        value: float,
        direction: Point,
        slope: float,
        exponent: int,
    ) -> Point | None:
        """The trial point when sigma = step(exponent) satisfies Armijo, else None."""
        sigma = self.step(exponent)
        trial = _add_scaled(x, -sigma, direction)
        if armijo_holds(counter.value(trial), value, sigma, slope, self.alpha):
            return trial
        return None

    def shrink_until_accepted(
        self,
        counter: _CountingObjective,
        x: Point,
        value: float,
        direction: Point,
        slope: float,
        exponent: int,
    ) -> tuple[Point, int]:
        """Largest accepted step at or below step(exponent): (trial point, exponent)."""
        for candidate in range(exponent, exponent + self.max_backtracks + 1):
            sigma = self.step(candidate)
            trial = _add_scaled(x, -sigma, direction)
            if armijo_holds(counter.value(trial), value, sigma, slope, self.alpha):
                return trial, candidate
            # Once x - sigma*v rounds to x, smaller steps cannot pass either: give up early.
            if candidate - exponent >= _CHECK_STALL_AFTER and _points_equal(trial, x):
                break
        raise LineSearchError(
            f"no step down to {sigma:.3e} satisfied Armijo (the decrease it asks for is below"
            " the rounding of f)"
        )


# --- Methods ---------------------------------------------------------------------------------


def standard_gd(
    objective: Objective,
    x0: Point,
    *,
    step_size: float,
    grad_tol: float = 1e-10,
    max_iter: int = 10**6,
    record_points: bool | None = None,
    callback: Callback | None = None,
) -> RunResult:
    """Standard GD with a constant step size: x_{n+1} = x_n - step_size * grad f(x_n)."""
    if not step_size > 0.0:
        raise ValueError(f"step_size must be > 0, got {step_size}")

    def rule(x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        return _add_scaled(x, -step_size, grad), step_size

    return _run(
        "standard_gd",
        {"step_size": step_size},
        objective,
        x0,
        rule,
        grad_tol=grad_tol,
        max_iter=max_iter,
        record_points=record_points,
        callback=callback,
    )


def backtracking_gd(
    objective: Objective,
    x0: Point,
    *,
    alpha: float = 0.5,
    beta: float = 0.7,
    delta0: float = 1.0,
    grad_tol: float = 1e-10,
    max_iter: int = 10**6,
    record_points: bool | None = None,
    max_backtracks: int = DEFAULT_MAX_BACKTRACKS,
    callback: Callback | None = None,
) -> RunResult:
    """Backtracking GD (Armijo's rule): the largest delta0*beta^k satisfying (A) with v = g."""
    _check_search_settings(alpha, beta, delta0)
    search = _GridSearch(alpha, beta, delta0, max_backtracks)

    def rule(x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        slope = _dot(grad, grad)
        trial, exponent = search.shrink_until_accepted(counter, x, value, grad, slope, 0)
        return trial, search.step(exponent)

    return _run(
        "backtracking_gd",
        {"alpha": alpha, "beta": beta, "delta0": delta0},
        objective,
        x0,
        rule,
        grad_tol=grad_tol,
        max_iter=max_iter,
        record_points=record_points,
        callback=callback,
    )


def check_direction(
    grad: Point, direction: Point, *, a1: float, a2: float, mu: float, grad_norm: float | None
) -> None:
    """Raise :class:`DirectionConditionError` unless ``direction`` satisfies condition (i)."""
    if grad_norm is None:
        grad_norm = _norm(grad)
    direction_norm = _norm(direction)
    slope = _dot(grad, direction)
    if not direction_condition_holds(grad_norm, direction_norm, slope, a1, a2, mu):
        raise DirectionConditionError(
            f"direction violates condition (i): ||g||={grad_norm:.3e}, ||v||={direction_norm:.3e},"
            f" <g,v>={slope:.3e} (need {a1}||g|| <= ||v|| <= {a2}||g||,"
            f" <g,v> >= {mu}||g|| ||v||)"
        )


def inexact_backtracking_gd(
    objective: Objective,
    x0: Point,
    direction: DirectionFn,
    *,
    a1: float,
    a2: float,
    mu: float,
    alpha: float = 0.5,
    beta: float = 0.7,
    delta0: float = 1.0,
    grad_tol: float = 1e-10,
    max_iter: int = 10**6,
    record_points: bool | None = None,
    max_backtracks: int = DEFAULT_MAX_BACKTRACKS,
    callback: Callback | None = None,
) -> RunResult:
    """Inexact Backtracking GD: x_{n+1} = x_n - delta_n v_n with a caller-supplied v_n.

    ``direction(x, g, n)`` returns v_n. It must satisfy condition (i),
    A1||g|| <= ||v_n|| <= A2||g|| and <g, v_n> >= mu ||g|| ||v_n||; a violating direction raises
    :class:`DirectionConditionError`. delta_n is the largest delta0*beta^k satisfying (A) with v_n.
    """
    _check_search_settings(alpha, beta, delta0)
    if not (0.0 < a1 <= a2 and 0.0 < mu <= 1.0):
        raise ValueError("need 0 < a1 <= a2 and 0 < mu <= 1")
    search = _GridSearch(alpha, beta, delta0, max_backtracks)
    iteration = 0

    def rule(x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        nonlocal iteration
        v = direction(x, grad, iteration)
        iteration += 1
        check_direction(grad, v, a1=a1, a2=a2, mu=mu, grad_norm=grad_norm)
        trial, exponent = search.shrink_until_accepted(counter, x, value, v, _dot(grad, v), 0)
        return trial, search.step(exponent)

    return _run(
        "inexact_backtracking_gd",
        {"alpha": alpha, "beta": beta, "delta0": delta0, "a1": a1, "a2": a2, "mu": mu},
        objective,
        x0,
        rule,
        grad_tol=grad_tol,
        max_iter=max_iter,
        record_points=record_points,
        callback=callback,
    )


def two_way_backtracking_gd(
    objective: Objective,
    x0: Point,
    *,
    alpha: float = 0.5,
    beta: float = 0.7,
    delta0: float = 1.0,
    grad_tol: float = 1e-10,
    max_iter: int = 10**6,
    record_points: bool | None = None,
    max_backtracks: int = DEFAULT_MAX_BACKTRACKS,
    callback: Callback | None = None,
) -> RunResult:
    """Two-way Backtracking GD: the search starts at the previous step size (delta_{-1} = delta0).

    If that step fails (A) it shrinks by beta until (A) holds; if it holds, it grows by 1/beta
    while the grown step is <= delta0 and still satisfies (A) (the re-check the authors' code
    does). Steps never exceed delta0.
    """
    _check_search_settings(alpha, beta, delta0)
    search = _GridSearch(alpha, beta, delta0, max_backtracks)
    previous_exponent = 0

    def rule(x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        nonlocal previous_exponent
        slope = _dot(grad, grad)
        exponent = previous_exponent
        trial = search.try_step(counter, x, value, grad, slope, exponent)
        if trial is None:
            trial, exponent = search.shrink_until_accepted(
                counter, x, value, grad, slope, exponent + 1
            )
        else:
            while exponent > 0:  # grow, never beyond delta0 = step(0)
                grown = search.try_step(counter, x, value, grad, slope, exponent - 1)
                if grown is None:
                    break
                trial, exponent = grown, exponent - 1
        previous_exponent = exponent
        return trial, search.step(exponent)

    return _run(
        "two_way_backtracking_gd",
        {"alpha": alpha, "beta": beta, "delta0": delta0},
        objective,
        x0,
        rule,
        grad_tol=grad_tol,
        max_iter=max_iter,
        record_points=record_points,
        callback=callback,
    )


def paper_h(delta0: float = 1.0) -> Callable[[float], float]:
    """The paper's bound for Unbounded Backtracking GD.

    h(t) = delta0 if t > 1, else delta0/sqrt(t).
    """

    def h(grad_norm: float) -> float:
        return delta0 if grad_norm > 1.0 else delta0 / math.sqrt(grad_norm)

    return h


def unbounded_backtracking_gd(
    objective: Objective,
    x0: Point,
    *,
    h: Callable[[float], float] | None = None,
    alpha: float = 0.5,
    beta: float = 0.7,
    delta0: float = 1.0,
    grad_tol: float = 1e-10,
    max_iter: int = 10**6,
    record_points: bool | None = None,
    max_backtracks: int = DEFAULT_MAX_BACKTRACKS,
    callback: Callback | None = None,
) -> RunResult:
    """Unbounded Backtracking GD: steps may exceed delta0 but never h(||g||).

    Start at delta0 (lowered along the grid first if delta0 > h(||g||), which cannot happen with
    the paper's h); if (A) fails shrink by beta until it holds; if it holds grow by 1/beta while
    the grown step is <= h(||g||) and satisfies (A). ``h`` defaults to :func:`paper_h`.
    """
    _check_search_settings(alpha, beta, delta0)
    bound = h if h is not None else paper_h(delta0)
    search = _GridSearch(alpha, beta, delta0, max_backtracks)

    def rule(x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        cap = bound(grad_norm)
        if not cap > 0.0:
            raise ValueError(f"h must be positive, got h({grad_norm}) = {cap}")
        slope = _dot(grad, grad)
        exponent = 0
        while search.step(exponent) > cap:  # no evaluations: only the grid position moves
            exponent += 1
        trial = search.try_step(counter, x, value, grad, slope, exponent)
        if trial is None:
            trial, exponent = search.shrink_until_accepted(
                counter, x, value, grad, slope, exponent + 1
            )
        else:
            for _ in range(max_backtracks):
                if search.step(exponent - 1) > cap:
                    break
                grown = search.try_step(counter, x, value, grad, slope, exponent - 1)
                if grown is None:
                    break
                trial, exponent = grown, exponent - 1
        return trial, search.step(exponent)

    settings = {"alpha": alpha, "beta": beta, "delta0": delta0}
    settings["h"] = "paper: delta0 if t > 1 else delta0/sqrt(t)" if h is None else repr(h)
    return _run(
        "unbounded_backtracking_gd",
        settings,
        objective,
        x0,
        rule,
        grad_tol=grad_tol,
        max_iter=max_iter,
        record_points=record_points,
        callback=callback,
    )


def _backtracking_momentum_like(
    nesterov: bool,
    objective: Objective,
    x0: Point,
    *,
    gamma0: float,
    a1: float,
    a2: float,
    mu: float,
    alpha: float,
    beta: float,
    delta0: float,
    v0: Point | None,
    grad_tol: float,
    max_iter: int,
    record_points: bool | None,
    max_backtracks: int,
    callback: Callback | None,
) -> RunResult:
    _check_search_settings(alpha, beta, delta0)
    if not (0.0 < a1 < 1.0 < a2 and 0.0 < mu <= 1.0 and gamma0 >= 0.0):
        raise ValueError("need 0 < a1 < 1 < a2, 0 < mu <= 1 and gamma0 >= 0")
    search = _GridSearch(alpha, beta, 1.0, max_backtracks)  # sigma = beta^k, starting at 1
    # v_{n-1}; None stands for the zero vector (saves the NAG gradient at y_n = x_n).
    velocity: Point | None = _copy_point(v0) if v0 is not None else None
    gammas: list[float] = []

    def rule(x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        nonlocal velocity
        gamma_exponent = 0
        while True:
            gamma_prime = gamma0 * beta**gamma_exponent
            if gamma_exponent > max_backtracks:
                gamma_prime = 0.0  # d = g satisfies (i) because a1 < 1 < a2 and mu <= 1
            if velocity is None or gamma_prime == 0.0:
                direction = grad
            else:
                grad_at_y = grad
                if nesterov:  # y_n = x_n - gamma' v_{n-1} moves with gamma'
                    _, grad_at_y = counter.value_and_grad(_add_scaled(x, -gamma_prime, velocity))
                direction = _add_scaled(grad_at_y, gamma_prime / delta0, velocity)
            slope = _dot(grad, direction)
            if direction_condition_holds(grad_norm, _norm(direction), slope, a1, a2, mu):
                break
            gamma_exponent += 1
        # Armijo along d with steps sigma*delta' (delta' = delta0), sigma = beta^k from 1.
        exponent = 0
        while True:
            step = search.step(exponent) * delta0
            trial = _add_scaled(x, -step, direction)
            if armijo_holds(counter.value(trial), value, step, slope, alpha):
                break
            exponent += 1
            stalled = exponent >= _CHECK_STALL_AFTER and _points_equal(trial, x)
            if stalled or exponent > max_backtracks:
                raise LineSearchError("no step satisfied Armijo along the momentum direction")
        gammas.append(search.step(exponent) * gamma_prime)  # gamma_n = sigma * gamma'
        velocity = _scaled(direction, step)  # v_n = sigma * delta' * d
        return trial, step

    result = _run(
        "backtracking_nag" if nesterov else "backtracking_momentum",
        {
            "alpha": alpha,
            "beta": beta,
            "delta0": delta0,
            "gamma0": gamma0,
            "a1": a1,
            "a2": a2,
            "mu": mu,
        },
        objective,
        x0,
        rule,
        grad_tol=grad_tol,
        max_iter=max_iter,
        record_points=record_points,
        callback=callback,
    )
    result.extra["momentum_coefficients"] = gammas
    return result


def backtracking_momentum(
    objective: Objective,
    x0: Point,
    *,
    gamma0: float = 0.9,
    a1: float = 0.1,
    a2: float = 10.0,
    mu: float = 0.1,
    alpha: float = 0.5,
    beta: float = 0.7,
    delta0: float = 1.0,
    v0: Point | None = None,
    grad_tol: float = 1e-10,
    max_iter: int = 10**6,
    record_points: bool | None = None,
    max_backtracks: int = DEFAULT_MAX_BACKTRACKS,
    callback: Callback | None = None,
) -> RunResult:
    """Backtracking Momentum: v_n = gamma_n v_{n-1} + delta_n grad f(x_n), x_{n+1} = x_n - v_n.

    Per step: gamma' = gamma0, delta' = delta0, d = (gamma'/delta') v_{n-1} + g; shrink
    gamma' by beta until d satisfies condition (i) against g; then shrink sigma from 1 by beta
    until (A) holds at x_n - sigma*delta'*d; gamma_n = sigma*gamma', delta_n = sigma*delta'.
    The record's step size is delta_n; ``result.extra["momentum_coefficients"]`` holds gamma_n.
    v_{-1} = ``v0`` (zero by default). With gamma0 = 0 this is Backtracking GD.
    """
    return _backtracking_momentum_like(
        False,
        objective,
        x0,
        gamma0=gamma0,
        a1=a1,
        a2=a2,
        mu=mu,
        alpha=alpha,
        beta=beta,
        delta0=delta0,
        v0=v0,
        grad_tol=grad_tol,
        max_iter=max_iter,
        record_points=record_points,
        max_backtracks=max_backtracks,
        callback=callback,
    )


def backtracking_nag(
    objective: Objective,
    x0: Point,
    *,
    gamma0: float = 0.9,
    a1: float = 0.1,
    a2: float = 10.0,
    mu: float = 0.1,
    alpha: float = 0.5,
    beta: float = 0.7,
    delta0: float = 1.0,
    v0: Point | None = None,
    grad_tol: float = 1e-10,
    max_iter: int = 10**6,
    record_points: bool | None = None,
    max_backtracks: int = DEFAULT_MAX_BACKTRACKS,
    callback: Callback | None = None,
) -> RunResult:
    """Backtracking NAG: :func:`backtracking_momentum` with d built from grad f(y_n).

    y_n = x_n - gamma' v_{n-1}.
    Each trial gamma' moves y_n, so its gradient is recomputed (one ``value_and_grad`` each,
    skipped when gamma' v_{n-1} = 0, where y_n = x_n). Condition (i) and (A) use g = grad f(x_n).
    """
    return _backtracking_momentum_like(
        True,
        objective,
        x0,
        gamma0=gamma0,
        a1=a1,
        a2=a2,
        mu=mu,
        alpha=alpha,
        beta=beta,
        delta0=delta0,
        v0=v0,
        grad_tol=grad_tol,
        max_iter=max_iter,
        record_points=record_points,
        max_backtracks=max_backtracks,
        callback=callback,
    )
