#!/usr/bin/env python
"""The noise floor of the MBT search: how far the found lr moves under float-level changes.

The search halves or doubles sigma on the sign of a loss difference, so a
change that only alters float rounding can flip a decision and move the found lr. From one
baseline (Table 1's setting: MBT-GD, k = 20, the paper's augmentation, N = 50,000, init and
loader seed 0, NCHW, the fast search) this runs the same search under

* ``repeat``: the baseline again (is the search deterministic here at all?);
* ``weights_1e-7``: every weight multiplied by 1 + 1e-7 z, z ~ N(0, 1) (several draws);
* ``channels_last``: model and batches in NHWC (other kernels; only at width >= 0.25 on
  CPU, where ResNet18 has no strided 1x1 convolution with < 16 input channels, the shape
  oneDNN's channels_last gets wrong);
* ``reference``: ``mbt_search_reference`` (state copies, autograd trial forwards);
* ``threads``: the other of 1 and 2 torch threads (other reduction order);
* ``loader_seed``: other batch orders and augmentations (loader seeds 1, 2, ...);
* ``init_seed``: other initial weights (seeds 1, 2, ...; loader seed 0),

and writes every found lr with the spread per family into a JSON (one entry per width; a
second width is merged into an existing file). ``bgd-report table1`` puts it beside Table 1.

Example: what made ``results/cpu/table1_noise.json`` (one thread, as the machine was busy;
the two ran side by side, ~21 min of CPU together)::

    python scripts/search_noise.py --width 0.25 --threads 1 --draws 2 --seeds 1 \\
        --families weights_1e-7,channels_last,reference,threads,loader_seed,init_seed \\
        --json results/cpu/table1_noise.json
    python scripts/search_noise.py --width 1.0 --threads 1 --start-lrs 0.01 --draws 2 \\
        --families weights_1e-7,channels_last,loader_seed --seeds 1 \\
        --json results/cpu/table1_noise.json
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
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
from bgd_experiments.reporting.noise import FLOAT_FAMILIES, SEED_FAMILIES, family_spreads
from bgd_experiments.training.loop import search_batches
from bgd_experiments.training.provenance import git_state, package_versions

FAMILIES = ("baseline", *FLOAT_FAMILIES, *SEED_FAMILIES)
RELATIVE_PERTURBATION = 1e-7
# Below this width ResNet18 has strided 1x1 convolutions with < 16 input channels, whose
# channels_last CPU kernels give wrong results (see scripts/scan_onednn.py).
CHANNELS_LAST_MIN_WIDTH = 0.25


def perturb_(model: nn.Module, seed: int, relative: float) -> int:
    """Multiply every parameter by 1 + relative * z (z ~ N(0, 1), in float64, rounded once);
    returns how many float32 values actually changed."""
    generator = torch.Generator().manual_seed(seed)
    changed = 0
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            new = (param.double() * (1 + relative * noise)).to(param.dtype)
            changed += int((new != param).sum())
            param.copy_(new)
    return changed


def one_search(
    images: torch.Tensor,
    labels: torch.Tensor,
    args: argparse.Namespace,
    *,
    start_lr: float,
    init_seed: int = 0,
    loader_seed: int = 0,
    channels_last: bool = False,
    implementation: str = "fast",
    perturb_seed: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """One MBT-GD search as ``bgd-run task=search`` runs it; returns what it found."""
    torch.manual_seed(init_seed)  # as the CLI seeds right before building the model
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(args.model, 10, args.width).to(memory_format=layout)
    changed = perturb_(model, perturb_seed, RELATIVE_PERTURBATION) if perturb_seed else 0
    loader = DeviceLoader(
        images,
        labels,
        args.batch_size,
        shuffle=True,
        augment=args.augment,
        seed=loader_seed,
        channels_last=channels_last,
    )
    optimizer = MBTSGD(
        model.parameters(),
        lr=start_lr,
        search_every_epoch=False,
        num_batches=args.num_batches,
        implementation=implementation,
    )
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        began = time.perf_counter()
        result = optimizer.search(
            model, nn.CrossEntropyLoss(), search_batches(loader, 0), num_samples=args.num_samples
        )
        seconds = time.perf_counter() - began
    finally:
        torch.set_num_threads(previous)
    return {
        "found_lr": result.lr,
        "status": result.status,
        "trials": result.trials,
        "seconds": round(seconds, 2),
        "sigmas": result.sigmas,
        "weights_changed": changed,
    }


def plan(args: argparse.Namespace, start_lr: float) -> list[tuple[str, dict[str, Any]]]:
    """(family, keyword arguments of ``one_search``) for every search of one start rate."""
    runs: list[tuple[str, dict[str, Any]]] = [("baseline", {})]
    wanted = set(args.families)
    if "repeat" in wanted:
        runs.append(("repeat", {}))
    if "weights_1e-7" in wanted:
        runs += [("weights_1e-7", {"perturb_seed": draw}) for draw in range(1, args.draws + 1)]
    if "channels_last" in wanted and args.width >= CHANNELS_LAST_MIN_WIDTH:
        runs.append(("channels_last", {"channels_last": True}))
    if "reference" in wanted:
        runs.append(("reference", {"implementation": "reference"}))
    if "threads" in wanted:
        runs.append(("threads", {"threads": 2 if args.threads == 1 else 1}))
    if "loader_seed" in wanted:
        runs += [("loader_seed", {"loader_seed": seed}) for seed in range(1, args.seeds + 1)]
    if "init_seed" in wanted:
        runs += [("init_seed", {"init_seed": seed}) for seed in range(1, args.seeds + 1)]
    return [(family, {"start_lr": start_lr, **kwargs}) for family, kwargs in runs]


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    train = load_cifar("cifar10", args.data, "train")
    return train.images, train.labels, data_identity("cifar10", args.data)


def write_entry(args: argparse.Namespace, entry: dict[str, Any]) -> None:
    """Merge this width's entry into ``args.json`` (locked: two widths may run at once)."""
    args.json.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(args.json.parent, os.O_RDONLY)  # the lock: no file left behind
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        report: dict[str, Any] = {"widths": {}}
        if args.json.is_file():
            report = json.loads(args.json.read_text())
        report["settings"] = {
            "batch_size": args.batch_size,
            "num_batches": args.num_batches,
            "num_samples": args.num_samples,
            "augment": args.augment,
            "relative_perturbation": RELATIVE_PERTURBATION,
            "optimizer": "mbt_gd (alpha 1e-4, beta 0.5, lr_min 1e-6, lr_max 100)",
        }
        report["widths"][f"{args.width:g}"] = entry
        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
    finally:
        os.close(folder)  # releases the lock


def add_table1_spread(path: Path) -> None:
    """Record beside the noise the spread across start rates of the Table 1 runs committed
    in the JSON's folder (max/min and CV per batch size), for comparison."""
    from bgd_experiments.reporting import build_table1, scan_runs

    table = build_table1(scan_runs(path.parent))
    report = json.loads(path.read_text())
    report["table1_start_rate_spread"] = [
        {key: row[key] for key in ("batch_size", "n_starts_ours", "ours_max_min_ratio", "ours_cv")}
        for row in table.spreads
    ]
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=200, help="Table 1's middle size")
    parser.add_argument("--start-lrs", default="0.01,100", help="comma-separated start rates")
    parser.add_argument("--num-batches", type=int, default=20, help="k of the search")
    parser.add_argument(
        "--num-samples", type=int, default=50_000, help="N of the rescaling (Table 1: 50,000)"
    )
    parser.add_argument("--augment", default="paper")
    parser.add_argument("--families", default=",".join(FAMILIES[1:]), help="comma-separated")
    parser.add_argument("--draws", type=int, default=3, help="weight perturbations per start")
    parser.add_argument("--seeds", type=int, default=2, help="other loader / init seeds")
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"),
        help="CIFAR-10 archive or folder",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of the baseline (1 on a busy CPU)"
    )
    parser.add_argument("--json", type=Path, required=True, help="written, or merged into")
    parser.add_argument(
        "--table1-only",
        action="store_true",
        help="run no search; add the start-rate spread of the Table 1 runs beside the JSON",
    )
    args = parser.parse_args(argv)
    if args.table1_only:
        add_table1_spread(args.json)
        return 0
    args.families = [name for name in args.families.split(",") if name]
    unknown = set(args.families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; expected some of {FAMILIES[1:]}")
    start_lrs = [float(rate) for rate in args.start_lrs.split(",")]

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    # Before anything slow: the commit recorded is the one this process started from.
    git = git_state(Path(__file__).resolve().parent)
    images, labels, data = load_data(args)
    print(
        f"{args.model} width {args.width:g}, batch {args.batch_size}, k {args.num_batches}, "
        f"N {args.num_samples}, {len(labels)} images of {data['name']} "
        f"(sha256 {data['sha256']}), torch {torch.__version__}, {args.threads} threads, git "
        f"{git['git_commit']}{'+dirty' if git['git_dirty'] else ''}",
        flush=True,
    )
    began = time.perf_counter()
    planned = [item for start_lr in start_lrs for item in plan(args, start_lr)]
    searches: list[dict[str, Any]] = []
    entry: dict[str, Any] = {}
    for family, kwargs in planned:
        found = one_search(images, labels, args, **kwargs)
        searches.append({"family": family, **kwargs, **found})
        print(
            f"  start {kwargs['start_lr']:g} {family:14s} {kwargs}: lr {found['found_lr']:.6g} "
            f"({found['trials']} trials, {found['seconds']:.1f}s)",
            flush=True,
        )
        entry = {
            "model": args.model,
            "width": args.width,
            "searches": searches,
            "planned_searches": len(planned),
            "spreads": family_spreads(searches),
            "wall_seconds": round(time.perf_counter() - began, 1),
            "provenance": {
                **git,
                "versions": package_versions(),
                "torch": torch.__version__,
                "threads": args.threads,
                "data": data,
            },
        }
        # After every search, so a run stopped for time keeps what it found.
        write_entry(args, entry)
    add_table1_spread(args.json)
    for start, per_start in entry["spreads"].items():
        for family, values in per_start["families"].items():
            ratio, cv = values["max_min"], values["cv"]
            shown = "-" if ratio is None else f"max/min {ratio:.3f}, CV {cv:.3f}"
            print(f"  start {start} {family:14s} n {values['n']}: {shown}")
    print(f"wrote {args.json} ({entry['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
