"""``experiment=table2_plus``: Table 2's optimizers and today's baselines, under both protocols.

ResNet18 on CIFAR-10 at batch 200, each of 17 optimizers at its option's default rate (the
mapping comes from the caller; :func:`read_default_lrs` composes it from ``conf/``),
over seeds, under the paper's protocol (best test accuracy over epochs) and the clean one
(test accuracy at the best validation epoch). Three products:

* an accuracy table per protocol: mean ± std over seeds, the counts of diverged / stopped
  runs, the difference to MBT-NAG with its 95% interval and Holm-corrected Welch test, and the
  paper's Table 2 value;
* a cost table per protocol: mini-batch passes and wall time until the accuracy curve (paper:
  test, clean: validation) first reaches a target, and the passes per training step;
* a figure of those accuracy curves against cumulative passes and wall time.

The differences to MBT-NAG are read by the one method of :mod:`.stats` (Welch interval,
Holm over the protocol's comparisons).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bgd_experiments.compose import compose_config, group_options
from bgd_experiments.io import atomic_write_text, save_figure_files
from bgd_experiments.reporting.paper import (
    BASELINE_OPTIMIZERS,
    MBT_OPTIMIZERS,
    MODERN_OPTIMIZERS,
    OPTIMIZER_LABELS,
    format_rate,
    paper_cells,
    same_rate,
)
from bgd_experiments.reporting.report import (
    Grid,
    Report,
    Section,
    number_text,
    render_csv,
    render_md,
)
from bgd_experiments.reporting.runs import RunRecord
from bgd_experiments.reporting.stats import (
    ALPHA,
    NOT_RESOLVED,
    Comparison,
    WelchTest,
    compare,
    holm_correct,
    interval_text,
    welch_t_test,
)
from bgd_experiments.reporting.writers import (
    MIXED_SETTINGS_ADVICE,
    csv_number,
    dirty_warning,
    mixes_settings,
    provenance,
    runs_data_note,
)
from bgd_experiments.runfolder import RunStatus

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DATASET = "cifar10"
MODEL = "resnet18"
BATCH_SIZE = 200
PLUS_OPTIMIZERS: tuple[str, ...] = (*BASELINE_OPTIMIZERS, *MBT_OPTIMIZERS, *MODERN_OPTIMIZERS)
REFERENCE_OPTIMIZER = "mbt_nag"
PROTOCOLS: tuple[str, ...] = ("paper", "clean")
SIGNIFICANCE = ALPHA
CIFAR_TRAIN_IMAGES = 50_000
# The default target is this share of the protocol's best mean accuracy, rounded down to a
# multiple of TARGET_STEP percentage points.
TARGET_SHARE = 0.8
TARGET_STEP = 5.0
WITHIN_NOISE = f"{NOT_RESOLVED} (Holm p >= {SIGNIFICANCE:g})"
NO_VALUE = "—"  # a cell without a number
# What the "lr" of each optimizer means: a constant rate, the start of a search, or a
# multiplier of an estimated step (Prodigy, D-Adapt, DoG: 1.0 keeps their own estimate).
LR_MEANING = {
    "mbt_gd": "start rate of a search",
    "mbt_mmt": "start rate of a search",
    "mbt_nag": "start rate of a search",
    "sls": "start rate of a search",
    "prodigy": "multiplier",
    "dadapt_sgd": "multiplier",
    "dog": "multiplier",
    "sgd_cosine": "peak of a schedule",
}
CONSTANT_RATE = "constant rate"

ACCURACY_METRIC = {
    "paper": "best test accuracy over epochs",
    "clean": "test accuracy at the best validation epoch",
}
CURVE_METRIC = {"paper": "test accuracy", "clean": "validation accuracy"}
MODERN_LABELS = {
    "prodigy": "Prodigy",
    "dadapt_sgd": "D-Adapt SGD",
    "sf_sgd": "Schedule-free SGD",
    "dog": "DoG",
    "sls": "SLS",
    "sgd_cosine": "SGD + cosine",
}
CSV_COLUMNS = (
    "protocol",
    "optimizer",
    "family",
    "lr",
    "lr_meaning",
    "metric",
    "mean",
    "std",
    "n",
    "n_runs",
    "n_finished",
    "n_stopped_early",
    "n_diverged",
    "n_incomplete",
    "paper",
    "diff_vs_mbt_nag",
    "welch_t",
    "welch_df",
    "welch_p",
    "p_holm",
    "ci_low",
    "ci_high",
    "detectable",
    "verdict",
    "target",
    "n_reached",
    "n_curves",
    "forward_to_target",
    "backward_to_target",
    "passes_to_target",
    "median_passes_to_target_censored",
    "wall_time_to_target",
    "passes_per_step",
    "total_passes",
    "total_wall_time",
    "seeds",
)


def label(optimizer: str) -> str:
    """Display name: the paper's for its 11 optimizers, a readable one for the modern six."""
    return OPTIMIZER_LABELS.get(optimizer) or MODERN_LABELS.get(optimizer, optimizer)


def family(optimizer: str) -> str:
    """ "paper baseline", "MBT" or "modern"."""
    if optimizer in MBT_OPTIMIZERS:
        return "MBT"
    return "paper baseline" if optimizer in BASELINE_OPTIMIZERS else "modern"


# --------------------------------------------------------------------------- default rates


def read_default_lrs(config_dir: str | Path) -> dict[str, float]:
    """``{optimizer: lr}`` of each option of the optimizer group that sets one, as bgd-run
    composes ``optimizer=<name>`` from ``config_dir`` (MBT's start rate comes from the shared
    ``mbt_optimizer_base.yaml`` its options include); an option that does not compose is
    left out; none from a folder that does not exist."""
    rates: dict[str, float] = {}
    if not Path(config_dir).is_dir():
        return rates
    for name in group_options("optimizer", config_dir):
        try:
            rate = compose_config([f"optimizer={name}"], config_dir)["optimizer"].get("lr")
        except Exception:  # Hydra's composition errors share no narrower base
            continue
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            rates[name] = float(rate)
    return rates


# --------------------------------------------------------------------------- selection


def table2_plus_runs(
    runs: Sequence[RunRecord], default_lrs: Mapping[str, float]
) -> list[RunRecord]:
    """The training runs of the experiment: CIFAR-10, ResNet18, batch 200, one of the 17
    optimizers at its default rate (other rates of a Table 2 sweep are left out)."""
    return [
        run
        for run in runs
        if run.task == "train"
        and run.dataset == DATASET
        and run.model == MODEL
        and run.batch_size == BATCH_SIZE
        and run.optimizer in PLUS_OPTIMIZERS
        and same_rate(run.lr, default_lrs.get(run.optimizer or ""))
    ]


def run_accuracy(run: RunRecord) -> float | None:
    """The run's accuracy in its protocol (paper: best test; clean: test at best validation)."""
    return run.test_acc_at_best_val if run.protocol == "clean" else run.best_test_acc


def accuracy_curve(run: RunRecord) -> list[float | None]:
    """The per-epoch accuracy a target is read on: test (paper) or validation (clean)."""
    return run.val_acc_history if run.protocol == "clean" else run.test_acc_history


def steps_per_epoch(run: RunRecord) -> int | None:
    """Training steps of one full epoch: ceil(training images / batch), the training images
    being the subset, else CIFAR's 50,000 less the validation images under clean."""
    if not run.batch_size:
        return None
    images = run.train_subset
    if images is None:
        held_out = (run.val_size or 0) if run.protocol == "clean" else 0
        images = CIFAR_TRAIN_IMAGES - held_out
    return math.ceil(images / run.batch_size)


def training_steps(run: RunRecord) -> float | None:
    """Training steps of the whole run: logged per epoch where the run does, else estimated."""
    logged = [steps for steps in run.steps_history if steps is not None]
    if run.steps_history and len(logged) == len(run.steps_history):
        return float(sum(logged))
    per_epoch = steps_per_epoch(run)
    return None if per_epoch is None else float(per_epoch * len(run.epoch_numbers))


def _cumulative(values: Sequence[float | None]) -> list[float | None]:
    """Running sums; None from the first epoch that did not log the value on."""
    sums: list[float | None] = []
    total: float | None = 0.0
    for value in values:
        total = None if total is None or value is None else total + value
        sums.append(total)
    return sums


@dataclass(frozen=True)
class TargetCost:
    """What one run spent up to the first epoch whose accuracy curve reached the target."""

    epoch: int
    forward: float | None
    backward: float | None
    wall_time: float | None

    @property
    def passes(self) -> float | None:
        if self.forward is None or self.backward is None:
            return None
        return self.forward + self.backward


def cost_to_target(run: RunRecord, target: float) -> TargetCost | None:
    """Cumulative passes and wall time up to and including the first epoch whose accuracy
    (paper: test, clean: validation) is >= ``target``; None if no epoch reached it."""
    forward = _cumulative(run.forward_passes_history)
    backward = _cumulative(run.backward_passes_history)
    wall = _cumulative(run.epoch_time_history)
    for index, accuracy in enumerate(accuracy_curve(run)):
        if accuracy is not None and accuracy >= target:
            return TargetCost(
                epoch=run.epoch_numbers[index],
                forward=forward[index] if index < len(forward) else None,
                backward=backward[index] if index < len(backward) else None,
                wall_time=wall[index] if index < len(wall) else None,
            )
    return None


# --------------------------------------------------------------------------- aggregation


def _mean(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.fmean(known) if known else None


@dataclass
class Row:
    """One (protocol, optimizer): its accuracy over seeds and its cost."""

    protocol: str
    optimizer: str
    lr: float | None
    runs: list[RunRecord] = field(default_factory=list, repr=False)
    values: list[float] = field(default_factory=list)  # per ended run, in seed order
    paper: float | None = None  # the paper's Table 2 value at this rate (its 11 optimizers)
    welch: WelchTest | None = None  # against MBT-NAG of the same protocol
    comparison: Comparison | None = None  # the same, with its interval and Holm p
    diff: float | None = None  # mean - MBT-NAG's mean
    has_reference: bool = True  # False: no MBT-NAG run in this protocol to compare with
    target: float | None = None
    costs: list[TargetCost | None] = field(default_factory=list)  # per run with a curve
    passes_per_step: float | None = None  # mean over runs: forward passes / training steps
    total_passes: float | None = None  # mean over runs: forward + backward of the whole run
    total_wall_time: float | None = None  # mean over runs: sum of epoch times

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def n(self) -> int:
        return len(self.values)

    def count(self, status: str) -> int:
        return sum(run.status == status for run in self.runs)

    @property
    def ended_runs(self) -> list[RunRecord]:
        return [run for run in self.runs if run.status != RunStatus.INCOMPLETE]

    @property
    def seeds(self) -> list[int]:
        return sorted({run.seed for run in self.runs if run.seed is not None})

    @property
    def verdict(self) -> str:
        """How this optimizer compares with MBT-NAG: within noise, or which one is better."""
        if self.optimizer == REFERENCE_OPTIMIZER:
            return "reference"
        if not self.has_reference:
            return "n/a (no MBT-NAG run)"
        if self.comparison is None or self.diff is None:
            return "n/a (needs 2 seeds or more on both sides)"
        if self.comparison.verdict == NOT_RESOLVED:
            return WITHIN_NOISE
        return "MBT-NAG better" if self.diff < 0 else "MBT-NAG worse"

    @property
    def reached(self) -> list[TargetCost]:
        return [cost for cost in self.costs if cost is not None]

    def median_to_target(self, attribute: str) -> float | None:
        """Median over all runs with a curve of one of TargetCost's quantities, a run that
        never reached the target counting as censored (beyond its budget); None when half
        of the runs or more never reached it (the median is then beyond the budget)."""
        if not self.costs:
            return None
        values = sorted(
            math.inf if cost is None else getattr(cost, attribute) for cost in self.costs
        )
        middle = len(values) // 2
        median = values[middle] if len(values) % 2 else 0.5 * (values[middle - 1] + values[middle])
        return None if math.isinf(median) else median

    def mean_to_target(self, attribute: str) -> float | None:
        """Mean over the runs that reached the target of one of TargetCost's quantities."""
        return _mean([getattr(cost, attribute) for cost in self.reached])


@dataclass
class Table2Plus:
    """The rows of both protocols (protocol order, then the 17 optimizers' order)."""

    rows: list[Row]
    targets: dict[str, float | None]
    target_given: bool  # True: --target; False: the default rule
    default_lrs: dict[str, float]

    @property
    def runs(self) -> list[RunRecord]:
        return [run for row in self.rows for run in row.runs]

    def protocol_rows(self, protocol: str) -> list[Row]:
        return [row for row in self.rows if row.protocol == protocol]


def default_target(best_mean: float | None) -> float | None:
    """A round target: TARGET_SHARE of the best mean accuracy, rounded down to a multiple of
    TARGET_STEP points (to a whole point below TARGET_STEP)."""
    if best_mean is None:
        return None
    share = TARGET_SHARE * best_mean
    rounded = TARGET_STEP * math.floor(share / TARGET_STEP)
    return rounded if rounded > 0 else float(math.floor(share))


def _paper_values(paper_csv: str | None) -> dict[tuple[str, float], float]:
    return {
        (cell.optimizer, cell.start_lr): cell.value
        for cell in paper_cells(2, paper_csv)
        if cell.dataset == DATASET and cell.model == MODEL and cell.batch_size == BATCH_SIZE
    }


def _paper_value(
    values: Mapping[tuple[str, float], float], optimizer: str, lr: float | None
) -> float | None:
    for (name, rate), value in values.items():
        if name == optimizer and same_rate(rate, lr):
            return value
    return None


def _fill_cost(row: Row, target: float | None) -> None:
    row.target = target
    # As in the accuracy table, an interrupted run is not a result.
    with_curve = [run for run in row.ended_runs if run.epoch_numbers]
    row.costs = [cost_to_target(run, target) if target is not None else None for run in with_curve]
    ratios, totals, walls = [], [], []
    for run in with_curve:
        forward = [value for value in run.forward_passes_history if value is not None]
        backward = [value for value in run.backward_passes_history if value is not None]
        steps = training_steps(run)
        if forward and len(forward) == len(run.epoch_numbers) and steps:
            ratios.append(sum(forward) / steps)
        if forward and backward:
            totals.append(sum(forward) + sum(backward))
        times = [value for value in run.epoch_time_history if value is not None]
        if times:
            walls.append(sum(times))
    row.passes_per_step = _mean(ratios)
    row.total_passes = _mean(totals)
    row.total_wall_time = _mean(walls)


def build_table2_plus(
    runs: Sequence[RunRecord],
    default_lrs: Mapping[str, float],
    target: float | None = None,
    paper_csv: str | None = None,
) -> Table2Plus:
    """Group the experiment's runs by (protocol, optimizer) over seeds; ``target`` (accuracy
    in %) for the cost table, else :func:`default_target` per protocol."""
    chosen = table2_plus_runs(runs, default_lrs)
    paper_values = _paper_values(paper_csv)
    rows: list[Row] = []
    targets: dict[str, float | None] = {}
    for protocol in PROTOCOLS:
        protocol_rows = []
        for optimizer in PLUS_OPTIMIZERS:
            group = sorted(
                (run for run in chosen if run.protocol == protocol and run.optimizer == optimizer),
                key=lambda run: (run.seed is None, run.seed or 0, str(run.path)),
            )
            if not group:
                continue
            lr = default_lrs.get(optimizer)
            row = Row(protocol, optimizer, lr, runs=group)
            # An interrupted run's best-so-far is not a result: only ended runs count.
            row.values = [
                value for run in row.ended_runs if (value := run_accuracy(run)) is not None
            ]
            row.paper = _paper_value(paper_values, optimizer, lr)
            protocol_rows.append(row)
        reference = next(
            (row for row in protocol_rows if row.optimizer == REFERENCE_OPTIMIZER), None
        )
        for row in protocol_rows:
            row.has_reference = reference is not None
            if reference is None or row is reference:
                continue
            if row.mean is not None and reference.mean is not None:
                row.diff = row.mean - reference.mean
            row.welch = welch_t_test(row.values, reference.values)
            row.comparison = compare(row.values, reference.values)
        # Holm over this protocol's comparisons with MBT-NAG.
        corrected = holm_correct([row.comparison for row in protocol_rows])
        for row, comparison in zip(protocol_rows, corrected, strict=True):
            row.comparison = comparison
        means = [row.mean for row in protocol_rows if row.mean is not None]
        targets[protocol] = (
            target if target is not None else default_target(max(means) if means else None)
        )
        for row in protocol_rows:
            _fill_cost(row, targets[protocol])
        rows += protocol_rows
    return Table2Plus(rows, targets, target is not None, dict(default_lrs))


# --------------------------------------------------------------------------- text


def _count(value: float | None) -> str:
    """Pass counts in thousands when large: 1234567 -> 1,235k."""
    if value is None:
        return "—"
    return f"{value / 1000:,.0f}k" if value >= 100_000 else f"{value:,.0f}"


def _p_text(welch: WelchTest | None) -> str:
    if welch is None:
        return "—"
    return _p_value_text(welch.p)


def _p_value_text(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.3g}" if p >= 1e-4 else "<1e-4"


def lr_meaning(optimizer: str) -> str:
    """What the row's lr is: a constant rate, a search's start rate, a multiplier, a peak."""
    return LR_MEANING.get(optimizer, CONSTANT_RATE)


def _verdict_cell(row: Row) -> str:
    """The verdict, with the smallest detectable difference when it is not resolved."""
    comparison = row.comparison
    if comparison is None or comparison.verdict != NOT_RESOLVED or comparison.detectable is None:
        return row.verdict
    return f"{NOT_RESOLVED} (detectable >= {comparison.detectable:.2f})"


def _lr_text(rate: float | None) -> str:
    return "—" if rate is None else format_rate(rate)


def _runs_text(row: Row) -> str:
    parts = [f"{row.n}/{len(row.runs)}"]
    for status, short in (
        (RunStatus.DIVERGED.value, "diverged"),
        (RunStatus.STOPPED_EARLY.value, "stopped"),
        (RunStatus.INCOMPLETE.value, "incomplete"),
    ):
        if row.count(status):
            parts.append(f"{row.count(status)} {short}")
    return ", ".join(parts)


def mixed_groups_warning(table: Table2Plus) -> str | None:
    """A warning when a group averages runs whose folders record different settings (say a
    width or budget swept into the same results_dir), else None."""
    mixed = [
        f"{row.protocol}/{label(row.optimizer)}" for row in table.rows if mixes_settings(row.runs)
    ]
    if not mixed:
        return None
    return (
        f"WARNING: {len(mixed)} group(s) average runs of different settings "
        f"({', '.join(mixed)}){MIXED_SETTINGS_ADVICE}"
    )


def table2_plus_provenance(table: Table2Plus) -> str:
    """The provenance line, in the other tables' form, with each protocol's metric."""
    protocols = [
        f"{protocol}: {ACCURACY_METRIC[protocol]}"
        for protocol in PROTOCOLS
        if table.protocol_rows(protocol)
    ]
    return provenance(
        table.runs,
        "protocol " + ("; ".join(protocols) if protocols else "none"),
        f"runs: {len(table.runs)} in {len(table.rows)} (protocol, optimizer) groups",
    )


def targets_text(table: Table2Plus) -> str:
    """Which accuracy each protocol's cost table counts to, and why that one."""
    how = (
        "given by --target"
        if table.target_given
        else f"default: {TARGET_SHARE:.0%} of the protocol's best mean accuracy, rounded "
        f"down to a multiple of {TARGET_STEP:g} points"
    )
    shown = [
        f"{protocol} {number_text(table.targets.get(protocol), 'g', NO_VALUE)}% "
        f"{CURVE_METRIC[protocol]}"
        for protocol in PROTOCOLS
        if table.protocol_rows(protocol)
    ]
    return (
        f"Targets: {', '.join(shown) if shown else 'none'} ({how}). Tests: two-sided Welch "
        f"t-test of each optimizer's per-seed accuracies against MBT-NAG's, same protocol, "
        f"Holm-corrected over the protocol's comparisons (family-wise level {SIGNIFICANCE:g})."
    )


def _median_text(row: Row) -> str:
    if not row.costs:
        return "—"
    median = row.median_to_target("passes")
    return "not reached (censored)" if median is None else _count(median)


def _diff_text(row: Row) -> str:
    if row.comparison is not None:
        return interval_text(row.comparison)
    return "—" if row.diff is None else f"{row.diff:+.2f}"


def _accuracy_grid(table: Table2Plus, protocol: str) -> Grid:
    header = [
        "optimizer",
        "family",
        "lr",
        "lr meaning",
        "ours (%)",
        "n (ended/runs)",
        "paper Table 2 (%)",
        "Δ vs MBT-NAG [95% CI]",
        "Welch p",
        "Holm p",
        "verdict",
    ]
    body = []
    for row in table.protocol_rows(protocol):
        ours = number_text(row.mean, ".2f", NO_VALUE)
        if row.std is not None:
            ours += f" ± {row.std:.2f}"
        body.append(
            [
                label(row.optimizer),
                family(row.optimizer),
                _lr_text(row.lr),
                lr_meaning(row.optimizer),
                ours,
                _runs_text(row),
                number_text(row.paper, ".2f", NO_VALUE),
                _diff_text(row),
                _p_text(row.welch),
                _p_value_text(None if row.comparison is None else row.comparison.p_holm),
                _verdict_cell(row),
            ]
        )
    return Grid(header, body)


def _cost_grid(table: Table2Plus, protocol: str) -> Grid:
    header = [
        "optimizer",
        "reached",
        "epoch",
        "forward",
        "backward",
        "forward+backward",
        "median forward+backward, all runs",
        "wall time (s)",
        "passes per step",
        "total wall time (s)",
    ]
    body = []
    for row in table.protocol_rows(protocol):
        body.append(
            [
                label(row.optimizer),
                f"{len(row.reached)} of {len(row.costs)}",
                number_text(row.mean_to_target("epoch"), ".1f", NO_VALUE),
                _count(row.mean_to_target("forward")),
                _count(row.mean_to_target("backward")),
                _count(row.mean_to_target("passes")),
                _median_text(row),
                number_text(row.mean_to_target("wall_time"), ".1f", NO_VALUE),
                number_text(row.passes_per_step, ".2f", NO_VALUE),
                number_text(row.total_wall_time, ".1f", NO_VALUE),
            ]
        )
    return Grid(header, body)


LEGEND = (
    "Ours: mean ± sample std over the ended runs' seeds (an interrupted run is counted in "
    "n but not averaged). Δ vs MBT-NAG = this optimizer's mean − MBT-NAG's (percentage "
    "points) with its 95% Welch interval; Holm p corrects the Welch p for the protocol's "
    f"comparisons; verdict MBT-NAG better/worse, or {WITHIN_NOISE} with the smallest "
    "difference these seeds could detect at 80% power. lr meaning: a constant rate, the "
    "start rate of a search (MBT, SLS), a multiplier of an estimated step (Prodigy, "
    "D-Adapt SGD, DoG) or the peak of a schedule. Paper: the published Table 2 value at "
    "the same rate (its 11 optimizers only)."
)
COST_LEGEND = (
    "Ended runs, up to the first epoch whose accuracy reaches the target: mini-batch "
    "passes of training (MBT search trials, SLS closure trials and BN-recompute passes "
    "included; evaluation passes not counted) and wall time (sum of epoch times: "
    "MBT's search and each epoch's evaluation included, the clean protocol's "
    "validation set being larger than the test set), mean over the runs that reached "
    "it (`k of n`); the median column counts every run, a run that never reached the "
    "target as censored (beyond its budget), and says not reached when half of them "
    "or more never did. Passes per step: the whole run's forward passes / training steps "
    "(1.0: no overhead; steps as logged, else ceil(training images / batch) per "
    "epoch). Total wall time: the whole run, mean over runs. Passes are exact; wall "
    "times depend on what else the machine ran at the time, so compare them within "
    "one protocol's table and against the passes."
)


def table2_plus_report(table: Table2Plus) -> Report:
    """table2_plus.md: warnings, provenance, targets, then per protocol accuracy and cost."""
    runs = table.runs
    warnings = [dirty_warning(runs), mixed_groups_warning(table)]
    note = runs_data_note(runs)
    sections = [
        Section(
            "Table 2 plus: ResNet18 on CIFAR-10, batch 200, each optimizer at its default rate",
            notes=[LEGEND],
            level=1,
        )
    ]
    if not table.rows:
        sections.append(
            Section(notes=["No run of this experiment was found (experiment=table2_plus)."])
        )
    for protocol in PROTOCOLS:
        if not table.protocol_rows(protocol):
            continue
        target = table.targets.get(protocol)
        sections += [
            Section(
                f"{protocol.capitalize()} protocol: {ACCURACY_METRIC[protocol]} (%)",
                grid=_accuracy_grid(table, protocol),
            ),
            Section(
                f"Cost to {number_text(target, 'g', NO_VALUE)}% {CURVE_METRIC[protocol]} "
                f"({protocol})",
                notes=[COST_LEGEND],
                grid=_cost_grid(table, protocol),
                level=3,
            ),
        ]
    return Report(
        sections,
        provenance=table2_plus_provenance(table),
        warnings=[warning for warning in warnings if warning],
        notes=[targets_text(table), *([] if note is None else [note])],
    )


def table2_plus_markdown(table: Table2Plus) -> str:
    """table2_plus.md: :func:`table2_plus_report` in Markdown."""
    return render_md(table2_plus_report(table))


def table2_plus_records(table: Table2Plus) -> Grid:
    """One row per (protocol, optimizer) with the accuracy and the cost columns."""
    rows = []
    for row in table.rows:
        rows.append(
            [
                row.protocol,
                row.optimizer,
                family(row.optimizer),
                csv_number(row.lr),
                lr_meaning(row.optimizer),
                "test_acc_at_best_val" if row.protocol == "clean" else "best_test_acc",
                csv_number(row.mean),
                csv_number(row.std),
                row.n,
                len(row.runs),
                row.count(RunStatus.FINISHED.value),
                row.count(RunStatus.STOPPED_EARLY.value),
                row.count(RunStatus.DIVERGED.value),
                row.count(RunStatus.INCOMPLETE.value),
                csv_number(row.paper),
                csv_number(row.diff),
                "" if row.welch is None else repr(row.welch.t),
                "" if row.welch is None or row.welch.df is None else repr(row.welch.df),
                "" if row.welch is None else repr(row.welch.p),
                csv_number(None if row.comparison is None else row.comparison.p_holm),
                csv_number(None if row.comparison is None else row.comparison.low),
                csv_number(None if row.comparison is None else row.comparison.high),
                csv_number(None if row.comparison is None else row.comparison.detectable),
                row.verdict,
                csv_number(row.target),
                len(row.reached),
                len(row.costs),
                csv_number(row.mean_to_target("forward")),
                csv_number(row.mean_to_target("backward")),
                csv_number(row.mean_to_target("passes")),
                csv_number(row.median_to_target("passes")),
                csv_number(row.mean_to_target("wall_time")),
                csv_number(row.passes_per_step),
                csv_number(row.total_passes),
                csv_number(row.total_wall_time),
                ";".join(str(seed) for seed in row.seeds),
            ]
        )
    return Grid(CSV_COLUMNS, rows)


def table2_plus_csv(table: Table2Plus) -> str:
    """table2_plus.csv: :func:`table2_plus_records` as CSV."""
    return render_csv(table2_plus_records(table))


# --------------------------------------------------------------------------- figure


@dataclass
class MeanCurve:
    """One (protocol, optimizer): per epoch, the mean over seeds of the cumulative passes,
    the cumulative wall time and the accuracy, and the accuracy's range over seeds."""

    protocol: str
    optimizer: str
    passes: list[float]
    wall_time: list[float]
    accuracy: list[float]
    low: list[float]
    high: list[float]
    n_seeds: int


def _run_points(run: RunRecord) -> list[tuple[float, float, float]]:
    """(cumulative forward+backward, cumulative wall time, accuracy) per epoch, up to the first
    epoch that lacks one of them."""
    forward = _cumulative(run.forward_passes_history)
    backward = _cumulative(run.backward_passes_history)
    wall = _cumulative(run.epoch_time_history)
    points = []
    for values in zip(forward, backward, wall, accuracy_curve(run), strict=False):
        if any(value is None for value in values):
            break
        f, b, w, accuracy = (float(value) for value in values)  # type: ignore[arg-type]
        points.append((f + b, w, accuracy))
    return points


def mean_curves(table: Table2Plus) -> list[MeanCurve]:
    """The figure's curves, from the ended runs, over the epochs every seed of the group
    reached (a shorter run, stopped early or diverged, shortens its group's curve)."""
    curves = []
    for row in table.rows:
        per_run = [points for run in row.ended_runs if (points := _run_points(run))]
        if not per_run:
            continue
        length = min(len(points) for points in per_run)
        columns = [[points[index] for points in per_run] for index in range(length)]
        curves.append(
            MeanCurve(
                protocol=row.protocol,
                optimizer=row.optimizer,
                passes=[statistics.fmean(point[0] for point in column) for column in columns],
                wall_time=[statistics.fmean(point[1] for point in column) for column in columns],
                accuracy=[statistics.fmean(point[2] for point in column) for column in columns],
                low=[min(point[2] for point in column) for column in columns],
                high=[max(point[2] for point in column) for column in columns],
                n_seeds=len(per_run),
            )
        )
    return curves


# The family shows in the line style, width and marker; the colour tells its members apart
# (the baselines in distinct hues, MBT in reds, the modern methods in greens and teals).
_FAMILY_STYLE = {
    "paper baseline": {"linestyle": "-", "linewidth": 1.2},
    "MBT": {"linestyle": "--", "linewidth": 2.4, "marker": "o", "markersize": 3},
    "modern": {"linestyle": "-.", "linewidth": 1.8, "marker": "^", "markersize": 3},
}
_COLOURS = dict(
    zip(
        PLUS_OPTIMIZERS,
        (
            *("tab:blue", "tab:orange", "tab:purple", "tab:brown"),
            *("tab:pink", "tab:gray", "tab:olive", "tab:cyan"),
            *("salmon", "red", "darkred"),
            *("tab:green", "darkgreen", "mediumseagreen", "teal", "yellowgreen"),
            "darkslategray",
        ),
        strict=True,
    )
)
LEGEND_LEFT = 0.8


FAMILIES = ("paper baseline", "MBT", "modern")
CHANCE_ACCURACY = 10.0  # % on CIFAR-10's 10 classes


def plot_table2_plus(table: Table2Plus) -> Figure:
    """Small multiples: a row per protocol, a column per optimizer family. Each run is its
    own thin line (accuracy against cumulative training passes), MBT-NAG's runs in black in
    every panel as the reference; the target and chance level are marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    from bgd_experiments.reporting.figures import budget_text

    protocols = [protocol for protocol in PROTOCOLS if table.protocol_rows(protocol)] or ["paper"]
    figure, axes = plt.subplots(
        len(protocols),
        len(FAMILIES),
        figsize=(5.2 * len(FAMILIES), 4.2 * len(protocols)),
        squeeze=False,
        sharey=True,
    )
    for axis_row, protocol in zip(axes, protocols, strict=True):
        rows = table.protocol_rows(protocol)
        reference = next((row for row in rows if row.optimizer == REFERENCE_OPTIMIZER), None)
        for axis, name in zip(axis_row, FAMILIES, strict=True):
            members = [row for row in rows if family(row.optimizer) == name]
            if reference is not None and reference not in members:
                members = [reference, *members]
            for row in members:
                colour = "black" if row is reference else _COLOURS[row.optimizer]
                for index, run in enumerate(row.ended_runs):
                    points = _run_points(run)
                    if not points:
                        continue
                    passes, _, accuracy = zip(*points, strict=True)
                    axis.plot(
                        passes,
                        accuracy,
                        color=colour,
                        linewidth=1.0,
                        marker=".",
                        alpha=0.8,
                        label=f"{label(row.optimizer)} (n = {row.n})" if index == 0 else None,
                        **({"linestyle": "--"} if row is reference else {}),
                    )
            target = table.targets.get(protocol)
            if target is not None:
                axis.axhline(target, color="grey", linewidth=0.8, linestyle="-.")
            axis.axhline(CHANCE_ACCURACY, color="tab:red", linewidth=0.8, linestyle=":")
            axis.set_xlabel("cumulative forward+backward training passes")
            axis.set_ylabel(f"{CURVE_METRIC[protocol]} (%)")
            axis.set_title(f"{name}, {protocol} protocol", fontsize=10)
            axis.grid(True, alpha=0.3)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=7, loc="upper left")
            else:
                axis.text(0.5, 0.5, "no runs", transform=axis.transAxes, ha="center")
    figure.suptitle(
        "Table 2 plus: one line per run (MBT-NAG dashed black in every panel); grey dash-dot: "
        f"target, red dotted: chance ({CHANCE_ACCURACY:g}%)\nCIFAR-10, batch {BATCH_SIZE}, "
        f"{budget_text(table.runs)}; evaluation passes not counted",
        fontsize=10,
    )
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 0.93))
    return figure


# --------------------------------------------------------------------------- files


def write_table2_plus(table: Table2Plus, out_dir: str | Path) -> list[Path]:
    """Write table2_plus.md, .csv, .png and .pdf into ``out_dir`` (atomically)."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".md", table2_plus_markdown(table)), (".csv", table2_plus_csv(table))):
        path = out / f"table2_plus{suffix}"
        atomic_write_text(path, text)
        written.append(path)
    written += save_figure_files(plot_table2_plus(table), out, "table2_plus")
    return written
