"""Provenance that travels: data named by content, dirty trees flagged, no machine paths."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from bgd_experiments.data import cifar, data_identity, describe_data, same_data
from bgd_experiments.reporting import (
    build_table2,
    scan_runs,
    table_csv,
    table_markdown,
    table_tex,
    write_table,
)
from bgd_experiments.reporting.cli import main as report_main
from bgd_experiments.reporting.writers import portable_source
from bgd_experiments.runfolder import config_differences
from bgd_experiments.training.provenance import recorded_command

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "results"

# --------------------------------------------------------------------------- data identity


def test_archive_identity_is_name_and_hash_wherever_it_lies(tmp_path, tiny_cifar10_targz):
    identity = data_identity("cifar10", tiny_cifar10_targz)
    full = hashlib.sha256(tiny_cifar10_targz.read_bytes()).hexdigest()
    assert identity == {"name": "cifar10-jpeg.tar.gz", "sha256": full[:16]}
    copy = tmp_path / "elsewhere" / "cifar10-jpeg.tar.gz"
    copy.parent.mkdir()
    shutil.copy(tiny_cifar10_targz, copy)
    assert data_identity("cifar10", copy) == identity
    assert data_identity("cifar10", copy.parent) == identity  # a folder holding the archive
    text = describe_data("cifar10", identity)
    assert text == f"cifar10 from cifar10-jpeg.tar.gz (sha256 {full[:16]})"
    assert str(tmp_path) not in text


def test_digest_is_cached_by_path_size_and_mtime(
    tmp_path, tiny_cifar10_targz, isolated_data_cache, monkeypatch
):
    copy = tmp_path / "cifar10-jpeg.tar.gz"
    shutil.copy(tiny_cifar10_targz, copy)
    first = data_identity("cifar10", copy)
    assert list(isolated_data_cache.glob("digest-*.json"))

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again although the file did not change")

    monkeypatch.setattr(cifar, "_compute_digest", no_hashing)
    assert data_identity("cifar10", copy) == first
    monkeypatch.undo()
    # Another content under the same path (new size/mtime): hashed again, another digest.
    copy.write_bytes(copy.read_bytes() + b"\0" * 512)
    assert data_identity("cifar10", copy)["sha256"] != first["sha256"]


def test_folder_layouts_hash_their_files_deterministically(
    tmp_path, tiny_cifar10_imagefolder, tiny_cifar10_torchvision
):
    for root in (tiny_cifar10_imagefolder, tiny_cifar10_torchvision):
        identity = data_identity("cifar10", root)
        assert identity["sha256"] and len(identity["sha256"]) == 16
        copy = tmp_path / root.name
        shutil.copytree(root, copy)  # new path and mtimes, same bytes
        assert data_identity("cifar10", copy) == identity
    tree = tmp_path / tiny_cifar10_imagefolder.name
    before = data_identity("cifar10", tree)
    image = sorted((tree / "train").rglob("*.png"))[0]
    image.write_bytes(image.read_bytes()[:-1] + b"\1")
    # An in-place edit keeps the folder mtimes: remove the cached digest, as for the arrays.
    for cached in cifar.resolve_cache_dir().glob("digest-*.json"):
        cached.unlink()
    assert data_identity("cifar10", tree)["sha256"] != before["sha256"]


def test_missing_data_has_a_name_but_no_hash(tmp_path):
    identity = data_identity("cifar10", tmp_path / "nowhere" / "cifar10-jpeg.tar.gz")
    assert identity == {"name": "cifar10-jpeg.tar.gz", "sha256": None}
    # Unknown content compares by name only (a finished run re-checked without its data).
    assert same_data(identity, {"name": "cifar10-jpeg.tar.gz", "sha256": "0" * 16})
    assert not same_data({"name": "a", "sha256": "1" * 16}, {"name": "a", "sha256": "2" * 16})
    assert not same_data({"name": "a", "sha256": "1" * 16}, {"name": "b", "sha256": "1" * 16})


# --------------------------------------------------------------------------- run identity


def test_config_differences_compare_data_by_content_not_path(tmp_path, tiny_cifar10_targz):
    data = data_identity("cifar10", tiny_cifar10_targz)
    new = {"dataset": {"name": "cifar10", "root": "cifar10-jpeg.tar.gz"}, "data": data}
    old = {"dataset": {"name": "cifar10", "root": "/some/machine/cifar10-jpeg.tar.gz"}}
    assert config_differences({**old, "data": dict(data)}, new) == []
    other = {**old, "data": {"name": data["name"], "sha256": "f" * 16}}
    (difference,) = config_differences(other, new)
    assert difference.startswith("data: ") and "ffff" in difference
    # Folders from before the data block: their root is hashed if it exists here...
    assert (
        config_differences({"dataset": {**old["dataset"], "root": str(tiny_cifar10_targz)}}, new)
        == []
    )
    # ... else compared by file name only.
    assert config_differences(old, new) == []
    renamed = {"dataset": {"name": "cifar10", "root": "/elsewhere/other.tar.gz"}}
    assert config_differences(renamed, new)[0].startswith("data: ")
    # The data is not on this machine (a finished run re-checked): nothing to compare.
    absent = {**new, "data": {"name": "data", "sha256": None}}
    assert config_differences({**old, "data": dict(data)}, absent) == []


# --------------------------------------------------------------------------- report


def _dirty_copy(tmp_path: Path, dirty: int) -> Path:
    """The golden run folders, ``dirty`` of them marked as run from a dirty tree, and every
    data source given a machine path as old run files had."""
    results = tmp_path / "results"
    shutil.copytree(GOLDEN, results)
    summaries = sorted(results.rglob("summary.json"))
    for index, path in enumerate(summaries):
        summary = json.loads(path.read_text())
        summary["git_dirty"] = index < dirty
        summary["run"]["data_source"] = f"{summary['run']['dataset']} from /home/me/data/x.tar.gz"
        path.write_text(json.dumps(summary))
    return results


def test_report_flags_dirty_runs_loudly(tmp_path, capsys):
    results = _dirty_copy(tmp_path, dirty=3)
    table = build_table2(scan_runs(results))
    dirty = sum(1 for run in table.runs if run.git_dirty)
    assert dirty > 0
    first = table_markdown(table).splitlines()[0]
    assert first.startswith("**WARNING: ") and f"{dirty} of {len(table.runs)} runs" in first
    assert "+dirty" in first
    assert table_tex(table).splitlines()[0].startswith("% WARNING: ")
    assert report_main(["table2", "--results-dir", str(results), "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "bgd-report: table2: WARNING" in err and f"{dirty} of" in err


def test_clean_runs_get_no_warning(tmp_path, capsys):
    results = _dirty_copy(tmp_path, dirty=0)
    table = build_table2(scan_runs(results))
    assert table_markdown(table).startswith("Provenance: ")
    assert report_main(["table2", "--results-dir", str(results), "--out", str(tmp_path)]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_written_tables_hold_no_absolute_path(tmp_path):
    results = _dirty_copy(tmp_path, dirty=1)
    table = build_table2(scan_runs(results))
    for path in write_table(table, tmp_path / "out"):
        text = path.read_text()
        assert "/home/me" not in text and str(tmp_path) not in text, path.name
    assert "cifar10 from x.tar.gz" in table_markdown(table)
    assert "/home" not in table_csv(table)
    assert portable_source("cifar10 from ../shared/data (torchvision download)") == (
        "cifar10 from data (torchvision download)"
    )


# --------------------------------------------------------------------------- migration


def test_run_identity_carries_the_data_block():
    from bgd_experiments.training import RunIdentity

    fields = {field.name for field in dataclasses.fields(RunIdentity)}
    assert {"data_source", "data"} <= fields


def test_the_recorded_command_names_no_path_of_this_machine(tmp_path: Path) -> None:
    data = tmp_path / "cifar10-jpeg.tar.gz"
    data.write_bytes(b"x")
    argv = ["--data", str(data), "--max-batch", "200", "--out", str(tmp_path), "--resume"]
    assert recorded_command("scripts/scan_onednn.py", argv) == (
        "python scripts/scan_onednn.py --data cifar10-jpeg.tar.gz --max-batch 200 --resume"
    )
    assert recorded_command("scripts/x.py", [f"--out={tmp_path}", "--isa", "AVX2"]) == (
        "python scripts/x.py --isa AVX2"
    )
    # A path that is not an existing file (a folder, a name to create) is kept as it is.
    assert recorded_command("scripts/x.py", ["--models", "a b", str(tmp_path / "new")]) == (
        f"python scripts/x.py --models 'a b' {tmp_path / 'new'}"
    )
