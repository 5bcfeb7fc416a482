"""Bad input at scale, held cells and Ctrl-C, through the real ``bgd-run`` entry point.

Every invalid override set is refused the same way: exit status 2, exactly one ERROR line,
no traceback, and nothing written (no results_dir either).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from datagen import write_torchvision_cifar
from test_refusals import TINY, assert_refused_in_one_line, bgd_run_in_process

from bgd_experiments import cli, tasks
from bgd_experiments.locks import LockOwner, lock_path
from bgd_experiments.runfolder import CHECKPOINT_FILE, SUMMARY_FILE

BGD_RUN = Path(sys.executable).parent / "bgd-run"


@pytest.fixture(autouse=True)
def _no_stale_log_handlers():
    """An in-process bgd-run leaves Hydra's handlers bound to this test's captured stdout."""
    yield
    logging.getLogger().handlers.clear()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_torchvision_cifar(root, "cifar10", 4, 2, seed=0)
    return root


# ------------------------------------------------------------------------------------------
# Invalid override sets, generated from a fixed seed

NOT_A_NUMBER = ["abc", "true", "[1,2]", "{a:1}", "''"]
OPTIMIZERS = ["sgd", "mmt", "nag", "adam", "adamax", "rmsprop", "adagrad", "adadelta"]
OPTIMIZERS += ["mbt_gd", "mbt_mmt", "mbt_nag", "sls", "prodigy", "dadapt_sgd", "sf_sgd", "dog"]
# key -> values that no run can use (each refused on its own, whatever else is set)
INVALID: dict[str, list[str]] = {
    "seed": [*NOT_A_NUMBER, "-1", "1.5", "99999999999999999999", "4294967296", "nan", "inf"],
    "trainer.epochs": [*NOT_A_NUMBER, "0", "-3", "1.5", "inf", "nan", "10000000000000000000000"],
    "trainer.batch_size": [*NOT_A_NUMBER, "0", "-1", "2.5", "nan", "inf"],
    "trainer.eval_batch_size": [*NOT_A_NUMBER, "0", "-7"],
    "optimizer.lr": [*NOT_A_NUMBER, "-1", "0", "nan", "inf", "-inf", "1e400", "-1e-9"],
    "model.width": [*NOT_A_NUMBER, "0", "-1", "1e-9", "1e9", "nan", "inf", "-inf"],
    "dataset.train_subset": [*NOT_A_NUMBER, "-5", "1.5", "nan", "3"],
    "dataset.test_subset": [*NOT_A_NUMBER, "-5", "2.5", "nan"],
    "dataset.augment": ["sometimes", "1", "true", "PAPER"],
    "trainer.progress": ["fancy", "1", "true"],
    "trainer.device": ["tpu", "gpu", "cuda:x", "1"],
    "trainer.protocol": ["bogus", "1", "true"],
    "trainer.precision": ["fp8", "16", "true"],
    "force": ["maybe", "2", "[true]"],
    "task": ["nope", "1", "train2"],
}
# option -> key -> values refused by that optimizer
OPTIMIZER_INVALID: dict[str, dict[str, list[str]]] = {
    "mbt_gd": {"optimizer.beta": ["1.5", "0", "-0.1", "nan", "1"], "optimizer.alpha": ["0", "nan"]},
    "mbt_nag": {"optimizer.momentum": ["-1", "1.0", "nan", "2"], "optimizer.beta": ["inf", "1"]},
    "mmt": {"optimizer.momentum": ["-1", "nan", "inf"]},
    "adam": {"optimizer.betas": ["[0.9,nan]", "[-1,0.9]", "[0.9,inf]"], "optimizer.eps": ["nan"]},
}
UNKNOWN_KEYS = ["nope=1", "trainer.nope=1", "optimizer.nope=3", "model.depth=3", "dataset.x=1"]
BAD_OPTIONS = ["model=nope", "optimizer=adamw2", "dataset=mnist", "budget=huge", "trainer=fast"]
BAD_OPTIONS += ["experiment=nope", "model=", "optimizer=sgd,", "seed=[", "=3"]


def invalid_override_sets(count: int, seed: int, paths: dict[str, str]) -> list[list[str]]:
    """``count`` override sets, each with at least one value no run can use."""
    rng = random.Random(seed)
    broken = [
        f"dataset.root={paths['missing']}",
        f"dataset.root={paths['not_an_archive']}",
        f"dataset.root={paths['empty_folder']}",
        f"results_dir={paths['a_file']}",
        f"results_dir={paths['under_a_file']}",
    ]
    cases = []
    for _ in range(count):
        optimizer = rng.choice(OPTIMIZERS)
        overrides = [f"optimizer={optimizer}"]
        kind = rng.choice(["value", "value", "value", "optimizer", "unknown", "option", "path"])
        if kind == "optimizer" and optimizer in OPTIMIZER_INVALID:
            key, values = rng.choice(sorted(OPTIMIZER_INVALID[optimizer].items()))
            overrides.append(f"{key}={rng.choice(values)}")
        elif kind == "unknown":
            overrides.append(rng.choice(UNKNOWN_KEYS))
        elif kind == "option":
            overrides.append(rng.choice(BAD_OPTIONS))
        elif kind == "path":
            overrides.append(rng.choice(broken))
        else:
            for key in rng.sample(sorted(INVALID), rng.choice([1, 1, 2])):
                overrides.append(f"{key}={rng.choice(INVALID[key])}")
        cases.append(overrides)
    return cases


def test_five_hundred_invalid_override_sets_are_each_refused_in_one_line(
    tmp_path, tiny_root, monkeypatch, capsys
):
    paths = {
        "missing": str(tmp_path / "no" / "such.tar.gz"),
        "not_an_archive": str(tmp_path / "notes.txt"),
        "empty_folder": str(tmp_path / "empty"),
        "a_file": str(tmp_path / "notes.txt"),
        "under_a_file": str(tmp_path / "notes.txt" / "results"),
    }
    Path(paths["not_an_archive"]).write_text("not data\n")
    Path(paths["empty_folder"]).mkdir()
    cases = invalid_override_sets(500, seed=20201, paths=paths)
    assert len({tuple(case) for case in cases}) > 300  # varied, not one case 500 times
    failures = []
    for number, overrides in enumerate(cases):
        results = tmp_path / "results" / str(number)
        base = [*TINY, f"dataset.root={tiny_root}", f"results_dir={results}"]
        status, output = bgd_run_in_process(monkeypatch, capsys, *base, *overrides)
        logging.getLogger().handlers.clear()
        errors = [line for line in output.splitlines() if "[ERROR]" in line]
        written = results.exists()
        if status != 2 or len(errors) != 1 or "Traceback" in output or written:
            failures.append((overrides, status, len(errors), written, output[-300:]))
    assert not failures, f"{len(failures)} of {len(cases)}: {failures[:5]}"
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------------------
# A cell another process holds


def _hold_the_cell(overrides: list[str]) -> Path:
    """Write the lock of the run ``overrides`` name as a live owner on another host would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(cli.CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run_dir = tasks._name_run(cli._run_spec(cfg), "train").run_dir
    holder = LockOwner("someone", "node-7", 4242, "then")
    lock_path(run_dir).parent.mkdir(parents=True)
    lock_path(run_dir).write_text(json.dumps(asdict(holder)))
    return run_dir


@pytest.mark.parametrize("force", [False, True])
def test_a_held_cell_is_refused_naming_its_holder(tmp_path, tiny_root, monkeypatch, capsys, force):
    arguments = [*TINY, f"dataset.root={tiny_root}", f"results_dir={tmp_path / 'results'}"]
    arguments += ["force=true"] if force else []
    run_dir = _hold_the_cell(arguments)
    status, output = bgd_run_in_process(monkeypatch, capsys, *arguments)
    assert_refused_in_one_line(status, output, "is taken by someone@node-7 pid 4242")
    assert ("force=true never takes a cell that a live process holds" in output) is force
    assert not run_dir.exists() and lock_path(run_dir).exists()


def test_a_sweep_skips_a_held_cell_and_trains_the_others(tmp_path, tiny_root, monkeypatch, capsys):
    results = tmp_path / "results"
    arguments = [*TINY, f"dataset.root={tiny_root}", f"results_dir={results}"]
    held = _hold_the_cell([*arguments, "seed=0"])
    status, output = bgd_run_in_process(monkeypatch, capsys, "-m", *arguments, "seed=0,1")
    assert status == 0, output
    assert "skipped: " in output and "is taken by someone@node-7" in output
    (finished,) = results.rglob(SUMMARY_FILE)
    assert "seed=1" in str(finished) and not held.exists()


# ------------------------------------------------------------------------------------------
# Ctrl-C


def test_ctrl_c_stops_in_one_line_and_keeps_finished_epochs(tmp_path, tiny_root):
    results = tmp_path / "results"
    command = [str(BGD_RUN), *TINY, f"dataset.root={tiny_root}", f"results_dir={results}"]
    # No early stop: the run must still be training when the signal comes, however slowly
    # this process polls on a loaded machine (500 epochs of 40 images take about 30 s).
    command += ["trainer.epochs=500", "trainer.baseline_stop_patience=null"]
    # As from a terminal: SIGINT at its default in the child. A suite started in the
    # background of a non-interactive shell (`make test &`, a CI script) has SIGINT ignored,
    # as POSIX shells do for asynchronous commands, and an ignored signal is inherited
    # across exec; bgd-run rightly leaves an ignored SIGINT alone.
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not list(results.rglob(CHECKPOINT_FILE)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[0]
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    stops = [line for line in output.splitlines() if "stopped by SIGINT" in line]
    assert len(stops) == 1 and "[ERROR]" not in output, output
    (checkpoint,) = results.rglob(CHECKPOINT_FILE)
    import torch

    assert torch.load(checkpoint, weights_only=True)["epoch"] >= 1
    assert not list(results.rglob("*.lock")) and not list(results.rglob(SUMMARY_FILE))
    assert os.path.exists(checkpoint)


# ------------------------------------------------------------------------------------------
# Damaged archives and an unwritable cache: one line, and no results_dir


def _damaged(tmp_path: Path, kind: str) -> Path:
    from datagen import write_image_folder_targz

    archive = write_image_folder_targz(
        tmp_path / "cifar10-png.tar.gz", "cifar10", 2, 1, seed=0, top_folder="cifar10"
    )
    data = bytearray(archive.read_bytes())
    if kind == "truncated":
        data = data[: len(data) // 2]
    else:  # bit flips in the middle of the compressed stream
        for offset in range(len(data) // 2, len(data) // 2 + 8):
            data[offset] ^= 0xFF
    archive.write_bytes(bytes(data))
    return archive


@pytest.mark.parametrize("kind", ["truncated", "flipped"])
def test_a_damaged_archive_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, kind):
    results = tmp_path / "results"
    archive = _damaged(tmp_path, kind)
    status, output = bgd_run_in_process(
        monkeypatch, capsys, *TINY, f"dataset.root={archive}", f"results_dir={results}"
    )
    assert_refused_in_one_line(status, output, str(archive))
    assert not results.exists()


def test_an_unwritable_data_cache_is_one_line(tmp_path, tiny_root, monkeypatch, capsys):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("BGD_CACHE_DIR", str(not_a_folder / "cache"))
    results = tmp_path / "results"
    status, output = bgd_run_in_process(
        monkeypatch, capsys, *TINY, f"dataset.root={tiny_root}", f"results_dir={results}"
    )
    assert_refused_in_one_line(status, output, "the data cache")
    assert "set BGD_CACHE_DIR to a folder you can write" in output
    assert not results.exists()
