"""trainer.epochs on an existing run folder: more extends it, fewer is refused."""

from __future__ import annotations

from test_refusals import TINY, assert_refused_in_one_line, bgd_run_in_process

from bgd_experiments.io import read_json, read_jsonl


def metrics_without_times(run_dir) -> list[dict]:
    return [
        {k: v for k, v in record.items() if k != "epoch_time"}
        for record in read_jsonl(run_dir / "metrics.jsonl")
    ]


def test_more_epochs_extend_a_finished_run_and_fewer_are_refused(
    tmp_path, tiny_cifar10_torchvision, monkeypatch, capsys
):
    def run(results, *overrides):
        arguments = [f"dataset.root={tiny_cifar10_torchvision}", *TINY, "optimizer=nag"]
        arguments.append("dataset.train_subset=100")
        return bgd_run_in_process(
            monkeypatch, capsys, *arguments, f"results_dir={results}", *overrides
        )

    status, output = run(tmp_path / "a", "trainer.epochs=1")
    assert status == 0, output
    (run_dir,) = [path.parent for path in (tmp_path / "a").rglob("summary.json")]
    assert read_json(run_dir / "summary.json")["epochs_requested"] == 1

    status, output = run(tmp_path / "a", "trainer.epochs=2")
    assert status == 0, output
    assert "extending" in output and "skipped" not in output
    summary = read_json(run_dir / "summary.json")
    assert (summary["epochs_requested"], summary["epochs_completed"]) == (2, 2)
    assert summary["run"]["epochs"] == 2
    # The same epochs as a run asked for 2 epochs from the start.
    status, output = run(tmp_path / "b", "trainer.epochs=2")
    assert status == 0, output
    (straight,) = [path.parent for path in (tmp_path / "b").rglob("summary.json")]
    assert metrics_without_times(run_dir) == metrics_without_times(straight)

    # Fewer epochs than done: refused, finished or not, and nothing changes.
    status, output = run(tmp_path / "a", "trainer.epochs=1")
    assert_refused_in_one_line(status, output, "has trained 2 epochs, more than trainer.epochs=1")
    assert "trainer.epochs=2 (or more)" in output and "force=true" in output
    assert read_json(run_dir / "summary.json") == summary
    (run_dir / "summary.json").unlink()  # interrupted after its last checkpoint
    status, output = run(tmp_path / "a", "trainer.epochs=1")
    assert_refused_in_one_line(status, output, "has trained 2 epochs, more than trainer.epochs=1")
    assert not (run_dir / "summary.json").exists()
