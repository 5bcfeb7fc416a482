"""scripts/bench_mbt.py end to end on a tiny setting: it runs, and its baseline is faithful."""

from __future__ import annotations

import json

import pytest
from scriptload import load_script

from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS


def load_bench():
    return load_script("bench_mbt")


@pytest.mark.parametrize("memory_format", ["channels_last", "contiguous"])
def test_bench_runs_and_the_authors_style_search_picks_the_same_sigmas(tmp_path, memory_format):
    bench = load_bench()
    report_path = tmp_path / "bench.json"
    code = bench.main(
        [
            "--data=synthetic",
            "--width=0.0625",
            "--batch-size=8",
            "--epoch-batch-size=8",
            "--num-batches=2",
            "--steps=3",
            "--repeats=1",
            "--epoch-repeats=1",
            "--trial-repeats=1",
            "--threads=1",
            f"--memory-format={memory_format}",
            f"--json={report_path}",
        ]
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(report["provenance"])
    search = report["search"]
    # The naive baseline must make the very same decisions, or the time ratio means nothing.
    assert search["same_sigmas"] is True
    assert search["trials_fast"] == search["trials_naive"] > 0
    assert search["lr_fast"] == pytest.approx(search["lr_naive"], rel=1e-12)
    for key in ("search_ratio_fast_over_naive", "trial_fast_over_step", "epoch_ratio_restore"):
        value = search.get(key, report["epoch"].get(key))
        assert value > 0
    assert report["epoch"]["steps"] == 3
    assert set(report["warm_start"]) == {
        f"start {start} warm_start={mode}"
        for start in ("0.01", "100")
        for mode in ("carry_over", "restart", "previous_sigma", "previous_lr")
    }
    assert memory_format in report["setup"]
    assert report["command"].startswith("python scripts/bench_mbt.py --data=synthetic ")
    assert "--json" not in report["command"]  # the output file, a path of this machine
