"""A Hydra sweeper over a union of grids (Table 2 = 8 baselines x 9 rates + 3 MBT rows).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class GridUnionSweeperConf:
    _target_: str = "hydra_plugins.bgd_grid_sweeper.GridUnionSweeper"
    grids: Any = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper", name="grid_union", node=GridUnionSweeperConf, provider="bgd"
)


def expand_grids(grids: list[dict[str, Any]], arguments: list[str]) -> list[list[str]]:
    """Every job's override list, grid after grid, in a stable order without duplicates."""
    parser = OverridesParser.create()
    command_line = parser.parse_overrides(arguments)
    command_keys = {override.get_key_element() for override in command_line}
    jobs: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for grid in grids or [{}]:
        grid_lines = [f"{key}={value}" for key, value in grid.items() if key not in command_keys]
        choices: list[list[str]] = []
        for override in parser.parse_overrides(grid_lines) + command_line:
            key = override.get_key_element()
            if override.is_sweep_override():
                choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
            else:
                choices.append(
                    [override.input_line or f"{key}={override.get_value_element_as_str()}"]
                )
        for combination in itertools.product(*choices):
            if combination not in seen:
                seen.add(combination)
                jobs.append(list(combination))
    return jobs


class GridUnionSweeper(Sweeper):
    def __init__(self, grids: list[dict[str, str]] | None = None) -> None:
        self.grids = [dict(grid) for grid in grids or []]
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        grids = [OmegaConf.to_container(OmegaConf.create(g)) for g in self.grids]
        jobs = expand_grids(grids, arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("sweeping %d jobs over %d grid(s)", len(jobs), max(1, len(self.grids)))
        return [self.launcher.launch(jobs, initial_job_idx=0)]
