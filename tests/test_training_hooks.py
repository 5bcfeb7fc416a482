"""fit talks to optimizers and callbacks only through the optional hooks of
bgd_experiments.hooks: a new kind of optimizer needs no change to fit."""

from __future__ import annotations

from typing import Any

import torch

from bgd_experiments.hooks import EpochEnd, EpochReport, EpochStart
from bgd_experiments.io import read_jsonl
from tests.test_training import Reiterable, fit_quietly, tiny_problem


class ScheduleFreeLike(torch.optim.SGD):
    """Stands in for a schedule-free optimizer: it must be told train() / eval()."""

    def __init__(self, params: Any, calls: list[str]) -> None:
        super().__init__(params, lr=0.05)
        self.calls = calls
        self.mode = "eval"

    def train(self) -> None:
        self.calls.append("train")
        self.mode = "train"

    def eval(self) -> None:
        self.calls.append("eval")
        self.mode = "eval"

    def step(self, closure: Any = None) -> Any:
        assert self.mode == "train", "a step outside train mode"
        return super().step(closure)

    def before_epoch(self, start: EpochStart) -> EpochReport:
        self.calls.append(f"before {start.epoch}")
        return EpochReport(record={"custom": start.epoch}, note=f"epoch {start.epoch + 1}: hi")


class StopAfter:
    """A callback with a stop rule and checkpointed state."""

    checkpoint_key = "stop_after"

    def __init__(self, epochs: int, calls: list[str]) -> None:
        self.epochs, self.seen, self.calls = epochs, 0, calls

    def after_epoch(self, end: EpochEnd) -> None:
        self.seen += 1
        self.calls.append(f"after {end.epoch}")

    def should_stop(self) -> bool:
        return self.seen >= self.epochs

    def state_dict(self) -> dict[str, int]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seen = state["seen"]


def _fit(run_dir, optimizer, callback, epochs: int) -> dict:
    model, train, test = tiny_problem()
    optimizer = optimizer(model.parameters())
    return fit_quietly(
        model, optimizer, train, Reiterable(test), run_dir, epochs, callbacks=[callback]
    )


def test_fit_calls_every_hook_in_order_and_checkpoints_callbacks(tmp_path) -> None:
    calls: list[str] = []
    summary = _fit(
        tmp_path, lambda params: ScheduleFreeLike(params, calls), StopAfter(2, calls), epochs=5
    )
    assert calls == [
        "before 0", "train", "eval", "after 0",
        "before 1", "train", "eval", "after 1",
    ]  # fmt: skip
    assert summary["status"] == "stopped_early" and summary["epochs_completed"] == 2
    assert [r["custom"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["stop_after"] == {"seen": 2}
    # The stop is in the checkpoint: with the summary lost, a resumed run trains no more.
    (tmp_path / "summary.json").unlink()
    after_stop = StopAfter(3, [])
    again = _fit(tmp_path, lambda params: ScheduleFreeLike(params, []), after_stop, epochs=5)
    assert after_stop.calls == [] and again["epochs_completed"] == 2
    assert again["status"] == "stopped_early"
    # Interrupted before its stop (the summary of a 1-epoch run removed): the callback's
    # state comes back from the checkpoint, so it stops after two more epochs, not three.
    first = _fit(tmp_path / "b", lambda params: ScheduleFreeLike(params, []), StopAfter(3, []), 1)
    assert first["status"] == "finished"
    (tmp_path / "b" / "summary.json").unlink()
    resumed = StopAfter(3, [])
    again = _fit(tmp_path / "b", lambda params: ScheduleFreeLike(params, []), resumed, epochs=5)
    assert resumed.seen == 3 and again["epochs_completed"] == 3
