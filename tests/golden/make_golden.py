"""Regenerate the fabricated run folders in ``tests/golden/results`` (checked in).

These folders imitate what the training code writes (config.yaml, metrics.jsonl,
summary.json) for a handful of cells of Tables 1-3, including a diverged cell, an
interrupted one (torn last line, no summary), two seeds of one cell, runs in folders whose
path says nothing (identity must come from the files) and a Hydra ``.hydra`` decoy.
Run: ``python tests/golden/make_golden.py`` (it rewrites the folder from scratch).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent / "results"
RUNS = ROOT / "runs"
COMMON = {"epochs": 6, "width": 0.25, "train_subset": 1000, "augment": "paper", "budget": "smoke"}
SOURCE = "fabricated golden data"


def _config(run: dict[str, Any]) -> dict[str, Any]:
    """A resolved config in the layout the Hydra shell is expected to write."""
    return {
        "task": run["task"],
        "seed": run["seed"],
        "dataset": {
            "name": run["dataset"],
            "train_subset": run["train_subset"],
            "augment": run["augment"],
        },
        "model": {"name": run["model"], "width": run["width"]},
        "optimizer": {"name": run["optimizer"], "lr": run["lr"]},
        "trainer": {"epochs": run["epochs"], "batch_size": run["batch_size"]},
        "budget": {"name": run["budget"]},
    }


def _epoch(
    epoch: int, test_acc: float, lr: float, alpha: float | None = None, momentum: bool = True
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": round(2.3 - 0.2 * epoch, 4),
        "train_acc": round(test_acc + 2.0, 2),
        "test_loss": round(2.2 - 0.15 * epoch, 4),
        "test_acc": test_acc,
        "lr": lr,
        "epoch_time": 1.5,
        "forward_passes": 5 * epoch,
        "backward_passes": 5 * epoch,
    }
    if alpha is not None:
        record.update(
            search_lr=lr,
            search_alpha=alpha,
            momentum_enabled=momentum,
            search_trials=12,
            search_time=0.2,
            search_status="ok",
        )
    return record


def _write_run(
    folder: Path,
    run: dict[str, Any],
    metrics: list[dict[str, Any]],
    status: str | None,
    extra: dict[str, Any] | None = None,
    torn_tail: str | None = None,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(_config(run), sort_keys=False))
    if metrics or torn_tail:
        lines = [json.dumps(record) for record in metrics]
        text = "\n".join(lines) + ("\n" if lines else "")
        (folder / "metrics.jsonl").write_text(text + (torn_tail or ""))
    if status is None:
        return  # interrupted: no summary
    accs = [record["test_acc"] for record in metrics]
    summary: dict[str, Any] = {
        "status": status,
        "run": run,
        "best_test_acc": max(accs) if accs else None,
        "best_epoch": accs.index(max(accs)) + 1 if accs else None,
        "final_test_acc": accs[-1] if accs else None,
        "epochs_completed": len(metrics),
        "wall_time": 9.0,
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "git_dirty": False,
        "versions": {"python": "3.11", "torch": "2.14.1"},
        "device": "cpu",
    }
    summary.update(extra or {})
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _run(task: str, dataset: str, model: str, optimizer: str, lr: float, bs: int, seed: int):
    return {
        "task": task,
        "dataset": dataset,
        "model": model,
        "optimizer": optimizer,
        "lr": lr,
        "batch_size": bs,
        "seed": seed,
        **COMMON,
        "data_source": SOURCE,
    }


def _standard_path(run: dict[str, Any]) -> Path:
    base = RUNS / "search" if run["task"] == "search" else RUNS
    return (
        base
        / run["dataset"]
        / run["model"]
        / run["optimizer"]
        / f"lr={run['lr']:g}"
        / f"bs={run['batch_size']}"
        / f"seed={run['seed']}"
    )


def _constant(accs: list[float], lr: float) -> list[dict[str, Any]]:
    return [_epoch(i + 1, acc, lr) for i, acc in enumerate(accs)]


def _mbt(accs: list[float], lrs: list[float], switch_epoch: int) -> list[dict[str, Any]]:
    """MBT epochs: alpha 1e-4 (momentum on) until ``switch_epoch``, then 0.5 (momentum off)."""
    records = []
    for i, (acc, lr) in enumerate(zip(accs, lrs, strict=True)):
        epoch = i + 1
        switched = epoch >= switch_epoch
        records.append(_epoch(epoch, acc, lr, 0.5 if switched else 1e-4, not switched))
    return records


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)

    # ---- Table 2 baselines (ResNet18, CIFAR-10, batch 200).
    sgd = "sgd"
    for seed, accs in (
        (0, [40.0, 52.5, 61.0, 60.0, 59.5, 58.0]),
        (1, [41.0, 55.0, 63.0, 62.5, 62.0, 61.0]),
    ):
        run = _run("train", "cifar10", "resnet18", sgd, 0.1, 200, seed)
        _write_run(_standard_path(run), run, _constant(accs, 0.1), "finished")
    run = _run("train", "cifar10", "resnet18", sgd, 10.0, 200, 0)
    _write_run(_standard_path(run), run, _constant([10.0, 10.0], 10.0), "diverged")
    run = _run("train", "cifar10", "resnet18", "adam", 100.0, 200, 0)
    _write_run(_standard_path(run), run, [], "diverged", {"best_test_acc": None})
    # Interrupted MMT run in a folder whose path says nothing: identity from config.yaml.
    run = _run("train", "cifar10", "resnet18", "mmt", 0.1, 200, 0)
    _write_run(
        RUNS / "interrupted" / "mmt_run",
        run,
        _constant([35.0, 47.25], 0.1),
        None,
        torn_tail='{"epoch": 3, "train_loss": 1.',
    )
    # NAG ended by the plateau rule, with validation fields, also in an uninformative path.
    run = _run("train", "cifar10", "resnet18", "nag", 0.1, 200, 0)
    _write_run(
        RUNS / "moved_by_hand" / "nag_run",
        run,
        _constant([45.0, 58.0, 64.5, 64.0], 0.1),
        "stopped_early",
        {"best_val_acc": 63.0, "test_acc_at_best_val": 63.75},
    )

    # ---- MBT rows of Table 2 (from 1e-2); also ResNet18/CIFAR-10 of Table 3 and Figure 3.
    run = _run("train", "cifar10", "resnet18", "mbt_gd", 0.01, 200, 0)
    _write_run(
        _standard_path(run), run, _constant([42.0, 55.0, 60.0, 59.0, 58.5, 58.0], 0.031), "finished"
    )
    run = _run("train", "cifar10", "resnet18", "mbt_mmt", 0.01, 200, 0)
    lrs = [0.02, 0.035, 0.05, 0.045, 0.004, 0.003]
    accs = [44.0, 56.0, 61.5, 63.0, 66.0, 65.5]
    _write_run(_standard_path(run), run, _mbt(accs, lrs, switch_epoch=5), "finished")
    run = _run("train", "cifar10", "resnet18", "mbt_nag", 0.01, 200, 0)
    lrs = [0.021, 0.04, 0.052, 0.006, 0.005, 0.0045]
    accs = [45.0, 57.5, 62.0, 66.5, 67.25, 67.0]
    _write_run(_standard_path(run), run, _mbt(accs, lrs, switch_epoch=4), "finished")

    # ---- Table 3 (search started from 100, as in the authors' Table-3 script).
    run = _run("train", "cifar100", "resnet18", "mbt_mmt", 100.0, 200, 0)
    lrs = [0.015, 0.03, 0.04, 0.038, 0.036, 0.005]
    accs = [8.0, 15.0, 22.0, 27.0, 29.5, 30.0]
    _write_run(_standard_path(run), run, _mbt(accs, lrs, switch_epoch=6), "finished")
    run = _run("train", "cifar100", "resnet18", "mbt_nag", 100.0, 200, 0)
    lrs = [0.016, 0.032, 0.041, 0.039, 0.006, 0.005]
    accs = [9.0, 16.0, 23.5, 28.0, 31.5, 31.0]
    _write_run(_standard_path(run), run, _mbt(accs, lrs, switch_epoch=5), "finished")
    run = _run("train", "cifar10", "mobilenetv2", "mbt_nag", 100.0, 200, 0)
    lrs = [0.03, 0.05, 0.06, 0.055, 0.05, 0.052]
    accs = [40.0, 50.0, 58.0, 57.0, 57.5, 56.0]
    _write_run(_standard_path(run), run, _mbt(accs, lrs, switch_epoch=99), "finished")

    # ---- Table 1 search-only runs (MBT-GD search, ResNet18, CIFAR-10).
    for bs, start, found in (
        (200, 100.0, 0.05),
        (200, 1e-2, 0.055),
        (200, 1e-6, 0.045),
        (12, 1.0, 0.012),
        (12, 1e-6, 0.02),
    ):
        run = {**_run("search", "cifar10", "resnet18", "mbt_gd", start, bs, 0), "epochs": 0}
        search = {
            "lr": found,
            "mean_sigma": found * 7.0,
            "sigmas": [found * 7.0] * 3,
            "start_lr": start,
            "alpha": 1e-4,
            "trials": 40,
            "forward_passes": 60,
            "backward_passes": 20,
            "wall_time": 0.5,
            "status": "ok",
            "message": "",
        }
        _write_run(
            _standard_path(run),
            run,
            [],
            "finished",
            {"best_test_acc": None, "final_test_acc": None, "found_lr": found, "search": search},
        )

    # ---- Decoy: Hydra's own config is not a run.
    decoy = ROOT / ".hydra"
    decoy.mkdir(parents=True, exist_ok=True)
    (decoy / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "cifar10"},
                "model": {"name": "resnet18"},
                "optimizer": {"name": "sgd", "lr": 1e-3},
            }
        )
    )


if __name__ == "__main__":
    main()
