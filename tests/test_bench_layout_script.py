"""The layout benchmark end to end at toy size: its report, its summary and its provenance."""

from __future__ import annotations

import json
from pathlib import Path

from scriptload import load_script

from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS


def test_the_layout_bench_times_both_layouts_and_records_where_it_ran(tmp_path: Path) -> None:
    script = load_script("bench_layout")
    argv = ["--models", "resnet18", "mobilenetv2", "--width", "0.0625", "--batch-size", "4",
            "--steps", "2", "--out", str(tmp_path)]  # fmt: skip
    script.main(argv)
    report = json.loads((tmp_path / "layout.json").read_text())
    assert list(report["models"]) == ["resnet18", "mobilenetv2"]
    for row in report["models"].values():
        assert {len(times) for times in row["steps_s"].values()} == {2}
        assert row["ratio_nchw_over_channels_last"] == row["nchw_s"] / row["channels_last_s"]
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(report["provenance"])
    assert report["command"] == (
        "python scripts/bench_layout.py --models resnet18 mobilenetv2 --width 0.0625 "
        "--batch-size 4 --steps 2"
    )
    summary = (tmp_path / "layout.md").read_text()
    assert summary == script.summary(report)
    resnet = report["models"]["resnet18"]
    assert (
        f"| resnet18 | {resnet['nchw_s']:.3f} s | {resnet['channels_last_s']:.3f} s | "
        f"{resnet['ratio_nchw_over_channels_last']:.2f} |"
    ) in summary
