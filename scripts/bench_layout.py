#!/usr/bin/env python
"""The cost of the CPU's safe layout: a training step in NCHW against channels_last.

For each model, the two layouts run alternately (one step each, in a rotating order) on the
same weights and batch, so that a slow spell of the machine hits both; the median step time
of each is kept and their ratio printed. ``trainer.channels_last=auto`` trains in NCHW on CPU
(docs/cpu-memory-layout.md), so the ratio is what that default costs against opt-in
channels_last. Writes ``<out>/layout.json`` (times, ratios, provenance) and ``layout.md``.

    python scripts/bench_layout.py --width 0.25 --batch-size 200 --steps 8 --out results/bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bgd_experiments.models import MODEL_BUILDERS, build_model
from bgd_experiments.reporting import Grid, Report, Section, render_md
from bgd_experiments.training.provenance import (
    artefact_provenance,
    made_from,
    recorded_command,
)

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DATA = "none (synthetic: Gaussian 32x32 images, random labels)"


def step_times(name: str, width: float, batch_size: int, steps: int) -> dict[str, list[float]]:
    """Seconds of each timed training step per layout, the layouts alternating."""
    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (batch_size,))
    reference = build_model(name, num_classes=10, width=width)
    runs = {}
    for layout, memory_format in LAYOUTS.items():
        model = build_model(name, num_classes=10, width=width)
        model.load_state_dict(reference.state_dict())
        model = model.to(memory_format=memory_format)
        sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        runs[layout] = (model, sgd, images.contiguous(memory_format=memory_format))
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    order = list(LAYOUTS)
    for step in range(steps + 1):  # the first step of each warms up its kernels
        for layout in order:
            model, sgd, batch = runs[layout]
            begin = time.perf_counter()
            sgd.zero_grad()
            F.cross_entropy(model(batch), labels).backward()
            sgd.step()
            if step:
                times[layout].append(time.perf_counter() - begin)
        order.reverse()
    return times


def summary(report: dict) -> str:
    setting = report["setting"]
    made = report["provenance"]
    grid = Grid(
        columns=("model", "NCHW step", "channels_last step", "NCHW / channels_last"),
        rows=[
            (name, f"{row['nchw_s']:.3f} s", f"{row['channels_last_s']:.3f} s",
             f"{row['ratio_nchw_over_channels_last']:.2f}")
            for name, row in report["models"].items()
        ],
    )  # fmt: skip
    notes = [
        f"Width {setting['width']:g}, batch {setting['batch_size']}, {setting['threads']} "
        f"thread(s); median of {setting['steps']} timed steps per layout, the layouts "
        "alternating on the same weights and batch.",
        f"Made from {made_from(made)} on {made['device']}; "
        f"data: {made['data']}. Command: `{report['command']}`",
    ]
    title = "# Training step: NCHW against channels_last on CPU"
    return title + "\n\n" + render_md(Report(sections=[Section(grid=grid)], notes=notes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_BUILDERS))
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per layout")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Read before anything is written: the outputs may be tracked files of the checkout.
    provenance = artefact_provenance(DATA)
    models = {}
    for name in args.models:
        times = step_times(name, args.width, args.batch_size, args.steps)
        nchw, channels_last = (statistics.median(times[layout]) for layout in LAYOUTS)
        models[name] = {
            "nchw_s": nchw,
            "channels_last_s": channels_last,
            "ratio_nchw_over_channels_last": nchw / channels_last,
            "steps_s": times,
        }
        print(f"{name}: NCHW {nchw:.3f} s, channels_last {channels_last:.3f} s", flush=True)
    report = {
        "setting": {
            "width": args.width,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "threads": torch.get_num_threads(),
        },
        "models": models,
        "command": recorded_command(
            "scripts/bench_layout.py", argv if argv is not None else sys.argv[1:]
        ),
        "provenance": provenance,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "layout.json").write_text(json.dumps(report, indent=1) + "\n")
    text = summary(report)
    (args.out / "layout.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
