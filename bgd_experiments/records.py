"""The typed records a run folder holds: ``summary.json`` and each line of ``metrics.jsonl``.

Both are written and read back exactly: ``RunSummary.from_json(s.to_json()) == s`` and
``RunSummary.from_json(d).to_json() == d`` for every summary this package has written, old
ones included. A field that a run has no value for is left out of the file (``ABSENT``),
which is not the same as a recorded ``None`` (e.g. no best test accuracy under the clean
protocol); keys the package does not know (written by a newer version) are kept in
``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from bgd_experiments.io import atomic_write_json, read_json


class RunStatus(StrEnum):
    """Where a run folder stands. The first three are written into summary.json when the
    run ends; the last two describe folders without a summary."""

    FINISHED = "finished"
    STOPPED_EARLY = "stopped_early"
    DIVERGED = "diverged"
    INCOMPLETE = "incomplete"  # a checkpoint and no summary: interrupted, or still running
    NEW = "new"  # nothing trained yet

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = frozenset({RunStatus.FINISHED, RunStatus.STOPPED_EARLY, RunStatus.DIVERGED})


class _Absent:
    """A field with no value in the file (left out on writing), unlike a recorded None."""

    _instance: ClassVar[_Absent | None] = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()
Record = TypeVar("Record", bound="_JsonRecord")


class _JsonRecord:
    """Exact JSON round trip of a dataclass: absent fields left out, unknown keys kept."""

    extra: dict[str, Any]

    @classmethod
    def from_json(cls: type[Record], data: dict[str, Any]) -> Record:
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}  # type: ignore[arg-type]
        known = {key: value for key, value in data.items() if key in names}
        extra = {key: value for key, value in data.items() if key not in names}
        return cls(**known, extra=extra)  # type: ignore[call-arg]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if item.name != "extra" and value is not ABSENT:
                data[item.name] = value.value if isinstance(value, RunStatus) else value
        data.update(self.extra)
        return data

    def set(self, name: str, value: Any) -> None:
        """Set a field, or an extra key where the record has no such field."""
        if name != "extra" and name in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]
            setattr(self, name, value)
        else:
            self.extra[name] = value

    def get(self, name: str, default: Any = None) -> Any:
        """A field's value, or ``default`` where the record has none."""
        value = getattr(self, name, ABSENT)
        if value is ABSENT:
            value = self.extra.get(name, ABSENT)
        return default if value is ABSENT else value


@dataclass
class EpochRecord(_JsonRecord):
    """One line of ``metrics.jsonl``: an epoch's training, evaluation, rate and costs.

    The paper protocol evaluates the test set every epoch (``test_*``), the clean protocol
    the validation split (``val_*``). Optimizers and callbacks add fields of their own (an
    MBT search's ``found_lr``, a schedule's ``alpha``), kept in ``extra``.
    """

    epoch: int
    train_loss: float
    train_acc: float = ABSENT
    test_loss: float | None = ABSENT
    test_acc: float | None = ABSENT
    val_loss: float | None = ABSENT
    val_acc: float | None = ABSENT
    lr: float = ABSENT
    epoch_time: float = ABSENT  # seconds, a search before the epoch included
    forward_passes: int = ABSENT  # mini-batch forward passes: steps, search and closure trials
    backward_passes: int = ABSENT
    eval_forward_passes: int = ABSENT
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary(_JsonRecord):
    """``summary.json``: written last, so a folder with one holds an ended run.

    A training run reports its protocol, best and final test accuracies (paper protocol) or
    the test accuracy at the best validation epoch (clean protocol), the epochs done; a
    search run (Table 1) the rate found and the search's record. Both carry the identity
    (``run``), the wall time and their provenance (commit, versions, device).
    """

    status: RunStatus
    run: dict[str, Any]
    protocol: str = ABSENT  # "paper" or "clean" (training runs)
    best_test_acc: float | None = ABSENT
    best_epoch: int | None = ABSENT
    final_test_acc: float | None = ABSENT
    final_train_loss: float = ABSENT
    best_val_acc: float | None = ABSENT
    best_val_epoch: int | None = ABSENT
    test_acc_at_best_val: float | None = ABSENT
    test_loss_at_best_val: float | None = ABSENT
    epochs_completed: int = ABSENT
    epochs_requested: int = ABSENT
    found_lr: float = ABSENT  # search runs
    search: dict[str, Any] = ABSENT  # search runs: the search's own record
    wall_time: float = ABSENT
    git_commit: str | None = ABSENT
    git_dirty: bool | None = ABSENT
    versions: dict[str, str | None] = ABSENT
    device: str = ABSENT
    distributed: dict[str, Any] = ABSENT  # world size and backend of a torchrun launch
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)
        if not self.status.ended:
            raise ValueError(f"a summary records an ended run, not {self.status.value!r}")

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        """The summary in ``path`` (a bounded read; a malformed file raises ValueError)."""
        return cls.from_json(read_json(path))

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())


def summarize_epochs(
    history: list[EpochRecord],
    *,
    status: RunStatus | str,
    run: dict[str, Any],
    test_at_best_val: tuple[float, float] | None = None,
) -> RunSummary:
    """The summary fields the report step reads, computed from the per-epoch records.

    Paper protocol: the best and the final test accuracy over the epochs. Clean protocol
    (records with ``val_acc``): the best validation epoch and ``test_at_best_val``, the
    (loss, accuracy) of the one test read on its weights; records of older clean runs,
    which hold a test accuracy per epoch, give it from the best validation epoch's record.
    """
    summary = RunSummary(status=RunStatus(status), run=run)
    validated = [record for record in history if record.get("val_acc") is not None]
    summary.protocol = "clean" if validated or test_at_best_val is not None else "paper"
    tested = [record for record in history if record.get("test_acc") is not None]
    best = max(tested, key=lambda record: record.test_acc) if tested else None
    summary.best_test_acc = best.test_acc if best else None
    summary.best_epoch = best.epoch if best else None
    summary.final_test_acc = history[-1].get("test_acc") if tested else None
    if history:
        summary.final_train_loss = history[-1].train_loss
    if validated:
        best_val = max(validated, key=lambda record: record.val_acc)
        test_loss, test_acc = test_at_best_val or (
            best_val.get("test_loss"),
            best_val.get("test_acc"),
        )
        summary.best_val_acc = best_val.val_acc
        summary.best_val_epoch = best_val.epoch
        summary.test_acc_at_best_val = test_acc
        summary.test_loss_at_best_val = test_loss
    summary.epochs_completed = len(history)
    return summary
