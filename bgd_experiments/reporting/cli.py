"""``bgd-report``: scan run folders and write the paper's tables and Figure 3.

Usage::

    bgd-report {table1,table2,table3,fig3,all} --results-dir results/cpu [--out DIR]
    bgd-report table2_plus --results-dir results/cpu [--target ACC] [--out DIR]
    bgd-report runs --results-dir DIR [--format md|csv] [--out DIR|FILE.md|FILE.csv]
                    [--lr-per-epoch]
    bgd-report compare RUN_DIR RUN_DIR... [--out DIR]   (prints only, unless --out)
    bgd-report cost --results-dir results/cpu --bench-dir results/bench
    bgd-report ablation --results-dir A --against B [--labels a,b] [--out FILE]

Prints each Markdown table (rich rendering on a terminal, plain text otherwise) and the paths
written. Missing, diverged and incomplete cells are marked in the outputs and do not make the
command fail; a results directory that does not exist does (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bgd_experiments.io import atomic_write_text
from bgd_experiments.reporting.compare import (
    compare_report,
    last_lr,
    lr_per_epoch_markdown,
    plot_comparison,
    read_runs,
    runs_csv,
)
from bgd_experiments.reporting.figures import fig3_curves, fig3_runs, write_fig3
from bgd_experiments.reporting.noise import load_noise, per_seed_rows, write_noise
from bgd_experiments.reporting.report import (
    Grid,
    Section,
    markdown_grid,
    number_text,
    render_md,
    section_markdown,
)
from bgd_experiments.reporting.runs import RunRecord, scan_runs, settings_text
from bgd_experiments.reporting.tables import TABLE_BUILDERS
from bgd_experiments.reporting.writers import dirty_warning, table_markdown, write_table

ARTEFACTS = ("table1", "table2", "table3", "fig3")
TABLE2_PLUS = "table2_plus"


def config_dir() -> Path:
    """The Hydra config folder (conf/ beside the package, or $BGD_CONFIG_DIR as bgd-run)."""
    from bgd_experiments.compose import CONFIG_DIR

    return Path(os.environ.get("BGD_CONFIG_DIR", CONFIG_DIR))


def _table2_plus(
    runs: Sequence[RunRecord],
    out_dir: Path,
    target: float | None,
    paper_csv: str | None,
    *,
    only_if_runs: bool,
) -> list[Path]:
    """Build and write table2_plus; nothing when ``only_if_runs`` and it has no run."""
    from bgd_experiments.reporting.table2_plus import (
        build_table2_plus,
        read_default_lrs,
        table2_plus_markdown,
        write_table2_plus,
    )

    default_lrs = read_default_lrs(config_dir())
    if not default_lrs:
        print(
            f"bgd-report: table2_plus: no optimizer default lr found under {config_dir()} "
            "(set BGD_CONFIG_DIR to the conf/ folder)",
            file=sys.stderr,
        )
    table = build_table2_plus(runs, default_lrs, target, paper_csv)
    if only_if_runs and not table.rows:
        return []
    print(f"Table 2 plus: {len(table.runs)} runs in {len(table.rows)} groups.")
    _show_markdown(table2_plus_markdown(table))
    _warn_dirty(TABLE2_PLUS, table.runs)
    return write_table2_plus(table, out_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgd-report",
        description="Turn run folders into the paper's Tables 1-3 (md/csv/tex) and Figure 3.",
    )
    parser.add_argument(
        "artefact",
        choices=(
            *ARTEFACTS,
            TABLE2_PLUS,
            "all",
            "runs",
            "compare",
            "cost",
            "ablation",
            "readme",
        ),
        help="what to regenerate (readme: the generated number blocks of results/README.md "
        "and README.md, from --results-dir; table2_plus: experiment=table2_plus, both protocols, "
        "accuracy, cost to a target and curves; all: also table2_plus when its runs exist; "
        "runs: one line per run folder, for ad-hoc runs and demos; "
        "compare: the run folders given after it, side by side; "
        "cost: hours of each artefact per budget, measured or estimated; "
        "ablation: the runs of --results-dir beside the same cells in --against)",
    )
    parser.add_argument("run_dirs", nargs="*", type=Path, help="compare: the run folders")
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
        "--format",
        choices=("md", "csv"),
        default=None,
        help="runs: the listing's format (default: md, or the suffix of --out FILE); with "
        "--out DIR it is written to DIR/runs.md or DIR/runs.csv",
    )
    parser.add_argument(
        "--lr-per-epoch",
        action="store_true",
        help="runs: also the learning rate of every epoch of each training run (MBT: found)",
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
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="ablation: the results folder made with the one setting changed",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="table2_plus: accuracy (%%) the cost table counts passes and time to (default: "
        "80%% of each protocol's best mean accuracy, rounded down to a multiple of 5)",
    )
    parser.add_argument(
        "--labels",
        default="a,b",
        help="ablation: names of the two folders' settings, e.g. carry_over,restart",
    )
    return parser


def _ablation(results_dir: Path, against: Path | None, labels: str, out: Path | None) -> int:
    from bgd_experiments.reporting.ablation import ablation_markdown, pair_runs

    names = labels.split(",")
    if against is None or len(names) != 2:
        print("bgd-report: ablation needs --against DIR and --labels A,B", file=sys.stderr)
        return 2
    for folder in (results_dir, against):
        problem = _folder_problem(folder)
        if problem is not None:
            print(f"bgd-report: {problem}", file=sys.stderr)
            return 2
    try:
        pairs = pair_runs(scan_runs(results_dir), scan_runs(against))
    except ValueError as error:
        print(f"bgd-report: {error}", file=sys.stderr)
        return 2
    if not pairs:
        print(f"bgd-report: no cell ran in both {results_dir} and {against}", file=sys.stderr)
        return 2
    text = ablation_markdown(pairs, *names)
    _show_markdown(text)
    if out is not None:
        atomic_write_text(out, text + "\n")
        print(f"Wrote:\n  {out}")
    return 0


def _show_markdown(text: str) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        print(text)


def runs_markdown(runs: Sequence[RunRecord]) -> str:
    """One row per run folder: what ran, how it ended, its best test accuracy."""

    columns = [
        "dataset",
        "model",
        "optimizer",
        "lr",
        "batch",
        "seed",
        "status",
        "epochs",
        "best test acc (%)",
        "final test acc (%)",
        "last lr",
        "wall time (s)",
        "settings",
    ]
    rows = [
        [
            run.dataset,
            run.model,
            run.optimizer,
            number_text(run.lr, "g"),
            run.batch_size,
            run.seed,
            run.status,
            run.epochs_completed,
            number_text(run.best_test_acc, ".2f"),
            number_text(run.final_test_acc, ".2f"),
            number_text(last_lr(run), ".4g"),
            number_text(run.wall_time, ".1f"),
            settings_text(run),
        ]
        for run in sorted(runs, key=lambda r: str(r.path))
    ]
    return markdown_grid(Grid(columns, rows))


def _compare(folders: Sequence[Path], out: Path | None) -> int:
    if len(folders) < 2:
        print("bgd-report: compare needs two run folders or more", file=sys.stderr)
        return 2
    try:
        runs = read_runs(folders)
    except ValueError as error:
        print(f"bgd-report: {error}", file=sys.stderr)
        return 2
    text = render_md(compare_report(runs))
    _show_markdown(text)
    _warn_dirty("compare", runs)
    if out is None:  # written only where asked
        return 0
    if out.is_file():
        print(f"bgd-report: --out {out} is a file; compare writes into a folder", file=sys.stderr)
        return 2
    written = [out / "compare.md"]
    atomic_write_text(written[0], text)
    written += plot_comparison(runs, out / "compare")
    print("Wrote:")
    for path in written:
        print(f"  {path}")
    return 0


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be scanned as a results directory, or None."""
    if folder.is_file():
        return f"results directory {folder} is a file, not a folder (pass --results-dir DIR)"
    if not folder.is_dir():
        return (
            f"results directory {folder} does not exist "
            "(run the sweep first, or pass --results-dir)"
        )
    return None


def _runs_listing_path(out: Path, fmt: str | None) -> tuple[Path, str]:
    """Where ``runs --out`` writes, and in which format: a folder gets runs.<format>; a name
    ending in .md or .csv is the file itself (its suffix gives the format unless --format)."""
    suffix = out.suffix.lower().lstrip(".")
    if not out.is_dir() and suffix in ("md", "csv"):
        return out, fmt or suffix
    fmt = fmt or "md"
    return out / f"runs.{fmt}", fmt


def _warn_dirty(what: str, runs: Sequence[RunRecord]) -> None:
    warning = dirty_warning(runs)
    if warning:
        print(f"bgd-report: {what}: {warning}", file=sys.stderr)


def failures_markdown(results_dir: Path) -> str:
    """The sweep jobs recorded as refused or failed (``failures.jsonl``), the latest record
    of each job; "" when there are none."""
    from bgd_experiments.sweeps import failures_path, read_failures

    latest: dict[tuple[str, ...], dict] = {}
    for record in read_failures(results_dir):
        latest[tuple(record.get("overrides") or ())] = record
    if not latest:
        return ""

    rows = [
        [
            record.get("time"),
            record.get("host"),
            record.get("kind"),
            " ".join(overrides),
            record.get("reason"),
        ]
        for overrides, record in sorted(latest.items(), key=lambda item: item[1].get("time", ""))
    ]
    return section_markdown(
        Section(
            notes=[
                f"**{len(latest)} sweep job(s) refused or failed** (from "
                f"{failures_path(results_dir)}; delete it to forget them):"
            ],
            grid=Grid(["when", "host", "kind", "overrides", "reason"], rows),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bgd-report``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.artefact == "compare":
        return _compare(args.run_dirs, args.out)
    if args.run_dirs:
        print("bgd-report: run folders are arguments of compare only", file=sys.stderr)
        return 2
    results_dir: Path = args.results_dir
    if args.artefact == "ablation":
        return _ablation(results_dir, args.against, args.labels, args.out)
    if args.artefact == "cost":
        from bgd_experiments.reporting.cost import print_costs

        return print_costs(results_dir, args.bench_dir)
    problem = _folder_problem(results_dir)
    if problem is not None:
        print(f"bgd-report: {problem}", file=sys.stderr)
        return 2
    if args.artefact == "readme":
        from bgd_experiments.reporting.readme import update_readmes

        # results/<budget>/ -> results/README.md and the top README.md
        results_readme = results_dir.resolve().parent / "README.md"
        readme = results_dir.resolve().parent.parent / "README.md"
        for path in update_readmes(
            results_dir, results_readme, readme, args.bench_dir, config_dir()
        ):
            print(f"Rewrote the generated blocks of {path}")
        return 0
    out_dir: Path = args.out if args.out is not None else results_dir
    runs = scan_runs(results_dir)
    listing_path = None
    if args.artefact == "runs":
        if args.out is not None:
            listing_path, args.format = _runs_listing_path(args.out, args.format)
        args.format = args.format or "md"
    # A CSV listing on stdout stays pure CSV: the chatter goes to stderr.
    chatter = sys.stderr if args.artefact == "runs" and args.format == "csv" else sys.stdout
    print(f"Scanned {results_dir}: {len(runs)} run folders.", file=chatter)
    if args.artefact == "runs":
        text = runs_markdown(runs) if args.format == "md" else runs_csv(runs)
        if args.lr_per_epoch and args.format == "md":
            text += "\n\n" + lr_per_epoch_markdown(runs)
        failures = failures_markdown(results_dir)
        if failures and args.format == "md":
            text += "\n\n" + failures
        elif failures:
            print(failures, file=chatter)
        if args.format == "md":
            _show_markdown(text)
        else:
            print(text, end="")
        if listing_path is not None:
            atomic_write_text(listing_path, text if text.endswith("\n") else text + "\n")
            print(f"Wrote:\n  {listing_path}", file=chatter)
        _warn_dirty(str(results_dir), runs)
        return 0
    written: list[Path] = []
    if args.artefact == TABLE2_PLUS:
        written += _table2_plus(runs, out_dir, args.target, args.paper_csv, only_if_runs=False)
    artefacts: tuple[str, ...] = ARTEFACTS if args.artefact == "all" else ()
    if args.artefact in ARTEFACTS:
        artefacts = (args.artefact,)
    for artefact in artefacts:
        if artefact == "fig3":
            curves = fig3_curves(runs, args.paper_csv)
            print(f"Figure 3: {len(curves)} lr curves (ResNet18, MBT-MMT/NAG, CIFAR-10/100).")
            written += write_fig3(runs, out_dir, args.paper_csv)
            _warn_dirty("fig3", fig3_runs(runs))
            continue
        table = TABLE_BUILDERS[artefact](runs, args.paper_csv)
        if artefact == "table1":  # its noise floor, when scripts/search_noise.py measured it
            table.noise = load_noise(results_dir)
            if table.noise is not None:  # its Table 1 spreads follow the committed runs
                table.noise["table1_start_rate_spread"] = per_seed_rows(table.spreads)
                written.append(write_noise(table.noise, out_dir))
        _show_markdown(table_markdown(table))
        written += write_table(table, out_dir)
        _warn_dirty(artefact, table.runs)
    if args.artefact == "all":
        written += _table2_plus(runs, out_dir, args.target, args.paper_csv, only_if_runs=True)
    print("Wrote:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
