"""Small file helpers shared by training, reporting and experiments.

Every write that another process may read (checkpoints, summaries, tables) goes through a
temporary file in the same folder and an atomic rename, so a run killed at any instant
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class WriteError(OSError):
    """A file could not be written (full disk, read-only folder...); the old file is intact."""


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0] or type(error).__name__


def _atomic_replace(path: Path, write: Any, mode: str) -> None:
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp_name, 0o666 & ~_UMASK)
        os.replace(tmp_name, path)
    except BaseException as error:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        # torch.save reports a full disk as a RuntimeError of its stream writer.
        if isinstance(error, OSError | RuntimeError) and not isinstance(error, WriteError):
            raise WriteError(
                f"cannot write {path}: {_first_line(error)} (the previous file, if any, is intact)"
            ) from error
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic_replace(Path(path), lambda handle: handle.write(text), "w")


def atomic_write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(path: str | Path, payload: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_replace(Path(path), lambda handle: torch.save(payload, handle), "wb")


def atomic_save_figure(path: str | Path, figure: Any, dpi: int = 150) -> None:
    """Save a matplotlib ``figure`` to ``path`` atomically, in the format of its suffix.

    PDFs are written without a creation date, so re-rendering an unchanged plot gives the
    same bytes and leaves no spurious change in a committed ``results/`` folder.
    """
    path = Path(path)
    file_format = path.suffix.lstrip(".").lower()
    metadata = {"CreationDate": None} if file_format == "pdf" else None

    def write(handle: Any) -> None:
        figure.savefig(handle, format=file_format, dpi=dpi, metadata=metadata)

    _atomic_replace(path, write, "wb")


def save_figure_files(figure: Any, out_dir: str | Path, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.pdf`` in ``out_dir`` (atomically); the figure is closed
    afterwards, written or not. The paths written."""
    import matplotlib.pyplot as plt

    written = []
    try:
        for suffix in (".png", ".pdf"):
            path = Path(out_dir) / f"{stem}{suffix}"
            atomic_save_figure(path, figure)
            written.append(path)
    finally:
        plt.close(figure)
    return written


def read_json(path: str | Path) -> Any:
    with open(path) as handle:
        return json.load(handle)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts and lists too) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    """One line of strict JSON: a diverged run's NaN loss is written as null, not ``NaN``."""
    return json.dumps(finite_or_none(record), allow_nan=False) + "\n"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a JSON-lines file (a torn last line is ignored)."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                # A line cut short by a kill mid-write: everything before it is valid.
                return
