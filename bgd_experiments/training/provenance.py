"""Where a result came from: git commit, package versions, device."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("bgd-experiments", "torch", "torchvision", "hydra-core", "omegaconf", "numpy")


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding this package (None outside git)."""
    where = path or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    # oneDNN's kernels (and their bugs) depend on the ISA level: record a cap when one is set.
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    cap = f", ONEDNN_MAX_CPU_ISA={isa_cap}" if isa_cap else ""
    return f"cpu:{cpu_model()} ({torch.get_num_threads()} threads{cap})"


def provenance(device: torch.device) -> dict[str, Any]:
    return {**git_state(), "versions": package_versions(), "device": device_description(device)}


# What every committed artefact records (tests check these keys).
ARTEFACT_PROVENANCE_KEYS = (
    "git_commit",
    "git_dirty",
    "versions",
    "cpu_model",
    "cpu_cores",
    "device",
    "data",
)


def artefact_provenance(
    data: Any = "none (synthetic)", device: torch.device | None = None
) -> dict[str, Any]:
    """Provenance of a committed result file: git commit and dirty flag, package versions,
    the machine (CPU model, cores, device) and the data (file name and content hash, or
    ``"none ..."`` for synthetic inputs)."""
    return {
        **provenance(device or torch.device("cpu")),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "data": data,
    }


def made_from(provenance: dict[str, Any]) -> str:
    """``commit abc1234 (clean tree)`` for a summary line: the short commit of an artefact's
    provenance and whether its tree had uncommitted changes."""
    tree = "clean tree" if provenance["git_dirty"] is False else "uncommitted changes"
    return f"commit {str(provenance['git_commit'])[:7]} ({tree})"


def recorded_command(
    script: str, argv: Sequence[str], output_options: Sequence[str] = ("--out",)
) -> str:
    """The command that reproduces an artefact, as the artefact records it: the output-folder
    options are left out and an existing file is named by its file name only, so a committed
    file holds no path of the machine that made it."""
    kept: list[str] = []
    skip_value = False
    for argument in argv:
        if skip_value:
            skip_value = False
        elif argument in output_options:
            skip_value = True
        elif not argument.startswith(tuple(f"{option}=" for option in output_options)):
            is_file = os.sep in argument and Path(argument).is_file()
            kept.append(Path(argument).name if is_file else argument)
    return shlex.join(["python", script, *kept])
