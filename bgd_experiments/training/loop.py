"""The training loop as plain functions: fit -> (search) -> train_one_epoch -> evaluate.

``fit`` owns the run folder's life cycle: it resumes from ``checkpoint.pt`` when there is one,
writes a checkpoint atomically after every epoch, ends a diverging run at once, and writes
``summary.json`` last, so a folder with a summary is always a finished run. The checkpoint
also records a stop (early stop, divergence), so a resumed run never trains past it.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bgd_experiments.hooks import EpochEnd, EpochReport, EpochStart, call_hooks
from bgd_experiments.io import atomic_torch_save, atomic_write_json
from bgd_experiments.optim import PatienceStop
from bgd_experiments.runfolder import CHECKPOINT_FILE, SUMMARY_FILE, RunIdentity, RunStatus
from bgd_experiments.training.provenance import provenance
from bgd_experiments.training.tracking import RunTracker

log = logging.getLogger("bgd_experiments.training")


class Batches(Iterable[tuple[torch.Tensor, torch.Tensor]]):
    """What fit needs from a data loader (``bgd_experiments.data.DeviceLoader`` has it)."""

    num_samples: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, stream: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    steps: int
    diverged: bool


class _Totals:
    """Sample-weighted loss and correct predictions, summed on the device (no host sync)."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.samples = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss_sum += loss.double() * targets.shape[0]
        self.correct += (logits.argmax(dim=1) == targets).sum()
        self.samples += targets.shape[0]

    def mean_loss(self) -> float:
        return self.loss_sum.item() / self.samples

    def accuracy(self) -> float:
        return 100.0 * self.correct.item() / self.samples


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    check_every: int = 1,
    on_step: Callable[[int, float], None] | None = None,
) -> EpochStats:
    """One pass of SGD-style training; stops at the first non-finite loss it sees.

    Loss and accuracy are accumulated on the device and read back every ``check_every``
    steps, which bounds both the host synchronisations and how late divergence is noticed.
    """
    model.train()
    totals = _Totals(next(model.parameters()).device)
    steps = 0
    for steps, (inputs, targets) in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = loss_fn(logits, targets)
        loss.backward()
        optimizer.step()
        totals.add(loss.detach(), logits.detach(), targets)
        if steps % check_every == 0:
            # A NaN/inf loss poisons the running sum, so one read covers every step since.
            running = totals.mean_loss()
            if not math.isfinite(running):
                return EpochStats(running, totals.accuracy(), steps, True)
            if on_step is not None:
                on_step(steps, running)
    if totals.samples == 0:
        raise ValueError("the training data yielded no batch")
    mean_loss = totals.mean_loss()
    return EpochStats(mean_loss, totals.accuracy(), steps, not math.isfinite(mean_loss))


@torch.no_grad()
def evaluate(
    model: nn.Module, loss_fn: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[float, float, int]:
    """Mean loss, accuracy (percent) and number of forward passes over ``batches``."""
    was_training = model.training
    model.eval()
    totals = _Totals(next(model.parameters()).device)
    forwards = 0
    for inputs, targets in batches:
        logits = model(inputs)
        totals.add(loss_fn(logits, targets), logits, targets)
        forwards += 1
    model.train(was_training)
    return totals.mean_loss(), totals.accuracy(), forwards


def search_batches(loader: Batches, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches for a restore-mode search, independent of the epoch's own order.

    Streams 1, 2, ... of the loader are fresh shuffles; cycling through them lets a search of
    k batches run on a training subset smaller than k batches.
    """
    return itertools.chain.from_iterable(
        loader.epoch(epoch, stream) for stream in itertools.count(1)
    )


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Batches,
    test_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int,
    run_dir: Path,
    identity: RunIdentity,
    val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    loss_fn: nn.Module | None = None,
    progress: str = "auto",
    tensorboard: bool = True,
    baseline_stop_patience: int | None = 50,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train for ``epochs`` epochs (resuming from ``run_dir``) and return the summary.

    The optimizer and ``callbacks`` take part through the optional hooks of
    :mod:`bgd_experiments.hooks` (before an epoch, train/eval, after an epoch, should it
    stop); e.g. :class:`~bgd_experiments.optim.MBTSGD` searches its rate before an epoch and
    its plateau rule may stop the run. Plateau rules see the validation accuracy when a
    validation set is given (the clean protocol), else the test accuracy (the paper's).

    An optimizer without a stop rule of its own (a baseline) stops early as the authors'
    ``op_main.py`` stops it when ``baseline_stop_patience`` is set (None or 0: never): one
    epoch after min(epochs since the training loss improved, epochs since the plateau
    accuracy improved) reaches it, the rule MBTSGD applies with its ``stop_patience``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    baseline_limit = baseline_stop_patience or 0
    if baseline_limit < 0:
        raise ValueError(f"baseline_stop_patience must be >= 0, got {baseline_stop_patience}")
    participants: list[Any] = [optimizer, *callbacks]
    if baseline_limit and not any(hasattr(p, "should_stop") for p in participants):
        participants.append(PatienceStop(baseline_limit))  # e.g. MBT has its own
    stateful = [p for p in participants if hasattr(p, "checkpoint_key")]
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = next(model.parameters()).device
    history: list[dict[str, Any]] = []
    start_epoch = 0
    elapsed_before = 0.0
    # {"status": ..., "epoch": ...} once the run stopped early or diverged: recorded in the
    # checkpoint, so that a resumed run whose summary was lost trains no further.
    stopped: dict[str, Any] | None = None
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        _restore_rng(checkpoint["rng"], device)
        history = checkpoint["history"]
        start_epoch = checkpoint["epoch"]
        for participant in stateful:
            if checkpoint.get(participant.checkpoint_key) is not None:
                participant.load_state_dict(checkpoint[participant.checkpoint_key])
        elapsed_before = checkpoint["wall_time"]
        stopped = checkpoint.get("stopped")
        if stopped is not None:
            log.info(
                "%s %s at epoch %d (its checkpoint says): nothing left to train",
                run_dir,
                stopped["status"],
                stopped["epoch"],
            )
        else:
            log.info("resuming %s from epoch %d", run_dir, start_epoch)

    tracker = RunTracker(
        run_dir,
        total_epochs=epochs,
        steps_per_epoch=len(train_loader),
        history=history,
        progress=progress,
        tensorboard=tensorboard,
        title=f"{identity.model}/{identity.optimizer} lr={identity.lr:g}",
    )
    check_every = 1 if device.type == "cpu" else 10
    started = time.perf_counter()
    status = RunStatus.FINISHED if stopped is None else RunStatus(stopped["status"])

    def save_checkpoint(epochs_done: int) -> None:
        atomic_torch_save(
            checkpoint_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": _rng_state(device),
                "history": history,
                "epoch": epochs_done,
                "wall_time": elapsed_before + time.perf_counter() - started,
                "baseline_patience": None,  # the key of older checkpoints
                "stopped": stopped,
                **{p.checkpoint_key: p.state_dict() for p in stateful},
            },
        )

    try:
        for epoch in range(start_epoch, epochs if stopped is None else start_epoch):
            tracker.start_epoch(epoch + 1)
            epoch_started = time.perf_counter()
            batches = train_loader.epoch(epoch)
            start = EpochStart(
                epoch=epoch,
                model=model,
                loss_fn=loss_fn,
                batches=batches,
                fresh_batches=lambda epoch=epoch: search_batches(train_loader, epoch),
                num_samples=train_loader.num_samples,
                progress=tracker.search_progress,
            )
            reports: list[EpochReport] = [
                report for report in call_hooks(participants, "before_epoch", start) if report
            ]
            for report in reports:
                if report.note:
                    tracker.note(report.note)
            call_hooks(participants, "train")
            stats = train_one_epoch(
                model,
                optimizer,
                loss_fn,
                batches,
                check_every=check_every,
                on_step=tracker.advance,
            )
            if stats.diverged:
                status = RunStatus.DIVERGED
                # The weights are the diverged ones; nothing trains from them again.
                stopped = {"status": status.value, "epoch": epoch + 1}
                save_checkpoint(epoch)
                tracker.note(
                    f"epoch {epoch + 1}: training loss became {stats.loss} after "
                    f"{stats.steps} steps; the run diverged and stops here"
                )
                break
            call_hooks(participants, "eval")
            test_loss, test_acc, test_forwards = evaluate(model, loss_fn, test_loader)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": stats.loss,
                "train_acc": stats.accuracy,
                "test_loss": test_loss,
                "test_acc": test_acc,
            }
            plateau_acc = test_acc
            if val_loader is not None:
                val_loss, val_acc, _ = evaluate(model, loss_fn, val_loader)
                record.update(val_loss=val_loss, val_acc=val_acc)
                plateau_acc = val_acc
            record.update(
                lr=optimizer.param_groups[0]["lr"],
                epoch_time=time.perf_counter() - epoch_started,
                forward_passes=stats.steps + sum(report.forward_passes for report in reports),
                backward_passes=stats.steps + sum(report.backward_passes for report in reports),
                eval_forward_passes=test_forwards,
            )
            for report in reports:
                record.update(report.record)
            end = EpochEnd(
                epoch=epoch, train_loss=stats.loss, plateau_acc=plateau_acc, record=record
            )
            call_hooks(participants, "after_epoch", end)
            stop_early = any(call_hooks(participants, "should_stop"))
            history.append(record)
            if stop_early:
                stopped = {"status": RunStatus.STOPPED_EARLY.value, "epoch": epoch + 1}
            save_checkpoint(epoch + 1)
            tracker.log_epoch(record)
            if stop_early:
                status = RunStatus.STOPPED_EARLY
                tracker.note(f"epoch {epoch + 1}: patience exhausted, stopping early")
                break
    finally:
        tracker.close()

    summary = summarize(history, status=status, identity=identity)
    summary["epochs_requested"] = epochs
    summary["wall_time"] = elapsed_before + time.perf_counter() - started
    summary.update(provenance(device))
    # Written last: its presence is what marks the run as finished. The checkpoint stays as
    # the final weights (and lets a later, longer run extend this one).
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return summary


def summarize(
    history: list[dict[str, Any]], *, status: RunStatus | str, identity: RunIdentity
) -> dict[str, Any]:
    """The summary fields the report step reads, computed from the per-epoch records."""
    summary: dict[str, Any] = {"status": RunStatus(status).value, "run": asdict(identity)}
    if history:
        best = max(history, key=lambda record: record["test_acc"])
        summary.update(
            best_test_acc=best["test_acc"],
            best_epoch=best["epoch"],
            final_test_acc=history[-1]["test_acc"],
            final_train_loss=history[-1]["train_loss"],
        )
        if "val_acc" in history[-1]:
            best_val = max(history, key=lambda record: record["val_acc"])
            summary.update(
                best_val_acc=best_val["val_acc"], test_acc_at_best_val=best_val["test_acc"]
            )
    else:
        summary.update(best_test_acc=None, best_epoch=None, final_test_acc=None)
    summary["epochs_completed"] = len(history)
    return summary
