"""The run folder's format, in one place: its file names, its statuses and the run's identity.

``<results_dir>/runs/<dataset>/<model>/<optimizer>/lr=<lr>/bs=<batch>/seed=<seed>/`` for training
and ``<results_dir>/runs/search/...`` for search-only runs (Table 1). A folder holding
``summary.json`` is finished (skipped unless forced, or extended when more epochs are asked);
one holding only ``checkpoint.pt`` is resumed; one without either starts fresh. Whoever works
in a folder holds its lock, ``<folder>.lock`` beside it (:mod:`bgd_experiments.locks`).

The training code writes these folders and the report reads them, both through this module.
The run's identity is written when the folder is created (``config.yaml``, at fixed keys) and
again with the summary (its ``run`` block); :func:`read_identity` reads it back exactly.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import yaml

SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
# The files that make a folder a run folder (the checkpoint alone does not: it is in one of
# them, and the report reads none of it).
RUN_FILES = (SUMMARY_FILE, METRICS_FILE, CONFIG_FILE)


class RunStatus(StrEnum):
    """A run's status: the first three are written into summary.json when the run ends."""

    FINISHED = "finished"
    STOPPED_EARLY = "stopped_early"
    DIVERGED = "diverged"
    INCOMPLETE = "incomplete"  # no summary yet: interrupted, or still running

    @property
    def ended(self) -> bool:
        return self is not RunStatus.INCOMPLETE


# Keys that may change between an interrupted run and its resumption without changing
# what is computed (where it runs, how it is displayed) or that extend it (more epochs).
RESUMABLE_DIFFERENCES = frozenset(
    {
        "force",
        "results_dir",
        "trainer.device",
        "trainer.progress",
        "trainer.epochs",
        "trainer.num_threads",
        "trainer.channels_last",
        "trainer.tensorboard",
        "dataset.download",
        # Where the data lies on this machine; what it is, is the "data" block (name + hash).
        "dataset.root",
    }
)
# The config.yaml block naming the data by content (see bgd_experiments.data.data_identity).
DATA_KEY = "data"


class RunState(Enum):
    NEW = "new"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"


def lr_tag(lr: float) -> str:
    """A short, exact-enough text for a learning rate: 0.01, 1e-06, 100."""
    return f"{lr:g}"


def run_folder(results_dir: str | Path, identity: RunIdentity) -> Path:
    """The folder of the run ``identity`` under ``results_dir``."""
    root = Path(results_dir) / "runs"
    if identity.task == "search":
        root = root / "search"
    elif identity.task != "train":
        raise ValueError(f"run folders exist for task train or search, not {identity.task!r}")
    return (
        root
        / identity.dataset
        / identity.model
        / identity.optimizer
        / f"lr={lr_tag(identity.lr)}"
        / f"bs={identity.batch_size}"
        / f"seed={identity.seed}"
    )


def run_state(run_dir: Path) -> RunState:
    if (run_dir / SUMMARY_FILE).exists():
        return RunState.FINISHED
    if (run_dir / CHECKPOINT_FILE).exists():
        return RunState.INTERRUPTED
    return RunState.NEW


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole, an empty mapping disappears."""
    flat: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                flat.update(flatten_config(value, dotted))
            else:
                flat[dotted] = value
    return flat


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ in a way that makes the old run folder not this run's."""
    flat_old, flat_new = flatten_config(old), flatten_config(new)
    keys = sorted(set(flat_old) | set(flat_new))
    differences = []
    # No hash for the new run: its data is not on this machine, which only a finished run
    # (skipped, nothing reads the data) gets this far with; there is nothing to compare.
    if DATA_KEY in new and new[DATA_KEY].get("sha256") is not None:
        from bgd_experiments.data import same_data

        # The data is compared by name and content hash, never by path.
        old_data = with_data_identity(old).get(DATA_KEY) or {}
        if not same_data(old_data, new[DATA_KEY]):
            differences.append(f"{DATA_KEY}: {old_data!r} -> {new[DATA_KEY]!r}")
    return differences + [
        f"{key}: {flat_old.get(key)!r} -> {flat_new.get(key)!r}"
        for key in keys
        # budget.* only feeds the other keys through interpolation; compare those instead.
        if key not in RESUMABLE_DIFFERENCES
        and not key.startswith("budget.")
        and not key.startswith(f"{DATA_KEY}.")
        and flat_old.get(key) != flat_new.get(key)
    ]


def with_data_identity(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its "data" block, derived from ``dataset.root`` for folders written
    before data was named by content: hashed if that path exists here, else by name only."""
    dataset = config.get("dataset")
    if DATA_KEY in config or not isinstance(dataset, dict) or dataset.get("root") is None:
        return config
    from bgd_experiments.data import DatasetError, data_identity

    try:
        identity = data_identity(str(dataset.get("name")), dataset["root"])
    except DatasetError:  # an unknown dataset name: nothing to hash
        identity = {"name": Path(str(dataset["root"])).name, "sha256": None}
    return {**config, DATA_KEY: identity}


def check_run_folder(run_dir: Path, config: dict[str, Any], *, force: bool) -> RunState:
    """The folder's state for a run of ``config``, without writing anything: NEW when
    ``force`` discards it. A folder written by a different configuration is refused
    (:class:`RunFolderConflict`, unless ``force``) instead of being mixed with this run."""
    state = run_state(run_dir)
    if force:
        return RunState.NEW
    config_path = run_dir / CONFIG_FILE
    if state is not RunState.NEW and config_path.exists():
        old = yaml.safe_load(config_path.read_text()) or {}
        differences = config_differences(old, config)
        if differences:
            raise RunFolderConflict(
                f"{run_dir} holds a run with a different configuration "
                f"({'; '.join(differences)}). Rerun with force=true to replace it, or set "
                "results_dir to another folder."
            )
    return state


def prepare_run_folder(
    run_dir: Path, config: dict[str, Any], *, force: bool, extend: bool = False
) -> RunState:
    """Decide between skip / resume / fresh start, and record the config of this run.

    ``extend``: a finished run is to train more epochs; its summary goes, so that the folder
    is an interrupted run (resumed from its checkpoint) until the longer run ends.
    """
    state = check_run_folder(run_dir, config, force=force)
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if state is RunState.FINISHED:
        if not extend:
            return state
        (run_dir / SUMMARY_FILE).unlink()
        state = RunState.INTERRUPTED
    if state is RunState.NEW and run_dir.exists():
        # Leftovers of a run killed before its first checkpoint: nothing worth keeping.
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from bgd_experiments.io import atomic_write_text

    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    return state


def check_results_dir(results_dir: str | Path) -> None:
    """Refuse (one line saying what to do) a results_dir that is a file or cannot be
    written, before any run folder is made in it."""
    folder = Path(results_dir)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "results_dir" if existing == folder else f"results_dir's parent {existing}"
        raise RunFolderError(
            f"{where} is a file, not a folder: set results_dir=<a folder> "
            f"(results_dir={results_dir})"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise RunFolderError(
            f"results_dir={results_dir} cannot be written ({error.strerror or error}): make "
            "it writable, or set results_dir to a folder you can write"
        ) from None


def discard_run_folder(run_dir: Path, results_dir: str | Path) -> None:
    """Remove a run folder in which nothing ran, and the parents it leaves empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    top = Path(results_dir).resolve()
    parent = run_dir.resolve().parent
    while parent != top and top in parent.parents:
        try:
            parent.rmdir()  # only succeeds on an empty folder
        except OSError:
            break
        parent = parent.parent


class RunFolderError(RuntimeError):
    """A run folder (or its results_dir) that this run cannot use as it stands."""


class RunFolderConflict(RunFolderError):
    """The run folder belongs to a run with another configuration."""


@dataclass(frozen=True)
class RunIdentity:
    """What the report step needs to place a run in a table (written into summary.json)."""

    task: str
    dataset: str
    model: str
    optimizer: str
    lr: float
    batch_size: int
    seed: int
    epochs: int
    width: float
    train_subset: int | None
    augment: str
    budget: str | None
    data_source: str  # readable: "<dataset> from <name> (sha256 <hash>)", no machine path
    data: dict[str, str | None] | None = None  # {"name": ..., "sha256": ...}


# Where config.yaml keeps each identity field (bgd-run's layout). Read exactly: a null there
# means "all" / "none", so that e.g. budget.train_subset never stands in for it.
CONFIG_IDENTITY_KEYS = {
    "task": "task",
    "dataset": "dataset.name",
    "model": "model.name",
    "optimizer": "optimizer.name",
    "lr": "optimizer.lr",
    "batch_size": "trainer.batch_size",
    "seed": "seed",
    "epochs": "trainer.epochs",
    "width": "model.width",
    "train_subset": "dataset.train_subset",
    "augment": "dataset.augment",
    "budget": "budget.name",
}


def identity_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """The identity fields that ``config.yaml`` holds, read at their fixed keys."""
    flat = flatten_config(config)
    identity = {name: flat.get(key) for name, key in CONFIG_IDENTITY_KEYS.items()}
    if identity["task"] == "search":
        identity["epochs"] = 0  # a search trains no epoch, whatever trainer.epochs says
    return identity


def read_identity(summary: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The run's identity: the summary's ``run`` block (written by an ended run), each field it
    lacks taken from ``config.yaml`` (written when the folder was created)."""
    identity = {key: value for key, value in (summary.get("run") or {}).items()}
    for key, value in identity_from_config(config).items():
        if identity.get(key) is None and value is not None:
            identity[key] = value
    return identity


def read_config(path: Path) -> dict[str, Any]:
    """A folder's config.yaml as a dict ({} when absent or unreadable)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
