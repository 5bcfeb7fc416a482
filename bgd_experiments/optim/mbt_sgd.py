"""MBT-GD, MBT-MMT and MBT-NAG: SGD whose learning rate the MBT search chooses, with the
paper's per-epoch schedule and the plateau switch (alpha 1e-4 -> 0.5, momentum off)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ._common import SearchResult
from .patience import STATE_KEYS as PATIENCE_KEYS
from .patience import Patience
from .reference import mbt_search_reference
from .search import LossFn, mbt_search

logger = logging.getLogger("bgd_experiments.optim")

PLATEAU_RULES = ("authors_code", "paper_text")
WARM_START_MODES = ("carry_over", "restart", "previous_sigma", "previous_lr")
# Older spellings, still accepted: False/"off" restart, True is previous_sigma, and
# "last_sigma" was the carry-over's name while it was an option.
_WARM_START_ALIASES: dict[object, str] = {
    False: "restart",
    "off": "restart",
    True: "previous_sigma",
    "last_sigma": "carry_over",
}
IMPLEMENTATIONS = {"fast": mbt_search, "reference": mbt_search_reference}
_CONTROLLER_KEY = "mbt_controller"


def _check_number(name: str, value: Any, low: float, high: float, *, closed: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    inside = low <= value <= high if closed else low < value < high
    if not inside:
        bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
        raise ValueError(f"{name} must lie in {bounds}, got {value!r}")


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class MBTSGD(torch.optim.SGD):
    """SGD (plain / heavy-ball / Nesterov) whose lr is chosen by the MBT search, with the
    paper's schedule. MBT-GD = MBTSGD(momentum=0, search_every_epoch=False);
    MBT-MMT = MBTSGD(momentum=0.9); MBT-NAG = MBTSGD(momentum=0.9, nesterov=True).

    ``lr`` is the search's start rate (paper: 1e-2 for Table 2, 100 for Table 3); the rate
    actually used for training is the one the last search set on the param groups.

    Schedule (per 0-based epoch, driven by the training loop)::

        if opt.needs_search(epoch):
            opt.search(model, loss_fn, batches, num_samples)  # sets lr, resets momentum
        ...train the epoch with opt.step()...
        stop = opt.end_epoch(train_loss, test_acc)

    * MBT-MMT/NAG (``search_every_epoch=True``) search before every epoch; MBT-GD searches
      before the first epoch, then as the plateau rule says (below).
    * ``plateau_rule="authors_code"`` (default, the published code): patience =
      min(epochs since the epoch-mean training loss last improved, epochs since the test
      accuracy last improved); when it exceeds ``plateau_patience`` (5) alpha becomes
      ``alpha_after_plateau`` (0.5) and momentum is turned off for good; MBT-GD searches
      before every epoch in which that patience exceeds 5 (and keeps its last rate
      otherwise); ``end_epoch`` returns True (stop) one epoch after the patience reaches
      ``stop_patience`` (50), as the code's loop checks the patience of the previous epoch.
    * ``plateau_rule="paper_text"``: the switch happens once the training loss has not
      decreased for ``plateau_patience`` consecutive epochs; MBT-GD then searches every
      epoch; no early stop.
    * ``warm_start``: where the first batch of each search after the first starts (the
      first search always starts at ``lr``).
      "carry_over" (default, the authors' code: their one ``LRFinder`` per run keeps
      ``lr_current`` between searches, and a search leaves it at the last batch's accepted
      sigma times the ratio, the rate of its last walking step; not clamped, so a start
      below lr_min is accepted as it is, as theirs is);
      "restart" (also False/"off": every search starts at ``lr``, a reading of the paper's
      text); True/"previous_sigma" (the previous search's mean sigma, clamped to
      [lr_min, lr_max]); "previous_lr" (the previously found, rescaled rate, clamped).
      "last_sigma" is an older name of "carry_over".
    * ``keep_search_steps``: keep the search's k SGD steps as training (deviation; see
      ``mbt_search``). ``implementation``: "fast" (default) or "reference".

    The search ignores weight decay (the paper uses none): the trial direction is the raw
    gradient of ``loss_fn``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        momentum: float = 0.0,
        nesterov: bool = False,
        *,
        search_every_epoch: bool = True,
        alpha: float = 1e-4,
        alpha_after_plateau: float = 0.5,
        beta: float = 0.5,
        num_batches: int = 20,
        rescale: bool = True,
        keep_search_steps: bool = False,
        plateau_rule: str = "authors_code",
        plateau_patience: int = 5,
        stop_patience: int = 50,
        warm_start: bool | str = "carry_over",
        lr_min: float = 1e-6,
        lr_max: float = 100.0,
        min_decrease: float = 1e-7,
        implementation: str = "fast",
    ) -> None:
        _check_number("lr_min", lr_min, 0.0, math.inf, closed=False)
        _check_number("lr_max", lr_max, lr_min, math.inf, closed=False)
        _check_number("lr", lr, lr_min, lr_max, closed=True)
        _check_number("momentum", momentum, 0.0, 1.0, closed=True)
        if momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {momentum!r}")
        if nesterov and momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0 (MBT-NAG uses momentum 0.9)")
        _check_number("alpha", alpha, 0.0, 1.0, closed=False)
        _check_number("alpha_after_plateau", alpha_after_plateau, 0.0, 1.0, closed=False)
        _check_number("beta", beta, 0.0, 1.0, closed=False)
        _check_number("min_decrease", min_decrease, 0.0, math.inf, closed=True)
        _check_count("num_batches", num_batches, 1)
        _check_count("plateau_patience", plateau_patience, 0)
        _check_count("stop_patience", stop_patience, 1)
        if plateau_rule not in PLATEAU_RULES:
            raise ValueError(f"plateau_rule must be one of {PLATEAU_RULES}, got {plateau_rule!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {tuple(IMPLEMENTATIONS)}, got {implementation!r}"
            )
        warm_mode = (
            _WARM_START_ALIASES.get(warm_start, warm_start)
            if isinstance(warm_start, bool | str)
            else warm_start
        )
        if warm_mode not in WARM_START_MODES:
            raise ValueError(
                f"warm_start must be a bool or one of {WARM_START_MODES}, got {warm_start!r}"
            )
        for name, flag in (
            ("search_every_epoch", search_every_epoch),
            ("rescale", rescale),
            ("keep_search_steps", keep_search_steps),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")

        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov)
        self.start_lr = float(lr)
        self.search_every_epoch = search_every_epoch
        self.alpha_after_plateau = float(alpha_after_plateau)
        self.beta = float(beta)
        self.num_batches = num_batches
        self.rescale = rescale
        self.keep_search_steps = keep_search_steps
        self.plateau_rule = plateau_rule
        self.plateau_patience = plateau_patience
        self.stop_patience = stop_patience
        self.warm_start = warm_mode
        self.lr_min = float(lr_min)
        self.lr_max = float(lr_max)
        self.min_decrease = float(min_decrease)
        self.implementation = implementation
        self.last_result: SearchResult | None = None
        # Controller state (saved by state_dict()).
        self.alpha = float(alpha)
        self.plateau_reached = False
        # The text counts only a strict decrease of the training loss as an improvement.
        self.counts = Patience(strict=plateau_rule == "paper_text")
        self.num_searches = 0
        self.last_lr: float | None = None
        self.last_mean_sigma: float | None = None
        # The carry-over: the last search's last accepted sigma times its ratio.
        self.last_sigma: float | None = None

    # ----------------------------------------------------------------- schedule
    @property
    def momentum_enabled(self) -> bool:
        """Whether the steps use momentum (False for MBT-GD and after a plateau)."""
        return any(group["momentum"] != 0 for group in self.param_groups)

    @property
    def patience(self) -> int:
        """The patience the plateau rule compares against ``plateau_patience``."""
        if self.plateau_rule == "authors_code":
            return self.counts.combined
        return self.counts.patience_train

    def needs_search(self, epoch: int) -> bool:
        """Whether to search before (0-based) ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch is 0-based, got {epoch}")
        if self.search_every_epoch or self.num_searches == 0:
            return True
        if self.plateau_rule == "authors_code":
            return self.patience > self.plateau_patience
        return self.plateau_reached

    def search_start_lr(self) -> float:
        """The start rate of the next search (``lr``, or where ``warm_start`` says)."""
        if self.warm_start == "carry_over" and self.last_sigma is not None:
            # Never above lr_max (sigma <= lr_max, ratio <= 1); below lr_min it stays as the
            # authors' code leaves it.
            return min(self.lr_max, self.last_sigma)
        if self.warm_start == "previous_sigma" and self.last_mean_sigma is not None:
            start = self.last_mean_sigma
        elif self.warm_start == "previous_lr" and self.last_lr is not None:
            start = self.last_lr
        else:
            return self.start_lr
        return min(self.lr_max, max(self.lr_min, start))

    def search(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        num_samples: int,
    ) -> SearchResult:
        """Run the MBT search (contract: ``mbt_search``), set the found lr on all param
        groups and reset the momentum buffers."""
        search_function = IMPLEMENTATIONS[self.implementation]
        result = search_function(
            model,
            loss_fn,
            batches,
            self,
            start_lr=self.search_start_lr(),
            alpha=self.alpha,
            beta=self.beta,
            num_batches=self.num_batches,
            num_samples=num_samples,
            rescale=self.rescale,
            keep_search_steps=self.keep_search_steps,
            lr_min=self.lr_min,
            lr_max=self.lr_max,
            min_decrease=self.min_decrease,
        )
        self.state.clear()  # momentum buffers start afresh after every search
        self.num_searches += 1
        self.last_result = result
        if result.sigmas:
            self.last_lr = result.lr
            self.last_mean_sigma = result.mean_sigma
            self.last_sigma = result.sigmas[-1] * result.ratio
        return result

    def end_epoch(self, train_loss: float, test_acc: float) -> bool:
        """Update the plateau state after an epoch; True when training should stop early.

        A non-finite training loss counts as no improvement (model_main.py's comparison
        would instead store NaN as the best loss and never count again; op_main.py counts
        it, as here).
        """
        self.counts.update(train_loss, test_acc)
        if self.plateau_rule == "authors_code":
            stuck = self.patience > self.plateau_patience
        else:
            stuck = self.patience >= self.plateau_patience
        if stuck and not self.plateau_reached:
            self._switch_after_plateau()
        if self.plateau_rule != "authors_code":
            return False
        stop = self.counts.stop_after(self.stop_patience)
        if stop:
            logger.info("MBT plateau rule: patience reached %d, stopping early", self.stop_patience)
        return stop

    def _switch_after_plateau(self) -> None:
        self.plateau_reached = True
        self.alpha = self.alpha_after_plateau
        for group in self.param_groups:
            group["momentum"] = 0.0
            group["nesterov"] = False
        self.state.clear()
        logger.info(
            "MBT plateau (%s, patience %d): alpha -> %g, momentum off",
            self.plateau_rule,
            self.patience,
            self.alpha,
        )

    # ------------------------------------------------------------ checkpointing
    def controller_state(self) -> dict[str, Any]:
        """The schedule's state (alpha, momentum switch, plateau counters, last rates)."""
        return {
            "alpha": self.alpha,
            "plateau_reached": self.plateau_reached,
            **self.counts.state_dict(),
            "num_searches": self.num_searches,
            "last_lr": self.last_lr,
            "last_mean_sigma": self.last_mean_sigma,
            "last_sigma": self.last_sigma,
        }

    def state_dict(self) -> dict[str, Any]:
        """SGD's state dict plus the controller state under ``"mbt_controller"``."""
        state = super().state_dict()
        state[_CONTROLLER_KEY] = self.controller_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore SGD's state (lr, momentum switch in the param groups, buffers) and the
        controller state."""
        state_dict = dict(state_dict)
        controller = state_dict.pop(_CONTROLLER_KEY, None)
        super().load_state_dict(state_dict)
        if controller is not None:
            self.counts.load_state_dict(controller)
            for key, value in controller.items():
                if key not in PATIENCE_KEYS:
                    setattr(self, key, value)
