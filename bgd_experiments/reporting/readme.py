"""The result numbers quoted in the READMEs, generated from the result files.

``bgd-report readme`` rewrites the text between a pair of markers

    <!-- begin generated: NAME (bgd-report readme) -->
    ...
    <!-- end generated: NAME -->

in ``results/README.md`` (block ``results``: counts of run folders, Table 1's spreads, Table
2's statuses and verdicts, Table 2+'s verdicts, Table 3's ranges) and in the top README (the
same block ``results``, its "Results at a glance", and block ``cost``: ``bgd-report cost``'s
table). Prose around the blocks quotes no result number, so nothing typed by hand can go
stale; a test checks that the committed blocks match.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bgd_experiments.reporting.cost import cost_markdown, estimate_costs
from bgd_experiments.reporting.paper import OPTIMIZER_LABELS, format_rate
from bgd_experiments.reporting.runs import RunRecord, find_run_dirs, scan_runs
from bgd_experiments.reporting.stats import METHOD_TEXT
from bgd_experiments.reporting.tables import build_table1, build_table2, build_table3
from bgd_experiments.reporting.writers import portable_source


def begin_marker(name: str) -> str:
    return f"<!-- begin generated: {name} (bgd-report readme) -->"


def end_marker(name: str) -> str:
    return f"<!-- end generated: {name} -->"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the block ``name`` holding ``body``; ValueError if it has no such block."""
    pattern = re.compile(
        re.escape(begin_marker(name)) + r"\n.*?" + re.escape(end_marker(name)), re.DOTALL
    )
    if not pattern.search(text):
        raise ValueError(f"no generated block {name!r} (markers {begin_marker(name)!r})")
    replacement = f"{begin_marker(name)}\n{body.rstrip()}\n{end_marker(name)}"
    return pattern.sub(lambda _: replacement, text, count=1)


def _range(values: Sequence[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return (
        format(low, fmt)
        if format(low, fmt) == format(high, fmt)
        else (f"{format(low, fmt)}-{format(high, fmt)}")
    )


def _table1_lines(runs: Sequence[RunRecord]) -> list[str]:
    table = build_table1(runs)
    spreads = [s for s in table.spreads if s.get("ours_max_min_ratio") is not None]
    if not spreads:
        return []
    per_seed = [r for s in spreads for r in s.get("per_seed_max_min") or []]
    of_means = [s["ours_max_min_ratio"] for s in spreads]
    paper = [s["paper_max_min_ratio"] for s in spreads if s["paper_max_min_ratio"]]
    p_values = [s["start_effect_p"] for s in spreads if s.get("start_effect_p") is not None]
    lines = [
        f"- Table 1: {len(table.runs)} searches. Spread of the found lr across the 9 start "
        f"rates (max/min): one seed's searches x{_range(per_seed, '.2f')} (paper, one run: "
        f"x{_range(paper, '.2f')}); the start means over seeds x{_range(of_means, '.2f')}."
    ]
    if p_values:
        lines.append(
            "- Table 1: within-seed permutation test of a start-rate effect, p = "
            f"{_range(p_values, '.2f')} over the {len(p_values)} batch sizes."
        )
    for size in (200, 800):
        row = [c for c in table.cells if c.batch_size == size and c.ours is not None]
        paper_row = [c.paper for c in table.cells if c.batch_size == size and c.paper]
        if row and paper_row:
            lines.append(
                f"- Table 1, batch {size}: found lr (mean over seeds) "
                f"{_range([c.ours for c in row], '.4f')} (paper "  # type: ignore[misc]
                f"{_range(paper_row, '.4f')})."
            )
    return lines


def _table2_lines(runs: Sequence[RunRecord]) -> list[str]:
    table = build_table2(runs)
    paper_runs = [run for run in table.runs if run.protocol == "paper"]
    counts = Counter(run.status for run in paper_runs)
    diverged = sorted(
        {(run.optimizer or "", run.lr or 0.0) for run in paper_runs if run.status == "diverged"},
        key=lambda item: (-item[1], item[0]),
    )
    where = ", ".join(
        f"{OPTIMIZER_LABELS.get(name, name)} at {format_rate(rate)}" for name, rate in diverged
    )
    status = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    lines = [
        f"- Table 2: {len(paper_runs)} paper-protocol runs: {status}"
        + (f" (diverged: {where})." if where else ".")
    ]
    lines += [f"- Table 2: {finding}" for finding in table.findings[1:]]
    return lines


def _table2_plus_lines(runs: Sequence[RunRecord], config_dir: Path | None) -> list[str]:
    from bgd_experiments.reporting.table2_plus import build_table2_plus, read_default_lrs

    if config_dir is None or not config_dir.is_dir():
        return []
    table = build_table2_plus(runs, read_default_lrs(config_dir))
    lines = []
    for protocol in ("paper", "clean"):
        rows = [r for r in table.protocol_rows(protocol) if r.comparison is not None]
        if not rows:
            continue
        verdicts = Counter(row.verdict.split(" (")[0] for row in rows)
        text = ", ".join(f"{verdict}: {n}" for verdict, n in sorted(verdicts.items()))
        lines.append(
            f"- Table 2+, {protocol} protocol: {len(rows)} optimizers against MBT-NAG "
            f"(Holm over {len(rows)}): {text}."
        )
    return lines


def _table3_lines(runs: Sequence[RunRecord]) -> list[str]:
    table = build_table3(runs)
    lines = []
    for dataset, chance in (("cifar10", 10.0), ("cifar100", 1.0)):
        values = [c.ours for c in table.cells if c.dataset == dataset and c.ours is not None]
        if values:
            lines.append(
                f"- Table 3, {dataset}: best test accuracy {_range(values, '.1f')}% over "
                f"{len(values)} cells (chance {chance:g}%)."
            )
    return lines + [f"- Table 3: {finding}" for finding in table.findings]


def results_block(
    results_dir: Path, config_dir: Path | None = None, folder: str | None = None
) -> str:
    """The ``results`` block: what the committed run folders and tables say, in numbers.

    ``folder``: how the block names ``results_dir`` (default ``<name>/``, as seen from
    ``results/README.md``; the top README passes ``results/<name>/``).
    """
    runs = scan_runs(results_dir)
    folders = len(find_run_dirs(results_dir))
    sources = Counter(
        portable_source(run.data_source).split(" ")[0] for run in runs if run.data_source
    )
    source_text = ", ".join(f"{n} {name}" for name, n in sorted(sources.items()))
    lines = [
        f"Generated from `{folder or results_dir.name + '/'}` by `bgd-report readme`; do not "
        "edit by hand.",
        "",
        f"How every comparison is judged (`bgd_experiments/reporting/stats.py`): {METHOD_TEXT}",
        "",
        f"- Run folders: {folders} ({len(runs)} readable); data archives recorded: {source_text}.",
        *_table1_lines(runs),
        *_table2_lines(runs),
        *_table2_plus_lines(runs, config_dir),
        *_table3_lines(runs),
    ]
    wall = [run.wall_time for run in runs if run.wall_time]
    if wall:
        lines.append(
            f"- Wall time of a run (summary.json): median {statistics.median(wall):.0f} s over "
            f"{len(wall)} runs."
        )
    return "\n".join(lines)


def cost_block(results_dir: Path, bench_dir: Path) -> str:
    """The ``cost`` block: ``bgd-report cost``'s table for ``results_dir``."""
    text = cost_markdown(estimate_costs(results_dir, bench_dir))
    # Name the folders as the repository does, never by this machine's path.
    for folder in (results_dir, bench_dir):
        text = text.replace(str(folder), f"{folder.parent.name}/{folder.name}")
    return text


def update_readmes(
    results_dir: Path,
    results_readme: Path,
    readme: Path | None,
    bench_dir: Path,
    config_dir: Path | None,
) -> list[Path]:
    """Rewrite the generated blocks in place; the files written.

    ``results_readme`` must hold block ``results``; ``readme`` (the top README) is given
    whichever of ``results`` (naming the folder ``results/<name>/``) and ``cost`` it holds.
    """
    written = []
    text = results_readme.read_text()
    results_readme.write_text(
        replace_block(text, "results", results_block(results_dir, config_dir))
    )
    written.append(results_readme)
    if readme is None or not readme.is_file():
        return written
    text = original = readme.read_text()
    if begin_marker("results") in original:
        folder = f"{results_dir.resolve().parent.name}/{results_dir.name}/"
        text = replace_block(text, "results", results_block(results_dir, config_dir, folder))
    if begin_marker("cost") in original:
        text = replace_block(text, "cost", cost_block(results_dir, bench_dir))
    if begin_marker("results") in original or begin_marker("cost") in original:
        readme.write_text(text)
        written.append(readme)
    return written
