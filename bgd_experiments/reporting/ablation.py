"""Two results folders made with one setting changed, cell by cell (``bgd-report ablation``).

Used for the measured effect of a changed default, e.g. ``optimizer.warm_start`` (carry-over,
the authors' code, against restart): runs are paired by what they are (task, dataset, model,
optimizer, start rate, batch size, seed), not by folder path, so the two folders may hold
them under different names.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bgd_experiments.reporting.compare import last_lr
from bgd_experiments.reporting.report import Grid, Report, Section, markdown_blocks
from bgd_experiments.reporting.runs import RunRecord
from bgd_experiments.reporting.stats import (
    compare_paired,
    holm_correct,
    interval_text,
    verdict_text,
)

CHANCE = {"cifar10": 10.0, "cifar100": 1.0}  # % accuracy of a uniform guess

PairKey = tuple[str, str, str | None, str | None, str | None, float | None, int | None, int | None]


def _key(run: RunRecord) -> PairKey:
    # The protocol too: a folder may hold both protocols' runs of one cell.
    return (
        run.task,
        run.protocol,
        run.dataset,
        run.model,
        run.optimizer,
        run.lr,
        run.batch_size,
        run.seed,
    )


@dataclass(frozen=True)
class RunPair:
    a: RunRecord
    b: RunRecord

    @property
    def acc_difference(self) -> float | None:
        """Best test accuracy of ``a`` minus that of ``b`` (percentage points)."""
        if self.a.best_test_acc is None or self.b.best_test_acc is None:
            return None
        return self.a.best_test_acc - self.b.best_test_acc


def pair_runs(a: Sequence[RunRecord], b: Sequence[RunRecord]) -> list[RunPair]:
    """The training runs present in both folders, in a stable order. A key met twice on one
    side (two runs of the same cell) is ambiguous and refused."""

    def index(runs: Sequence[RunRecord], side: str) -> dict[PairKey, RunRecord]:
        found: dict[PairKey, RunRecord] = {}
        for run in runs:
            if run.task != "train":
                continue
            if _key(run) in found:
                raise ValueError(
                    f"{side}: two runs of one cell: {found[_key(run)].path}, {run.path}"
                )
            found[_key(run)] = run
        return found

    left, right = index(a, "first folder"), index(b, "second folder")
    keys = sorted(set(left) & set(right), key=lambda k: tuple(str(part) for part in k))
    return [RunPair(left[key], right[key]) for key in keys]


def _rates(run: RunRecord) -> str:
    return " → ".join("-" if lr is None else f"{lr:.3g}" for lr in run.lr_history) or "-"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ablation_report(pairs: Sequence[RunPair], label_a: str, label_b: str) -> Report:
    """A row per paired run (best accuracy both ways, the rate of every epoch) and a summary."""
    rows = []
    for pair in pairs:
        run = pair.a
        diff = pair.acc_difference
        rows.append(
            [
                run.dataset,
                run.model,
                run.optimizer,
                f"{run.lr:g}",
                run.seed,
                _acc(run.best_test_acc),
                _acc(pair.b.best_test_acc),
                "-" if diff is None else f"{diff:+.2f}",
                _rates(run),
                _rates(pair.b),
            ]
        )
    columns = [
        "dataset",
        "model",
        "optimizer",
        "start lr",
        "seed",
        f"best acc {label_a}",
        f"best acc {label_b}",
        "diff",
        f"lr per epoch {label_a}",
        f"lr per epoch {label_b}",
    ]
    summary = _summary_paragraphs(pairs, label_a, label_b)
    return Report([Section(grid=Grid(columns, rows), after=summary)])


def ablation_markdown(pairs: Sequence[RunPair], label_a: str, label_b: str) -> str:
    """:func:`ablation_report` in Markdown, without a final newline."""
    return "\n\n".join(markdown_blocks(ablation_report(pairs, label_a, label_b)))


def _summary_paragraphs(pairs: Sequence[RunPair], label_a: str, label_b: str) -> list[str]:
    """Per dataset (never pooled: a dataset whose networks sit at chance would drown the
    other's effect): the paired mean difference with its 95% interval, Holm over datasets,
    the mean accuracy against chance, ahead/behind counts and the last rates' ratio."""
    datasets = sorted({pair.a.dataset or "unknown" for pair in pairs})
    per_dataset = {
        name: [
            p for p in pairs if (p.a.dataset or "unknown") == name and p.acc_difference is not None
        ]
        for name in datasets
    }
    comparisons = holm_correct(
        [compare_paired([p.acc_difference for p in per_dataset[name]]) for name in datasets]  # type: ignore[misc]
    )
    paragraphs = []
    for name, comparison in zip(datasets, comparisons, strict=True):
        here = per_dataset[name]
        if not here:
            continue
        diffs = [p.acc_difference for p in here if p.acc_difference is not None]
        ahead = sum(diff > 0 for diff in diffs)
        behind = sum(diff < 0 for diff in diffs)
        accuracies = [
            acc for p in here for acc in (p.a.best_test_acc, p.b.best_test_acc) if acc is not None
        ]
        chance = CHANCE.get(name)
        level = "" if chance is None else f"; chance is {chance:g}%"
        text = (
            f"{name}: {len(diffs)} paired runs (mean best test accuracy "
            f"{statistics.fmean(accuracies):.1f}%{level}): {label_a} minus {label_b} = "
        )
        if comparison is None:
            text += f"{statistics.fmean(diffs):+.2f} (one pair: no interval)"
        else:
            text += f"{interval_text(comparison)} (95% interval; {verdict_text(comparison)})"
        text += f"; {label_a} ahead in {ahead}, behind in {behind} of {len(diffs)}."
        ratios = [last_lr(p.a) / last_lr(p.b) for p in here if last_lr(p.a) and last_lr(p.b)]
        if ratios:
            text += (
                f"\n{name}: last epoch's rate, {label_a} / {label_b}: median "
                f"{statistics.median(ratios):.3g} (range {min(ratios):.3g}-{max(ratios):.3g})."
            )
        paragraphs.append(text)
    if paragraphs:
        paragraphs.append(
            "Holm over the datasets' tests; the paired differences share seed, cell and "
            "initial weights. The datasets are never pooled."
        )
    return paragraphs
