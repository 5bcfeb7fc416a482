"""Runs side by side (``bgd-report compare RUN RUN...``) and the run listing's other formats.

The comparison names what differs between the runs' configurations, their best and final
test accuracy and wall time, and draws their test-accuracy and learning-rate curves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bgd_experiments.io import atomic_save_figure
from bgd_experiments.reporting.report import (
    Grid,
    Report,
    Section,
    markdown_blocks,
    number_text,
    render_csv_records,
)
from bgd_experiments.reporting.runs import RunRecord, read_run
from bgd_experiments.runfolder import (
    IDENTITY_KEY,
    RESUMABLE_DIFFERENCES,
    RunFolder,
    flatten_config,
)

RUNS_CSV_COLUMNS = (
    "path",
    "dataset",
    "model",
    "optimizer",
    "lr",
    "batch_size",
    "seed",
    "status",
    "epochs_completed",
    "best_test_acc",
    "final_test_acc",
    "found_lr",
    "last_lr",
    "wall_time",
    "settings",  # the non-default settings the folder's digest stands for (JSON)
)


def last_lr(run: RunRecord) -> float | None:
    """The training rate of the last epoch (a search-only run: the found rate)."""
    if run.task != "train":
        return run.found_lr
    return next((lr for lr in reversed(run.lr_history) if lr is not None), None)


def runs_csv(runs: Sequence[RunRecord]) -> str:
    """The run listing as CSV, one row per run folder."""
    records = []
    for run in sorted(runs, key=lambda r: str(r.path)):
        row: dict[str, Any] = {key: getattr(run, key, None) for key in RUNS_CSV_COLUMNS}
        row["path"], row["last_lr"] = str(run.path), last_lr(run)
        row["settings"] = None if run.settings is None else json.dumps(run.settings)
        records.append(row)
    return render_csv_records(RUNS_CSV_COLUMNS, records)


def lr_per_epoch_report(runs: Sequence[RunRecord]) -> Report:
    """For each training run, the learning rate of every epoch (for MBT: the found one)."""
    sections = []
    for run in sorted(runs, key=lambda r: str(r.path)):
        if run.task != "train" or not run.lr_history:
            continue
        rows = [
            [
                epoch,
                number_text(lr, ".4g"),
                number_text(alpha, "g"),
                "-" if momentum is None else ("on" if momentum else "off"),
            ]
            for epoch, lr, alpha, momentum in zip(
                run.epoch_numbers,
                run.lr_history,
                run.alpha_history,
                run.momentum_history,
                strict=True,
            )
        ]
        title = f"{run.dataset}/{run.model}/{run.optimizer} lr={number_text(run.lr, 'g')}"
        sections.append(
            Section(
                notes=[f"**{title}** seed {run.seed} ({run.path})"],
                grid=Grid(["epoch", "lr", "search alpha", "momentum"], rows),
            )
        )
    if not sections:
        sections.append(Section(notes=["(no training run with per-epoch records)"]))
    return Report(sections)


def lr_per_epoch_markdown(runs: Sequence[RunRecord]) -> str:
    """:func:`lr_per_epoch_report` in Markdown, without a final newline."""
    return "\n\n".join(markdown_blocks(lr_per_epoch_report(runs)))


# ------------------------------------------------------------------------------ compare


def differing_keys(folders: Sequence[Path]) -> list[tuple[str, list[Any]]]:
    """(key, value per run) for every config key whose value is not the same in all runs;
    where the run ran and how it was displayed are left out."""
    configs = [flatten_config(RunFolder(folder).read_config()) for folder in folders]
    keys = sorted(set().union(*configs)) if configs else []
    differences = []
    for key in keys:
        # identity.* restates the other keys (what the folder's digest stands for).
        if key in RESUMABLE_DIFFERENCES - {"trainer.epochs"} or key.startswith(
            ("budget.", f"{IDENTITY_KEY}.")
        ):
            continue
        values = [config.get(key) for config in configs]
        if any(value != values[0] for value in values[1:]):
            differences.append((key, values))
    return differences


def _label(run: RunRecord, index: int) -> str:
    return f"[{index + 1}] {run.optimizer} lr={number_text(run.lr, 'g')} seed {run.seed}"


def compare_report(runs: Sequence[RunRecord]) -> Report:
    """The runs, what differs in their configs, their accuracies and wall times."""
    labels = "\n".join(f"{_label(run, i)}: {run.path}" for i, run in enumerate(runs))
    differences = differing_keys([run.path for run in runs])
    if differences:
        columns = ["key", *(f"[{i + 1}]" for i in range(len(runs)))]
        rows = [[key, *values] for key, values in differences]
        config = Section("Config differences", grid=Grid(columns, rows), level=3)
    else:
        config = Section(
            "Config differences",
            notes=["(none: the configs agree on every key that changes results)"],
            level=3,
        )
    results = [
        [
            f"[{i + 1}]",
            run.status,
            run.epochs_completed,
            number_text(run.best_test_acc, ".2f"),
            number_text(run.best_epoch, "d"),
            number_text(run.final_test_acc, ".2f"),
            number_text(last_lr(run), ".4g"),
            number_text(run.wall_time, ".1f"),
        ]
        for i, run in enumerate(runs)
    ]
    columns = [
        "run",
        "status",
        "epochs",
        "best test acc (%)",
        "best epoch",
        "final test acc (%)",
        "last lr",
        "wall time (s)",
    ]
    return Report(
        [
            Section("Runs compared", notes=[labels]),
            config,
            Section("Results", grid=Grid(columns, results), level=3),
        ]
    )


def plot_comparison(runs: Sequence[RunRecord], path_stem: Path) -> list[Path]:
    """Test accuracy and learning rate per epoch of every run, as ``<stem>.png``/``.pdf``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 4.0), constrained_layout=True)
    accuracy_axes, lr_axes = figure.subplots(1, 2)
    for i, run in enumerate(runs):
        accuracy_axes.plot(run.epoch_numbers, run.test_acc_history, label=_label(run, i))
        lrs = [
            (epoch, lr) for epoch, lr in zip(run.epoch_numbers, run.lr_history, strict=True) if lr
        ]
        if lrs:
            lr_axes.plot(*zip(*lrs, strict=True), label=_label(run, i))
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    lr_axes.set(xlabel="epoch", ylabel="learning rate", title="learning rate", yscale="log")
    for axes in (accuracy_axes, lr_axes):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    written = []
    for suffix in ("png", "pdf"):
        path = path_stem.with_suffix(f".{suffix}")
        atomic_save_figure(path, figure)
        written.append(path)
    return written


def read_runs(folders: Sequence[str | Path]) -> list[RunRecord]:
    """The records of the given run folders; a folder that is not a run raises ValueError."""
    runs = []
    for folder in folders:
        record = read_run(folder)
        if record is None:
            raise ValueError(f"{folder} is not a run folder (no summary.json or config.yaml)")
        runs.append(record)
    return runs
