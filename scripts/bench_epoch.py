#!/usr/bin/env python
"""Benchmark training epochs: the authors' DataLoader + PIL pipeline vs this project's path.

Everything runs in one process, on the same device, model (same initial weights) and images:

(1) the DATA PATH ALONE (no model): images/s of a torchvision ``DataLoader`` over PIL images
    with the authors' transforms (``--workers`` worker processes) against ``DeviceLoader``
    with ``augment="paper"`` (the same augmentation, batched on the device);
(2) training EPOCHS, images/s and epoch time of:
    - ``authors``: that DataLoader, fp32, NCHW, NAG (the authors' ``utils.py``/main loop);
    - ``nag-fp32``, ``nag-bf16``: DeviceLoader + NAG, fp32 and bf16 autocast;
    - ``nag-fp32-compiled``, ``nag-bf16-compiled``: the same with ``torch.compile``;
    - ``mbt-restore``, ``mbt-keep``: DeviceLoader + MBT-NAG, one search per epoch, fp32.

Variants take turns, one (possibly ``--steps``-truncated) epoch a turn in a rotating order,
``--repeats`` turns each, so a slow spell of a shared machine hits all of them alike; the
median is kept. A whole epoch is the unit so the DataLoader's workers never prefetch while
another variant is being timed (they start with the epoch, as in the authors' loop).

Writes ``<out>/<device>.md`` and ``<out>/<device>.json`` (``bgd-report cost`` reads the json).
On CUDA the defaults become the paper's setting: ResNet18 and DenseNet121 at width 1.0 on the
full training set. Example::

    python scripts/bench_epoch.py --device cpu --images 5000 --steps 25
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bgd_experiments.data import CIFAR_MEAN, CIFAR_STD, DeviceLoader
from bgd_experiments.models import build_model, use_channels_last
from bgd_experiments.optim import MBTSGD
from bgd_experiments.timing import synchronize, timed
from bgd_experiments.training.provenance import artefact_provenance, git_state, recorded_command
from bgd_experiments.training.runtime import prepare_model

Batch = tuple[torch.Tensor, torch.Tensor]
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/cifar10-jpeg.tar.gz"
ALL_VARIANTS = (
    "authors",
    "nag-fp32",
    "nag-bf16",
    "nag-fp32-compiled",
    "nag-bf16-compiled",
    "mbt-restore",
    "mbt-keep",
)


# ------------------------------------------------------------------ the authors' pipeline
def authors_transform():
    """The authors' training transforms (``utils.py`` of hank-nguyen/MBT-optimizer), built
    from their parameters: crop 32 pad 4, flip, RandomAffine(10), RandomRotation(20),
    ColorJitter(0.2, 0.2, 0.1, 0.1), ToTensor, Normalize with their CIFAR stats."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.RandomAffine(10),
            T.RandomRotation(20),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.1),
            T.ToTensor(),
            T.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )


class PILDataset(torch.utils.data.Dataset):
    """uint8 HWC images served one PIL image at a time, as torchvision's CIFAR10 does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = authors_transform()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def authors_loader(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, workers: int
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        PILDataset(images, labels), batch_size=batch_size, shuffle=True, num_workers=workers
    )


def authors_batches(
    loader: torch.utils.data.DataLoader, device: torch.device, memory_format: torch.memory_format
) -> Iterator[Batch]:
    for inputs, targets in loader:
        # A plain blocking copy, as their loop does (`inputs.to(device)`).
        yield inputs.to(device, memory_format=memory_format), targets.to(device)


# ------------------------------------------------------------------------------ helpers
def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Batch],
    steps: int,
    device: torch.device,
) -> int:
    """``steps`` training steps (fewer if ``batches`` runs out); returns images seen."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seen = 0
    loss = None
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            break
        inputs, targets = batch
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)  # bf16, if any, is inside the model
        loss.backward()
        optimizer.step()
        seen += targets.shape[0]
    if loss is not None:  # none when a keep-mode search took the whole turn
        loss.item()  # one host sync per turn, as a loop that logs the epoch loss would
    return seen


def machine_description(device: torch.device) -> dict[str, str]:
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor() or "unknown"
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    state = git_state(ROOT)
    commit = state["git_commit"]
    info["commit"] = (
        "unknown" if commit is None else commit[:7] + ("+dirty" if state["git_dirty"] else "")
    )
    return info


def load_images(data: str, images: int | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``images`` of a class-balanced shuffle of CIFAR-10's training set, or
    synthetic images of its shape where ``data`` is 'synthetic' or cannot be read."""
    from bgd_experiments.data import class_balanced_subset, load_cifar

    if data != "synthetic":
        try:
            train = load_cifar("cifar10", data, "train")
            if images is not None and images < len(train):
                train = class_balanced_subset(train, images, seed=0)
            name = Path(data).name
            return train.images, train.labels, f"CIFAR-10 from {name} ({len(train)} images)"
        except Exception as error:  # the benchmark still runs, and says so
            print(f"! could not load {data} ({error}); using synthetic data", flush=True)
    count = images or 50_000
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return pixels, labels, f"SYNTHETIC images of CIFAR-10's shape ({count} images)"


def rotate_turns(runners: dict[str, Iterator[float]], device: torch.device) -> dict:
    """Run each runner's turns in a rotating order until all are done; seconds per turn."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    active = list(runners)
    turn = 0
    while active:
        shift = turn % len(active)
        turn += 1
        for name in active[shift:] + active[:shift]:
            seconds, value = timed(device, lambda name=name: next(runners[name], None))
            if value is None:
                active.remove(name)
            else:
                times[name].append(seconds)
                print(f"    turn {name}: {seconds:.1f}s", flush=True)  # progress of long runs
    return times


# --------------------------------------------------------------------------- data path
def project_loader(images, labels, args, device, memory_format) -> DeviceLoader:
    """This project's data path with the paper's augmentation, in the bench's layout."""
    return DeviceLoader(
        images,
        labels,
        args.batch_size,
        shuffle=True,
        augment="paper",
        device=device,
        channels_last=memory_format == torch.channels_last,
    )


def bench_data_path(args, images, labels, device, memory_format) -> dict:
    """images/s of the two data paths at equal augmentation, interleaved, no model."""
    loader = authors_loader(images, labels, args.batch_size, args.workers)
    ours = project_loader(images, labels, args, device, memory_format)
    batches = min(args.data_batches, len(ours))

    def authors_runner() -> Iterator[float]:
        for _ in range(args.repeats):
            stream = authors_batches(loader, device, memory_format)
            count = sum(1 for _ in zip(range(batches), stream, strict=False))
            del stream  # shuts the workers down before the next variant's turn
            yield count * args.batch_size

    def ours_runner() -> Iterator[float]:
        for epoch in range(args.repeats):
            stream = ours.epoch(epoch)
            count = sum(1 for _ in zip(range(batches), stream, strict=False))
            synchronize(device)  # the device's queued augmentation counts
            yield count * args.batch_size

    # Warm-up: imports in the workers, lazy device initialisation, cached constants.
    next(iter(ours.epoch(99)))
    times = rotate_turns({"authors": authors_runner(), "ours": ours_runner()}, device)
    seen = batches * args.batch_size
    result = {
        name: {"images_per_s": seen / statistics.median(seconds), "turn_s": seconds}
        for name, seconds in times.items()
    }
    result["ratio_ours_over_authors"] = (
        result["ours"]["images_per_s"] / result["authors"]["images_per_s"]
    )
    result["images_per_turn"] = seen
    # Ours assembles batches on the CPU with this many intra-op threads (None: torch's).
    result["ours_augment_threads"] = ours.augment_threads if device.type == "cpu" else None
    return result


# ------------------------------------------------------------------------------ epochs
def can_compile(device: torch.device) -> str | None:
    """Why torch.compile cannot run here, or None."""
    if device.type == "cpu" and not any(
        Path(folder, "g++").exists() for folder in os.environ.get("PATH", "").split(":")
    ):
        return "no C++ compiler on PATH (inductor needs one on CPU)"
    return None


_PROBE = """
import sys, torch
from bgd_experiments.models import build_model
device, model_name, width, bf16 = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
model = build_model(model_name, 10, width).to(device)
step = torch.compile(model)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
inputs = torch.randn(int(sys.argv[5]), 3, 32, 32, device=device)
targets = torch.randint(0, 10, (inputs.shape[0],), device=device)
for _ in range(2):
    optimizer.zero_grad()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(step(inputs), targets)
    loss.backward()
    optimizer.step()
print(float(loss))
"""


def probe_compile(
    device: torch.device, model_name: str, width: float, bf16: bool, batch: int, limit: float
) -> str | None:
    """Compile the model in a child process with a time limit: why not to compile here, or
    None. The child fills inductor's on-disk cache, so the timed process compiles faster."""
    command = [sys.executable, "-c", _PROBE, str(device), model_name, str(width)]
    command += ["1" if bf16 else "0", str(batch)]
    began = time.perf_counter()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    # Its own process group: on timeout, inductor's compile workers go with it.
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return f"skipped (compiling took over {limit:.0f} s)"
    if child.returncode != 0:
        lines = (stderr or "").strip().splitlines() or ["no message"]
        return f"failed: {lines[-1][:300]}"
    print(f"compile probe {model_name} bf16={bf16}: {time.perf_counter() - began:.0f}s", flush=True)
    return None


def bench_epochs(args, model_name: str, images, labels, device, memory_format) -> dict:
    """The epoch variants, interleaved; per variant images/s, epoch time, or the error."""
    torch.manual_seed(0)
    model0 = build_model(model_name, 10, args.width).to(device, memory_format=memory_format)
    ours = project_loader(images, labels, args, device, memory_format)
    steps = min(args.steps or len(ours), len(ours))
    # Compiled CPU steps can be far slower than eager ones: fewer, per-image throughput kept.
    compiled_steps = min(args.compiled_steps or steps, steps)
    authors = authors_loader(images, labels, args.batch_size, args.workers)
    num_samples = ours.num_samples
    failures: dict[str, str] = {}
    setup_s: dict[str, float] = {}
    search_s: dict[str, list[float]] = {"mbt-restore": [], "mbt-keep": []}

    def nag(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True)

    def nag_runner(name: str) -> Iterator[float]:
        bf16 = "bf16" in name
        model = copy.deepcopy(model0)
        if name == "authors":
            model = model.to(memory_format=torch.contiguous_format)  # their NCHW
        optimizer = nag(model)
        # As trainer.precision / trainer.compile run it: bf16 autocast and compile inside.
        step_model = prepare_model(
            model, precision="bf16" if bf16 else "fp32", compile="compiled" in name
        )
        if name == "authors":

            def batches(epoch: int) -> Iterator[Batch]:
                return authors_batches(authors, device, torch.contiguous_format)
        else:

            def batches(epoch: int) -> Iterator[Batch]:
                return ours.epoch(epoch)

        # Warm-up (untimed here, reported): first-call costs, compilation, autotuning.
        began = time.perf_counter()
        warm = batches(-1)
        train_steps(step_model, optimizer, warm, 2 if "compiled" in name else 1, device)
        del warm
        synchronize(device)
        setup_s[name] = time.perf_counter() - began
        yield 0  # the first turn is the untimed set-up
        for epoch in range(args.repeats):
            stream = batches(epoch)
            count = compiled_steps if "compiled" in name else steps
            seen = train_steps(step_model, optimizer, stream, count, device)
            del stream
            yield seen

    def mbt_runner(name: str) -> Iterator[float]:
        keep = name == "mbt-keep"
        model = copy.deepcopy(model0)
        optimizer = MBTSGD(
            model.parameters(),
            lr=1e-2,
            momentum=0.9,
            nesterov=True,
            keep_search_steps=keep,
            num_batches=args.num_batches,
        )
        began = time.perf_counter()
        with warnings.catch_warnings():
            # The untimed warm-up step runs before the first search on purpose.
            warnings.filterwarnings("ignore", message=r"MBTSGD\.step\(\) before any search")
            train_steps(model, optimizer, ours.epoch(-1), 1, device)
        setup_s[name] = time.perf_counter() - began
        yield 0
        for epoch in range(args.repeats):
            stream = ours.epoch(epoch)
            search_stream = stream if keep else ours.epoch(epoch, stream=1)
            began = time.perf_counter()
            optimizer.search(model, nn.CrossEntropyLoss(), search_stream, num_samples)
            synchronize(device)
            search_s[name].append(time.perf_counter() - began)
            seen = args.num_batches * args.batch_size if keep else 0
            left = steps - args.num_batches if keep else steps
            seen += train_steps(model, optimizer, stream, max(left, 0), device)
            yield seen

    def guarded(name: str, runner: Iterator[float]) -> Iterator[float]:
        """A variant that fails (bf16 or compile unsupported here) is recorded, not fatal."""
        try:
            yield from runner
        except Exception as error:  # any failure is a measurement result
            failures[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            print(f"! {model_name} {name} failed: {failures[name]}", flush=True)

    runners: dict[str, Iterator[float]] = {}
    for name in args.variants:
        if "compiled" in name and args.compile == "off":
            failures[name] = "skipped (--compile off)"
            continue
        if "compiled" in name and args.compile_models and model_name not in args.compile_models:
            failures[name] = "skipped (not in --compile-models)"
            continue
        if "compiled" in name and (reason := can_compile(device)):
            failures[name] = f"skipped ({reason})"
            continue
        if "compiled" in name and args.compile_timeout > 0:
            why = probe_compile(
                device, model_name, args.width, "bf16" in name, args.batch_size,
                args.compile_timeout,
            )  # fmt: skip
            if why:
                failures[name] = why
                print(f"! {model_name} {name}: {why}", flush=True)
                continue
        runner = mbt_runner(name) if name.startswith("mbt") else nag_runner(name)
        runners[name] = guarded(name, runner)

    # Set-up turns first (model copies, compilation), then the timed interleaved epochs.
    for name in list(runners):
        if next(runners[name], None) is None:
            del runners[name]
    seen_per_turn: dict[str, list[float]] = {name: [] for name in runners}

    def counting(name: str, runner: Iterator[float]) -> Iterator[float]:
        for seen in runner:
            seen_per_turn[name].append(seen)
            yield seen

    times = rotate_turns({name: counting(name, r) for name, r in runners.items()}, device)
    variants: dict[str, dict] = {}
    for name, seconds in times.items():
        if name in failures or not seconds:
            continue
        seen = seen_per_turn[name][0]
        median_s = statistics.median(seconds)
        turn_steps = compiled_steps if "compiled" in name else steps
        # One search per epoch whatever --steps is: only the steps scale to a full epoch.
        search = statistics.median(search_s[name]) if search_s.get(name) else 0.0
        entry = {
            "images_per_s": seen / median_s,
            "turn_s": seconds,
            "steps": turn_steps,
            "images_per_turn": seen,
            "setup_s": setup_s.get(name),
            "epoch_s": (median_s - search) * len(ours) / turn_steps + search,
        }
        if name in search_s:
            entry["search_s"] = search
        variants[name] = entry
    if "authors" in variants:
        base = variants["authors"]["epoch_s"]
        for entry in variants.values():
            entry["epoch_ratio_vs_authors"] = entry["epoch_s"] / base
            entry["speedup_vs_authors"] = base / entry["epoch_s"]
    return {
        "model": model_name,
        "width": args.width,
        "batch_size": args.batch_size,
        "images": num_samples,
        "steps_per_turn": steps,
        "steps_per_epoch": len(ours),
        "memory_format": "channels_last" if memory_format == torch.channels_last else "NCHW",
        "variants": variants,
        "failures": failures,
    }


# ------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"# Epoch benchmark on {machine['device']}",
        "",
        "`scripts/bench_epoch.py` (`make bench-epoch`): the authors' DataLoader + PIL pipeline "
        "vs this project's DeviceLoader path, same process, device, model and images, "
        "variants interleaved one epoch a turn (median of the turns).",
        "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()),
        "",
        f"Data: {report['data']}; batch {report['batch_size']}; DataLoader workers "
        f"{report['workers']}; command: `{report['command']}`",
        "",
    ]
    data = report.get("data_path")
    if data:
        lines += [
            "## Data path alone (no model, equal augmentation)",
            "",
            "| path | images/s |",
            "|---|---|",
            f"| authors: DataLoader + PIL ({report['workers']} workers) | "
            f"{data['authors']['images_per_s']:.0f} |",
            f"| ours: DeviceLoader, augment=paper | {data['ours']['images_per_s']:.0f} |",
            "",
            f"Ratio ours / authors: **{data['ratio_ours_over_authors']:.2f}x** (target >= 3x).",
            "",
        ]
        threads = data.get("ours_augment_threads")
        if threads:
            lines += [
                f"Ours assembles each batch with {threads} CPU thread(s) (`DeviceLoader`'s "
                "`augment_threads`); each DataLoader worker process runs 1 thread.",
                "",
            ]
    for result in report["models"]:
        lines += [
            f"## Epochs: {result['model']} width {result['width']} ({result['images']} images, "
            f"{result['steps_per_turn']} of {result['steps_per_epoch']} steps a turn, "
            f"{result['memory_format']} for ours)",
            "",
            "| variant | steps a turn | images/s | epoch s (full) | epoch / authors' | speed-up "
            "| set-up s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, entry in result["variants"].items():
            ratio = entry.get("epoch_ratio_vs_authors")
            speed = entry.get("speedup_vs_authors")
            setup = entry.get("setup_s")
            lines.append(
                f"| {name} | {entry['steps']} | {entry['images_per_s']:.0f} | "
                f"{entry['epoch_s']:.1f} | "
                + (f"{ratio:.3f} | {speed:.2f}x | " if ratio else "- | - | ")
                + (f"{setup:.1f} |" if setup is not None else "- |")
            )
        for name, why in result["failures"].items():
            lines.append(f"| {name} | failed or skipped: {why} | | | | | |")
        searches = {n: e["search_s"] for n, e in result["variants"].items() if "search_s" in e}
        if searches:
            lines += [
                "",
                "MBT-NAG search per epoch (s): "
                + ", ".join(f"{n} {s:.1f}" for n, s in searches.items())
                + ". Restore mode's images/s counts only the trained images.",
            ]
        lines.append("")
    lines += [
        "Notes: `authors` is fp32 NCHW NAG fed by a torchvision DataLoader over PIL images "
        "with the authors' transforms (their `utils.py`); the others read the uint8 images "
        "from the device through `DeviceLoader(augment='paper')`. Epoch time (full) scales "
        "the per-image throughput to a whole epoch of the data. Set-up (first steps, "
        "compilation) is not in the epoch time.",
        "",
    ]
    return "\n".join(lines)


def _data_provenance(source: str) -> object:
    """The data's file name and content hash, or "none (synthetic)"."""
    if source == "synthetic":
        return "none (synthetic)"
    from bgd_experiments.data import data_identity

    try:
        return data_identity("cifar10", source)
    except Exception as error:  # the benchmark still runs, and says why the hash is missing
        return f"unknown ({type(error).__name__})"


def write(report: dict, out: Path, device: torch.device) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / device.type
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--model", default=None, help="comma list; default resnet18 (cuda: +densenet121)"
    )
    parser.add_argument("--width", type=float, default=None, help="default cpu 0.25, cuda 1.0")
    parser.add_argument(
        "--images", type=int, default=None, help="training images; default cpu 5000, cuda all"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per epoch turn (default: a whole epoch)"
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 source or synthetic")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument(
        "--compiled-steps",
        type=int,
        default=None,
        help="steps per turn of the compiled variants (default: cpu 5, cuda --steps)",
    )
    parser.add_argument("--num-batches", type=int, default=20, help="MBT search batches k")
    parser.add_argument("--repeats", type=int, default=3, help="timed turns per variant")
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers (0: 2, or 8 given 16 cores)"
    )
    parser.add_argument(
        "--data-batches", type=int, default=25, help="batches per turn of the data-path bench"
    )
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS))
    parser.add_argument("--compile", choices=["auto", "off"], default="auto")
    parser.add_argument(
        "--compile-models", default="", help="comma list: compile only these (default: all)"
    )
    parser.add_argument(
        "--compile-timeout",
        type=float,
        default=None,
        help="seconds a child process may take to compile first, else skip (cpu 240, cuda 0: "
        "no probe)",
    )
    parser.add_argument("--channels-last", default="auto", help="auto | true | false (ours)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--parts", default="data,epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    models = (args.model or ("resnet18,densenet121" if gpu else "resnet18")).split(",")
    args.width = args.width if args.width is not None else (1.0 if gpu else 0.25)
    if args.images is None and not gpu:
        args.images = 5000
    if args.compiled_steps is None and not gpu:
        args.compiled_steps = 5
    if args.compile_timeout is None:
        args.compile_timeout = 0.0 if gpu else 240.0
    if not args.workers:
        args.workers = 8 if (os.cpu_count() or 1) >= 16 else 2
    args.variants = [v for v in args.variants.split(",") if v]
    args.compile_models = [m for m in args.compile_models.split(",") if m]
    unknown = set(args.variants) - set(ALL_VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {list(ALL_VARIANTS)}")
    if "mbt-keep" in args.variants and args.steps is not None and args.steps <= args.num_batches:
        print("! --steps <= --num-batches: mbt-keep's epoch is its search alone", flush=True)
    setting = {"true": True, "false": False}.get(args.channels_last.lower(), "auto")
    memory_format = (
        torch.channels_last if use_channels_last(setting, device) else torch.contiguous_format
    )

    images, labels, description = load_images(args.data, args.images)
    machine = machine_description(device)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    print(f"data: {description}", flush=True)
    report: dict = {
        "machine": machine,
        "data": description,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "command": recorded_command("scripts/bench_epoch.py", argv or sys.argv[1:]),
        "models": [],
        "provenance": artefact_provenance(_data_provenance(args.data), device),
    }
    parts = args.parts.split(",")
    if "data" in parts:
        data = bench_data_path(args, images, labels, device, memory_format)
        report["data_path"] = data
        print(
            f"data path alone: authors (DataLoader+PIL, {args.workers} workers) "
            f"{data['authors']['images_per_s']:.0f} images/s, ours (DeviceLoader) "
            f"{data['ours']['images_per_s']:.0f} images/s -> ours/authors "
            f"{data['ratio_ours_over_authors']:.2f}x (target >= 3x)",
            flush=True,
        )
        write(report, args.out, device)
    if "epochs" in parts:
        for model_name in models:
            result = bench_epochs(args, model_name, images, labels, device, memory_format)
            report["models"].append(result)
            write(report, args.out, device)  # a time limit later still leaves this model
            for name, entry in result["variants"].items():
                ratio = entry.get("epoch_ratio_vs_authors", float("nan"))
                print(
                    f"{model_name} {name:18s} {entry['images_per_s']:8.0f} images/s  "
                    f"epoch {entry['epoch_s']:7.1f}s  epoch/authors {ratio:.3f}",
                    flush=True,
                )
            for name, why in result["failures"].items():
                print(f"{model_name} {name:18s} {why}", flush=True)
    write(report, args.out, device)
    print(f"wrote {args.out / device.type}.md and .json", flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
