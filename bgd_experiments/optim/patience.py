"""Epochs without improvement, counted as the authors' training scripts count them.

Both ``model_main.py`` (MBT) and ``op_main.py`` (the baselines) of hank-nguyen/MBT-optimizer
keep two counters: epochs since the epoch-mean training loss last improved and epochs since
the test accuracy last improved; their patience is the smaller one. MBT switches alpha and
momentum on it (:class:`~bgd_experiments.optim.MBTSGD`), and both scripts stop a run on it
(the training loop, for the baselines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

STATE_KEYS = (
    "patience_train",
    "patience_test",
    "best_train_loss",
    "best_test_acc",
    "stop_pending",
)


@dataclass
class Patience:
    """The two counters, their bests, and the pending stop of the authors' loop."""

    strict: bool = False  # True: only a strict decrease of the loss counts (the paper's text)
    patience_train: int = 0
    patience_test: int = 0
    best_train_loss: float = math.inf
    best_test_acc: float = 0.0  # as the authors' code (accuracies are >= 0)
    stop_pending: bool = False

    @property
    def combined(self) -> int:
        """min(training-loss patience, test-accuracy patience), the authors' patience."""
        return min(self.patience_train, self.patience_test)

    def update(self, train_loss: float, test_acc: float) -> None:
        """Count one finished epoch.

        The authors' code resets the loss counter unless the loss got strictly worse; a
        non-finite loss counts as no improvement (as op_main.py's isnan test does).
        """
        train_loss, test_acc = float(train_loss), float(test_acc)
        if self.strict:
            improved = math.isfinite(train_loss) and train_loss < self.best_train_loss
        else:
            improved = math.isfinite(train_loss) and not train_loss > self.best_train_loss
        if improved:
            self.patience_train, self.best_train_loss = 0, train_loss
        else:
            self.patience_train += 1
        if test_acc > self.best_test_acc:
            self.patience_test, self.best_test_acc = 0, test_acc
        else:
            self.patience_test += 1

    def stop_after(self, limit: int) -> bool:
        """Call once per epoch, after :meth:`update`: True when training should stop.

        The authors' loop runs an epoch while the patience computed at the start of the
        previous epoch is below ``limit``, so the stop comes one epoch after the combined
        patience reaches it, whatever that last epoch does.
        """
        stop, self.stop_pending = self.stop_pending, self.combined >= limit
        return stop

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in STATE_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in STATE_KEYS:
            setattr(self, key, state[key])


class PatienceStop:
    """Loop callback: the baselines' early stop of the authors' ``op_main.py``, one epoch
    after the combined patience reaches ``limit``."""

    checkpoint_key = "baseline_patience"  # its state's key in the training checkpoint

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"the stop patience must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.counts = Patience()
        self._stop = False

    def after_epoch(self, end: Any) -> None:
        self.counts.update(end.train_loss, end.plateau_acc)
        self._stop = self.counts.stop_after(self.limit)

    def should_stop(self) -> bool:
        return self._stop

    def state_dict(self) -> dict[str, Any]:
        return self.counts.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts.load_state_dict(state)
