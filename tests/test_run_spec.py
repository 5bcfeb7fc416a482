"""A run spec built by hand, without Hydra: validated when built, trained by tasks.train."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
import yaml

from bgd_experiments import tasks
from bgd_experiments.models import build_model
from bgd_experiments.optim import MBTSGD
from bgd_experiments.records import RunStatus, RunSummary


def _spec(results_dir: Path, root: Path, **overrides) -> tasks.RunSpec:
    fields = dict(
        results_dir=str(results_dir),
        data=tasks.DataSettings(name="cifar10", num_classes=10, root=str(root), augment="none"),
        trainer=tasks.TrainerSettings(
            epochs=2,
            batch_size=20,
            eval_batch_size=50,
            device="cpu",
            progress="plain",
            tensorboard=False,
        ),
        make_model=functools.partial(build_model, "resnet18", 10, 0.125),
        make_optimizer=lambda params: MBTSGD(params, lr=0.1, num_batches=2),
        model_name="resnet18",
        model_width=0.125,
        optimizer_name="mbt_gd",
        lr=0.1,
        seed=3,
    )
    return tasks.RunSpec(**{**fields, **overrides})


def test_a_hand_built_spec_trains_records_its_fields_and_is_skipped_when_run_again(
    tmp_path, tiny_cifar10_torchvision
):
    spec = _spec(tmp_path / "results", tiny_cifar10_torchvision)
    summary = tasks.train(spec)
    assert summary is not None and summary["epochs_completed"] == 2
    (summary_file,) = (tmp_path / "results").rglob("summary.json")
    written = RunSummary.read(summary_file)
    assert written.to_json() == summary and written.status is RunStatus.FINISHED
    assert written.run["seed"] == 3 and written.run["optimizer"] == "mbt_gd"
    config = yaml.safe_load((summary_file.parent / "config.yaml").read_text())
    # The spec's own fields stand in for a composed config; the data is named, not placed.
    assert config["optimizer"] == {"name": "mbt_gd", "lr": 0.1}
    assert config["trainer"]["epochs"] == 2
    assert config["dataset"]["root"] == config["data"]["name"]
    assert str(tiny_cifar10_torchvision) not in (summary_file.parent / "config.yaml").read_text()
    assert config["data"]["sha256"]
    assert tasks.train(spec) is None  # finished: skipped


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lr": float("inf")}, "lr must be a finite number > 0"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"seed": -1}, "seed must be an integer from 0 to 2^32-1"),
        ({"seed": 2**32}, "seed must be an integer from 0 to 2^32-1"),
        ({"model_width": 0}, "model_width must be > 0"),
        (
            {"trainer": tasks.TrainerSettings(protocol="clean", val_size=3)},
            "val_size must be >= 10",
        ),
    ],
)
def test_a_spec_is_refused_when_built(tmp_path, override, message):
    with pytest.raises(tasks.SettingsError, match=re.escape(message)):
        _spec(tmp_path, tmp_path, **override)


def test_a_spec_is_frozen(tmp_path):
    spec = _spec(tmp_path, tmp_path)
    with pytest.raises(AttributeError):
        spec.lr = 1.0  # type: ignore[misc]
    assert isinstance(spec.trainer.torch_device, torch.device)
