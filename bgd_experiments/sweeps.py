"""What a sweep keeps of its jobs that were refused or failed: ``<results_dir>/failures.jsonl``.

In a sweep, a job that cannot run (a refused value, a run-folder conflict, missing data) or
that fails with an exception does not end the sweep: it appends one line of strict JSON
here (when, where, the job's overrides, why), the sweep goes on, and its exit status says
that something failed. ``bgd-report runs`` lists these lines. A cell whose lock another
process holds is skipped, not failed. Delete the file to forget old failures.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bgd_experiments.io import finite_or_none, iter_jsonl

log = logging.getLogger("bgd_experiments")

FAILURES_FILE = "failures.jsonl"
REFUSED = "refused"  # checked and refused before anything ran
FAILED = "failed"  # raised while running


@dataclass(frozen=True)
class JobFailure:
    """What a sweep's job returns instead of raising, so the sweep can go on and count it."""

    kind: str
    reason: str
    overrides: tuple[str, ...]
    record: str | None  # the failures.jsonl that holds it (None if it could not be written)


def failures_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / FAILURES_FILE


def record_failure(
    results_dir: str | Path, overrides: list[str], kind: str, reason: str
) -> JobFailure:
    """Append the failure to ``<results_dir>/failures.jsonl`` (one write of one line, so
    lines of concurrent jobs do not interleave) and return it."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "kind": kind,
        "overrides": list(overrides),
        "reason": reason,
    }
    path = failures_path(results_dir)
    line = (json.dumps(finite_or_none(entry), allow_nan=False) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        written: str | None = str(path)
    except OSError as error:  # e.g. results_dir is the problem itself
        log.error("could not record the failure in %s: %s", path, error)
        written = None
    return JobFailure(kind, reason, tuple(overrides), written)


def read_failures(results_dir: str | Path) -> list[dict[str, Any]]:
    """The recorded failures, oldest first ([] when none)."""
    path = failures_path(results_dir)
    return list(iter_jsonl(path)) if path.exists() else []


def summary_line(failures: list[JobFailure], jobs: int) -> str:
    """``"3 of 8 jobs failed: see R/failures.jsonl"``."""
    records = sorted({failure.record for failure in failures if failure.record})
    where = f": see {', '.join(records)}" if records else ""
    return f"{len(failures)} of {jobs} jobs failed{where}"
