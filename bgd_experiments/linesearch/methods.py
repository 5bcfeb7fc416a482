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
from typing import Any, Protocol, TypedDict, Unpack, overload

import torch
from torch import Tensor

from .armijo import armijo_holds, direction_condition_holds
from .objectives import Objective, Point, objective_from_function

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


# --- The driver and its settings --------------------------------------------------------------


class StepRule(Protocol):
    """One method's step: maps (x_n, f(x_n), g_n, ||g_n||, counter) to (x_{n+1}, step size).

    A rule object lives for one run (it may carry state from step to step: the previous
    step size of Two-way Backtracking, the momentum of Backtracking Momentum/NAG).
    """

    name: str

    def settings(self) -> dict[str, Any]: ...

    def __call__(
        self, x: Point, value: float, grad: Point, grad_norm: float, counter: _CountingObjective
    ) -> tuple[Point, float]: ...


@dataclass(frozen=True)
class Stopping:
    """When a run stops, and what it records and reports along the way."""

    grad_tol: float = 1e-10
    max_iter: int = 10**6
    record_points: bool | None = None  # None: record x_n for small points only
    callback: Callback | None = None

    def __post_init__(self) -> None:
        if self.max_iter < 0:
            raise ValueError("max_iter must be >= 0")


@dataclass(frozen=True)
class ArmijoGrid:
    """Armijo's condition (A) with constant ``alpha`` along x - sigma*v, for sigma on the grid
    delta0 * beta^k, k counted from 0 (at most ``max_backtracks`` shrinks per search)."""

    alpha: float = 0.5
    beta: float = 0.7
    delta0: float = 1.0
    max_backtracks: int = DEFAULT_MAX_BACKTRACKS

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 < self.beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {self.beta}")
        if not self.delta0 > 0.0:
            raise ValueError(f"delta0 must be > 0, got {self.delta0}")

    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "delta0": self.delta0}

    def step(self, exponent: int) -> float:
        return self.delta0 * self.beta**exponent

    def test(self, line: _Line, exponent: int) -> tuple[Point, bool]:
        """The trial point at sigma = step(exponent), and whether it satisfies (A)."""
        sigma = self.step(exponent)
        trial = _add_scaled(line.x, -sigma, line.direction)
        return trial, armijo_holds(
            line.counter.value(trial), line.value, sigma, line.slope, self.alpha
        )

    def try_step(self, line: _Line, exponent: int) -> Point | None:
        """The trial point when sigma = step(exponent) satisfies Armijo, else None."""
        trial, accepted = self.test(line, exponent)
        return trial if accepted else None

    def shrink_until_accepted(self, line: _Line, exponent: int) -> tuple[Point, int]:
        """Largest accepted step at or below step(exponent): (trial point, exponent)."""
        for candidate in range(exponent, exponent + self.max_backtracks + 1):
            trial, accepted = self.test(line, candidate)
            if accepted:
                return trial, candidate
            # Once x - sigma*v rounds to x, smaller steps cannot pass either: give up early.
            if candidate - exponent >= _CHECK_STALL_AFTER and _points_equal(trial, line.x):
                break
        raise LineSearchError(
            f"no step down to {self.step(candidate):.3e} satisfied Armijo (the decrease it asks"
            " for is below the rounding of f)"
        )

    def shrink_or_grow(
        self,
        line: _Line,
        exponent: int,
        *,
        may_grow: Callable[[int], bool],
        max_grows: int | None = None,
    ) -> tuple[Point, int]:
        """The two-way search from step(exponent): shrink until (A) holds if it fails there,
        else grow by 1/beta while ``may_grow(exponent)`` and the grown step satisfies (A)."""
        trial = self.try_step(line, exponent)
        if trial is None:
            return self.shrink_until_accepted(line, exponent + 1)
        grows = 0
        while may_grow(exponent) and (max_grows is None or grows < max_grows):
            grown = self.try_step(line, exponent - 1)
            if grown is None:
                break
            trial, exponent, grows = grown, exponent - 1, grows + 1
        return trial, exponent


@dataclass(frozen=True)
class _Line:
    """The line x - sigma*v that one search walks along: f(x), and the slope <g, v> of (A)."""

    counter: _CountingObjective
    x: Point
    value: float
    direction: Point
    slope: float


class Options(TypedDict, total=False):
    """The keywords every search method shares: its :class:`ArmijoGrid` and its
    :class:`Stopping` (``standard_gd`` takes only the latter)."""

    alpha: float
    beta: float
    delta0: float
    max_backtracks: int
    grad_tol: float
    max_iter: int
    record_points: bool | None
    callback: Callback | None


_GRID_KEYS = frozenset(ArmijoGrid.__dataclass_fields__)


def _split(options: Options) -> tuple[ArmijoGrid, Stopping]:
    grid = {key: value for key, value in options.items() if key in _GRID_KEYS}
    stop = {key: value for key, value in options.items() if key not in _GRID_KEYS}
    return ArmijoGrid(**grid), Stopping(**stop)


def as_point(x0: Any) -> Point:
    """A tensor (or list of tensors) as it is; a numpy array, number sequence or scalar as a
    float tensor (float64 unless it already is a floating array)."""
    if isinstance(x0, Tensor):
        return x0
    if isinstance(x0, list | tuple) and x0 and all(isinstance(t, Tensor) for t in x0):
        return list(x0)
    try:
        x = torch.as_tensor(x0)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"x0 must be a tensor, a list of tensors, a numpy array or numbers, got "
            f"{type(x0).__name__}"
        ) from error
    return x if x.is_floating_point() else x.to(torch.float64)


def as_objective(objective: Any) -> Objective:
    """An :class:`Objective` as it is; a plain callable f(x) -> scalar tensor wrapped by
    :func:`objective_from_function` (gradients by autograd)."""
    if hasattr(objective, "value_and_grad") and hasattr(objective, "value"):
        return objective
    if callable(objective):
        return objective_from_function(objective, getattr(objective, "__name__", "function"))
    raise TypeError(
        f"objective must be an Objective or a callable f(x) -> scalar tensor, got "
        f"{type(objective).__name__}; see objective_from_function / objective_from_analytic"
    )


def minimize(objective: Objective, x0: Point, rule: StepRule, stop: Stopping) -> RunResult:
    """Run ``rule`` from ``x0`` until ``stop`` says so: the one driver of every method.

    ``objective``: an :class:`Objective` or a plain torch function f(x) -> scalar tensor;
    ``x0``: a tensor, a list of tensors, a numpy array or a list of numbers.
    """
    counter = _CountingObjective(as_objective(objective))
    x = _copy_point(as_point(x0))
    dimension = _numel(x)
    record_points = stop.record_points
    if record_points is None:
        record_points = isinstance(x, Tensor) and dimension <= _AUTO_RECORD_MAX_NUMEL
    records = IterationRecords(record_points, dimension)
    settings = {**rule.settings(), "grad_tol": stop.grad_tol, "max_iter": stop.max_iter}
    started = time.perf_counter()
    iteration = 0
    while True:
        function_before, gradient_before = counter.function_evals, counter.gradient_evals
        value, grad = counter.value_and_grad(x)
        grad_norm = _norm(grad)
        if not (math.isfinite(value) and math.isfinite(grad_norm)):
            stop_reason = STOP_NON_FINITE
            break
        if grad_norm <= stop.grad_tol:
            stop_reason = STOP_GRAD_TOL
            break
        if iteration >= stop.max_iter:
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
        if stop.callback is not None:
            stop.callback(iteration, records[iteration])
        x = x_next
        iteration += 1
    result = RunResult(
        method=rule.name,
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
    extra = getattr(rule, "extra", None)
    if callable(extra):
        result.extra.update(extra())
    return result


# --- Step rules --------------------------------------------------------------------------------


class ConstantStep:
    """Standard GD: x_{n+1} = x_n - step_size * g_n."""

    name = "standard_gd"

    def __init__(self, step_size: float) -> None:
        if not step_size > 0.0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        self.step_size = step_size

    def settings(self) -> dict[str, Any]:
        return {"step_size": self.step_size}

    def __call__(self, x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        return _add_scaled(x, -self.step_size, grad), self.step_size


class Backtracking:
    """Armijo's rule: the largest delta0*beta^k satisfying (A) with v = g."""

    name = "backtracking_gd"

    def __init__(self, grid: ArmijoGrid) -> None:
        self.grid = grid

    def settings(self) -> dict[str, Any]:
        return self.grid.settings()

    def __call__(self, x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        line = _Line(counter, x, value, grad, _dot(grad, grad))
        trial, exponent = self.grid.shrink_until_accepted(line, 0)
        return trial, self.grid.step(exponent)


class InexactBacktracking:
    """Armijo's rule along a caller's direction v_n that satisfies condition (i)."""

    name = "inexact_backtracking_gd"

    def __init__(
        self, grid: ArmijoGrid, direction: DirectionFn, *, a1: float, a2: float, mu: float
    ) -> None:
        if not (0.0 < a1 <= a2 and 0.0 < mu <= 1.0):
            raise ValueError("need 0 < a1 <= a2 and 0 < mu <= 1")
        self.grid, self.direction = grid, direction
        self.a1, self.a2, self.mu = a1, a2, mu
        self.iteration = 0

    def settings(self) -> dict[str, Any]:
        return {**self.grid.settings(), "a1": self.a1, "a2": self.a2, "mu": self.mu}

    def __call__(self, x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        v = self.direction(x, grad, self.iteration)
        self.iteration += 1
        check_direction(grad, v, a1=self.a1, a2=self.a2, mu=self.mu, grad_norm=grad_norm)
        trial, exponent = self.grid.shrink_until_accepted(
            _Line(counter, x, value, v, _dot(grad, v)), 0
        )
        return trial, self.grid.step(exponent)


class TwoWay:
    """Two-way Backtracking: each search starts at the previous step size, never above delta0."""

    name = "two_way_backtracking_gd"

    def __init__(self, grid: ArmijoGrid) -> None:
        self.grid = grid
        self.previous_exponent = 0  # delta_{-1} = delta0

    def settings(self) -> dict[str, Any]:
        return self.grid.settings()

    def __call__(self, x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        trial, exponent = self.grid.shrink_or_grow(
            _Line(counter, x, value, grad, _dot(grad, grad)),
            self.previous_exponent,
            may_grow=lambda exponent: exponent > 0,  # never beyond delta0 = step(0)
        )
        self.previous_exponent = exponent
        return trial, self.grid.step(exponent)


class Unbounded:
    """Unbounded Backtracking: from delta0, steps may grow beyond it up to h(||g||)."""

    name = "unbounded_backtracking_gd"

    def __init__(self, grid: ArmijoGrid, h: Callable[[float], float] | None = None) -> None:
        self.grid = grid
        self.h = h
        self.bound = h if h is not None else paper_h(grid.delta0)

    def settings(self) -> dict[str, Any]:
        described = "paper: delta0 if t > 1 else delta0/sqrt(t)" if self.h is None else repr(self.h)
        return {**self.grid.settings(), "h": described}

    def __call__(self, x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        cap = self.bound(grad_norm)
        if not cap > 0.0:
            raise ValueError(f"h must be positive, got h({grad_norm}) = {cap}")
        grid = self.grid
        exponent = 0
        while grid.step(exponent) > cap:  # no evaluations: only the grid position moves
            exponent += 1
        trial, exponent = grid.shrink_or_grow(
            _Line(counter, x, value, grad, _dot(grad, grad)),
            exponent,
            may_grow=lambda exponent: grid.step(exponent - 1) <= cap,
            max_grows=grid.max_backtracks,
        )
        return trial, grid.step(exponent)


class MomentumBacktracking:
    """Backtracking Momentum (``nesterov=False``) and Backtracking NAG (``nesterov=True``).

    Per step: gamma' = gamma0, delta' = delta0, d = (gamma'/delta') v_{n-1} + g (g taken at
    y_n = x_n - gamma' v_{n-1} for NAG); gamma' shrinks by beta until d satisfies condition
    (i) against g = grad f(x_n); then sigma shrinks from 1 by beta until (A) holds at
    x_n - sigma*delta'*d; gamma_n = sigma*gamma', delta_n = sigma*delta', v_n = delta_n d.
    """

    def __init__(
        self,
        grid: ArmijoGrid,
        *,
        nesterov: bool,
        gamma0: float,
        a1: float,
        a2: float,
        mu: float,
        v0: Point | None,
    ) -> None:
        if not (0.0 < a1 < 1.0 < a2 and 0.0 < mu <= 1.0 and gamma0 >= 0.0):
            raise ValueError("need 0 < a1 < 1 < a2, 0 < mu <= 1 and gamma0 >= 0")
        self.name = "backtracking_nag" if nesterov else "backtracking_momentum"
        self.grid, self.nesterov = grid, nesterov
        self.gamma0, self.a1, self.a2, self.mu = gamma0, a1, a2, mu
        # v_{n-1}; None stands for the zero vector (saves the NAG gradient at y_n = x_n).
        self.velocity: Point | None = _copy_point(v0) if v0 is not None else None
        self.gammas: list[float] = []

    def settings(self) -> dict[str, Any]:
        return {
            **self.grid.settings(),
            "gamma0": self.gamma0,
            "a1": self.a1,
            "a2": self.a2,
            "mu": self.mu,
        }

    def extra(self) -> dict[str, Any]:
        return {"momentum_coefficients": self.gammas}

    def _direction(
        self, x: Point, grad: Point, grad_norm: float, counter: _CountingObjective
    ) -> tuple[Point, float, float]:
        """(d, <g, d>, gamma') for the largest gamma' = gamma0 beta^j for which d satisfies
        condition (i); gamma' = 0 (d = g, which satisfies it) after max_backtracks shrinks."""
        beta, max_backtracks = self.grid.beta, self.grid.max_backtracks
        gamma_exponent = 0
        while True:
            gamma_prime = self.gamma0 * beta**gamma_exponent
            if gamma_exponent > max_backtracks:
                gamma_prime = 0.0  # d = g satisfies (i) because a1 < 1 < a2 and mu <= 1
            if self.velocity is None or gamma_prime == 0.0:
                direction = grad
            else:
                grad_at_y = grad
                if self.nesterov:  # y_n = x_n - gamma' v_{n-1} moves with gamma'
                    y = _add_scaled(x, -gamma_prime, self.velocity)
                    _, grad_at_y = counter.value_and_grad(y)
                direction = _add_scaled(grad_at_y, gamma_prime / self.grid.delta0, self.velocity)
            slope = _dot(grad, direction)
            norm = _norm(direction)
            if direction_condition_holds(grad_norm, norm, slope, self.a1, self.a2, self.mu):
                return direction, slope, gamma_prime
            gamma_exponent += 1

    def __call__(self, x: Point, value: float, grad: Point, grad_norm: float, counter: Any):
        direction, slope, gamma_prime = self._direction(x, grad, grad_norm, counter)
        # Armijo along d with steps sigma*delta' (delta' = delta0), sigma = beta^k from 1.
        line = _Line(counter, x, value, direction, slope)
        trial, exponent = self.grid.shrink_until_accepted(line, 0)
        step = self.grid.step(exponent)
        self.gammas.append(self.grid.beta**exponent * gamma_prime)  # gamma_n = sigma * gamma'
        self.velocity = _scaled(direction, step)  # v_n = sigma * delta' * d
        return trial, step


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


def paper_h(delta0: float = 1.0) -> Callable[[float], float]:
    """The paper's bound for Unbounded Backtracking GD.

    h(t) = delta0 if t > 1, else delta0/sqrt(t).
    """

    def h(grad_norm: float) -> float:
        return delta0 if grad_norm > 1.0 else delta0 / math.sqrt(grad_norm)

    return h


# --- Methods: a step rule and its settings, run by ``minimize`` --------------------------------


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
    rule = ConstantStep(step_size)
    return minimize(objective, x0, rule, Stopping(grad_tol, max_iter, record_points, callback))


def backtracking_gd(objective: Objective, x0: Point, **options: Unpack[Options]) -> RunResult:
    """Backtracking GD (Armijo's rule): the largest delta0*beta^k satisfying (A) with v = g.

    ``options``: ``alpha`` (0.5), ``beta`` (0.7), ``delta0`` (1.0), ``max_backtracks``
    (:class:`ArmijoGrid`), ``grad_tol``, ``max_iter``, ``record_points``, ``callback``
    (:class:`Stopping`); the same for every method below.
    """
    grid, stop = _split(options)
    return minimize(objective, x0, Backtracking(grid), stop)


def inexact_backtracking_gd(
    objective: Objective,
    x0: Point,
    direction: DirectionFn,
    *,
    a1: float,
    a2: float,
    mu: float,
    **options: Unpack[Options],
) -> RunResult:
    """Inexact Backtracking GD: x_{n+1} = x_n - delta_n v_n with a caller-supplied v_n.

    ``direction(x, g, n)`` returns v_n. It must satisfy condition (i),
    A1||g|| <= ||v_n|| <= A2||g|| and <g, v_n> >= mu ||g|| ||v_n||; a violating direction raises
    :class:`DirectionConditionError`. delta_n is the largest delta0*beta^k satisfying (A) with v_n.
    """
    grid, stop = _split(options)
    return minimize(objective, x0, InexactBacktracking(grid, direction, a1=a1, a2=a2, mu=mu), stop)


def two_way_backtracking_gd(
    objective: Objective, x0: Point, **options: Unpack[Options]
) -> RunResult:
    """Two-way Backtracking GD: the search starts at the previous step size (delta_{-1} = delta0).

    If that step fails (A) it shrinks by beta until (A) holds; if it holds, it grows by 1/beta
    while the grown step is <= delta0 and still satisfies (A) (the re-check the authors' code
    does). Steps never exceed delta0.
    """
    grid, stop = _split(options)
    return minimize(objective, x0, TwoWay(grid), stop)


def unbounded_backtracking_gd(
    objective: Objective,
    x0: Point,
    *,
    h: Callable[[float], float] | None = None,
    **options: Unpack[Options],
) -> RunResult:
    """Unbounded Backtracking GD: steps may exceed delta0 but never h(||g||).

    Start at delta0 (lowered along the grid first if delta0 > h(||g||), which cannot happen with
    the paper's h); if (A) fails shrink by beta until it holds; if it holds grow by 1/beta while
    the grown step is <= h(||g||) and satisfies (A). ``h`` defaults to :func:`paper_h`.
    """
    grid, stop = _split(options)
    return minimize(objective, x0, Unbounded(grid, h), stop)


class MomentumOptions(Options, total=False):
    """:class:`Options` and the momentum settings (defaults: gamma0 0.9, a1 0.1, a2 10,
    mu 0.1, v0 zero)."""

    gamma0: float
    a1: float
    a2: float
    mu: float
    v0: Point | None


_MOMENTUM_DEFAULTS: dict[str, Any] = {"gamma0": 0.9, "a1": 0.1, "a2": 10.0, "mu": 0.1, "v0": None}


def _momentum_run(
    nesterov: bool, objective: Objective, x0: Point, options: MomentumOptions
) -> RunResult:
    momentum = {key: options.pop(key, default) for key, default in _MOMENTUM_DEFAULTS.items()}
    grid, stop = _split(options)
    return minimize(objective, x0, MomentumBacktracking(grid, nesterov=nesterov, **momentum), stop)


def backtracking_momentum(
    objective: Objective, x0: Point, **options: Unpack[MomentumOptions]
) -> RunResult:
    """Backtracking Momentum: v_n = gamma_n v_{n-1} + delta_n grad f(x_n), x_{n+1} = x_n - v_n.

    See :class:`MomentumBacktracking`. The record's step size is delta_n;
    ``result.extra["momentum_coefficients"]`` holds gamma_n. v_{-1} = ``v0`` (zero by
    default). With gamma0 = 0 this is Backtracking GD.
    """
    return _momentum_run(False, objective, x0, options)


def backtracking_nag(
    objective: Objective, x0: Point, **options: Unpack[MomentumOptions]
) -> RunResult:
    """Backtracking NAG: :func:`backtracking_momentum` with d built from grad f(y_n).

    y_n = x_n - gamma' v_{n-1}.
    Each trial gamma' moves y_n, so its gradient is recomputed (one ``value_and_grad`` each,
    skipped when gamma' v_{n-1} = 0, where y_n = x_n). Condition (i) and (A) use g = grad f(x_n).
    """
    return _momentum_run(True, objective, x0, options)
