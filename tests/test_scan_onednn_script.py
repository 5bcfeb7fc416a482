"""The oneDNN scan script end to end on a few safe shapes (it runs in its own processes)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scriptload import load_script

from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "scan_onednn.py"


def test_scan_compares_every_shape_and_writes_its_table(tmp_path: Path) -> None:
    command = [
        sys.executable, str(SCRIPT), "--isa", "default", "AVX2", "--models", "resnet18",
        "--widths", "0.25", "--train-batches", "3", "--eval-batches", "7", "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (report,) = tmp_path.glob("*.json")
    cases = json.loads(report.read_text())["cases"]
    provenance = json.loads(report.read_text())["meta"]["provenance"]
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(provenance)
    # ResNet18 at width 0.25 has 11 distinct convolutions; each runs a training batch of 3
    # (with a float64 reference, batch <= 25) and a forward-only batch of 7, at both ISAs.
    assert len(cases) == 22
    for case in cases:
        assert set(case["results"]) == {"default", "AVX2"}
        for outcome in case["results"].values():
            assert outcome["verdict"] == "ok"
            assert max(outcome["layout_error"].values()) < 1e-4
            if not case["forward_only"]:
                assert set(outcome["layout_error"]) == {"output", "input_grad", "weight_grad"}
                assert max(outcome["nchw_vs_float64"].values()) < 1e-4
    summary = report.with_suffix(".md").read_text()
    assert "| AVX2 | Intel AVX2 | 22 | 22 | 0 | 0 | 0 |" in summary
    assert f"- Made from commit {provenance['git_commit'][:7]} (" in summary
    # The command reproduces the scan and names no folder of this machine.
    assert "- Command: `python scripts/scan_onednn.py --isa default AVX2 --models" in summary
    assert str(tmp_path) not in summary
    # A committed report (gzipped) renders back to the summary the scan wrote.
    gzipped = tmp_path / "report.json.gz"
    gzipped.write_bytes(gzip.compress(report.read_bytes()))
    rendered = subprocess.run(
        [sys.executable, str(SCRIPT), "--summary-of", str(gzipped)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert rendered.stdout == summary


def test_the_summary_names_evaluation_batches_only_when_there_are_some() -> None:
    script = _load_script()
    shape = script.ConvShape(4, 8, 1, 2, 0, 1, 32, 32, False)
    result = {"index": 0, "layout_error": {"output": 0.0}}
    meta = {
        "cpu": "cpu", "avx512": False, "torch": "t", "onednn": "o", "models": ["resnet18"],
        "widths": [0.25], "train_batches": [3], "eval_batches": [], "threads": 2,
        "wall": {"AVX2": 1.0},
    }  # fmt: skip
    report = {
        "meta": {**meta, "isa": {"AVX2": "Intel AVX2"}},
        "cases": [
            {"shape": script.asdict(shape), "batch": 3, "forward_only": False,
             "models": ["resnet18@0.25"], "results": {"AVX2": result}},
        ],
    }  # fmt: skip
    summary = script.summary_from_report(report)
    assert "training batches 3 (forward, input, weight and bias gradients); 1 cases" in summary
    assert "evaluation" not in summary
    report["meta"]["eval_batches"] = [1000]
    assert "evaluation batches 1000 (forward); 1 cases" in script.summary_from_report(report)


def _load_script():
    return load_script("scan_onednn")


def test_a_torn_log_line_is_skipped_and_a_crash_record_starts_a_line(tmp_path: Path) -> None:
    # A worker killed in the middle of a write leaves a partial last line; the scanner reads
    # the log while a worker writes, and appends its crash record after such a line.
    script = _load_script()
    log = tmp_path / "cpu.AVX2.log"
    log.write_text('{"started": 0}\n{"index": 0, "layout_error": {}}\n{"started": 1}\n{"ind')
    assert script.log_entries(log) == [
        {"started": 0},
        {"index": 0, "layout_error": {}},
        {"started": 1},
    ]
    assert script.last_entry(log) == {"started": 1}
    script.append_record(log, {"index": 1, "crash": True, "how": "hang"})
    assert script.read_log(log) == {
        0: {"index": 0, "layout_error": {}},
        1: {"index": 1, "crash": True, "how": "hang"},
    }
    assert script.log_entries(tmp_path / "absent.log") == []


def test_a_report_that_inflates_past_the_bound_is_refused(tmp_path: Path) -> None:
    script = _load_script()
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(gzip.compress(b" " * (script.MAX_REPORT_BYTES + 1)))
    assert bomb.stat().st_size < 2**20  # small on disk, too large inflated
    with pytest.raises(ValueError, match="not a scan report"):
        script.read_report(bomb)
    plain = tmp_path / "report.json"
    plain.write_text('{"meta": {}, "cases": []}')
    assert script.read_report(plain) == {"meta": {}, "cases": []}
