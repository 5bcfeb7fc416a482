"""``bgd-run``: the Hydra application, and the only module that touches DictConfig.

It composes the config, turns it into plain settings objects and factories (which check
their own values, so a bad value is refused before anything expensive happens) and hands
them to the task the config names (:mod:`bgd_experiments.tasks`). Everything it calls is
usable from a notebook without Hydra.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bgd_experiments import distributed, tasks
from bgd_experiments.compose import CONFIG_DIR, compose_config
from bgd_experiments.distributed import SINGLE, Ranks
from bgd_experiments.preemption import Terminated, stop_on_termination

log = logging.getLogger("bgd_experiments")


class ConfigError(ValueError):
    """A value in the composed config that the run cannot use."""


def _plain(node: DictConfig, *without: str) -> dict[str, Any]:
    plain = OmegaConf.to_container(node, resolve=True)
    assert isinstance(plain, dict)
    return {key: value for key, value in plain.items() if key not in without}


def _bind(group: str, build: Callable[[], Any], problems: list[str]) -> Any:
    """Build one component from its config group; its complaints, named by the group's
    keys, go to ``problems``."""
    try:
        return build()
    except tasks.SettingsError as error:
        problems.extend(f"{group}.{problem}" for problem in error.problems)
    except (TypeError, ValueError) as error:  # an unknown key, or the component's own check
        problems.append(f"{group}: {error}")
    return None


def _data(cfg: DictConfig) -> tasks.DataSettings:
    return tasks.DataSettings(**_plain(cfg.dataset))


def _trainer(cfg: DictConfig) -> tasks.TrainerSettings:
    return tasks.TrainerSettings(**_plain(cfg.trainer))


# A run's model width: below 1/64 the paper's narrowest layers (64 channels in ResNet18's
# stem) collapse to one channel; above 8 a ResNet18 has over 700M parameters. The builders
# themselves take any width > 0 (a library user may want a toy model).
MIN_WIDTH = 1 / 64
MAX_WIDTH = 8.0


def _check_model(cfg: DictConfig) -> None:
    from bgd_experiments.models._common import validate_builder_args

    width = cfg.model.width
    try:
        validate_builder_args(cfg.dataset.num_classes, width)
        in_range = MIN_WIDTH <= width <= MAX_WIDTH
    except ValueError:
        in_range = False
    if not in_range:
        raise tasks.SettingsError(
            [
                f"width must be > 0, from {MIN_WIDTH:g} to {MAX_WIDTH:g} (1.0 = the paper's "
                f"model), got {width!r}"
            ]
        )


# Seeds reach torch, numpy and Python's generators; numpy's legacy seeding takes 32 bits.
MAX_SEED = 2**32 - 1


def _top_level_problems(cfg: DictConfig) -> list[str]:
    """The keys of train.yaml itself (the groups check their own)."""
    problems = []
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        problems.append(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    if not isinstance(cfg.get("force"), bool):
        problems.append(f"force must be true or false, got {cfg.get('force')!r}")
    results_dir = cfg.get("results_dir")
    if not isinstance(results_dir, str) or not results_dir.strip():
        problems.append(f"results_dir must be a folder path, got {results_dir!r}")
    elif Path(results_dir).expanduser().is_file():
        problems.append(f"results_dir is a file, not a folder: {results_dir}")
    return problems


# Settings for which infinity is a meaningful value (D-Adaptation's unbounded growth rate).
INFINITY_ALLOWED = frozenset({"growth_rate"})


def _non_finite(name: str, value: Any) -> list[str]:
    """Every float of an optimizer setting (betas included) that is NaN, or infinite where
    infinity means nothing."""
    if isinstance(value, list | tuple):
        return [problem for item in value for problem in _non_finite(name, item)]
    if isinstance(value, float) and (
        math.isnan(value) or (math.isinf(value) and name not in INFINITY_ALLOWED)
    ):
        return [f"{name} must be a finite number, got {value}"]
    return []


def _check_optimizer(cfg: DictConfig) -> None:
    lr = cfg.optimizer.lr
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise tasks.SettingsError([f"lr must be a number, got {lr!r}"])
    # The start rate is part of every run's identity, whatever the optimizer.
    if not cfg.optimizer.lr > 0:
        raise tasks.SettingsError([f"lr must be > 0, got {cfg.optimizer.lr}"])
    # torch's own optimizers take lr=inf or momentum=nan and train to NaN without a word.
    settings = _plain(cfg.optimizer, "name", "_target_", "_partial_")
    problems = [problem for key, value in settings.items() for problem in _non_finite(key, value)]
    if problems:
        raise tasks.SettingsError(problems)
    if (
        cfg.optimizer.get("implementation") == "reference"
        and distributed.launched_world_size(str(cfg.trainer.get("distributed", "auto"))) > 1
    ):
        raise tasks.SettingsError(
            ["implementation=reference runs in one process; use fast under torchrun"]
        )
    # Bound to the constructor on a stand-in parameter: the optimizer checks the rest.
    _optimizer_factory(cfg)([torch.zeros(1, requires_grad=True)])


@dataclass(frozen=True)
class Settings:
    """The data and trainer settings of a validated config (None for task=functions)."""

    data: tasks.DataSettings | None = None
    trainer: tasks.TrainerSettings | None = None


def validate(cfg: DictConfig) -> Settings:
    """Build every component the task needs once, and refuse the config with one message
    naming every value that a component rejected; the settings built, for the task."""
    problems: list[str] = _top_level_problems(cfg)
    data = trainer = None
    if cfg.task not in TASKS:
        problems.append(f"task={cfg.task!r} is not one of {', '.join(TASKS)}")
    elif cfg.task != "functions":
        from bgd_experiments.data.cifar import cache_dir_problem

        problems += [problem for problem in [cache_dir_problem()] if problem]
        data = _bind("dataset", lambda: _data(cfg), problems)
        trainer = _bind("trainer", lambda: _trainer(cfg), problems)
        if data is not None and trainer is not None:
            _bind("trainer", lambda: trainer.check_with(data), problems)
        _bind("model", lambda: _check_model(cfg), problems)
        if cfg.task == "search" and not str(cfg.optimizer.name).startswith("mbt_"):
            problems.append(
                f"task=search needs an MBT optimizer (mbt_gd/mmt/nag), got {cfg.optimizer.name}"
            )
        else:
            _bind("optimizer", lambda: _check_optimizer(cfg), problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return Settings(data, trainer)


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


# _convert_="all": the library gets plain lists and dicts, never omegaconf containers (an
# optimizer's betas would otherwise reach its state_dict as a ListConfig, which a checkpoint
# read without running code cannot hold).
def _model_factory(cfg: DictConfig) -> tasks.ModelFactory:
    return instantiate(_plain(cfg.model, "name"), _partial_=True, _convert_="all")


def _optimizer_factory(cfg: DictConfig) -> tasks.OptimizerFactory:
    partial = instantiate(_plain(cfg.optimizer, "name"), _convert_="all")
    return lambda params: partial(params=params)


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's own node."""
    plain = _plain(cfg, "hydra")
    return plain


# The group choices that fix a run's reference config (see bgd_experiments.runfolder).
REFERENCE_GROUPS = ("dataset", "model", "optimizer")
REFERENCE_BUDGET = "paper"


def reference_config(dataset: str, model: str, optimizer: str) -> dict[str, Any]:
    """The fixed reference of every run with these group choices: conf/train.yaml composed
    with them and the paper budget, nothing else (cached; a fresh copy each call: see
    :func:`bgd_experiments.compose.compose_config`). Usable outside bgd-run too
    (scripts/migrate_run_folders.py)."""
    overrides = [
        f"dataset={dataset}",
        f"model={model}",
        f"optimizer={optimizer}",
        f"budget={REFERENCE_BUDGET}",
    ]
    return compose_config(overrides)


def _group_choices(cfg: DictConfig) -> tuple[str, str, str]:
    """The dataset/model/optimizer config files this run was composed with (their names
    equal the files', except where a command line overrode the name itself)."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    dataset, model, optimizer = (
        str(choices.get(group) or cfg[group].name) for group in REFERENCE_GROUPS
    )
    return dataset, model, optimizer


def folder_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run's result-changing settings that differ from its reference config."""
    from bgd_experiments.runfolder import identity_settings as differing

    choices = _group_choices(cfg)
    try:
        reference = reference_config(*choices)
    except Exception as error:  # Hydra's composition errors name the missing piece
        pairs = zip(REFERENCE_GROUPS, choices, strict=True)
        groups = " ".join(f"{group}={choice}" for group, choice in pairs)
        raise ConfigError(
            f"cannot compose the reference config ({groups}) that names run folders: {error}"
        ) from error
    return differing(run_config(cfg), reference)


def _run_spec(
    cfg: DictConfig, ranks: Ranks = SINGLE, settings: Settings | None = None
) -> tasks.RunSpec:
    settings = settings or Settings(_data(cfg), _trainer(cfg))
    return tasks.RunSpec(
        results_dir=str(cfg.results_dir),
        data=settings.data,
        trainer=settings.trainer,
        make_model=_model_factory(cfg),
        make_optimizer=_optimizer_factory(cfg),
        model_name=str(cfg.model.name),
        model_width=float(cfg.model.width),
        optimizer_name=str(cfg.optimizer.name),
        lr=float(cfg.optimizer.lr),
        seed=int(cfg.seed),
        budget=budget_label(cfg),
        config=run_config(cfg),
        force=bool(cfg.force),
        settings=folder_settings(cfg),
        ranks=ranks,
    )


def _fig2(cfg: DictConfig, settings: Settings) -> dict[str, Any]:
    return tasks.fig2(
        cfg.results_dir,
        _plain(cfg.functions),
        _plain(cfg.fig2b),
        data=settings.data,
        trainer=settings.trainer,
        make_model=_model_factory(cfg),
        model_config=_plain(cfg.model),
        seed=int(cfg.seed),
        force=bool(cfg.force),
    )


def _on_ranks(name: str) -> Callable[[DictConfig, Settings], Any]:
    """The task ``tasks.<name>``, which may run as one of several processes (``torchrun``):
    it joins their process group (trainer.distributed; once per process, kept for a
    sweep's next job). Looked up when called, so a test can stand in for it."""

    def run_task(cfg: DictConfig, settings: Settings) -> Any:
        trainer = settings.trainer
        ranks = distributed.start(trainer.distributed, trainer.torch_device)
        return getattr(tasks, name)(_run_spec(cfg, ranks, settings))

    return run_task


TASKS: dict[str, Callable[[DictConfig, Settings], Any]] = {
    "train": _on_ranks("train"),
    "search": _on_ranks("search"),
    "functions": lambda cfg, _: tasks.functions(
        cfg.results_dir, _plain(cfg.functions), bool(cfg.force)
    ),
    "fig2": _fig2,
}


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Execute one job of the composed config; returns the task's result (None if skipped)."""
    settings = validate(cfg)
    if cfg.trainer.get("num_threads") and cfg.task != "functions":
        torch.set_num_threads(int(cfg.trainer.num_threads))
    try:
        return TASKS[cfg.task](cfg, settings)
    except tasks.SettingsError as error:
        raise ConfigError(str(error)) from error


def _refusal(error: Exception) -> str | None:
    """The one-line message of an error that refuses the job (exit 2), else None."""
    from bgd_experiments.data import DatasetError
    from bgd_experiments.io import WriteError
    from bgd_experiments.runfolder import RunFolderError

    if isinstance(error, ConfigError):
        return f"invalid configuration: {error}"
    # RankZeroFailed: rank 0 of a torchrun job said why (with its own exit code). WriteError:
    # a full disk or a read-only folder, the file it was writing left as it was.
    if isinstance(error, DatasetError | RunFolderError | WriteError | distributed.RankZeroFailed):
        return str(error)
    return None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_failure(cfg: DictConfig, kind: str, reason: str) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from bgd_experiments.sweeps import record_failure

    overrides = list(HydraConfig.get().overrides.task)
    log.error("job %s (%s): %s", kind, " ".join(overrides), reason)
    return record_failure(str(cfg.results_dir), overrides, kind, reason)


# Jobs that began in this process (main tells the command line's errors from a job's by it).
_JOBS_STARTED: list[str] = []


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _app(cfg: DictConfig) -> Any:
    """One job. Alone: a refusal exits 2 with one line. In a sweep, a refused or failed job
    is recorded and returned as a failure (the grid-union sweeper counts them), so that the
    sweep goes on. SIGTERM stops the process whatever the mode (a preempted job resumes)."""
    from bgd_experiments.runfolder import CellHeld
    from bgd_experiments.sweeps import FAILED, REFUSED

    _JOBS_STARTED.append(cfg.task)
    multirun = _in_multirun()
    try:
        # SLURM's preemption and time limit, and the local launcher's stop, send SIGTERM.
        with stop_on_termination():
            return run(cfg)
    except Terminated as stop:
        log.warning(
            "stopped by %s: finished epochs are kept in the run folder's checkpoint; "
            "the same command resumes from it",
            stop.signal_name,
        )
        raise
    except Exception as error:
        message = _refusal(error)
        if not multirun:
            if message is None:
                raise
            log.error("%s", message)
            sys.exit(2)
        if isinstance(error, CellHeld):
            # Two sweeps side by side share their cells out this way: not a failure.
            log.info("skipped: %s", error)
            return None
        if message is not None:
            return _job_failure(cfg, REFUSED, message)
        log.exception("the job raised")
        first_line = (str(error).splitlines() or [""])[0]
        return _job_failure(cfg, FAILED, f"{type(error).__name__}: {first_line}")


def _one_line(error: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line composition messages as one line, without the
    config search path (this machine's paths, not the user's mistake)."""
    lines = []
    for line in str(error).splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip() and not line.strip().startswith("full_key:"):
            lines.append(line.strip().rstrip(".:"))
    cause = error.__cause__
    if cause is not None and str(cause).splitlines():
        first = str(cause).splitlines()[0].strip().rstrip(".:")
        if first and first not in lines:
            lines.append(first)
    return "; ".join(lines) or repr(error)


def _error_line(message: str) -> None:
    """One ERROR line in the format of the run's log, where Hydra has set no logging up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None))


def main() -> None:
    """Console entry point of ``bgd-run``.

    Hydra reports a command line it cannot compose (an unknown key, a group option that does
    not exist, a malformed override) in several lines and exits 1. Asked to raise instead
    (HYDRA_FULL_ERROR), such an error reaches here before any job ran, and gets the one line
    and exit status 2 of every other refusal.
    """
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    jobs_before = len(_JOBS_STARTED)
    try:
        _app()
    except Exception as error:  # Hydra raises ValueError too, for a group given a number
        if len(_JOBS_STARTED) > jobs_before:  # a job's own error: not the command line's
            raise
        _error_line(f"invalid command line: {_one_line(error)}")
        sys.exit(2)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


if __name__ == "__main__":
    main()
