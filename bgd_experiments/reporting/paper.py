"""The published numbers of Truong & Nguyen (AMO 2020), Tables 1-3, and the grids they define.

The values live in ``paper_results.csv`` next to this module (a copy of the project's
``shared/spec/paper_results.csv``), one row per published cell.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

PAPER_CSV_NAME = "paper_results.csv"

# Orders used to lay the tables out as the paper does.
TABLE1_BATCH_SIZES: tuple[int, ...] = (12, 25, 50, 100, 200, 400, 800)
START_RATES: tuple[float, ...] = (100.0, 10.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
BASELINE_OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "mmt",
    "nag",
    "adagrad",
    "adadelta",
    "rmsprop",
    "adam",
    "adamax",
)
MBT_OPTIMIZERS: tuple[str, ...] = ("mbt_gd", "mbt_mmt", "mbt_nag")
# Beyond the paper: today's learning-rate-free optimizers, the SLS line search
# and the practitioner's hand-tuned SGD with a cosine schedule.
MODERN_OPTIMIZERS: tuple[str, ...] = ("prodigy", "dadapt_sgd", "sf_sgd", "dog", "sls", "sgd_cosine")
TABLE3_MODELS: tuple[str, ...] = (
    "resnet18",
    "preactresnet18",
    "mobilenetv2",
    "senet18",
    "densenet121",
)
TABLE3_DATASETS: tuple[str, ...] = ("cifar10", "cifar100")
TABLE3_OPTIMIZERS: tuple[str, ...] = ("mbt_mmt", "mbt_nag")

# Display names as printed in the paper.
OPTIMIZER_LABELS: dict[str, str] = {
    "sgd": "SGD",
    "mmt": "MMT",
    "nag": "NAG",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamax": "Adamax",
    "mbt_gd": "MBT-GD",
    "mbt_mmt": "MBT-MMT",
    "mbt_nag": "MBT-NAG",
}
MODEL_LABELS: dict[str, str] = {
    "resnet18": "ResNet18",
    "preactresnet18": "PreActResNet18",
    "mobilenetv2": "MobileNetV2",
    "senet18": "SENet18",
    "densenet121": "DenseNet121",
}
DATASET_LABELS: dict[str, str] = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


@dataclass(frozen=True)
class PaperCell:
    """One published number: which table, which configuration, which metric, which value."""

    table: int
    dataset: str
    model: str
    optimizer: str
    batch_size: int
    start_lr: float
    metric: str
    value: float


def same_rate(a: float | None, b: float | None) -> bool:
    """Learning rates written as ``1e-3`` and ``0.001`` (or parsed from ``lr=0.001``) are equal."""
    if a is None or b is None:
        return False
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0)


def format_rate(rate: float) -> str:
    """A start rate the way the paper writes it: ``100``, ``1``, ``1e-2``."""
    if rate >= 1:
        return f"{rate:g}"
    exponent = round(math.log10(rate))
    if math.isclose(rate, 10.0**exponent, rel_tol=1e-9):
        return f"1e{exponent}"
    return f"{rate:g}"


def _parse_rows(lines: list[str]) -> list[PaperCell]:
    cells = []
    for row in csv.DictReader(lines):
        cells.append(
            PaperCell(
                table=int(row["table"]),
                dataset=row["dataset"],
                model=row["model"],
                optimizer=row["optimizer"],
                batch_size=int(row["batch_size"]),
                start_lr=float(row["start_lr"]),
                metric=row["metric"],
                value=float(row["value"]),
            )
        )
    return cells


@lru_cache(maxsize=4)
def load_paper_results(path: str | None = None) -> tuple[PaperCell, ...]:
    """All published cells, from the packaged CSV or from ``path`` if given."""
    if path is None:
        text = resources.files(__package__).joinpath(PAPER_CSV_NAME).read_text()
    else:
        text = Path(path).read_text()
    return tuple(_parse_rows(text.splitlines()))


def paper_cells(table: int, path: str | None = None) -> list[PaperCell]:
    """The published cells of one table, in file order (the paper's order)."""
    return [cell for cell in load_paper_results(path) if cell.table == table]
