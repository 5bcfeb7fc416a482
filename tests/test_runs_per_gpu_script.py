"""scripts/bench_runs_per_gpu.py on CPU: it starts k workers at once and reports each count."""

from __future__ import annotations

import json

from scriptload import load_script


def test_best_count_needs_a_real_gain():
    bench = load_script("bench_runs_per_gpu")

    def counts(*rates):
        return [{"runs": 2**i, "aggregate_images_per_s": r} for i, r in enumerate(rates)]

    assert bench.best_count(counts(100, 180, 250, 260), 0.1) == 4  # 8 adds only 4%
    assert bench.best_count(counts(100, 105), 0.1) == 1
    assert bench.best_count(counts(100, 190, None), 0.1) == 2  # 4 runs did not fit


def test_runs_side_by_side_on_cpu(tmp_path):
    bench = load_script("bench_runs_per_gpu")
    arguments = ["--device", "cpu", "--counts", "1,2", "--model", "resnet18", "--width"]
    arguments += ["0.0625", "--precision", "fp32", "--batch-size", "16", "--images", "64"]
    arguments += ["--steps", "2", "--warmup", "1", "--out", str(tmp_path)]
    assert bench.main(arguments) == 0
    report = json.loads((tmp_path / "runs_per_gpu.json").read_text())
    assert [entry["runs"] for entry in report["counts"]] == [1, 2]
    for entry in report["counts"]:
        assert entry["finished"] == entry["runs"] and not entry["errors"]
        assert len(entry["per_run_images_per_s"]) == entry["runs"]
        assert entry["aggregate_images_per_s"] == sum(entry["per_run_images_per_s"]) > 0
    assert report["best"] in (1, 2)
    text = (tmp_path / "runs_per_gpu.md").read_text()
    assert f"jobs_per_gpu={report['best']}" in text and "| 2 |" in text
