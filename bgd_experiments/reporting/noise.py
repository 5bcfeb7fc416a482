"""The MBT search's noise floor beside Table 1.

The search takes discrete decisions (halve or double sigma) on loss differences, so
float-level details (memory layout, autograd vs no-grad trials, a 1e-7 relative change of the
weights) can flip one and move the found lr. ``scripts/search_noise.py`` measures how far,
and writes ``table1_noise.json`` into the results folder; this module summarises it and
renders the "Noise floor" section of ``table1.md``. Table 1's "nearly independent of the
start rate" only means something against that floor.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bgd_experiments.io import atomic_write_text
from bgd_experiments.reporting.report import Grid, Section, number_text
from bgd_experiments.reporting.stats import max_min_and_cv

NOISE_FILE = "table1_noise.json"

# Families whose only change is float-level (the decisions would be the same in exact
# arithmetic); seeds change the batches or the initial weights, a real change of input.
FLOAT_FAMILIES = ("repeat", "weights_1e-7", "channels_last", "reference", "threads")
SEED_FAMILIES = ("loader_seed", "init_seed")
FAMILY_LABELS = {
    "repeat": "same run again",
    "weights_1e-7": "weights x (1 + 1e-7 N(0,1))",
    "channels_last": "channels_last vs NCHW",
    "reference": "reference search (autograd trials)",
    "threads": "1 thread vs 2",
    "float_level": "all float-level perturbations",
    "loader_seed": "other batch orders (loader seed)",
    "init_seed": "other initial weights (init seed)",
}


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, max/min and coefficient of variation (sample std / mean) of positive values."""
    max_min, cv = max_min_and_cv(values)
    n = sum(value is not None and value > 0 for value in values)
    return {"n": n, "max_min": max_min, "cv": cv}


def family_spreads(searches: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per start rate (key ``f"{start:g}"``), the spread of each family, baseline included.

    Every family's values are the baseline's plus its own, since each perturbs the baseline;
    ``float_level`` pools the baseline and all float-level families.
    """
    out: dict[str, dict[str, Any]] = {}
    for start in sorted({float(s["start_lr"]) for s in searches}, reverse=True):
        here = [s for s in searches if float(s["start_lr"]) == start]
        base = [float(s["found_lr"]) for s in here if s["family"] == "baseline"]
        families: dict[str, Any] = {}
        for family in (*FLOAT_FAMILIES, "float_level", *SEED_FAMILIES):
            pool = FLOAT_FAMILIES if family == "float_level" else (family,)
            own = [float(s["found_lr"]) for s in here if s["family"] in pool]
            if own:
                families[family] = {**spread(base + own), "found_lr": base + own}
        out[f"{start:g}"] = {"baseline": base[0] if base else None, "families": families}
    return out


def load_noise(results_dir: str | Path) -> dict[str, Any] | None:
    """The noise measurement of ``results_dir`` (``table1_noise.json``), None if absent."""
    path = Path(results_dir) / NOISE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_noise(noise: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write the noise measurement (with its regenerated Table 1 spreads) into ``out_dir``."""
    path = Path(out_dir) / NOISE_FILE
    atomic_write_text(path, json.dumps(noise, indent=1) + "\n")
    return path


def _widths(noise: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return sorted(noise.get("widths", {}).items(), key=lambda item: float(item[0]))


def per_seed_rows(table1_spreads: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per batch size, the spread across the 9 start rates of one seed's searches, averaged
    over seeds (like for like with one search per perturbation): ``table1_start_rate_spread``
    of the noise file, regenerated from the committed runs by ``bgd-report table1``."""
    rows = []
    for row in table1_spreads:
        ratios = list(row.get("per_seed_max_min") or [])
        cvs = list(row.get("per_seed_cv") or [])
        rows.append(
            {
                "batch_size": row.get("batch_size"),
                "n_starts_ours": row.get("n_starts_ours"),
                "n_seeds": len(ratios),
                "per_seed_max_min": ratios,
                "per_seed_cv": cvs,
                "ours_max_min_ratio": statistics.fmean(ratios) if ratios else None,
                "ours_cv": statistics.fmean(cvs) if cvs else None,
            }
        )
    return rows


def noise_floor_sections(
    noise: Mapping[str, Any], table1_spreads: Sequence[Mapping[str, Any]]
) -> list[Section]:
    """The "Noise floor" sections: each perturbation's spread of the found lr, beside the
    spread across Table 1's start rates per batch size, and a one-sentence reading."""
    settings = noise.get("settings", {})
    batch = settings.get("batch_size")
    intro = (
        f"The same search (MBT-GD, k = {settings.get('num_batches', '?')}, batch {batch}, "
        f"N = {settings.get('num_samples', '?')}) from the same initial weights and batches, "
        "under perturbations that change only float rounding, and under other seeds "
        f"(`{NOISE_FILE}`, `scripts/search_noise.py`). max/min and CV (sample std / mean) "
        "include the unperturbed baseline; n = searches."
    )
    rows = []
    floors: list[tuple[str, float, float]] = []  # (where, float-level max/min, CV)
    for width, entry in _widths(noise):
        for start, per_start in entry.get("spreads", {}).items():
            for family, values in per_start["families"].items():
                found = values.get("found_lr") or []
                span = f"{min(found):.5f}-{max(found):.5f}" if found else "-"
                rows.append(
                    [
                        f"{float(width):g}",
                        start,
                        FAMILY_LABELS.get(family, family),
                        values["n"],
                        span,
                        number_text(values["max_min"], ".3f"),
                        number_text(values["cv"], ".3f"),
                    ]
                )
                if family == "float_level" and values["max_min"] is not None:
                    where = f"width {float(width):g} from {start}"
                    floors.append((where, values["max_min"], values["cv"]))
    floor_grid = Grid(
        ["width", "start lr", "perturbation", "n", "found lr (min-max)", "max/min", "CV"], rows
    )
    table1_spreads = per_seed_rows(table1_spreads)
    start_rows = []
    for row in table1_spreads:
        mark = " (noise batch)" if row.get("batch_size") == batch else ""
        start_rows.append(
            [
                f"{row['batch_size']}{mark}",
                row["n_seeds"],
                number_text(row.get("ours_max_min_ratio"), ".3f"),
                number_text(row.get("ours_cv"), ".3f"),
            ]
        )
    start_grid = Grid(
        [
            "batch",
            "seeds",
            "start-rate max/min (per seed, mean)",
            "start-rate CV (per seed, mean)",
        ],
        start_rows,
    )
    return [
        Section("Noise floor of the search", notes=[intro], grid=floor_grid),
        Section(
            notes=[
                "Against the spread across the 9 start rates of Table 1 (committed runs: the "
                "spread of one seed's 9 searches, mean over seeds):"
            ],
            grid=start_grid,
            after=[reading(floors, table1_spreads, batch)],
        ),
    ]


def reading(
    floors: Sequence[tuple[str, float, float]],
    table1_spreads: Sequence[Mapping[str, Any]],
    batch: int | None,
) -> str:
    """One sentence: is the start-rate spread at the measured batch size within the floor?"""
    row = next((r for r in table1_spreads if r.get("batch_size") == batch), None)
    if not floors or row is None or row.get("ours_cv") is None:
        return "Reading: not enough values to compare the start-rate spread with the noise floor."
    cv_floor = max(cv for _, _, cv in floors)
    ratio_floor = max(ratio for _, ratio, _ in floors)
    start_cv, start_ratio = row["ours_cv"], row["ours_max_min_ratio"]
    where = "; ".join(f"{w}: x{r:.3f}, CV {c:.3f}" for w, r, c in floors)
    # A CV from a handful of searches is itself uncertain to a factor of about 2.
    if start_cv <= cv_floor:
        verdict = (
            "is within the noise floor: moving the start rate over 8 decades changes the "
            "found lr no more than a float-level perturbation of one start does"
        )
    elif start_cv <= 2 * cv_floor:
        verdict = (
            f"is {start_cv / cv_floor:.1f} times the largest float-level CV, the same order: "
            "most of the start-rate spread is what float noise alone produces"
        )
    else:
        verdict = (
            f"is {start_cv / cv_floor:.1f} times the largest float-level CV: the start rate "
            "moves the found lr more than float noise does"
        )
    return (
        f"Reading: at batch {batch} the spread across start rates (one seed's searches, mean "
        f"over seeds: x{start_ratio:.3f}, CV "
        f"{start_cv:.3f}) {verdict} (float-level floor up to x{ratio_floor:.3f}, CV "
        f"{cv_floor:.3f}; {where})."
    )
