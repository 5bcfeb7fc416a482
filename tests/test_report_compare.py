"""bgd-report runs --format/--out/--lr-per-epoch and bgd-report compare, on the golden runs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from bgd_experiments.reporting.cli import main

GOLDEN = Path(__file__).parent / "golden" / "results"
RESNET = GOLDEN / "runs" / "cifar10" / "resnet18"
MBT_NAG = RESNET / "mbt_nag" / "lr=0.01" / "bs=200" / "seed=0"
SGD = RESNET / "sgd" / "lr=0.1" / "bs=200" / "seed=0"


def test_runs_csv_goes_to_stdout_and_to_out(tmp_path: Path, capsys) -> None:
    args = ["runs", "--results-dir", str(GOLDEN), "--format", "csv", "--out", str(tmp_path)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert len(rows) == 17
    assert (tmp_path / "runs.csv").read_text() == stdout
    nag = next(row for row in rows if row["path"] == str(MBT_NAG))
    assert (nag["optimizer"], nag["status"], float(nag["best_test_acc"])) == (
        "mbt_nag",
        "finished",
        67.25,
    )


def test_runs_markdown_written_with_out_and_lr_per_epoch(tmp_path: Path, capsys) -> None:
    args = ["runs", "--results-dir", str(GOLDEN), "--out", str(tmp_path), "--lr-per-epoch"]
    assert main(args) == 0
    text = (tmp_path / "runs.md").read_text()
    assert text.startswith("| dataset | model | optimizer |")
    section = text.split(f"({MBT_NAG})", 1)[1]
    assert "| epoch | lr | search alpha | momentum |" in section
    assert "| 1 |" in section and "| on |" in section


def test_compare_puts_runs_side_by_side(tmp_path: Path, capsys) -> None:
    assert main(["compare", str(MBT_NAG), str(SGD), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "compare.md").read_text()
    assert "| optimizer.name | mbt_nag | sgd |" in text
    assert "| optimizer.lr | 0.01 | 0.1 |" in text
    assert "| [1] | finished | 6 | 67.25 | 5 | 67.00 |" in text
    assert "| [2] | finished | 6 | 61.00 | 3 | 58.00 |" in text
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_too_few_or_unknown_folders(tmp_path: Path) -> None:
    assert main(["compare", str(MBT_NAG)]) == 2
    assert main(["compare", str(MBT_NAG), str(tmp_path)]) == 2
    assert main(["runs", str(MBT_NAG), "--results-dir", str(GOLDEN)]) == 2


def test_runs_out_with_a_file_name_writes_that_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "listing.csv"
    assert main(["runs", "--results-dir", str(GOLDEN), "--out", str(out)]) == 0
    assert out.is_file()
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == 17
    markdown = tmp_path / "deeper" / "x.md"
    assert main(["runs", "--results-dir", str(GOLDEN), "--out", str(markdown)]) == 0
    assert markdown.read_text().startswith("| dataset | model | optimizer |")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deeper", "listing.csv", "x.md"]


def test_compare_without_out_prints_and_writes_nothing(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(MBT_NAG), str(SGD)]) == 0
    assert "| optimizer.lr | 0.01 | 0.1 |" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_a_results_dir_that_is_a_file_is_named_as_such(tmp_path: Path, capsys) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("not a folder\n")
    for artefact in ("runs", "table2"):
        assert main([artefact, "--results-dir", str(path)]) == 2
        assert f"results directory {path} is a file, not a folder" in capsys.readouterr().err
