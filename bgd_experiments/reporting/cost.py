"""``bgd-report cost``: how long each artefact takes at each budget, measured or estimated.

The unit of work is an *image-step*: one training image through a forward and backward pass.
An epoch of a training run costs ``train + test / 3`` image-steps (an evaluation forward is
about a third of a step) plus, in each epoch where the optimizer searches (its composed
config's ``search_every_epoch``: every epoch, or the first one only), the search: k batches
of one step and about 2.3 trials of 0.31 of a step each (``make bench``), i.e.
``k * batch * 1.7``. The budgets and the optimizers' configs are composed as bgd-run
composes them (:func:`bgd_experiments.compose.compose_config`). Seconds per image-step
come, per device and model, from (in order):

1. measured epoch times in run folders (``metrics.jsonl``) under the results dir;
2. the epoch benchmark (``results/bench/<device>.json``, ``scripts/bench_epoch.py``);
3. for a GPU with neither, an assumed throughput (marked ``assumed``).

A measurement at another width is scaled by the width squared (convolution FLOPs), another
model's by its cost relative to ResNet18 where some device measured both. Each number says
whether it is ``measured`` (the artefact's own runs at that budget: their wall times) or an
``estimate``, and from what.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgd_experiments.compose import CONFIG_DIR, compose_config, group_options
from bgd_experiments.io import read_json
from bgd_experiments.reporting.report import Grid, Report, Section, markdown_blocks
from bgd_experiments.runfolder import SUMMARY_FILE, RunFolder

BUDGETS = ("smoke", "cpu", "short", "paper")
ARTEFACTS = ("table1", "table2", "table3", "fig2", "fig3")
MODELS = ("resnet18", "preactresnet18", "mobilenetv2", "senet18", "densenet121")
TRAIN_IMAGES = 50_000
TEST_IMAGES = 10_000
BATCH = 200
EVAL_COST = 1.0 / 3.0  # an evaluation forward, in training steps
SEARCH_STEP_COST = 1.7  # one search batch: a step plus ~2.3 trials of 0.31 step
# The grids of conf/experiment/*.yaml (tests check these against the files).
TABLE1_BATCHES = (12, 25, 50, 100, 200, 400, 800)
TABLE1_RATES = 9
TABLE2_BASELINES = 8 * 9  # 8 optimizers x 9 rates
TABLE2_MBT = 3  # MBT-GD/MMT/NAG
TABLE3_RUNS = 2 * 5 * 2  # datasets x models x MBT-MMT/NAG
FIG2B_IMAGES = 500
# Only where no GPU measurement exists: images/s of one training step at width 1.0 on a
# current datacentre GPU, fp32. A rough guess until `make gpu-check` runs on the GPU.
ASSUMED_GPU_IMAGES_PER_S = {
    "resnet18": 8000.0,
    "preactresnet18": 8000.0,
    "mobilenetv2": 6000.0,
    "senet18": 7000.0,
    "densenet121": 2000.0,
}
# When an optimizer runs MBT's search (None: never).
EVERY_EPOCH = "every epoch"
FIRST_EPOCH = "first epoch"


@dataclass(frozen=True)
class Budget:
    name: str
    epochs: int
    train: int
    test: int
    width: float
    search_batches: int
    fig2b_iterations: int
    config_dir: Path = CONFIG_DIR  # where its optimizers' configs are composed from


def load_budgets(config_dir: Path = CONFIG_DIR) -> dict[str, Budget]:
    """The budgets of :data:`BUDGETS` that ``config_dir`` has, each composed (budget=NAME)."""
    budgets = {}
    options = group_options("budget", config_dir)
    for name in BUDGETS:
        if name not in options:
            continue
        raw = compose_config([f"budget={name}"], config_dir)["budget"]
        budgets[name] = Budget(
            name=name,
            epochs=int(raw["epochs"]),
            train=int(raw["train_subset"] or TRAIN_IMAGES),
            test=int(raw["test_subset"] or TEST_IMAGES),
            width=float(raw["width"]),
            search_batches=int(raw["search_batches"]),
            fig2b_iterations=int(raw["fig2b_iterations"]),
            config_dir=Path(config_dir),
        )
    return budgets


def search_schedule(optimizer_config: Mapping[str, Any]) -> str | None:
    """When an optimizer with this config runs MBT's search: :data:`EVERY_EPOCH`,
    :data:`FIRST_EPOCH` or never (None: its config has no ``search_every_epoch``)."""
    every = optimizer_config.get("search_every_epoch")
    if every is None:
        return None
    return EVERY_EPOCH if every else FIRST_EPOCH


def optimizer_schedule(optimizer: str, config_dir: Path = CONFIG_DIR) -> str | None:
    """:func:`search_schedule` of ``optimizer=NAME`` as composed; None for a name that is no
    option of the optimizer group."""
    if optimizer not in group_options("optimizer", config_dir):
        return None
    return search_schedule(compose_config([f"optimizer={optimizer}"], config_dir)["optimizer"])


# ------------------------------------------------------------------------ work per run
def search_steps(search_batches: int, batch: int = BATCH) -> float:
    return search_batches * batch * SEARCH_STEP_COST


def epoch_steps(
    train: int, test: int, schedule: str | None, search_batches: int, epoch: int
) -> float:
    """Image-steps of one epoch of a training run whose optimizer searches on ``schedule``."""
    work = train + test * EVAL_COST
    if schedule == EVERY_EPOCH or (schedule == FIRST_EPOCH and epoch == 1):
        work += search_steps(search_batches)
    return work


def run_steps(budget: Budget, optimizer: str) -> float:
    """Image-steps of a whole run at ``budget`` (all epochs: an upper bound, runs that
    diverge or stop early end sooner)."""
    schedule = optimizer_schedule(optimizer, budget.config_dir)
    return sum(
        epoch_steps(budget.train, budget.test, schedule, budget.search_batches, epoch)
        for epoch in range(1, budget.epochs + 1)
    )


@dataclass(frozen=True)
class Job:
    """Runs of one model that an artefact needs: count x image-steps each."""

    model: str
    runs: int
    steps: float


def artefact_jobs(artefact: str, budget: Budget) -> list[Job]:
    if artefact == "table1":
        # Search only, N = 50,000 whatever the budget; one search per (batch, rate).
        per_rate = sum(search_steps(budget.search_batches, b) for b in TABLE1_BATCHES)
        return [Job("resnet18", TABLE1_RATES * len(TABLE1_BATCHES), per_rate / len(TABLE1_BATCHES))]
    if artefact == "table2":
        baseline = run_steps(budget, "nag")
        return [
            Job("resnet18", TABLE2_BASELINES, baseline),
            Job("resnet18", 1, run_steps(budget, "mbt_gd")),
            Job("resnet18", 2, run_steps(budget, "mbt_nag")),
        ]
    if artefact == "table3":
        return [Job(model, 4, run_steps(budget, "mbt_nag")) for model in MODELS]
    if artefact == "fig2":
        # (b): full-batch Two-way Backtracking GD, a gradient and ~3 trials per iteration.
        return [Job("resnet18", 1, budget.fig2b_iterations * FIG2B_IMAGES * 2.0)]
    if artefact == "fig3":
        return []  # Table 3's ResNet18 runs, skipped once Table 3 is done
    raise ValueError(f"unknown artefact {artefact!r}")


# ------------------------------------------------------------------ measured run folders
@dataclass
class MeasuredRun:
    path: Path
    task: str
    budget: str | None
    device: str
    model: str
    optimizer: str
    dataset: str
    lr: float | None
    seed: int
    width: float
    wall_time: float
    steps: float  # image-steps this run did (0 for a search-only run)


def _device_kind(text: str | None) -> str:
    text = (text or "cpu").lower()
    return "cuda" if text.startswith("cuda") or "gpu" in text else "cpu"


def read_measured_runs(results_dir: Path, config_dir: Path = CONFIG_DIR) -> list[MeasuredRun]:
    """Every ended run under ``results_dir`` with its wall time and work (the search schedule
    from the folder's config.yaml, else from composing its optimizer)."""
    runs = []
    for summary_path in sorted(results_dir.rglob(SUMMARY_FILE)):
        folder = RunFolder(summary_path.parent)
        try:
            summary = folder.read_summary()
        except (OSError, ValueError, TypeError):  # damaged: the runs listing reports it
            continue
        if (
            summary is None
            or not isinstance(summary.run, dict)
            or not isinstance(summary.wall_time, int | float)
        ):
            continue
        run = summary.run
        config = folder.read_config()  # the run's own record of its config ({} if none)
        try:
            test = int((config.get("dataset") or {}).get("test_subset") or TEST_IMAGES)
            search_batches = int((config.get("budget") or {}).get("search_batches") or 20)
            optimizer_config = dict(config.get("optimizer") or {})
        except (ValueError, TypeError, AttributeError):
            test, search_batches, optimizer_config = TEST_IMAGES, 20, {}
        train = int(run.get("train_subset") or TRAIN_IMAGES)
        optimizer = str(run.get("optimizer"))
        steps = 0.0
        if run.get("task") == "train":
            epochs = int(summary.get("epochs_completed") or 0)
            schedule = (
                search_schedule(optimizer_config)
                if "search_every_epoch" in optimizer_config
                else optimizer_schedule(optimizer, config_dir)
            )
            steps = sum(
                epoch_steps(train, test, schedule, search_batches, epoch)
                for epoch in range(1, epochs + 1)
            )
        runs.append(
            MeasuredRun(
                path=folder.path,
                task=str(run.get("task")),
                budget=run.get("budget"),
                device=_device_kind(summary.get("device")),
                model=str(run.get("model")),
                optimizer=optimizer,
                dataset=str(run.get("dataset")),
                lr=run.get("lr"),
                seed=int(run.get("seed") or 0),
                width=float(run.get("width") or 1.0),
                wall_time=float(summary.wall_time),
                steps=steps,
            )
        )
    return runs


def belongs_to(run: MeasuredRun, artefact: str) -> bool:
    """Whether a run folder is one of the artefact's grid cells."""
    if artefact == "table1":
        return run.task == "search"
    if run.task != "train":
        return False
    table3 = run.optimizer in ("mbt_mmt", "mbt_nag") and run.lr == 100
    if artefact == "table2":
        return run.model == "resnet18" and run.dataset == "cifar10" and not table3
    if artefact == "table3":
        return table3
    return False


# ------------------------------------------------------------------ seconds per image-step
@dataclass
class Rate:
    seconds: float  # per image-step at the measured width
    width: float
    source: str


@dataclass
class Rates:
    """Seconds per image-step per (device, model), with where each came from."""

    table: dict[tuple[str, str], Rate] = field(default_factory=dict)

    def add(self, device: str, model: str, rate: Rate) -> None:
        self.table.setdefault((device, model), rate)

    def devices(self) -> list[str]:
        return sorted({device for device, _ in self.table})

    def lookup(self, device: str, model: str, width: float) -> tuple[float, str, bool]:
        """(seconds per image-step, source, assumed) for ``model`` at ``width``."""
        rate = self.table.get((device, model))
        note = ""
        if rate is None:
            base = self.table.get((device, "resnet18"))
            if base is None:
                raise KeyError((device, model))
            ratio, why = self.model_ratio(model)
            rate = Rate(base.seconds * ratio, base.width, base.source)
            note = f", x{ratio:.2f} for {model} ({why})"
        seconds = rate.seconds
        if not math.isclose(width, rate.width):
            seconds *= (width / rate.width) ** 2
            note += f", scaled from width {rate.width:g} by width^2"
        return seconds, rate.source + note, rate.source.startswith("assumed")

    def model_ratio(self, model: str) -> tuple[float, str]:
        for (device, name), rate in self.table.items():
            base = self.table.get((device, "resnet18"))
            if name == model and base is not None and math.isclose(rate.width, base.width):
                return rate.seconds / base.seconds, f"its cost / ResNet18's on {device}"
        return 1.0, "no measurement of it: ResNet18's cost"


def rates_from_runs(runs: Iterable[MeasuredRun], rates: Rates, where: str) -> None:
    grouped: dict[tuple[str, str, float], list[float]] = {}
    for run in runs:
        if run.task == "train" and run.steps > 0:
            key = (run.device, run.model, run.width)
            grouped.setdefault(key, []).append(run.wall_time / run.steps)
    for (device, model, width), values in sorted(grouped.items()):
        rates.add(
            device,
            model,
            Rate(
                statistics.median(values),
                width,
                f"measured epoch times of {len(values)} runs in {where}",
            ),
        )


def rates_from_bench(bench_dir: Path, rates: Rates) -> None:
    """Seconds per image-step from ``bench_epoch.py``'s json: this project's fp32 eager NAG
    epoch (pure training), plus the evaluation share a run adds (counted in the work)."""
    for path in sorted(bench_dir.glob("*.json")):
        try:
            report = read_json(path)
            device = _device_kind(report["machine"]["device"])
            for result in report["models"]:
                entry = result["variants"]["nag-fp32"]
                seconds = entry["epoch_s"] / result["images"]
                source = f"estimate from {path.name} (bench_epoch.py, nag-fp32)"
                rates.add(device, result["model"], Rate(seconds, float(result["width"]), source))
        except (OSError, ValueError, KeyError, TypeError):
            continue


def assumed_gpu_rates(rates: Rates) -> None:
    for model, per_s in ASSUMED_GPU_IMAGES_PER_S.items():
        rates.add("cuda", model, Rate(1.0 / per_s, 1.0, "assumed GPU throughput (no measurement)"))


# ------------------------------------------------------------------------------ the table
@dataclass
class CostRow:
    device: str
    artefact: str
    budget: str
    runs: int
    hours: float
    kind: str  # measured | partly measured | estimate | assumed | reuse
    source: str


def estimate_costs(
    results_dir: Path | None,
    bench_dir: Path | None,
    config_dir: Path = CONFIG_DIR,
) -> list[CostRow]:
    budgets = load_budgets(config_dir)
    measured = (
        read_measured_runs(results_dir, config_dir) if results_dir and results_dir.is_dir() else []
    )
    rates = Rates()
    rates_from_runs(measured, rates, str(results_dir))
    if bench_dir is not None and bench_dir.is_dir():
        rates_from_bench(bench_dir, rates)
    assumed_gpu_rates(rates)

    rows: list[CostRow] = []
    for device in rates.devices():
        for artefact in ARTEFACTS:
            for budget in budgets.values():
                rows.append(_row(device, artefact, budget, rates, measured))
    return rows


def _row(
    device: str, artefact: str, budget: Budget, rates: Rates, measured: Sequence[MeasuredRun]
) -> CostRow:
    jobs = artefact_jobs(artefact, budget)
    expected = sum(job.runs for job in jobs)
    if not jobs:
        return CostRow(device, artefact, budget.name, 0, 0.0, "reuse", "reuses Table 3's runs")
    own = [
        run
        for run in measured
        if run.device == device and run.budget == budget.name and belongs_to(run, artefact)
    ]
    if own:  # the cost of one seed: the grid's counts are per seed
        first_seed = min(run.seed for run in own)
        own = [run for run in own if run.seed == first_seed]
    if own and len(own) >= expected:
        hours = sum(run.wall_time for run in own) / 3600
        return CostRow(
            device,
            artefact,
            budget.name,
            len(own),
            hours,
            "measured",
            f"wall times of its {len(own)} run folders",
        )
    seconds = 0.0
    sources: list[str] = []
    assumed = False
    for job in jobs:
        per_step, source, is_assumed = rates.lookup(device, job.model, budget.width)
        seconds += job.runs * job.steps * per_step
        assumed |= is_assumed
        if source not in sources:
            sources.append(source)
    kind = "assumed" if assumed else "estimate"
    source = "; ".join(sources)
    if own:
        # Some cells ran: their wall times, and the estimate for the rest.
        done = sum(run.wall_time for run in own)
        seconds = done + seconds * (expected - len(own)) / expected
        kind = "partly measured"
        source = f"{len(own)} of {expected} runs measured; the rest: " + source
    return CostRow(device, artefact, budget.name, expected, seconds / 3600, kind, source)


def cost_report(rows: Sequence[CostRow]) -> Report:
    """Per device: a grid of artefact x budget (hours, kind, runs) with numbered sources."""
    sections = []
    for device in sorted({row.device for row in rows}):
        unit = "GPU-hours (one GPU)" if device == "cuda" else "CPU-hours (this machine's cores)"
        notes: list[str] = []
        grid_rows = []
        for artefact in ARTEFACTS:
            cells = []
            for budget in BUDGETS:
                row = next(
                    (
                        r
                        for r in rows
                        if (r.device, r.artefact, r.budget) == (device, artefact, budget)
                    ),
                    None,
                )
                if row is None:
                    cells.append("-")
                    continue
                if row.source not in notes:
                    notes.append(row.source)
                mark = notes.index(row.source) + 1
                cells.append(f"{_hours(row.hours)} ({row.kind} [{mark}], {row.runs} runs)")
            grid_rows.append([artefact, *cells])
        sources = "\n".join(f"[{i}] {note}" for i, note in enumerate(notes, 1))
        sections.append(
            Section(
                f"{device}: {unit}",
                grid=Grid(["artefact", *BUDGETS], grid_rows),
                after=[sources] if sources else [],
                level=3,
            )
        )
    sections.append(
        Section(
            notes=[
                "Estimates count every epoch (runs that diverge or stop early end sooner) and "
                "scale across widths by width^2. GPU numbers are estimates until "
                "`make gpu-check` has run on a GPU and written results/bench/cuda.json."
            ]
        )
    )
    return Report(sections)


def cost_markdown(rows: Sequence[CostRow]) -> str:
    """:func:`cost_report` in Markdown, without a final newline."""
    return "\n\n".join(markdown_blocks(cost_report(rows)))


def _hours(hours: float) -> str:
    if hours < 0.1:
        return f"{hours * 60:.1f} min"
    return f"{hours:.1f} h"


def print_costs(results_dir: Path, bench_dir: Path) -> int:
    """``bgd-report cost``: print the table; the exit status (0)."""
    rows = estimate_costs(results_dir, bench_dir)
    print(f"Cost of each artefact per budget (runs: {results_dir}, benchmarks: {bench_dir}):\n")
    print(cost_markdown(rows))
    return 0
