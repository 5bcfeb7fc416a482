"""The training loop as plain functions: fit -> (search) -> train_one_epoch -> evaluate.

``fit`` owns the run folder's life cycle: it resumes from ``checkpoint.pt`` when there is one,
writes a checkpoint atomically after every epoch, ends a diverging run at once, and writes
``summary.json`` last, so a folder with a summary is always a finished run. The checkpoint
also records a stop (early stop, divergence), so a resumed run never trains past it.
"""

from __future__ import annotations

import inspect
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

from bgd_experiments.distributed import SINGLE, Ranks
from bgd_experiments.hooks import EpochEnd, EpochStart, MiniBatchLoss, call_hooks
from bgd_experiments.optim import PatienceStop
from bgd_experiments.records import EpochRecord, RunStatus, summarize_epochs
from bgd_experiments.runfolder import RunFolder, RunIdentity
from bgd_experiments.training.protocol import CleanProtocol, PaperProtocol
from bgd_experiments.training.provenance import provenance
from bgd_experiments.training.state import Checkpoint, TrainingState
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
    trial_forward_passes: int = 0  # forward passes of an optimizer's closure (a line search)


class _Totals:
    """Sample-weighted loss and correct predictions, summed on the device (no host sync).

    In a distributed run each process counts its shards; :meth:`read` sums over the
    processes, so every process reads the same global numbers (and takes the same
    decisions on them)."""

    def __init__(self, device: torch.device, ranks: Ranks = SINGLE) -> None:
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.samples = 0
        self.ranks = ranks

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss_sum += loss.double() * targets.shape[0]
        self.correct += (logits.argmax(dim=1) == targets).sum()
        self.samples += targets.shape[0]

    def mean_loss(self) -> float:
        """This process's running mean loss (one host read; single-process runs only)."""
        return self.loss_sum.item() / self.samples

    def read(self) -> tuple[float, float, int]:
        """(mean loss, accuracy in percent, samples) over all processes, with one host
        synchronisation (and, distributed, one collective)."""
        if not self.ranks.active:
            samples = self.samples
            loss_sum, correct = torch.stack([self.loss_sum, self.correct.double()]).tolist()
        else:
            # float64 holds the counts exactly; one collective for all three.
            packed = torch.stack(
                [self.loss_sum, self.correct.double(), self.loss_sum.new_tensor(self.samples)]
            )
            loss_sum, correct, samples_sum = self.ranks.sum_(packed).tolist()
            samples = int(samples_sum)
        if samples == 0:
            return math.nan, math.nan, 0
        return loss_sum / samples, 100.0 * correct / samples, samples


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    check_every: int | None = 1,
    on_step: Callable[[int, float | None], None] | None = None,
    ranks: Ranks = SINGLE,
) -> EpochStats:
    """One pass of SGD-style training; stops at the first non-finite loss it sees.

    Loss and accuracy are accumulated on the device and read back every ``check_every``
    steps, which bounds both the host synchronisations and how late divergence is noticed.
    ``check_every=None`` (the GPU path) reads them once, at the end of the epoch: no host
    synchronisation per step, and a diverged epoch is noticed when it ends (``on_step``
    then gets the step count without a loss).
    With several ``ranks`` (``model`` wrapped in DistributedDataParallel, ``batches`` the
    shards) the numbers read are those of the global batches, the same on every rank.
    """
    model.train()
    totals = _Totals(next(model.parameters()).device, ranks)
    steps = trials = 0
    # SLS-style optimizers re-evaluate the mini-batch loss at trial points: they get a
    # closure, and its forward passes are counted (Table 2+ compares costs).
    wants_closure = getattr(optimizer, "wants_closure", False)
    for steps, (inputs, targets, last) in enumerate(_flag_last(batches, ranks.active), start=1):
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = loss_fn(logits, targets)
        if last:
            # DDP averages the ranks' gradients with equal weights; only an epoch's last,
            # partial batch can have unequal shards, so weigh it here to make it the mean
            # over its images, as in one process (a factor of exactly 1 when even).
            global_size = ranks.sum_(torch.tensor(len(targets), device=targets.device))
            (loss * (len(targets) * ranks.world_size / float(global_size))).backward()
        else:
            loss.backward()
        if wants_closure:
            closure = MiniBatchLoss(
                model, loss_fn, inputs, targets, loss.detach(), reducer=ranks.reducer()
            )
            optimizer.step(closure)
            trials += closure.forward_passes
        else:
            optimizer.step()
        totals.add(loss.detach(), logits.detach(), targets)
        if check_every is None:
            if on_step is not None:
                on_step(steps, None)
        elif steps % check_every == 0:
            # A NaN/inf loss poisons the running sum, so one read covers every step since.
            # Distributed: the global running loss, so every rank stops at the same step.
            running = totals.read()[0] if ranks.active else totals.mean_loss()
            if not math.isfinite(running):
                return EpochStats(running, totals.read()[1], steps, True, trials)
            if on_step is not None:
                on_step(steps, running)
    mean_loss, accuracy, samples = totals.read()
    if samples == 0:
        raise ValueError("the training data yielded no batch")
    return EpochStats(mean_loss, accuracy, steps, not math.isfinite(mean_loss), trials)


def _flag_last(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], look_ahead: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
    """(inputs, targets, whether it is the last batch); without ``look_ahead`` never
    flagged (one process needs no flag, and reading one batch ahead costs nothing)."""
    iterator = iter(batches)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None) if look_ahead else None
        inputs, targets = current
        yield inputs, targets, look_ahead and following is None
        current = following if look_ahead else next(iterator, None)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loss_fn: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    ranks: Ranks = SINGLE,
) -> tuple[float, float, int]:
    """Mean loss, accuracy (percent) and number of forward passes over ``batches``
    (in inference mode; metrics read once, at the end; with several ``ranks``: over the
    union of every rank's shards)."""
    was_training = model.training
    model.eval()
    totals = _Totals(next(model.parameters()).device, ranks)
    forwards = 0
    for inputs, targets in batches:
        logits = model(inputs)
        totals.add(loss_fn(logits, targets), logits, targets)
        forwards += 1
    model.train(was_training)
    mean_loss, accuracy, _ = totals.read()
    return mean_loss, accuracy, forwards


def search_batches(loader: Batches, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches for a restore-mode search, independent of the epoch's own order.

    Streams 1, 2, ... of the loader are fresh shuffles; cycling through them lets a search of
    k batches run on a training subset smaller than k batches.
    """
    return itertools.chain.from_iterable(
        loader.epoch(epoch, stream) for stream in itertools.count(1)
    )


@dataclass
class _Run:
    """What every epoch of one ``fit`` call uses."""

    model: nn.Module
    train_model: nn.Module  # ``model``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    train_loader: Batches
    protocol: PaperProtocol | CleanProtocol
    participants: list[Any]
    tracker: RunTracker | _SilentTracker
    ranks: Ranks
    # On an accelerator no step waits for the host: loss and accuracy are read once per
    # epoch, so a diverged epoch runs to its end there (on CPU a read costs nothing).
    check_every: int | None


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
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """Train for ``epochs`` epochs (resuming from ``run_dir``) and return the summary.

    The optimizer and ``callbacks`` take part through the optional hooks of
    :mod:`bgd_experiments.hooks`; e.g. :class:`~bgd_experiments.optim.MBTSGD` searches its
    rate before an epoch and its plateau rule may stop the run. Without ``val_loader`` the
    paper's protocol, with it the clean one (:mod:`bgd_experiments.training.protocol`: the
    test set is then sealed until one read on the best validation epoch's weights).
    A baseline without a stop rule of its own stops early as the authors' ``op_main.py``
    stops it when ``baseline_stop_patience`` is set (None or 0: never; the rule MBTSGD
    applies with its ``stop_patience``).

    Distributed (``ranks`` of a ``torchrun`` launch, the loaders sharded): every rank
    resumes from the checkpoint and trains through DistributedDataParallel; an MBT search
    averages its losses and gradient over the ranks; metrics are those of the global
    batches; BatchNorm buffers are rank 0's (broadcast after every epoch's training), so
    every rank holds the same weights and records, and rank 0 alone writes the run folder.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    participants = _participants(optimizer, callbacks, baseline_stop_patience)
    if ranks.active and hasattr(optimizer, "reducer"):
        optimizer.reducer = ranks.reducer()  # an MBT search decides on global batches
    device = next(model.parameters()).device
    stateful = [p for p in participants if hasattr(p, "checkpoint_key")]
    checkpoint = Checkpoint(RunFolder(run_dir).checkpoint_file, model, optimizer, stateful, device)
    state = checkpoint.resume() or TrainingState()
    _log_resume(run_dir, state)
    run = _Run(
        model=model,
        train_model=_wrap_for_training(model, ranks),
        optimizer=optimizer,
        loss_fn=loss_fn or nn.CrossEntropyLoss(),
        train_loader=train_loader,
        protocol=PaperProtocol(test_loader)
        if val_loader is None
        else CleanProtocol(val_loader, test_loader),
        participants=participants,
        tracker=_tracker(
            run_dir, identity, epochs, len(train_loader), state, progress, tensorboard, ranks
        ),
        ranks=ranks,
        check_every=1 if device.type == "cpu" else None,
    )
    save = checkpoint.save if ranks.is_main else lambda *_: None  # rank 0 writes the folder
    test_at_best_val = None
    try:
        for epoch in state.epochs_left(epochs):
            record = _train_epoch(run, state, epoch)
            if record is None:  # diverged: the weights are those of the diverged epoch
                state.stop(RunStatus.DIVERGED, epoch + 1)
                save(state, epoch)
                break
            stop_early = any(call_hooks(participants, "should_stop"))
            state.history.append(record)
            if stop_early:
                state.stop(RunStatus.STOPPED_EARLY, epoch + 1)
            save(state, epoch + 1)
            run.tracker.log_epoch(record.to_json())
            if stop_early:
                run.tracker.note(f"epoch {epoch + 1}: patience exhausted, stopping early")
                break
        test_at_best_val = run.protocol.final_read(model, run.loss_fn, state, ranks)
        if test_at_best_val is not None:
            run.tracker.note(
                f"test accuracy at the best validation epoch ({state.best_val['epoch']}, val "
                f"acc {state.best_val['acc']:.2f}%): {test_at_best_val[1]:.2f}% (the one test "
                "read)"
            )
    finally:
        run.tracker.close()
    return _finish(run_dir, identity, state, epochs, test_at_best_val, device, ranks)


def _participants(
    optimizer: torch.optim.Optimizer, callbacks: Sequence[Any], patience: int | None
) -> list[Any]:
    """The optimizer, the callbacks, and the baselines' early stop where none has a rule."""
    limit = patience or 0
    if limit < 0:
        raise ValueError(f"baseline_stop_patience must be >= 0, got {patience}")
    participants: list[Any] = [optimizer, *callbacks]
    if limit and not any(hasattr(p, "should_stop") for p in participants):
        participants.append(PatienceStop(limit))  # e.g. MBT has its own
    return participants


def _log_resume(run_dir: Path, state: TrainingState) -> None:
    if state.stopped is not None:
        log.info(
            "%s %s at epoch %d (its checkpoint says): nothing left to train",
            run_dir,
            state.stopped["status"],
            state.stopped["epoch"],
        )
    elif state.epochs_done:
        log.info("resuming %s from epoch %d", run_dir, state.epochs_done)


def _tracker(
    run_dir: Path,
    identity: RunIdentity,
    epochs: int,
    steps_per_epoch: int,
    state: TrainingState,
    progress: str,
    tensorboard: bool,
    ranks: Ranks,
) -> RunTracker | _SilentTracker:
    if not ranks.is_main:
        return _SilentTracker()
    return RunTracker(
        run_dir,
        total_epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        history=[record.to_json() for record in state.history],
        progress=progress,
        tensorboard=tensorboard,
        title=f"{identity.model}/{identity.optimizer} lr={identity.lr:g}",
    )


def _train_epoch(run: _Run, state: TrainingState, epoch: int) -> EpochRecord | None:
    """One epoch: the hooks before it, training, evaluation, the hooks after it; its record,
    or None if the training loss became non-finite (the run diverged)."""
    tracker, participants = run.tracker, run.participants
    tracker.start_epoch(epoch + 1)
    epoch_started = time.perf_counter()
    batches = run.train_loader.epoch(epoch)
    start = EpochStart(
        epoch=epoch,
        model=run.model,
        loss_fn=run.loss_fn,
        batches=batches,
        fresh_batches=lambda: search_batches(run.train_loader, epoch),
        num_samples=run.train_loader.num_samples,
        progress=tracker.search_progress,
    )
    reports = [report for report in call_hooks(participants, "before_epoch", start) if report]
    for report in reports:
        if report.note:
            tracker.note(report.note)
    call_hooks(participants, "train")
    stats = train_one_epoch(
        run.train_model,
        run.optimizer,
        run.loss_fn,
        batches,
        check_every=run.check_every,
        on_step=tracker.advance,
        ranks=run.ranks,
    )
    run.ranks.sync_buffers(run.model)
    if stats.diverged:
        tracker.note(
            f"epoch {epoch + 1}: training loss became {stats.loss} after "
            f"{stats.steps} steps; the run diverged and stops here"
        )
        return None
    call_hooks(participants, "eval")
    reports += filter(
        None, call_hooks(participants, "before_evaluation", run.model, start.fresh_batches())
    )
    evaluated, plateau_acc, eval_forwards = run.protocol.evaluate(
        run.model, run.loss_fn, run.ranks, state, epoch + 1
    )
    record = EpochRecord(epoch=epoch + 1, train_loss=stats.loss, train_acc=stats.accuracy)
    for key, value in evaluated.items():
        record.set(key, value)
    record.lr = run.optimizer.param_groups[0]["lr"]
    record.epoch_time = time.perf_counter() - epoch_started
    record.forward_passes = (
        stats.steps + stats.trial_forward_passes + sum(r.forward_passes for r in reports)
    )
    record.backward_passes = stats.steps + sum(r.backward_passes for r in reports)
    record.eval_forward_passes = eval_forwards
    for report in reports:
        for key, value in report.record.items():
            record.set(key, value)
    end = EpochEnd(
        epoch=epoch, train_loss=stats.loss, plateau_acc=plateau_acc, record=record.to_json()
    )
    call_hooks(participants, "after_epoch", end)
    return record


def _finish(
    run_dir: Path,
    identity: RunIdentity,
    state: TrainingState,
    epochs: int,
    test_at_best_val: tuple[float, float] | None,
    device: torch.device,
    ranks: Ranks,
) -> dict[str, Any]:
    """The run's summary with its provenance, written last: its presence marks the run as
    ended. The checkpoint stays as the final weights (a later, longer run extends it)."""
    summary = summarize_epochs(
        state.history,
        status=state.status,
        run=asdict(identity),
        test_at_best_val=test_at_best_val,
    )
    summary.epochs_requested = epochs
    summary.wall_time = state.wall_time()
    for key, value in provenance(device).items():
        summary.set(key, value)
    if ranks.active:
        summary.distributed = {"world_size": ranks.world_size, "backend": ranks.backend}
    if ranks.is_main:
        RunFolder(run_dir).write_summary(summary)
    ranks.barrier()  # no rank returns before the run folder is complete
    return summary.to_json()


def weights_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights and buffers, copied where they are (no host transfer)."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _wrap_for_training(model: nn.Module, ranks: Ranks) -> nn.Module:
    """The module the training steps call: DistributedDataParallel on several ranks (it
    averages the gradients during backward). Searches and evaluations call ``model``
    itself, whose parameters are the same tensors."""
    if not ranks.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    # BatchNorm buffers are synchronised once per epoch (Ranks.sync_buffers), not before
    # every forward: the result is the same, rank 0's statistics. Newer torch names the
    # switch forward_sync_buffers (and deprecates broadcast_buffers).
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    no_forward_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, **no_forward_sync
    )


class _SilentTracker:
    """The tracker of ranks > 0: rank 0 alone writes metrics and shows progress."""

    def start_epoch(self, epoch: int) -> None: ...
    def advance(self, steps_done: int, running_loss: float | None = None) -> None: ...
    def search_progress(self, progress: Any) -> None: ...
    def note(self, message: str) -> None: ...
    def log_epoch(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def summarize(
    history: list[dict[str, Any]],
    *,
    status: RunStatus | str,
    identity: RunIdentity,
    test_at_best_val: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """:func:`bgd_experiments.records.summarize_epochs` of plain per-epoch records."""
    return summarize_epochs(
        [EpochRecord.from_json(record) for record in history],
        status=status,
        run=asdict(identity),
        test_at_best_val=test_at_best_val,
    ).to_json()
