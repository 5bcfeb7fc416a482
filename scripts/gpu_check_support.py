#!/usr/bin/env python
"""Helpers of scripts/gpu_check.sh, run by the interpreter under test (the GPU machine's
python3, or the stand-in image's on a CPU machine). Standard library only at import time, so
each part runs before the wheels are known to work.

    requirements            pyproject.toml's dependencies, one a line (for pip's check)
    preflight               every module imports, from where it should; Hydra finds our plugins
    summary                 gpu-check.json, provenance under each bench table, the out folder
                            checked against what a device call brings back
    prune-image NAME...     (stand-in image only) delete every installed distribution
                            outside the dependency closure of NAME... (pip kept)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Modules of the project's dependencies: (module, distribution); the wheels bring the first
# group, the GPU image the second.
CARRIED = [
    ("hydra", "hydra-core"),
    ("omegaconf", "omegaconf"),
    ("antlr4", "antlr4-python3-runtime"),
    ("submitit", "submitit"),
    ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    ("prodigyopt", "prodigyopt"),
    ("dadaptation", "dadaptation"),
    ("schedulefree", "schedulefree"),
    ("dog", "dog-optimizer"),
]
IMAGE = [
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("tensorboard", "tensorboard"),
    ("rich", "rich"),
    ("matplotlib", "matplotlib"),
    ("PIL", "pillow"),
    ("numpy", "numpy"),
    ("cloudpickle", "cloudpickle"),
    ("yaml", "PyYAML"),
    ("pytest", "pytest"),
]
# Hydra plugins the project's configs name: ours come from the repository, the SLURM one
# from the hydra-submitit-launcher wheel.
PLUGINS = {
    "ParallelLocalLauncher": "hydra_plugins.bgd_local_launcher",
    "GridUnionSweeper": "hydra_plugins.bgd_grid_sweeper",
    "SlurmLauncher": "hydra_plugins.hydra_submitit_launcher",
}
# What one device call brings back from its out folder.
MAX_FILES, MAX_BYTES, MAX_DEPTH = 8, 16 * 2**20, 2
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
MARKER = "## Provenance (gpu-check)"


def requirements() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    print("\n".join(project["dependencies"]))
    return 0


def _inside(path: str | None, folder: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(folder.resolve())


def preflight(site: Path | None, device: str, strict: bool) -> int:
    """Fatal: a module that does not import, no CUDA where CUDA is asked for. The rest only
    warns unless ``strict`` (the dry run), so a GPU run still runs the steps they spare."""
    fatal: list[str] = []
    for module, _ in CARRIED + IMAGE + [("bgd_experiments", "")]:
        try:
            importlib.import_module(module)
        except Exception as error:  # every missing module at once, not the first
            fatal.append(f"import {module}: {type(error).__name__}: {error}")
    if fatal:
        print("\n".join(f"preflight: {problem}" for problem in fatal), file=sys.stderr)
        return 1
    import bgd_experiments

    warnings: list[str] = []
    print(f"bgd_experiments from {Path(bgd_experiments.__file__).parent}")
    if not _inside(bgd_experiments.__file__, ROOT):
        warnings.append(f"bgd_experiments is not the repository's: {bgd_experiments.__file__}")
    if site is not None:
        for module, _ in CARRIED:
            where = sys.modules[module].__file__
            if not _inside(where, site):
                warnings.append(f"{module} comes from {where}, not from the wheels in {site}")
    if _inside(sys.prefix, ROOT / ".venv"):
        warnings.append(f"{sys.executable} is the project's .venv, not the machine's Python")

    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    found = {
        plugin.__name__: plugin.__module__
        for kind in (Launcher, Sweeper)
        for plugin in Plugins.instance().discover(kind)
    }
    for name, module in PLUGINS.items():
        if not found.get(name, "").startswith(module):
            warnings.append(f"Hydra does not find the plugin {name} ({module})")
    print("Hydra plugins: " + ", ".join(f"{n} ({found.get(n)})" for n in PLUGINS))

    import torch

    print(f"python {platform.python_version()} at {sys.executable}; torch {torch.__version__}")
    if device == "cuda":
        if torch.cuda.is_available():
            print(f"GPU: {torch.cuda.get_device_name()}")
        else:
            fatal.append("no CUDA device here (torch.cuda.is_available() is False)")
    for problem in warnings:
        print(f"preflight: {'' if strict else 'WARNING: '}{problem}", file=sys.stderr)
    for problem in fatal:
        print(f"preflight: {problem}", file=sys.stderr)
    return 1 if fatal or (strict and warnings) else 0


# ------------------------------------------------------------------------ the summary
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source(stamp: Path) -> dict[str, Any]:
    """The commit that ran: from git where .git travelled, else from the bundle's stamp,
    trusted only if every tracked file still has the sum it had when stamped."""
    commit = _git("rev-parse", "HEAD")
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        return {"commit": commit, "dirty": bool(status), "from": "git"}
    try:
        stamped = json.loads((stamp / "source.json").read_text())
        listing = (stamp / "tree.sha256").read_text().splitlines()
    except (OSError, ValueError):
        return {"commit": None, "dirty": None, "from": "unknown (no git, no bundle stamp)"}
    changed = []
    for line in listing:
        digest, _, name = line.partition("  ")
        path = ROOT / name
        if not path.is_file() or _sha256(path) != digest:
            changed.append(name)
    if changed:
        return {
            "commit": stamped["commit"],
            "dirty": True,
            "from": f"bundle stamp; {len(changed)} tracked files differ from it",
            "changed": changed[:20],
        }
    return {"commit": stamped["commit"], "dirty": stamped["dirty"], "from": "bundle stamp"}


def data_record(data: Path) -> dict[str, Any]:
    if not data.is_file():
        return {"name": data.name, "sha256": None, "note": "not a file: generated data"}
    digest = _sha256(data)
    expected = None
    sums = data.parent / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            value, _, name = line.partition("  ")
            if name == data.name:
                expected = value
    return {"name": data.name, "sha256": digest, "expected": expected,
            "match": None if expected is None else digest == expected}  # fmt: skip


def machine() -> dict[str, Any]:
    record: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                record["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            record["gpu"] = properties.name
            record["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
            record["gpu_capability"] = f"{properties.major}.{properties.minor}"
            record["gpu_multiprocessors"] = properties.multi_processor_count
    except Exception as error:  # the summary is still written
        record["gpu_error"] = str(error)
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        if done.returncode == 0:
            record["driver"] = done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return record


def versions() -> dict[str, str | None]:
    record: dict[str, str | None] = {"python": platform.python_version()}
    for _, distribution in IMAGE + CARRIED:
        try:
            record[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            record[distribution] = None
    try:
        import torch

        record["cuda"] = torch.version.cuda
        record["cudnn"] = str(torch.backends.cudnn.version())
    except Exception:  # torch itself failed: the versions above say so
        pass
    return record


def read_steps(path: Path) -> list[dict[str, Any]]:
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, code, seconds, limit = line.split("\t")
        code_value = int(code)
        status = {0: "ok", 124: "timed out", 137: "timed out", -1: "skipped"}.get(
            code_value, "failed"
        )
        steps.append({"name": name, "status": status, "exit": code_value,
                      "seconds": int(seconds), "limit_s": int(limit)})  # fmt: skip
    return steps


def check_out(out: Path, extra: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The out folder's files and what a device call would not bring back of them."""
    files, problems = [], []
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if path.is_dir():
            continue
        if not NAME.match(path.name) or any(not NAME.match(part) for part in relative.parts):
            problems.append(f"{relative}: a name of other than letters, digits, '.', '_', '-'")
        if len(relative.parts) - 1 > MAX_DEPTH:
            problems.append(f"{relative}: more than {MAX_DEPTH} folders deep")
        size = path.stat().st_size
        if size > MAX_BYTES:
            problems.append(f"{relative}: {size} bytes, over {MAX_BYTES}")
        files.append({"path": str(relative), "bytes": size})
    count = len(files) + len(extra - {entry["path"] for entry in files})
    if count > MAX_FILES:
        problems.append(f"{count} files, over {MAX_FILES}")
    return files, problems


def provenance_block(report: dict[str, Any]) -> str:
    src, data, host, vers = (report[k] for k in ("source", "data", "machine", "versions"))
    commit = (src["commit"] or "unknown")[:10] + ("+dirty" if src["dirty"] else "")
    gpu = host.get("gpu", "none")
    if "gpu_memory_gib" in host:
        gpu += f", {host['gpu_memory_gib']} GiB, sm {host['gpu_capability']}"
    shown = ", ".join(f"{k} {v}" for k, v in vers.items() if v)
    steps = "; ".join(f"{s['name']} {s['status']} ({s['seconds']} s)" for s in report["steps"])
    return "\n".join([
        "", MARKER, "",
        f"- commit: {commit} (from {src['from']})",
        f"- data: {data['name']} sha256 {data.get('sha256')}"
        + ("" if data.get("match") in (None, True) else " (NOT the expected archive)"),
        f"- machine: {gpu}; driver {host.get('driver', '-')}; {host.get('cpu', '-')}, "
        f"{host.get('cpu_cores')} cores; {host['platform']}",
        f"- versions: {shown}",
        f"- gpu-check ({report['mode']}, {report['started_utc']}): {steps}",
        "",
    ])  # fmt: skip


def summary(args: argparse.Namespace) -> int:
    out: Path = args.out
    report: dict[str, Any] = {
        "mode": args.mode,
        "device": args.device,
        "started_utc": args.started,
        "seconds": args.seconds,
        "steps": read_steps(args.steps),
        "source": source(args.stamp),
        "data": data_record(args.data),
        "machine": machine(),
        "versions": versions(),
    }
    block = provenance_block(report)
    for table in sorted(out.glob("*.md")):
        text = table.read_text()
        if MARKER not in text:
            table.write_text(text.rstrip("\n") + "\n" + block)
    name = "gpu-check.json"
    files, problems = check_out(out, {name})
    report["files"] = files
    report["out_problems"] = problems
    (out / name).write_text(json.dumps(report, indent=2) + "\n")
    for step in report["steps"]:
        print(f"  {step['name']:14s} {step['status']:9s} {step['seconds']:4d} s"
              f" (limit {step['limit_s']} s)")  # fmt: skip
    print(f"  commit {report['source']['commit']} dirty {report['source']['dirty']}"
          f" ({report['source']['from']})")  # fmt: skip
    for problem in problems:
        print(f"out folder: {problem}", file=sys.stderr)
    return 3 if problems and args.strict else 0


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_requirements(
    dist: metadata.Distribution, extras: frozenset[str]
) -> list[tuple[str, frozenset[str]]]:
    """(name, extras) a distribution needs on this interpreter, with `extras` asked of it."""
    from packaging.requirements import Requirement  # in every image: pip's and torch's

    needed = []
    for line in dist.requires or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in ["", *extras]):
            needed.append((_canonical(requirement.name), frozenset(requirement.extras)))
    return needed


def prune_image(roots: list[str]) -> int:
    """Leave only `roots`, what they need, and pip: the stand-in is made from a full venv."""
    installed = {_canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    keep: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(_canonical(name), frozenset()) for name in [*roots, "pip"]]
    while queue:
        item = queue.pop()
        name, extras = item
        if item in seen or name not in installed:
            continue
        seen.add(item)
        keep.add(name)
        queue.extend(_runtime_requirements(installed[name], extras))
    missing = sorted({_canonical(name) for name in roots} - keep)
    if missing:
        print(f"prune-image: not installed: {', '.join(missing)}", file=sys.stderr)
        return 1
    site = Path(sysconfig_purelib())
    for name, dist in sorted(installed.items()):
        if name in keep:
            continue
        for file in dist.files or []:
            path = Path(dist.locate_file(file)).resolve()
            if path.is_relative_to(site) and (path.is_file() or path.is_symlink()):
                path.unlink()
        info = Path(dist._path)  # type: ignore[attr-defined]  # the .dist-info folder
        if info.is_dir():
            for child in sorted(info.rglob("*"), reverse=True):
                child.rmdir() if child.is_dir() else child.unlink()
            info.rmdir()
    # Folders the deleted files leave empty (packages of the removed distributions).
    for folder in sorted((p for p in site.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    print(f"prune-image: kept {len(keep)} of {len(installed)} distributions")
    return 0


def sysconfig_purelib() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("requirements")
    check = commands.add_parser("preflight")
    check.add_argument("--site", type=Path, default=None, help="where the wheels went")
    check.add_argument("--device", default="cuda")
    check.add_argument("--strict", action="store_true", help="warnings fail too")
    prune = commands.add_parser("prune-image")
    prune.add_argument("names", nargs="+")
    report = commands.add_parser("summary")
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--steps", type=Path, required=True)
    report.add_argument(
        "--stamp", type=Path, default=ROOT / ".whl", help="folder of source.json, tree.sha256"
    )
    report.add_argument("--data", type=Path, required=True)
    report.add_argument("--mode", default="gpu")
    report.add_argument("--device", default="cuda")
    report.add_argument("--started", default=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    report.add_argument("--seconds", type=int, default=0)
    report.add_argument(
        "--strict", action="store_true", help="exit 3 if the out folder breaks a limit"
    )
    args = parser.parse_args(argv)
    if args.command == "requirements":
        return requirements()
    if args.command == "preflight":
        return preflight(args.site, args.device, args.strict)
    if args.command == "prune-image":
        return prune_image(args.names)
    return summary(args)


if __name__ == "__main__":
    raise SystemExit(main())
