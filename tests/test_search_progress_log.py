"""A search-only run logs where its search is, throttled, and always after the last batch."""

from __future__ import annotations

import logging

import pytest

from bgd_experiments import tasks
from bgd_experiments.optim import SearchProgress


def test_search_progress_is_logged_at_most_once_per_interval_and_at_the_end(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # perf_counter at the start, then after each of 5 batches.
    clock = iter([100.0, 101.0, 105.0, 112.0, 118.0, 119.0])
    monkeypatch.setattr(tasks.time, "perf_counter", lambda: next(clock))
    report = tasks._search_progress_log(interval_s=10.0)
    with caplog.at_level(logging.INFO, logger="bgd_experiments"):
        for batch in range(1, 6):
            report(SearchProgress(batch=batch, num_batches=5, trials=3 * batch))
    assert [record.getMessage() for record in caplog.records] == [
        "search: batch 3 of 5, 9 trials, 12 s",
        "search: batch 5 of 5, 15 trials, 19 s",
    ]
