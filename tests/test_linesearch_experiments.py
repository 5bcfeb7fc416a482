"""The deterministic-experiment command and Figure 2(b) on tiny budgets."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from bgd_experiments import tasks
from bgd_experiments.linesearch.experiments import (
    mexican_hat_endings,
    mexican_hat_starts,
    run_fig2b,
    settle_iteration,
)
from bgd_experiments.linesearch.methods import backtracking_gd, unbounded_backtracking_gd
from bgd_experiments.linesearch.objectives import CUBIC_SINE, QUARTIC
from bgd_experiments.linesearch.paper_values import (
    PAPER_VALUES,
    SETTLE_ITERATION,
    TWO_WAY,
    paper_value,
    paper_values,
)
from bgd_experiments.reporting.functions import write_fig2b
from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS

# The paper's settings for Examples 3.6 and 3.7.
SETTINGS = {"alpha": 0.5, "beta": 0.7, "delta0": 1.0, "grad_tol": 1e-10, "max_iter": 10**6}


def test_small_run_writes_all_files(tmp_path: Path) -> None:
    report = tasks.functions(tmp_path, {"max_iter": 300, "num_starts": 3, "seed": 1})
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
    # The one entry point is bgd-run experiment=functions, i.e. this task (the module's own
    # argparse command is gone).
    tasks.functions(out, {"max_iter": 50, "num_starts": 2})
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
    payload = run_fig2b(model, inputs, targets, iterations=8)
    write_fig2b(payload, tmp_path)
    assert len(payload["step_sizes"]) == 8 and len(payload["losses"]) == 8
    assert all(b < a for a, b in itertools.pairwise(payload["losses"]))
    assert max(payload["step_sizes"]) <= 1.0
    assert torch.equal(model[1].running_mean, running_mean)
    for name in ("fig2b.json", "fig2b.png", "fig2b.pdf"):
        assert (tmp_path / name).stat().st_size > 0


def test_report_puts_the_paper_beside_ours(tmp_path: Path) -> None:
    report = tasks.functions(tmp_path, {"max_iter": 300, "num_starts": 3, "seed": 1})
    markdown = (tmp_path / "functions.md").read_text()
    assert markdown.count("| quantity | paper | ours | note |") == 3
    for example in ("example_3_6", "example_3_7"):
        rows = report[example]["paper_comparison"]
        expected = paper_values(example)
        assert [row["paper"] for row in rows] == [entry.text for entry in expected]
        for row in rows:
            assert f"| {row['quantity']} | {row['paper']} | {row['ours']} |" in markdown
    # Ours is read from the runs, not written by hand.
    ex36 = {run["label"]: run for run in report["example_3_6"]["runs"]}
    assert f"{ex36['Backtracking GD']['iterations']} (stop: " in markdown
    unbounded = {run["label"]: run for run in report["example_3_7"]["runs"]}
    assert f"{unbounded['Unbounded Backtracking GD']['final_step_size']!r}" in markdown
    assert "Where the runs end" in markdown
    payload = json.loads((tmp_path / "functions.json").read_text())
    settle_row = payload["mexican_hat"]["paper_comparison"][0]
    assert settle_row["paper"] == paper_value("mexican_hat", TWO_WAY, SETTLE_ITERATION).text
    settling = payload["mexican_hat"]["two_way_settling"]
    assert settling["paper_settle_iteration"] == 6
    assert 0 <= settling["settled_by_paper_iteration"] <= settling["runs_considered"]
    claim = payload["mexican_hat"]["claims"][0]
    assert claim["agrees"] == (
        f"in {settling['settled_by_paper_iteration']} of {settling['runs_considered']} runs "
        "(no share stated)"
    )


def test_paper_values_are_unique_and_looked_up() -> None:
    keys = [(v.example, v.method, v.quantity) for v in PAPER_VALUES]
    assert len(keys) == len(set(keys))
    assert paper_value("example_3_7", "Backtracking GD", "iterations").value == 10**6
    with pytest.raises(KeyError):
        paper_value("example_3_6", "Standard GD", "iterations")


def test_example_3_6_iterations_match_the_paper_in_float64_only() -> None:
    # The paper's 10 iterations for both methods come out in float64; float32 stops earlier.
    printed = paper_value("example_3_6", "Backtracking GD", "iterations").value
    for method in (backtracking_gd, unbounded_backtracking_gd):
        double = method(CUBIC_SINE, torch.tensor([4.0, -5.0], dtype=torch.float64), **SETTINGS)
        single = method(CUBIC_SINE, torch.tensor([4.0, -5.0], dtype=torch.float32), **SETTINGS)
        assert double.iterations == printed
        assert single.iterations < printed


def test_example_3_7_printed_numbers_come_from_one_more_step_and_10_to_the_5() -> None:
    # Unbounded GD: our loop stops at the first point with ||g|| <= 1e-10 (88 steps); taking
    # the step found there too gives the printed 89 steps, point and learning rate.
    start = torch.tensor([0.1, 15.0], dtype=torch.float64)
    stated = unbounded_backtracking_gd(QUARTIC, start, **SETTINGS)
    assert (stated.iterations, stated.stop_reason) == (88, "grad_tol")
    one_more = unbounded_backtracking_gd(
        QUARTIC, start, **{**SETTINGS, "grad_tol": 0.0, "max_iter": stated.iterations + 1}
    )
    printed = paper_value("example_3_7", "Unbounded Backtracking GD", "final point").point
    assert one_more.iterations == 89
    assert [f"{v:.8f}" for v in one_more.x.tolist()] == [f"{v:.8f}" for v in printed]
    assert one_more.final_step_size == pytest.approx(90544.63441298596, rel=1e-12)


@pytest.mark.slow
def test_example_3_7_backtracking_point_is_reached_at_step_10_to_the_5() -> None:
    # The printed (0.00111797, 0.00111802) is Backtracking GD's iterate after 10^5 steps
    # (about 5 s), not 10^6 as the text says.
    run = backtracking_gd(
        QUARTIC, torch.tensor([0.1, 15.0], dtype=torch.float64), **{**SETTINGS, "max_iter": 10**5}
    )
    printed = paper_value("example_3_7", "Backtracking GD", "final point").point
    assert [f"{v:.8f}" for v in run.x.tolist()] == [f"{v:.8f}" for v in printed]


def test_functions_json_records_provenance(tmp_path: Path) -> None:
    tasks.functions(tmp_path, {"max_iter": 50, "num_starts": 2})
    provenance = json.loads((tmp_path / "functions.json").read_text())["provenance"]
    for key in ARTEFACT_PROVENANCE_KEYS:
        assert key in provenance, key
    assert {"python", "torch", "numpy"} <= set(provenance["versions"])


def test_mexican_hat_endings_are_counted_from_final_points() -> None:
    def run(point: list[float], stop: str) -> dict[str, object]:
        return {"GD": {"final_point": point, "stop_reason": stop}}

    per_start = [
        run([0.0, -1.2], "grad_tol"),  # flat region
        run([0.3, -0.5], "max_iter"),  # still moving inside the disk
        run([0.0, -0.9999], "grad_tol"),  # inside, gradient below tolerance
    ]
    endings = mexican_hat_endings(per_start, "GD")
    assert (endings["flat_region"], endings["inside_stopped"], endings["inside_moving"]) == (
        1,
        1,
        1,
    )
    assert endings["flat_region_radius"] == [1.2, 1.2]
    assert 0 <= endings["inside_stopped_local_minimum"] <= 1
