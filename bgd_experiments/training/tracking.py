"""Where per-epoch metrics go: metrics.jsonl, TensorBoard and the terminal, behind one interface.

The JSON-lines file is the source of truth (the report step reads it); TensorBoard gets the
same numeric scalars; the terminal gets a rich progress display when attached to a TTY and
one plain log line per epoch otherwise (CI logs, SLURM files).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from bgd_experiments.records import EpochRecord
from bgd_experiments.runfolder import RunFolder

log = logging.getLogger("bgd_experiments.training")


class RunTracker:
    """Writes one record per finished epoch and shows progress while an epoch runs."""

    def __init__(
        self,
        run_dir: Path,
        *,
        total_epochs: int,
        steps_per_epoch: int,
        history: list[dict[str, Any]],
        progress: str = "auto",
        tensorboard: bool = True,
        title: str = "",
    ) -> None:
        self.run_dir = run_dir
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.title = title
        # Rewrite the file from the checkpoint's history: a kill between the checkpoint and
        # the append (or mid-append) must not leave a duplicate or torn record behind.
        RunFolder(run_dir).replace_metrics([EpochRecord.from_json(r) for r in history])
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events past the checkpoint that an interrupted run had written.
            self._writer = SummaryWriter(str(run_dir), purge_step=len(history) + 1)
        self._rich = _use_rich(progress)
        self._progress = None
        self._task = None
        self._optim_log_level: int | None = None
        if self._rich:
            # The search's INFO line would break the live display and repeat the note this
            # tracker writes; warnings (a saturated or non-finite search) still show.
            optim_log = logging.getLogger("bgd_experiments.optim")
            self._optim_log_level = optim_log.level
            if optim_log.getEffectiveLevel() < logging.WARNING:
                optim_log.setLevel(logging.WARNING)
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
                console=Console(log_path=False),
            )
            self._progress.start()

    def start_epoch(self, epoch: int) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            description = f"{self.title} epoch {epoch}/{self.total_epochs}"
            self._task = self._progress.add_task(description, total=self.steps_per_epoch, status="")

    def advance(self, steps_done: int, running_loss: float | None = None) -> None:
        if self._progress is not None and self._task is not None:
            status = "" if running_loss is None else f"loss {running_loss:.4f}"
            self._progress.update(self._task, completed=steps_done, status=status)

    def search_progress(self, progress: Any) -> None:
        """A running search's progress (``SearchProgress``): the live line of the epoch in
        the rich display; one line per search in plain mode (when it starts)."""
        text = (
            f"searching lr: batch {progress.batch} of {progress.num_batches}, "
            f"{progress.trials} trials"
        )
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, status=text)
        elif self._progress is None and progress.batch == 1:
            log.info("%s (of the search's first batch; the result follows)", text)

    def note(self, message: str) -> None:
        """A line for the user (search results, switches) that must not break the display."""
        if self._progress is not None:
            self._progress.console.log(message)
        else:
            log.info(message)

    def log_epoch(self, record: dict[str, Any]) -> None:
        RunFolder(self.run_dir).append_metrics(EpochRecord.from_json(record))
        if self._writer is not None:
            step = int(record["epoch"])
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float) and value is not None:
                    self._writer.add_scalar(_tensorboard_tag(key), value, step)
            self._writer.flush()
        self.note(format_epoch_line(record, self.total_epochs))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._optim_log_level is not None:
            logging.getLogger("bgd_experiments.optim").setLevel(self._optim_log_level)
            self._optim_log_level = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _use_rich(progress: str) -> bool:
    if progress not in ("auto", "rich", "plain"):
        raise ValueError(f"progress must be auto, rich or plain, got {progress!r}")
    if progress == "auto":
        return sys.stdout.isatty()
    return progress == "rich"


def _tensorboard_tag(key: str) -> str:
    for prefix in ("train", "test", "val", "search"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1 :]}"
    return f"misc/{key}"


def format_epoch_line(record: dict[str, Any], total_epochs: int) -> str:
    parts = [
        f"epoch {record['epoch']}/{total_epochs}",
        f"lr {record['lr']:.4g}",
        f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.2f}%",
    ]
    if record.get("val_acc") is not None:
        parts.append(f"val acc {record['val_acc']:.2f}%")
    if record.get("test_acc") is not None:  # the clean protocol reads the test set at the end
        parts.append(f"test loss {record['test_loss']:.4f} acc {record['test_acc']:.2f}%")
    if record.get("search_lr") is not None:
        parts.append(
            f"search lr {record['search_lr']:.4g} ({record['search_trials']} trials, "
            f"{record['search_time']:.1f}s, {record['search_status']})"
        )
    parts.append(f"{record['epoch_time']:.1f}s")
    return " | ".join(parts)
