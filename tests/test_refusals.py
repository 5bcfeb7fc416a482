"""Every check runs before the run folder exists: one line, exit 2, no traceback, no folder.

Through the real entry point (``bgd-run``'s ``main``, Hydra included) in this process, which
is what the console script runs, at a second per case instead of a fresh interpreter's ten.
"""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from datagen import write_image_folder

from bgd_experiments import cli

TINY = [
    "model.width=0.0625",
    "trainer.batch_size=50",
    "trainer.eval_batch_size=100",
    "trainer.device=cpu",
    "trainer.num_threads=1",
    "trainer.progress=plain",
    "trainer.tensorboard=false",
    "trainer.epochs=1",
]


def bgd_run_in_process(monkeypatch, capsys, *arguments: str) -> tuple[int, str]:
    """Exit status and everything printed (stdout and stderr) of one ``bgd-run``."""
    monkeypatch.setattr(sys, "argv", ["bgd-run", *arguments])
    try:
        cli.main()
        status = 0
    except SystemExit as stop:
        status = int(stop.code or 0)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def assert_refused_in_one_line(status: int, output: str, message: str) -> None:
    assert status == 2, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and message in errors[0], output


def corrupt_archive(path: Path) -> Path:
    """A CIFAR-10 image-folder archive in which one training image is not an image."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = write_image_folder(Path(scratch) / "tree", "cifar10", 2, 1, 0, "png")
        victim = sorted((tree / "train").rglob("*.png"))[3]
        victim.write_bytes(b"these bytes are no PNG")
        with tarfile.open(path, "w:gz") as archive:
            archive.add(tree, arcname="cifar10")
    return path


def refuse_to_write(**_) -> None:
    raise PermissionError(13, "Permission denied")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer=mbt_gd", "optimizer.beta=1.5"], "beta must satisfy 0 < beta < 1, got 1.5"),
        (["optimizer=mbt_mmt", "optimizer.momentum=-1"], "momentum must lie in [0, 1), got -1"),
        (["optimizer=mmt", "optimizer.momentum=-1"], "Invalid momentum value: -1"),
        (["trainer.progress=fancy"], "trainer.progress must be auto, rich or plain"),
        (["optimizer.lr=abc"], "optimizer.lr must be a number, got 'abc'"),
        (["trainer.epochs=1.5"], "trainer.epochs must be an integer, got 1.5"),
        (["dataset.train_subset=150.5"], "dataset.train_subset must be null or an integer"),
        (["corrupt-archive"], "cannot decode image"),
        (["results_dir-is-a-file"], "results_dir is a file, not a folder"),
        (["read-only-results_dir"], "cannot be written"),
    ],
)
def test_a_refused_run_leaves_no_folder(
    tmp_path, tiny_cifar10_torchvision, monkeypatch, capsys, overrides, message
):
    results = tmp_path / "results"
    root = tiny_cifar10_torchvision
    if overrides == ["corrupt-archive"]:
        root, overrides = corrupt_archive(tmp_path / "cifar10-png.tar.gz"), []
    elif overrides == ["results_dir-is-a-file"]:
        results.write_text("not a folder")
        overrides = []
    elif overrides == ["read-only-results_dir"]:
        results.mkdir()
        results.chmod(0o555)
        if os.geteuid() == 0:  # root writes anywhere: make the write fail as it would
            monkeypatch.setattr(tempfile, "TemporaryFile", refuse_to_write)
        overrides = []
    status, output = bgd_run_in_process(
        monkeypatch, capsys, f"dataset.root={root}", *TINY, *overrides, f"results_dir={results}"
    )
    assert_refused_in_one_line(status, output, message)
    assert not (results / "runs").exists()
    assert not list(tmp_path.rglob("config.yaml"))
    if message == "cannot be written":
        assert "set results_dir to a folder you can write" in output


# The torn checkpoint's pickle header (protocol 4) makes torch warn before the read fails.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_a_corrupt_checkpoint_names_the_file_and_force_true(
    tmp_path, tiny_cifar10_torchvision, monkeypatch, capsys
):
    arguments = [f"dataset.root={tiny_cifar10_torchvision}", *TINY, f"results_dir={tmp_path}"]
    status, output = bgd_run_in_process(monkeypatch, capsys, *arguments)
    assert status == 0, output
    (run_dir,) = [path.parent for path in tmp_path.rglob("summary.json")]
    (run_dir / "summary.json").unlink()  # interrupted after its last checkpoint...
    (run_dir / "checkpoint.pt").write_bytes(b"\x80\x04 half a pickle")  # ... a torn one
    before = {path.name: path.read_bytes() for path in run_dir.iterdir()}
    status, output = bgd_run_in_process(monkeypatch, capsys, *arguments, "trainer.epochs=2")
    assert_refused_in_one_line(status, output, f"{run_dir / 'checkpoint.pt'} cannot be read")
    assert "force=true" in output
    assert {path.name: path.read_bytes() for path in run_dir.iterdir()} == before
    # force=true discards it, as the message says.
    status, output = bgd_run_in_process(monkeypatch, capsys, *arguments, "force=true")
    assert status == 0, output
    assert (run_dir / "summary.json").exists()
