"""Render built tables as Markdown, long-format CSV and booktabs LaTeX, each with provenance."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from bgd_experiments.io import atomic_write_text
from bgd_experiments.reporting.noise import noise_floor_sections
from bgd_experiments.reporting.paper import (
    BASELINE_OPTIMIZERS,
    DATASET_LABELS,
    MBT_OPTIMIZERS,
    MODEL_LABELS,
    OPTIMIZER_LABELS,
    START_RATES,
    TABLE1_BATCH_SIZES,
    TABLE3_DATASETS,
    TABLE3_MODELS,
    TABLE3_OPTIMIZERS,
    format_rate,
    same_rate,
)
from bgd_experiments.reporting.report import (
    Grid,
    Report,
    Section,
    render_csv,
    render_md,
    render_tex,
)
from bgd_experiments.reporting.runs import RunRecord, settings_text
from bgd_experiments.reporting.tables import (
    CELL_STATUSES,
    DIVERGED,
    FINISHED,
    MISSING,
    Cell,
    Table,
)
from bgd_experiments.runfolder import RunStatus

PAPER_PROTOCOL = (
    "best test accuracy over epochs, as in the paper; test set also drives the plateau rule"
)
CLEAN_PROTOCOL = "clean protocol: test accuracy at the best validation epoch (separate grid)"
SEARCH_PROTOCOL = (
    "lr returned by one MBT search (alpha 1e-4, beta 0.5, k = 20 mini-batches) before "
    "training, search only"
)

CSV_COLUMNS = (
    "table",
    "dataset",
    "model",
    "optimizer",
    "batch_size",
    "start_lr",
    "start_lr_used",
    "metric",
    "status",
    "ours",
    "ours_std",
    "n",
    "paper",
    "diff",
    "ratio",
    "n_runs",
    "n_finished",
    "n_diverged",
    "n_incomplete",
    "ours_clean",
    "ours_clean_std",
    "clean_n",
    "seeds",
)


# --------------------------------------------------------------------------- provenance


def _distinct(values: Iterable[object]) -> list[object]:
    seen: list[object] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _join(values: Iterable[object], none_as: str = "unknown") -> str:
    shown = [
        none_as if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        for value in _distinct(values)
    ]
    return ", ".join(shown) if shown else "none"


def _none_last(value: object) -> tuple[bool, object]:
    return (value is None, value if value is not None else 0)


def _commits(runs: Sequence[RunRecord]) -> str:
    labels = []
    for run in runs:
        if not run.git_commit:
            continue
        label = str(run.git_commit)[:10] + ("+dirty" if run.git_dirty else "")
        labels.append(label)
    return _join(sorted(set(labels))) if labels else "unknown"


# A path after "<dataset> from " in a data source: run files written before the data was named
# by content carry the absolute path of the machine they ran on.
_SOURCE_PATH = re.compile(r"(?<= from )\S*/(?=[^\s/]+)")


def portable_source(source: str) -> str:
    """A data source without directories: "c10 from /a/b/x.tar.gz" -> "c10 from x.tar.gz"."""
    return _SOURCE_PATH.sub("", source)


def dirty_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Runs whose code had uncommitted changes (``git_dirty``): no commit reproduces them."""
    return [run for run in runs if run.git_dirty]


def dirty_warning(runs: Sequence[RunRecord]) -> str | None:
    """A loud one-line warning when any run came from a dirty tree, else None."""
    dirty = dirty_runs(runs)
    if not dirty:
        return None
    commits = sorted({str(run.git_commit or "unknown")[:10] for run in dirty})
    return (
        f"WARNING: {len(dirty)} of {len(runs)} runs come from a git tree with uncommitted "
        f"changes ({', '.join(c + '+dirty' for c in commits)}): their code is not any commit's; "
        "committed results should be rerun from a clean tree."
    )


# A table's columns tell the protocols apart (best test accuracy; test accuracy at the best
# validation epoch), so runs of both protocols in one cell are not a mix.
SEPARATED_SETTINGS = frozenset({"trainer.protocol"})


MIXED_SETTINGS_ADVICE = (
    "; give each setting its own results_dir, or tell them apart with `bgd-report runs`."
)


def mixes_settings(runs: Sequence[RunRecord]) -> bool:
    """Whether ``runs`` record different settings (their folders' identity blocks), apart
    from those a table shows separately."""
    kinds = {
        json.dumps(
            {key: value for key, value in run.settings.items() if key not in SEPARATED_SETTINGS},
            sort_keys=True,
            default=str,
        )
        for run in runs
        if run.settings is not None
    }
    return len(kinds) > 1


def mixed_settings_warning(table: Table) -> str | None:
    """A warning when a cell averages runs whose folders record different settings (say a
    width swept into the same results_dir): its mean is then over different experiments."""
    mixed = [cell for cell in table.cells if mixes_settings(cell.runs)]
    if not mixed:
        return None
    first = mixed[0]
    variants = " vs ".join(sorted({settings_text(run, with_data=True) for run in first.runs}))
    cells = f"{len(mixed)} cells average" if len(mixed) > 1 else "1 cell averages"
    return (
        f"WARNING: {cells} runs of different settings (e.g. {first.dataset}/{first.model}/"
        f"{first.optimizer}: {variants}){MIXED_SETTINGS_ADVICE}"
    )


def run_settings_parts(runs: Sequence[RunRecord]) -> list[str]:
    """What ``runs`` were made with: budget, seeds, epochs, subset, width, batch, data source."""
    runs = sorted(runs, key=lambda run: str(run.path))
    seeds = sorted({run.seed for run in runs if run.seed is not None})
    subsets = [run.train_subset for run in runs]
    # Search-only runs record 0 epochs: they train nothing.
    epochs = {run.epochs for run in runs if run.epochs}
    # Interrupted runs carry no data source (it is written with the summary).
    sources = {portable_source(run.data_source) for run in runs if run.data_source}
    return [
        f"budget {_join(sorted({run.budget or 'unknown' for run in runs}))}",
        f"seeds {_join(seeds)}",
        "epochs " + (_join(sorted(epochs)) if epochs else "n/a"),
        "train subset " + _join(sorted(set(subsets), key=_none_last), none_as="all"),
        f"width {_join(sorted({run.width for run in runs if run.width is not None}))}",
        f"batch size {_join(sorted({run.batch_size for run in runs if run.batch_size}))}",
        f"data source {_join(sorted(sources or {'unknown'}))}",
    ]


def git_commits_text(runs: Sequence[RunRecord]) -> str:
    """``git <commit>[+dirty], ...`` of ``runs`` (for a provenance line)."""
    return f"git {_commits(runs)}"


def provenance(runs: Sequence[RunRecord], protocol: str, counts: str) -> str:
    """The provenance line of every table: what the runs were made with (budget, seeds,
    epochs, subset, width, batch, data source), the protocol, the commits and ``counts``."""
    runs = sorted(runs, key=lambda run: str(run.path))
    parts = [*run_settings_parts(runs), protocol, git_commits_text(runs), counts]
    return "Provenance: " + "; ".join(parts) + "."


def provenance_line(table: Table) -> str:
    """A paper table's provenance line, its protocol and cell counts included."""
    counts = table.status_counts()
    if table.metric == "found_lr":
        protocol = SEARCH_PROTOCOL
    else:
        protocol = PAPER_PROTOCOL
        if any(cell.clean is not None for cell in table.cells):
            protocol += "; " + CLEAN_PROTOCOL
    return provenance(
        table.runs,
        f"protocol: {protocol}",
        "cells: " + ", ".join(f"{counts[status]} {status}" for status in CELL_STATUSES),
    )


def _is_jpeg_source(source: str) -> bool:
    # Run folders record the data source as "<dataset> from <path>"; a JPEG archive or folder
    # says so in its name (the offline archive is cifar10-jpeg.tar.gz).
    where = source.split(" from ", 1)[-1].lower()
    return "jpeg" in where or "jpg" in where


def runs_data_note(runs: Sequence[RunRecord]) -> str | None:
    """One line when any of ``runs`` read a JPEG re-encoding of CIFAR, else None."""
    sources = sorted({run.data_source for run in runs if run.data_source})
    jpeg = [source for source in sources if _is_jpeg_source(source)]
    if not jpeg:
        return None
    return (
        f"Data note: {', '.join(jpeg)} is a lossy JPEG re-encoding of CIFAR, not the official "
        "release: its pixel values differ slightly, so results can differ slightly from runs "
        "on the official data (accuracies by a few tenths of a percent)."
    )


# --------------------------------------------------------------------------- cell text


def format_value(value: float, metric: str) -> str:
    """Accuracies with 2 decimals; learning rates with 4 decimals (or 3 significant digits)."""
    if metric == "found_lr":
        return f"{value:.4f}" if 1e-3 <= abs(value) < 10 else f"{value:.3g}"
    return f"{value:.2f}"


def format_signed(value: float, metric: str) -> str:
    text = format_value(abs(value), metric)
    return ("-" if value < 0 else "+") + text


def ours_text(cell: Cell, clean: bool = False) -> str:
    """Our side of a cell: value (± std, n), or the status when there is no value, marked."""
    if clean:
        value, std, n = cell.clean, cell.clean_std, cell.clean_n
    else:
        value, std, n = cell.ours, cell.std, cell.n
    if cell.status == MISSING:
        return "missing"
    if clean and not any(run.protocol == "clean" for run in cell.runs):
        return ""  # no clean-protocol run in this cell: nothing to show in the clean grid
    if value is None:
        # A run that ended normally but logged no validation data has nothing to show here.
        return "no val data" if clean and cell.status == FINISHED else cell.status
    text = format_value(value, cell.metric)
    if std is not None:
        text += f" ± {format_value(std, cell.metric)}"
    if n > 1:
        text += f" (n={n})"
    if cell.status == DIVERGED:
        text += (
            " [diverged]"
            if cell.n_diverged == cell.n_runs
            else f" [{cell.n_diverged}/{cell.n_runs} diverged]"
        )
    elif cell.status == RunStatus.INCOMPLETE:
        text += (
            " [incomplete]"
            if cell.n_incomplete == cell.n_runs
            else f" [{cell.n_incomplete}/{cell.n_runs} incomplete]"
        )
    if cell.start_lr_used is not None and not same_rate(cell.start_lr_used, cell.start_lr):
        text += f" [from {format_rate(cell.start_lr_used)}]"
    return text


def cell_text(cell: Cell) -> str:
    """``ours / paper (ours - paper)``."""
    paper = "—" if cell.paper is None else format_value(cell.paper, cell.metric)
    text = f"{ours_text(cell)} / {paper}"
    if cell.diff is not None:
        text += f" ({format_signed(cell.diff, cell.metric)})"
    return text


# --------------------------------------------------------------------------- grids


def _lookup_cell(cells: Sequence[Cell], **keys: object) -> Cell | None:
    for cell in cells:
        if all(
            same_rate(getattr(cell, key), value)
            if key == "start_lr"
            else getattr(cell, key) == value
            for key, value in keys.items()
        ):
            return cell
    return None


def _grid(table: Table, text_of: Callable[[Cell], str]) -> Grid:
    cells = table.cells
    if table.number == 1:
        header = ["batch \\ start lr", *(format_rate(rate) for rate in START_RATES)]
        rows = []
        for size in TABLE1_BATCH_SIZES:
            row = [str(size)]
            for rate in START_RATES:
                cell = _lookup_cell(cells, batch_size=size, start_lr=rate)
                row.append(text_of(cell) if cell else "")
            rows.append(row)
        return Grid(header, rows)
    if table.number == 2:
        header = ["optimizer \\ lr", *(format_rate(rate) for rate in START_RATES)]
        rows = []
        for name in (*BASELINE_OPTIMIZERS, *MBT_OPTIMIZERS):
            row = [OPTIMIZER_LABELS[name]]
            for rate in START_RATES:
                cell = _lookup_cell(cells, optimizer=name, start_lr=rate)
                row.append(text_of(cell) if cell else "")
            rows.append(row)
        return Grid(header, rows)
    header = ["model", "dataset", *(OPTIMIZER_LABELS[name] for name in TABLE3_OPTIMIZERS)]
    rows = []
    for model in TABLE3_MODELS:
        for dataset in TABLE3_DATASETS:
            row = [MODEL_LABELS[model], DATASET_LABELS[dataset]]
            for name in TABLE3_OPTIMIZERS:
                cell = _lookup_cell(cells, model=model, dataset=dataset, optimizer=name)
                row.append(text_of(cell) if cell else "")
            rows.append(row)
    return Grid(header, rows, label_columns=2)


def _spread_grid(table: Table) -> Grid:
    header = [
        "batch",
        "ours per seed max/min (mean; range)",
        "ours per seed CV (mean)",
        "paper max/min (one run)",
        "paper CV (one run)",
        "ours max/min of seed means",
        "ours CV of seed means",
        "starts (ours/paper)",
    ]
    # With several seeds: the seed-to-seed CV and the start rate's permutation-test p-value.
    seeded = any(spread.get("start_effect_p") is not None for spread in table.spreads)
    if seeded:
        header += ["seeds", "seed CV", "start effect p"]
    rows = []
    for spread in table.spreads:

        def show(key: str, spread: dict[str, object] = spread, fmt: str = ".2f") -> str:
            value = spread.get(key)
            return "—" if value is None else format(value, fmt)  # type: ignore[arg-type]

        ratios: list[float] = spread.get("per_seed_max_min") or []  # type: ignore[assignment]
        cvs: list[float] = spread.get("per_seed_cv") or []  # type: ignore[assignment]
        per_seed = "—"
        if ratios:
            per_seed = f"{statistics.fmean(ratios):.2f}; {min(ratios):.2f}-{max(ratios):.2f}"
        row = [
            str(spread["batch_size"]),
            per_seed,
            f"{statistics.fmean(cvs):.3f}" if cvs else "—",
            show("paper_max_min_ratio"),
            show("paper_cv", fmt=".3f"),
            show("ours_max_min_ratio"),
            show("ours_cv", fmt=".3f"),
            f"{spread['n_starts_ours']}/{spread['n_starts_paper']}",
        ]
        if seeded:
            row += [str(spread.get("n_seeds", "—")), show("seed_cv", fmt=".3f")]
            row.append(show("start_effect_p", fmt=".3f"))
        rows.append(row)
    return Grid(header, rows)


def _has_clean(table: Table) -> bool:
    return any(cell.clean is not None for cell in table.cells)


CELL_LEGEND = (
    "Each cell: ours / paper (ours − paper). Ours is the mean ± sample std over seeds (n runs) "
    "when there are several. Marks: `missing` = no run folder; `incomplete` = run interrupted "
    "(value, if shown, is its best so far); `[diverged]` = the run diverged (value, if shown, "
    "is its best before divergence); `[from X]` = MBT search started from X instead of the "
    "paper's start rate."
)
SPREAD_NOTE = (
    "max/min = largest found lr / smallest across the 9 start rates; CV = sample std / "
    "mean. Per seed: the spread of one seed's 9 searches (one run per start, as the "
    "paper's), mean and range over seeds, beside the paper's single-run spreads. Of "
    "seed means: the spread of each start's mean over seeds (averaging shrinks it). "
    "seed CV = the seed-to-seed CV of one cell, averaged over the row; start effect p "
    "= permutation test of log(found lr) on the start rate that shuffles the start "
    "labels within each seed (a seed shares its weights and batches across the nine "
    "starts); small p: the start rate matters beyond seed noise."
)


def table_report(table: Table) -> Report:
    """A paper table: warnings (a dirty tree, mixed settings), provenance, the data note,
    the grid of ``ours / paper (diff)``, Table 1's spreads and noise floor, the clean grid,
    the table's own sections, findings and notes."""
    warnings = [dirty_warning(table.runs), mixed_settings_warning(table)]
    note = runs_data_note(table.runs)
    sections = [
        Section(
            f"Table {table.number}: {table.title}",
            notes=[CELL_LEGEND],
            grid=_grid(table, cell_text),
            level=1,
        )
    ]
    if table.number == 1 and table.spreads:
        sections.append(
            Section(
                "Spread of the found lr across the 9 start rates",
                notes=[SPREAD_NOTE],
                grid=_spread_grid(table),
                tex="Spread of the found lr across start rates",
            )
        )
    if table.number == 1 and table.noise:
        sections += noise_floor_sections(table.noise, table.spreads)
    if _has_clean(table):
        grid = _grid(table, lambda cell: ours_text(cell, clean=True))
        sections.append(
            Section(
                "Clean protocol: test accuracy at the best validation epoch (ours only)",
                grid=grid,
                tex="Clean protocol: test accuracy at the best validation epoch",
            )
        )
    sections += table.sections
    if table.findings:
        sections.append(Section("Findings", bullets=table.findings, tex_bullets=""))
    if table.notes:
        sections.append(Section("Notes on the protocol", bullets=table.notes, tex_bullets="Note: "))
    return Report(
        sections,
        provenance=provenance_line(table),
        warnings=[warning for warning in warnings if warning],
        notes=[] if note is None else [note],
    )


def table_markdown(table: Table) -> str:
    """``table<N>.md``: the report of :func:`table_report` in Markdown."""
    return render_md(table_report(table))


def table_tex(table: Table) -> str:
    """``table<N>.tex``: booktabs tabulars, the rest as ``%`` comments (``\\input``-able)."""
    return render_tex(table_report(table))


# --------------------------------------------------------------------------- CSV


def csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def table_records(table: Table) -> Grid:
    """Long format: one row per paper cell with ours / paper / diff / n / status."""
    rows = []
    for cell in table.cells:
        seeds = sorted({run.seed for run in cell.runs if run.seed is not None})
        rows.append(
            [
                cell.table,
                cell.dataset,
                cell.model,
                cell.optimizer,
                cell.batch_size,
                format_rate(cell.start_lr),
                "" if cell.start_lr_used is None else f"{cell.start_lr_used:g}",
                cell.metric,
                cell.status,
                csv_number(cell.ours),
                csv_number(cell.std),
                cell.n,
                csv_number(cell.paper),
                csv_number(cell.diff),
                csv_number(cell.ratio),
                cell.n_runs,
                cell.n_finished,
                cell.n_diverged,
                cell.n_incomplete,
                csv_number(cell.clean),
                csv_number(cell.clean_std),
                cell.clean_n,
                ";".join(str(seed) for seed in seeds),
            ]
        )
    return Grid(CSV_COLUMNS, rows)


def table_csv(table: Table) -> str:
    """``table<N>.csv``: :func:`table_records` as CSV."""
    return render_csv(table_records(table))


# --------------------------------------------------------------------------- files


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    """Write ``table<N>.md``, ``.csv`` and ``.tex`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"table{table.number}"
    report = table_report(table)
    written = []
    for suffix, text in (
        (".md", render_md(report)),
        (".csv", table_csv(table)),
        (".tex", render_tex(report)),
    ):
        path = stem.with_suffix(suffix)
        atomic_write_text(path, text)
        written.append(path)
    return written
