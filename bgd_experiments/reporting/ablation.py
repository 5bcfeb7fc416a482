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
from bgd_experiments.reporting.runs import RunRecord

PairKey = tuple[str, str | None, str | None, str | None, float | None, int | None, int | None]


def _key(run: RunRecord) -> PairKey:
    return (run.task, run.dataset, run.model, run.optimizer, run.lr, run.batch_size, run.seed)


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


def ablation_markdown(pairs: Sequence[RunPair], label_a: str, label_b: str) -> str:
    """A row per paired run (best accuracy both ways, the rate of every epoch) and a summary."""
    lines = [
        f"| dataset | model | optimizer | start lr | seed | best acc {label_a} | "
        f"best acc {label_b} | diff | lr per epoch {label_a} | lr per epoch {label_b} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pair in pairs:
        run = pair.a
        diff = pair.acc_difference
        lines.append(
            f"| {run.dataset} | {run.model} | {run.optimizer} | {run.lr:g} | {run.seed} "
            f"| {_acc(run.best_test_acc)} | {_acc(pair.b.best_test_acc)} "
            f"| {'-' if diff is None else f'{diff:+.2f}'} | {_rates(run)} | {_rates(pair.b)} |"
        )
    diffs = [pair.acc_difference for pair in pairs if pair.acc_difference is not None]
    if diffs:
        ahead = sum(diff > 0 for diff in diffs)
        behind = sum(diff < 0 for diff in diffs)
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        lines += [
            "",
            f"{len(diffs)} paired runs: best test accuracy {label_a} minus {label_b} = "
            f"{statistics.fmean(diffs):+.2f} on average (sample std {spread:.2f}, "
            f"range {min(diffs):+.2f} to {max(diffs):+.2f}); {label_a} ahead in {ahead}, "
            f"behind in {behind}.",
        ]
        ratios = [
            last_lr(pair.a) / last_lr(pair.b)
            for pair in pairs
            if last_lr(pair.a) and last_lr(pair.b)
        ]
        if ratios:
            lines.append(
                f"Last epoch's rate, {label_a} / {label_b}: median "
                f"{statistics.median(ratios):.3g} (range {min(ratios):.3g}-{max(ratios):.3g})."
            )
    return "\n".join(lines)
