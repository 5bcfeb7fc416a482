"""The deterministic experiments' report: ``functions.md`` (tables, the paper's statements
beside our numbers), Figure 2(a) and the plot of Figure 2(b). The runs themselves are
:mod:`bgd_experiments.linesearch.experiments`; the claims are judged in
:mod:`bgd_experiments.reporting.function_claims`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bgd_experiments.io import atomic_save_figure, atomic_write_json, atomic_write_text
from bgd_experiments.linesearch.experiments import (
    ALPHA,
    BETA,
    DELTA0,
    FIG2A_MAX_PLOTTED_ITERATIONS,
    SETTLE_MIN_ITERATIONS,
    settle_iteration,
)
from bgd_experiments.reporting.function_claims import fmt_number, fmt_point, judge_claims
from bgd_experiments.reporting.report import Grid, Report, Section, render_md


def write_functions_report(report: dict[str, Any], out_dir: Path) -> None:
    """Judge the paper's claims into ``report`` (the plain results of
    :func:`~bgd_experiments.linesearch.experiments.run_deterministic_experiments`), then write
    ``functions.md``, ``functions.json``, ``fig2a.png`` and ``fig2a.pdf`` into ``out_dir``."""
    judge_claims(report)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_fig2a(report["mexican_hat"]["figure_2a_runs"], out_dir)
    atomic_write_text(out_dir / "functions.md", render_functions_markdown(report))
    atomic_write_json(out_dir / "functions.json", report)


def write_fig2b(payload: dict[str, Any], out_dir: Path) -> None:
    """``fig2b.png``, ``fig2b.pdf`` and ``fig2b.json`` (the payload) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_fig2b(payload, out_dir)
    atomic_write_json(out_dir / "fig2b.json", payload)


def fig2b_budget(payload: dict[str, Any]) -> str:
    """The run's budget for the title: model and width, images, iterations, seed."""
    request = payload.get("request", {})
    model = request.get("model", {})
    parts = []
    if model.get("name"):
        width = model.get("width")
        parts.append(f"{model['name']}" + (f" width {width:g}" if width is not None else ""))
    parts.append(f"{payload['num_examples']} images as one batch")
    parts.append(f"{len(payload['step_sizes'])} iterations")
    if "seed" in request:
        parts.append(f"seed {request['seed']}")
    return ", ".join(parts)


def plot_fig2b(payload: dict[str, Any], out_dir: Path) -> None:
    """Figure 2(b): step size and loss per iteration, as ``fig2b.png`` / ``fig2b.pdf``."""
    settings = payload["settings"]
    alpha, beta, delta0 = settings["alpha"], settings["beta"], settings["delta0"]
    batchnorm_mode = payload["batchnorm_mode"]
    steps = payload["step_sizes"]
    losses = payload["losses"]
    figure = Figure(figsize=(7.0, 4.2), constrained_layout=True)
    axes = figure.add_subplot()
    axes.plot(range(len(steps)), steps, marker=".", label="step size")
    if steps and max(steps) / min(steps) > 10:
        axes.set_yscale("log")
    axes.set_xlabel("iteration n")
    axes.set_ylabel("accepted step size δ_n")
    loss_axes = axes.twinx()
    loss_axes.plot(range(len(losses)), losses, color="tab:red", label="loss")
    loss_axes.set_ylabel("full-batch cross-entropy", color="tab:red")
    axes.set_title(
        "Fig. 2(b): Two-way Backtracking GD on the full-batch loss\n"
        f"{fig2b_budget(payload)}\n"
        f"α={alpha}, β={beta}, δ0={delta0}, BatchNorm {batchnorm_mode} mode",
        fontsize=10,
    )
    lines = axes.get_lines() + loss_axes.get_lines()
    axes.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    for suffix in ("png", "pdf"):
        atomic_save_figure(out_dir / f"fig2b.{suffix}", figure)


def plot_fig2a(figure_runs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Two-way step size per iteration on the Mexican hat (one line per start)."""
    figure = Figure(figsize=(7.0, 5.0), constrained_layout=True)
    axes = figure.add_subplot()
    all_steps = [s for run in figure_runs for s in run["step_sizes"]]
    for run in figure_runs:
        steps = run["step_sizes"]
        label = (
            f"r0={run['r0']:.3f}, θ0={run['theta0']:.3f} "
            f"({run['iterations']} it., {run['stop_reason']})"
        )
        axes.plot(range(len(steps)), steps, marker=".", markersize=3, linewidth=0.8, label=label)
    if all_steps and max(all_steps) / min(all_steps) > 10:
        axes.set_yscale("log")
    axes.set_xlabel("iteration n")
    axes.set_ylabel("accepted step size δ_n")
    axes.set_title(
        "Fig. 2(a): Two-way Backtracking GD on the Mexican hat\n"
        f"α={ALPHA}, β={BETA}, δ0={DELTA0}, float64; first "
        f"{FIG2A_MAX_PLOTTED_ITERATIONS} iterations at most",
        fontsize=10,
    )
    axes.legend(
        fontsize=7,
        title="start x0 = r0 (cos θ0, sin θ0)",
        title_fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=2,
    )
    axes.grid(True, which="both", alpha=0.3)
    paths = [out_dir / "fig2a.png", out_dir / "fig2a.pdf"]
    for path in paths:
        atomic_save_figure(path, figure)
    return paths


# --- Report ----------------------------------------------------------------------------------


def _example_grid(example: dict[str, Any]) -> Grid:
    columns = [
        "method",
        "final point",
        "iterations",
        "stop",
        "final step",
        "f(x)",
        "‖∇f‖",
        "function evals",
        "gradient evals",
        "wall time (s)",
    ]
    rows = [
        [
            run["label"],
            fmt_point(run["final_point"]),
            run["iterations"],
            run["stop_reason"],
            f"{run['final_step_size']:.6g}",
            f"{run['final_value']:.6g}",
            f"{run['final_grad_norm']:.3e}",
            run["function_evals"],
            run["gradient_evals"],
            f"{run['wall_time_s']:.3f}",
        ]
        for run in example["runs"]
    ]
    return Grid(columns, rows)


def _yes_no(flag: bool | str) -> str:
    """A verdict; a text where the paper gives nothing to judge against (e.g. a share)."""
    if isinstance(flag, str):
        return flag
    return "yes" if flag else "**no**"


def _claims_grid(claims: list[dict[str, Any]]) -> Grid:
    rows = [
        [claim["claim"], claim["ours"], claim["criterion"], _yes_no(claim["agrees"])]
        for claim in claims
    ]
    return Grid(["paper's claim", "our run", "criterion", "agrees"], rows)


def _paper_grid(rows: list[dict[str, Any]]) -> Grid:
    cells = [[row["quantity"], row["paper"], row["ours"], row["note"]] for row in rows]
    return Grid(["quantity", "paper", "ours", "note"], cells)


def _span_text(span: list[float] | None) -> str:
    return "" if span is None else f" (r = {span[0]:.4f}-{span[1]:.4f})"


def _endings_grid(endings: dict[str, dict[str, Any]], grad_tol: float) -> Grid:
    columns = [
        "method",
        "jumped out to the flat region r ≥ 1 (∇f = 0)",
        f"inside the disk, stopped by ‖∇f‖ ≤ {grad_tol:g}",
        "... of which at a local minimum (Hessian positive definite)",
        "inside the disk, still moving at the iteration budget",
    ]
    rows = [
        [
            name,
            f"{end['flat_region']}/{end['runs']}{_span_text(end['flat_region_radius'])}",
            f"{end['inside_stopped']}/{end['runs']}{_span_text(end['inside_stopped_radius'])}",
            f"{end['inside_stopped_local_minimum']}/{end['inside_stopped']}",
            f"{end['inside_moving']}/{end['runs']}{_span_text(end['inside_moving_radius'])}",
        ]
        for name, end in endings.items()
    ]
    return Grid(columns, rows)


def _methods_grid(methods: dict[str, dict[str, Any]]) -> Grid:
    columns = [
        "method",
        "converged",
        "convergence rate",
        "iterations to convergence (mean / median)",
        "iterations, all runs (mean)",
        "function evals (mean)",
        "gradient evals (mean)",
        "function evals / iteration",
        "wall time total (s)",
        "wall time per run (s)",
        "median final ‖∇f‖",
        "median final r",
    ]
    rows = [
        [
            name,
            f"{stats['converged']}/{stats['runs']}",
            f"{stats['convergence_rate']:.2f}",
            f"{fmt_number(stats['iterations_mean_converged'], 1)} / "
            f"{fmt_number(stats['iterations_median_converged'], 1)}",
            f"{stats['iterations_mean_all']:.1f}",
            f"{stats['function_evals_mean']:.1f}",
            f"{stats['gradient_evals_mean']:.1f}",
            f"{stats['function_evals_per_iteration']:.2f}",
            f"{stats['wall_time_total_s']:.2f}",
            f"{stats['wall_time_mean_s']:.4f}",
            f"{stats['final_grad_norm_median']:.2e}",
            f"{stats['final_radius_median']:.4f}",
        ]
        for name, stats in methods.items()
    ]
    return Grid(columns, rows)


def _fig2a_statement(mexican: dict[str, Any]) -> str:
    parts = []
    for run in mexican["figure_2a_runs"]:
        steps = run["step_sizes"]
        if len(steps) < SETTLE_MIN_ITERATIONS:
            parts.append(f"stops after {run['iterations']} iterations")
            continue
        settle = settle_iteration(steps)
        if settle <= len(steps) // 2:
            parts.append(f"constant {steps[-1]:.4g} from iteration {settle} (of those plotted)")
        else:
            recent = sorted({round(s, 4) for s in steps[-20:]})
            parts.append(f"keeps changing (last 20 plotted steps take values {recent})")
    return "; ".join(f"start {i + 1}: {text}" for i, text in enumerate(parts))


def _long_runs_lines(check: dict[str, Any] | None) -> list[str]:
    if check is None:
        return []
    parts = [
        f"{name}: {run['iterations']} iterations ({run['stop_reason']}), final ‖∇f‖ = "
        f"{run['final_grad_norm']:.2e}, f = {run['final_value']:.2e}, r = "
        f"{run['final_radius']:.4f}, {run['wall_time_s']:.1f} s"
        for name, run in check["runs"].items()
    ]
    return [
        f"Longer check runs from the first start where Backtracking GD did not converge "
        f"(r0 = {check['r0']:.4f}, θ0 = {check['theta0']:.4f}): " + "; ".join(parts) + ".",
    ]


def functions_report(report: dict[str, Any]) -> Report:
    """functions.md's report: the tables, the paper's claims and whether our runs agree."""
    ex36, ex37, mexican = report["example_3_6"], report["example_3_7"], report["mexican_hat"]
    settings = report["settings"]
    mh_settings = mexican["settings"]
    comparison = mexican["two_way_vs_backtracking"]
    lead = Section(
        "Deterministic experiments (Truong & Nguyen, Part 2, Section 3)",
        notes=[
            f"Settings: α = {settings['alpha']}, β = {settings['beta']}, "
            f"δ0 = {settings['delta0']}, stop at max_iter = {settings['max_iter']} iterations "
            f"or ‖∇f‖ ≤ {settings['grad_tol']}, float64 on the CPU. Regenerate with "
            "`bgd-run experiment=functions`. "
            f"Total wall time {report['wall_time_s']:.1f} s.",
            "Evaluation counts: a value-and-gradient call counts as 1 function + 1 gradient "
            "evaluation, each trial point of a line search as 1 function evaluation; totals "
            "include the final evaluation at the last point. Stop `line_search_failed`: no step "
            "δ0·β^k passed Armijo because the decrease it asks for, α·δ·‖∇f‖², is below the "
            "float64 rounding of f (trial points then equal x), so ‖∇f‖ ≤ 1e-10 is out of "
            "reach.",
        ],
        level=1,
    )
    mexican_lead = (
        f"{mh_settings['num_starts']} random starts x0 = r0(cos θ0, sin θ0) with "
        f"r0 ~ U{tuple(mh_settings['radius_range'])} and θ0 ~ U(π, 2π) (so sin θ0 < 0), "
        f"seed {mh_settings['seed']}; at most {mh_settings['max_iter']} iterations per run "
        "(runs that enter the function's spiral valley crawl along it, see the check below, "
        "so a larger budget mostly buys time, not convergence). Standard GD uses the constant "
        f"step 1/L = {mh_settings['standard_gd_step']:.5f}, with L = "
        f"{mh_settings['lipschitz_estimate']:.3f} the largest |Hessian eigenvalue| on a "
        "401×401 grid of [-1, 1]² (central differences of the exact gradient). Converged = "
        "stopped by ‖∇f‖ ≤ 1e-10; iteration means/medians are over converged runs."
    )
    identical = (
        f"Two-way and Backtracking GD took identical step sequences (hence identical iterates) "
        f"in {comparison['identical_step_sequences']} of {comparison['runs']} runs: growing the "
        "step back while Armijo holds, as the spec and the authors' code do, usually lands on "
        "the same grid step that plain backtracking from δ0 finds. Two-way used fewer "
        f"function evaluations in {comparison['two_way_fewer_function_evals']} of "
        f"{comparison['runs']} runs."
    )
    figure = (
        "`fig2a.png` / `fig2a.pdf`: the step size of Two-way Backtracking GD per iteration on "
        f"the Mexican hat for the first {len(mexican['figure_2a_runs'])} starts above — "
        + _fig2a_statement(mexican)
        + "."
    )
    return Report(
        [
            lead,
            Section(
                f"Example 3.6: {ex36['objective']}, start {tuple(ex36['start'])}",
                grid=_example_grid(ex36),
            ),
            Section(
                notes=[
                    "The paper's statements beside our numbers (the paper's side: "
                    "`bgd_experiments/linesearch/paper_values.py`):"
                ],
                grid=_paper_grid(ex36["paper_comparison"]),
            ),
            Section(grid=_claims_grid(ex36["claims"])),
            Section(
                f"Example 3.7: {ex37['objective']}, start {tuple(ex37['start'])}",
                grid=_example_grid(ex37),
            ),
            Section(grid=_paper_grid(ex37["paper_comparison"])),
            Section(grid=_claims_grid(ex37["claims"])),
            Section(
                "Mexican hat: Standard GD, Backtracking GD, Two-way Backtracking GD",
                notes=[mexican_lead],
                grid=_methods_grid(mexican["methods"]),
                after=[
                    identical,
                    *_long_runs_lines(mexican["long_runs_check"]),
                    "Where the runs end (counted from each run's final point and stop reason):",
                ],
            ),
            Section(grid=_endings_grid(mexican["endings"], settings["grad_tol"])),
            Section(grid=_paper_grid(mexican["paper_comparison"])),
            Section(grid=_claims_grid(mexican["claims"])),
            Section("Figure 2(a)", notes=[figure]),
        ]
    )


def render_functions_markdown(report: dict[str, Any]) -> str:
    """functions.md: :func:`functions_report` in Markdown."""
    return render_md(functions_report(report))
