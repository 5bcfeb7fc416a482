"""MBTSearchCallback on CPU: a search before every MBT-NAG epoch, the found rate trained
with, and a clear refusal of another optimizer. Skipped without lightning."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from bgd_experiments.lightning import MBTSearchCallback  # noqa: E402
from bgd_experiments.optim import MBTSGD  # noqa: E402


class _Module(pl.LightningModule):
    def __init__(self, use_adam: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.use_adam = use_adam
        self.step_lrs: list[float] = []

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.step_lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.loss(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.use_adam:
            return torch.optim.Adam(self.parameters())
        return MBTSGD(self.parameters(), lr=0.05, momentum=0.9, nesterov=True, num_batches=3)


def _fit(module: _Module, callback: MBTSearchCallback, epochs: int = 2) -> None:
    torch.manual_seed(0)
    x = torch.randn(120, 4)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=20)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)


def test_callback_searches_each_epoch_and_training_uses_the_rate() -> None:
    module = _Module()
    callback = MBTSearchCallback(compute_loss=lambda m, b: m.loss(b))
    _fit(module, callback)
    assert len(callback.results) == 2
    assert all(r.batch_size == 20 and r.num_batches == 3 for r in callback.results)
    # Every step of an epoch runs at that epoch's searched rate (6 steps per epoch).
    assert module.step_lrs[:6] == [callback.results[0].lr] * 6
    assert module.step_lrs[6:] == [callback.results[1].lr] * 6


def test_callback_refuses_another_optimizer() -> None:
    with pytest.raises(TypeError, match="MBTSGD"):
        _fit(_Module(use_adam=True), MBTSearchCallback(), epochs=1)
