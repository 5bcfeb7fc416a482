"""Rewrite run files that name their data by a machine path into name + content hash.

Run folders written before the data was named by content record ``dataset.root`` (config.yaml)
and ``run.data_source`` (summary.json) as the absolute path of the machine they ran on, e.g.
``/work/shared/data/cifar10-jpeg.tar.gz``. This script hashes the archive (found at that path,
or by its file name under ``--data-dir``) and rewrites, in place:

- config.yaml: ``dataset.root`` -> the archive's name, plus a ``data: {name, sha256}`` block;
- summary.json: ``run.data_source`` -> "<dataset> from <name> (sha256 <hash>)", plus
  ``run.data``;
- fig2b.json: ``request.dataset.source`` the same way (so ``make fig2`` still skips it).

Everything else in the files is kept as it was (same key order, same dump style as the
writers). Idempotent: files already migrated are left alone. Usage::

    python scripts/migrate_data_provenance.py results/cpu --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bgd_experiments.data import DatasetError, data_identity, describe_data
from bgd_experiments.io import atomic_write_json, atomic_write_text

DOWNLOAD_SUFFIX = " (torchvision download)"


class Migrator:
    """Finds and hashes each legacy data path once, and rewrites files that name one."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.identities: dict[tuple[str, str], dict[str, str | None]] = {}
        self.counts: Counter[str] = Counter()

    def identity(self, dataset: str, root: str) -> dict[str, str | None] | None:
        """Name + hash of the data once at ``root``; None if it is found nowhere here."""
        key = (dataset, root)
        if key not in self.identities:
            candidates = [Path(root), self.data_dir / Path(root).name]
            found = next((path for path in candidates if path.exists()), None)
            identity = None
            if found is not None:
                try:
                    identity = data_identity(dataset, found)
                except DatasetError:
                    identity = None
            if identity is None or identity["sha256"] is None:
                print(
                    f"cannot find {dataset} data {root} (nor under {self.data_dir})",
                    file=sys.stderr,
                )
                identity = None
            self.identities[key] = identity  # type: ignore[assignment]
        return self.identities[key]

    def source_text(self, legacy: str) -> tuple[str, dict[str, Any]] | None:
        """The new data_source text and identity for a legacy "<dataset> from <path>" text."""
        dataset, sep, root = legacy.partition(" from ")
        if not sep or "/" not in root or dataset not in ("cifar10", "cifar100"):
            return None  # already portable, or not written by bgd-run
        download = root.endswith(DOWNLOAD_SUFFIX)
        root = root.removesuffix(DOWNLOAD_SUFFIX)
        identity = self.identity(dataset, root)
        if identity is None:
            return None
        return describe_data(dataset, identity, download), identity

    def config(self, path: Path) -> None:
        config = yaml.safe_load(path.read_text()) or {}
        dataset = config.get("dataset")
        if "data" in config or not isinstance(dataset, dict) or "/" not in str(dataset.get("root")):
            self.counts["config.yaml unchanged"] += 1
            return
        identity = self.identity(str(dataset["name"]), str(dataset["root"]))
        if identity is None:
            self.counts["config.yaml data not found"] += 1
            return
        dataset["root"] = identity["name"]
        config["data"] = dict(identity)
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
        self.counts["config.yaml migrated"] += 1

    def summary(self, path: Path) -> None:
        summary = json.loads(path.read_text())
        run = summary.get("run") if isinstance(summary, dict) else None
        new = None
        if isinstance(run, dict) and isinstance(run.get("data_source"), str):
            new = self.source_text(run["data_source"])
        if new is None:
            self.counts["summary.json unchanged"] += 1
            return
        run["data_source"], run["data"] = new[0], dict(new[1])
        atomic_write_json(path, summary)
        self.counts["summary.json migrated"] += 1

    def fig2b(self, path: Path) -> None:
        payload = json.loads(path.read_text())
        dataset = payload.get("request", {}).get("dataset", {})
        new = self.source_text(str(dataset.get("source", "")))
        if new is None:
            self.counts["fig2b.json unchanged"] += 1
            return
        dataset["source"] = new[0]
        atomic_write_json(path, payload)
        self.counts["fig2b.json migrated"] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=Path, help="e.g. results/cpu")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("../shared/data"),
        help="where to find archives whose recorded path does not exist here",
    )
    args = parser.parse_args(argv)
    migrator = Migrator(args.data_dir)
    for path in sorted(args.results_dir.rglob("config.yaml")):
        if not any(part.startswith(".") for part in path.relative_to(args.results_dir).parts):
            migrator.config(path)
    for path in sorted(args.results_dir.rglob("summary.json")):
        migrator.summary(path)
    for path in sorted(args.results_dir.glob("fig2b.json")):
        migrator.fig2b(path)
    for (dataset, root), identity in sorted(migrator.identities.items()):
        print(f"{dataset} {root} -> {identity}")
    for what, count in sorted(migrator.counts.items()):
        print(f"{count:5d} {what}")
    return 1 if any("not found" in what for what in migrator.counts) else 0


if __name__ == "__main__":
    raise SystemExit(main())
