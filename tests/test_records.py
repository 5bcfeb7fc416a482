"""summary.json and metrics.jsonl as typed records: written and read back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgd_experiments.records import ABSENT, EpochRecord, RunStatus, RunSummary
from bgd_experiments.runfolder import RunFolder

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_every_committed_summary_and_epoch_record_reads_back_exactly():
    summaries = sorted(RESULTS.rglob("summary.json"))
    metrics = sorted(RESULTS.rglob("metrics.jsonl"))
    if not summaries:
        pytest.skip("no committed run folders")
    for path in summaries:
        data = json.loads(path.read_text())
        summary = RunSummary.from_json(data)
        assert summary.to_json() == data, path
        assert summary.extra == {}, f"{path}: keys no field names: {sorted(summary.extra)}"
        assert summary.status.ended
    for path in metrics:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert [EpochRecord.from_json(line).to_json() for line in lines] == lines, path
        epochs = [record.epoch for record in RunFolder(path.parent).read_metrics()]
        assert epochs == sorted(set(epochs)), path


def test_an_absent_field_is_not_a_recorded_none_and_unknown_keys_survive(tmp_path):
    data = {
        "status": "finished",
        "run": {"model": "resnet18"},
        "best_test_acc": None,  # recorded: the clean protocol has none
        "written_by_a_newer_version": [1, 2],
    }
    summary = RunSummary.from_json(data)
    assert summary.best_test_acc is None and summary.found_lr is ABSENT
    assert summary.get("found_lr", "none") == "none"
    assert summary.extra == {"written_by_a_newer_version": [1, 2]}
    summary.write(tmp_path / "summary.json")
    again = RunSummary.read(tmp_path / "summary.json")
    assert again == summary and again.to_json() == data
    assert "found_lr" not in again.to_json()


def test_a_summary_records_only_an_ended_run():
    with pytest.raises(ValueError, match="ended run"):
        RunSummary(status=RunStatus.INCOMPLETE, run={})
    with pytest.raises(ValueError):
        RunSummary.from_json({"status": "nearly", "run": {}})
    with pytest.raises(ValueError, match="JSON object"):
        RunSummary.from_json([1, 2])  # type: ignore[arg-type]


def test_metrics_keep_the_last_record_of_an_epoch_and_name_a_bad_line(tmp_path):
    folder = RunFolder(tmp_path)
    for epoch, loss in [(1, 2.0), (2, 1.5), (2, 1.4)]:  # epoch 2 logged again on resume
        folder.append_metrics(EpochRecord(epoch=epoch, train_loss=loss, extra={"found_lr": 0.1}))
    records = folder.read_metrics()
    assert [(r.epoch, r.train_loss) for r in records] == [(1, 2.0), (2, 1.4)]
    assert records[0].get("found_lr") == 0.1 and records[0].test_acc is ABSENT
    with open(folder.metrics_file, "a") as handle:
        handle.write('{"train_loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 4"):
        folder.read_metrics()
