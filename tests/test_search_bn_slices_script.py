"""scripts/search_bn_slices.py: one slice is the plain search, more slices normalise each
slice on its own, and the script runs end to end on tiny generated data."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pytest
import torch
from scriptload import load_script
from torch import nn

from bgd_experiments.data import DeviceLoader, load_cifar
from bgd_experiments.models import build_model
from bgd_experiments.optim import MBTSGD
from bgd_experiments.training.loop import search_batches
from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS

WIDTH = 0.0625


def test_one_slice_is_the_plain_search(tiny_cifar10_targz):
    script = load_script("search_bn_slices")
    train = load_cifar("cifar10", tiny_cifar10_targz, "train")
    args = argparse.Namespace(channels_last=False, width=WIDTH, start_lr=0.01, k=3)
    sliced = script.one_search(train.images, train.labels, args, batch_size=10, slices=1, seed=1)

    torch.manual_seed(1)
    model = build_model("resnet18", 10, WIDTH)
    loader = DeviceLoader(train.images, train.labels, 10, shuffle=True, augment="paper", seed=1)
    optimizer = MBTSGD(model.parameters(), lr=0.01, search_every_epoch=False, num_batches=3)
    plain = optimizer.search(
        model, nn.CrossEntropyLoss(), search_batches(loader, 0), num_samples=50_000
    )
    assert sliced["found_lr"] == plain.lr
    assert sliced["mean_sigma"] == plain.mean_sigma
    assert sliced["trials"] == plain.trials


def test_each_slice_is_normalised_on_its_own():
    script = load_script("search_bn_slices")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    inputs, targets = torch.randn(8, 3, 6, 6), torch.randint(0, 10, (8,))
    model(inputs)  # materialise the lazy layer
    whole = script.sliced_loss(1)(model, (inputs, targets))
    halves = script.sliced_loss(2)(model, (inputs, targets))
    by_hand = (
        nn.functional.cross_entropy(model(inputs[:4]), targets[:4])
        + nn.functional.cross_entropy(model(inputs[4:]), targets[4:])
    ) / 2
    assert torch.allclose(halves, by_hand)
    assert not torch.allclose(halves, whole)  # BatchNorm saw other statistics


def test_the_script_writes_every_search_with_its_provenance(tmp_path, tiny_cifar10_targz):
    script = load_script("search_bn_slices")
    out = tmp_path / "bn_slices.json"
    argv = [
        "--batch-sizes=10,20",
        "--slices=1,2",
        "--seeds=0",
        f"--width={WIDTH}",
        "--k=2",
        f"--data={tiny_cifar10_targz}",
        f"--json={out}",
    ]
    assert script.main(argv) == 0
    report = json.loads(out.read_text())
    cells = [(s["batch_size"], s["slices"], s["seed"]) for s in report["searches"]]
    assert cells == [(10, 1, 0), (10, 2, 0), (20, 1, 0), (20, 2, 0)]
    assert all(s["found_lr"] > 0 and s["status"] for s in report["searches"])
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(report["provenance"])
    assert str(tmp_path) not in report["command"]  # files named by name, no output path
    table = [line for line in out.with_suffix(".md").read_text().splitlines() if "|" in line]
    assert len(table) == 2 + 4  # header, separator, one row per (batch, slices)


def test_slices_that_do_not_divide_the_batch_are_refused(tmp_path):
    script = load_script("search_bn_slices")
    with pytest.raises(SystemExit) as refused:
        script.main(["--batch-sizes=10", "--slices=3", f"--json={tmp_path / 'x.json'}"])
    assert refused.value.code == 2


COMMITTED = Path(__file__).resolve().parents[1] / "results" / "cpu" / "table1_bn_slices.json"


def _committed() -> dict:
    if not COMMITTED.is_file():
        pytest.skip("no committed BatchNorm-slices searches")
    return json.loads(COMMITTED.read_text())


def test_the_committed_table_is_its_searches_rendered_from_a_clean_commit():
    script = load_script("search_bn_slices")
    report = _committed()
    assert report["provenance"]["git_dirty"] is False
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(report["provenance"])
    cells = {(s["batch_size"], s["slices"], s["seed"]) for s in report["searches"]}
    assert cells == {(b, n, seed) for b in (200, 400, 800) for n in (1, 2, 4) for seed in (0, 1, 2)}
    assert COMMITTED.with_suffix(".md").read_text() == script.markdown(report)


def test_the_width1_readme_quotes_the_sliced_sigmas():
    report = _committed()
    text = (COMMITTED.parents[1] / "cpu-table1-width1" / "README.md").read_text()

    def sigmas(batch: int) -> str:
        means = [
            statistics.mean(
                s["mean_sigma"]
                for s in report["searches"]
                if s["batch_size"] == batch and s["slices"] == slices
            )
            for slices in (1, 2, 4)
        ]
        return "{:.3f}, {:.3f} and {:.3f}".format(*means)

    flat = " ".join(text.split())
    commit = report["provenance"]["git_commit"][:7]
    assert f"seeds 0-2, clean commit {commit})" in flat
    assert f"at batch 800 the mean accepted sigma is {sigmas(800)}" in flat
    assert f"at batch 200 {sigmas(200)}." in flat


def test_the_paper_names_no_gpu_as_the_width1_readme_says():
    paper = COMMITTED.parents[3] / "shared" / "paper"
    paper = paper / "truong-nguyen-2020-backtracking-gd-part2.txt"
    if not paper.is_file():
        pytest.skip("the paper's text is absent")
    readme = (COMMITTED.parents[1] / "cpu-table1-width1" / "README.md").read_text()
    assert "its text never\n  mentions a GPU" in readme
    assert "gpu" not in paper.read_text().lower()
