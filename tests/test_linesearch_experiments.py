"""The deterministic-experiment command and Figure 2(b) on tiny budgets."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import torch
from torch import nn

from bgd_experiments.linesearch.experiments import (
    main,
    mexican_hat_starts,
    run_deterministic_experiments,
    run_fig2b,
    settle_iteration,
)


def test_small_run_writes_all_files(tmp_path: Path) -> None:
    report = run_deterministic_experiments(tmp_path, max_iter=300, num_starts=3, seed=1)
    for name in ("functions.md", "functions.json", "fig2a.png", "fig2a.pdf"):
        assert (tmp_path / name).stat().st_size > 0, name
    payload = json.loads((tmp_path / "functions.json").read_text())
    assert payload["settings"]["max_iter"] == 300
    methods = payload["mexican_hat"]["methods"]
    assert set(methods) == {"Standard GD", "Backtracking GD", "Two-way Backtracking GD"}
    assert all(stats["runs"] == 3 for stats in methods.values())
    # Example 3.7 with a 300-iteration budget: Backtracking GD hits max_iter.
    runs = {run["label"]: run for run in payload["example_3_7"]["runs"]}
    assert runs["Backtracking GD"]["stop_reason"] == "max_iter"
    assert runs["Backtracking GD"]["iterations"] == 300
    markdown = (tmp_path / "functions.md").read_text()
    for heading in ("Example 3.6", "Example 3.7", "Mexican hat", "Figure 2(a)"):
        assert heading in markdown
    point = report["example_3_6"]["runs"][0]["final_point"]
    assert f"{point[0]:.8f}" in markdown
    assert (tmp_path / "fig2a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    main(["--out", str(out), "--max-iter", "50", "--num-starts", "2"])
    payload = json.loads((out / "functions.json").read_text())
    assert payload["mexican_hat"]["settings"]["num_starts"] == 2


def test_starts_have_negative_sine_and_are_seeded() -> None:
    starts = mexican_hat_starts(50, seed=3)
    assert starts == mexican_hat_starts(50, seed=3)
    assert all(math.sin(theta) < 0 and 0.1 <= r <= 0.9 for r, theta in starts)


def test_settle_iteration() -> None:
    assert settle_iteration([1.0, 0.5, 0.3, 0.3, 0.3]) == 2
    assert settle_iteration([0.3, 0.3]) == 0
    assert settle_iteration([0.3, 0.5]) == 1


def test_fig2b_on_a_tiny_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )
    running_mean = model[1].running_mean.clone()
    inputs = torch.randn(16, 3, 8, 8)
    targets = torch.randint(0, 10, (16,))
    payload = run_fig2b(model, inputs, targets, tmp_path, iterations=8)
    assert len(payload["step_sizes"]) == 8 and len(payload["losses"]) == 8
    assert all(b < a for a, b in itertools.pairwise(payload["losses"]))
    assert max(payload["step_sizes"]) <= 1.0
    assert torch.equal(model[1].running_mean, running_mean)
    for name in ("fig2b.json", "fig2b.png", "fig2b.pdf"):
        assert (tmp_path / name).stat().st_size > 0
