"""Launchers and preemption: the local launcher runs a sweep's cells in parallel (CPU jobs
here), the SLURM launcher composes and writes the job array submitit would submit, and a
sweep stopped by SIGTERM resumes, when launched again, to exactly the uninterrupted result."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bgd_experiments.cli import CONFIG_DIR
from bgd_experiments.data import CACHE_ENV_VAR
from bgd_experiments.io import read_jsonl
from bgd_experiments.preemption import Terminated, stop_on_termination
from hydra_plugins.bgd_local_launcher import device_slots

BGD_RUN = Path(sys.executable).parent / "bgd-run"
BGD_REPORT = Path(sys.executable).parent / "bgd-report"
# Two CPU jobs at a time, one thread each: the tiny generated CIFAR-10 has 200 training and
# 50 test images.
LOCAL_CPU = ["hydra/launcher=local", "hydra.launcher.gpus=0", "hydra.launcher.cpu_jobs=2"]
TINY = ["model.width=0.0625", "dataset.test_subset=50", "trainer.num_threads=1"]
TIMING_KEYS = ("epoch_time", "search_time")


def run_command(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [str(args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_device_slots_pin_each_parallel_job_to_one_gpu(monkeypatch):
    assert device_slots(0, jobs_per_gpu=3, cpu_jobs=2) == ["", ""]
    assert device_slots([0, 1], jobs_per_gpu=2, cpu_jobs=2) == ["0", "1", "0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert device_slots(None, jobs_per_gpu=1, cpu_jobs=4) == ["3", "5"]
    assert device_slots(1, jobs_per_gpu=2, cpu_jobs=4) == ["3", "3"]
    with pytest.raises(ValueError, match="gpus=3"):
        device_slots(3, jobs_per_gpu=1, cpu_jobs=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device_slots(None, jobs_per_gpu=2, cpu_jobs=3) == ["", "", ""]


def test_sigterm_becomes_an_exception_that_exits_143_and_leaves_other_handlers_alone():
    with pytest.raises(Terminated) as stopped, stop_on_termination():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; this never completes
    assert stopped.value.code == 143 and stopped.value.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    # submitit ignores SIGTERM on SLURM and requeues on its own signal: not overridden.
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with stop_on_termination():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]


def test_slurm_launcher_composes_with_its_keys():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=table2",
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.timeout_min=60",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.timeout_min == 60
    assert launcher.gpus_per_node == 1 and launcher.cpus_per_task >= 1 and launcher.mem_gb > 0
    assert launcher.array_parallelism >= 1
    assert launcher.max_num_timeout > 0, "a timed-out job must be requeued to resume"
    assert cfg.hydra.sweeper._target_.endswith("GridUnionSweeper")


@pytest.mark.slow
def test_slurm_launcher_writes_the_job_array_it_would_submit(tmp_path, tiny_cifar10_torchvision):
    # A stand-in sbatch keeps the script and refuses it: nothing is submitted anywhere. (submitit
    # looks for srun to tell that it is on a cluster; it is never called.)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    script_copy = tmp_path / "submitted.sh"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\ncp "$1" {script_copy}\necho "stub sbatch" >&2\nexit 1\n')
    sbatch.chmod(0o755)
    results = tmp_path / "results"
    refused = run_command(
        BGD_RUN,
        "-m",
        "experiment=table2",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.array_parallelism=1",
        "optimizer=sgd,nag",
        "optimizer.lr=0.1",
        f"dataset.root={tiny_cifar10_torchvision}",
        f"results_dir={results}",
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert refused.returncode != 0 and "stub sbatch" in refused.stdout + refused.stderr
    script = script_copy.read_text()
    for line in (
        "#SBATCH --array=0-1%1",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16GB",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script, (line, script)
    assert "submitit.core._submit" in script
    # One pickled job per cell, under the sweep's results folder.
    assert len(list((results / ".submitit").rglob("*.pkl"))) == 2


def report_rows(results: Path, cwd: Path) -> list[dict[str, str]]:
    listing = ["runs", "--results-dir", str(results), "--format", "csv", "--out", str(cwd)]
    listed = run_command(BGD_REPORT, *listing, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    with open(cwd / "runs.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_local_launcher_runs_a_smoke_sweep_in_parallel_and_the_report_collects_it(
    tmp_path, tiny_cifar10_torchvision
):
    results = tmp_path / "results"
    # The grid-union sweeper of experiment=table2, narrowed to three cells.
    swept = run_command(
        BGD_RUN,
        "-m",
        "experiment=table2",
        "budget=smoke",
        *LOCAL_CPU,
        *TINY,
        "optimizer=sgd,nag,mbt_nag",
        "optimizer.lr=0.1",
        "trainer.progress=plain",
        f"dataset.root={tiny_cifar10_torchvision}",
        f"results_dir={results}",
        cwd=tmp_path,
    )
    output = swept.stdout + swept.stderr
    assert swept.returncode == 0, output
    assert "3 jobs, 2 at a time on CPU" in output
    # Two jobs at once: the second starts before the first ends.
    assert output.index("#1 started on CPU") < output.index("#0 ended: completed"), output
    for job in range(3):
        assert f"[#{job}] " in output and f"#{job} ended: completed" in output
    rows = report_rows(results, tmp_path)
    assert sorted(row["optimizer"] for row in rows) == ["mbt_nag", "nag", "sgd"]
    assert all(row["status"] == "finished" and row["epochs_completed"] == "1" for row in rows)


def comparable_metrics(results: Path) -> dict[str, list[dict]]:
    cells = {}
    for metrics in sorted(results.rglob("metrics.jsonl")):
        records = read_jsonl(metrics)
        cells[str(metrics.parent.relative_to(results))] = [
            {key: value for key, value in record.items() if key not in TIMING_KEYS}
            for record in records
        ]
    return cells


def resumable_sweep(results: Path, root: Path, *launcher: str, optimizers: str) -> list[str]:
    """Cells of three epochs, long enough to be stopped after the first."""
    return [
        str(BGD_RUN),
        "-m",
        *launcher,
        *TINY,
        "trainer.batch_size=25",
        "trainer.epochs=3",
        "trainer.progress=plain",
        f"optimizer={optimizers}",
        "budget.search_batches=2",
        "optimizer.lr=0.05",
        f"dataset.root={root}",
        f"results_dir={results}",
    ]


@pytest.fixture(scope="module")
def uninterrupted_metrics(tmp_path_factory, tiny_cifar10_torchvision) -> dict[str, list[dict]]:
    """The cells of the resume tests, run one after the other in one process (Hydra's basic
    launcher), never stopped."""
    work = tmp_path_factory.mktemp("uninterrupted")
    command = resumable_sweep(work / "results", tiny_cifar10_torchvision, optimizers="nag,mbt_nag")
    # Module-scoped, so before the per-test cache of conftest: a cache of its own.
    reference = run_command(*command, cwd=work, env={CACHE_ENV_VAR: str(work / "cache")})
    assert reference.returncode == 0, reference.stdout + reference.stderr
    expected = comparable_metrics(work / "results")
    assert len(expected) == 2 and all(len(records) == 3 for records in expected.values())
    return expected


@pytest.mark.slow
def test_sigterm_stops_a_sweep_and_a_relaunch_matches_the_uninterrupted_one(
    tmp_path, tiny_cifar10_torchvision, uninterrupted_metrics
):
    def command(results: Path) -> list[str]:
        return resumable_sweep(
            results, tiny_cifar10_torchvision, *LOCAL_CPU, optimizers="nag,mbt_nag"
        )

    results = tmp_path / "interrupted"
    log_path = tmp_path / "interrupted.log"
    with open(log_path, "w") as log_file:
        sweep = subprocess.Popen(
            command(results),
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, for the SIGKILL fallback
        )
        try:
            deadline = time.monotonic() + 300
            while not list(results.rglob("checkpoint.pt")):  # an epoch is done
                assert sweep.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            sweep.send_signal(signal.SIGTERM)  # what SLURM sends before it kills
            try:
                returncode = sweep.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(sweep.pid, signal.SIGKILL)
                returncode = sweep.wait()
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.wait()
    output = log_path.read_text()
    assert returncode == 143, (returncode, output)  # stopped cleanly, not killed
    assert "stopped by SIGTERM" in output
    summaries = list(results.rglob("summary.json"))
    assert len(summaries) < 2, "the SIGTERM came after the sweep ended: nothing was stopped"
    assert not list(results.rglob("*.tmp")), "a write was left half done"

    relaunched = run_command(*command(results), cwd=tmp_path)
    assert relaunched.returncode == 0, relaunched.stdout + relaunched.stderr
    assert "resuming" in relaunched.stdout + relaunched.stderr
    assert comparable_metrics(results) == uninterrupted_metrics


def submitit_tasks(folder: Path) -> list[int]:
    """Pids of the processes running submitit jobs whose folder lies under ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or it has ended
            continue
        if b"submitit.core._submit" in command and any(
            str(folder).encode() in part for part in command
        ):
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the job in /proc")
def test_a_preempted_submitit_job_is_requeued_and_resumes_to_the_uninterrupted_result(
    tmp_path, tiny_cifar10_torchvision, uninterrupted_metrics
):
    # submitit's local executor runs the code path of the slurm one: on USR2 (SLURM's
    # preemption or time-limit signal) it calls the launcher's checkpoint(), requeues the
    # same job, and the job resumes from the run folder's checkpoint.
    results = tmp_path / "preempted"
    sweep = subprocess.Popen(
        resumable_sweep(
            results, tiny_cifar10_torchvision, "hydra/launcher=submitit_local", optimizers="mbt_nag"
        ),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(results.rglob("checkpoint.pt")):  # an epoch is done
            assert sweep.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        tasks = submitit_tasks(results)
        assert len(tasks) == 1, tasks
        os.kill(tasks[0], signal.SIGUSR2)
        assert sweep.wait(timeout=300) == 0
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    job_log = "".join(path.read_text() for path in (results / ".submitit").rglob("*_log.*"))
    assert "this job is preempted" in job_log and "Requeued job" in job_log, job_log
    assert "resuming run in" in job_log
    mbt_cell = {cell: records for cell, records in uninterrupted_metrics.items() if "mbt" in cell}
    assert comparable_metrics(results) == mbt_cell
