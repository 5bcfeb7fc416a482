"""`budget=smoke` of every paper artefact, end to end through the real CLI and report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgd_experiments.io import read_json
from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS

BIN = Path(sys.executable).parent


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture
def smoke_env(tiny_cifar10_targz, tiny_cifar100_targz) -> dict[str, str]:
    return {
        "BGD_CIFAR10_ROOT": str(tiny_cifar10_targz),
        "BGD_CIFAR100_ROOT": str(tiny_cifar100_targz),
    }


# The tiny CIFAR-10 fixture has fewer test images than the smoke budget's test subset.
TINY_DATA = ["dataset.test_subset=null", "trainer.num_threads=1", "trainer.device=cpu"]


@pytest.mark.slow
def test_every_artefact_runs_end_to_end_at_smoke_budget(tmp_path, smoke_env):
    results = tmp_path / "results" / "smoke"
    common = ["budget=smoke", f"results_dir={results}", *TINY_DATA]
    for experiment in ("table1", "table2", "table3", "fig3"):
        run([str(BIN / "bgd-run"), "-m", f"experiment={experiment}", *common], tmp_path, smoke_env)
    # Figure 2(b) asks for 500 images; the tiny fixture has 200.
    fig2 = [str(BIN / "bgd-run"), "experiment=fig2", *common, "dataset.train_subset=100"]
    run(fig2, tmp_path, smoke_env)
    output = run([str(BIN / "bgd-report"), "all", "--results-dir", str(results)], tmp_path, {})

    summaries = [read_json(p) for p in results.rglob("summary.json")]
    searches = [s for s in summaries if s["run"]["task"] == "search"]
    trainings = [s for s in summaries if s["run"]["task"] == "train"]
    assert len(searches) == 63
    # 75 Table-2 cells + 20 Table-3 cells (MBT from 1e-2 and from 100 are different runs);
    # Figure 3's four runs are Table 3's, so it adds none.
    assert len(trainings) == 75 + 20
    assert {s["status"] for s in trainings} <= {"finished", "diverged", "stopped_early"}
    assert all(s["run"]["budget"] == "smoke+overrides" for s in trainings)
    for name in ("table1", "table2", "table3"):
        for suffix in ("md", "csv", "tex"):
            assert (results / f"{name}.{suffix}").stat().st_size > 0
    for figure in ("fig2a", "fig2b", "fig3"):
        assert (results / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (results / f"{figure}.pdf").read_bytes()[:4] == b"%PDF"
    assert "table2" in output.lower()
    # A second pass finds every run finished and trains nothing.
    again = run([str(BIN / "bgd-run"), "-m", "experiment=table2", *common], tmp_path, smoke_env)
    assert again.count("skipped") == 75
    # Figure 2 has no run folder: its JSON records the request, and the same request skips.
    made = {name: (results / name).stat().st_mtime_ns for name in ("functions.json", "fig2b.json")}
    again = run(fig2, tmp_path, smoke_env)
    assert again.count("skipped") == 2
    assert {name: (results / name).stat().st_mtime_ns for name in made} == made
    # Another setting (or force=true) makes it again; the other half stays skipped.
    again = run([*fig2, "fig2b.iterations=2"], tmp_path, smoke_env)
    assert again.count("skipped") == 1 and "functions.json" in again
    assert read_json(results / "fig2b.json")["request"]["fig2b"]["iterations"] == 2
    assert (results / "functions.json").stat().st_mtime_ns == made["functions.json"]
    again = run([*fig2, "fig2b.iterations=2", "force=true"], tmp_path, smoke_env)
    assert "skipped" not in again


def test_fig2_writes_provenance_and_a_titled_figure(tmp_path, smoke_env):
    results = tmp_path / "results"
    command = [
        str(BIN / "bgd-run"),
        "experiment=fig2",
        "budget=smoke",
        f"results_dir={results}",
        *TINY_DATA,
        "dataset.train_subset=20",
        "fig2b.iterations=2",
        "functions.max_iter=20",
        "functions.num_starts=2",
    ]
    run(command, tmp_path, smoke_env)
    for name in ("functions.json", "fig2b.json"):
        provenance = read_json(results / name)["provenance"]
        for key in ARTEFACT_PROVENANCE_KEYS:
            assert key in provenance, (name, key)
        assert {"python", "torch", "numpy"} <= set(provenance["versions"])
    fig2b = read_json(results / "fig2b.json")
    assert "sha256" in fig2b["provenance"]["data"]
    assert (results / "fig2b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
