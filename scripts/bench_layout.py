#!/usr/bin/env python
"""The cost of the CPU's safe layout: a training step in NCHW against channels_last.

For each model, the two layouts run alternately (one step each, in a rotating order) on the
same weights and batch, so that a slow spell of the machine hits both; the median step time
of each is kept and their ratio printed. ``trainer.channels_last=auto`` trains in NCHW on CPU
(docs/cpu-memory-layout.md), so the ratio is what that default costs against opt-in
channels_last.

    python scripts/bench_layout.py --width 0.25 --batch-size 200 --steps 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bgd_experiments.models import MODEL_BUILDERS, build_model

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_BUILDERS))
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per layout")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, width {args.width:g}, "
        f"batch {args.batch_size}"
    )
    print("| model | NCHW step (s) | channels_last step (s) | NCHW / channels_last |")
    print("|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        images = torch.randn(args.batch_size, 3, 32, 32)
        labels = torch.randint(0, 10, (args.batch_size,))
        reference = build_model(name, num_classes=10, width=args.width)
        runs = {}
        for layout, memory_format in LAYOUTS.items():
            model = build_model(name, num_classes=10, width=args.width)
            model.load_state_dict(reference.state_dict())
            model = model.to(memory_format=memory_format)
            sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            runs[layout] = (model, sgd, images.contiguous(memory_format=memory_format))
        times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
        order = list(LAYOUTS)
        for step in range(args.steps + 1):  # the first step of each warms up its kernels
            for layout in order:
                model, sgd, batch = runs[layout]
                begin = time.perf_counter()
                sgd.zero_grad()
                F.cross_entropy(model(batch), labels).backward()
                sgd.step()
                if step:
                    times[layout].append(time.perf_counter() - begin)
            order.reverse()
        nchw, nhwc = (statistics.median(times[layout]) for layout in LAYOUTS)
        print(f"| {name} | {nchw:.3f} | {nhwc:.3f} | {nchw / nhwc:.2f} |", flush=True)


if __name__ == "__main__":
    main()
