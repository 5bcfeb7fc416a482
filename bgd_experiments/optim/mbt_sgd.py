"""MBT-GD, MBT-MMT and MBT-NAG: SGD whose learning rate the MBT search chooses, with the
paper's per-epoch schedule and the plateau switch (alpha 1e-4 -> 0.5, momentum off)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from bgd_experiments.hooks import EpochEnd, EpochReport, EpochStart

from ._common import (
    ComputeLoss,
    ProgressFn,
    Reducer,
    SearchResult,
    SearchSettings,
    check_search_arguments,
)
from .plateau import PLATEAU_RULES, MBTPlateau
from .reference import reference_search_with
from .search import LossFn, search_with

logger = logging.getLogger("bgd_experiments.optim")

WARM_START_MODES = ("carry_over", "restart", "previous_sigma", "previous_lr")
# Older spellings, still accepted: False/"off" restart, True is previous_sigma, and
# "last_sigma" was the carry-over's name while it was an option.
_WARM_START_ALIASES: dict[object, str] = {
    False: "restart",
    "off": "restart",
    True: "previous_sigma",
    "last_sigma": "carry_over",
}
IMPLEMENTATIONS = {"fast": search_with, "reference": reference_search_with}
# The checkpoint block of the search's and the plateau rule's state (name kept from the
# versions in which both lived in MBTSGD, so their checkpoints still resume).
_CONTROLLER_KEY = "mbt_controller"
_SEARCH_STATE_KEYS = ("num_searches", "last_lr", "last_mean_sigma", "last_sigma")
__all__ = ["MBTSGD", "PLATEAU_RULES", "WARM_START_MODES"]


class MBTSGD(torch.optim.SGD):
    """SGD (plain / heavy-ball / Nesterov) whose lr is chosen by the MBT search, with the
    paper's schedule. MBT-GD = MBTSGD(momentum=0, search_every_epoch=False);
    MBT-MMT = MBTSGD(momentum=0.9); MBT-NAG = MBTSGD(momentum=0.9, nesterov=True).

    ``lr`` is the search's start rate (paper: 1e-2 for Table 2, 100 for Table 3); the rate
    actually used for training is the one the last search set on the param groups. The
    search settings are hyper-parameters of the param groups (``defaults``), as ``lr`` is.

    Schedule (per 0-based epoch; ``fit`` drives it through the hooks ``before_epoch`` and,
    on :attr:`plateau`, ``after_epoch`` / ``should_stop``)::

        if opt.needs_search(epoch):
            opt.search(model, loss_fn, batches, num_samples)  # sets lr, resets momentum
        ...train the epoch with opt.step()...
        stop = opt.end_epoch(train_loss, test_acc)  # = opt.plateau.step(...)

    * MBT-MMT/NAG (``search_every_epoch=True``) search before every epoch; MBT-GD searches
      before the first epoch, then as the plateau rule says.
    * The plateau switch and early stop are :class:`~bgd_experiments.optim.plateau.MBTPlateau`
      (``plateau_rule``, ``plateau_patience``, ``stop_patience``, ``alpha_after_plateau``),
      available as :attr:`plateau`.
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

    ``weight_decay`` is SGD's (default 0, as in the paper): the training steps apply it, the
    search does not (its trial direction is the raw gradient of ``loss_fn``, and Armijo's
    condition sees that loss only). Param groups may differ in anything but ``lr``: one
    searched rate is set on every group, so different group rates are refused.
    ``step()`` before the first search trains at ``lr`` and warns once.
    ``momentum_guard`` (a deviation, default off): train at the found rate times
    (1 - momentum), so that a momentum step's effective rate is the one searched
    (docs/stability.md).
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
        weight_decay: float = 0.0,
        momentum_guard: bool = False,
    ) -> None:
        check_search_arguments(
            start_lr=lr,
            alpha=alpha,
            beta=beta,
            num_batches=num_batches,
            num_samples=None,
            lr_min=lr_min,
            lr_max=lr_max,
            min_decrease=min_decrease,
        )
        if not lr_min <= lr <= lr_max:
            raise ValueError(f"lr must lie in [lr_min, lr_max] = [{lr_min}, {lr_max}], got {lr}")
        if isinstance(momentum, bool) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        if nesterov and momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0 (MBT-NAG uses momentum 0.9)")
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

        super().__init__(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
        group_lrs = {group["lr"] for group in self.param_groups}
        if len(group_lrs) > 1:
            raise ValueError(
                f"param groups with different lr {sorted(group_lrs)}: the search sets one rate "
                "on every group; give the groups the same lr (or none) and, for a per-layer "
                "scale, run one MBTSGD per group of layers"
            )
        self._warned_unsearched_step = False
        if not isinstance(momentum_guard, bool):
            raise ValueError(f"momentum_guard must be a bool, got {momentum_guard!r}")
        # Deviation, off by default: the rate is searched for plain gradient steps, while a
        # momentum step's effective rate is about lr / (1 - momentum); scaling by
        # (1 - momentum) trains at the searched effective rate.
        self.momentum_guard = momentum_guard
        self._search_defaults = {
            "start_lr": float(lr),
            "search_every_epoch": search_every_epoch,
            "alpha": float(alpha),
            "beta": float(beta),
            "num_batches": int(num_batches),
            "rescale": rescale,
            "keep_search_steps": keep_search_steps,
            "warm_start": warm_mode,
            "lr_min": float(lr_min),
            "lr_max": float(lr_max),
            "min_decrease": float(min_decrease),
            "implementation": implementation,
        }
        self.defaults.update(self._search_defaults)
        self._fill_group_defaults()
        self.plateau = MBTPlateau(
            self,
            rule=plateau_rule,
            plateau_patience=plateau_patience,
            stop_patience=stop_patience,
            alpha_after_plateau=alpha_after_plateau,
        )
        self.last_result: SearchResult | None = None
        # Where the next search starts (see warm_start); saved by state_dict().
        self.num_searches = 0
        self.last_lr: float | None = None
        self.last_mean_sigma: float | None = None
        # The carry-over: the last search's last accepted sigma times its ratio.
        self.last_sigma: float | None = None
        # Set by a distributed run (see ``bgd_experiments.distributed``): how the search
        # averages its losses and gradient over the processes. None: one process.
        self.reducer: Reducer | None = None

    def _fill_group_defaults(self) -> None:
        # Groups of an older checkpoint or added later lack the search settings.
        for group in self.param_groups:
            for key, value in self._search_defaults.items():
                group.setdefault(key, value)

    @property
    def settings(self) -> dict[str, Any]:
        """The search settings (of the first param group: one search moves all groups)."""
        return self.param_groups[0]

    @property
    def alpha(self) -> float:
        """Armijo's constant of the next search (``alpha_after_plateau`` after a plateau)."""
        return float(self.settings["alpha"])

    @property
    def warm_start(self) -> str:
        return str(self.settings["warm_start"])

    @property
    def keep_search_steps(self) -> bool:
        return bool(self.settings["keep_search_steps"])

    @property
    def plateau_reached(self) -> bool:
        return self.plateau.plateau_reached

    @property
    def patience(self) -> int:
        """The patience the plateau rule compares against ``plateau_patience``."""
        return self.plateau.patience

    # ----------------------------------------------------------------- schedule
    @property
    def momentum_enabled(self) -> bool:
        """Whether the steps use momentum (False for MBT-GD and after a plateau)."""
        return any(group["momentum"] != 0 for group in self.param_groups)

    def needs_search(self, epoch: int) -> bool:
        """Whether to search before (0-based) ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch is 0-based, got {epoch}")
        if self.settings["search_every_epoch"] or self.num_searches == 0:
            return True
        return self.plateau.search_due()

    def search_start_lr(self) -> float:
        """The start rate of the next search (``lr``, or where ``warm_start`` says)."""
        lr_min, lr_max = self.settings["lr_min"], self.settings["lr_max"]
        if self.warm_start == "carry_over" and self.last_sigma is not None:
            # Never above lr_max (sigma <= lr_max, ratio <= 1); below lr_min it stays as the
            # authors' code leaves it.
            return min(lr_max, self.last_sigma)
        if self.warm_start == "previous_sigma" and self.last_mean_sigma is not None:
            start = self.last_mean_sigma
        elif self.warm_start == "previous_lr" and self.last_lr is not None:
            start = self.last_lr
        else:
            return float(self.settings["start_lr"])
        return min(lr_max, max(lr_min, start))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """SGD's step at the rate the last search set."""
        if self.num_searches == 0 and not self._warned_unsearched_step:
            self._warned_unsearched_step = True
            warnings.warn(
                "MBTSGD.step() before any search: training at the start rate lr="
                f"{self.param_groups[0]['lr']:g}; call opt.search(...) before each epoch "
                "(opt.needs_search(epoch) says when)",
                stacklevel=2,
            )
        return super().step(closure)

    def search(
        self,
        model: nn.Module,
        loss_fn: LossFn | None,
        batches: Iterable[Any],
        num_samples: int,
        progress: ProgressFn | None = None,
        *,
        compute_loss: ComputeLoss | None = None,
    ) -> SearchResult:
        """Run the MBT search (contract: ``mbt_search``), set the found lr on all param
        groups and reset the momentum buffers.

        ``batches``: any iterable of training batches (e.g. the training DataLoader: only
        its first ``num_batches`` are read); ``num_samples``: the training set's size.
        With gradient accumulation, hand batches of the accumulated size: the rate is
        rescaled by sqrt(batch / num_samples) of the batches searched. For batches that are
        not ``(inputs, targets)`` pass ``loss_fn=None, compute_loss=fn(model, batch)``.
        """
        settings = self.settings
        extra: dict[str, Any] = {}
        if compute_loss is not None:
            if settings["implementation"] != "fast":
                raise ValueError("compute_loss needs implementation='fast'")
            extra["compute_loss"] = compute_loss
        search_settings = SearchSettings(
            start_lr=self.search_start_lr(),
            num_samples=num_samples,
            progress=progress,
            reducer=self.reducer,
            **{name: settings[name] for name in SearchSettings.TUNABLE},
        )
        search_function = _in_search_precision(IMPLEMENTATIONS[settings["implementation"]])
        result = search_function(model, search_settings, loss_fn, batches, self, **extra)
        self.state.clear()  # momentum buffers start afresh after every search
        if self.momentum_guard and result.sigmas:
            for group in self.param_groups:
                group["lr"] = result.lr * (1.0 - group["momentum"])
        self.num_searches += 1
        self.last_result = result
        if result.sigmas:
            self.last_lr = result.lr
            self.last_mean_sigma = result.mean_sigma
            self.last_sigma = result.sigmas[-1] * result.ratio
        return result

    def end_epoch(self, train_loss: float, test_acc: float) -> bool:
        """The plateau rule after an epoch (:meth:`MBTPlateau.step`); True: stop early.

        ``train_loss``: the epoch's mean training loss. ``test_acc``: an accuracy in percent
        (0-100, as the paper's runs record it) or as a fraction, the same scale every epoch;
        only improvements over its best count. Without a test set pass a validation
        accuracy, or the training accuracy.
        """
        acc = float(test_acc)
        if not (math.isfinite(acc) and 0.0 <= acc <= 100.0):
            raise ValueError(f"test_acc is an accuracy in [0, 100] (or [0, 1]), got {test_acc!r}")
        return self.plateau.step(train_loss, acc)

    # ------------------------------------------------------------ loop hooks
    def before_epoch(self, start: EpochStart) -> EpochReport:
        """Search when the schedule says so: in restore mode on batches of their own, in
        keep mode on the epoch's first batches (its steps then count as training)."""
        result: SearchResult | None = None
        if self.needs_search(start.epoch):
            source = start.batches if self.keep_search_steps else start.fresh_batches()
            result = self.search(
                start.model, start.loss_fn, source, start.num_samples, progress=start.progress
            )
        report = EpochReport(record={"momentum_enabled": self.momentum_enabled})
        if result is None:
            report.record.update(dict.fromkeys(_RECORD_FIELDS))
            return report
        report.record.update(
            search_lr=result.lr,
            search_alpha=result.alpha,
            search_trials=result.trials,
            search_time=result.wall_time,
            search_status=result.status,
        )
        report.note = (
            f"epoch {start.epoch + 1}: searched lr {result.lr:.4g} (alpha {result.alpha:g}, "
            f"{result.trials} trials, {result.wall_time:.1f}s, {result.status})"
        )
        report.forward_passes = result.forward_passes
        report.backward_passes = result.backward_passes
        return report

    def after_epoch(self, end: EpochEnd) -> None:
        self.plateau.after_epoch(end)

    def should_stop(self) -> bool:
        return self.plateau.should_stop()

    # ------------------------------------------------------------ checkpointing
    def controller_state(self) -> dict[str, Any]:
        """Where the next search starts, and the plateau rule's state."""
        return {
            **self.plateau.state_dict(),
            **{key: getattr(self, key) for key in _SEARCH_STATE_KEYS},
        }

    def state_dict(self) -> dict[str, Any]:
        """SGD's state dict plus the controller state under ``"mbt_controller"``."""
        state = super().state_dict()
        state[_CONTROLLER_KEY] = self.controller_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore SGD's state (lr, search settings and momentum switch in the param
        groups, buffers), the search's start state and the plateau rule's state."""
        state_dict = dict(state_dict)
        controller = state_dict.pop(_CONTROLLER_KEY, None)
        super().load_state_dict(state_dict)
        self._fill_group_defaults()
        if controller is None:
            return
        self.plateau.load_state_dict(controller)
        self.num_searches = int(controller.get("num_searches", 0))
        self.last_lr = controller.get("last_lr")
        self.last_mean_sigma = controller.get("last_mean_sigma")
        self.last_sigma = controller.get("last_sigma")
        if "alpha" in controller:  # older checkpoints kept alpha here, not in the groups
            for group in self.param_groups:
                group["alpha"] = float(controller["alpha"])


def _in_search_precision(
    search_function: Callable[..., SearchResult],
) -> Callable[..., SearchResult]:
    """``search_function`` run inside the model's ``search_scope`` when it has one: a
    ``training.RunModel`` may search in another precision than it trains in."""

    def search_in_scope(
        model: nn.Module, settings: SearchSettings, *args: Any, **kwargs: Any
    ) -> SearchResult:
        with getattr(model, "search_scope", nullcontext)():
            return search_function(settings, model, *args, **kwargs)

    return search_in_scope


_RECORD_FIELDS = ("search_lr", "search_alpha", "search_trials", "search_time", "search_status")
