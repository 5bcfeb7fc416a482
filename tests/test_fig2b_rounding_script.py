"""scripts/fig2b_rounding.py end to end on tiny generated data: four settings, each compared."""

from __future__ import annotations

import json

from scriptload import load_script

from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS


def test_first_difference_counts_from_the_first_setting():
    script = load_script("fig2b_rounding")
    assert script.first_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) is None
    assert script.first_difference([1.0, 2.5, 3.0], [1.0, 2.0, 3.0]) == 1


def test_every_setting_runs_and_is_compared(tmp_path, tiny_cifar10_targz):
    script = load_script("fig2b_rounding")
    out = tmp_path / "fig2b_rounding.json"
    overrides = ["dataset.train_subset=20", "dataset.test_subset=20", "model.width=0.0625"]
    assert (
        script.main(["--iterations=3", f"--data={tiny_cifar10_targz}", f"--json={out}", *overrides])
        == 0
    )
    report = json.loads(out.read_text())
    settings = [(run["channels_last"], run["threads"]) for run in report["runs"]]
    assert settings == list(script.SETTINGS)
    first = report["runs"][0]
    assert first["first_step_difference"] is None and first["first_loss_difference"] is None
    for run in report["runs"]:
        assert len(run["step_sizes"]) == len(run["losses"]) == 3
        steps = run["step_sizes"]
        settle = run["settle_iteration"]  # steps settle..end are equal, the one before is not
        assert len(set(steps[settle:])) == 1 and (settle == 0 or steps[settle - 1] != steps[-1])
        assert run["request"]["dataset"]["train_subset"] == 20
        difference = script.first_difference(run["losses"], first["losses"])
        assert run["first_loss_difference"] == difference
    finals = [run["final_loss"] for run in report["runs"]]
    assert report["final_loss_spread"] == {"min": min(finals), "max": max(finals)}
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(report["provenance"])
    markdown = out.with_suffix(".md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4  # header, separator, one row per setting
