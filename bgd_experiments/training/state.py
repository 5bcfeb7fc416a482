"""What a checkpoint holds: the weights, the optimizer, the random state and where the run is.

A checkpoint is written atomically after every epoch and read with ``weights_only=True``
(:func:`bgd_experiments.runfolder.read_checkpoint`), so it holds only tensors, numbers,
strings and plain containers. Format 2 adds nothing to format 1 but that promise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bgd_experiments.io import atomic_torch_save
from bgd_experiments.records import EpochRecord, RunStatus
from bgd_experiments.runfolder import CHECKPOINT_FORMAT, read_checkpoint


@dataclass
class TrainingState:
    """Where a run is, besides its weights: resumed from the checkpoint, saved into it."""

    epochs_done: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    wall_time_before: float = 0.0  # seconds trained by earlier processes of this run
    # {"status", "epoch"} once the run stopped early or diverged: in the checkpoint, so a
    # resumed run whose summary was lost trains no further.
    stopped: dict[str, Any] | None = None
    # Clean protocol: {"epoch", "acc", "model"} of the best validation epoch so far.
    best_val: dict[str, Any] | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def status(self) -> RunStatus:
        return RunStatus.FINISHED if self.stopped is None else RunStatus(self.stopped["status"])

    def epochs_left(self, epochs: int) -> range:
        return range(self.epochs_done, epochs if self.stopped is None else self.epochs_done)

    def stop(self, status: RunStatus, epoch: int) -> None:
        self.stopped = {"status": status.value, "epoch": epoch}

    def wall_time(self) -> float:
        return self.wall_time_before + time.perf_counter() - self.started


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class Checkpoint:
    """The checkpoint file of one run and what it restores: the model, the optimizer and
    every participant with a ``checkpoint_key`` (a plateau rule, a callback)."""

    path: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    stateful: Sequence[Any]
    device: torch.device

    def resume(self) -> TrainingState | None:
        """The state saved in the file, with everything restored; None without a file."""
        if not self.path.exists():
            return None
        saved = read_checkpoint(self.path, map_location=self.device)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        _restore_rng(saved["rng"], self.device)
        for participant in self.stateful:
            if saved.get(participant.checkpoint_key) is not None:
                participant.load_state_dict(saved[participant.checkpoint_key])
        return TrainingState(
            epochs_done=saved["epoch"],
            history=[EpochRecord.from_json(record) for record in saved["history"]],
            wall_time_before=saved["wall_time"],
            stopped=saved.get("stopped"),
            best_val=saved.get("best_val"),
        )

    def save(self, state: TrainingState, epochs_done: int) -> None:
        atomic_torch_save(
            self.path,
            {
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": _rng_state(self.device),
                "history": [record.to_json() for record in state.history],
                "epoch": epochs_done,
                "wall_time": state.wall_time(),
                "baseline_patience": None,  # the key of older checkpoints
                "stopped": state.stopped,
                "best_val": state.best_val,
                **{p.checkpoint_key: p.state_dict() for p in self.stateful},
            },
        )
