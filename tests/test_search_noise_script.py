"""scripts/search_noise.py end to end on tiny generated data: every family runs and is summed up."""

from __future__ import annotations

import json

import pytest
from scriptload import load_script

from bgd_experiments.reporting.noise import FLOAT_FAMILIES


def test_search_noise_records_every_search_and_merges_widths(tmp_path, tiny_cifar10_targz):
    script = load_script("search_noise")
    out = tmp_path / "results" / "table1_noise.json"
    common = [
        f"--data={tiny_cifar10_targz}",
        "--batch-size=8",
        "--num-batches=2",
        "--num-samples=200",
        "--augment=none",
        "--start-lrs=0.01,100",
        "--draws=2",
        "--seeds=1",
        "--threads=1",
        f"--json={out}",
    ]
    assert script.main(["--width=0.0625", *common]) == 0
    # channels_last is skipped below width 0.25 (oneDNN's strided 1x1 bug), not faked.
    assert script.main(["--width=0.25", "--families=channels_last,repeat", *common]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["batch_size"] == 8
    assert report["settings"]["num_samples"] == 200
    # No Table 1 runs beside it here: the comparison rows exist, with nothing to compare.
    assert [row["n_starts_ours"] for row in report["table1_start_rate_spread"]] == [0] * 7
    narrow, wide = report["widths"]["0.0625"], report["widths"]["0.25"]
    families = [s["family"] for s in narrow["searches"]]
    # Per start: baseline, repeat, 2 weight draws, reference, threads, 1 loader, 1 init seed.
    assert len(families) == 2 * 8 == narrow["planned_searches"]
    assert "channels_last" not in families
    assert [s["family"] for s in wide["searches"]] == ["baseline", "repeat", "channels_last"] * 2
    for entry in (narrow, wide):
        assert entry["provenance"]["data"] == {
            "name": "cifar10-jpeg.tar.gz",
            "sha256": entry["provenance"]["data"]["sha256"],
        }
        assert len(entry["provenance"]["data"]["sha256"]) == 16
        assert entry["provenance"]["torch"]
        assert "git_commit" in entry["provenance"]
        for search in entry["searches"]:
            assert search["found_lr"] > 0 and search["trials"] > 0
    perturbed = [s for s in narrow["searches"] if s["family"] == "weights_1e-7"]
    assert all(s["weights_changed"] > 0 for s in perturbed)
    # Deterministic: the same search twice finds the same rate.
    for start in ("0.01", "100"):
        repeat = wide["spreads"][start]["families"]["repeat"]
        assert repeat["max_min"] == pytest.approx(1.0)
        pooled = narrow["spreads"][start]["families"]["float_level"]
        assert pooled["n"] == 1 + sum(
            s["family"] in FLOAT_FAMILIES
            for s in narrow["searches"]
            if f"{s['start_lr']:g}" == start
        )
    assert str(tmp_path) not in out.read_text()  # no machine path in the record
