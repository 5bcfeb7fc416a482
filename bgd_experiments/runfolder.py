"""The run folder's format, in one place: its file names, its statuses and the run's identity.

``<results_dir>/runs/<dataset>/<model>/<optimizer>/lr=<lr>/bs=<batch>/seed=<seed>/cfg-<digest>/``
for training and ``<results_dir>/runs/search/...`` for search-only runs (Table 1). A folder
holding ``summary.json`` is finished (skipped unless forced, or extended when more epochs
are asked); one holding only ``checkpoint.pt`` is resumed; one without either starts fresh.
Whoever works in a folder holds its lock, ``<folder>.lock`` beside it
(:mod:`bgd_experiments.locks`).

**Identity.** The folder stands for every setting that changes the run's result, so any key
can be swept and two settings never share a folder. The readable levels name the task,
dataset, model, optimizer, start rate, batch size and seed; the last level, ``cfg-<8 hex>``,
is :func:`settings_digest` of :func:`identity_settings`: every other result-changing key
(dotted, e.g. ``model.width``) whose value differs from the *reference*, plus the data's
content hash. The reference is fixed, so the same settings always give the same folder: the
config that ``conf/train.yaml`` composes with the run's dataset, model and optimizer choices
and the paper budget, nothing else (bgd-run composes it; the library only sees plain dicts).
Hence ``budget=cpu`` and ``budget=paper`` plus the same overrides share a folder, and a key
added to conf later at its default value moves no existing run. Keys that never enter the
digest: :data:`IDENTITY_EXCLUDED_KEYS` and :data:`IDENTITY_EXCLUDED_PREFIXES`.

**Data.** ``data.sha256`` (the content hash of :func:`bgd_experiments.data.data_identity`)
is part of the digest input, so every run has a ``cfg-`` level: two archives swept through
``dataset.root`` give two folders, the same archive at another path or under another file
name gives the same one. The alternative, leaving the data out of the path and refusing a
folder whose recorded hash differs, would make two settings share a folder; comparing with a
reference hash is not possible, as there is no canonical copy (torchvision's pickles and the
JPEG archive are different images). Where the data is not on this machine (hash unknown), a
finished run is still found by its other settings (:func:`find_finished_run`) and skipped.

The digest's input is written into ``config.yaml`` (its ``identity`` block) so that a reader
sees what the folder stands for; ``scripts/migrate_run_folders.py`` moves folders written
under an older layout (or under older defaults) to where their config.yaml says they belong.

The training code writes these folders and the report reads them, both through this module.
The run's identity is written when the folder is created (``config.yaml``, at fixed keys) and
again with the summary (its ``run`` block); :func:`read_identity` reads it back exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bgd_experiments.io import atomic_write_text, iter_jsonl, json_line
from bgd_experiments.records import EpochRecord, RunStatus, RunSummary

SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
# The files that make a folder a run folder (the checkpoint alone does not: it is in one of
# them, and the report reads none of it).
RUN_FILES = (SUMMARY_FILE, METRICS_FILE, CONFIG_FILE)


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
        # Compiled kernels compute the same as eager ones up to float rounding.
        "trainer.compile",
        "trainer.tensorboard",
        # Evaluation batches: speed and memory only (sums differ by float rounding, at most).
        "trainer.eval_batch_size",
        "dataset.download",
        # Where the data lies on this machine; what it is, is the "data" block (name + hash).
        "dataset.root",
    }
)
# Keys added after runs were made, with the value those runs had (their folders match it).
ADDED_KEY_DEFAULTS = {
    "trainer.precision": "fp32",
    "trainer.search_precision": "fp32",
    "trainer.compile": False,
    "trainer.distributed": "auto",
    "trainer.sync_bn": False,
    # Runs made before the authors' early stop of the baselines had none.
    "trainer.baseline_stop_patience": None,
}
# The config.yaml block naming the data by content (see bgd_experiments.data.data_identity).
DATA_KEY = "data"
# The config.yaml block recording what the folder's cfg- level stands for.
IDENTITY_KEY = "identity"
# The digest input's entry for the data's content hash.
DATA_HASH_SETTING = f"{DATA_KEY}.sha256"
CFG_PREFIX = "cfg-"
DIGEST_HEX = 8

# The keys that the readable levels of the path name exactly (optimizer.lr too, unless its
# short tag rounds it: see identity_settings).
PATH_KEYS = frozenset(
    {
        "task",
        "dataset.name",
        "model.name",
        "optimizer.name",
        "optimizer.lr",
        "trainer.batch_size",
        "seed",
    }
)
# Every key that never enters the folder digest: where and how a run is computed or shown,
# and what may change when resuming it (RESUMABLE_DIFFERENCES: device, threads, layout,
# progress, TensorBoard, evaluation batch size, epochs, results_dir, dataset.root and
# download, force), plus the keys the path already names. All other keys, including ones
# added to conf later, change the folder when they differ from the reference. Kept in on
# purpose: optimizer.implementation (the two implementations round differently, and are
# compared with each other), trainer.val_size and baseline_stop_patience (even where the
# protocol or optimizer ignores them: an extra folder is harmless, a shared one is not),
# and the _target_ / _partial_ / num_classes keys that build the model and optimizer.
IDENTITY_EXCLUDED_KEYS = RESUMABLE_DIFFERENCES | PATH_KEYS
# budget.* only feeds other keys through interpolation (those are compared instead); the
# data and identity blocks are derived (the data enters as DATA_HASH_SETTING); hydra.* is
# Hydra's own node, never part of a run's config.
IDENTITY_EXCLUDED_PREFIXES = ("budget.", f"{DATA_KEY}.", f"{IDENTITY_KEY}.", "hydra.")


def lr_tag(lr: float) -> str:
    """A short, exact-enough text for a learning rate: 0.01, 1e-06, 100."""
    return f"{lr:g}"


def _canonical(value: Any) -> Any:
    """Numbers as floats (1 and 1.0 are the same setting, bools stay bools), recursively."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return str(value)


def settings_digest(settings: Mapping[str, Any]) -> str:
    """8 hex digits of the sha256 of ``settings`` as canonical JSON (sorted keys)."""
    text = json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_HEX]


def _excluded_from_identity(key: str) -> bool:
    return key in IDENTITY_EXCLUDED_KEYS or key.startswith(IDENTITY_EXCLUDED_PREFIXES)


def identity_settings(config: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``{dotted key: value}`` of the result-changing keys of ``config`` (a nested run config)
    whose value differs from ``reference`` (the config composed with the same dataset, model
    and optimizer and nothing else). A key that ``config`` lacks counts as at its default, so
    a config.yaml written before a key existed keeps its folder."""
    flat, flat_reference = flatten_config(config), flatten_config(reference)
    settings = {
        key: value
        for key, value in flat.items()
        if not _excluded_from_identity(key)
        and (key not in flat_reference or _canonical(value) != _canonical(flat_reference[key]))
    }
    lr = flat.get("optimizer.lr")
    if isinstance(lr, int | float) and float(lr_tag(lr)) != float(lr):
        settings["optimizer.lr"] = lr  # the path's lr=<tag> rounds it: say it exactly
    return dict(sorted(settings.items()))


def with_data_hash(settings: Mapping[str, Any], data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The digest input: ``settings`` plus the data's content hash, when it is known."""
    digest_input = dict(settings)
    sha256 = (data or {}).get("sha256")
    if sha256 is not None:
        digest_input[DATA_HASH_SETTING] = sha256
    return dict(sorted(digest_input.items()))


def identity_block(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What config.yaml records about the folder's cfg- level (see the module docstring)."""
    return {"digest": settings_digest(settings), "settings": dict(settings)}


def readable_run_folder(results_dir: str | Path, identity: RunIdentity) -> Path:
    """The readable levels of the run's folder (every run of these names lies below it)."""
    return _readable_levels(
        results_dir,
        identity.task,
        identity.dataset,
        identity.model,
        identity.optimizer,
        identity.lr,
        identity.batch_size,
        identity.seed,
    )


def _readable_levels(
    results_dir: str | Path,
    task: str,
    dataset: str,
    model: str,
    optimizer: str,
    lr: float,
    batch_size: int,
    seed: int,
) -> Path:
    root = Path(results_dir) / "runs"
    if task == "search":
        root = root / "search"
    elif task != "train":
        raise ValueError(f"run folders exist for task train or search, not {task!r}")
    return (
        root
        / dataset
        / model
        / optimizer
        / f"lr={lr_tag(lr)}"
        / f"bs={batch_size}"
        / f"seed={seed}"
    )


def run_folder(
    results_dir: str | Path, identity: RunIdentity, settings: Mapping[str, Any] | None = None
) -> Path:
    """The folder of the run ``identity`` under ``results_dir``; ``settings`` is the digest
    input (:func:`identity_settings` with :func:`with_data_hash`), no cfg- level when empty."""
    readable = readable_run_folder(results_dir, identity)
    return readable / f"{CFG_PREFIX}{settings_digest(settings)}" if settings else readable


def config_run_folder(
    results_dir: str | Path, config: dict[str, Any], settings: Mapping[str, Any]
) -> Path:
    """The folder of the run that ``config`` (a config.yaml) describes, ``settings`` being its
    digest input: what bgd-run would choose for it today (scripts/migrate_run_folders.py)."""
    fields = identity_from_config(config)
    names = ("task", "dataset", "model", "optimizer", "lr", "batch_size", "seed")
    missing = [CONFIG_IDENTITY_KEYS[name] for name in names if fields.get(name) is None]
    if missing:
        raise ValueError(f"config.yaml lacks {', '.join(missing)}")
    readable = _readable_levels(
        results_dir,
        str(fields["task"]),
        str(fields["dataset"]),
        str(fields["model"]),
        str(fields["optimizer"]),
        float(fields["lr"]),
        int(fields["batch_size"]),
        int(fields["seed"]),
    )
    return readable / f"{CFG_PREFIX}{settings_digest(settings)}" if settings else readable


def find_finished_run(
    readable: Path, settings: Mapping[str, Any], data_name: str | None
) -> Path | None:
    """The one finished run below ``readable`` whose recorded settings, ignoring the data's
    hash, are ``settings`` and whose data has the name ``data_name``: where a finished run
    lies when its data (hence its hash) is not on this machine. None if none or several."""
    if not readable.is_dir():
        return None
    wanted = {key: value for key, value in settings.items() if key != DATA_HASH_SETTING}
    found = []
    for candidate in sorted(readable.glob(f"{CFG_PREFIX}*")):
        if not run_state(candidate).ended:
            continue
        config = read_config(candidate / CONFIG_FILE)
        recorded = dict((config.get(IDENTITY_KEY) or {}).get("settings") or {})
        recorded.pop(DATA_HASH_SETTING, None)
        if (
            _canonical(recorded) == _canonical(wanted)
            and (config.get(DATA_KEY) or {}).get("name") == data_name
        ):
            found.append(candidate)
    return found[0] if len(found) == 1 else None


def run_state(run_dir: Path) -> RunStatus:
    """NEW, INCOMPLETE (a checkpoint, no summary) or the status its summary records (an
    unreadable summary counts as FINISHED: reading it later says what is wrong)."""
    if (run_dir / SUMMARY_FILE).exists():
        try:
            return RunSummary.read(run_dir / SUMMARY_FILE).status
        except (OSError, ValueError, TypeError):
            return RunStatus.FINISHED
    if (run_dir / CHECKPOINT_FILE).exists():
        return RunStatus.INCOMPLETE
    return RunStatus.NEW


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
    for key, default in ADDED_KEY_DEFAULTS.items():
        flat_old.setdefault(key, default)
        flat_new.setdefault(key, default)
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
        # The identity block is derived from the rest (and names the data's hash, compared
        # above by same_data, which tolerates an unknown one).
        if key not in RESUMABLE_DIFFERENCES
        and not key.startswith("budget.")
        and not key.startswith(f"{DATA_KEY}.")
        and not key.startswith(f"{IDENTITY_KEY}.")
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


def check_run_folder(run_dir: Path, config: dict[str, Any], *, force: bool) -> RunStatus:
    """The folder's state for a run of ``config``, without writing anything: NEW when
    ``force`` discards it. A folder written by a different configuration is refused
    (:class:`RunFolderConflict`, unless ``force``) instead of being mixed with this run."""
    state = run_state(run_dir)
    if force:
        return RunStatus.NEW
    config_path = run_dir / CONFIG_FILE
    if state is not RunStatus.NEW and config_path.exists():
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
) -> RunStatus:
    """Decide between skip / resume / fresh start, and record the config of this run.

    ``extend``: a finished run is to train more epochs; its summary goes, so that the folder
    is an interrupted run (resumed from its checkpoint) until the longer run ends.
    """
    state = check_run_folder(run_dir, config, force=force)
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    if state.ended:
        if not extend:
            return state
        (run_dir / SUMMARY_FILE).unlink()
        state = RunStatus.INCOMPLETE
    if state is RunStatus.NEW and run_dir.exists():
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
        # Not made here: a run refused later (its data, its checkpoint) leaves nothing
        # behind, and the cell's lock makes (and on release removes) the folders it needs.
        with tempfile.TemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as error:
        raise RunFolderError(
            f"results_dir={results_dir} cannot be written ({error.strerror or error}): make "
            "it writable, or set results_dir to a folder you can write"
        ) from None


class RunFolderError(RuntimeError):
    """A run folder (or its results_dir) that this run cannot use as it stands."""


class CellHeld(RunFolderError):
    """Another live process holds the run's cell (its lock): this run trained nothing."""


class RunFolderConflict(RunFolderError):
    """The run folder belongs to a run with another configuration."""


# The checkpoint holds only tensors, numbers, strings and plain containers, so that it loads
# with torch.load(weights_only=True): a checkpoint from elsewhere can never run code. Format 1
# (no "format" key) had the same fields and loads as it is.
CHECKPOINT_FORMAT = 2


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A run's checkpoint, read without running code; a damaged or foreign one is refused."""
    try:
        import torch

        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(checkpoint, dict):
            raise TypeError(f"holds a {type(checkpoint).__name__}, not a checkpoint")
        int(checkpoint["epoch"])
    except Exception as error:  # whatever unpickling a damaged or crafted file raises
        first_line = (str(error).splitlines() or [""])[0]
        raise RunFolderError(
            f"{path} cannot be read as a checkpoint ({type(error).__name__}: {first_line}); "
            "rerun with force=true to discard this run folder and train the run again"
        ) from None
    found = checkpoint.get("format", 1)
    if found not in (1, CHECKPOINT_FORMAT):
        raise RunFolderError(
            f"{path} has checkpoint format {found!r}, this version reads 1 and "
            f"{CHECKPOINT_FORMAT}; rerun with force=true to train the run again"
        )
    return checkpoint


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


@dataclass(frozen=True)
class RunFolder:
    """One run's folder: its files, and how each is read and written (typed records)."""

    path: Path

    @classmethod
    def named(
        cls,
        results_dir: str | Path,
        identity: RunIdentity,
        settings: Mapping[str, Any] | None = None,
    ) -> RunFolder:
        """The folder of the run ``identity`` under ``results_dir`` (see :func:`run_folder`)."""
        return cls(run_folder(results_dir, identity, settings))

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    def status(self) -> RunStatus:
        return run_state(self.path)

    def claim(self) -> contextlib.AbstractContextManager[Any]:
        """``with folder.claim() as held:`` the cell's lock while this process owns it, else
        who holds it (:func:`bgd_experiments.locks.claim`)."""
        from bgd_experiments.locks import claim

        return claim(self.path)

    def read_summary(self) -> RunSummary | None:
        """The summary, None when the run has not ended; a malformed one raises ValueError."""
        if not self.summary_file.exists():
            return None
        return RunSummary.read(self.summary_file)

    def write_summary(self, summary: RunSummary) -> None:
        summary.write(self.summary_file)

    def read_metrics(self) -> list[EpochRecord]:
        """One record per epoch, in epoch order (a resumed run may log an epoch twice: the
        last record wins); a torn last line is ignored."""
        if not self.metrics_file.exists():
            return []
        by_epoch: dict[int, EpochRecord] = {}
        for line, record in enumerate(iter_jsonl(self.metrics_file), start=1):
            try:
                parsed = EpochRecord.from_json(record)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{self.metrics_file}, line {line}: {error}") from None
            by_epoch[parsed.epoch] = parsed
        return [by_epoch[epoch] for epoch in sorted(by_epoch)]

    def replace_metrics(self, records: list[EpochRecord]) -> None:
        """Write ``metrics.jsonl`` afresh, atomically (a resumed run's checkpoint history)."""
        atomic_write_text(self.metrics_file, "".join(json_line(r.to_json()) for r in records))

    def append_metrics(self, record: EpochRecord) -> None:
        with open(self.metrics_file, "a") as handle:
            handle.write(json_line(record.to_json()))

    def read_config(self) -> dict[str, Any]:
        return read_config(self.config_file)

    def read_checkpoint(self, map_location: Any = "cpu") -> dict[str, Any]:
        return read_checkpoint(self.checkpoint_file, map_location)
