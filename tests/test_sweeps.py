"""Sweeps that scale out: concurrent sweeps share their cells, and a refused or failed job
is recorded without stopping its sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from bgd_experiments import cli, tasks
from bgd_experiments.io import read_json, read_jsonl
from bgd_experiments.reporting.cli import main as report_main
from bgd_experiments.sweeps import read_failures
from hydra_plugins.bgd_grid_sweeper import expand_grids

BGD_RUN = Path(sys.executable).parent / "bgd-run"
TINY = [
    "model.width=0.0625",
    "dataset.train_subset=100",
    "trainer.batch_size=50",
    "trainer.eval_batch_size=100",
    "trainer.device=cpu",
    "trainer.num_threads=1",
    "trainer.progress=plain",
    "trainer.tensorboard=true",
]


@pytest.mark.parametrize(
    "arguments",
    [
        ["a=1,2", "b=x,y,z"],
        ["a=1", "b=3,4", "c=5"],
        ["b=3,4", "a=1,2", "b=7,8,9"],  # a key twice: its first place, its last values
        ["optimizer=sgd,nag", "optimizer.lr=0.1,0.01", "seed=0"],
    ],
)
def test_a_plain_sweep_has_the_basic_sweepers_jobs_in_its_order(arguments):
    parsed = OverridesParser.create().parse_overrides(arguments)
    assert expand_grids([], arguments) == BasicSweeper.split_arguments(parsed, None)[0]


def bgd_run_in_process(monkeypatch, *arguments: str) -> int:
    """The real entry point (Hydra included), in this process; its exit status."""
    monkeypatch.setattr(sys, "argv", ["bgd-run", *arguments])
    try:
        cli.main()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_a_refused_or_failed_job_is_recorded_and_the_sweep_goes_on(
    tmp_path, tiny_cifar10_torchvision, monkeypatch, capsys
):
    results = tmp_path / "results"
    real_train = tasks.train

    def train_or_crash(request):
        if request.seed == 1:
            raise RuntimeError("the GPU fell over")
        return real_train(request)

    monkeypatch.setattr(tasks, "train", train_or_crash)
    status = bgd_run_in_process(
        monkeypatch,
        "-m",
        f"dataset.root={tiny_cifar10_torchvision}",
        *TINY,
        "trainer.epochs=1",
        "trainer.tensorboard=false",
        f"results_dir={results}",
        "optimizer.lr=-1,0.1",
        "seed=0,1",
    )
    output = capsys.readouterr().out
    assert status == 1
    assert f"3 of 4 jobs failed: see {results / 'failures.jsonl'}" in output
    summaries = list(results.rglob("summary.json"))
    assert len(summaries) == 1 and read_json(summaries[0])["run"]["lr"] == 0.1
    failures = read_failures(results)
    assert [(f["kind"], "optimizer.lr=-1" in f["overrides"]) for f in failures] == [
        ("refused", True),
        ("refused", True),
        ("failed", False),
    ]
    assert "optimizer.lr must be > 0, got -1" in failures[0]["reason"]
    assert failures[2]["reason"] == "RuntimeError: the GPU fell over"
    assert {"time", "host", "pid"} <= set(failures[0])
    # The report lists them under the run folders.
    assert report_main(["runs", "--results-dir", str(results)]) == 0
    report = capsys.readouterr().out
    assert "3 sweep job(s) refused or failed" in report
    assert "RuntimeError: the GPU fell over" in report


@pytest.mark.slow
def test_two_concurrent_sweeps_train_each_cell_once(tmp_path, tiny_cifar10_torchvision):
    results = tmp_path / "results"
    sweep = [
        str(BGD_RUN),
        "-m",
        f"dataset.root={tiny_cifar10_torchvision}",
        *TINY,
        "trainer.epochs=2",
        f"results_dir={results}",
        "optimizer=sgd,nag",
        "optimizer.lr=0.1,0.01",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = [
        subprocess.Popen(
            sweep,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in both]
    assert [process.returncode for process in both] == [0, 0], outputs
    run_dirs = sorted(path.parent for path in results.rglob("config.yaml"))
    assert len(run_dirs) == 4
    for run_dir in run_dirs:
        assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1, run_dir
        assert read_json(run_dir / "summary.json")["epochs_completed"] == 2
    # Each cell trained by one process: 4 "new run" lines in all, and no lock left behind.
    assert sum(output.count("new run in") for output in outputs) == 4
    assert not list(results.rglob("*.lock"))


@pytest.mark.parametrize("task", ["train", "search"])
def test_a_cell_held_by_another_process_is_refused_untouched(
    tmp_path, tiny_cifar10_torchvision, caplog, task
):
    from hydra import compose, initialize_config_dir

    from bgd_experiments.locks import LockOwner, lock_path

    overrides = [
        f"dataset.root={tiny_cifar10_torchvision}",
        *TINY,
        "trainer.epochs=1",
        "trainer.tensorboard=false",
        f"results_dir={tmp_path}",
        f"task={task}",
        "optimizer=mbt_gd",
        "optimizer.num_batches=2",
    ]
    with initialize_config_dir(config_dir=str(cli.CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    request = cli._run_spec(cfg)
    run_dir = tasks._name_run(request, task).run_dir
    # A live owner on another host (fresh heartbeat); its half-made folder must survive.
    holder = LockOwner("someone", "node-7", 4242, "then")
    (run_dir / "partial").mkdir(parents=True)
    lock_path(run_dir).write_text(json.dumps(asdict(holder)))
    run = tasks.train if task == "train" else tasks.search
    from bgd_experiments.runfolder import CellHeld

    with pytest.raises(CellHeld, match="is taken by someone@node-7 pid 4242"):
        run(request)
    assert [p.name for p in run_dir.iterdir()] == ["partial"]
    lock_path(run_dir).unlink()  # released: the cell runs (the leftover is no run's)
    assert run(request)["status"] == "finished"
    assert not lock_path(run_dir).exists()
