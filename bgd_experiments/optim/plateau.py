"""MBT's plateau rule as a controller of its own, in the manner of ``ReduceLROnPlateau``.

After each epoch, :meth:`MBTPlateau.after_epoch` counts the epochs without improvement; once
they exceed the patience it switches the optimizer's param groups to ``alpha_after_plateau``
(0.5) and turns momentum off for good. Under the authors' rule it also says when MBT-GD
searches again, and when training stops (:meth:`should_stop`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .patience import STATE_KEYS as PATIENCE_KEYS
from .patience import Patience

logger = logging.getLogger("bgd_experiments.optim")

PLATEAU_RULES = ("authors_code", "paper_text")


class MBTPlateau:
    """The plateau switch (alpha -> ``alpha_after_plateau``, momentum off) and early stop.

    ``rule="authors_code"`` (the published code): patience = min(epochs since the epoch-mean
    training loss last improved, epochs since the test accuracy last improved); the switch
    happens when it exceeds ``plateau_patience``, and training stops one epoch after it
    reaches ``stop_patience``. ``rule="paper_text"``: the switch happens once the training
    loss has not strictly decreased for ``plateau_patience`` epochs; no early stop.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        rule: str = "authors_code",
        plateau_patience: int = 5,
        stop_patience: int = 50,
        alpha_after_plateau: float = 0.5,
    ) -> None:
        if rule not in PLATEAU_RULES:
            raise ValueError(f"plateau_rule must be one of {PLATEAU_RULES}, got {rule!r}")
        for name, value, minimum in (
            ("plateau_patience", plateau_patience, 0),
            ("stop_patience", stop_patience, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if isinstance(alpha_after_plateau, bool) or not 0 < alpha_after_plateau < 1:
            raise ValueError(
                f"alpha_after_plateau must lie in (0.0, 1.0), got {alpha_after_plateau!r}"
            )
        self.optimizer = optimizer
        self.rule = rule
        self.plateau_patience = plateau_patience
        self.stop_patience = stop_patience
        self.alpha_after_plateau = float(alpha_after_plateau)
        self.plateau_reached = False
        # The text counts only a strict decrease of the training loss as an improvement.
        self.counts = Patience(strict=rule == "paper_text")
        self._stop = False

    @property
    def patience(self) -> int:
        """The patience the rule compares against ``plateau_patience``."""
        if self.rule == "authors_code":
            return self.counts.combined
        return self.counts.patience_train

    def search_due(self) -> bool:
        """Whether a search that runs only when the rule asks (MBT-GD) runs this epoch."""
        if self.rule == "authors_code":
            return self.patience > self.plateau_patience
        return self.plateau_reached

    def step(self, train_loss: float, accuracy: float) -> bool:
        """Count one finished epoch, switch on a plateau; True when training should stop.

        A non-finite training loss counts as no improvement (model_main.py's comparison
        would instead store NaN as the best loss and never count again; op_main.py counts
        it, as here).
        """
        self.counts.update(train_loss, accuracy)
        if self.rule == "authors_code":
            stuck = self.patience > self.plateau_patience
        else:
            stuck = self.patience >= self.plateau_patience
        if stuck and not self.plateau_reached:
            self._switch()
        self._stop = False
        if self.rule == "authors_code":
            self._stop = self.counts.stop_after(self.stop_patience)
            if self._stop:
                logger.info(
                    "MBT plateau rule: patience reached %d, stopping early", self.stop_patience
                )
        return self._stop

    # ------------------------------------------------------------ loop hooks
    def after_epoch(self, end: Any) -> None:
        """Loop hook: ``end`` carries the epoch's training loss and plateau accuracy."""
        self.step(end.train_loss, end.plateau_acc)

    def should_stop(self) -> bool:
        """Loop hook: the answer of the last :meth:`step`."""
        return self._stop

    def _switch(self) -> None:
        self.plateau_reached = True
        for group in self.optimizer.param_groups:
            group["alpha"] = self.alpha_after_plateau
            group["momentum"] = 0.0
            group["nesterov"] = False
        self.optimizer.state.clear()
        logger.info(
            "MBT plateau (%s, patience %d): alpha -> %g, momentum off",
            self.rule,
            self.patience,
            self.alpha_after_plateau,
        )

    # ------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {"plateau_reached": self.plateau_reached, **self.counts.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_reached = bool(state["plateau_reached"])
        self.counts.load_state_dict({key: state[key] for key in PATIENCE_KEYS})
