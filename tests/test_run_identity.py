"""A run folder's identity covers every setting that changes its result (any key sweepable)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_cli import bgd_run
from test_training import identity as run_identity

from bgd_experiments.cli import CONFIG_DIR, reference_config
from bgd_experiments.io import read_json
from bgd_experiments.reporting.cli import runs_markdown
from bgd_experiments.reporting.runs import scan_runs
from bgd_experiments.runfolder import (
    DATA_HASH_SETTING,
    IDENTITY_KEY,
    config_run_folder,
    identity_settings,
    run_folder,
    settings_digest,
    with_data_hash,
)

MIGRATE = Path(__file__).resolve().parents[1] / "scripts" / "migrate_run_folders.py"
DATA = {"name": "cifar10-jpeg.tar.gz", "sha256": "0123456789abcdef"}


def composed(*overrides: str) -> dict:
    """The plain config bgd-run would compose for ``overrides`` (no run)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        config = OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=True)
    assert isinstance(config, dict)
    return config


def folder_of(*overrides: str, data: dict = DATA) -> Path:
    """Where bgd-run would put the run of ``overrides`` under results_dir "R"."""
    config = composed(*overrides)
    reference = reference_config(
        config["dataset"]["name"], config["model"]["name"], config["optimizer"]["name"]
    )
    return config_run_folder(
        "R", config, with_data_hash(identity_settings(config, reference), data)
    )


def test_digest_ignores_key_order_and_number_spelling_but_not_values():
    settings = {"model.width": 0.25, "dataset.train_subset": 2000}
    digest = settings_digest(settings)
    assert len(digest) == 8 and int(digest, 16) >= 0
    assert settings_digest(dict(reversed(settings.items()))) == digest
    assert settings_digest({"model.width": 0.25, "dataset.train_subset": 2000.0}) == digest
    assert settings_digest({"model.width": 0.5, "dataset.train_subset": 2000}) != digest
    assert settings_digest({"optimizer.rescale": True}) != settings_digest({"optimizer.rescale": 1})


def test_a_new_key_at_its_default_changes_no_folder():
    reference = {"model": {"name": "resnet18", "width": 1.0}, "optimizer": {"momentum": 0.9}}
    old_run = {"model": {"name": "resnet18", "width": 0.25}, "optimizer": {"momentum": 0.9}}
    before = identity_settings(old_run, reference)
    assert before == {"model.width": 0.25}
    # conf/ grows a key: the reference has it, a new run has it at its default, an old
    # config.yaml lacks it. All three give the same folder.
    grown = {**reference, "trainer": {"sync_bn": False}}
    new_run = {**old_run, "trainer": {"sync_bn": False}}
    assert identity_settings(new_run, grown) == before
    assert identity_settings(old_run, grown) == before
    # Set to another value, it does change the folder.
    changed = {**old_run, "trainer": {"sync_bn": True}}
    assert settings_digest(identity_settings(changed, grown)) != settings_digest(before)


def test_where_and_how_a_run_is_computed_and_the_path_keys_stay_out():
    reference = composed()
    config = composed(
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "trainer.progress=plain",
        "trainer.eval_batch_size=10",
        "trainer.tensorboard=false",
        "trainer.channels_last=true",
        "trainer.epochs=3",
        "dataset.root=/somewhere/else.tar.gz",
        "results_dir=elsewhere",
        "force=true",
        "seed=4",
        "optimizer.lr=0.5",
        "trainer.batch_size=100",
    )
    assert identity_settings(config, reference) == {}
    # Only when the path's short lr tag rounds the rate does the digest say it exactly.
    config = composed("optimizer.lr=0.123456789")
    assert identity_settings(config, reference) == {"optimizer.lr": 0.123456789}


def test_different_settings_give_different_folders_and_equal_ones_the_same():
    base = folder_of("optimizer=mbt_nag")
    others = [
        folder_of("optimizer=mbt_nag", override)
        for override in (
            "dataset.augment=none",
            "optimizer.momentum=0.5",
            "trainer.protocol=clean",
            "optimizer.warm_start=restart",
            "optimizer.keep_search_steps=true",
            "model.width=0.5",
            "dataset.train_subset=1000",
        )
    ]
    others.append(folder_of("optimizer=mbt_nag", data={**DATA, "sha256": "fedcba9876543210"}))
    assert len({base, *others}) == len(others) + 1
    assert {folder.parent for folder in others} == {base.parent}  # same readable levels
    assert base.parent == Path("R/runs/cifar10/resnet18/mbt_nag/lr=0.01/bs=200/seed=0")
    assert base.name.startswith("cfg-")
    # The same archive under another name, or at another path: the same folder.
    assert folder_of("optimizer=mbt_nag", data={**DATA, "name": "copy.tar.gz"}) == base
    assert folder_of("optimizer=mbt_nag", "dataset.root=/elsewhere/x.tar.gz") == base
    # A budget and the same values given one by one: the same folder.
    spelled_out = folder_of(
        "model.width=0.25", "dataset.train_subset=2000", "dataset.test_subset=1000"
    )
    assert folder_of("budget=cpu") == spelled_out != folder_of()


def test_run_folder_appends_the_digest_level(tmp_path):
    identity = run_identity(
        model="resnet18", batch_size=200, seed=1, width=0.25, augment="paper", data_source=""
    )
    readable = tmp_path / "runs/cifar10/resnet18/sgd/lr=0.1/bs=200/seed=1"
    assert run_folder(tmp_path, identity) == readable
    settings = {"model.width": 0.25, DATA_HASH_SETTING: "0123456789abcdef"}
    assert run_folder(tmp_path, identity, settings) == readable / f"cfg-{settings_digest(settings)}"


# ------------------------------------------------------------------- end to end (bgd-run)

TINY_SWEEP = [
    "trainer.epochs=1",
    "trainer.batch_size=50",
    "trainer.eval_batch_size=50",
    "trainer.device=cpu",
    "trainer.num_threads=1",
    "trainer.progress=plain",
    "trainer.tensorboard=false",
    "dataset.test_subset=50",
]


@pytest.mark.slow
def test_a_sweep_over_keys_outside_the_path_runs_every_cell(tmp_path, tiny_cifar10_targz):
    results = tmp_path / "results"
    sweep = [
        "-m",
        f"results_dir={results}",
        f"dataset.root={tiny_cifar10_targz}",
        "dataset.train_subset=100",
        *TINY_SWEEP,
        "model.width=0.0625,0.125",
        "seed=0,1",
    ]
    first = bgd_run(*sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    summaries = sorted(results.rglob("summary.json"))
    assert len(summaries) == 4
    cells = set()
    for path in summaries:
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        settings = config[IDENTITY_KEY]["settings"]
        assert path.parent.name == f"cfg-{settings_digest(settings)}"
        assert settings["model.width"] == config["model"]["width"]
        assert settings[DATA_HASH_SETTING] == config["data"]["sha256"]
        cells.add((config["seed"], config["model"]["width"]))
    assert cells == {(0, 0.0625), (0, 0.125), (1, 0.0625), (1, 0.125)}
    # Again, with a budget that sets the same values as the overrides above: the same runs.
    again = bgd_run(
        "-m",
        f"results_dir={results}",
        f"dataset.root={tiny_cifar10_targz}",
        "budget=smoke",
        *TINY_SWEEP,
        "dataset.train_subset=100",
        "seed=0,1",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert (again.stdout + again.stderr).count("skipped") == 2
    assert len(list(results.rglob("summary.json"))) == 4
    # The report tells the four apart by their settings.
    listing = runs_markdown(scan_runs(results))
    assert listing.count("model.width=0.0625") == 2
    assert listing.count("model.width=0.125") == 2


def _old_layout_run(results: Path, data: dict[str, str]) -> Path:
    """A finished run folder as bgd-run wrote it before the cfg- level existed."""
    config = composed("budget=cpu", "optimizer=nag", "optimizer.lr=0.05", f"results_dir={results}")
    config.pop("hydra", None)
    config["dataset"]["root"] = data["name"]
    config["data"] = data
    folder = results / "runs/cifar10/resnet18/nag/lr=0.05/bs=200/seed=0"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run = {
        "task": "train",
        "dataset": "cifar10",
        "model": "resnet18",
        "optimizer": "nag",
        "lr": 0.05,
        "batch_size": 200,
        "seed": 0,
        "epochs": 4,
        "width": 0.25,
        "train_subset": 2000,
        "augment": "paper",
        "budget": "cpu",
        "data_source": "cifar10 from cifar10-jpeg.tar.gz",
        "data": data,
    }
    summary = {"status": "finished", "run": run, "best_test_acc": 31.5, "epochs_completed": 4}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "test_acc": 31.5}\n')
    return folder


def migrate(*args: str) -> subprocess.CompletedProcess:
    """scripts/migrate_run_folders.py in this process (importing torch and Hydra is slow)."""
    spec = importlib.util.spec_from_file_location("migrate_run_folders", MIGRATE)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = script.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_migration_moves_old_folders_where_bgd_run_looks(tmp_path):
    results = tmp_path / "results"
    old = _old_layout_run(results, DATA)
    dry = migrate(str(results), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would move" in dry.stdout and (old / "summary.json").exists()

    done = migrate(str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    target = folder_of("budget=cpu", "optimizer=nag", "optimizer.lr=0.05")
    new = results / target.relative_to("R")
    assert f"moved: {old} -> {new}" in done.stdout
    assert new.parent == old and sorted(path.name for path in old.iterdir()) == [new.name]
    config = yaml.safe_load((new / "config.yaml").read_text())
    assert config[IDENTITY_KEY]["settings"] == {
        DATA_HASH_SETTING: DATA["sha256"],
        "dataset.test_subset": 1000,
        "dataset.train_subset": 2000,
        "model.width": 0.25,
    }
    assert read_json(new / "summary.json")["best_test_acc"] == 31.5
    [record] = scan_runs(results)
    assert record.path == new and record.best_test_acc == 31.5
    assert record.settings == config[IDENTITY_KEY]["settings"]

    again = migrate(str(results))
    assert again.returncode == 0 and "0 moved, 1 in place" in again.stdout

    # A copy of the run elsewhere belongs in the same place, which is taken: refused, and
    # left where it was.
    stray = results / "runs" / "stray"
    shutil.copytree(new, stray)
    refused = migrate(str(results))
    assert refused.returncode == 1
    assert f"refused: {stray} -> {new}" in refused.stderr
    assert (stray / "summary.json").exists() and (new / "summary.json").exists()


def test_a_table_warns_when_a_cell_averages_runs_of_different_settings():
    from test_reporting import GOLDEN, PAPER_CSV

    from bgd_experiments.reporting.tables import build_table2
    from bgd_experiments.reporting.writers import table_markdown

    runs = scan_runs(GOLDEN)
    table = build_table2(runs, paper_csv=str(PAPER_CSV))
    assert "different settings" not in table_markdown(table)
    shared = next(cell for cell in table.cells if len(cell.runs) >= 2)
    widths = {str(run.path): 0.0625 * (index + 1) for index, run in enumerate(shared.runs)}
    swept = [
        dataclasses.replace(run, settings={"model.width": widths[str(run.path)]})
        if str(run.path) in widths
        else run
        for run in runs
    ]
    text = table_markdown(build_table2(swept, paper_csv=str(PAPER_CSV)))
    assert "WARNING: 1 cell averages runs of different settings" in text
    assert "model.width=0.0625 vs model.width=0.125" in text
    # The protocols are the table's columns (best test accuracy; test accuracy at the best
    # validation epoch): a cell holding runs of both is no mix.
    protocols = [
        dataclasses.replace(run, settings={"trainer.protocol": "clean"} if index % 2 else {})
        for index, run in enumerate(runs)
    ]
    assert "different settings" not in table_markdown(
        build_table2(protocols, paper_csv=str(PAPER_CSV))
    )


def test_keys_added_since_a_run_was_made_are_no_conflict_at_their_old_values():
    from bgd_experiments.runfolder import config_differences

    old = {"trainer": {"batch_size": 200, "baseline_stop_patience": 50}}
    new = {
        "trainer": {
            "batch_size": 200,
            "baseline_stop_patience": 50,
            "distributed": "auto",
            "sync_bn": False,
            "precision": "fp32",
            "compile": False,
        }
    }
    assert config_differences(old, new) == []
    # Runs made before the baselines' early stop existed had none: that is a difference.
    older = {"trainer": {"batch_size": 200}}
    assert config_differences(older, new) == ["trainer.baseline_stop_patience: None -> 50"]
    assert config_differences(old, {**new, "trainer": {**new["trainer"], "sync_bn": True}})
