"""Nothing read from a results folder or a data file runs code, lies about its data or takes
unbounded memory; a full disk during a checkpoint write is one line.

The crafted files are the attacks themselves: a checkpoint and a CIFAR pickle whose unpickling
would create a marker file, archives replaced under the same size and mtime, and archive
members too large to be images.
"""

from __future__ import annotations

import builtins
import io
import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import write_image_folder, write_torchvision_cifar
from PIL import Image
from test_refusals import TINY, assert_refused_in_one_line, bgd_run_in_process

from bgd_experiments.data import DatasetError, data_identity, load_cifar
from bgd_experiments.data import cifar as cifar_module
from bgd_experiments.locks import lock_path
from bgd_experiments.runfolder import CHECKPOINT_FILE, SUMMARY_FILE


@pytest.fixture(autouse=True)
def _no_stale_log_handlers():
    """An in-process bgd-run leaves Hydra's handlers on the root logger, bound to this test's
    captured stdout; the next test's own logging must not write to that closed stream."""
    yield
    logging.getLogger().handlers.clear()


class _Planted:
    """Unpickling this calls ``open(marker, "w")``: any code at all would run the same way."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def _plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"data": _Planted(marker), "epoch": 1}, protocol=2))


# ------------------------------------------------------------------------------------------
# No code runs from a checkpoint or a CIFAR pickle


def _finished_run(tmp_path: Path, monkeypatch, capsys) -> tuple[list[str], Path]:
    """A one-epoch SGD run on tiny data: the command line and its run folder."""
    root = tmp_path / "data"
    write_torchvision_cifar(root, "cifar10", 4, 2, seed=0)
    results = tmp_path / "results"
    arguments = [*TINY, f"dataset.root={root}", f"results_dir={results}", "optimizer=sgd"]
    status, output = bgd_run_in_process(monkeypatch, capsys, *arguments)
    assert status == 0, output
    (summary,) = results.rglob(SUMMARY_FILE)
    run_dir = summary.parent
    return arguments, run_dir


def test_planted_checkpoint_is_refused_and_never_runs(tmp_path, monkeypatch, capsys):
    arguments, run_dir = _finished_run(tmp_path, monkeypatch, capsys)
    # An interrupted run (no summary yet) whose checkpoint was swapped for a crafted pickle.
    (run_dir / SUMMARY_FILE).unlink()
    checkpoint = run_dir / CHECKPOINT_FILE
    marker = tmp_path / "planted-code-ran"
    _plant(checkpoint, marker)

    status, output = bgd_run_in_process(monkeypatch, capsys, *arguments)
    assert_refused_in_one_line(status, output, str(checkpoint))
    assert not marker.exists()


def test_checkpoint_from_fit_loads_without_running_code(tmp_path, monkeypatch, capsys):
    """What fit writes (every optimizer family's state included) loads with weights_only."""
    root = tmp_path / "data"
    write_torchvision_cifar(root, "cifar10", 4, 2, seed=0)
    for optimizer in ("mbt_nag", "adam", "prodigy", "sf_sgd", "sls"):
        results = tmp_path / optimizer
        status, output = bgd_run_in_process(
            monkeypatch,
            capsys,
            *TINY,
            f"dataset.root={root}",
            f"results_dir={results}",
            f"optimizer={optimizer}",
            "budget.search_batches=2",
        )
        assert status == 0, output
        (path,) = results.rglob(CHECKPOINT_FILE)
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["format"] == 2 and checkpoint["epoch"] == 1


@pytest.mark.parametrize("victim", ["batches.meta", "data_batch_1"])
def test_planted_cifar_pickle_is_refused_and_never_runs(tmp_path, victim, monkeypatch, capsys):
    folder = write_torchvision_cifar(tmp_path / "data", "cifar10", 4, 2, seed=0)
    marker = tmp_path / "planted-code-ran"
    _plant(folder / victim, marker)
    with pytest.raises(DatasetError, match=victim):
        load_cifar("cifar10", tmp_path / "data", "train")
    assert not marker.exists()

    results = tmp_path / "results"
    status, output = bgd_run_in_process(
        monkeypatch, capsys, *TINY, f"dataset.root={tmp_path / 'data'}", f"results_dir={results}"
    )
    assert_refused_in_one_line(status, output, victim)
    assert not marker.exists()


def test_official_style_pickles_still_load(tmp_path):
    """Protocol-2 pickles with numpy arrays and bytes (how Python 3 writes them) pass the
    restricted unpickler."""
    folder = write_torchvision_cifar(tmp_path, "cifar10", 2, 1, seed=0)
    for filename in ("data_batch_1", "batches.meta"):
        path = folder / filename
        with open(path, "rb") as handle:
            entry = pickle.load(handle)
        entry["filenames"] = [b"a.png", np.int64(3)]
        path.write_bytes(pickle.dumps(entry, protocol=2))
    data = load_cifar("cifar10", tmp_path, "train")
    assert len(data) == 20


# ------------------------------------------------------------------------------------------
# The recorded hash is the hash of the bytes that were decoded


def _raw_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Uncompressed: the file's size depends on the image's size only, not on its pixels.
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def _write_tar(path: Path, seed: int) -> Path:
    """A CIFAR-10 tree as an uncompressed .tar whose size is the same for every seed."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w") as archive:
        for split in ("train", "test"):
            for cls in cifar_module.CIFAR10_CLASSES:
                blob = _raw_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                member = tarfile.TarInfo(f"cifar10/{split}/{cls}/0.png")
                member.size, member.mtime = len(blob), 0
                archive.addfile(member, io.BytesIO(blob))
    return path


def _decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = cifar_module._decode_split

    def counting(name, source, split):
        calls.append(split)
        return real(name, source, split)

    monkeypatch.setattr(cifar_module, "_decode_split", counting)
    return calls


def test_same_size_same_mtime_replacement_is_new_data(tmp_path, monkeypatch):
    decodes = _decodes(monkeypatch)
    archive = _write_tar(tmp_path / "cifar10.tar", seed=0)
    first = load_cifar("cifar10", archive, "train")
    first_identity = data_identity("cifar10", archive)
    stat = archive.stat()

    # Touching the file alone changes no byte: the cache still serves it.
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_cifar("cifar10", archive, "train")
    assert decodes == ["train"]

    # Other images, same size, mtime set back (as `touch -d` would): new data all the same.
    replacement = _write_tar(tmp_path / "other.tar", seed=1)
    assert replacement.stat().st_size == stat.st_size
    archive.write_bytes(replacement.read_bytes())
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (archive.stat().st_size, archive.stat().st_mtime_ns) == (
        stat.st_size,
        stat.st_mtime_ns,
    )
    second = load_cifar("cifar10", archive, "train")
    assert decodes == ["train", "train"]
    assert not torch.equal(first.images, second.images)
    assert torch.equal(second.images, load_cifar("cifar10", replacement, "train").images)
    second_identity = data_identity("cifar10", archive)
    assert second_identity["sha256"] != first_identity["sha256"]
    assert second_identity == data_identity("cifar10", replacement) | {"name": "cifar10.tar"}


def test_in_place_edit_of_an_image_tree_is_new_data(tmp_path, monkeypatch):
    decodes = _decodes(monkeypatch)
    tree = write_image_folder(tmp_path / "tree", "cifar10", 2, 1, seed=0)
    first = load_cifar("cifar10", tree, "train")
    first_identity = data_identity("cifar10", tree)
    victim = sorted((tree / "train").rglob("*.png"))[0]
    stat, folder_stat = victim.stat(), victim.parent.stat()
    pixels = np.full((32, 32, 3), 7, dtype=np.uint8)
    victim.write_bytes(_raw_png(pixels))  # rewritten in place: no folder entry changes
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert victim.parent.stat().st_mtime_ns == folder_stat.st_mtime_ns

    second = load_cifar("cifar10", tree, "train")
    assert decodes == ["train", "train"]
    assert not torch.equal(first.images, second.images)
    assert data_identity("cifar10", tree)["sha256"] != first_identity["sha256"]


def test_copy_elsewhere_has_the_same_identity_and_cache_entry(tmp_path, monkeypatch):
    decodes = _decodes(monkeypatch)
    (tmp_path / "a").mkdir()
    archive = _write_tar(tmp_path / "a" / "cifar10.tar", seed=0)
    copy = tmp_path / "b" / "cifar10.tar"
    copy.parent.mkdir()
    copy.write_bytes(archive.read_bytes())
    assert data_identity("cifar10", archive) == data_identity("cifar10", copy)
    load_cifar("cifar10", archive, "test")
    load_cifar("cifar10", copy, "test")
    assert decodes == ["test"]


# ------------------------------------------------------------------------------------------
# Bounded reads


def _extracted(monkeypatch) -> list[str]:
    names: list[str] = []
    real = tarfile.TarFile.extractfile

    def recording(self, member):
        names.append(member.name if isinstance(member, tarfile.TarInfo) else member)
        return real(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", recording)
    return names


def test_member_too_large_for_an_image_is_refused_before_it_is_read(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for cls in cifar_module.CIFAR10_CLASSES:
            for split in ("train", "test"):
                blob = _raw_png(np.zeros((32, 32, 3), dtype=np.uint8))
                if cls == "bird" and split == "train":
                    blob = b"\0" * (cifar_module.MAX_IMAGE_BYTES + 1)  # a "bomb" of zeros
                member = tarfile.TarInfo(f"cifar10/{split}/{cls}/0.png")
                member.size = len(blob)
                tar.addfile(member, io.BytesIO(blob))
    extracted = _extracted(monkeypatch)
    with pytest.raises(DatasetError, match=r"bird/0.png is 262,145 bytes, too large") as info:
        load_cifar("cifar10", archive, "train")
    assert "\n" not in str(info.value)
    assert "cifar10/train/bird/0.png" not in extracted
    assert extracted  # the members before it were read as usual


def test_split_larger_than_cifar_is_refused_before_it_is_read(tmp_path, monkeypatch):
    tree = write_image_folder(tmp_path / "tree", "cifar10", 3, 1, seed=0)
    sizes = sorted(p.stat().st_size for p in (tree / "train").rglob("*.png"))
    monkeypatch.setattr(cifar_module, "MAX_SPLIT_BYTES", sum(sizes) - 1)
    read: list[Path] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or real(self))
    with pytest.raises(DatasetError, match="exceed"):
        load_cifar("cifar10", tree, "train")
    assert len(read) == len(sizes) - 1  # the last image, over the bound, was never read


def test_pickle_larger_than_any_cifar_file_is_refused(tmp_path, monkeypatch):
    folder = write_torchvision_cifar(tmp_path, "cifar10", 2, 1, seed=0)
    monkeypatch.setattr(cifar_module, "MAX_PICKLE_BYTES", 100)
    with pytest.raises(DatasetError, match="larger than any CIFAR file"):
        load_cifar("cifar10", folder, "train")


# ------------------------------------------------------------------------------------------
# A full disk during a checkpoint write


def test_full_disk_during_a_checkpoint_write_is_one_line(tmp_path, monkeypatch, capsys):
    arguments, run_dir = _finished_run(tmp_path, monkeypatch, capsys)
    before = (run_dir / CHECKPOINT_FILE).read_bytes()

    real_save = torch.save

    def full_disk(payload, handle, *args, **kwargs):
        if isinstance(payload, dict) and "optimizer" in payload:
            handle.write(b"half a checkpoint")
            # What torch.save raises when the disk fills under it.
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos")
        return real_save(payload, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    status, output = bgd_run_in_process(monkeypatch, capsys, *arguments, "trainer.epochs=2")
    assert_refused_in_one_line(status, output, f"cannot write {run_dir / CHECKPOINT_FILE}")
    assert (run_dir / CHECKPOINT_FILE).read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert not lock_path(run_dir).exists()
    # The cell is free: the same command (disk free again) trains the second epoch.
    monkeypatch.setattr(torch, "save", real_save)
    status, output = bgd_run_in_process(monkeypatch, capsys, *arguments, "trainer.epochs=2")
    assert status == 0, output
    assert torch.load(run_dir / CHECKPOINT_FILE, weights_only=True)["epoch"] == 2
