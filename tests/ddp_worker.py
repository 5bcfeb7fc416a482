"""One rank of a small distributed training run, for tests/test_distributed.py.

Run under ``torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT RUNS``: every
rank trains the same tiny problem through ``fit`` (gloo on the CPU) with MBT-NAG (stopped
after one epoch and resumed), with NAG and with SLS (whose per-step Armijo decisions must
agree), and saves what it ended with to ``OUT/rank<r>.pt``. The test imports :func:`train`
too, to make the single-process run on the same global batches.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bgd_experiments import distributed
from bgd_experiments.data import DeviceLoader, EvalBatches
from bgd_experiments.distributed import SINGLE, Ranks
from bgd_experiments.linesearch.sls import SLS
from bgd_experiments.optim import MBTSGD
from bgd_experiments.runfolder import RunIdentity
from bgd_experiments.training import fit

SAMPLES = 91  # the last batch, 27 images, splits 14 + 13
GLOBAL_BATCH = 32
EPOCHS = 2


def tiny_problem(
    ranks: Ranks, batch_norm: bool = False
) -> tuple[nn.Module, DeviceLoader, DeviceLoader]:
    """No BatchNorm unless asked: torch's SyncBatchNorm has no CPU kernel, and without it
    each rank normalises its own shard, which a single process cannot reproduce."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(SAMPLES) % 4
    images = torch.randint(0, 256, (SAMPLES, 3, 32, 32), dtype=torch.uint8, generator=generator)
    images[:, 0] = (labels * 60).to(torch.uint8)[:, None, None]  # a learnable signal
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(4) if batch_norm else nn.Identity()
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2),
        norm,
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),  # few features: a calm problem, far from diverging
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 4),
    )
    shard = (ranks.rank, ranks.world_size)
    train = DeviceLoader(
        images, labels, GLOBAL_BATCH, shuffle=True, augment="paper", seed=0, shard=shard
    )
    test = DeviceLoader(images, labels, 40, shuffle=False, shard=shard)
    return model, train, test


class EpochLog:
    """This rank's epoch records and every search's accepted sigmas (the optimizer keeps
    only the last search's)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.records: list[dict[str, Any]] = []
        self.sigmas: list[list[float]] = []

    def after_epoch(self, end: Any) -> None:
        self.records.append(dict(end.record))
        result = getattr(self.optimizer, "last_result", None)
        if result is not None:
            self.sigmas.append(list(result.sigmas))


def _fit(
    optimizer_name: str, run_dir: Path, ranks: Ranks, epochs: int
) -> tuple[nn.Module, EpochLog, dict[str, Any]]:
    model, train_loader, test_loader = tiny_problem(ranks, optimizer_name.endswith("_bn"))
    if optimizer_name.startswith("mbt_nag"):
        optimizer: torch.optim.Optimizer = MBTSGD(
            model.parameters(), lr=0.01, momentum=0.9, nesterov=True, num_batches=3
        )
    elif optimizer_name == "sls":  # a line search on every step's (global) mini-batch
        optimizer = SLS(model.parameters(), lr=1.0)
    else:  # the NAG baseline
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    epoch_log = EpochLog(optimizer)
    identity = RunIdentity(
        task="train",
        dataset="cifar10",
        model="tiny",
        optimizer=optimizer_name,
        lr=0.01,
        batch_size=GLOBAL_BATCH,
        seed=0,
        epochs=epochs,
        width=1.0,
        train_subset=None,
        augment="paper",
        budget=None,
        data_source="generated",
    )
    summary = fit(
        model,
        optimizer,
        train_loader,
        EvalBatches(test_loader),
        epochs=epochs,
        run_dir=run_dir,
        identity=identity,
        progress="plain",
        tensorboard=False,
        baseline_stop_patience=None,
        callbacks=[epoch_log],
        ranks=ranks,
    )
    return model, epoch_log, summary


def train(
    optimizer_name: str, run_dir: Path, ranks: Ranks = SINGLE, resume_after: int | None = None
) -> dict[str, Any]:
    """Train ``EPOCHS`` epochs; with ``resume_after``, stop after that many and resume
    from the checkpoint in a fresh model and optimizer (on every rank)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    sigmas: list[list[float]] = []
    if resume_after is not None:
        _, first_log, _ = _fit(optimizer_name, run_dir, ranks, resume_after)
        records += first_log.records
        sigmas += first_log.sigmas
    model, epoch_log, summary = _fit(optimizer_name, run_dir, ranks, EPOCHS)
    return {
        "weights": {name: value.clone() for name, value in model.state_dict().items()},
        "history": records + epoch_log.records,
        "sigmas": sigmas + epoch_log.sigmas,
        "summary": summary,
    }


def main() -> None:
    out, runs = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    ranks = distributed.start("auto", torch.device("cpu"))
    try:
        results = {
            # MBT-NAG stops after one epoch and resumes: every rank loads the checkpoint.
            "mbt_nag": train("mbt_nag", runs / "mbt_nag", ranks, resume_after=1),
            "nag": train("nag", runs / "nag", ranks),
            "sls": train("sls", runs / "sls", ranks),
            # With BatchNorm (each rank normalising its shard): the ranks must still agree.
            "mbt_nag_bn": train("mbt_nag_bn", runs / "mbt_nag_bn", ranks),
            "world_size": ranks.world_size,
        }
        torch.save(results, out / f"rank{ranks.rank}.pt")
    finally:
        ranks.close()


if __name__ == "__main__":
    main()
