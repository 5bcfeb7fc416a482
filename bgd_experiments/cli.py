"""``bgd-run``: the Hydra application, and the only module that touches DictConfig.

It composes the config, refuses bad values before anything expensive happens, turns the
config into plain Python objects and calls the library (data, models, optim, training,
linesearch). Everything it calls is usable from a notebook without Hydra.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("bgd_experiments")

# Absolute, so the installed `bgd-run` finds the configs from any working directory.
CONFIG_DIR = Path(os.environ.get("BGD_CONFIG_DIR", Path(__file__).resolve().parent.parent / "conf"))
TASKS = ("train", "search", "functions", "fig2")


class ConfigError(ValueError):
    """A value in the composed config that the run cannot use."""


def validate(cfg: DictConfig) -> None:
    """Refuse values that cannot produce a meaningful run, with one message naming them."""
    problems: list[str] = []
    if cfg.task not in TASKS:
        problems.append(f"task={cfg.task!r} is not one of {', '.join(TASKS)}")
    if cfg.task in ("functions",):
        if problems:
            raise ConfigError("; ".join(problems))
        return
    if not cfg.optimizer.lr > 0:
        problems.append(f"optimizer.lr must be > 0, got {cfg.optimizer.lr}")
    if not cfg.trainer.batch_size >= 1:
        problems.append(f"trainer.batch_size must be >= 1, got {cfg.trainer.batch_size}")
    if not cfg.trainer.eval_batch_size >= 1:
        problems.append(f"trainer.eval_batch_size must be >= 1, got {cfg.trainer.eval_batch_size}")
    if not cfg.trainer.epochs >= 1:
        problems.append(f"trainer.epochs must be >= 1, got {cfg.trainer.epochs}")
    if not cfg.model.width > 0:
        problems.append(f"model.width must be > 0, got {cfg.model.width}")
    subset = cfg.dataset.train_subset
    if subset is not None and subset < cfg.dataset.num_classes:
        problems.append(
            f"dataset.train_subset must be null or >= {cfg.dataset.num_classes} (one image per "
            f"class), got {subset}"
        )
    test_subset = cfg.dataset.test_subset
    if test_subset is not None and test_subset < cfg.dataset.num_classes:
        problems.append(
            f"dataset.test_subset must be null or >= {cfg.dataset.num_classes}, got {test_subset}"
        )
    if cfg.trainer.device not in ("auto", "cpu", "cuda") and not str(cfg.trainer.device).startswith(
        "cuda:"
    ):
        problems.append(f"trainer.device must be auto, cpu or cuda[:N], got {cfg.trainer.device!r}")
    if cfg.trainer.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"trainer.device={cfg.trainer.device} but no CUDA device is available")
    if cfg.trainer.protocol == "clean" and not cfg.trainer.val_size >= cfg.dataset.num_classes:
        problems.append(
            f"trainer.val_size must be >= {cfg.dataset.num_classes} for the clean protocol, "
            f"got {cfg.trainer.val_size}"
        )
    patience = cfg.trainer.baseline_stop_patience
    if patience is not None and (type(patience) is not int or patience < 0):  # bool is no int
        problems.append(
            f"trainer.baseline_stop_patience must be null or an integer >= 0, got {patience!r}"
        )
    if cfg.trainer.channels_last not in ("auto", True, False):
        problems.append(
            f"trainer.channels_last must be auto, true or false, got {cfg.trainer.channels_last!r}"
        )
    if cfg.trainer.protocol not in ("paper", "clean"):
        problems.append(f"trainer.protocol must be paper or clean, got {cfg.trainer.protocol!r}")
    if cfg.dataset.augment not in ("paper", "none", "flip_crop"):
        problems.append(
            f"dataset.augment must be paper, flip_crop or none, got {cfg.dataset.augment!r}"
        )
    if cfg.task == "search" and not str(cfg.optimizer.name).startswith("mbt_"):
        problems.append(
            f"task=search needs an MBT optimizer (mbt_gd/mmt/nag), got {cfg.optimizer.name}"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def _without(node: DictConfig, *keys: str) -> dict[str, Any]:
    plain = OmegaConf.to_container(node, resolve=True)
    assert isinstance(plain, dict)
    return {key: value for key, value in plain.items() if key not in keys}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Execute one job of the composed config; returns the run's summary (None if skipped)."""
    validate(cfg)
    if cfg.trainer.get("num_threads") and cfg.task != "functions":
        torch.set_num_threads(int(cfg.trainer.num_threads))
    if cfg.task == "functions":
        return run_functions(cfg)
    if cfg.task == "fig2":
        # Figure 2(a) comes with the deterministic experiments, 2(b) trains nothing.
        return {"fig2a": run_functions(cfg), "fig2b": run_fig2b(cfg)}
    return run_training(cfg)


def already_made(payload: Path, request: dict[str, Any], outputs: list[Path], force: bool) -> bool:
    """Whether ``payload`` records this very ``request`` and every output exists, so that
    re-running a target skips artefacts that are not run folders (``force=true`` remakes).
    Logs the skip."""
    if force or not all(path.exists() for path in [payload, *outputs]):
        return False
    try:
        recorded = json.loads(payload.read_text()).get("request")
    except (OSError, ValueError, AttributeError):
        return False
    # A JSON round trip of the request, so tuples and lists compare alike.
    if recorded != json.loads(json.dumps(request)):
        return False
    log.info("skipped: %s has these settings (force=true reruns)", payload)
    return True


def run_functions(cfg: DictConfig) -> dict[str, Any] | None:
    from bgd_experiments.linesearch.experiments import run_deterministic_experiments

    out_dir = Path(cfg.results_dir)
    settings = _without(cfg.functions)
    request = {"functions": settings}
    outputs = [out_dir / name for name in ("functions.md", "fig2a.png", "fig2a.pdf")]
    if already_made(out_dir / "functions.json", request, outputs, bool(cfg.force)):
        return None
    log.info("deterministic line-search experiments -> %s (%s)", out_dir, settings)
    return run_deterministic_experiments(out_dir, request=request, **settings)


def _load_data(cfg: DictConfig, device: torch.device):
    from bgd_experiments import data

    train = data.load_cifar(
        cfg.dataset.name, cfg.dataset.root, "train", download=cfg.dataset.download
    )
    test = data.load_cifar(
        cfg.dataset.name, cfg.dataset.root, "test", download=cfg.dataset.download
    )
    val = None
    try:
        if cfg.trainer.protocol == "clean":
            train, val = data.split_validation(train, cfg.trainer.val_size, seed=cfg.seed)
        if cfg.dataset.train_subset is not None:
            train = data.class_balanced_subset(train, cfg.dataset.train_subset, seed=cfg.seed)
        if cfg.dataset.test_subset is not None:
            # A fixed choice (seed 0), so every run of a comparison sees the same test images.
            test = data.class_balanced_subset(test, cfg.dataset.test_subset, seed=0)
    except ValueError as error:
        raise ConfigError(f"dataset subsets / validation split: {error}") from error
    return train, val, test


def _eval_loader(dataset, cfg: DictConfig, device: torch.device) -> EvalBatches:
    from bgd_experiments.data import DeviceLoader

    loader = DeviceLoader(
        dataset.images,
        dataset.labels,
        cfg.trainer.eval_batch_size,
        shuffle=False,
        augment="none",
        seed=cfg.seed,
        device=device,
        channels_last=_channels_last(cfg, device),
    )
    return EvalBatches(loader)


class EvalBatches:
    """Re-iterable view of a loader's fixed, un-augmented order (for evaluation)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self):
        return self.loader.epoch(0)


def budget_label(cfg: DictConfig) -> str:
    """The budget's name, or "<name>+overrides" when the command line changed what it sets."""
    budget = cfg.budget
    effective = (
        cfg.trainer.epochs,
        cfg.dataset.train_subset,
        cfg.dataset.test_subset,
        cfg.model.width,
    )
    nominal = (budget.epochs, budget.train_subset, budget.test_subset, budget.width)
    if cfg.task == "search":  # a search trains no epoch and reads the whole training set
        effective, nominal = effective[3:], nominal[3:]
    return budget.name if effective == nominal else f"{budget.name}+overrides"


def data_identity(cfg: DictConfig) -> dict[str, str | None]:
    """The data named by content ({name, sha256}), not by where it lies on this machine."""
    from bgd_experiments.data import data_identity as identity_of

    return identity_of(cfg.dataset.name, cfg.dataset.root)


def describe_data_source(cfg: DictConfig, identity: dict[str, str | None] | None = None) -> str:
    """What the images are, for the provenance line of the tables: name and content hash."""
    from bgd_experiments.data import describe_data

    return describe_data(
        cfg.dataset.name, identity or data_identity(cfg), bool(cfg.dataset.download)
    )


def _build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    # Seeded right before construction: every optimizer of a comparison (same seed) starts
    # from the same initial weights.
    torch.manual_seed(cfg.seed)
    model = instantiate(_without(cfg.model, "name"))
    memory_format = torch.channels_last if _channels_last(cfg, device) else torch.preserve_format
    return model.to(device, memory_format=memory_format)


def _channels_last(cfg: DictConfig, device: torch.device) -> bool:
    from bgd_experiments.models import use_channels_last

    return use_channels_last(cfg.trainer.channels_last, device)


def run_config(cfg: DictConfig, data: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's own node.

    With ``data`` (its identity), the data is recorded by name and hash and ``dataset.root``
    by name only, so a committed config.yaml names no path of the machine it ran on.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    if data is not None:
        plain["dataset"]["root"] = data["name"]
        plain["data"] = dict(data)
    return plain


def run_training(cfg: DictConfig) -> dict[str, Any] | None:
    from bgd_experiments import data
    from bgd_experiments.training import (
        RunIdentity,
        RunState,
        discard_run_folder,
        fit,
        prepare_run_folder,
        run_folder,
        run_state,
    )

    identity = RunIdentity(
        task=cfg.task,
        dataset=cfg.dataset.name,
        model=cfg.model.name,
        optimizer=cfg.optimizer.name,
        lr=float(cfg.optimizer.lr),
        batch_size=int(cfg.trainer.batch_size),
        seed=int(cfg.seed),
        epochs=int(cfg.trainer.epochs) if cfg.task == "train" else 0,
        width=float(cfg.model.width),
        train_subset=cfg.dataset.train_subset,
        augment=cfg.dataset.augment,
        budget=budget_label(cfg),
        data_source="",  # filled in below, once the data is known to be there
    )
    run_dir = run_folder(cfg.results_dir, identity)
    if cfg.force or run_state(run_dir) is not RunState.FINISHED:
        # Cheap checks of the data source before any model is built or any folder is
        # written, so a missing dataset leaves nothing behind. Finished runs skip them: an
        # uncached archive takes ~2 s to list, per job of a sweep.
        data.check_dataset_source(cfg.dataset.name, cfg.dataset.root, download=cfg.dataset.download)
    # By content (hash cached per file version): the same archive elsewhere is the same run.
    data_id = data_identity(cfg)
    identity = replace(identity, data_source=describe_data_source(cfg, data_id), data=data_id)
    state = prepare_run_folder(run_dir, run_config(cfg, data_id), force=bool(cfg.force))
    if state is RunState.FINISHED:
        log.info("skipped: %s is finished (force=true reruns it)", run_dir)
        return None
    log.info("%s run in %s", "resuming" if state is RunState.INTERRUPTED else "new", run_dir)

    device = resolve_device(cfg.trainer.device)
    try:
        train, val, test = _load_data(cfg, device)
    except ConfigError:
        if state is RunState.NEW:  # nothing ran: leave no folder behind
            discard_run_folder(run_dir, cfg.results_dir)
        raise
    model = _build_model(cfg, device)
    optimizer = instantiate(_without(cfg.optimizer, "name"))(params=model.parameters())
    train_loader = data.DeviceLoader(
        train.images,
        train.labels,
        int(cfg.trainer.batch_size),
        shuffle=True,
        augment=cfg.dataset.augment,
        seed=int(cfg.seed),
        device=device,
        channels_last=_channels_last(cfg, device),
    )
    if cfg.task == "search":
        return _search_only(model, optimizer, train_loader, run_dir, identity, device)
    return fit(
        model,
        optimizer,
        train_loader,
        _eval_loader(test, cfg, device),
        val_loader=_eval_loader(val, cfg, device) if val is not None else None,
        epochs=int(cfg.trainer.epochs),
        run_dir=run_dir,
        identity=identity,
        progress=cfg.trainer.progress,
        tensorboard=bool(cfg.trainer.tensorboard),
        baseline_stop_patience=cfg.trainer.baseline_stop_patience,
    )


def _search_only(model, optimizer, train_loader, run_dir: Path, identity, device) -> dict:
    from bgd_experiments.io import atomic_write_json
    from bgd_experiments.runfolder import SUMMARY_FILE, RunStatus
    from bgd_experiments.training.loop import search_batches
    from bgd_experiments.training.provenance import provenance

    result = optimizer.search(
        model,
        torch.nn.CrossEntropyLoss(),
        search_batches(train_loader, 0),
        num_samples=train_loader.num_samples,
    )
    log.info(
        "search from lr %g found lr %.6g (%d trials, %.1fs, %s)",
        identity.lr,
        result.lr,
        result.trials,
        result.wall_time,
        result.status,
    )
    summary = {
        "status": (
            RunStatus.DIVERGED if result.status == "nonfinite" else RunStatus.FINISHED
        ).value,
        "run": asdict(identity),
        "found_lr": result.lr,
        "search": asdict(result),
        "wall_time": result.wall_time,
        **provenance(device),
    }
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return summary


def run_fig2b(cfg: DictConfig) -> dict[str, Any] | None:
    from bgd_experiments import data
    from bgd_experiments.linesearch.experiments import run_fig2b as fig2b

    out_dir = Path(cfg.results_dir)
    settings = _without(cfg.fig2b)
    request = {
        "fig2b": settings,
        "model": _without(cfg.model),
        "dataset": {
            "source": describe_data_source(cfg),
            "train_subset": cfg.dataset.train_subset,
            "augment": cfg.dataset.augment,
        },
        "seed": int(cfg.seed),
    }
    outputs = [out_dir / "fig2b.png", out_dir / "fig2b.pdf"]
    if already_made(out_dir / "fig2b.json", request, outputs, bool(cfg.force)):
        return None
    # As for run folders: the data source is checked only when there is work to do.
    data.check_dataset_source(cfg.dataset.name, cfg.dataset.root, download=cfg.dataset.download)
    device = resolve_device(cfg.trainer.device)
    train, _, _ = _load_data(cfg, device)
    loader = data.DeviceLoader(
        train.images,
        train.labels,
        len(train.labels),
        shuffle=False,
        augment="none",
        seed=int(cfg.seed),
        device=device,
        channels_last=_channels_last(cfg, device),
    )
    inputs, targets = next(iter(loader.epoch(0)))
    model = _build_model(cfg, device)
    log.info("Figure 2(b): Two-way Backtracking GD on %d images -> %s", len(targets), out_dir)
    return fig2b(model, inputs, targets, out_dir, request=request, **settings)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _app(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as error:
        log.error("invalid configuration: %s", error)
        sys.exit(2)
    except Exception as error:
        from bgd_experiments.data import DatasetError
        from bgd_experiments.training import RunFolderConflict

        if isinstance(error, DatasetError | RunFolderConflict):
            log.error("%s", error)
            sys.exit(2)
        raise


def main() -> None:
    """Console entry point of ``bgd-run``."""
    _app()


if __name__ == "__main__":
    main()
