"""Every number the project holds as "the paper's" is printed in the paper's text.

The text is the extraction in ``shared/paper/`` next to the repository; the tests skip when it
is absent. Table cells are compared as printed digit strings ("0.0035", "93.85") at their
position on their row's line; the deterministic examples' numbers must occur in the text once
its typesetting is normalised (flattened exponents, other minus signs, spaces).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from bgd_experiments.linesearch.paper_values import PAPER_VALUES
from bgd_experiments.reporting.paper import OPTIMIZER_LABELS

REPO = Path(__file__).resolve().parents[1]
PAPER_TEXT = REPO.parent / "shared" / "paper" / "truong-nguyen-2020-backtracking-gd-part2.txt"
PAPER_CSV = REPO / "bgd_experiments" / "reporting" / "paper_results.csv"

# The column order of Tables 1 and 2 (starting learning rates, as the CSV spells them).
LR_COLUMNS = ("100", "10", "1", "1e-1", "1e-2", "1e-3", "1e-4", "1e-5", "1e-6")
# Table 2's row names as the paper prints them are the labels our tables use.
TABLE2_ROWS = OPTIMIZER_LABELS
# Table 3's row names and its columns (dataset, optimiser), left to right.
TABLE3_ROWS = {
    "resnet18": "Resnet18",
    "preactresnet18": "PreActResnet18",
    "mobilenetv2": "MobileNetV2",
    "senet18": "SENet",
    "densenet121": "DenseNet121",
}
TABLE3_COLUMNS = (
    ("cifar10", "mbt_mmt"),
    ("cifar10", "mbt_nag"),
    ("cifar100", "mbt_mmt"),
    ("cifar100", "mbt_nag"),
)

pytestmark = pytest.mark.skipif(not PAPER_TEXT.is_file(), reason="the paper's text is absent")


def _normalise(text: str) -> str:
    """The text with minus-like characters as "-" and runs of whitespace as one space."""
    for minus in ("\u2212", "\u2013", "\u2014", "\u2010", "\u2011", "\ufe63", "\uff0d"):
        text = text.replace(minus, "-")
    return re.sub(r"\s+", " ", text)


def _paper_text() -> str:
    return _normalise(PAPER_TEXT.read_text(encoding="utf-8"))


def _table_lines(first: str, last: str) -> list[list[str]]:
    """The whitespace-split lines of the paper between the lines starting with first/last."""
    lines = PAPER_TEXT.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(last))
    return [_normalise(line).split() for line in lines[start:end] if line.strip()]


def _row(lines: list[list[str]], name: str) -> list[str]:
    """The printed values on the table line whose first field is ``name``."""
    for fields in lines:
        if fields and fields[0] == name:
            return fields[1:]
    return []


def _csv_rows() -> list[dict[str, str]]:
    with PAPER_CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _missing_table_cells() -> list[str]:
    table1 = _table_lines("Table 1 ", "Applied using Resnet18")
    table2 = _table_lines(" Table 2 ", "Italic:")
    table3 = _table_lines("Table 3 ", "Bold:")
    missing = []
    for row in _csv_rows():
        table, value = row["table"], row["value"]
        if table == "1":
            printed = _row(table1, row["batch_size"])
            column = LR_COLUMNS.index(row["start_lr"])
        elif table == "2":
            printed = _row(table2, TABLE2_ROWS[row["optimizer"]])
            # The MBT rows print one value, for their default starting rate 1e-2.
            column = LR_COLUMNS.index(row["start_lr"]) if len(printed) > 1 else 0
        elif table == "3":
            printed = _row(table3, TABLE3_ROWS[row["model"]])
            column = TABLE3_COLUMNS.index((row["dataset"], row["optimizer"]))
        else:
            missing.append(f"unknown table {table}: {row}")
            continue
        found = printed[column] if column < len(printed) else None
        if found != value:
            missing.append(
                f"Table {table} {row['dataset']} {row['model']} {row['optimizer']} "
                f"bs={row['batch_size']} lr={row['start_lr']}: csv {value}, paper {found}"
            )
    return missing


def test_every_table_value_is_printed_in_its_cell() -> None:
    missing = _missing_table_cells()
    assert not missing, "values not printed in the paper:\n" + "\n".join(missing)


def test_every_table_row_is_in_the_csv() -> None:
    # The other direction: each printed Table 1 line has its nine cells in the CSV.
    cells = {(r["batch_size"], r["start_lr"]): r["value"] for r in _csv_rows() if r["table"] == "1"}
    for fields in _table_lines("Table 1 ", "Applied using Resnet18"):
        if fields[0].isdigit() and len(fields) == 10:
            assert [cells.get((fields[0], lr)) for lr in LR_COLUMNS] == fields[1:]


def _printed_forms(value: float) -> list[str]:
    """How the paper may print a number: its digits, or 10^k flattened as "10k"."""
    forms = [repr(value), f"{value:g}"]
    if value == int(value):
        forms.append(str(int(value)))
        exponent = len(str(int(value))) - 1
        if int(value) == 10**exponent and exponent > 1:
            forms.append(f"10{exponent}")
    return forms


def _occurs(number: str, text: str) -> bool:
    """``number`` occurs in ``text`` not as part of a longer number."""
    return re.search(rf"(?<![\d.]){re.escape(number)}(?![\d]|\.\d)", text) is not None


def test_every_example_number_is_printed_in_the_paper() -> None:
    text = _paper_text()
    missing = []
    for entry in PAPER_VALUES:
        numbers: list[float] = [] if entry.value is None else [entry.value]
        numbers += list(entry.point or ())
        for number in numbers:
            forms = _printed_forms(float(number))
            if not any(_occurs(form, text) for form in forms):
                missing.append(f"{entry.example} {entry.method} {entry.quantity}: {number}")
        for printed in re.findall(r"\d+(?:\.\d+)?", entry.text.replace("10^", "10")):
            if not _occurs(printed, text):
                missing.append(f"{entry.example} {entry.method} {entry.quantity}: '{printed}'")
    assert not missing, "values not printed in the paper:\n" + "\n".join(missing)
