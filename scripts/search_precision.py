#!/usr/bin/env python
"""How far bf16 autocast moves the MBT search's found rate, against its noise floor.

The search decides on the sign of L_B(x - sigma*g) - L_B(x) +
alpha*sigma*||g||^2, so lower precision in the forwards can flip decisions. This runs
Table 1's search (MBT-GD, k = 20, batch 200, the paper's augmentation, N = 50,000, init and
loader seed 0, NCHW, the fast search) once in fp32 and once with the model under bf16
autocast (``trainer.precision=bf16 trainer.search_precision=train``: the gradient forward
and every trial forward in bf16,
logits cast to fp32 before the loss, Armijo arithmetic in float64), from each start rate,
and sets the ratio bf16/fp32 beside the float-level spread that
``results/cpu/table1_noise.json`` measured (weights x (1 + 1e-7 z), NHWC, threads).

bf16 is also run with the weights perturbed by 1 + 1e-7 z (``--draws``), to set its own
spread beside fp32's perturbed draws in the noise file.

Example (what made ``results/bench/search_precision.json``; one thread, ~10 min)::

    python scripts/search_precision.py --width 0.25 --threads 1 \\
        --json results/bench/search_precision.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

# This script's folder is on sys.path when it runs: the noise script's perturbation.
from search_noise import RELATIVE_PERTURBATION, perturb_
from torch import nn

from bgd_experiments.data import DeviceLoader, data_identity, load_cifar
from bgd_experiments.io import atomic_write_text
from bgd_experiments.models import build_model
from bgd_experiments.optim import MBTSGD
from bgd_experiments.training.loop import search_batches
from bgd_experiments.training.provenance import artefact_provenance, git_state
from bgd_experiments.training.runtime import prepare_model

ROOT = Path(__file__).resolve().parents[1]


def one_search(
    images: torch.Tensor,
    labels: torch.Tensor,
    args: argparse.Namespace,
    start_lr: float,
    precision: str,
    perturb_seed: int | None = None,
) -> dict[str, Any]:
    """One MBT-GD search as ``bgd-run task=search trainer.precision=...`` runs it, the
    weights perturbed as search_noise.py's ``weights_1e-7`` family when ``perturb_seed``."""
    torch.manual_seed(0)  # as the CLI seeds right before building the model
    network = build_model(args.model, 10, args.width)
    if perturb_seed:
        perturb_(network, perturb_seed, RELATIVE_PERTURBATION)
    loader = DeviceLoader(images, labels, args.batch_size, shuffle=True, augment="paper", seed=0)
    optimizer = MBTSGD(
        network.parameters(), lr=start_lr, search_every_epoch=False, num_batches=args.num_batches
    )
    # search_precision="train": the search's forwards in bf16 too (the default searches in fp32).
    model = prepare_model(network, precision=precision, search_precision="train")
    began = time.perf_counter()
    result = optimizer.search(
        model, nn.CrossEntropyLoss(), search_batches(loader, 0), num_samples=args.num_samples
    )
    return {
        "start_lr": start_lr,
        "precision": precision,
        "perturb_seed": perturb_seed,
        "found_lr": result.lr,
        "status": result.status,
        "trials": result.trials,
        "seconds": round(time.perf_counter() - began, 1),
        "sigmas": result.sigmas,
    }


def noise_floor(path: Path, width: float) -> dict[str, Any]:
    """The float-level spread per start rate measured by scripts/search_noise.py."""
    if not path.is_file():
        return {}
    entry = json.loads(path.read_text())["widths"].get(f"{width:g}", {})
    floors: dict[str, Any] = {}
    for start, spreads in entry.get("spreads", {}).items():
        floors[start] = {
            family: {key: values[key] for key in ("n", "max_min", "cv", "found_lr")}
            for family, values in spreads["families"].items()
            if family in ("float_level", "weights_1e-7", "loader_seed", "init_seed")
        }
    return floors


def verdict_line(row: dict[str, Any]) -> str:
    """bf16's move of the found rate against the fp32 spreads measured at the same start."""
    move = max(row["ratio"], 1 / row["ratio"])
    floors = row.get("noise_floor") or {}
    float_level = (floors.get("float_level") or {}).get("max_min")
    seeds = [floors[f]["max_min"] for f in ("loader_seed", "init_seed") if floors.get(f)]
    line = f"Start {row['start_lr']:g}: bf16 moves the found rate by a factor {move:.3f}"
    if float_level is None:
        return line + " (no noise floor measured for this setting)."
    where = "within" if move <= float_level else "beyond"
    line += f", {where} the float-level spread ({float_level:.3f})"
    if seeds:
        line += f" and {'within' if move <= max(seeds) else 'beyond'} the seed spread "
        line += f"({max(seeds):.3f})"
    return line + f"; with perturbed draws, bf16's mean is {row['mean_ratio']:.3f} x fp32's."


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# bf16 autocast and the MBT search's found rate",
        "",
        f"{report['setting']}. Made by `scripts/search_precision.py` at commit "
        f"{report['provenance']['git_commit']}"
        f"{' (uncommitted changes)' if report['provenance'].get('git_dirty') else ''}.",
        "",
        "| start | fp32 lr | bf16 lr | bf16/fp32 | fp32 max/min (CV): float-level | "
        "loader seed | init seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["comparison"]:
        cells = []
        for family in ("float_level", "loader_seed", "init_seed"):
            spread = (row.get("noise_floor") or {}).get(family)
            cells.append(f"{spread['max_min']:.3f} ({spread['cv']:.3f})" if spread else "-")
        lines.append(
            f"| {row['start_lr']:g} | {row['fp32']:.5g} | {row['bf16']:.5g} | "
            f"{row['ratio']:.3f} | {' | '.join(cells)} |"
        )
    lines += [
        "",
        "With the weights multiplied by 1 + 1e-7 z (the noise script's seeds 1, 2, ...; "
        "fp32's draws from `results/cpu/table1_noise.json`):",
        "",
        "| start | fp32 found lr | bf16 found lr | bf16 mean / fp32 mean |",
        "|---|---|---|---|",
    ]
    for row in report["comparison"]:
        fp32 = ", ".join(f"{lr:.5g}" for lr in row["fp32_with_draws"])
        bf16 = ", ".join(f"{lr:.5g}" for lr in row["bf16_with_draws"])
        lines.append(f"| {row['start_lr']:g} | {fp32} | {bf16} | {row['mean_ratio']:.3f} |")
    lines += ["", *report["verdict"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--num-batches", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=50_000)
    parser.add_argument("--start-lrs", default="0.01,100")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--draws", type=int, default=2, help="bf16 searches with weights x (1 + 1e-7 z)"
    )
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/cifar10-jpeg.tar.gz"), help="CIFAR-10"
    )
    parser.add_argument("--noise", type=Path, default=ROOT / "results/cpu/table1_noise.json")
    parser.add_argument("--json", type=Path, help="write the report here (and a .md beside)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    git = git_state(ROOT)  # before anything slow: the commit this process started from
    train = load_cifar("cifar10", args.data, "train")
    floors = noise_floor(args.noise, args.width)
    searches, comparison = [], []
    for start_lr in [float(rate) for rate in args.start_lrs.split(",")]:
        found: dict[str, list[float]] = {"fp32": [], "bf16": []}
        runs = [("fp32", None), ("bf16", None)]
        runs += [("bf16", seed) for seed in range(1, args.draws + 1)]
        for precision, seed in runs:
            result = one_search(train.images, train.labels, args, start_lr, precision, seed)
            searches.append(result)
            found[precision].append(result["found_lr"])
            print(
                f"start {start_lr:g} {precision} perturbation {seed}: lr "
                f"{result['found_lr']:.6g} ({result['status']}, {result['trials']} trials, "
                f"{result['seconds']}s)",
                flush=True,
            )
        floor = floors.get(f"{start_lr:g}") or {}
        # fp32's perturbed draws (the same seeds) were measured by search_noise.py.
        fp32_draws = list(floor.get("weights_1e-7", {}).get("found_lr", [])[1 : args.draws + 1])
        fp32_all = found["fp32"] + fp32_draws
        comparison.append(
            {
                "start_lr": start_lr,
                "fp32": found["fp32"][0],
                "bf16": found["bf16"][0],
                "ratio": found["bf16"][0] / found["fp32"][0],
                "fp32_with_draws": fp32_all,
                "bf16_with_draws": found["bf16"],
                "mean_ratio": statistics.mean(found["bf16"]) / statistics.mean(fp32_all),
                "noise_floor": floor,
            }
        )
    verdict = [verdict_line(row) for row in comparison]
    print("\n".join(verdict))
    report = {
        "setting": (
            f"{args.model} width {args.width:g}, MBT-GD search (k {args.num_batches}, batch "
            f"{args.batch_size}, N {args.num_samples}, paper augmentation, seed 0, NCHW, CPU, "
            f"{args.threads} thread(s)), {len(train.labels)} CIFAR-10 images"
        ),
        "comparison": comparison,
        "searches": searches,
        "verdict": verdict,
        "provenance": {
            **artefact_provenance(data_identity("cifar10", args.data)),
            **git,
            "torch": torch.__version__,
        },
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
        atomic_write_text(args.json.with_suffix(".md"), markdown(report))
        print(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
