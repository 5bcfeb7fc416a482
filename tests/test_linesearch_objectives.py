"""Analytic objectives: gradients against autograd and finite differences, safety, models."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from bgd_experiments.linesearch import (
    CUBIC_SINE,
    MEXICAN_HAT,
    QUARTIC,
    SADDLE,
    mexican_hat,
    mexican_hat_value_and_grad,
    objective_from_function,
    objective_from_model,
    two_way_backtracking_gd,
)

F64 = torch.float64


def mexican_hat_polar_reference(point: torch.Tensor) -> torch.Tensor:
    """The textbook polar formula (valid inside the unit disc), for autograd."""
    x, y = point[0], point[1]
    r_sq = x * x + y * y
    theta = torch.atan2(y, x)
    u = 1 - r_sq
    return (1 - 4 * r_sq**2 / (4 * r_sq**2 + u**4) * torch.sin(theta - 1 / u)) * torch.exp(-1 / u)


def _random_points(count: int, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, 2, generator=generator, dtype=F64) * 2 - 1) * scale


def _central_difference(objective, point: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    columns = []
    for direction in torch.eye(2, dtype=F64):
        forward = objective.value(point + step * direction).item()
        backward = objective.value(point - step * direction).item()
        columns.append((forward - backward) / (2 * step))
    return torch.tensor(columns, dtype=F64)


def test_mexican_hat_gradient_matches_autograd_of_polar_formula() -> None:
    points = _random_points(200, 0.97, seed=1)
    points = points[points.norm(dim=1) < 0.97]
    batch_values, batch_grads = mexican_hat_value_and_grad(points)
    for point, batch_value, batch_grad in zip(points, batch_values, batch_grads, strict=True):
        leaf = point.clone().requires_grad_(True)
        reference = mexican_hat_polar_reference(leaf)
        (reference_grad,) = torch.autograd.grad(reference, leaf)
        value, grad = MEXICAN_HAT.value_and_grad(point.clone())  # single-point fast path
        assert value.item() == pytest.approx(reference.item(), rel=1e-12, abs=1e-15)
        assert torch.allclose(grad, reference_grad, rtol=1e-10, atol=1e-13)
        assert torch.allclose(batch_grad, grad, rtol=1e-12, atol=1e-15)
        assert batch_value.item() == pytest.approx(value.item(), rel=1e-12, abs=1e-16)


@pytest.mark.parametrize("objective", [MEXICAN_HAT, CUBIC_SINE, QUARTIC, SADDLE])
def test_gradients_match_finite_differences(objective) -> None:
    scale = 0.95 if objective is MEXICAN_HAT else 2.0
    for point in _random_points(30, scale, seed=2):
        _, grad = objective.value_and_grad(point)
        estimate = _central_difference(objective, point)
        assert torch.allclose(grad, estimate, rtol=1e-5, atol=1e-6), (point, grad, estimate)


@pytest.mark.parametrize(
    ("objective", "formula"),
    [
        (CUBIC_SINE, lambda p: (p**3 * torch.sin(1 / p)).sum()),
        (QUARTIC, lambda p: (p**4).sum()),
        (SADDLE, lambda p: 2 * p[0] ** 2 + p[1] ** 4 - p[1] ** 2),
    ],
)
def test_polynomial_gradients_match_autograd(objective, formula) -> None:
    reference = objective_from_function(formula)
    for point in _random_points(30, 3.0, seed=3):
        value, grad = objective.value_and_grad(point)
        ref_value, ref_grad = reference.value_and_grad(point)
        assert value.item() == pytest.approx(ref_value.item(), rel=1e-12, abs=1e-14)
        assert torch.allclose(grad, ref_grad, rtol=1e-12, atol=1e-14)


def test_cubic_sine_limit_at_zero() -> None:
    for point in ([0.0, 0.0], [0.0, 0.5], [1e-320, -0.0]):
        value, grad = CUBIC_SINE.value_and_grad(torch.tensor(point, dtype=F64))
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        if point[0] == 0.0 or abs(point[0]) < 1e-300:
            assert grad[0].item() == 0.0
    value, _ = CUBIC_SINE.value_and_grad(torch.zeros(2, dtype=F64))
    assert value.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mexican_hat_is_safe_on_and_beyond_the_unit_circle(dtype: torch.dtype) -> None:
    eps = torch.finfo(dtype).eps
    radii = [1.0, 1.0 + eps, 1.5, 100.0, 1.0 - eps, 1.0 - 1e-6, 0.999]
    for radius in radii:
        for angle in (0.0, 1.0, 4.0):
            point = torch.tensor([radius * math.cos(angle), radius * math.sin(angle)], dtype=dtype)
            value, grad = MEXICAN_HAT.value_and_grad(point)
            assert value.dtype == dtype and grad.dtype == dtype
            assert torch.isfinite(value) and torch.isfinite(grad).all()
            if point.double().norm() >= 1.0:
                assert value.item() == 0.0 and grad.abs().max().item() == 0.0
    # A batch crossing the circle, and the origin (a critical point with f = e^-1).
    batch = torch.tensor([[0.0, 0.0], [0.6, 0.8], [2.0, 0.0], [0.5, -0.5]], dtype=dtype)
    values, grads = mexican_hat_value_and_grad(batch)
    assert torch.isfinite(values).all() and torch.isfinite(grads).all()
    assert values[0].item() == pytest.approx(math.exp(-1), rel=1e-6)
    assert grads[0].abs().max().item() == 0.0
    assert values[2].item() == 0.0
    assert mexican_hat(batch).shape == (4,)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs)


def _tiny_problem():
    torch.manual_seed(0)
    model = TinyNet()
    inputs = torch.randn(32, 4)
    targets = torch.randint(0, 3, (32,))
    return model, inputs, targets


def test_model_objective_gradient_matches_autograd_and_leaves_model_alone() -> None:
    model, inputs, targets = _tiny_problem()
    before = copy.deepcopy(model.state_dict())
    objective = objective_from_model(model, nn.functional.cross_entropy, inputs, targets)
    point = objective.initial_point()
    value, grads = objective.value_and_grad(point)
    # Reference: the model itself in train mode with dropout off, on a copy.
    reference = copy.deepcopy(model)
    reference.train()
    reference.layers[3].eval()
    loss = nn.functional.cross_entropy(reference(inputs), targets)
    loss.backward()
    assert value.item() == pytest.approx(loss.item(), rel=1e-6)
    for grad, parameter in zip(grads, reference.parameters(), strict=True):
        assert torch.allclose(grad, parameter.grad, rtol=1e-5, atol=1e-7)
    assert objective.value(point).item() == value.item()  # deterministic: dropout is off

    result = two_way_backtracking_gd(objective, point, max_iter=15, grad_tol=0.0)
    assert isinstance(result.x, list) and result.x[0].dtype == torch.float32
    assert result.records.points is None
    values = list(result.records.values)
    assert all(b < a for a, b in itertools.pairwise(values))  # Armijo: strict decrease
    assert max(result.records.step_sizes) <= 1.0
    after = model.state_dict()
    for key, tensor in before.items():  # parameters AND BatchNorm running stats unchanged
        assert torch.equal(tensor, after[key]), key

    objective.load_into_model(result.x)
    assert objective.value(objective.initial_point()).item() == pytest.approx(result.value)
