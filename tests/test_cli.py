"""End-to-end tests of the real `bgd-run` entry point on tiny generated CIFAR-format data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from datagen import (
    TINY_CIFAR10_TEST_PER_CLASS,
    TINY_CIFAR10_TRAIN_PER_CLASS,
    write_image_folder_targz,
)

from bgd_experiments.data import CACHE_ENV_VAR
from bgd_experiments.io import read_json, read_jsonl

REPO = Path(__file__).resolve().parents[1]
BGD_RUN = Path(sys.executable).parent / "bgd-run"
KILL_HOOK_DIR = Path(__file__).resolve().parent / "kill_hook"

# Small enough for seconds per run on 2 CPU cores, big enough to exercise every code path.
TINY = [
    "model.width=0.125",
    "trainer.batch_size=25",
    "trainer.eval_batch_size=100",
    "trainer.device=cpu",
    "trainer.num_threads=1",
    "trainer.progress=plain",
    "dataset.augment=paper",
]
EPOCH_KEYS = {
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "lr",
    "epoch_time",
    "forward_passes",
    "backward_passes",
    "eval_forward_passes",
}


def bgd_run(*overrides: str, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [str(BGD_RUN), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def only_run_dir(results: Path) -> Path:
    summaries = sorted(results.rglob("config.yaml"))
    assert len(summaries) == 1, summaries
    return summaries[0].parent


def test_help_and_cfg_job_work_from_any_directory(tmp_path):
    help_text = bgd_run("--help", cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    for group in ("dataset", "model", "optimizer", "budget", "experiment"):
        assert f"{group}:" in help_text.stdout
    cfg = bgd_run("--cfg", "job", "--resolve", "optimizer=nag", "model=densenet121", cwd=tmp_path)
    assert cfg.returncode == 0, cfg.stderr
    job = yaml.safe_load(cfg.stdout)
    assert job["optimizer"]["nesterov"] is True and job["optimizer"]["momentum"] == 0.9
    assert job["model"]["_target_"] == "bgd_experiments.models.densenet121"
    assert job["model"]["num_classes"] == 10


@pytest.mark.slow
def test_train_writes_results_and_skips_when_finished(tmp_path, tiny_cifar10_torchvision):
    results = tmp_path / "results"
    args = [
        f"dataset.root={tiny_cifar10_torchvision}",
        *TINY,
        "optimizer=nag",
        "optimizer.lr=0.05",
        "trainer.epochs=2",
        f"results_dir={results}",
        "seed=3",
    ]
    first = bgd_run(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = only_run_dir(results)
    assert run_dir.relative_to(results).parts[:-1] == (
        "runs",
        "cifar10",
        "resnet18",
        "nag",
        "lr=0.05",
        "bs=25",
        "seed=3",
    )
    # The last level: the settings that differ from the paper's config, and the data's hash.
    identity = yaml.safe_load((run_dir / "config.yaml").read_text())["identity"]
    assert run_dir.name == f"cfg-{identity['digest']}"
    assert identity["settings"]["model.width"] == 0.125
    assert "trainer.device" not in identity["settings"]
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) >= EPOCH_KEYS
    steps = records[0]["forward_passes"]
    assert steps == records[0]["backward_passes"] > 0
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "finished"
    assert summary["epochs_completed"] == 2
    assert summary["best_test_acc"] == max(r["test_acc"] for r in records)
    assert summary["final_test_acc"] == records[-1]["test_acc"]
    assert summary["run"]["optimizer"] == "nag" and summary["run"]["seed"] == 3
    assert summary["versions"]["torch"]
    assert "git_commit" in summary
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["optimizer"]["lr"] == 0.05 and "hydra" not in config
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard events written"
    assert "epoch 2/2" in first.stdout + first.stderr

    again = bgd_run(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stdout + again.stderr
    assert read_json(run_dir / "summary.json") == summary

    # Where and how it runs is not part of the identity: the same folder, skipped.
    elsewhere = bgd_run(
        *args, "trainer.eval_batch_size=50", "trainer.tensorboard=false", cwd=tmp_path
    )
    assert "skipped" in elsewhere.stdout + elsewhere.stderr

    # A folder whose config.yaml says otherwise (edited by hand) is still refused, untouched.
    config_path = run_dir / "config.yaml"
    recorded = yaml.safe_load(config_path.read_text())
    recorded["optimizer"]["momentum"] = 0.5
    config_path.write_text(yaml.safe_dump(recorded, sort_keys=False))
    conflicting = bgd_run(*args, cwd=tmp_path)
    assert conflicting.returncode == 2
    assert "different configuration" in conflicting.stdout + conflicting.stderr
    assert read_json(run_dir / "summary.json") == summary


@pytest.mark.slow
def test_mbt_nag_on_image_folder_logs_the_search(tmp_path, tiny_cifar10_targz):
    results = tmp_path / "results"
    done = bgd_run(
        f"dataset.root={tiny_cifar10_targz}",
        *TINY,
        "optimizer=mbt_nag",
        "optimizer.num_batches=3",
        "trainer.epochs=2",
        f"results_dir={results}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = only_run_dir(results)
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps_per_epoch = records[0]["eval_forward_passes"] and None  # evaluated, not trained
    del steps_per_epoch
    for record in records:
        assert record["search_lr"] is not None and record["search_lr"] > 0
        assert record["lr"] == pytest.approx(record["search_lr"])
        assert record["search_trials"] >= 3
        assert record["momentum_enabled"] is True
        # The search's passes are counted on top of the epoch's training steps.
        assert record["forward_passes"] > record["backward_passes"] - 3


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, tiny_cifar10_torchvision):
    def run(results: Path, env: dict[str, str] | None = None):
        return bgd_run(
            f"dataset.root={tiny_cifar10_torchvision}",
            *TINY,
            "optimizer=mbt_mmt",
            "optimizer.num_batches=2",
            "trainer.epochs=3",
            f"results_dir={results}",
            cwd=tmp_path,
            env=env,
        )

    reference = run(tmp_path / "a")
    assert reference.returncode == 0, reference.stderr
    steps_per_epoch = read_jsonl(only_run_dir(tmp_path / "a") / "metrics.jsonl")[0][
        "backward_passes"
    ]
    # Killed in the middle of the second epoch (search steps are restored, not counted).
    # The kill comes from a test-only sitecustomize (tests/kill_hook), not from the library.
    hook_path = os.pathsep.join([str(KILL_HOOK_DIR), os.environ.get("PYTHONPATH", "")])
    killed = run(
        tmp_path / "b",
        env={"BGD_KILL_AT_STEP": str(steps_per_epoch + 3), "PYTHONPATH": hook_path},
    )
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    interrupted = only_run_dir(tmp_path / "b")
    assert not (interrupted / "summary.json").exists()
    assert len(read_jsonl(interrupted / "metrics.jsonl")) == 1
    resumed = run(tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout + resumed.stderr

    def comparable(results: Path) -> list[dict]:
        records = read_jsonl(only_run_dir(results) / "metrics.jsonl")
        return [
            {k: v for k, v in r.items() if k not in ("epoch_time", "search_time")} for r in records
        ]

    assert comparable(tmp_path / "b") == comparable(tmp_path / "a")
    summary_a = read_json(only_run_dir(tmp_path / "a") / "summary.json")
    summary_b = read_json(only_run_dir(tmp_path / "b") / "summary.json")
    assert summary_b["best_test_acc"] == summary_a["best_test_acc"]
    assert summary_b["epochs_completed"] == 3


@pytest.mark.slow
def test_divergence_ends_the_run_at_once(tmp_path, tiny_cifar10_torchvision):
    results = tmp_path / "results"
    done = bgd_run(
        f"dataset.root={tiny_cifar10_torchvision}",
        *TINY,
        "optimizer=sgd",
        "optimizer.lr=1e12",
        "trainer.epochs=50",
        f"results_dir={results}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(results)
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "diverged"
    assert summary["epochs_completed"] <= 1
    # metrics.jsonl is strict JSON (no bare NaN token), whatever a diverged run recorded.
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=pytest.fail)
    assert "diverged" in done.stdout + done.stderr
    again = bgd_run(
        f"dataset.root={tiny_cifar10_torchvision}",
        *TINY,
        "optimizer=sgd",
        "optimizer.lr=1e12",
        "trainer.epochs=50",
        f"results_dir={results}",
        cwd=tmp_path,
    )
    assert "skipped" in again.stdout + again.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=0", "optimizer.lr must be > 0"),
        ("optimizer.lr=-0.1", "optimizer.lr must be > 0"),
        ("trainer.batch_size=0", "trainer.batch_size must be >= 1"),
        ("model.width=0", "model.width must be > 0"),
        ("dataset.train_subset=3", "dataset.train_subset must be null or >= 10"),
        ("task=nonsense", "task='nonsense' is not one of"),
        ("dataset.train_subset=100000", "exceeds"),
    ],
)
def test_bad_values_are_refused_before_training(
    tmp_path, tiny_cifar10_torchvision, override, message
):
    results = tmp_path / "results"
    done = bgd_run(
        f"dataset.root={tiny_cifar10_torchvision}",
        *TINY,
        override,
        f"results_dir={results}",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not list(results.rglob("summary.json"))
    assert not (results / "runs").exists()


def test_missing_data_names_the_three_ways_to_provide_it(tmp_path):
    results = tmp_path / "results"
    done = bgd_run(
        f"dataset.root={tmp_path / 'nowhere'}", *TINY, f"results_dir={results}", cwd=tmp_path
    )
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "dataset.download=true" in output
    assert "tar.gz" in output
    assert "nowhere" in output
    assert not (results / "runs").exists()


def test_unknown_folder_layout_is_refused(tmp_path):
    strange = tmp_path / "strange"
    (strange / "images").mkdir(parents=True)
    (strange / "images" / "a.txt").write_text("not an image")
    results = tmp_path / "results"
    done = bgd_run(f"dataset.root={strange}", *TINY, f"results_dir={results}", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert not (results / "runs").exists()


@pytest.mark.slow
def test_search_only_task_reports_the_found_rate(tmp_path, tiny_cifar10_imagefolder):
    results = tmp_path / "results"
    search_args = [
        f"dataset.root={tiny_cifar10_imagefolder}",
        *TINY,
        "task=search",
        "optimizer=mbt_gd",
        "optimizer.lr=1",
        "optimizer.num_batches=4",
        f"results_dir={results}",
    ]
    done = bgd_run(*search_args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = only_run_dir(results)
    assert run_dir.relative_to(results).parts[:3] == ("runs", "search", "cifar10")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["found_lr"] > 0
    assert summary["found_lr"] == summary["search"]["lr"]
    assert len(summary["search"]["sigmas"]) == 4
    # Where the search is shows in the log, its last batch always.
    assert "search: batch 4 of 4," in done.stdout + done.stderr

    # A finished run is skipped without reading the data: with the images gone and nothing
    # cached, the rerun still skips, while a new run on the same root is refused.
    with tempfile.TemporaryDirectory() as gone:
        shutil.move(str(tiny_cifar10_imagefolder), gone)
        tiny_cifar10_imagefolder.mkdir()
        try:
            again = bgd_run(*search_args, cwd=tmp_path, env={CACHE_ENV_VAR: gone})
            new = bgd_run(*search_args, "optimizer.lr=2", cwd=tmp_path, env={CACHE_ENV_VAR: gone})
        finally:
            tiny_cifar10_imagefolder.rmdir()
            shutil.move(str(Path(gone) / tiny_cifar10_imagefolder.name), tiny_cifar10_imagefolder)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skipped" in again.stdout + again.stderr
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert new.returncode == 2
    assert "No cifar10 data found" in new.stdout + new.stderr
    assert only_run_dir(results) == run_dir  # the refused run left no folder
    refused = bgd_run(
        f"dataset.root={tiny_cifar10_imagefolder}",
        *TINY,
        "task=search",
        "optimizer=sgd",
        f"results_dir={tmp_path / 'r2'}",
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    assert "needs an MBT optimizer" in refused.stdout + refused.stderr


@pytest.mark.slow
def test_clean_protocol_selects_the_epoch_on_a_validation_split(tmp_path, tiny_cifar10_torchvision):
    results = tmp_path / "results"
    done = bgd_run(
        f"dataset.root={tiny_cifar10_torchvision}",
        *TINY,
        "optimizer=adam",
        "optimizer.lr=0.003",
        "trainer.epochs=2",
        "trainer.protocol=clean",
        "trainer.val_size=50",
        f"results_dir={results}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = only_run_dir(results)
    records = read_jsonl(run_dir / "metrics.jsonl")
    # Validation every epoch, the test set never before the end.
    assert all("val_acc" in record and "test_acc" not in record for record in records)
    summary = read_json(run_dir / "summary.json")
    best = max(records, key=lambda record: record["val_acc"])
    assert summary["protocol"] == "clean"
    assert (summary["best_val_acc"], summary["best_val_epoch"]) == (best["val_acc"], best["epoch"])
    assert 0 <= summary["test_acc_at_best_val"] <= 100 and summary["best_test_acc"] is None
    assert "the one test read" in done.stdout + done.stderr


@pytest.mark.slow
def test_same_archive_elsewhere_is_the_same_run_and_other_content_is_not(
    tmp_path, tiny_cifar10_targz
):
    results = tmp_path / "results"
    common = [*TINY, "optimizer=nag", "optimizer.lr=0.05", "trainer.epochs=1"]
    common.append(f"results_dir={results}")
    first = bgd_run(f"dataset.root={tiny_cifar10_targz}", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = only_run_dir(results)
    summary = read_json(run_dir / "summary.json")
    data = summary["run"]["data"]
    assert data["name"] == "cifar10-jpeg.tar.gz" and len(data["sha256"]) == 16
    # The run files name the data by archive and hash, never by this machine's path.
    for name in ("config.yaml", "summary.json"):
        assert str(tiny_cifar10_targz.parent) not in (run_dir / name).read_text()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"] == data and config["dataset"]["root"] == "cifar10-jpeg.tar.gz"

    # The same archive at another path (another machine's layout): skipped, untouched.
    elsewhere = tmp_path / "other" / "place" / "cifar10-jpeg.tar.gz"
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(tiny_cifar10_targz, elsewhere)
    again = bgd_run(f"dataset.root={elsewhere}", *common, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skipped" in again.stdout + again.stderr
    assert read_json(run_dir / "summary.json") == summary

    # Other images under the same archive name: another data set, so another run folder.
    forged = tmp_path / "forged" / "cifar10-jpeg.tar.gz"
    write_image_folder_targz(
        forged,
        "cifar10",
        TINY_CIFAR10_TRAIN_PER_CLASS,
        TINY_CIFAR10_TEST_PER_CLASS,
        seed=7,
        fmt="jpg",
        top_folder="cifar10",
    )
    other = bgd_run(f"dataset.root={forged}", *common, cwd=tmp_path)
    assert other.returncode == 0, other.stdout + other.stderr
    assert "new run" in other.stdout + other.stderr
    assert read_json(run_dir / "summary.json") == summary
    folders = {path.parent for path in results.rglob("summary.json")}
    assert len(folders) == 2 and {folder.parent for folder in folders} == {run_dir.parent}
    other_dir = (folders - {run_dir}).pop()
    assert read_json(other_dir / "summary.json")["run"]["data"]["sha256"] != data["sha256"]
