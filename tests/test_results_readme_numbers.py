"""The numbers in the prose of results/README.md that come from result files match those files.

Each check is a pair: the fragment exactly as the README prints it (whitespace collapsed, so
line wrapping does not matter) and a function that builds the same text from the committed
files. The generated block of the README has its own generator and test.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from pagetext import flat_text

from bgd_experiments.reporting.runs import RunRecord, scan_runs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
CPU = RESULTS / "cpu"


@cache
def readme() -> str:
    return flat_text(RESULTS / "README.md")


@cache
def runs(folder: str = "cpu") -> tuple[RunRecord, ...]:
    return tuple(scan_runs(RESULTS / folder))


@cache
def noise() -> dict:
    return json.loads((CPU / "table1_noise.json").read_text())


@cache
def table2_plus() -> tuple[dict[str, str], ...]:
    with (CPU / "table2_plus.csv").open() as handle:
        return tuple(csv.DictReader(handle))


def g(x: float, digits: int) -> str:
    return f"{x:.{digits}g}"


def _commit(run: RunRecord) -> str:
    return (run.git_commit or "")[:7]


def _is_table3(run: RunRecord) -> bool:
    # Table 3's MBT runs start their search at 100; Table 2's start at 1e-2.
    return run.task == "train" and (run.optimizer or "").startswith("mbt_") and run.lr == 100


def _lr_path(folder: str, dataset: str, optimizer: str) -> list[float]:
    (run,) = [
        r
        for r in runs(folder)
        if r.model == "resnet18"
        and r.dataset == dataset
        and r.optimizer == optimizer
        and _is_table3(r)
    ]
    return [float(x) for x in run.lr_history]


# --- Table 1's noise floor (table1_noise.json) ---------------------------------------------


def _searches(width: str, family: str, start: float) -> list[dict]:
    found = [
        s
        for s in noise()["widths"][width]["searches"]
        if s["family"] == family and s["start_lr"] == start
    ]
    return sorted(found, key=lambda s: s.get("perturb_seed", 0))


def _rate(width: str, family: str, start: float, digits: int = 4) -> str:
    return " and ".join(g(s["found_lr"], digits) for s in _searches(width, family, start))


def _spread(width: str, start: str, family: str) -> dict:
    return noise()["widths"][width]["spreads"][start]["families"][family]


def noise_quarter_width() -> str:
    def both(family: str) -> str:
        return f"{_rate('0.25', family, 0.01)}; {_rate('0.25', family, 100.0)}"

    return (
        f"baseline {both('baseline')}; weights times 1 + 1e-7 N(0,1), two draws, "
        f"{both('weights_1e-7')}; channels_last {both('channels_last')}; two threads "
        f"{both('threads')}."
    )


def noise_reference() -> str:
    assert _rate("0.25", "reference", 0.01) == _rate("0.25", "baseline", 0.01)
    assert _rate("0.25", "reference", 100.0) == _rate("0.25", "baseline", 100.0)
    return (
        f"found exactly the fast path's rates ({_rate('0.25', 'reference', 0.01)}; "
        f"{_rate('0.25', 'reference', 100.0)})"
    )


def noise_pooled() -> str:
    a, b = _spread("0.25", "0.01", "float_level"), _spread("0.25", "100", "float_level")
    assert a["n"] == b["n"]
    return (
        f"x{a['max_min']:.3f} (CV {a['cv']:.3f}) from 1e-2 and x{b['max_min']:.3f} (CV "
        f"{b['cv']:.3f}) "
        f"from 100, {a['n']} searches each"
    )


def noise_full_width() -> str:
    pooled = _spread("1", "0.01", "float_level")
    return (
        f"(start 1e-2 only, {pooled['n']} searches): {_rate('1', 'baseline', 0.01, 3)}, "
        f"weight draws "
        f"{_rate('1', 'weights_1e-7', 0.01, 3)}, channels_last "
        f"{_rate('1', 'channels_last', 0.01, 3)}, "
        f"so x{pooled['max_min']:.3f} (CV {pooled['cv']:.3f})"
    )


def noise_other_seeds() -> str:
    ratios = [
        _spread("0.25", start, family)["max_min"]
        for start in ("0.01", "100")
        for family in ("loader_seed", "init_seed")
    ]
    full = _spread("1", "0.01", "loader_seed")["max_min"]

    def both(family: str) -> str:
        return f"{_rate('0.25', family, 0.01)} and {_rate('0.25', family, 100.0)}"

    return (
        f"at width 0.25 another batch order gives {both('loader_seed')}, another init "
        f"{both('init_seed')} "
        f"(x{min(ratios):.2f}-{max(ratios):.2f}); at full width another batch order gives "
        f"{_rate('1', 'loader_seed', 0.01, 3)} (x{full:.3f})"
    )


def noise_determinism() -> str:
    (cell,) = [
        r
        for r in runs()
        if r.task == "search" and r.batch_size == 200 and r.seed == 0 and r.lr == 0.01
    ]
    (twin,) = _searches("0.25", "channels_last", 0.01)
    assert cell.found_lr == twin["found_lr"]  # to the last digit
    assert noise()["widths"]["0.25"]["provenance"]["git_commit"].startswith("992d261")
    return (
        f"Table 1's cell at batch 200, start 1e-2, seed 0 (channels_last, one thread, "
        f"commit {_commit(cell)}) "
        f"is {g(cell.found_lr, 6)}, the `channels_last` search of `table1_noise.json` "
        f"(commit 992d261)"
    )


def noise_full_width_rate() -> str:
    rates = _spread("1", "0.01", "float_level")["found_lr"]
    quarter = _searches("0.25", "baseline", 0.01)[0]["found_lr"]
    return (
        f"the found rate is {min(rates):.4f}-{max(rates):.4f}, less than half the "
        f"quarter-width {g(quarter, 2)}"
    )


def noise_cost() -> str:
    widths = noise()["widths"]

    def cost(width: str) -> tuple[int, int]:
        return len(widths[width]["searches"]), round(widths[width]["wall_seconds"] / 60)

    (n_a, min_a), (n_b, min_b) = cost("0.25"), cost("1")
    return f"{n_a} searches at width 0.25 in {min_a} min and {n_b} at width 1.0 in {min_b} min"


# --- Table 3 and Figure 3 ------------------------------------------------------------------


def table3_cifar100_rates() -> str:
    mmt, nag = _lr_path("cpu", "cifar100", "mbt_mmt"), _lr_path("cpu", "cifar100", "mbt_nag")
    peak = max(nag)
    return (
        f"0.31 to {g(mmt[-1], 2)} for MBT-MMT, {g(nag[0], 2)} to {g(nag[-1], 2)} for MBT-NAG, "
        f"whose largest is {g(peak, 2)} in epoch {nag.index(peak) + 1}"
    ).replace("0.31", g(mmt[0], 2), 1)


def table3_cifar100_restart() -> str:
    mmt = _lr_path("cpu-warm-restart", "cifar100", "mbt_mmt")
    nag = _lr_path("cpu-warm-restart", "cifar100", "mbt_nag")
    assert g(mmt[0], 2) == g(nag[0], 2)
    return f"`results/cpu-warm-restart/`: {g(mmt[0], 2)} to {g(mmt[-1], 2)} and to {g(nag[-1], 2)})"


def first_sigma() -> str:
    # The first search of a Table 3 run: the accepted mean sigma times sqrt(batch / N).
    factor = math.sqrt(200 / 2000)
    c100 = _lr_path("cpu", "cifar100", "mbt_mmt")[0]
    c10 = _lr_path("cpu", "cifar10", "mbt_mmt")[0]
    assert abs(c100 / factor - 1) < 0.05  # "near 1"
    return f"near 1 on CIFAR-100 ({g(c10 / factor, 2)} on CIFAR-10); times"


def first_rate() -> str:
    return f"that is a rate of {g(_lr_path('cpu', 'cifar100', 'mbt_mmt')[0], 2)}."


def figure3() -> str:
    with (CPU / "fig3.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["dataset"] == "cifar10"]

    def path(optimizer: str) -> str:
        lrs = [
            float(r["lr"])
            for r in sorted(rows, key=lambda r: int(r["epoch"]))
            if r["optimizer"] == optimizer
        ]
        return f"{g(lrs[0], 2)} to {g(lrs[-1], 2)}"

    return f"(`fig3.csv`: MBT-MMT {path('mbt_mmt')}, MBT-NAG {path('mbt_nag')})"


# --- which commit made which runs ----------------------------------------------------------


def made_from_table() -> str:
    made = [r for r in runs() if _commit(r) == "2ebc13e"]
    searches = [r for r in made if r.task == "search"]
    table3 = [r for r in made if _is_table3(r)]
    table2 = [r for r in made if r.task == "train" and not _is_table3(r)]
    assert {r.dataset for r in table2} == {"cifar10"} and {r.model for r in table2} == {"resnet18"}
    cells = {(r.optimizer, r.lr) for r in table2}
    starts = {r.lr for r in searches}
    batches = {r.batch_size for r in searches}
    seeds = ", ".join(str(s) for s in sorted({r.seed for r in searches}))
    assert len(searches) == len(starts) * len(batches) * len(seeds.split(", "))
    assert {r.seed for r in table3} == {0}
    return (
        f"| Table 1 | {len(searches)} searches: {len(starts)} start rates x {len(batches)} "
        f"batch sizes x seeds {seeds} | "
        f"| Table 2 | {len(table2)} runs: {len(cells)} cells x seeds "
        f"{', '.join(str(s) for s in sorted({r.seed for r in table2}))} | "
        f"| Table 3 / Figure 3 | {len(table3)} runs (seed 0) |"
    )


def other_runs() -> str:
    fair = [r for r in runs() if _commit(r) == "e5159ac"]
    plus = [r for r in runs() if _commit(r) == "6862672"]
    assert {r.protocol for r in fair} == {"clean"}
    assert {_commit(r) for r in runs()} == {"2ebc13e", "e5159ac", "6862672"}
    assert all(r.git_dirty is False for r in runs())
    seed0 = [r for r in fair if r.seed == 0]
    optimizers = Counter(r.optimizer for r in seed0)
    rates = set(optimizers.values())
    assert len(rates) == 1 and len({(r.optimizer, r.lr) for r in seed0}) == len(seed0)
    later = [r for r in fair if r.seed != 0]
    assert {r.seed for r in later} == {1, 2}
    return (
        f"are the {len(fair)} clean-protocol runs of Table 2's fair comparison, made from "
        f"the clean commit "
        f"e5159ac ({len(seed0)} of seed 0: {len(optimizers)} baselines at {rates.pop()} "
        f"rates each; "
        f"{len(later)} of seeds 1 and 2), and the {len(plus)} runs of Table 2+ made from "
        f"6862672 (below)."
    )


def warm_restart_twins() -> str:
    twins = runs("cpu-warm-restart")
    table3 = [r for r in runs() if _is_table3(r)]
    assert {_commit(r) for r in twins} == {_commit(r) for r in table3}
    assert len(twins) == len(table3)
    return f"measured on all {len(twins)} Table 3 runs made both ways from the same commit"


def densenet_wall_time() -> str:
    minutes = [r.wall_time / 60 for r in runs() if r.model == "densenet121"]
    return (
        f"the committed DenseNet121 runs of Table 3 took "
        f"{min(minutes):.1f}-{max(minutes):.1f} min each (`summary.json`)"
    )


# --- Table 2+ (table2_plus.csv and the runs) -----------------------------------------------


def _plus(protocol: str, optimizer: str) -> dict[str, str]:
    (row,) = [r for r in table2_plus() if r["protocol"] == protocol and r["optimizer"] == optimizer]
    return row


def plus_runs() -> str:
    rows = table2_plus()
    total = sum(int(r["n_runs"]) for r in rows)
    seeds = {r["seeds"] for r in rows}
    paper_own = [
        r for r in rows if r["protocol"] == "paper" and r["family"] in ("paper baseline", "MBT")
    ]
    own = sum(int(r["n_runs"]) for r in paper_own)
    assert seeds == {"0;1;2"}
    made = [r for r in runs() if _commit(r) == "6862672"]
    return (
        f"{total} runs ({len(rows)} optimizer and protocol cells x 3 seeds): the {own} "
        f"paper-protocol runs "
        f"of the paper's optimizers are Table 2's runs (commit 2ebc13e); the other "
        f"{len(made)} were made"
    )


def plus_passes_per_step() -> str:
    return f"{float(_plus('paper', 'mbt_nag')['passes_per_step']):.1f} passes per training step"


def plus_ratios() -> str:
    nag = float(_plus("paper", "mbt_nag")["passes_to_target"])
    cheap = [nag / float(_plus("paper", o)["passes_to_target"]) for o in ("sgd_cosine", "prodigy")]
    sls = nag / float(_plus("paper", "sls")["passes_to_target"])
    return (
        f"To 25% it needs {round(min(cheap))}-{round(max(cheap))}x the passes of SGD + "
        f"cosine and Prodigy and about {round(sls)}x SLS's"
    )


def plus_wall_times() -> str:
    def wall(protocol: str, optimizer: str) -> int:
        return round(float(_plus(protocol, optimizer)["wall_time_to_target"]))

    return (
        f"in wall time {wall('paper', 'mbt_nag')} s against {wall('paper', 'sgd_cosine')} "
        f"s for SGD + cosine under "
        f"`paper` ({wall('clean', 'mbt_nag')} s against {wall('clean', 'sgd_cosine')} s "
        f"under `clean`"
    )


def plus_search_cost() -> str:
    nag = [
        r
        for r in runs()
        if r.optimizer == "mbt_nag"
        and r.model == "resnet18"
        and r.dataset == "cifar10"
        and r.lr == 0.01
    ]
    steps = math.ceil(2000 / 200)  # training steps per epoch at budget=cpu
    forward = [f - steps for r in nag for f in r.forward_passes_history]
    backward = {b - steps for r in nag for b in r.backward_passes_history}
    (batches,) = {int(b) for b in backward}
    trials = [f - batches for f in forward]
    return (
        f"Each search costs about {round(statistics.mean(forward))} forward and {batches} "
        f"backward passes here "
        f"({batches} gradient batches, {min(trials):.0f}-{max(trials):.0f} trials)"
    )


def loss_after_first_search() -> str:
    for optimizer in ("mbt_mmt", "mbt_nag"):
        (run,) = [
            r
            for r in runs()
            if r.dataset == "cifar100" and r.model == "resnet18" and r.optimizer == optimizer
        ]
        with (run.path / "metrics.jsonl").open() as handle:
            first = json.loads(handle.readline())
        assert first["epoch"] == 1 and 100 <= first["test_loss"] < 1000
    return "After that first epoch the test loss is in the hundreds"


@cache
def fig2b() -> dict:
    return json.loads((CPU / "fig2b.json").read_text())


def resnet18_size() -> str:
    return f"(ResNet18: {fig2b()['num_parameters'] / 1e6:.2f}M parameters instead of 11.2M;"


@cache
def functions() -> dict:
    return json.loads((CPU / "functions.json").read_text())


def figure2_provenance() -> str:
    made = {}
    for name, payload in (
        ("functions", functions()),
        ("fig2b", fig2b()),
        ("fig2b_rounding", fig2b_rounding()),
    ):
        assert payload["provenance"]["git_dirty"] is False, name
        made[name] = payload["provenance"]["git_commit"][:7]
    return (
        f"`functions.json` was made from the clean commit {made['functions']}, `fig2b.json` "
        f"from {made['fig2b']} and `fig2b_rounding.json` from {made['fig2b_rounding']} (each "
        "with `git_dirty: false`)"
    )


def mexican_hat_settling() -> str:
    mexican = functions()["mexican_hat"]
    settle = mexican["two_way_settling"]
    two_way = mexican["methods"]["Two-way Backtracking GD"]
    backtracking = mexican["methods"]["Backtracking GD"]
    assert two_way["wall_time_total_s"] > backtracking["wall_time_total_s"]  # "more wall time"
    return (
        f"{settle['settled_by_paper_iteration']} of the {settle['runs_considered']} Two-way "
        f"Backtracking GD runs of {settle['min_iterations']} or more iterations keep one "
        f"constant step from iteration {settle['paper_settle_iteration']} or earlier to their "
        f'end (the paper: "stablises to Standard GD in only 6 iterates", shown for its Figure '
        f"2(a), with no share of starts stated), and Two-way did not take less time than "
        f"Backtracking GD: {two_way['function_evals_mean']:.1f} function evaluations a run on "
        f"average against {backtracking['function_evals_mean']:.1f}, and more wall time"
    )


@cache
def fig2b_rounding() -> dict:
    return json.loads((CPU / "fig2b_rounding.json").read_text())


def fig2b_spread() -> str:
    report = fig2b_rounding()
    runs = report["runs"]
    latest = max(
        max(r["first_step_difference"] or 0, r["first_loss_difference"] or 0) for r in runs
    )
    earliest_settle = min(r["settle_iteration"] for r in runs)
    iterations = len(runs[0]["step_sizes"])
    spread = report["final_loss_spread"]
    return (
        f"each of the others differs from the NCHW two-thread run by iteration {latest}, the "
        "final loss ranges over "
        f"{spread['min']:.4f}-{spread['max']:.4f}, and none keeps a constant step before "
        f"iteration {earliest_settle} of {iterations}."
    )


def fig2b_reproduced() -> str:
    """The committed fig2b.json is exactly one of the four settings' runs."""
    committed = fig2b()
    same = [
        r
        for r in fig2b_rounding()["runs"]
        if r["step_sizes"] == committed["step_sizes"] and r["losses"] == committed["losses"]
    ]
    assert len(same) == 1
    layout = "channels_last" if same[0]["channels_last"] else "NCHW"
    threads = {1: "one", 2: "two"}[same[0]["threads"]]
    return (
        f"The committed `fig2b.json` is the {layout} {threads}-thread run (final loss "
        f"{committed['summary']['final_value']:.4f})"
    )


def fig2b_settings() -> str:
    settings = ", ".join(f"{k}: {v}" for k, v in fig2b()["settings"].items())
    return f"records `settings: {{{settings}}}` on {fig2b()['num_examples']} images"


def timing_table_runs() -> str:
    made = [r for r in runs() if _commit(r) == "2ebc13e"]
    seed0 = [r for r in made if r.seed == 0]
    table1 = [r for r in seed0 if r.task == "search"]
    table2 = [r for r in seed0 if r.task == "train" and not _is_table3(r)]
    table3 = [r for r in seed0 if _is_table3(r)]
    later = [r for r in made if r.task == "train" and not _is_table3(r) and r.seed in (1, 2)]
    trained = len(table1) + len(table2) + len(table3)  # run folders; Figure 2 writes JSON
    return (
        f"| Table 1 (search only) | {len(table1)} | 13.6 min | {len(table1)} finished | "
        f"| Table 2 | {len(table2)} | 20.7 min | statuses: generated block above | "
        f"| Table 3 (incl. Figure 3's four runs) | {len(table3)} | 33.9 min | "
        f"{len(table3)} finished | "
        f"| Figure 2 (`functions` + 2b) | 1 | 3.9 min | finished | "
        f"| Figure 3 (report only) | 0 | 6 s | from Table 3's runs | "
        f"| **`make paper BUDGET=cpu`** | {trained} | **72 min** | | "
        f"| Table 2, seeds 1 and 2 | {len(later)} | 41 min |"
    )


def plus_optimizers() -> str:
    rows = [r for r in table2_plus() if r["protocol"] == "paper"]
    own = [r for r in rows if r["family"] in ("paper baseline", "MBT")]
    assert {r["optimizer"] for r in rows} == {
        r["optimizer"] for r in table2_plus() if r["protocol"] == "clean"
    }
    return f"the {len(rows)} optimizers of `experiment=table2_plus` (the paper's {len(own)}"


def plus_comparisons() -> str:
    rows = [r for r in table2_plus() if r["protocol"] == "paper" and r["optimizer"] != "mbt_nag"]
    return f"the Holm-corrected test over each protocol's {len(rows)} comparisons"


CHECKS = [
    timing_table_runs,
    plus_optimizers,
    plus_comparisons,
    loss_after_first_search,
    resnet18_size,
    fig2b_settings,
    fig2b_spread,
    mexican_hat_settling,
    figure2_provenance,
    fig2b_reproduced,
    noise_quarter_width,
    noise_reference,
    noise_pooled,
    noise_full_width,
    noise_other_seeds,
    noise_determinism,
    noise_full_width_rate,
    noise_cost,
    table3_cifar100_rates,
    table3_cifar100_restart,
    first_sigma,
    first_rate,
    figure3,
    made_from_table,
    other_runs,
    warm_restart_twins,
    densenet_wall_time,
    plus_runs,
    plus_passes_per_step,
    plus_ratios,
    plus_wall_times,
    plus_search_cost,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_readme_number_matches_result_files(check):
    if not (CPU / "runs").is_dir():
        pytest.skip("no committed results/cpu runs in this checkout")
    fragment = check()
    assert fragment in readme(), f"results/README.md should print: {fragment}"
