"""The configuration as ``bgd-run`` composes it, for code outside a ``bgd-run`` job.

``compose_config(overrides)`` is ``conf/train.yaml`` composed by Hydra with the given
command-line overrides and resolved into plain data: the reference config that names run
folders, the optimizers' default rates and the budgets of ``bgd-report`` all come from here,
never from parsing the YAML files again. Importing this module imports neither Hydra nor
torch; composing imports Hydra.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Absolute, so the installed commands find the configs from any working directory.
CONFIG_DIR = Path(os.environ.get("BGD_CONFIG_DIR", Path(__file__).resolve().parent.parent / "conf"))
CONFIG_NAME = "train"


def _plain(node: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(node, resolve=True)
    assert isinstance(plain, dict)
    return {key: value for key, value in plain.items() if key != "hydra"}


@functools.cache
def _composed(overrides: tuple[str, ...], config_dir: str | None) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if config_dir is None and GlobalHydra.instance().is_initialized():
        # Inside bgd-run: its own config loader (and search path).
        return _plain(compose(config_name=CONFIG_NAME, overrides=list(overrides)))
    with initialize_config_dir(config_dir=config_dir or str(CONFIG_DIR), version_base="1.3"):
        return _plain(compose(config_name=CONFIG_NAME, overrides=list(overrides)))


def compose_config(
    overrides: Sequence[str] = (), config_dir: str | Path | None = None
) -> dict[str, Any]:
    """``conf/train.yaml`` (of ``config_dir``, default :data:`CONFIG_DIR`) composed with
    ``overrides`` as on bgd-run's command line, resolved, without Hydra's own node (cached;
    a fresh copy each call). Hydra's composition errors are raised as they are."""
    where = None if config_dir is None else str(Path(config_dir).resolve())
    return copy.deepcopy(_composed(tuple(overrides), where))


@functools.cache
def _options(group: str, config_dir: str) -> tuple[str, ...]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return tuple(sorted(loader.get_group_options(group)))


def group_options(group: str, config_dir: str | Path | None = None) -> list[str]:
    """The options of a config group (``optimizer``, ``budget``, ...), as Hydra lists them."""
    return list(_options(group, str(Path(config_dir or CONFIG_DIR).resolve())))
