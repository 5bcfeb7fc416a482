"""The search reports its progress through a callback; the tracker shows it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bgd_experiments.optim import SearchProgress, mbt_search, mbt_search_reference
from bgd_experiments.training.tracking import RunTracker
from tests.test_mbt_search import run_search


@pytest.mark.parametrize("implementation", [mbt_search, mbt_search_reference])
def test_search_reports_every_batch_and_its_trials(implementation) -> None:
    seen: list[SearchProgress] = []
    result = run_search(implementation, num_batches=4, progress=seen.append)[0]
    assert [p.batch for p in seen] == [1, 2, 3, 4]
    assert all(p.num_batches == 4 for p in seen)
    trials = [p.trials for p in seen]
    assert trials == sorted(trials) and trials[-1] == result.trials


def _tracker(tmp_path: Path, progress: str) -> RunTracker:
    return RunTracker(
        tmp_path,
        total_epochs=1,
        steps_per_epoch=3,
        history=[],
        progress=progress,
        tensorboard=False,
    )


def test_plain_mode_writes_one_line_per_search(tmp_path: Path, caplog) -> None:
    tracker = _tracker(tmp_path, "plain")
    with caplog.at_level(logging.INFO, logger="bgd_experiments.training"):
        for batch in range(1, 6):
            tracker.search_progress(SearchProgress(batch, 5, 3 * batch))
    tracker.close()
    lines = [r.getMessage() for r in caplog.records if "searching lr" in r.getMessage()]
    assert lines == ["searching lr: batch 1 of 5, 3 trials (of the search's first batch; "
                     "the result follows)"]  # fmt: skip


def test_rich_mode_shows_a_live_line_and_quiets_the_search_info(tmp_path: Path) -> None:
    optim_log = logging.getLogger("bgd_experiments.optim")
    before = optim_log.level
    optim_log.setLevel(logging.INFO)
    try:
        tracker = _tracker(tmp_path, "rich")
        assert optim_log.level == logging.WARNING
        tracker.start_epoch(1)
        tracker.search_progress(SearchProgress(2, 5, 7))
        task = tracker._progress.tasks[0]
        assert task.fields["status"] == "searching lr: batch 2 of 5, 7 trials"
        tracker.close()
        assert optim_log.level == logging.INFO
    finally:
        optim_log.setLevel(before)
