#!/usr/bin/env python
"""Table 1's search with BatchNorm computed per slice of each batch, as DataParallel does.

The authors' ``lr_main.py`` wraps the network in ``torch.nn.DataParallel`` on CUDA, so on G
GPUs each replica normalises its own 1/G of every batch; the paper does not say how many
GPUs made Table 1. Its found rates level off above batch 200 (0.0125 at 200, 0.0170 at 800
from start 1e-2), where ours keep growing as sqrt(batch) because the mean sigma the search
accepts does not change with the batch size. This runs the same search with the batch cut
into ``slices`` parts for the forward passes (BatchNorm sees one part at a time; the loss
is the mean over the whole batch, as DataParallel gathers it) and writes the found rates and
mean sigmas per batch size and slice count.

One slice is the plain search of ``bgd-run task=search`` with the same seed (same initial
weights, same batches, same loss): the baseline, made on the same machine, that the other
slice counts are compared with.

What made ``results/cpu/table1_bn_slices.json`` (Table 1's layout and threads: channels_last,
one thread)::

    python scripts/search_bn_slices.py --batch-sizes 200,400,800 --slices 1,2,4 \\
        --seeds 0,1,2 --channels-last --threads 1 --json results/cpu/table1_bn_slices.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bgd_experiments.data import DeviceLoader, data_identity, load_cifar
from bgd_experiments.io import atomic_write_json, atomic_write_text
from bgd_experiments.models import build_model
from bgd_experiments.optim import MBTSGD
from bgd_experiments.reporting import Grid, Report, Section, render_md
from bgd_experiments.reporting.paper import paper_cells, same_rate
from bgd_experiments.training.loop import search_batches
from bgd_experiments.training.provenance import artefact_provenance, made_from, recorded_command

NUM_SAMPLES = 50_000  # Table 1 rescales by the full training set


def sliced_loss(slices: int):
    """The mean cross-entropy of a batch whose forward runs slice by slice (BatchNorm
    normalises each slice on its own, as each DataParallel replica does)."""

    def compute(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        logits = torch.cat([model(part) for part in inputs.chunk(slices)])
        return F.cross_entropy(logits, targets)

    return compute


def one_search(
    images: torch.Tensor,
    labels: torch.Tensor,
    args: argparse.Namespace,
    *,
    batch_size: int,
    slices: int,
    seed: int,
) -> dict[str, Any]:
    """One MBT-GD search as ``bgd-run task=search seed=<seed>`` runs it, BatchNorm per slice."""
    torch.manual_seed(seed)  # as the CLI seeds right before building the model
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = build_model("resnet18", 10, args.width).to(memory_format=layout)
    loader = DeviceLoader(
        images,
        labels,
        batch_size,
        shuffle=True,
        augment="paper",
        seed=seed,
        channels_last=args.channels_last,
    )
    optimizer = MBTSGD(
        model.parameters(), lr=args.start_lr, search_every_epoch=False, num_batches=args.k
    )
    began = time.perf_counter()
    result = optimizer.search(
        model,
        None,
        search_batches(loader, 0),
        num_samples=NUM_SAMPLES,
        compute_loss=sliced_loss(slices),
    )
    return {
        "batch_size": batch_size,
        "slices": slices,
        "seed": seed,
        "found_lr": result.lr,
        "mean_sigma": result.mean_sigma,
        "status": result.status,
        "trials": result.trials,
        "seconds": round(time.perf_counter() - began, 1),
    }


def paper_rate(batch_size: int, start_lr: float) -> float | None:
    """The paper's Table 1 rate for this batch size and start rate, if printed."""
    for cell in paper_cells(1):
        if cell.batch_size == batch_size and same_rate(cell.start_lr, start_lr):
            return cell.value
    return None


def markdown(report: dict[str, Any]) -> str:
    """A row per (batch size, slices): the found rate of each seed, the mean sigma, and the
    paper's rate with the sigma it implies (rate / sqrt(batch / N))."""
    settings = report["settings"]
    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for search in report["searches"]:
        cells.setdefault((search["batch_size"], search["slices"]), []).append(search)
    rows = []
    for (batch_size, slices), searches in sorted(cells.items()):
        ratio = (batch_size / NUM_SAMPLES) ** 0.5
        paper = paper_rate(batch_size, settings["start_lr"])
        rows.append(
            (
                batch_size,
                slices,
                batch_size // slices,
                " / ".join(f"{s['found_lr']:.4f}" for s in searches),
                f"{statistics.mean(s['mean_sigma'] for s in searches):.3f}",
                "-" if paper is None else f"{paper:.4f}",
                "-" if paper is None else f"{paper / ratio:.3f}",
            )
        )
    grid = Grid(
        columns=(
            "batch", "BN slices", "BN batch", "found lr (seeds " + settings["seeds_text"] + ")",
            "mean accepted sigma (mean over seeds)", "paper found lr", "paper's implied sigma",
        ),
        rows=rows,
        label_columns=3,
    )  # fmt: skip
    provenance = report["provenance"]
    made = (
        f"Made from {made_from(provenance)} on {provenance['device']} "
        f"in {report['wall_seconds']:.0f} s: ResNet18 width "
        f"{settings['width']:g}, start lr {settings['start_lr']:g}, k = {settings['k']}, "
        f"N = {NUM_SAMPLES:,}, {'channels_last' if settings['channels_last'] else 'NCHW'}, "
        f"{settings['threads']} thread(s); data: {provenance['data']['name']} (sha256 "
        f"{provenance['data']['sha256']}). Command: `{report['command']}`."
    )
    notes = (
        "Each batch's forward passes run slice by slice, so BatchNorm normalises each slice "
        "of batch/slices images on its own, as torch.nn.DataParallel does on that many GPUs; "
        "the loss is the mean over the whole batch. The paper's implied sigma is its rate "
        "divided by the rescaling factor sqrt(batch / N).",
    )
    return render_md(Report(sections=[Section(grid=grid, notes=notes)], provenance=made))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="200,400,800", help="comma-separated")
    parser.add_argument("--slices", default="1,2,4", help="comma-separated slice counts")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--start-lr", type=float, default=0.01)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--k", type=int, default=20, help="batches searched")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"),
        help="CIFAR-10 archive or folder",
    )
    parser.add_argument("--json", type=Path, required=True, help="also writes a .md beside")
    args = parser.parse_args(argv)
    batch_sizes = [int(value) for value in args.batch_sizes.split(",")]
    slice_counts = [int(value) for value in args.slices.split(",")]
    seeds = [int(value) for value in args.seeds.split(",")]
    for batch_size in batch_sizes:
        for slices in slice_counts:
            if slices < 1 or batch_size % slices:
                parser.error(f"{slices} slices do not divide batch {batch_size}")

    torch.set_num_threads(args.threads)
    # Before anything slow: the commit recorded is the one this process started from.
    provenance = artefact_provenance(data_identity("cifar10", args.data))
    command = recorded_command("scripts/search_bn_slices.py", argv or sys.argv[1:], ("--json",))
    train = load_cifar("cifar10", args.data, "train")
    began = time.perf_counter()
    report: dict[str, Any] = {
        "settings": {
            "width": args.width,
            "start_lr": args.start_lr,
            "k": args.k,
            "num_samples": NUM_SAMPLES,
            "channels_last": args.channels_last,
            "threads": args.threads,
            "seeds_text": ", ".join(map(str, seeds)),
        },
        "searches": [],
        "command": command,
        "provenance": provenance,
    }
    for batch_size in batch_sizes:
        for slices in slice_counts:
            for seed in seeds:
                found = one_search(
                    train.images, train.labels, args, batch_size=batch_size, slices=slices,
                    seed=seed,
                )  # fmt: skip
                report["searches"].append(found)
                print(
                    f"batch {batch_size} slices {slices} seed {seed}: lr {found['found_lr']:.6g}, "
                    f"mean sigma {found['mean_sigma']:.4f} ({found['seconds']:.0f} s)",
                    flush=True,
                )
                # After every search, so a run stopped for time keeps what it found.
                report["wall_seconds"] = round(time.perf_counter() - began, 1)
                atomic_write_json(args.json, report)
    atomic_write_text(args.json.with_suffix(".md"), markdown(report))
    print(f"wrote {args.json} and its .md ({report['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
