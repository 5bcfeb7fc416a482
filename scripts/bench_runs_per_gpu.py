#!/usr/bin/env python
"""How many training runs one device holds: aggregate images/s of 1, 2, 4, 8 concurrent runs.

A CIFAR ResNet18 at batch 200 leaves a large GPU mostly idle, so several runs of a sweep can
share it (the local launcher's ``hydra.launcher.jobs_per_gpu``). For each count k this starts
k worker processes at once on the same device; each trains ResNet18 (NAG, the trainer's
precision wrapper) on uint8 images kept on the device, for ``--warmup`` untimed steps and then
``--steps`` timed ones, and reports its images/s. The aggregate of a count is the sum over its
workers (their timed windows overlap: all start together and run the same steps). Writes
``<out>/runs_per_gpu.md`` and ``.json`` with the best count, the setting to use. Example::

    python scripts/bench_runs_per_gpu.py --device cuda --counts 1,2,4,8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One worker: argv = device model width precision steps warmup batch images; prints JSON.
_WORKER = r"""
import json, sys, time
import torch
from bgd_experiments.data import DeviceLoader
from bgd_experiments.models import build_model, use_channels_last
from bgd_experiments.timing import synchronize
from bgd_experiments.training.runtime import configure_device, prepare_model

device = torch.device(sys.argv[1])
model_name, width, precision = sys.argv[2], float(sys.argv[3]), sys.argv[4]
steps, warmup, batch, images = (int(value) for value in sys.argv[5:9])
channels_last = use_channels_last("auto", device)
torch.manual_seed(0)
network = build_model(model_name, num_classes=10, width=width).to(device)
if channels_last:
    network = network.to(memory_format=torch.channels_last)
configure_device(device)
model = prepare_model(network, precision=precision, compile=False, search_precision="fp32")
optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9, nesterov=True)
generator = torch.Generator().manual_seed(0)
pixels = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator)
labels = torch.randint(0, 10, (images,), generator=generator)
loader = DeviceLoader(pixels, labels, batch, shuffle=True, augment="paper", seed=0,
                      device=device, channels_last=channels_last)
loss_fn = torch.nn.CrossEntropyLoss()

def batches():
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1

stream = batches()
def step():
    inputs, targets = next(stream)
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(inputs), targets).backward()
    optimizer.step()

for _ in range(warmup):
    step()
synchronize(device)
began = time.perf_counter()
for _ in range(steps):
    step()
synchronize(device)
seconds = time.perf_counter() - began
print(json.dumps({"images_per_s": steps * batch / seconds, "seconds": seconds}))
"""


def run_count(args: argparse.Namespace, count: int) -> dict:
    """Start ``count`` workers together; their images/s and the aggregate."""
    command = [
        sys.executable,
        "-c",
        _WORKER,
        args.device,
        args.model,
        str(args.width),
        args.precision,
        str(args.steps),
        str(args.warmup),
        str(args.batch_size),
        str(args.images),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if args.device == "cpu":  # the cores shared among the workers, as the launcher does
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // count))
    began = time.perf_counter()
    workers = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(count)
    ]
    results, errors = [], []
    for worker in workers:
        out, err = worker.communicate(timeout=args.timeout)
        if worker.returncode == 0:
            results.append(json.loads(out.strip().splitlines()[-1]))
        else:
            errors.append((err.strip().splitlines() or ["no output"])[-1])
    wall = time.perf_counter() - began
    rates = [result["images_per_s"] for result in results]
    return {
        "runs": count,
        "finished": len(results),
        "errors": errors,
        "per_run_images_per_s": rates,
        "aggregate_images_per_s": sum(rates) if len(rates) == count else None,
        "wall_s": wall,
    }


def markdown(report: dict) -> str:
    base = report["counts"][0]["aggregate_images_per_s"]
    lines = [
        f"# Concurrent training runs on one {report['device']}",
        "",
        f"`scripts/bench_runs_per_gpu.py`: {report['model']} width {report['width']}, "
        f"{report['precision']}, batch {report['batch_size']}, NAG, the paper's augmentation on "
        f"the device; {report['warmup']} untimed then {report['steps']} timed steps per run. "
        f"Device: {report['device_name']}; torch {report['torch']}; commit {report['commit']}.",
        "",
        "| concurrent runs | images/s per run | aggregate images/s | vs 1 run |",
        "|---|---|---|---|",
    ]
    for entry in report["counts"]:
        aggregate = entry["aggregate_images_per_s"]
        per_run = entry["per_run_images_per_s"]
        mean = sum(per_run) / len(per_run) if per_run else None
        shown = "failed: " + "; ".join(entry["errors"]) if aggregate is None else f"{aggregate:.0f}"
        lines.append(
            f"| {entry['runs']} | {'-' if mean is None else f'{mean:.0f}'} | {shown} "
            f"| {'-' if aggregate is None or not base else f'{aggregate / base:.2f}x'} |"
        )
    lines += [
        "",
        f"Best: **{report['best']} runs at once** (`hydra.launcher.jobs_per_gpu={report['best']}` "
        "with `LAUNCHER=local`). A count is kept only if it raises the aggregate by at least "
        f"{report['min_gain']:.0%} over the best smaller count, since each extra run also costs "
        "memory and makes every run slower.",
    ]
    return "\n".join(lines) + "\n"


def best_count(counts: list[dict], min_gain: float) -> int:
    """The smallest count whose aggregate no larger count beats by ``min_gain`` or more."""
    best, best_rate = None, 0.0
    for entry in counts:
        rate = entry["aggregate_images_per_s"]
        if rate is None:
            continue
        if best is None or rate >= best_rate * (1 + min_gain):
            best, best_rate = entry["runs"], rate
    return best or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--images", type=int, default=10_000, help="images on the device")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--min-gain", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = parser.parse_args(argv)

    import torch

    from bgd_experiments.training.provenance import git_state

    device = torch.device(args.device)
    state = git_state()
    commit = (state["git_commit"] or "unknown")[:10] + ("+dirty" if state["git_dirty"] else "")
    report = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "commit": commit,
        "model": args.model,
        "width": args.width,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "min_gain": args.min_gain,
        "counts": [],
        "best": 1,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for count in (int(value) for value in args.counts.split(",")):
        entry = run_count(args, count)
        report["counts"].append(entry)
        report["best"] = best_count(report["counts"], args.min_gain)
        # Written after each count, so a time limit later still leaves the counts done.
        (args.out / "runs_per_gpu.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "runs_per_gpu.md").write_text(markdown(report))
        print(f"{count} runs: {entry['aggregate_images_per_s']} images/s", flush=True)
        if entry["aggregate_images_per_s"] is None:
            break  # more runs will not fit either (memory)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
