"""A Hydra sweeper over a union of grids (Table 2 = 8 baselines x 9 rates + 3 MBT rows), and
bgd-run's default sweeper: a sweep goes on past a refused or failed job, and exits 1 at the end
with a count of them (the jobs record them in failures.jsonl, see bgd_experiments.sweeps).

Hydra's basic sweeper runs one cartesian product. The paper's Table 2 is two products side
by side, so ``hydra.sweeper.grids`` takes a list of them; each is a mapping
``override key -> comma-separated values`` as in ``hydra.sweeper.params``. Sweep overrides
given on the command line apply to every grid, replacing a grid's own values for the same
key (``seed=0,1,2`` runs every cell three times; ``optimizer.lr=0.1`` narrows a grid).
"""

# No `from __future__ import annotations` here: Hydra imports plugins outside sys.modules,
# where dataclasses cannot resolve string annotations.
import itertools
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class GridUnionSweeperConf:
    _target_: str = "hydra_plugins.bgd_grid_sweeper.GridUnionSweeper"
    grids: Any = field(default_factory=list)
    # As in Hydra's basic sweeper: one grid (used under every entry of `grids`, if any)...
    params: Any = None
    # ... and jobs launched per batch (null: all at once).
    max_batch_size: Any = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="grid_union", node=GridUnionSweeperConf, provider="bgd"
)


def _choices(override: Any) -> list[str]:
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if not override.is_discrete_sweep():
        raise HydraException(f"GridUnionSweeper does not support sweep type {override.value_type}")
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


def union_of(grids: list[dict[str, Any]], params: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The grids to expand: ``params`` under each entry of ``grids`` (the grid's own values
    win), or ``params`` alone when there are no grids."""
    return [{**(params or {}), **grid} for grid in grids] or [dict(params or {})]


def expand_grids(grids: list[dict[str, Any]], arguments: list[str]) -> list[list[str]]:
    """Every job's override list, grid after grid, in a stable order without duplicates.

    Within one grid this is exactly Hydra's basic sweeper: the grid's overrides, then the
    command line's; a key given twice keeps its first place and its last values.
    """
    parser = OverridesParser.create()
    jobs: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for grid in grids or [{}]:
        lines = [f"{key}={value}" for key, value in grid.items()] + list(arguments)
        choices: dict[str, list[str]] = {}
        for override in parser.parse_overrides(lines):
            choices[override.get_key_element()] = _choices(override)
        for combination in itertools.product(*choices.values()):
            if combination not in seen:
                seen.add(combination)
                jobs.append(list(combination))
    return jobs


def _failure_of(result: JobReturn) -> Any:
    """The job's failure (a JobFailure it returned, or the exception it raised), else None."""
    from bgd_experiments.sweeps import FAILED, JobFailure

    if result.status is JobStatus.FAILED:
        # An exception that escaped the job (return_value would raise it again).
        error = result._return_value
        overrides = tuple(result.overrides or ())
        return JobFailure(FAILED, f"{type(error).__name__}: {error}", overrides, None)
    value = result.return_value
    return value if isinstance(value, JobFailure) else None


class GridUnionSweeper(Sweeper):
    def __init__(
        self,
        grids: list[dict[str, str]] | None = None,
        params: dict[str, str] | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        self.grids = [dict(grid) for grid in grids or []]
        self.params = dict(params or {})
        self.max_batch_size = max_batch_size
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        grids = [OmegaConf.to_container(OmegaConf.create(g)) for g in self.grids]
        jobs = expand_grids(union_of(grids, self.params), arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        except OSError as error:
            # The results folder itself: one line saying what to do, not a traceback.
            log.error(
                "cannot write the sweep's folder %s (%s): set results_dir to a folder you can "
                "write",
                sweep_dir,
                error.strerror or error,
            )
            sys.exit(2)
        log.info("sweeping %d jobs over %d grid(s)", len(jobs), max(1, len(self.grids)))
        size = self.max_batch_size if self.max_batch_size and self.max_batch_size > 0 else None
        step = size or max(1, len(jobs))
        returns = []
        failures = []
        for first in range(0, len(jobs), step):
            batch = jobs[first : first + step]
            if self.hydra_context is not None:
                # As the basic sweeper: a job whose overrides do not compose (a typo in a
                # group option) stops the sweep before anything of the batch runs.
                self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=first)
            failures += [f for f in map(_failure_of, results) if f is not None]
            returns.append(results)
        if failures:
            from bgd_experiments.sweeps import summary_line

            log.error("%s", summary_line(failures, len(jobs)))
            sys.exit(1)
        return returns
