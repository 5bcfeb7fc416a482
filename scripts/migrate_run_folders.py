"""Move run folders to where bgd-run looks for them today: the ``cfg-<digest>`` layout.

Run folders used to end at ``.../seed=<seed>/``; now a last level ``cfg-<8 hex>`` names every
result-changing setting that differs from the reference config, with the data's hash (see
:mod:`bgd_experiments.runfolder`). For every run folder under ``RESULTS_DIR/runs`` this script
computes that place from the folder's own config.yaml (against the reference config composed
from today's conf/, by the same code as bgd-run), and moves the folder there, adding the
``identity`` block to its config.yaml. A folder already in its place is left alone; a place
that is taken is never overwritten (the folder stays, and the exit code is 1). The same script
re-places folders after a default in conf/ changed. Keys that a config.yaml lacks count as at
their default (they were added to conf after the run).

The data's hash comes from config.yaml's ``data`` block (folders without one are left as
they are and listed). Usage::

    python scripts/migrate_run_folders.py results/cpu --dry-run
    python scripts/migrate_run_folders.py results/cpu
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from bgd_experiments.io import atomic_write_text
from bgd_experiments.reporting.runs import find_run_dirs
from bgd_experiments.runfolder import (
    CFG_PREFIX,
    CONFIG_FILE,
    DATA_KEY,
    IDENTITY_KEY,
    config_run_folder,
    identity_block,
    identity_settings,
    read_config,
    with_data_hash,
    with_data_identity,
)

# Where a folder's files wait while it moves (hidden: the report skips it); a leftover of an
# interrupted migration is finished by the next one.
STAGING_PREFIX = ".migrating-"


def reference_for(config: dict[str, Any]) -> dict[str, Any]:
    """The reference config of this run's dataset/model/optimizer, composed as bgd-run does."""
    from bgd_experiments.cli import reference_config

    names = [
        str((config.get(group) or {}).get("name")) for group in ("dataset", "model", "optimizer")
    ]
    return reference_config(*names)


def place(results_dir: Path, config: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Where the run of ``config`` belongs, and its identity block; ValueError if unknown."""
    config = with_data_identity(config)
    data = config.get(DATA_KEY) or {}
    if data.get("sha256") is None:
        raise ValueError("its data has no recorded hash (config.yaml has no data.sha256)")
    try:
        reference = reference_for(config)
    except Exception as error:  # an unknown group name: Hydra's own error says which
        raise ValueError(f"no reference config: {error}") from None
    settings = with_data_hash(identity_settings(config, reference), data)
    return config_run_folder(results_dir, config, settings), identity_block(settings)


def _move_contents(folder: Path, target: Path) -> None:
    """Move ``folder``'s files (not the cfg- folders of runs nested in it) to ``target``,
    through a hidden staging folder renamed at the end, so ``target`` appears whole."""
    staging = target.parent / f"{STAGING_PREFIX}{target.name}"
    staging.mkdir(parents=True)
    for entry in sorted(folder.iterdir()):
        if entry == staging or (entry.is_dir() and entry.name.startswith(CFG_PREFIX)):
            continue
        os.replace(entry, staging / entry.name)
    os.replace(staging, target)


def _remove_empty_parents(folder: Path, top: Path) -> None:
    current = folder
    while current != top and top in current.parents:
        try:
            current.rmdir()  # only an empty folder
        except OSError:
            return
        current = current.parent


def finish_interrupted(runs_dir: Path, dry_run: bool) -> int:
    """Complete moves that an interrupted migration left in staging folders."""
    finished = 0
    for staging in sorted(runs_dir.rglob(f"{STAGING_PREFIX}*")):
        target = staging.parent / staging.name[len(STAGING_PREFIX) :]
        if target.exists():
            print(f"refused: {staging} (interrupted move) but {target} exists", file=sys.stderr)
            continue
        print(f"{'would finish' if dry_run else 'finished'}: {staging} -> {target}")
        if not dry_run:
            os.replace(staging, target)
        finished += 1
    return finished


def migrate(results_dir: Path, dry_run: bool) -> int:
    runs_dir = results_dir / "runs"
    if not runs_dir.is_dir():
        print(f"no run folders: {runs_dir} does not exist", file=sys.stderr)
        return 2
    finish_interrupted(runs_dir, dry_run)
    moved = in_place = problems = 0
    for folder in find_run_dirs(runs_dir):
        config = read_config(folder / CONFIG_FILE)
        try:
            target, block = place(results_dir, config)
        except ValueError as error:
            print(f"cannot place {folder}: {error}", file=sys.stderr)
            problems += 1
            continue
        if target.resolve() == folder.resolve():
            in_place += 1
            if config.get(IDENTITY_KEY) != block and not dry_run:
                config[IDENTITY_KEY] = block
                atomic_write_text(folder / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
            continue
        if target.exists():
            print(f"refused: {folder} -> {target}: that folder exists", file=sys.stderr)
            problems += 1
            continue
        print(f"{'would move' if dry_run else 'moved'}: {folder} -> {target}")
        moved += 1
        if dry_run:
            continue
        _move_contents(folder, target)
        config[IDENTITY_KEY] = block
        atomic_write_text(target / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        _remove_empty_parents(folder, runs_dir)
    verb = "would move" if dry_run else "moved"
    print(f"{moved} {verb}, {in_place} in place, {problems} not moved")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="e.g. results/cpu (holds runs/)")
    parser.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    args = parser.parse_args(argv)
    return migrate(args.results_dir, args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
