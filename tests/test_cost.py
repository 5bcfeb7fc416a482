"""bgd-report cost on synthetic run folders and a synthetic benchmark json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bgd_experiments.reporting import cost
from bgd_experiments.reporting.cli import main as report_main

EXPERIMENTS = cost.CONFIG_DIR / "experiment"


def write_run(
    root: Path,
    name: str,
    *,
    task: str = "train",
    optimizer: str = "nag",
    lr: float = 0.01,
    model: str = "resnet18",
    dataset: str = "cifar10",
    budget: str = "cpu",
    wall: float = 100.0,
    epochs: int = 4,
    device: str = "cpu:x86_64 (2 threads)",
    seed: int = 0,
) -> None:
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    run = {
        "task": task,
        "dataset": dataset,
        "model": model,
        "optimizer": optimizer,
        "lr": lr,
        "batch_size": 200,
        "seed": seed,
        "width": 0.25,
        "train_subset": 2000,
        "budget": budget,
    }
    summary = {
        "status": "finished",
        "run": run,
        "wall_time": wall,
        "epochs_completed": epochs,
        "device": device,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    config = {"dataset": {"test_subset": 1000}, "budget": {"search_batches": 20}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def sweep_size(name: str) -> int:
    params = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())["hydra"]["sweeper"]
    grids = params.get("grids") or [params["params"]]
    return sum(math.prod(len(str(v).split(",")) for v in grid.values()) for grid in grids)


def test_grid_counts_match_the_experiment_configs():
    budget = cost.load_budgets()["paper"]
    for artefact in ("table1", "table2", "table3"):
        runs = sum(job.runs for job in cost.artefact_jobs(artefact, budget))
        assert runs == sweep_size(artefact), artefact
    assert (sweep_size("table1"), sweep_size("table2"), sweep_size("table3")) == (63, 75, 20)
    assert cost.artefact_jobs("fig3", budget) == []


def test_every_budget_is_known_and_short_sits_between_cpu_and_paper():
    budgets = cost.load_budgets()
    assert set(budgets) == set(cost.BUDGETS)
    work = {name: cost.run_steps(b, "nag") for name, b in budgets.items()}
    assert work["smoke"] < work["cpu"] < work["short"] < work["paper"]


def test_complete_grids_are_measured_and_the_rest_estimated(tmp_path):
    results = tmp_path / "results"
    # Table 3 complete at the cpu budget (two seeds: one seed's cost is reported).
    models = cost.MODELS
    for seed in (0, 1):
        for dataset in ("cifar10", "cifar100"):
            for model in models:
                for optimizer in ("mbt_mmt", "mbt_nag"):
                    write_run(
                        results,
                        f"{seed}/{dataset}/{model}/{optimizer}",
                        optimizer=optimizer,
                        lr=100,
                        model=model,
                        dataset=dataset,
                        wall=90.0,
                        seed=seed,
                    )
    # Two of Table 2's 75 runs.
    write_run(results, "t2/sgd", optimizer="sgd", lr=0.1, wall=50.0)
    write_run(results, "t2/adam", optimizer="adam", lr=100, wall=50.0)
    rows = cost.estimate_costs(results, None)
    by = {(r.device, r.artefact, r.budget): r for r in rows}

    table3 = by[("cpu", "table3", "cpu")]
    assert table3.kind == "measured" and table3.runs == 20
    assert table3.hours == pytest.approx(20 * 90.0 / 3600)
    table2 = by[("cpu", "table2", "cpu")]
    assert table2.kind == "partly measured" and "2 of 75" in table2.source
    paper = by[("cpu", "table2", "paper")]
    assert paper.kind == "estimate" and "width^2" in paper.source
    # Paper = 200 epochs x 25x the images x 16x the width^2 cost of the measured runs.
    assert paper.hours > 1000 * table2.hours
    # No GPU measurement: every cuda number says it is assumed.
    assert all(r.kind in ("assumed", "reuse") for r in rows if r.device == "cuda")
    assert by[("cpu", "fig3", "paper")].hours == 0.0


def test_bench_json_gives_the_rate_where_no_runs_exist(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    report = {
        "machine": {"device": "cuda"},
        "models": [
            {
                "model": "resnet18",
                "width": 1.0,
                "images": 50_000,
                "variants": {"nag-fp32": {"epoch_s": 10.0}},
            },
        ],
    }
    (bench / "cuda.json").write_text(json.dumps(report))
    rows = cost.estimate_costs(tmp_path / "missing", bench)
    row = next(r for r in rows if (r.device, r.artefact, r.budget) == ("cuda", "table2", "paper"))
    assert row.kind == "estimate" and "cuda.json" in row.source
    expected = 75 * cost.run_steps(cost.load_budgets()["paper"], "nag") * 10.0 / 50_000
    mbt_extra = 2 * 200 * cost.search_steps(20) + cost.search_steps(20)
    assert row.hours * 3600 == pytest.approx(expected + mbt_extra * 10.0 / 50_000)


def test_bgd_report_cost_prints_the_table(tmp_path, capsys):
    write_run(tmp_path, "a", wall=10.0)
    assert report_main(["cost", "--results-dir", str(tmp_path), "--bench-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| artefact | smoke | cpu | short | paper |" in out
    assert "GPU-hours" in out and "make gpu-check" in out
