#!/usr/bin/env python
"""Scan every convolution the five models run for oneDNN layout bugs, at several ISA levels.

torch's CPU convolutions go through oneDNN, whose kernels depend on the processor's
instruction set and on the memory layout. torch 2.14.1 computes a wrong weight gradient for
some channels_last convolutions (and can corrupt the heap), depending on the ISA level and on
what the process ran before (memory that was never used is zero and hides the bug). This
script compares, for every convolution shape that ``bgd_experiments.models`` produce at the
given widths and every batch size the experiments use:

- the channels_last forward, input gradient, weight gradient (and bias gradient) against NCHW;
- both against a float64 reference (a different kernel: oneDNN has no float64 path) for
  batches <= ``--reference-max-batch`` and wherever the two layouts disagree.

Each ISA level runs in its own worker process with ``ONEDNN_MAX_CPU_ISA`` set,
``MALLOC_PERTURB_`` set (every allocation comes back filled with a non-zero pattern instead
of zeros) and ``MALLOC_CHECK_=3`` (glibc aborts on a heap corruption). Its allocator is
dirtied before the first shape. A worker that dies marks the shape it was on as ``crash``
and the scan goes on from the next one.

Example (docs/cpu-memory-layout.md's tables; on 2 idle cores, the three ISA levels take about
7 min at training batches 3-200 and about 22 min a level at batches 400-1000)::

    python scripts/scan_onednn.py --out results/onednn-scan

writes ``<out>/<cpu>.json`` with every comparison and ``<out>/<cpu>.md`` with the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bgd_experiments.models import MODEL_BUILDERS, SubsampledConv1x1, build_model
from bgd_experiments.training.provenance import (
    artefact_provenance,
    cpu_model,
    made_from,
    recorded_command,
)

# Training batches of Table 1 (the others use 200), the last partial batch of a 50,000- or
# 2,000-image epoch at batch 12 (8), Figure 2(b)'s full batch (500) and small odd and even
# sizes the tests use. Evaluation batches run forward only.
TRAIN_BATCHES = (3, 6, 8, 12, 25, 50, 100, 200, 400, 500, 800)
EVAL_BATCHES = (1000,)
# The budgets' widths (smoke 0.0625, cpu 0.25, paper 1.0) and the tests' 0.125.
WIDTHS = (0.0625, 0.125, 0.25, 1.0)
ISA_LEVELS = ("default", "AVX2", "AVX512_CORE")
# A wrong result is off by 10-100% of the largest entry; float32 rounding over 10^6 terms is
# about 1e-5 of it.
TOLERANCE = 1e-3
# A convolution large enough for torch to hand it to oneDNN, which then prints its ISA.
VERBOSE_PROBE = (
    "import torch; "
    "torch.nn.functional.conv2d(torch.randn(8, 16, 16, 16), torch.randn(16, 16, 3, 3))"
)


@dataclass(frozen=True, order=True)
class ConvShape:
    """One convolution call: ``F.conv2d`` on an ``(N, in_channels, height, width)`` input."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    height: int
    width: int
    bias: bool

    def label(self) -> str:
        kind = f"{self.kernel}x{self.kernel}"
        if self.groups > 1:
            kind += f" g{self.groups}"
        return (
            f"{kind} s{self.stride} {self.in_channels}->{self.out_channels} "
            f"@{self.height}x{self.width}" + (" +bias" if self.bias else "")
        )

    def flops(self, batch: int) -> float:
        out_h = (self.height + 2 * self.padding - self.kernel) // self.stride + 1
        out_w = (self.width + 2 * self.padding - self.kernel) // self.stride + 1
        per_image = (
            out_h * out_w * self.out_channels * self.kernel**2 * self.in_channels / self.groups
        )
        return 2.0 * batch * per_image


def model_conv_shapes(widths: tuple[float, ...], models: tuple[str, ...]) -> dict:
    """Every distinct convolution shape of ``models`` at ``widths`` -> the models using it."""
    shapes: dict[ConvShape, set[str]] = {}
    for name in models:
        for width in widths:
            model = build_model(name, num_classes=10, width=width).eval()
            seen: list[ConvShape] = []

            def record(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], _out, seen=seen):
                _, channels, height, width_ = inputs[0].shape
                shape = ConvShape(
                    in_channels=channels,
                    out_channels=module.out_channels,
                    kernel=module.kernel_size[0],
                    stride=module.stride[0],
                    padding=module.padding[0],
                    groups=module.groups,
                    height=height,
                    width=width_,
                    bias=module.bias is not None,
                )
                # The native strided convolution (what nn.Conv2d would run) and, for a
                # SubsampledConv1x1, the stride-1 convolution it runs instead.
                seen.append(shape)
                if isinstance(module, SubsampledConv1x1):
                    rows, columns = -(-height // shape.stride), -(-width_ // shape.stride)
                    seen.append(replace(shape, stride=1, height=rows, width=columns))

            handles = [
                m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)
            ]
            with torch.no_grad():
                model(torch.zeros(1, 3, 32, 32))
            for handle in handles:
                handle.remove()
            for shape in seen:
                shapes.setdefault(shape, set()).add(f"{name}@{width:g}")
    return shapes


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference over the largest absolute reference entry."""
    # In the compared tensors' precision: a wrong entry is off by far more than float32 eps.
    difference = (value - reference.to(value.dtype)).abs().max().item()
    return difference / max(reference.abs().max().item(), 1e-30)


def convolve(shape: ConvShape, tensors: dict[str, torch.Tensor], layout, dtype, forward_only):
    """Output and gradients of one convolution in ``layout`` and ``dtype``."""
    x = tensors["x"].to(dtype).contiguous(memory_format=layout).requires_grad_(not forward_only)
    w = tensors["w"].to(dtype).contiguous(memory_format=layout).requires_grad_(not forward_only)
    b = tensors["b"].to(dtype).requires_grad_(not forward_only) if shape.bias else None
    if forward_only:
        with torch.no_grad():
            out = F.conv2d(x, w, b, shape.stride, shape.padding, 1, shape.groups)
        return {"output": out}
    out = F.conv2d(x, w, b, shape.stride, shape.padding, 1, shape.groups)
    upstream = tensors["upstream"].to(dtype).contiguous(memory_format=layout)
    wanted = (x, w, b) if shape.bias else (x, w)
    grads = torch.autograd.grad(out, wanted, upstream)
    result = {"output": out.detach(), "input_grad": grads[0], "weight_grad": grads[1]}
    if shape.bias:
        result["bias_grad"] = grads[2]
    return result


def check(shape: ConvShape, batch: int, forward_only: bool, reference_max_batch: int) -> dict:
    """Compare channels_last with NCHW (and both with float64 where asked) for one case."""
    generator = torch.Generator().manual_seed(hash((shape, batch)) % 2**31)

    def normal(*size: int) -> torch.Tensor:
        # Slices of one pool of standard normal numbers at random offsets (repeated for the
        # largest tensors): drawing fresh ones took longer than the convolutions.
        count = torch.Size(size).numel()
        pool = RANDOM_POOL
        if count > pool.numel():
            pool = pool.repeat(-(-count // pool.numel()) + 1)
        offset = int(torch.randint(0, pool.numel() - count + 1, (1,), generator=generator))
        return pool[offset : offset + count].view(size)

    x = normal(batch, shape.in_channels, shape.height, shape.width)
    fan_in = shape.in_channels // shape.groups * shape.kernel**2
    weight_size = (
        shape.out_channels,
        shape.in_channels // shape.groups,
        shape.kernel,
        shape.kernel,
    )
    w = normal(*weight_size) / fan_in**0.5
    b = normal(shape.out_channels)
    out_shape = F.conv2d(x[:1], w, None, shape.stride, shape.padding, 1, shape.groups).shape
    upstream = normal(batch, *out_shape[1:])
    tensors = {"x": x, "w": w, "b": b, "upstream": upstream}

    nchw = convolve(shape, tensors, torch.contiguous_format, torch.float32, forward_only)
    nhwc = convolve(shape, tensors, torch.channels_last, torch.float32, forward_only)
    errors = {key: relative_error(nhwc[key], nchw[key]) for key in nchw}
    result: dict = {"layout_error": errors}
    if batch <= reference_max_batch or max(errors.values()) > TOLERANCE:
        exact = convolve(shape, tensors, torch.contiguous_format, torch.float64, forward_only)
        result["nchw_vs_float64"] = {key: relative_error(nchw[key], exact[key]) for key in exact}
        result["channels_last_vs_float64"] = {
            key: relative_error(nhwc[key], exact[key]) for key in exact
        }
    return result


def verdict(result: dict) -> str:
    """``ok``, ``wrong`` (channels_last off), ``nchw-wrong`` or ``crash``."""
    if result.get("crash"):
        return "crash"
    if "nchw_vs_float64" in result:
        if max(result["nchw_vs_float64"].values()) > TOLERANCE:
            return "nchw-wrong"
        if max(result["channels_last_vs_float64"].values()) > TOLERANCE:
            return "wrong"
        return "ok"
    return "wrong" if max(result["layout_error"].values()) > TOLERANCE else "ok"


def cases(widths, models, train_batches, eval_batches, max_batch):
    shapes = model_conv_shapes(widths, models)
    work = []
    for shape in sorted(shapes):
        for batch in train_batches:
            if batch <= max_batch:
                work.append((shape, batch, False))
        for batch in eval_batches:
            if batch <= max_batch:
                work.append((shape, batch, True))
    return shapes, work


RANDOM_POOL = torch.empty(0)


def make_random_pool() -> None:
    """Fill :data:`RANDOM_POOL` with 2^25 standard normal numbers (128 MiB)."""
    global RANDOM_POOL
    RANDOM_POOL = torch.randn(2**25, generator=torch.Generator().manual_seed(0))


def dirty_the_allocator() -> None:
    """Allocate, fill and free buffers of many sizes so later allocations reuse used memory."""
    keep = []
    for size in [2**k for k in range(8, 25)] * 3:
        keep.append(torch.full((size,), float("nan")))
        if len(keep) > 6:
            keep.pop(0)
    for batch in (3, 25):
        x = torch.randn(batch, 8, 16, 16).contiguous(memory_format=torch.channels_last)
        conv = nn.Conv2d(8, 16, 3, padding=1).to(memory_format=torch.channels_last)
        conv(x).sum().backward()


def worker(args: argparse.Namespace) -> None:
    """Scan cases ``args.start`` onwards, appending one JSON line per case to ``args.log``."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    _, work = cases(args.widths, args.models, args.train_batches, args.eval_batches, args.max_batch)
    make_random_pool()
    dirty_the_allocator()
    with open(args.log, "a") as log:
        for index in range(args.start, len(work)):
            shape, batch, forward_only = work[index]
            log.write(json.dumps({"started": index}) + "\n")
            log.flush()
            result = check(shape, batch, forward_only, args.reference_max_batch)
            log.write(json.dumps({"index": index, **result}) + "\n")
            log.flush()


def verbose_probe(extra_env: dict[str, str]) -> str:
    """What oneDNN's verbose mode prints for one convolution in a fresh interpreter."""
    env = {**os.environ, **extra_env, "ONEDNN_VERBOSE": "1"}
    command = [sys.executable, "-c", VERBOSE_PROBE]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False).stdout


def detected_isa(isa: str) -> str:
    """The ISA oneDNN reports for a capped level (``ONEDNN_VERBOSE``'s ``isa:`` field)."""
    extra = {} if isa == "default" else {"ONEDNN_MAX_CPU_ISA": isa}
    for line in verbose_probe(extra).splitlines():
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return "unknown"


def log_entries(log: Path) -> list[dict]:
    """The complete records of a worker log. A worker writes one JSON line per event; the
    text after the last newline is a line still being written, or torn by a killed worker,
    and is left out, as is any line that a crash record was appended to."""
    if not log.exists():
        return []
    entries = []
    for line in log.read_text().split("\n")[:-1]:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def last_entry(log: Path) -> dict:
    """The log's last complete record ({} if none), without parsing the lines before it:
    the scanner polls it while a worker writes."""
    for line in reversed(log.read_text().split("\n")[:-1]):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def read_log(log: Path) -> dict[int, dict]:
    """The results a (possibly unfinished) scan's log holds, by case index."""
    return {entry["index"]: entry for entry in log_entries(log) if "index" in entry}


def append_record(log: Path, entry: dict) -> None:
    """Append one record on a line of its own, after a torn last line if there is one."""
    torn = log.exists() and log.stat().st_size > 0 and not log.read_text().endswith("\n")
    with open(log, "a") as record:
        record.write(("\n" if torn else "") + json.dumps(entry) + "\n")


def scan_isa(isa: str, args: argparse.Namespace, work: list, log: Path) -> dict[int, dict]:
    """Run workers at ``isa`` until every case has a result; a dead worker marks a crash."""
    env = {**os.environ, "MALLOC_PERTURB_": "165", "MALLOC_CHECK_": "3"}
    if isa == "default":
        env.pop("ONEDNN_MAX_CPU_ISA", None)
    else:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    if not args.resume:
        log.unlink(missing_ok=True)

    def time_limit(index: int) -> float:
        # Generous: 3 s per GFLOP of the case (both layouts, float64 included) plus start-up.
        shape, batch, forward_only = work[index]
        return args.case_timeout + 3e-9 * shape.flops(batch) * (1 if forward_only else 3) * 3

    # --resume: keep the log's results and go on after the last case it has one for.
    results = read_log(log)
    start = max(results, default=-1) + 1
    while start < len(work):
        command = [sys.executable, __file__, "--worker", "--start", str(start), "--log", str(log)]
        command += forwarded_arguments(args)
        returncode = run_worker(command, env, log, time_limit)
        started = None
        for entry in log_entries(log):
            if "started" in entry:
                started = entry["started"]
            else:
                results[entry["index"]] = entry
        if returncode == 0:
            break
        if started is None or started in results:
            raise RuntimeError(f"worker at {isa} failed before its first case")
        # A corrupted heap shows as an abort, a segfault or an endless loop (seen at AVX2).
        how = "hang" if returncode is None else f"exit {returncode}"
        results[started] = {"index": started, "crash": True, "how": how}
        append_record(log, results[started])  # so that --resume keeps it
        print(f"  {isa}: case {started} killed the worker ({how}); going on", flush=True)
        start = started + 1
    return results


def run_worker(command: list[str], env: dict, log: Path, time_limit) -> int | None:
    """Run one worker; kill it when case ``i`` runs past ``time_limit(i)`` seconds (None)."""
    process = subprocess.Popen(command, env=env)
    # Start-up (models, random pool, allocator warm-up) can take minutes on a busy machine;
    # what earlier workers left in the log does not count.
    last_size = log.stat().st_size if log.exists() else 0
    deadline = time.monotonic() + 900
    while process.poll() is None:
        time.sleep(0.2)
        size = log.stat().st_size if log.exists() else 0
        if size != last_size:
            last_size = size
            last = last_entry(log)
            if "started" in last:
                deadline = time.monotonic() + time_limit(last["started"])
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            return None
    return process.returncode


def forwarded_arguments(args: argparse.Namespace) -> list[str]:
    return [
        "--widths",
        *map(str, args.widths),
        "--models",
        *args.models,
        "--train-batches",
        *map(str, args.train_batches),
        "--eval-batches",
        *map(str, args.eval_batches),
        "--max-batch",
        str(args.max_batch),
        "--reference-max-batch",
        str(args.reference_max_batch),
        "--threads",
        str(args.threads),
    ]


def onednn_version() -> str:
    """oneDNN's version as its verbose mode prints it."""
    for line in verbose_probe({}).splitlines():
        if ",info,oneDNN v" in line:
            return line.split(",info,oneDNN v", 1)[1].split()[0]
    return "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def provenance_lines(meta: dict) -> list[str]:
    """Where the scan was made: commit and dirty flag, versions, and the command."""
    made = meta.get("provenance")
    if not made:
        return []
    versions = ", ".join(f"{name} {version}" for name, version in made["versions"].items())
    lines = [f"- Made from {made_from(made)}; {versions}"]
    if meta.get("command"):
        lines.append(f"- Command: `{meta['command']}`")
    return lines


def summary_from_report(report: dict) -> str:
    """The summary of a scan's JSON report, as the scan itself wrote it."""
    meta = {**report["meta"]}
    isa_names = meta.pop("isa")
    shapes: dict[ConvShape, list[str]] = {}
    work = []
    per_isa: dict[str, dict[int, dict]] = {isa: {} for isa in isa_names}
    for index, case in enumerate(report["cases"]):
        shape = ConvShape(**case["shape"])
        shapes[shape] = case["models"]
        work.append((shape, case["batch"], case["forward_only"]))
        for isa, result in case["results"].items():
            per_isa[isa][index] = result
    return summarise(shapes, work, per_isa, isa_names, meta)


# A whole scan's report is a few MB; a file that is, or inflates to, more is refused.
MAX_REPORT_BYTES = 64 * 2**20


def read_report(path: Path) -> dict:
    """A scan's JSON report, plain or gzipped (as committed), read within MAX_REPORT_BYTES."""
    too_large = ValueError(f"{path}: more than {MAX_REPORT_BYTES:,} bytes; not a scan report")
    with path.open("rb") as handle:
        raw = handle.read(MAX_REPORT_BYTES + 1)
    if raw[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(wbits=31)  # gzip framing
        raw = inflater.decompress(raw, MAX_REPORT_BYTES + 1)
    if len(raw) > MAX_REPORT_BYTES:
        raise too_large
    return json.loads(raw)


def summarise(shapes, work, per_isa: dict[str, dict[int, dict]], isa_names, meta) -> str:
    lines = [
        "# oneDNN convolution scan: channels_last vs NCHW vs float64",
        "",
        f"- CPU: {meta['cpu']} (AVX-512: {'yes' if meta['avx512'] else 'no'}), "
        f"torch {meta['torch']}, oneDNN {meta['onednn']}",
        f"- {len(shapes)} convolution shapes of {', '.join(meta['models'])} at widths "
        f"{', '.join(f'{w:g}' for w in meta['widths'])}; training batches "
        f"{', '.join(map(str, meta['train_batches']))} (forward, input, weight and bias "
        f"gradients)"
        + (
            f", evaluation batches {', '.join(map(str, meta['eval_batches']))} (forward)"
            if meta["eval_batches"]
            else ""
        )
        + f"; {len(work)} cases per ISA level",
        f"- {meta['threads']} torch thread(s); "
        "each ISA level in its own process, allocator dirtied first, MALLOC_PERTURB_=165, "
        f"MALLOC_CHECK_=3; wrong = relative error > {TOLERANCE:g} of the largest entry",
        *provenance_lines(meta),
        "",
        "| ISA cap | oneDNN ran | cases | ok | channels_last wrong | NCHW wrong | crashes "
        "| largest error of an ok case | wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for isa in per_isa:
        results = per_isa[isa]
        scanned = sorted(i for i in results if i < len(work))
        verdicts = [verdict(results[i]) for i in scanned]
        ok_errors = [
            max(results[i]["layout_error"].values())
            for i, outcome in zip(scanned, verdicts, strict=True)
            if outcome == "ok"
        ]
        cases = f"{len(scanned)}" if len(scanned) == len(work) else f"{len(scanned)} of {len(work)}"
        wall = meta["wall"].get(isa)
        lines.append(
            f"| {isa} | {isa_names[isa]} | {cases} | {verdicts.count('ok')} | "
            f"{verdicts.count('wrong')} | {verdicts.count('nchw-wrong')} | "
            f"{verdicts.count('crash')} | {max(ok_errors, default=0):.1e} | "
            f"{'-' if wall is None else f'{wall:.0f} s'} |"
        )
    lines += ["", "## Cases that are not ok", ""]
    bad_rows = []
    for isa, results in per_isa.items():
        for index, (shape, batch, forward_only) in enumerate(work):
            if index not in results:
                continue
            outcome = verdict(results[index])
            if outcome == "ok":
                continue
            errors = results[index].get("channels_last_vs_float64") or results[index].get(
                "layout_error", {}
            )
            worst = results[index].get("how") or ", ".join(
                f"{k} {v:.2g}" for k, v in errors.items() if v > TOLERANCE
            )
            used_by = ", ".join(sorted(shapes[shape]))
            pass_kind = "forward" if forward_only else "train"
            bad_rows.append(
                f"| {isa} | {shape.label()} | {batch} ({pass_kind}) | {outcome} | "
                f"{worst or '-'} | {used_by} |"
            )
    if bad_rows:
        lines += [
            "| ISA cap | convolution | batch | outcome | relative error vs float64 | models |",
            "|---|---|---|---|---|---|",
            *bad_rows,
        ]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--isa", nargs="+", default=list(ISA_LEVELS))
    parser.add_argument("--widths", nargs="+", type=float, default=list(WIDTHS))
    parser.add_argument("--models", nargs="+", default=list(MODEL_BUILDERS))
    parser.add_argument("--train-batches", nargs="+", type=int, default=list(TRAIN_BATCHES))
    parser.add_argument("--eval-batches", nargs="+", type=int, default=list(EVAL_BATCHES))
    parser.add_argument("--max-batch", type=int, default=1000, help="skip larger batches")
    parser.add_argument(
        "--reference-max-batch",
        type=int,
        default=25,
        help="compare with float64 at batches up to this (and wherever the layouts disagree)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=20,
        help="seconds (plus 3 s per GFLOP of the case) before a case counts as a hang",
    )
    parser.add_argument("--out", type=Path, default=Path("results/onednn-scan"))
    parser.add_argument(
        "--resume", action="store_true", help="go on from the logs an interrupted scan left"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="summarise the logs in --out as they are (a partial scan shows its coverage)",
    )
    parser.add_argument(
        "--summary-of",
        type=Path,
        help="print the summary of a scan's JSON report (plain or .gz) and exit",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.widths = tuple(args.widths)
    args.models = tuple(args.models)
    if args.worker:
        worker(args)
        return
    if args.summary_of:
        print(summary_from_report(read_report(args.summary_of)), end="")
        return

    shapes, work = cases(
        args.widths, args.models, args.train_batches, args.eval_batches, args.max_batch
    )
    gflop = sum(s.flops(b) * (1 if f else 3) for s, b, f in work) * 2 / 1e9
    print(f"{len(shapes)} shapes, {len(work)} cases per ISA level, {gflop:.0f} GFLOP each")
    args.out.mkdir(parents=True, exist_ok=True)
    flags = cpu_flags()
    cpu = cpu_model()
    tag = "".join(c if c.isalnum() else "-" for c in cpu).strip("-").lower() or "cpu"
    per_isa, isa_names, wall = {}, {}, {}
    for isa in args.isa:
        isa_names[isa] = detected_isa(isa)
        print(f"{isa}: oneDNN runs {isa_names[isa]}", flush=True)
        begin = time.perf_counter()
        log = args.out / f"{tag}.{isa}.log"
        if args.report_only:
            per_isa[isa] = read_log(log)
            wall[isa] = None
        else:
            per_isa[isa] = scan_isa(isa, args, work, log)
            wall[isa] = time.perf_counter() - begin
        bad = sum(verdict(result) != "ok" for result in per_isa[isa].values())
        print(f"{isa}: {bad} of {len(per_isa[isa])} scanned cases not ok", flush=True)
    meta = {
        "cpu": cpu,
        "avx512": "avx512f" in flags,
        "torch": torch.__version__,
        "onednn": onednn_version(),
        "models": list(args.models),
        "widths": list(args.widths),
        "train_batches": [b for b in args.train_batches if b <= args.max_batch],
        "eval_batches": [b for b in args.eval_batches if b <= args.max_batch],
        "max_batch": args.max_batch,
        "threads": args.threads or torch.get_num_threads(),
        "wall": wall,
        "provenance": artefact_provenance("none (synthetic convolution inputs)"),
        "command": recorded_command(
            "scripts/scan_onednn.py", argv if argv is not None else sys.argv[1:]
        ),
    }
    records = [
        {
            "shape": asdict(shape),
            "batch": batch,
            "forward_only": forward_only,
            "models": sorted(shapes[shape]),
            "results": {
                isa: {**per_isa[isa][i], "verdict": verdict(per_isa[isa][i])}
                for isa in per_isa
                if i in per_isa[isa]
            },
        }
        for i, (shape, batch, forward_only) in enumerate(work)
    ]
    (args.out / f"{tag}.json").write_text(
        json.dumps({"meta": {**meta, "isa": isa_names}, "cases": records}, indent=1) + "\n"
    )
    summary = summarise(shapes, work, per_isa, isa_names, meta)
    (args.out / f"{tag}.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
