"""Armijo's sufficient-decrease condition and the direction condition (i) of the paper."""

from __future__ import annotations

import math


def armijo_holds(
    trial_value: float, current_value: float, step: float, slope: float, alpha: float
) -> bool:
    """Armijo's condition (A): f(x - step*v) - f(x) <= -alpha * step * <grad f(x), v>.

    ``slope`` is <grad f(x), v>. A non-finite trial value (overflow, NaN) counts as a failure,
    so a search shrinks away from it instead of accepting it.
    """
    trial_value = float(trial_value)
    if not math.isfinite(trial_value):
        return False
    return trial_value - float(current_value) <= -alpha * step * slope


def direction_condition_holds(
    grad_norm: float, direction_norm: float, slope: float, a1: float, a2: float, mu: float
) -> bool:
    """Condition (i) for a direction v against g = grad f(x).

    A1*||g|| <= ||v|| <= A2*||g|| and <g, v> >= mu*||g||*||v||, with ``slope`` = <g, v>.
    """
    if not (math.isfinite(direction_norm) and math.isfinite(slope)):
        return False
    return (
        a1 * grad_norm <= direction_norm <= a2 * grad_norm
        and slope >= mu * grad_norm * direction_norm
    )
