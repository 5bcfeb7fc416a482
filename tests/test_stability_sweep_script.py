"""The stability sweep end to end at toy size: its rows, its table and its provenance."""

from __future__ import annotations

import json
from pathlib import Path

from scriptload import load_script

from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS

SAME_RUN = ("batch", "optimizer", "momentum", "seed")


def test_the_sweep_writes_a_row_per_run_and_a_table_row_per_cell(tmp_path: Path) -> None:
    script = load_script("stability_sweep")
    script.main(
        ["--epochs", "1", "--seeds", "0", "1", "--n", "100", "--models", "mlp",
         "--search-batches", "2", "--out", str(tmp_path)]
    )  # fmt: skip
    rows = script.read_sweep(tmp_path / "sweep.csv")
    # Per batch (50, 200): MBT-GD once, MBT-MMT and MBT-NAG at 2 momenta x guard off/on.
    assert len(rows) == 2 * (1 + 2 * 2 * 2) * 2
    for row in rows:
        if row["guard"] == "True":
            # The guard trains at the found rate times (1 - momentum).
            twin = next(
                other for other in rows
                if other["guard"] == "False"
                and all(other[key] == row[key] for key in SAME_RUN)
            )  # fmt: skip
            expected = float(twin["max_lr"]) * (1 - float(row["momentum"]))
            assert abs(float(row["max_lr"]) - expected) <= 1e-3 * expected
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(provenance)
    assert "out" not in provenance["args"]  # a path of this machine
    table = (tmp_path / "table.md").read_text()
    assert table == script.summary_table(rows, provenance)
    assert f"Made from commit {provenance['git_commit'][:7]} (" in table
    lines = [line for line in table.splitlines() if line.startswith("| mlp |")]
    assert len(lines) == 2 * (1 + 2 * 2 * 2)
    seed0, seed1 = rows[0], rows[1]
    assert lines[0] == (
        f"| mlp | 50 | mbt_gd | 0.0 | off | 0/2 | {seed0['max_loss']} / {seed1['max_loss']} | "
        f"{seed0['last_loss']} / {seed1['last_loss']} | {seed0['max_lr']} / {seed1['max_lr']} |"
    )
