"""Training: plain-function loop, run folders with resume/skip, metrics tracking."""

from bgd_experiments.runfolder import (
    RunFolderConflict,
    RunIdentity,
    RunStatus,
    lr_tag,
    prepare_run_folder,
    run_folder,
    run_state,
)
from bgd_experiments.training.loop import evaluate, fit, summarize, train_one_epoch
from bgd_experiments.training.protocol import SealedTestSet, TestSetSealed

__all__ = [
    "RunFolderConflict",
    "RunIdentity",
    "RunStatus",
    "SealedTestSet",
    "TestSetSealed",
    "evaluate",
    "fit",
    "lr_tag",
    "prepare_run_folder",
    "run_folder",
    "run_state",
    "summarize",
    "train_one_epoch",
]
