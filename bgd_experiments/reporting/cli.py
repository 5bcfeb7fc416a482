"""``bgd-report``: scan run folders and write the paper's tables and Figure 3.

Usage::

    bgd-report {table1,table2,table3,fig3,all} --results-dir results/cpu [--out DIR]
    bgd-report cost --results-dir results/cpu --bench-dir results/bench

Prints each Markdown table (rich rendering on a terminal, plain text otherwise) and the paths
written. Missing, diverged and incomplete cells are marked in the outputs and do not make the
command fail; a results directory that does not exist does (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bgd_experiments.reporting.figures import fig3_curves, fig3_runs, write_fig3
from bgd_experiments.reporting.runs import RunRecord, scan_runs
from bgd_experiments.reporting.tables import TABLE_BUILDERS
from bgd_experiments.reporting.writers import dirty_warning, render_markdown, write_table

ARTEFACTS = ("table1", "table2", "table3", "fig3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgd-report",
        description="Turn run folders into the paper's Tables 1-3 (md/csv/tex) and Figure 3.",
    )
    parser.add_argument(
        "artefact",
        choices=(*ARTEFACTS, "all", "runs", "cost"),
        help="what to regenerate (runs: one line per run folder, for ad-hoc runs and demos; "
        "cost: hours of each artefact per budget, measured or estimated)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path("results/cpu"),
        help="folder scanned (recursively) for run folders (default: results/cpu)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: the results dir)"
    )
    parser.add_argument(
        "--paper-csv",
        default=None,
        help="published values to compare with (default: the packaged paper_results.csv)",
    )
    parser.add_argument(
        "--bench-dir",
        type=Path,
        default=Path("results/bench"),
        help="cost: where scripts/bench_epoch.py wrote <device>.json (default: results/bench)",
    )
    return parser


def _show_markdown(text: str) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        print(text)


def runs_markdown(runs: Sequence[RunRecord]) -> str:
    """One row per run folder: what ran, how it ended, its best test accuracy."""

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        "| dataset | model | optimizer | lr | batch | seed | status | epochs | best test acc (%) "
        "| final test acc (%) | last lr | wall time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: str(r.path)):
        last_lr = next((lr for lr in reversed(run.lr_history) if lr is not None), None)
        lines.append(
            f"| {run.dataset} | {run.model} | {run.optimizer} | {number(run.lr, 'g')} "
            f"| {run.batch_size} | {run.seed} | {run.status} | {run.epochs_completed} "
            f"| {number(run.best_test_acc, '.2f')} | {number(run.final_test_acc, '.2f')} "
            f"| {number(last_lr if run.task == 'train' else run.found_lr, '.4g')} "
            f"| {number(run.wall_time, '.1f')} |"
        )
    return "\n".join(lines)


def _warn_dirty(what: str, runs: Sequence[RunRecord]) -> None:
    warning = dirty_warning(runs)
    if warning:
        print(f"bgd-report: {what}: {warning}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bgd-report``; returns the exit status."""
    args = build_parser().parse_args(argv)
    results_dir: Path = args.results_dir
    if args.artefact == "cost":
        from bgd_experiments.reporting.cost import print_costs

        return print_costs(results_dir, args.bench_dir)
    if not results_dir.is_dir():
        print(
            f"bgd-report: results directory {results_dir} does not exist "
            "(run the sweep first, or pass --results-dir)",
            file=sys.stderr,
        )
        return 2
    out_dir: Path = args.out if args.out is not None else results_dir
    runs = scan_runs(results_dir)
    print(f"Scanned {results_dir}: {len(runs)} run folders.")
    if args.artefact == "runs":
        _show_markdown(runs_markdown(runs))
        _warn_dirty(str(results_dir), runs)
        return 0
    artefacts = ARTEFACTS if args.artefact == "all" else (args.artefact,)
    written: list[Path] = []
    for artefact in artefacts:
        if artefact == "fig3":
            curves = fig3_curves(runs, args.paper_csv)
            print(f"Figure 3: {len(curves)} lr curves (ResNet18, MBT-MMT/NAG, CIFAR-10/100).")
            written += write_fig3(runs, out_dir, args.paper_csv)
            _warn_dirty("fig3", fig3_runs(runs))
            continue
        table = TABLE_BUILDERS[artefact](runs, args.paper_csv)
        _show_markdown(render_markdown(table))
        written += write_table(table, out_dir)
        _warn_dirty(artefact, table.runs)
    print("Wrote:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
