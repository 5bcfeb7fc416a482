"""The numbers typed into results/cpu-long/README.md and results/cpu-momentum-guard/README.md
are the ones their run folders (and results/cpu's, for the faithful rule) give: each known
sentence is parsed and its numbers recomputed from the committed files."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from bgd_experiments.optim import MBTPlateau
from bgd_experiments.reporting.runs import RunRecord, find_run_dirs, read_run

REPO = Path(__file__).resolve().parents[1]
LONG = REPO / "results" / "cpu-long"
GUARD = REPO / "results" / "cpu-momentum-guard"
LABELS = {
    "mbt_mmt": "MBT-MMT",
    "mbt_nag": "MBT-NAG",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
}


def _runs(root: Path) -> list[RunRecord]:
    if not (root / "runs").is_dir():
        pytest.skip(f"no committed run folders in {root.relative_to(REPO)}")
    runs = [read_run(path) for path in find_run_dirs(root)]
    assert all(run is not None for run in runs)
    return [run for run in runs if run is not None]


def _config(run: RunRecord) -> dict[str, Any]:
    return yaml.safe_load((run.path / "config.yaml").read_text())


def _metrics(run: RunRecord) -> list[dict[str, Any]]:
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _search(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text, re.S)
    assert match is not None, f"sentence not found: {pattern!r}"
    return match


def _sig3(value: float) -> float:
    return float(f"{value:.3g}")


def _switch_after(run: RunRecord) -> int | None:
    """The epoch after which the authors' plateau rule fires, replayed on the run's metrics."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    config = _config(run)["optimizer"]
    plateau = MBTPlateau(
        optimizer,
        rule=config["plateau_rule"],
        plateau_patience=config["plateau_patience"],
        stop_patience=config["stop_patience"],
        alpha_after_plateau=config["alpha_after_plateau"],
    )
    for record in _metrics(run):
        plateau.step(record["train_loss"], record["test_acc"])
        if plateau.plateau_reached:
            return int(record["epoch"])
    return None


# ----------------------------------------------------------------------------- cpu-long


def test_cpu_long_settings_commit_and_wall_times() -> None:
    runs = _runs(LONG)
    text = (LONG / "README.md").read_text()
    assert len(runs) == 4
    settings = _search(
        r"ResNet18 at width ([\d.]+), ([\d,]+) class-balanced.*?N = ([\d,]+)\), ([\d,]+) test "
        r"images,\nbatch (\d+), k = (\d+) search batches, (\d+) epochs, searches from (\d+).*?"
        r"\(patience (\d+); alpha ([\de.-]+) -> ([\d.]+), momentum off\) and early stop "
        r"\(patience (\d+)",
        text,
    ).groups()
    width, train, n, test, batch, k, epochs, start, patience, alpha, after, stop = map(
        _number, settings
    )
    for run in runs:
        config = _config(run)
        assert config["model"]["width"] == width
        assert config["dataset"]["train_subset"] == train == n
        assert config["dataset"]["test_subset"] == test
        assert config["trainer"]["batch_size"] == batch
        assert config["trainer"]["epochs"] == epochs == run.epochs_completed
        opt = config["optimizer"]
        assert (opt["num_batches"], opt["lr"], opt["plateau_patience"]) == (k, start, patience)
        assert (opt["alpha"], opt["alpha_after_plateau"]) == (alpha, after)
        assert opt["stop_patience"] == stop and opt["plateau_rule"] == "authors_code"
        assert run.seed == 0 and run.model == "resnet18"

    commit = _search(r"from the clean commit ([0-9a-f]{7})", text).group(1)
    assert all(run.git_commit.startswith(commit) and run.git_dirty is False for run in runs)

    low, high = _search(r"([\d,]+)-([\d,]+) s per run \(`wall_time`", text).groups()
    walls = [run.wall_time for run in runs]
    assert (_number(low), _number(high)) == (round(min(walls)), round(max(walls)))
    # The queues' wall times are in no file: each holds its two runs and at most 1 minute more.
    queue10, queue100 = _search(
        r"([\d,]+) s \(CIFAR-10\)\nand ([\d,]+) s \(CIFAR-100\)", text
    ).groups()
    for dataset, queue in (("cifar10", queue10), ("cifar100", queue100)):
        runs_total = sum(run.wall_time for run in runs if run.dataset == dataset)
        assert runs_total <= _number(queue) <= runs_total + 60, dataset


def test_cpu_long_learning_rate_table() -> None:
    runs = _runs(LONG)
    text = (LONG / "README.md").read_text()
    for run in runs:
        label = f"{LABELS[run.dataset]} {LABELS[run.optimizer]}"
        row = _search(
            rf"\| {label} \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", text
        )
        first, largest, last, switch, best = (cell.strip() for cell in row.groups())
        lrs = [record["lr"] for record in _metrics(run)]
        assert float(first) == _sig3(lrs[0]), label
        assert float(largest) == _sig3(max(lrs)), label
        assert float(last) == _sig3(lrs[-1]), label
        assert best == f"{run.best_test_acc:.1f}", label
        fired = _switch_after(run)
        alphas = [record["search_alpha"] for record in _metrics(run)]
        if switch == "never":
            assert fired is None and set(alphas) == {1e-4}, label
        elif switch.startswith("after epoch"):
            assert fired == int(switch.split()[2]) == len(alphas), label  # no epoch left
            assert set(alphas) == {1e-4}, label
        else:
            epoch = int(switch.removeprefix("epoch "))
            assert fired == epoch - 1, label  # fired after epoch 27: epoch 28 searches at 0.5
            assert alphas.index(0.5) + 1 == epoch, label


def test_cpu_long_findings() -> None:
    runs = {(run.dataset, run.optimizer): run for run in _runs(LONG)}
    text = (LONG / "README.md").read_text()
    lrs = {key: [record["lr"] for record in _metrics(run)] for key, run in runs.items()}

    low, high = map(int, _search(r"grows for most of the run \(x(\d+)-x(\d+)\)", text).groups())
    growth = [max(values) / values[0] for values in lrs.values()]
    assert (round(min(growth), -1), round(max(growth), -1)) == (low, high)

    match = _search(
        r"\(epoch (\d+)\)\. Its rate fell at once from ([\d.]+) to ([\d.]+) \((-\d+)%\),\n"
        r"\s+stayed below that in every later epoch and ended at ([\d.]+)\.",
        text,
    )
    epoch, before, after, change, end = match.groups()
    mmt100 = lrs[("cifar100", "mbt_mmt")]
    i = int(epoch) - 1
    assert (float(before), float(after)) == (round(mmt100[i - 1], 2), round(mmt100[i], 2))
    assert int(change) == round(100 * (mmt100[i] / mmt100[i - 1] - 1))
    assert max(mmt100[i + 1 :]) < mmt100[i] and float(end) == round(mmt100[-1], 2)

    nag, mmt, points = _search(
        r"its rate rose to ([\d.]+) where MBT-MMT's rose\n\s*to ([\d.]+), and it scored "
        r"([\d.]+) points more",
        text,
    ).groups()
    assert float(nag) == _sig3(max(lrs[("cifar10", "mbt_nag")]))
    assert float(mmt) == _sig3(max(lrs[("cifar10", "mbt_mmt")]))
    gap = runs[("cifar10", "mbt_nag")].best_test_acc - runs[("cifar10", "mbt_mmt")].best_test_acc
    assert float(points) == round(gap, 1)

    low, high = map(int, _search(r"are (\d+)-(\d+) points below the paper's", text).groups())
    table = (LONG / "table3.md").read_text()
    resnet = [line for line in table.splitlines() if line.startswith("| ResNet18 |")]
    gaps = [-float(value) for line in resnet for value in re.findall(r"\((-[\d.]+)\)", line)]
    assert len(gaps) == 4
    assert (round(min(gaps)), round(max(gaps))) == (low, high)


# ----------------------------------------------------------------------- momentum guard


def _faithful_runs() -> list[RunRecord]:
    """Table 2's MBT-MMT/NAG runs of results/cpu under the paper protocol, without the guard."""
    root = REPO / "results" / "cpu"
    runs = []
    for optimizer in ("mbt_mmt", "mbt_nag"):
        base = root / "runs" / "cifar10" / "resnet18" / optimizer / "lr=0.01" / "bs=200"
        for path in sorted(base.glob("seed=*/cfg-*")):
            run = read_run(path)
            if run is not None and run.protocol == "paper":
                runs.append(run)
    if not runs:
        pytest.skip("no committed results/cpu runs in this checkout")
    return runs


def test_momentum_guard_table_and_sentences() -> None:
    guarded = _runs(GUARD)
    faithful = _faithful_runs()
    text = (GUARD / "README.md").read_text()
    for run in guarded:
        assert _config(run)["optimizer"]["momentum_guard"] is True
    for run in faithful:
        assert not _config(run)["optimizer"].get("momentum_guard", False)
        assert "optimizer.momentum_guard" not in (run.settings or {})

    width, images, epochs, start = _search(
        r"\(ResNet18 width ([\d.]+), ([\d,]+) CIFAR-10 images, (\d+) epochs, search from "
        r"([\de.-]+), paper protocol\)",
        text,
    ).groups()
    low, high = map(int, _search(r"seeds (\d+)-(\d+), from the clean commit", text).groups())
    commit = _search(r"from the clean commit ([0-9a-f]{7})", text).group(1)
    for run in guarded + faithful:
        config = _config(run)
        assert run.dataset == "cifar10" and run.model == "resnet18" and run.protocol == "paper"
        assert config["model"]["width"] == float(width)
        assert config["dataset"]["train_subset"] == _number(images)
        assert config["trainer"]["epochs"] == int(epochs) == run.epochs_completed
        assert config["optimizer"]["lr"] == float(start) == run.lr
        assert config["optimizer"]["momentum"] == 0.9  # "ten times smaller": 1 - 0.9
        assert run.status == "finished"  # "No run diverged with or without the guard"
    assert all(run.git_commit.startswith(commit) and not run.git_dirty for run in guarded)

    behind = []
    for optimizer in ("mbt_mmt", "mbt_nag"):
        row = _search(rf"\| {LABELS[optimizer]} \| ([^|]+) \| ([^|]+) \|", text)
        means = []
        for cell, runs in zip(row.groups(), (guarded, faithful), strict=True):
            by_seed = sorted((r.seed, r.best_test_acc) for r in runs if r.optimizer == optimizer)
            assert [seed for seed, _ in by_seed] == list(range(low, high + 1))
            values = [acc for _, acc in by_seed]
            mean = statistics.mean(values)
            expected = ", ".join(f"{acc:.1f}" for acc in values) + f" (mean {mean:.1f})"
            assert cell.strip() == expected, optimizer
            means.append(mean)
        behind.append(means[1] - means[0])
    points = int(_search(r"the runs fall about (\d+) points behind", text).group(1))
    assert [round(gap) for gap in behind] == [points, points]


def test_the_schedule_free_warm_up_table_is_the_run_folders():
    import statistics

    import yaml

    folder = Path(__file__).resolve().parents[1] / "results" / "cpu-sf-warmup-val"
    if not (folder / "runs").exists():
        pytest.skip("no committed warm-up runs")
    by_warmup: dict[int, list[dict]] = {}
    for path in folder.rglob("summary.json"):
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        by_warmup.setdefault(config["optimizer"]["warmup_steps"], []).append(
            json.loads(path.read_text())
        )
    text = (folder / "README.md").read_text()
    for warmup, summaries in sorted(by_warmup.items()):
        val = statistics.mean(s["best_val_acc"] for s in summaries)
        tests = [s["test_acc_at_best_val"] for s in summaries]
        row = (
            f"| {warmup} | {len(summaries)} | {val:.2f} | "
            f"{statistics.mean(tests):.2f} +- {statistics.stdev(tests):.2f} |"
        )
        assert row in text
        assert all(s["git_commit"].startswith("7321d79") and not s["git_dirty"] for s in summaries)
    best = max(by_warmup, key=lambda w: statistics.mean(s["best_val_acc"] for s in by_warmup[w]))
    assert best == 20 and "Chosen on validation: 20 steps" in text


# ------------------------------------------------------------- Table 1 at the paper's width

WIDTH1 = REPO / "results" / "cpu-table1-width1"
CPU = REPO / "results" / "cpu"


def _search_cells(root: Path) -> dict[int, dict[str, Any]]:
    """Batch size -> summary of the searches from 1e-2 with seed 0 under ``root``."""
    cells: dict[int, dict[str, Any]] = {}
    for path in (root / "runs" / "search").rglob("summary.json"):
        summary = json.loads(path.read_text())
        run = summary["run"]
        if run["seed"] == 0 and math.isclose(run["lr"], 0.01):
            cells[run["batch_size"]] = summary
    return cells


def test_width1_table1_readme_is_its_run_folders() -> None:
    from bgd_experiments.reporting.paper import paper_cells

    if not (WIDTH1 / "runs").is_dir():
        pytest.skip("no committed width-1 searches")
    text = (WIDTH1 / "README.md").read_text()
    wide, quarter = _search_cells(WIDTH1), _search_cells(CPU)
    paper = {
        cell.batch_size: cell.value for cell in paper_cells(1) if math.isclose(cell.start_lr, 0.01)
    }
    assert sorted(wide) == [200, 400, 800]
    assert {s["run"]["width"] for s in wide.values()} == {1.0}
    for batch, summary in wide.items():
        factor = math.sqrt(batch / 50_000)
        low = quarter[batch]
        row = (
            f"| {batch} | {summary['found_lr']:.4f} | {summary['search']['mean_sigma']:.3f} | "
            f"{low['found_lr']:.4f} | {low['search']['mean_sigma']:.3f} | {paper[batch]:.4f} | "
            f"{paper[batch] / factor:.3f} |"
        )
        assert row in text
        assert not summary["git_dirty"]
    commits = {batch: s["git_commit"][:7] for batch, s in wide.items()}
    assert commits == {800: "ff6354d", 400: "6d1fa5d", 200: "6d1fa5d"}

    growth = _search(
        r"grows x([\d.]+) at width 1 and x([\d.]+) at width 0\.25, against x([\d.]+)", text
    )
    expected = (
        wide[800]["found_lr"] / wide[200]["found_lr"],
        quarter[800]["found_lr"] / quarter[200]["found_lr"],
        paper[800] / paper[200],
    )
    assert [float(value) for value in growth.groups()] == [round(v, 2) for v in expected]
    falls = _search(r"implied sigma falls from (\d\.\d+) to (\d\.\d+)", text)
    implied = [paper[b] / math.sqrt(b / 50_000) for b in (200, 800)]
    assert [float(value) for value in falls.groups()] == [round(v, 3) for v in implied]

    noise = json.loads((CPU / "table1_noise.json").read_text())["widths"]["1"]["searches"]
    baseline = next(s for s in noise if s["family"] == "baseline")
    assert baseline["found_lr"] == wide[200]["found_lr"]
    assert repr(wide[200]["found_lr"]) in text

    times = _search(r"(\d[\d,]*) s at batch 200, (\d[\d,]*) s at 400, (\d[\d,]*) s at 800", text)
    assert [_number(t) for t in times.groups()] == [
        round(wide[b]["wall_time"]) for b in (200, 400, 800)
    ]
