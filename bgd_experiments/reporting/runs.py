"""Discover run folders and read what each one says about itself.

A run folder is any directory holding ``summary.json``, ``metrics.jsonl`` or ``config.yaml``
(their names and meaning: :mod:`bgd_experiments.runfolder`). The identity of a run comes from
``summary.json`` when the run ended, otherwise from ``config.yaml``, never from the folder's
path, so renamed or moved folders still report correctly.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgd_experiments.runfolder import (
    DATA_HASH_SETTING,
    IDENTITY_KEY,
    RUN_FILES,
    RunFolder,
    RunStatus,
    read_identity,
)

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """Everything the report needs from one run folder."""

    path: Path
    task: str  # "train" or "search"
    dataset: str | None
    model: str | None
    optimizer: str | None
    lr: float | None  # constant rate, or the start rate of an MBT search
    batch_size: int | None
    seed: int | None
    status: str  # finished | stopped_early | diverged | incomplete
    best_test_acc: float | None = None
    best_epoch: int | None = None
    final_test_acc: float | None = None
    best_val_acc: float | None = None
    test_acc_at_best_val: float | None = None
    found_lr: float | None = None
    epochs: int | None = None  # configured
    epochs_completed: int = 0
    width: float | None = None
    train_subset: int | None = None
    augment: str | bool | None = None  # augmentation name ("paper", "none") or a flag
    budget: str | None = None
    data_source: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    wall_time: float | None = None
    lr_history: list[float | None] = field(default_factory=list)
    alpha_history: list[float | None] = field(default_factory=list)
    momentum_history: list[bool | None] = field(default_factory=list)
    epoch_numbers: list[int] = field(default_factory=list)
    has_val: bool = False
    # "paper" (test set read every epoch) or "clean" (validation set every epoch, the test set
    # once at the best validation epoch): config.yaml's trainer.protocol, else has_val.
    protocol: str = "paper"
    val_size: int | None = None  # images held out for validation (clean protocol)
    # Per-epoch curves, aligned with epoch_numbers (None where an epoch did not log the field).
    test_acc_history: list[float | None] = field(default_factory=list)
    val_acc_history: list[float | None] = field(default_factory=list)
    epoch_time_history: list[float | None] = field(default_factory=list)  # s, MBT search in
    # Mini-batch passes of each epoch's training (search trials, closure trials included).
    forward_passes_history: list[float | None] = field(default_factory=list)
    backward_passes_history: list[float | None] = field(default_factory=list)
    steps_history: list[float | None] = field(default_factory=list)  # where the run logs it
    # What the folder's cfg- level stands for (config.yaml's identity block): the settings
    # that differ from the reference config, with the data's hash; None for folders written
    # before run folders had one.
    settings: dict[str, Any] | None = None

    @property
    def ended(self) -> bool:
        """True once the run wrote its summary (finished, stopped early or diverged)."""
        return self.status in {status.value for status in RunStatus if status.ended}


def _is_hidden(path: Path, root: Path) -> bool:
    # Hydra keeps its own config.yaml under ".hydra/"; such folders are not runs.
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def find_run_dirs(results_dir: str | Path) -> list[Path]:
    """Every non-hidden folder under ``results_dir`` that holds one of the run files, sorted."""
    root = Path(results_dir)
    found = []
    for current, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        current_path = Path(current)
        if _is_hidden(current_path, root):
            continue
        if any(name in filenames for name in RUN_FILES):
            found.append(current_path)
    return sorted(found)


def _as_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _as_int(value: Any) -> int | None:
    number = _as_float(value)
    return int(number) if number is not None else None


# --------------------------------------------------------------------------- one folder


def _best_from_metrics(metrics: list[dict[str, Any]], key: str) -> tuple[float | None, int | None]:
    best_value: float | None = None
    best_epoch: int | None = None
    for record in metrics:
        value = _as_float(record.get(key))
        if value is not None and (best_value is None or value > best_value):
            best_value, best_epoch = value, _as_int(record.get("epoch"))
    return best_value, best_epoch


def read_run(path: str | Path) -> RunRecord | None:
    """The record of one run folder, or None if the folder does not say what run it is."""
    folder = RunFolder(Path(path))
    summary: dict[str, Any] = {}
    try:
        recorded = folder.read_summary()
        summary = recorded.to_json() if recorded is not None else {}
    except (OSError, ValueError, TypeError):
        summary = {}  # a summary that cannot be read counts as not written
    config = folder.read_config()
    try:
        metrics = [record.to_json() for record in folder.read_metrics()]
    except ValueError as error:
        log.warning("%s: its per-epoch records are ignored (%s)", folder.path, error)
        metrics = []

    identity = read_identity(summary, config)
    if not (identity.get("dataset") and identity.get("model") and identity.get("optimizer")):
        return None

    status = str(summary["status"]) if summary.get("status") else RunStatus.INCOMPLETE.value
    task = str(identity.get("task") or ("search" if "found_lr" in summary else "train"))

    best_test_acc = _as_float(summary.get("best_test_acc"))
    best_epoch = _as_int(summary.get("best_epoch"))
    if not summary:
        # An interrupted run: what it reached so far, marked incomplete by the tables.
        best_test_acc, best_epoch = _best_from_metrics(metrics, "test_acc")
    final_test_acc = _as_float(summary.get("final_test_acc"))
    if final_test_acc is None and metrics:
        final_test_acc = _as_float(metrics[-1].get("test_acc"))

    search = summary.get("search") or {}
    found_lr = _as_float(summary.get("found_lr"))
    if found_lr is None:
        found_lr = _as_float(search.get("lr"))

    has_val = any("val_acc" in record for record in metrics) or "best_val_acc" in summary
    return RunRecord(
        path=folder.path,
        task=task,
        dataset=str(identity["dataset"]).lower(),
        model=str(identity["model"]).lower(),
        optimizer=str(identity["optimizer"]).lower(),
        lr=_as_float(identity.get("lr")),
        batch_size=_as_int(identity.get("batch_size")),
        seed=_as_int(identity.get("seed")),
        status=status,
        best_test_acc=best_test_acc,
        best_epoch=best_epoch,
        final_test_acc=final_test_acc,
        best_val_acc=_as_float(summary.get("best_val_acc")),
        test_acc_at_best_val=_as_float(summary.get("test_acc_at_best_val")),
        found_lr=found_lr,
        epochs=_as_int(identity.get("epochs")),
        epochs_completed=_as_int(summary.get("epochs_completed")) or len(metrics),
        width=_as_float(identity.get("width")),
        train_subset=_as_int(identity.get("train_subset")),
        augment=identity.get("augment"),
        budget=str(identity["budget"]) if identity.get("budget") is not None else None,
        data_source=(
            str(identity["data_source"]) if identity.get("data_source") is not None else None
        ),
        git_commit=summary.get("git_commit"),
        git_dirty=summary.get("git_dirty"),
        wall_time=_as_float(summary.get("wall_time")),
        lr_history=[_as_float(record.get("lr")) for record in metrics],
        alpha_history=[_as_float(record.get("search_alpha")) for record in metrics],
        momentum_history=[record.get("momentum_enabled") for record in metrics],
        epoch_numbers=[
            _as_int(record.get("epoch")) or index + 1 for index, record in enumerate(metrics)
        ],
        has_val=has_val,
        protocol=_protocol(config, has_val),
        val_size=_as_int((config.get("trainer") or {}).get("val_size")),
        test_acc_history=_history(metrics, "test_acc"),
        val_acc_history=_history(metrics, "val_acc"),
        epoch_time_history=_history(metrics, "epoch_time"),
        forward_passes_history=_history(metrics, "forward_passes"),
        backward_passes_history=_history(metrics, "backward_passes"),
        steps_history=_history(metrics, "steps"),
        settings=_recorded_settings(config),
    )


def _history(metrics: list[dict[str, Any]], key: str) -> list[float | None]:
    return [_as_float(record.get(key)) for record in metrics]


def _protocol(config: dict[str, Any], has_val: bool) -> str:
    trainer = config.get("trainer")
    recorded = trainer.get("protocol") if isinstance(trainer, dict) else None
    if recorded in ("paper", "clean"):
        return str(recorded)
    return "clean" if has_val else "paper"


def _recorded_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    block = config.get(IDENTITY_KEY)
    settings = block.get("settings") if isinstance(block, dict) else None
    return dict(settings) if isinstance(settings, dict) else None


def settings_text(run: RunRecord, *, with_data: bool = False) -> str:
    """The run's non-default settings, "key=value, ..." ("-" when it has none, "?" when its
    folder does not record them); the data's hash only if ``with_data``."""
    if run.settings is None:
        return "?"
    shown = [
        f"{key}={value}"
        for key, value in run.settings.items()
        if with_data or key != DATA_HASH_SETTING
    ]
    return ", ".join(shown) if shown else "-"


def scan_runs(results_dir: str | Path) -> list[RunRecord]:
    """Read every run folder under ``results_dir`` (recursively), sorted by path.

    Folders that hold run files but no recognisable identity (no dataset, model or optimizer
    anywhere) are skipped; everything else is returned, interrupted runs included.
    """
    records = []
    for folder in find_run_dirs(results_dir):
        record = read_run(folder)
        if record is not None:
            records.append(record)
    return records
