"""The training library without Hydra: run folders, the loop's divergence check, summaries."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml
from torch import nn

from bgd_experiments.data import DeviceLoader
from bgd_experiments.io import read_json, read_jsonl
from bgd_experiments.runfolder import config_differences
from bgd_experiments.training import (
    RunFolderConflict,
    RunIdentity,
    RunStatus,
    fit,
    lr_tag,
    prepare_run_folder,
    run_folder,
    summarize,
    train_one_epoch,
)


def identity(**changes) -> RunIdentity:
    fields = dict(
        task="train",
        dataset="cifar10",
        model="tiny",
        optimizer="sgd",
        lr=0.1,
        batch_size=8,
        seed=0,
        epochs=2,
        width=1.0,
        train_subset=None,
        augment="none",
        budget=None,
        data_source="generated",
    )
    return RunIdentity(**{**fields, **changes})


def tiny_problem(samples: int = 64) -> tuple[nn.Module, DeviceLoader, DeviceLoader]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(samples) % 4
    images = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8, generator=generator)
    images[:, 0] = (labels * 60).to(torch.uint8)[:, None, None]  # a learnable signal
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4)
    )
    model(torch.zeros(1, 3, 32, 32))
    train = DeviceLoader(images, labels, 16, shuffle=True, seed=0)
    test = DeviceLoader(images, labels, 32, shuffle=False)
    return model, train, test


class Reiterable:
    def __init__(self, loader: DeviceLoader) -> None:
        self.loader = loader

    def __iter__(self):
        return self.loader.epoch(0)


def test_run_folders_are_named_by_the_config(tmp_path):
    path = run_folder(
        tmp_path, identity(model="resnet18", optimizer="mbt_nag", lr=1e-6, batch_size=200, seed=2)
    )
    assert path == tmp_path / "runs/cifar10/resnet18/mbt_nag/lr=1e-06/bs=200/seed=2"
    search = run_folder(
        tmp_path,
        identity(task="search", model="resnet18", optimizer="mbt_gd", lr=100.0, batch_size=12),
    )
    assert search.parts[-7:] == (
        "search",
        "cifar10",
        "resnet18",
        "mbt_gd",
        "lr=100",
        "bs=12",
        "seed=0",
    )
    assert lr_tag(0.1) == "0.1" and lr_tag(1e-5) == "1e-05"
    with pytest.raises(ValueError, match="task"):
        run_folder(tmp_path, identity(task="fig2"))


def test_config_differences_ignore_where_it_runs_but_not_what_it_computes():
    old = {
        "trainer": {"device": "cpu", "epochs": 2},
        "model": {"width": 0.25},
        "budget": {"width": 0.25},
    }
    new = {
        "trainer": {"device": "cuda", "epochs": 5, "channels_last": True},
        "model": {"width": 0.5},
        "budget": {"width": 1.0},
    }
    assert config_differences(old, new) == ["model.width: 0.25 -> 0.5"]


def test_prepare_run_folder_resumes_skips_and_refuses_other_configs(tmp_path):
    run_dir = tmp_path / "run"
    config = {"optimizer": {"lr": 0.1}}
    assert prepare_run_folder(run_dir, config, force=False) is RunStatus.NEW
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == config
    (run_dir / "checkpoint.pt").write_bytes(b"x")
    assert prepare_run_folder(run_dir, config, force=False) is RunStatus.INCOMPLETE
    (run_dir / "summary.json").write_text("{}")
    assert prepare_run_folder(run_dir, config, force=False) is RunStatus.FINISHED
    with pytest.raises(RunFolderConflict, match=re.escape("optimizer.lr: 0.1 -> 0.2")):
        prepare_run_folder(run_dir, {"optimizer": {"lr": 0.2}}, force=False)
    assert prepare_run_folder(run_dir, {"optimizer": {"lr": 0.2}}, force=True) is RunStatus.NEW
    assert not (run_dir / "summary.json").exists()


def test_train_one_epoch_stops_at_the_first_non_finite_loss():
    model, train, _ = tiny_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e30)
    stats = train_one_epoch(model, optimizer, nn.CrossEntropyLoss(), train.epoch(0))
    assert stats.diverged and not math.isfinite(stats.loss)
    assert stats.steps < len(train)


def test_fit_from_a_notebook_writes_metrics_summary_and_resumes(tmp_path):
    model, train, test = tiny_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    summary = fit(
        model,
        optimizer,
        train,
        Reiterable(test),
        epochs=3,
        run_dir=tmp_path,
        identity=identity(epochs=3),
        progress="plain",
        tensorboard=False,
    )
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert summary == read_json(tmp_path / "summary.json")
    assert summary["best_test_acc"] == max(r["test_acc"] for r in records)
    # Extending a finished run: the checkpoint is the resume point, history is kept.
    (tmp_path / "summary.json").unlink()
    model2, _, _ = tiny_problem()
    optimizer2 = torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)
    longer = fit(
        model2,
        optimizer2,
        train,
        Reiterable(test),
        epochs=4,
        run_dir=tmp_path,
        identity=identity(epochs=4),
        progress="plain",
        tensorboard=False,
    )
    assert longer["epochs_completed"] == 4
    assert read_jsonl(tmp_path / "metrics.jsonl")[:3] == records


def test_fit_in_channels_last_matches_the_contiguous_layout(tmp_path):
    """The trainer's default NHWC layout is a speed choice: same training up to rounding."""
    histories = []
    for channels_last in (False, True):
        model, train, test = tiny_problem()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            train.memory_format = test.memory_format = torch.channels_last
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        fit_quietly(model, optimizer, train, Reiterable(test), tmp_path / str(channels_last), 2)
        assert model[0].weight.is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        histories.append(read_jsonl(tmp_path / str(channels_last) / "metrics.jsonl"))
    # Rounding differences (different conv kernels) grow a little with every step.
    for plain, nhwc in zip(*histories, strict=True):
        assert nhwc["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-3)
        assert nhwc["test_loss"] == pytest.approx(plain["test_loss"], rel=1e-3)


def test_summarize_reports_the_clean_protocol_when_validated():
    history = [
        {"epoch": 1, "test_acc": 50.0, "val_acc": 60.0, "train_loss": 1.0},
        {"epoch": 2, "test_acc": 55.0, "val_acc": 58.0, "train_loss": 0.9},
    ]
    summary = summarize(history, status="finished", identity=identity())
    assert (summary["best_test_acc"], summary["best_epoch"]) == (55.0, 2)
    assert (summary["best_val_acc"], summary["test_acc_at_best_val"]) == (60.0, 50.0)
    empty = summarize([], status="diverged", identity=identity())
    assert empty["best_test_acc"] is None and empty["epochs_completed"] == 0


def fit_quietly(
    model, optimizer, train, test, run_dir, epochs: int, *, name: str = "sgd", **options
) -> dict:
    """``fit`` without TensorBoard or a progress display, its identity that of optimizer
    ``name`` trained ``epochs`` epochs."""
    return fit(
        model,
        optimizer,
        train,
        test,
        epochs=epochs,
        run_dir=run_dir,
        identity=identity(optimizer=name, epochs=epochs),
        progress="plain",
        tensorboard=False,
        **options,
    )


def _ascending_run(run_dir, epochs: int, patience: int | None) -> dict:
    """A baseline that never improves: SGD climbing the loss (training loss up, accuracy
    not above its first value)."""
    model, train, test = tiny_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, maximize=True)
    return fit_quietly(
        model, optimizer, train, Reiterable(test), run_dir, epochs, baseline_stop_patience=patience
    )


def test_baseline_stops_one_epoch_after_the_authors_patience_is_reached(tmp_path):
    # Patience min(train-loss, test-acc) after epochs 1, 2, 3: 0, 1, 2 -> the authors' loop
    # (op_main.py) still runs epoch 4, then stops.
    summary = _ascending_run(tmp_path / "a", epochs=10, patience=2)
    records = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    losses = [r["train_loss"] for r in records]
    assert losses == sorted(losses) and len(set(losses)) == len(losses), "never improves"
    assert summary["status"] == "stopped_early" and summary["epochs_completed"] == 4
    assert read_json(tmp_path / "a" / "summary.json")["status"] == "stopped_early"
    # Interrupted after epoch 3 (the stop pending) and resumed: the same stop.
    first = _ascending_run(tmp_path / "b", epochs=3, patience=2)
    assert first["status"] == "finished"
    (tmp_path / "b" / "summary.json").unlink()
    resumed = _ascending_run(tmp_path / "b", epochs=10, patience=2)
    assert resumed["status"] == "stopped_early" and resumed["epochs_completed"] == 4


@pytest.mark.parametrize("off", [None, 0])
def test_baseline_early_stop_can_be_switched_off(tmp_path, off):
    summary = _ascending_run(tmp_path, epochs=6, patience=off)
    assert summary["status"] == "finished" and summary["epochs_completed"] == 6


def test_metrics_lines_are_strict_json() -> None:
    from bgd_experiments.io import json_line

    line = json_line({"epoch": 3, "test_loss": float("nan"), "x": [float("inf"), 1.5]})
    assert json.loads(line, parse_constant=pytest.fail) == {
        "epoch": 3,
        "test_loss": None,
        "x": [None, 1.5],
    }


def test_the_stop_decision_survives_a_lost_summary(tmp_path):
    # Stopped early after epoch 4: with summary.json lost, the resumed run trains no epoch
    # more (the checkpoint says it stopped), even when asked for more epochs.
    stopped = _ascending_run(tmp_path, epochs=10, patience=2)
    assert stopped["epochs_completed"] == 4 and stopped["epochs_requested"] == 10
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["stopped"] == {"status": "stopped_early", "epoch": 4}
    (tmp_path / "summary.json").unlink()
    resumed = _ascending_run(tmp_path, epochs=20, patience=2)
    assert resumed["status"] == "stopped_early" and resumed["epochs_completed"] == 4
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]


def test_divergence_is_recorded_in_the_checkpoint(tmp_path):
    def diverging_run() -> dict:
        model, train, test = tiny_problem()
        optimizer = torch.optim.SGD(model.parameters(), lr=float("inf"))
        return fit_quietly(model, optimizer, train, Reiterable(test), tmp_path, 5)

    first = diverging_run()
    assert first["status"] == "diverged"
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["stopped"]["status"] == "diverged"
    (tmp_path / "summary.json").unlink()
    again = diverging_run()
    assert again["status"] == "diverged"
    assert again["epochs_completed"] == first["epochs_completed"]
