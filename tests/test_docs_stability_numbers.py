"""The numbers docs/stability.md prints are those of the committed sweep
(``results/stability/``): each check builds a fragment of the page from sweep.csv or
provenance.json, and the page must contain it."""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path

import pytest
from pagetext import flat_text
from scriptload import load_script

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "results" / "stability"
PAGE = ROOT / "docs" / "stability.md"
MODEL_LABELS = {"mlp": "MLP 64-64-10", "cnn": "tiny CNN"}
COLUMNS = (  # (optimizer, momentum) in the page's column order
    ("mbt_gd", "0.0"), ("mbt_mmt", "0.9"), ("mbt_nag", "0.9"), ("mbt_mmt", "0.5"),
    ("mbt_nag", "0.5"),
)  # fmt: skip


def page() -> str:
    return flat_text(PAGE)


@cache
def rows() -> tuple[dict[str, str], ...]:
    with (SWEEP / "sweep.csv").open(newline="") as f:
        return tuple(csv.DictReader(f))


def cell(model: str, batch: int, optimizer: str, momentum: str, guard: bool) -> list[dict]:
    runs = [
        row for row in rows()
        if (row["model"], row["batch"], row["optimizer"], row["momentum"], row["guard"])
        == (model, str(batch), optimizer, momentum, str(guard))
    ]  # fmt: skip
    assert runs, (model, batch, optimizer, momentum, guard)
    return runs


def seeds(runs: list[dict], column: str) -> str:
    return " / ".join(run[column] for run in runs)


def span(runs: list[dict], column: str) -> str:
    values = [float(run[column]) for run in runs]
    return f"{min(values):.2f}-{max(values):.2f}"


@pytest.mark.parametrize("model", MODEL_LABELS)
@pytest.mark.parametrize("batch", [50, 200])
def test_the_divergence_table_row(model: str, batch: int) -> None:
    cells = []
    for optimizer, momentum in COLUMNS:
        runs = cell(model, batch, optimizer, momentum, guard=False)
        diverged = sum(run["diverged"] == "True" for run in runs)
        count = f"{diverged}/{len(runs)}"
        cells.append(f"**{count}** (max loss {seeds(runs, 'max_loss')})" if diverged else count)
    assert f"| {MODEL_LABELS[model]} | {batch} | {' | '.join(cells)} |" in page()


def test_the_guard_sentences() -> None:
    guarded = [row for row in rows() if row["guard"] == "True"]
    assert guarded and all(row["diverged"] == "False" for row in guarded)
    assert "With `momentum_guard=True` no cell diverges (0/2 everywhere)" in page()
    mlp_guarded = cell("mlp", 50, "mbt_mmt", "0.9", True) + cell("mlp", 50, "mbt_nag", "0.9", True)
    mlp_gd = cell("mlp", 50, "mbt_gd", "0.0", False)
    assert (
        f"the guarded MLP at batch 50 and momentum 0.9 reaches a last loss of "
        f"{span(mlp_guarded, 'last_loss')} (MBT-GD: {span(mlp_gd, 'last_loss')})"
    ) in page()
    momentum_cells = [("mbt_mmt", "0.9"), ("mbt_nag", "0.9")]
    slowed = [run for o, m in momentum_cells for run in cell("cnn", 200, o, m, True)]
    faithful = [run for o, m in momentum_cells for run in cell("cnn", 200, o, m, False)]
    assert (
        f"ends at {span(slowed, 'last_loss')} guarded against {span(faithful, 'last_loss')} "
        "faithful"
    ) in page()


def test_the_runs_short_of_diverging() -> None:
    nag = cell("mlp", 200, "mbt_nag", "0.9", False)
    worst = max(nag, key=lambda run: float(run["max_loss"]))
    assert worst["max_loss"] == worst["first_loss"]  # the page says: its first epoch
    assert f"averages a loss of {worst['max_loss']} over its first epoch on one seed" in page()
    mmt = cell("cnn", 50, "mbt_mmt", "0.9", False)
    assert all(float(run["last_loss"]) > float(run["first_loss"]) for run in mmt)
    assert (
        f"(first-epoch loss {seeds(mmt, 'first_loss')}, last {seeds(mmt, 'last_loss')})"
    ) in page()


def test_the_page_names_the_commit_and_time_of_the_sweep() -> None:
    provenance = json.loads((SWEEP / "provenance.json").read_text())
    assert provenance["git_dirty"] is False
    assert (
        f"made from the clean commit {provenance['git_commit'][:7]} in "
        f"{provenance['seconds']:.0f} s"
    ) in page()
    args = provenance["args"]
    assert f"{args['n']:,} samples, {args['epochs']} epochs, {args['search_batches']} search" in (
        page()
    )


def test_the_committed_table_is_the_sweep_rendered() -> None:
    sweep = load_script("stability_sweep")
    provenance = json.loads((SWEEP / "provenance.json").read_text())
    table = sweep.summary_table(sweep.read_sweep(SWEEP / "sweep.csv"), provenance)
    assert (SWEEP / "table.md").read_text() == table
