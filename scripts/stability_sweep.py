"""When do MBT-MMT/NAG diverge? A small CPU sweep on synthetic data (single thread).

Grid: model (MLP, tiny CNN) x batch (50, 200) x optimizer (MBT-GD/MMT/NAG) x momentum
(0.9, 0.5; MBT-GD has none) x guard (off = faithful, on = momentum_guard) x seeds. A run
"diverges" when its epoch loss is non-finite or exceeds 10x its first epoch's.
Writes results/stability/sweep.csv (a row per run), table.md (a row per cell, its seeds side
by side) and provenance.json (commit, dirty flag, versions, machine, arguments, wall time).

    nice python scripts/stability_sweep.py [--epochs 6] [--seeds 0 1] [--n 2000]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bgd_experiments.optim import MBTSGD
from bgd_experiments.reporting import Grid, Report, Section, render_md
from bgd_experiments.training.provenance import artefact_provenance, made_from

DATA = "none (synthetic 10-class task: Gaussian 8x8 inputs labelled by a random linear teacher)"
CELL = ("model", "batch", "optimizer", "momentum", "guard")


def make_model(kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 16, 10),
    )  # fmt: skip


def run(kind: str, batch: int, name: str, momentum: float, guard: bool, seed: int, args) -> dict:
    torch.manual_seed(seed)
    x = torch.randn(args.n, 1, 8, 8)
    teacher = nn.Linear(64, 10)
    y = teacher(x.flatten(1)).argmax(1)  # a learnable synthetic 10-class task
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
    model = make_model(kind)
    loss_fn = nn.CrossEntropyLoss()
    mom = 0.0 if name == "mbt_gd" else momentum
    opt = MBTSGD(
        model.parameters(), lr=1e-2, momentum=mom, nesterov=name == "mbt_nag",
        search_every_epoch=name != "mbt_gd", num_batches=args.search_batches,
        momentum_guard=guard,
    )  # fmt: skip
    losses, lrs = [], []
    for epoch in range(args.epochs):
        if opt.needs_search(epoch):
            opt.search(model, loss_fn, loader, num_samples=args.n)
        lrs.append(opt.param_groups[0]["lr"])
        total = 0.0
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
        losses.append(total / args.n)
        if not math.isfinite(losses[-1]):
            break
    worst = max(losses) if all(map(math.isfinite, losses)) else math.inf
    diverged = not math.isfinite(worst) or worst > 10 * losses[0]
    return {
        "model": kind, "batch": batch, "optimizer": name, "momentum": mom, "guard": guard,
        "seed": seed, "diverged": diverged, "first_loss": f"{losses[0]:.4g}",
        "last_loss": f"{losses[-1]:.4g}", "max_loss": f"{worst:.4g}",
        "max_lr": f"{max(lrs):.4g}",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--search-batches", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--out", default="results/stability")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Read before anything is written: the outputs are tracked files of the checkout.
    made = artefact_provenance(DATA)
    rows = []
    started = time.time()
    for kind in args.models:
        for batch in (50, 200):
            for name in ("mbt_gd", "mbt_mmt", "mbt_nag"):
                for momentum in (0.9,) if name == "mbt_gd" else (0.9, 0.5):
                    for guard in (False,) if name == "mbt_gd" else (False, True):
                        for seed in args.seeds:
                            rows.append(run(kind, batch, name, momentum, guard, seed, args))
                            print(rows[-1], flush=True)
    with (out / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    provenance = {
        **made,
        # The output folder is a path of this machine, not a setting of the sweep.
        "args": {key: value for key, value in vars(args).items() if key != "out"},
        "seconds": round(time.time() - started, 1),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    (out / "table.md").write_text(summary_table(read_sweep(out / "sweep.csv"), provenance))


def read_sweep(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def summary_table(rows: list[dict[str, str]], provenance: dict) -> str:
    """A row per cell (model, batch, optimizer, momentum, guard), its seeds side by side."""
    cells: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        cells.setdefault(tuple(row[key] for key in CELL), []).append(row)

    def seeds(runs: list[dict[str, str]], column: str) -> str:
        return " / ".join(run[column] for run in runs)

    grid = Grid(
        columns=(
            "model", "batch", "optimizer", "momentum", "guard", "diverged (seeds)",
            "max epoch loss", "last loss", "max lr",
        ),
        rows=[
            (
                *cell[:4], "on" if cell[4] == "True" else "off",
                f"{sum(run['diverged'] == 'True' for run in runs)}/{len(runs)}",
                seeds(runs, "max_loss"), seeds(runs, "last_loss"), seeds(runs, "max_lr"),
            )
            for cell, runs in cells.items()
        ],
        label_columns=5,
    )  # fmt: skip
    args = provenance["args"]
    made = (
        f"Made from {made_from(provenance)} on "
        f"{provenance['device']} in {provenance['seconds']:.0f} s: {args['n']} samples, "
        f"{args['epochs']} epochs, {args['search_batches']} search batches, seeds "
        f"{', '.join(map(str, args['seeds']))}; data: {provenance['data']}."
    )
    return render_md(Report(sections=[Section(grid=grid)], provenance=made))


if __name__ == "__main__":
    main()
