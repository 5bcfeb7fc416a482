"""The deterministic line-search library: Rosenbrock's function minimized by Backtracking GD
and Two-way Backtracking GD (Truong & Nguyen, Part 2). A plain torch function and a
numpy start are accepted as they are.
Run: ``python examples/rosenbrock.py`` (``--tiny`` for a few-second check).
"""

import argparse

import numpy as np
import torch

from bgd_experiments.linesearch import backtracking_gd, two_way_backtracking_gd

parser = argparse.ArgumentParser()
parser.add_argument("--tiny", action="store_true", help="a few-second run (the tests use it)")
args = parser.parse_args()
max_iter = 2000 if args.tiny else 50_000


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


x0 = np.array([-1.2, 1.0])  # the classic start; the minimum is (1, 1)
for method in (backtracking_gd, two_way_backtracking_gd):
    run = method(rosenbrock, x0, alpha=0.5, beta=0.7, delta0=1.0, max_iter=max_iter)
    x = run.x.tolist()
    print(
        f"{method.__name__}: f={run.value:.3g} at ({x[0]:.4f}, {x[1]:.4f}) after "
        f"{run.iterations} iterations, {run.function_evals} function evaluations"
    )
