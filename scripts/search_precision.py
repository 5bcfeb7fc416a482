#!/usr/bin/env python
"""How far bf16 autocast moves the MBT search's found rate, against its noise floor.

Issue 13, item 1. The search decides on the sign of L_B(x - sigma*g) - L_B(x) +
alpha*sigma*||g||^2, so lower precision in the forwards can flip decisions. This runs
Table 1's search (MBT-GD, k = 20, batch 200, the paper's augmentation, N = 50,000, init and
loader seed 0, NCHW, the fast search) once in fp32 and once with the model under bf16
autocast (``trainer.precision=bf16``: the gradient forward and every trial forward in bf16,
logits cast to fp32 before the loss, Armijo arithmetic in float64), from each start rate,
and sets the ratio bf16/fp32 beside the float-level spread that
``results/cpu/table1_noise.json`` measured (weights x (1 + 1e-7 z), NHWC, threads).

Example (what made ``results/bench/search_precision.json``; one thread, ~5 min)::

    python scripts/search_precision.py --width 0.25 --threads 1 \\
        --json results/bench/search_precision.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bgd_experiments.data import DeviceLoader, data_identity, load_cifar
from bgd_experiments.io import atomic_write_text
from bgd_experiments.models import build_model
from bgd_experiments.optim import MBTSGD
from bgd_experiments.training.loop import search_batches
from bgd_experiments.training.provenance import git_state, package_versions
from bgd_experiments.training.runtime import prepare_model

ROOT = Path(__file__).resolve().parents[1]


def one_search(
    images: torch.Tensor,
    labels: torch.Tensor,
    args: argparse.Namespace,
    start_lr: float,
    precision: str,
) -> dict[str, Any]:
    """One MBT-GD search as ``bgd-run task=search trainer.precision=...`` runs it."""
    torch.manual_seed(0)  # as the CLI seeds right before building the model
    network = build_model(args.model, 10, args.width)
    loader = DeviceLoader(images, labels, args.batch_size, shuffle=True, augment="paper", seed=0)
    optimizer = MBTSGD(
        network.parameters(), lr=start_lr, search_every_epoch=False, num_batches=args.num_batches
    )
    model = prepare_model(network, precision=precision)
    began = time.perf_counter()
    result = optimizer.search(
        model, nn.CrossEntropyLoss(), search_batches(loader, 0), num_samples=args.num_samples
    )
    return {
        "start_lr": start_lr,
        "precision": precision,
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
    floors = {}
    for start, spreads in entry.get("spreads", {}).items():
        level = spreads["families"].get("float_level")
        if level:
            floors[start] = {key: level[key] for key in ("n", "max_min", "cv", "found_lr")}
    return floors


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# bf16 autocast and the MBT search's found rate",
        "",
        f"{report['setting']}. Made by `scripts/search_precision.py` at commit "
        f"{report['provenance']['git_commit']}.",
        "",
        "| start | fp32 lr | bf16 lr | bf16/fp32 | fp32 float-level noise max/min (CV) |",
        "|---|---|---|---|---|",
    ]
    for row in report["comparison"]:
        floor = row.get("noise_floor")
        shown = f"{floor['max_min']:.3f} ({floor['cv']:.3f})" if floor else "-"
        lines.append(
            f"| {row['start_lr']:g} | {row['fp32']:.5g} | {row['bf16']:.5g} | "
            f"{row['ratio']:.3f} | {shown} |"
        )
    lines += ["", report["verdict"], ""]
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
        found = {}
        for precision in ("fp32", "bf16"):
            result = one_search(train.images, train.labels, args, start_lr, precision)
            searches.append(result)
            found[precision] = result["found_lr"]
            print(
                f"start {start_lr:g} {precision}: lr {result['found_lr']:.6g} "
                f"({result['status']}, {result['trials']} trials, {result['seconds']}s)",
                flush=True,
            )
        comparison.append(
            {
                "start_lr": start_lr,
                **found,
                "ratio": found["bf16"] / found["fp32"],
                "noise_floor": floors.get(f"{start_lr:g}"),
            }
        )
    worst = max(max(row["ratio"], 1 / row["ratio"]) for row in comparison)
    floor = max((row["noise_floor"] or {}).get("max_min") or 1.0 for row in comparison)
    verdict = (
        f"bf16 moves the found rate by at most a factor {worst:.3f}; float-level changes "
        f"alone move it by up to {floor:.3f}. "
        + (
            "Within the noise floor: the search runs in the training precision."
            if worst <= floor
            else "Beyond the noise floor."
        )
    )
    print(verdict)
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
            **git,
            "versions": package_versions(),
            "torch": torch.__version__,
            "data": data_identity("cifar10", args.data),
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
