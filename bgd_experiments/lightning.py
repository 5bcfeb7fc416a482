"""A PyTorch Lightning callback that runs the MBT search at each epoch's start.

Optional: ``pip install "bgd-experiments[lightning]"``. The LightningModule's
``configure_optimizers`` returns one :class:`~bgd_experiments.optim.MBTSGD`; the search reads
the training dataloader's first batches through ``compute_loss(module, batch)`` (default:
the module's ``training_step``, which must return the loss tensor; its ``self.log`` calls
then also see the search's forwards, so pass a ``compute_loss`` that does not log). This
module is the only one importing lightning; ``bgd_experiments.optim`` does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from bgd_experiments.optim import MBTSGD, SearchResult


class MBTSearchCallback(pl.Callback):
    """Before every epoch whose search the MBTSGD schedule asks for, search its rate.

    ``num_samples``: the training set's size (default: ``len(trainer.train_dataloader
    .dataset)``). ``monitor``: the logged accuracy handed to ``end_epoch`` after each
    epoch (percent or fraction; None: the plateau rule and early stop are not used).
    """

    def __init__(
        self,
        num_samples: int | None = None,
        compute_loss: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
        monitor: str | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.compute_loss = compute_loss
        self.monitor = monitor
        self.results: list[SearchResult] = []

    @staticmethod
    def _optimizer(trainer: pl.Trainer) -> MBTSGD:
        optimizers = trainer.optimizers
        if len(optimizers) != 1 or not isinstance(optimizers[0], MBTSGD):
            names = [type(opt).__name__ for opt in optimizers]
            raise TypeError(f"MBTSearchCallback needs one MBTSGD optimizer, got {names}")
        return optimizers[0]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        opt = self._optimizer(trainer)
        if not opt.needs_search(trainer.current_epoch):
            return
        loader = trainer.train_dataloader
        num_samples = self.num_samples or len(loader.dataset)  # type: ignore[union-attr,arg-type]
        compute_loss = self.compute_loss or (
            lambda module, batch: module.training_step(batch, 0)  # type: ignore[operator]
        )
        result = opt.search(pl_module, None, iter(loader), num_samples, compute_loss=compute_loss)
        self.results.append(result)
        pl_module.log("mbt_lr", result.lr)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None:
            return
        metrics = trainer.callback_metrics
        loss, acc = metrics.get("train_loss"), metrics.get(self.monitor)
        if (
            loss is not None
            and acc is not None
            and self._optimizer(trainer).end_epoch(float(loss), float(acc))
        ):
            trainer.should_stop = True
