"""Figure 3: the learning rate MBT-MMT / MBT-NAG chose per epoch (ResNet18, CIFAR-10/100).

The curves come from the Table-3 runs' ``metrics.jsonl`` (no retraining). The paper's visible
drop is the plateau switch of alpha from 1e-4 to 0.5; it is marked where ``search_alpha``
changes between consecutive searched epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from bgd_experiments.io import atomic_write_text, save_figure_files
from bgd_experiments.reporting.paper import DATASET_LABELS, OPTIMIZER_LABELS
from bgd_experiments.reporting.report import Grid, render_csv
from bgd_experiments.reporting.runs import RunRecord
from bgd_experiments.reporting.tables import build_table3
from bgd_experiments.runfolder import RunStatus

FIG3_MODEL = "resnet18"
FIG3_DATASETS = ("cifar10", "cifar100")
FIG3_OPTIMIZERS = ("mbt_mmt", "mbt_nag")
FIG3_CSV_COLUMNS = (
    "dataset",
    "model",
    "optimizer",
    "seed",
    "status",
    "epoch",
    "lr",
    "search_alpha",
    "momentum_enabled",
    "alpha_switch",
)
_COLOURS = {"mbt_mmt": "tab:blue", "mbt_nag": "tab:orange"}


@dataclass
class LrCurve:
    """The per-epoch lr of one run, and the epochs where the search's alpha changed."""

    dataset: str
    optimizer: str
    seed: int | None
    status: str
    epochs: list[int]
    lrs: list[float | None]
    alphas: list[float | None]
    momentum: list[bool | None]
    switch_epochs: list[int]
    best_test_acc: float | None = None  # % (for the panel's chance-level note)
    run: RunRecord | None = field(default=None, repr=False, compare=False)  # for the budget


def alpha_switch_epochs(epochs: Sequence[int], alphas: Sequence[float | None]) -> list[int]:
    """Epochs whose search alpha differs from the previous searched epoch's (None = no search)."""
    switches = []
    previous: float | None = None
    for epoch, alpha in zip(epochs, alphas, strict=True):
        if alpha is None:
            continue
        if previous is not None and alpha != previous:
            switches.append(epoch)
        previous = alpha
    return switches


def fig3_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The training runs Figure 3 can draw from (for its provenance warnings)."""
    return [
        run
        for run in runs
        if run.task == "train"
        and run.model == FIG3_MODEL
        and run.dataset in FIG3_DATASETS
        and run.optimizer in FIG3_OPTIMIZERS
    ]


def fig3_curves(runs: Sequence[RunRecord], paper_csv: str | None = None) -> list[LrCurve]:
    """The curves to plot: the same runs Table 3 uses for ResNet18, every seed."""
    table = build_table3(runs, paper_csv)
    curves = []
    for dataset in FIG3_DATASETS:
        for optimizer in FIG3_OPTIMIZERS:
            cell = next(
                (
                    c
                    for c in table.cells
                    if c.model == FIG3_MODEL and c.dataset == dataset and c.optimizer == optimizer
                ),
                None,
            )
            for run in cell.runs if cell else []:
                if not run.lr_history:
                    continue
                curves.append(
                    LrCurve(
                        dataset=dataset,
                        optimizer=optimizer,
                        seed=run.seed,
                        status=run.status,
                        epochs=list(run.epoch_numbers),
                        lrs=list(run.lr_history),
                        alphas=list(run.alpha_history),
                        momentum=list(run.momentum_history),
                        switch_epochs=alpha_switch_epochs(run.epoch_numbers, run.alpha_history),
                        best_test_acc=run.best_test_acc,
                        run=run,
                    )
                )
    return curves


def render_fig3_csv(curves: Sequence[LrCurve]) -> str:
    """The plotted data, one row per (run, epoch)."""
    rows = [
        [
            curve.dataset,
            FIG3_MODEL,
            curve.optimizer,
            "" if curve.seed is None else curve.seed,
            curve.status,
            epoch,
            "" if lr is None else repr(lr),
            "" if alpha is None else repr(alpha),
            "" if momentum is None else str(bool(momentum)).lower(),
            str(epoch in curve.switch_epochs).lower(),
        ]
        for curve in curves
        for epoch, lr, alpha, momentum in zip(
            curve.epochs, curve.lrs, curve.alphas, curve.momentum, strict=True
        )
    ]
    return render_csv(Grid(FIG3_CSV_COLUMNS, rows))


def _switch_label(curve: LrCurve, epoch: int) -> str:
    """``alpha switch (1e-4 → 0.5)`` with the alphas actually logged around ``epoch``."""
    index = curve.epochs.index(epoch)
    before = [alpha for alpha in curve.alphas[:index] if alpha is not None]
    after = curve.alphas[index]
    if before and after is not None:
        return f"alpha switch ({before[-1]:g} → {after:g})"
    return "alpha switch"


# % accuracy of a uniform guess; a panel whose best run stays below CHANCE_FACTOR times it is
# said to be at chance.
CHANCE = {"cifar10": 10.0, "cifar100": 1.0}
CHANCE_FACTOR = 2.0
# A rate axis spanning less than this factor is drawn linear (a log axis would blow a small
# wobble up to the full panel).
LOG_AXIS_MIN_RATIO = 10.0


def budget_text(runs: Sequence[RunRecord]) -> str:
    """The budget of ``runs`` for a figure title: model and width, images, epochs, seeds."""

    def join(values: set[Any], fmt: str = "{}") -> str:
        ordered = sorted(values, key=lambda v: (v is None, v))
        return ", ".join("all" if v is None else fmt.format(v) for v in ordered) or "?"

    models = join({run.model for run in runs})
    widths = join({run.width for run in runs if run.width is not None}, "{:g}")
    images = join({run.train_subset for run in runs}, "{:,}")
    epochs = join({run.epochs for run in runs if run.epochs})
    seeds = join({run.seed for run in runs if run.seed is not None})
    return f"{models} width {widths}, {images} training images, {epochs} epochs, seeds {seeds}"


def _chance_note(panel: Sequence[LrCurve], dataset: str) -> str | None:
    accuracies = [curve.best_test_acc for curve in panel if curve.best_test_acc is not None]
    chance = CHANCE.get(dataset)
    if not accuracies or chance is None:
        return None
    text = f"best test acc {min(accuracies):.1f}-{max(accuracies):.1f}% (chance {chance:g}%)"
    if max(accuracies) < CHANCE_FACTOR * chance:
        text += ": the networks are at chance"
    return text


def _plot(curves: Sequence[LrCurve], budget: str = "") -> plt.Figure:
    figure, axes = plt.subplots(1, len(FIG3_DATASETS), figsize=(10, 4), sharey=False)
    several_seeds = len({curve.seed for curve in curves}) > 1
    for axis, dataset in zip(axes, FIG3_DATASETS, strict=True):
        panel = [curve for curve in curves if curve.dataset == dataset]
        switch_labelled = False
        for curve in panel:
            points = [
                (epoch, lr)
                for epoch, lr in zip(curve.epochs, curve.lrs, strict=True)
                if lr is not None and lr > 0  # a log axis cannot show 0
            ]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            label = OPTIMIZER_LABELS[curve.optimizer]
            if several_seeds:
                label += f" (seed {curve.seed})"
            if curve.status != RunStatus.FINISHED:
                label += f" [{curve.status}]"
            colour = _COLOURS.get(curve.optimizer)
            axis.plot(xs, ys, marker=".", color=colour, label=label)
            by_epoch = dict(points)
            for epoch in curve.switch_epochs:
                if epoch not in by_epoch:
                    continue
                axis.axvline(epoch, color=colour, linestyle=":", linewidth=1)
                axis.plot(
                    [epoch],
                    [by_epoch[epoch]],
                    marker="v",
                    markersize=9,
                    color=colour,
                    linestyle="none",
                    label=None if switch_labelled else _switch_label(curve, epoch),
                )
                switch_labelled = True
        rates = [lr for curve in panel for lr in curve.lrs if lr is not None and lr > 0]
        if rates and max(rates) / min(rates) >= LOG_AXIS_MIN_RATIO:
            axis.set_yscale("log")
            scale = "log"
        else:
            axis.set_ylim(bottom=0.0)  # linear from 0: a +-20% wobble looks like one
            scale = "linear from 0"
        if rates:
            axis.text(
                0.02,
                0.97,
                f"{scale}; rates {min(rates):.3g}-{max(rates):.3g}",
                transform=axis.transAxes,
                fontsize=8,
                va="top",
            )
        note = _chance_note(panel, dataset)
        if note:
            axis.text(
                0.02,
                0.89,
                note,
                transform=axis.transAxes,
                fontsize=8,
                va="top",
                color="tab:red" if "at chance" in note else "black",
            )
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        absent = [
            OPTIMIZER_LABELS[name]
            for name in FIG3_OPTIMIZERS
            if not any(curve.optimizer == name for curve in panel)
        ]
        if panel and absent:
            axis.text(
                0.02,
                0.02,
                "missing: " + ", ".join(absent),
                transform=axis.transAxes,
                fontsize=8,
                color="tab:red",
            )
        axis.set_xlabel("epoch")
        axis.set_ylabel("learning rate chosen by the search")
        axis.set_title(f"ResNet18, {DATASET_LABELS[dataset]}")
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
        else:
            axis.text(
                0.5,
                0.5,
                "missing: no MBT-MMT/NAG run",
                transform=axis.transAxes,
                ha="center",
                va="center",
            )
    title = "Figure 3: learning rate per epoch of MBT-MMT and MBT-NAG"
    figure.suptitle(f"{title}\n{budget}" if budget else title, fontsize=10)
    figure.tight_layout()
    return figure


def write_fig3(
    runs: Sequence[RunRecord], out_dir: str | Path, paper_csv: str | None = None
) -> list[Path]:
    """Write ``fig3.png``, ``fig3.pdf`` and ``fig3.csv`` (the plotted data) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = fig3_curves(runs, paper_csv)
    plotted = [curve.run for curve in curves if curve.run is not None]
    written = save_figure_files(_plot(curves, budget_text(plotted)), out, "fig3")
    csv_path = out / "fig3.csv"
    atomic_write_text(csv_path, render_fig3_csv(curves))
    written.append(csv_path)
    return written
