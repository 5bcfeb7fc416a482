"""Objectives for the line-search methods: the interface, builders, and the paper's test functions.

An objective is anything with ``value(x)`` and ``value_and_grad(x)`` where ``x`` is a point: a
single tensor (a point of R^m, any shape) or a list of tensors (the parameters of a network).
Values are 0-d tensors in the dtype/device of ``x``; gradients have the structure of ``x``.

Evaluation-count convention (used by every method in :mod:`.methods`): one ``value`` call is one
function evaluation; one ``value_and_grad`` call is one function evaluation plus one gradient
evaluation (a forward plus a backward pass for a network).

The analytic test functions accept ``x`` of shape ``(..., 2)`` (a batch of points, e.g. a grid
for a contour plot); their value has shape ``(...)`` and their gradient shape ``(..., 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

Point = Tensor | list[Tensor]


@runtime_checkable
class Objective(Protocol):
    """A differentiable function of a point (a tensor, or a list of tensors)."""

    def value(self, x: Point) -> Tensor:
        """f(x) as a 0-d tensor (no autograd graph)."""
        ...

    def value_and_grad(self, x: Point) -> tuple[Tensor, Point]:
        """(f(x), grad f(x)); the gradient has the structure of ``x``."""
        ...


@dataclass(frozen=True)
class AnalyticObjective:
    """An objective given by closed-form value and value-and-gradient functions of a tensor."""

    name: str
    value_fn: Callable[[Tensor], Tensor]
    value_and_grad_fn: Callable[[Tensor], tuple[Tensor, Tensor]]

    def value(self, x: Tensor) -> Tensor:
        return self.value_fn(x)

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.value_and_grad_fn(x)


class AutogradObjective:
    """An objective whose gradient comes from autograd through a differentiable torch function.

    ``fn`` maps a point (a tensor, or a list of tensors) to a scalar tensor.
    """

    def __init__(self, fn: Callable[[Point], Tensor], name: str = "autograd") -> None:
        self.fn = fn
        self.name = name

    def value(self, x: Point) -> Tensor:
        with torch.no_grad():
            return self.fn(x).detach()

    def value_and_grad(self, x: Point) -> tuple[Tensor, Point]:
        with torch.enable_grad():
            if isinstance(x, Tensor):
                leaf = x.detach().requires_grad_(True)
                value = self.fn(leaf)
                (grad,) = torch.autograd.grad(value, leaf)
                return value.detach(), grad
            leaves = [t.detach().requires_grad_(True) for t in x]
            value = self.fn(leaves)
            grads = torch.autograd.grad(value, leaves)
            return value.detach(), list(grads)


def objective_from_function(fn: Callable[[Point], Tensor], name: str = "autograd") -> Objective:
    """Objective from a differentiable torch function; gradients by autograd."""
    return AutogradObjective(fn, name)


def objective_from_analytic(
    value_fn: Callable[[Tensor], Tensor],
    grad_fn: Callable[[Tensor], Tensor],
    name: str = "analytic",
) -> AnalyticObjective:
    """Objective from a closed-form pair ``(f, grad f)`` of tensor functions."""

    def value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        return value_fn(x), grad_fn(x)

    return AnalyticObjective(name, value_fn, value_and_grad)


class ModelObjective:
    """Full-batch loss of a network as a function of its trainable parameters.

    The point is a list of tensors, one per trainable parameter (in ``model.parameters()``
    order). Evaluations go through :func:`torch.func.functional_call`, so the model's own
    parameters are never modified by a line search; :meth:`load_into_model` copies a point in.

    BatchNorm: with ``batchnorm_mode="train"`` (the paper's setting: the whole set is one batch)
    the loss uses batch statistics, and the running statistics are left exactly as they were,
    because each evaluation runs on throw-away copies of the buffers. ``"eval"`` uses the
    running statistics instead. Dropout is always switched off (a line search needs a
    deterministic loss). The constructor sets these modes on ``model``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        inputs: Tensor,
        targets: Tensor,
        *,
        batchnorm_mode: str = "train",
    ) -> None:
        if batchnorm_mode not in ("train", "eval"):
            raise ValueError(f"batchnorm_mode must be 'train' or 'eval', got {batchnorm_mode!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.inputs = inputs
        self.targets = targets
        self.batchnorm_mode = batchnorm_mode
        model.train(batchnorm_mode == "train")
        for module in model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.eval()
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self._frozen = {
            name: p.detach() for name, p in model.named_parameters() if not p.requires_grad
        }
        self._buffers = {name: b.detach() for name, b in model.named_buffers()}

    def initial_point(self) -> list[Tensor]:
        """A detached copy of the model's current trainable parameters."""
        params = dict(self.model.named_parameters())
        return [params[name].detach().clone() for name in self.names]

    def load_into_model(self, x: Sequence[Tensor]) -> None:
        """Copy a point into the model's trainable parameters."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in zip(self.names, x, strict=True):
                params[name].copy_(tensor)

    def _loss(self, x: Sequence[Tensor]) -> Tensor:
        state: dict[str, Tensor] = dict(zip(self.names, x, strict=True))
        state.update(self._frozen)
        # Train-mode BatchNorm updates running stats in place: give it copies to scribble on.
        copy_buffers = self.batchnorm_mode == "train"
        state.update({n: b.clone() if copy_buffers else b for n, b in self._buffers.items()})
        outputs = torch.func.functional_call(self.model, state, (self.inputs,))
        return self.loss_fn(outputs, self.targets)

    def value(self, x: Sequence[Tensor]) -> Tensor:
        with torch.no_grad():
            return self._loss(x).detach()

    def value_and_grad(self, x: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in x]
            loss = self._loss(leaves)
            grads = torch.autograd.grad(loss, leaves)
        return loss.detach(), list(grads)


def objective_from_model(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    batchnorm_mode: str = "train",
) -> ModelObjective:
    """Full-batch ``loss_fn(model(inputs), targets)`` as an objective of the parameter list.

    Start a method from ``objective.initial_point()``. See :class:`ModelObjective`.
    """
    return ModelObjective(model, loss_fn, inputs, targets, batchnorm_mode=batchnorm_mode)


# --- The paper's test functions --------------------------------------------------------------


def quartic(x: Tensor) -> Tensor:
    """f(x, y) = x^4 + y^4 (Example 3.7; degenerate minimum at 0)."""
    squares = x * x
    return (squares * squares).sum(-1)


def quartic_value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
    squares = x * x
    cubes = squares * x
    return (cubes * x).sum(-1), 4.0 * cubes


def _safe_reciprocal(x: Tensor) -> tuple[Tensor, Tensor]:
    # 1/x overflows for |x| below the smallest normal number; there x^3 sin(1/x) and its
    # derivative are far below rounding anyway, so we use the limit value 0 (safe mask).
    negligible = x.abs() < torch.finfo(x.dtype).tiny
    return torch.where(negligible, 1.0, x).reciprocal(), negligible


def cubic_sine(x: Tensor) -> Tensor:
    """f(x, y) = x^3 sin(1/x) + y^3 sin(1/y) (Example 3.6); the x = 0 term is its limit 0."""
    inverse, negligible = _safe_reciprocal(x)
    terms = x * x * x * torch.sin(inverse)
    return torch.where(negligible, 0.0, terms).sum(-1)


def cubic_sine_value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
    inverse, negligible = _safe_reciprocal(x)
    sine, cosine = torch.sin(inverse), torch.cos(inverse)
    squares = x * x
    value = torch.where(negligible, 0.0, squares * x * sine).sum(-1)
    # d/dx x^3 sin(1/x) = 3x^2 sin(1/x) - x cos(1/x), which tends to 0 at x = 0.
    grad = torch.where(negligible, 0.0, 3.0 * squares * sine - x * cosine)
    return value, grad


def saddle(x: Tensor) -> Tensor:
    """f(x, y) = 2x^2 + y^4 - y^2 (the paper's introduction: a saddle at 0, minima at y = ±1/√2)."""
    first, second = x[..., 0], x[..., 1]
    second_sq = second * second
    return 2.0 * first * first + second_sq * second_sq - second_sq


def saddle_value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
    first, second = x[..., 0], x[..., 1]
    second_sq = second * second
    value = 2.0 * first * first + second_sq * second_sq - second_sq
    grad = torch.stack((4.0 * first, 4.0 * second_sq * second - 2.0 * second), dim=-1)
    return value, grad


def _mexican_hat_parts(x: Tensor) -> tuple[Tensor, ...]:
    first, second = x[..., 0], x[..., 1]
    rho = first * first + second * second  # r^2
    inside = rho < 1.0
    # Outside the unit disc f is identically 0; substitute u = 1 there so that nothing
    # overflows or divides by zero, then mask the results.
    u = torch.where(inside, 1.0 - rho, 1.0)
    s = u.reciprocal()
    decay = torch.exp(-s)
    u_sq = u * u
    u_fourth = u_sq * u_sq
    denominator = 4.0 * rho * rho + u_fourth
    phase = torch.atan2(second, first) - s
    return first, second, rho, inside, u, s, decay, u_fourth, denominator, phase


def _is_plain_cpu_pair(x: Tensor) -> bool:
    # A single float64 point on the CPU: Python's math module is ~10x faster than a chain of
    # tiny tensor ops (it matters for runs of 10^4-10^6 iterations). Same formulas as below.
    return x.shape == (2,) and x.dtype == torch.float64 and x.device.type == "cpu"


def _mexican_hat_scalar(first: float, second: float, with_grad: bool) -> tuple[float, ...]:
    rho = first * first + second * second
    if rho >= 1.0:
        return 0.0, 0.0, 0.0
    u = 1.0 - rho
    s = 1.0 / u
    decay = math.exp(-s)
    u_sq = u * u
    denominator = 4.0 * rho * rho + u_sq * u_sq
    q_over_rho = 4.0 * rho / denominator
    q = q_over_rho * rho
    phase = math.atan2(second, first) - s
    sine = math.sin(phase)
    value = (1.0 - q * sine) * decay
    if not with_grad:
        return value, 0.0, 0.0
    cosine = math.cos(phase)
    dq_drho = 8.0 * rho * (u_sq * u) * (u + 2.0 * rho) / (denominator * denominator)
    df_drho = decay * (-dq_drho * sine + (q * cosine - 1.0 + q * sine) * (s * s))
    df_dtheta_over_rho = -q_over_rho * cosine * decay
    return (
        value,
        2.0 * first * df_drho - second * df_dtheta_over_rho,
        2.0 * second * df_drho + first * df_dtheta_over_rho,
    )


def mexican_hat(x: Tensor) -> Tensor:
    """The Mexican hat of Absil, Mahony & Andrews (2005, eq. 2.8), in Cartesian coordinates.

    With r, theta the polar coordinates: f = 0 for r >= 1 and, for r < 1,
    f = [1 - 4r^4 / (4r^4 + (1 - r^2)^4) sin(theta - 1/(1 - r^2))] exp(-1/(1 - r^2)).
    """
    if _is_plain_cpu_pair(x):
        first, second = x.tolist()
        return torch.tensor(_mexican_hat_scalar(first, second, False)[0], dtype=x.dtype)
    _, _, rho, inside, _, _, decay, _, denominator, phase = _mexican_hat_parts(x)
    q = 4.0 * rho * rho / denominator
    return torch.where(inside, (1.0 - q * torch.sin(phase)) * decay, 0.0)


def mexican_hat_value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
    """Value and exact gradient of :func:`mexican_hat`; 0 and 0 for r >= 1, finite at 0.

    With rho = r^2, u = 1 - rho, s = 1/u, q = 4 rho^2 / (4 rho^2 + u^4), phi = theta - s:
    df/drho = e^{-s} [-q' sin(phi) + (q cos(phi) - 1 + q sin(phi)) s^2],
    q' = 8 rho u^3 (u + 2 rho) / (4 rho^2 + u^4)^2, df/dtheta = -q cos(phi) e^{-s};
    grad = 2 (x, y) df/drho + (-y, x) (df/dtheta) / rho, where (df/dtheta)/rho is computed
    as -(4 rho / (4 rho^2 + u^4)) cos(phi) e^{-s} so that it is finite at the origin.
    """
    if _is_plain_cpu_pair(x):
        first, second = x.tolist()
        value, grad_first, grad_second = _mexican_hat_scalar(first, second, True)
        return (
            torch.tensor(value, dtype=x.dtype),
            torch.tensor((grad_first, grad_second), dtype=x.dtype),
        )
    first, second, rho, inside, u, s, decay, _, denominator, phase = _mexican_hat_parts(x)
    sine, cosine = torch.sin(phase), torch.cos(phase)
    q_over_rho = 4.0 * rho / denominator
    q = q_over_rho * rho
    value = torch.where(inside, (1.0 - q * sine) * decay, 0.0)
    dq_drho = 8.0 * rho * (u * u * u) * (u + 2.0 * rho) / (denominator * denominator)
    s_sq = s * s
    df_drho = decay * (-dq_drho * sine + (q * cosine - 1.0 + q * sine) * s_sq)
    df_dtheta_over_rho = -q_over_rho * cosine * decay
    grad_first = 2.0 * first * df_drho - second * df_dtheta_over_rho
    grad_second = 2.0 * second * df_drho + first * df_dtheta_over_rho
    grad = torch.stack((grad_first, grad_second), dim=-1)
    grad = torch.where(inside.unsqueeze(-1), grad, 0.0)
    return value, grad


MEXICAN_HAT = AnalyticObjective("mexican_hat", mexican_hat, mexican_hat_value_and_grad)
CUBIC_SINE = AnalyticObjective("cubic_sine", cubic_sine, cubic_sine_value_and_grad)
QUARTIC = AnalyticObjective("quartic", quartic, quartic_value_and_grad)
SADDLE = AnalyticObjective("saddle", saddle, saddle_value_and_grad)

TEST_FUNCTIONS: dict[str, AnalyticObjective] = {
    objective.name: objective for objective in (MEXICAN_HAT, CUBIC_SINE, QUARTIC, SADDLE)
}


def mexican_hat_point(radius: float, angle: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """The point (r cos(theta), r sin(theta)) as a tensor."""
    return torch.tensor([radius * math.cos(angle), radius * math.sin(angle)], dtype=dtype)
