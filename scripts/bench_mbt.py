#!/usr/bin/env python
"""Benchmark the MBT search against an authors-style implementation, and MBT-NAG against NAG.

Everything is measured side by side in one process, on the same model, initial weights and
batches:

(a) the search's wall time, fast path vs ``naive_search`` below (written the way the
    authors' published code works: a state_dict deep copy per batch and a state_dict
    reload per trial, trial forwards with autograd on, the gradient norm by per-parameter
    ``.item()``), restore mode, checking that both chose the same sigmas; plus the cost of
    one trial as a fraction of a plain SGD step;
(b) an epoch of ``--steps`` (250 = the paper's CIFAR-10 epoch at batch 200) steps of NAG vs
    MBT-NAG in restore mode (20 extra search batches from their own stream) and in keep mode
    (the search's 20 batches are the first 20 steps of the epoch), the three epochs
    interleaved in chunks so that machine noise hits them alike;
(c) the effect of the warm-start options on the number of trials of a second search.

Example::

    python scripts/bench_mbt.py --model resnet18 --width 0.25 --batch-size 50 \\
        --epoch-batch-size 200 --data ../shared/data/cifar10-jpeg.tar.gz --device auto
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bgd_experiments.optim import (
    MBTSGD,
    WARM_START_MODES,
    batch_norm_layers,
    mbt_search,
    search_mode,
)
from bgd_experiments.optim.search import TrialPoint
from bgd_experiments.timing import timed

Batch = tuple[torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------- authors-style baseline
def naive_search(
    model: nn.Module,
    loss_fn: nn.Module,
    batches: list[Batch],
    *,
    start_lr: float,
    alpha: float,
    beta: float,
    num_samples: int,
) -> tuple[float, list[float], int]:
    """The MBT search as the authors' code runs it (restore mode). Returns (lr, sigmas,
    trials). Deliberately unoptimised: that is the baseline being measured."""
    lr_min, lr_max, threshold = 1e-6 - 1e-8, 100 + 1e-8, 1e-7
    params = list(model.parameters())
    sgd = torch.optim.SGD(params, lr=start_lr)
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(sgd.state_dict())
    ratio = 1 / np.sqrt(num_samples / batches[0][0].shape[0])
    model.train()
    sigmas: list[float] = []
    trials = 0
    sigma = start_lr
    for inputs, targets in batches:
        if sigmas:
            sigma = max(lr_min, float(np.mean(sigmas)))
        batch_state = copy.deepcopy(model.state_dict())
        sgd.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        loss_value = loss.item()
        norm_sq = float(np.sum([torch.norm(p.grad, p=2).item() ** 2 for p in params]))

        def trial(rate: float, state=batch_state, x=inputs, y=targets, lv=loss_value, n=norm_sq):
            nonlocal trials
            model.load_state_dict(state)
            for group in sgd.param_groups:
                group["lr"] = rate
            sgd.step()
            new_loss = loss_fn(model(x), y).item()  # autograd on, as in the authors' code
            trials += 1
            check = new_loss - lv + alpha * rate * n
            return check, rate * n > threshold and lr_min <= rate <= lr_max

        check, ok = trial(sigma)
        if (check > 0 or math.isnan(check)) and ok:
            while (check > 0 or math.isnan(check)) and ok:
                sigma *= beta
                check, ok = trial(sigma)
        elif check < 0 and ok:
            while check < 0 and ok:
                sigma /= beta
                check, ok = trial(sigma)
            sigma *= beta
        sigmas.append(sigma)
        model.load_state_dict(batch_state)
        for group in sgd.param_groups:
            group["lr"] = sigma * ratio
        sgd.step()
    model.load_state_dict(model_state)
    sgd.load_state_dict(optimizer_state)
    sgd.zero_grad()
    return float(np.mean(sigmas)) * ratio, sigmas, trials


# ---------------------------------------------------------------------------- helpers
def timed_each(device: torch.device, function: Callable[[], object], repeats: int) -> float:
    """Mean seconds of one call over ``repeats`` back-to-back calls."""
    return timed(device, lambda: [function() for _ in range(repeats)])[0] / repeats


def plain_sgd_steps(model: nn.Module, batches: list[Batch], lr: float) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for inputs, targets in batches:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        loss.item()


def make_data(args: argparse.Namespace, device: torch.device):
    """(loader factory, description): real CIFAR-10 through bgd_experiments.data if possible,
    else synthetic data of the same shape."""
    from bgd_experiments.data import DeviceLoader, load_cifar

    if args.data != "synthetic":
        try:
            train = load_cifar("cifar10", args.data, "train")
            images, labels = train.images, train.labels
            source = Path(args.data).name  # the file's name: no path of this machine
            description = f"real CIFAR-10 ({len(labels)} training images) from {source}"
        except Exception as error:  # the benchmark still runs, and says so
            print(f"! could not load {args.data} ({error}); using synthetic data", flush=True)
            args.data = "synthetic"
    if args.data == "synthetic":
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (50_000,), generator=generator)
        description = "SYNTHETIC data of CIFAR-10's shape (50000 x 3 x 32 x 32, 10 classes)"

    def loader(batch_size: int) -> DeviceLoader:
        return DeviceLoader(
            images,
            labels,
            batch_size,
            shuffle=True,
            augment=args.augment,
            seed=0,
            device=device,
            channels_last=args.memory_format == "channels_last",
        )

    return loader, description


# ------------------------------------------------------------------------------ parts
class TrialTimer:
    """Times one trial exactly as each implementation runs it, and a bare no-grad forward,
    on one batch at a small sigma (so the weights stay reasonable)."""

    def __init__(self, model0: nn.Module, batch: Batch) -> None:
        self.loss_fn = nn.CrossEntropyLoss()
        self.inputs, self.targets = batch
        # Fast path: the search's own trial object.
        self.fast_model = copy.deepcopy(model0)
        params = list(self.fast_model.parameters())
        with search_mode(self.fast_model):
            self.fast_model.zero_grad()
            loss = self.loss_fn(self.fast_model(self.inputs), self.targets)
            loss.backward()
        layers = batch_norm_layers(self.fast_model)
        self.point = TrialPoint(
            lambda: self.loss_fn(self.fast_model(self.inputs), self.targets), layers
        )
        self.point.set_point(params, [p.grad for p in params], [p.detach().clone() for p in params])
        self.point.set_reference(loss.item(), 1.0, 1e-4)
        # Authors' style: reload the state dict, SGD step, autograd-on forward, .item().
        self.naive_model = copy.deepcopy(model0).train()
        self.sgd = torch.optim.SGD(self.naive_model.parameters(), lr=1e-4)
        self.naive_model.zero_grad()
        self.loss_fn(self.naive_model(self.inputs), self.targets).backward()
        self.state = copy.deepcopy(self.naive_model.state_dict())

    def fast(self) -> None:
        self.point.armijo_check(1e-4)  # the model is in train mode and has no dropout

    def naive(self) -> None:
        self.naive_model.load_state_dict(self.state)
        self.sgd.step()
        self.loss_fn(self.naive_model(self.inputs), self.targets).item()

    def bare_forward(self) -> None:
        with torch.no_grad():
            self.loss_fn(self.naive_model(self.inputs), self.targets).item()


def part_a(args, model0: nn.Module, loader, device: torch.device) -> dict:
    """Rounds of [naive search, fast search, k plain steps, trials]; ratios per round (the
    CPU may be shared, so each ratio compares neighbouring measurements), median kept."""
    loss_fn = nn.CrossEntropyLoss()
    data = loader(args.batch_size)
    batches = list(itertools.islice(data.epoch(0, stream=1), args.num_batches))
    settings = {"start_lr": args.start_lr, "alpha": 1e-4, "beta": 0.5}
    timer = TrialTimer(model0, batches[0])
    for warm_up in (timer.fast, timer.naive, timer.bare_forward):
        warm_up()

    rounds: list[dict[str, float]] = []
    for _ in range(args.repeats):
        model = copy.deepcopy(model0)
        naive_s, (naive_lr, naive_sigmas, naive_trials) = timed(
            device,
            lambda model=model: naive_search(
                model, loss_fn, batches, num_samples=data.num_samples, **settings
            ),
        )
        model = copy.deepcopy(model0)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.start_lr)
        fast_s, fast = timed(
            device,
            lambda model=model, optimizer=optimizer: mbt_search(
                model,
                loss_fn,
                batches,
                optimizer,
                num_batches=args.num_batches,
                num_samples=data.num_samples,
                **settings,
            ),
        )
        model = copy.deepcopy(model0)
        step_s = timed(device, lambda model=model: plain_sgd_steps(model, batches, 1e-3))[0]
        step_s /= len(batches)
        fast_trial = timed_each(device, timer.fast, args.trial_repeats)
        naive_trial = timed_each(device, timer.naive, args.trial_repeats)
        forward = timed_each(device, timer.bare_forward, args.trial_repeats)
        rounds.append(
            {
                "naive_search_s": naive_s,
                "fast_search_s": fast_s,
                "plain_step_s": step_s,
                "search_ratio_fast_over_naive": fast_s / naive_s,
                "naive_search_over_k_steps": naive_s / (args.num_batches * step_s),
                "fast_search_over_k_steps": fast_s / (args.num_batches * step_s),
                "trial_fast_over_step": fast_trial / step_s,
                "trial_naive_over_step": naive_trial / step_s,
                "no_grad_forward_over_step": forward / step_s,
            }
        )
        print("    round: " + ", ".join(f"{k} {v:.3g}" for k, v in rounds[-1].items()), flush=True)
    same = fast.sigmas == naive_sigmas
    if not same:
        close = all(
            math.isclose(a, b, rel_tol=1e-6) for a, b in zip(fast.sigmas, naive_sigmas, strict=True)
        )
        print(f"! sigmas differ (all within 1e-6: {close})", flush=True)
    summary: dict[str, object] = {
        key: statistics.median(r[key] for r in rounds) for key in rounds[0]
    }
    summary.update(
        batch_size=args.batch_size,
        num_batches=args.num_batches,
        start_lr=args.start_lr,
        same_sigmas=same,
        lr_fast=fast.lr,
        lr_naive=naive_lr,
        trials_fast=fast.trials,
        trials_naive=naive_trials,
        trials_skipped_fast=fast.trials_skipped,
        trials_per_batch=fast.trials / args.num_batches,
        rounds=rounds,
    )
    return summary


def train_steps(
    model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[Batch], steps: int
) -> float:
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total = 0.0
    for inputs, targets in itertools.islice(batches, steps):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total


def part_b(args, model0: nn.Module, loader, device: torch.device) -> dict:
    """Epochs of NAG, MBT-NAG restore and MBT-NAG keep, run interleaved in chunks.

    The three epochs advance in turn, ``--epoch-chunk`` steps (or one search) at a time, in a
    rotating order, so a slow spell of a shared machine hits all three alike; each epoch's
    time is the sum of its own chunks. Median of ``--epoch-repeats`` such runs.
    """
    data = loader(args.epoch_batch_size)
    loss_fn = nn.CrossEntropyLoss()
    steps = args.steps
    search_seconds: dict[str, list[float]] = {"restore": [], "keep": []}

    def in_chunks(model: nn.Module, optimizer: torch.optim.Optimizer, batches, count: int):
        for done in range(0, count, args.epoch_chunk):
            train_steps(model, optimizer, batches, min(args.epoch_chunk, count - done))
            yield

    def nag_epoch() -> Iterator[None]:
        model = copy.deepcopy(model0)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True)
        batches = data.epoch(0)
        yield  # set up, untimed
        yield from in_chunks(model, optimizer, batches, steps)

    def mbt_epoch(keep: bool) -> Iterator[None]:
        model = copy.deepcopy(model0)
        optimizer = MBTSGD(
            model.parameters(),
            lr=args.start_lr,
            momentum=0.9,
            nesterov=True,
            keep_search_steps=keep,
            num_batches=args.num_batches,
        )
        batches = data.epoch(0)
        search_batches = batches if keep else data.epoch(0, stream=1)
        yield  # set up, untimed
        result = optimizer.search(model, loss_fn, search_batches, data.num_samples)
        search_seconds["keep" if keep else "restore"].append(result.wall_time)
        yield
        yield from in_chunks(model, optimizer, batches, steps - args.num_batches if keep else steps)

    timings: dict[str, list[float]] = {"nag": [], "restore": [], "keep": []}
    for _ in range(args.epoch_repeats):
        runners = {"nag": nag_epoch(), "restore": mbt_epoch(False), "keep": mbt_epoch(True)}
        for runner in runners.values():
            next(runner)
        totals = dict.fromkeys(runners, 0.0)
        active = list(runners)
        turn = 0
        while active:
            shift = turn % len(active)
            turn += 1
            for mode in active[shift:] + active[:shift]:
                runner = runners[mode]
                seconds, finished = timed(device, lambda runner=runner: next(runner, True))
                totals[mode] += seconds
                if finished is True:
                    active.remove(mode)
        for mode, seconds in totals.items():
            timings[mode].append(seconds)

    results: dict[str, float] = {}
    nag_time = statistics.median(timings["nag"])
    for mode in ("restore", "keep"):
        pairs = zip(timings[mode], timings["nag"], strict=True)
        ratios = [mode_s / nag_s for mode_s, nag_s in pairs]
        search = statistics.median(search_seconds[mode])
        results[f"epoch_{mode}_s"] = statistics.median(timings[mode])
        results[f"epoch_ratio_{mode}"] = statistics.median(ratios)
        results[f"epoch_ratio_{mode}_runs"] = ratios
        results[f"search_{mode}_s"] = search
        # What the same measurements give for the paper's 250-step epoch, if --steps < 250.
        per_step = nag_time / steps
        extra = search - (args.num_batches * per_step if mode == "keep" else 0.0)
        results[f"epoch_ratio_{mode}_at_250_steps"] = (250 * per_step + extra) / (250 * per_step)
    results["epoch_nag_s"] = nag_time
    results["steps"] = steps
    results["epoch_batch_size"] = args.epoch_batch_size
    return results


def part_c(args, model0: nn.Module, loader, device: torch.device) -> dict:
    """Trials of a second search after a first one, per warm-start mode (same weights)."""
    data = loader(args.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    out: dict[str, dict[str, float]] = {}
    for start in (args.start_lr, 100.0):
        for mode in WARM_START_MODES:
            model = copy.deepcopy(model0)
            optimizer = MBTSGD(
                model.parameters(), lr=start, num_batches=args.num_batches, warm_start=mode
            )
            optimizer.search(model, loss_fn, data.epoch(0, stream=1), data.num_samples)
            second = optimizer.search(model, loss_fn, data.epoch(1, stream=1), data.num_samples)
            out[f"start {start:g} warm_start={mode}"] = {
                "trials": second.trials,
                "lr": second.lr,
                "wall_s": second.wall_time,
            }
    return out


def fmt_list(values: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=50, help="part (a) and (c)")
    parser.add_argument("--epoch-batch-size", type=int, default=200, help="part (b)")
    parser.add_argument("--steps", type=int, default=250, help="steps of the epoch in (b)")
    parser.add_argument("--num-batches", type=int, default=20)
    parser.add_argument("--start-lr", type=float, default=1e-2)
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"),
        help="CIFAR-10 archive/folder, or 'synthetic'",
    )
    parser.add_argument("--augment", default="paper", help="none | flip_crop | paper")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--memory-format",
        choices=["channels_last", "contiguous"],
        default="channels_last",
        help="layout of the model and batches (trainer.channels_last, true by default; "
        "contiguous is NCHW)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of part (a) (median ratio is kept)"
    )
    parser.add_argument(
        "--trial-repeats", type=int, default=20, help="trials timed per round of part (a)"
    )
    parser.add_argument(
        "--epoch-repeats", type=int, default=3, help="runs of part (b) (median ratio is kept)"
    )
    parser.add_argument(
        "--epoch-chunk", type=int, default=25, help="steps per turn of the interleaved epochs"
    )
    parser.add_argument("--parts", default="abc")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.steps <= args.num_batches:
        parser.error("--steps must exceed --num-batches")

    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    from bgd_experiments.models import build_model

    torch.manual_seed(0)
    memory_format = (
        torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    )
    model0 = build_model(args.model, 10, args.width).to(device, memory_format=memory_format)
    loader, description = make_data(args, device)
    header = (
        f"{args.model} width {args.width} on {device} ({torch.get_num_threads()} threads, "
        f"{args.memory_format}), "
        f"torch {torch.__version__}; data: {description}; augment {args.augment}"
    )
    print(header, flush=True)
    from bgd_experiments.training.provenance import artefact_provenance, recorded_command

    data_provenance: object = "none (synthetic)"
    if args.data != "synthetic":
        from bgd_experiments.data import data_identity

        data_provenance = data_identity("cifar10", args.data)
    report: dict[str, object] = {
        "setup": header,
        "provenance": artefact_provenance(data_provenance, device),
        "command": recorded_command(
            "scripts/bench_mbt.py",
            argv if argv is not None else sys.argv[1:],
            output_options=("--json",),
        ),
    }

    if "a" in args.parts:
        a = part_a(args, model0, loader, device)
        report["search"] = a
        print(
            f"\n(a) search, batch {a['batch_size']}, k={a['num_batches']}, start "
            f"{a['start_lr']:g}: same sigmas as the authors-style search: {a['same_sigmas']} "
            f"(lr {a['lr_fast']:.6g} vs {a['lr_naive']:.6g}); trials fast {a['trials_fast']} "
            f"(+{a['trials_skipped_fast']} skipped by guards) vs naive {a['trials_naive']}\n"
            f"    naive {a['naive_search_s']:.2f}s  fast {a['fast_search_s']:.2f}s  "
            f"-> fast/naive = {a['search_ratio_fast_over_naive']:.3f}  (target <= 0.92)\n"
            f"    search / {a['num_batches']} plain SGD steps: naive "
            f"{a['naive_search_over_k_steps']:.2f}x, fast {a['fast_search_over_k_steps']:.2f}x "
            f"({a['trials_per_batch']:.2f} trials per batch)\n"
            f"    one trial / plain step: fast {a['trial_fast_over_step']:.3f} (target <= 0.32), "
            f"naive {a['trial_naive_over_step']:.3f}; a bare train-mode no-grad forward "
            f"{a['no_grad_forward_over_step']:.3f}; plain step {a['plain_step_s'] * 1e3:.1f} ms",
            flush=True,
        )
    if "b" in args.parts:
        b = part_b(args, model0, loader, device)
        report["epoch"] = b
        note = "" if args.steps == 250 else f"  [SHRUNK to {args.steps} steps]"
        print(
            f"\n(b) epoch of {b['steps']} steps at batch {b['epoch_batch_size']}{note}: NAG "
            f"{b['epoch_nag_s']:.1f}s\n"
            f"    MBT-NAG restore {b['epoch_restore_s']:.1f}s (search {b['search_restore_s']:.1f}s)"
            f" -> ratio {b['epoch_ratio_restore']:.3f} (target <= 1.15; at 250 steps "
            f"{b['epoch_ratio_restore_at_250_steps']:.3f})\n"
            f"    MBT-NAG keep    {b['epoch_keep_s']:.1f}s (search {b['search_keep_s']:.1f}s)"
            f" -> ratio {b['epoch_ratio_keep']:.3f} (target <= 1.07; at 250 steps "
            f"{b['epoch_ratio_keep_at_250_steps']:.3f})\n"
            f"    (the three epochs ran interleaved, {args.epoch_chunk} steps a turn; ratio per "
            f"run: restore {fmt_list(b['epoch_ratio_restore_runs'])}, keep "
            f"{fmt_list(b['epoch_ratio_keep_runs'])})",
            flush=True,
        )
    if "c" in args.parts:
        c = part_c(args, model0, loader, device)
        report["warm_start"] = c
        print(f"\n(c) second search after a first one (batch {args.batch_size}):")
        for name, values in c.items():
            print(
                f"    {name:37s} trials {values['trials']:3d}  lr {values['lr']:.5g}  "
                f"{values['wall_s']:.2f}s"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
