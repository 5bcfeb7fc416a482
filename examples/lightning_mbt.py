"""MBT-NAG in PyTorch Lightning: MBTSearchCallback runs the search at each epoch's start.

Needs ``pip install "bgd-experiments[lightning]"``. Synthetic data, CPU.
Run: ``python examples/lightning_mbt.py`` (``--tiny`` for a few-second check).
"""

import argparse

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bgd_experiments.lightning import MBTSearchCallback
from bgd_experiments.optim import MBTSGD

parser = argparse.ArgumentParser()
parser.add_argument("--tiny", action="store_true", help="a few-second run (the tests use it)")
args = parser.parse_args()
n, epochs = (400, 2) if args.tiny else (5000, 10)


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        loss = self.loss(batch)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self) -> MBTSGD:
        return MBTSGD(self.parameters(), lr=0.01, momentum=0.9, nesterov=True)  # MBT-NAG


torch.manual_seed(0)
inputs = torch.randn(n, 20)
train_set = TensorDataset(inputs, (inputs[:, :5].sum(dim=1) > 0).long())
loader = DataLoader(train_set, batch_size=50, shuffle=True)
# The search calls module.loss, not training_step: the search's forwards stay out of the
# logged epoch loss. num_samples defaults to len(loader.dataset).
search = MBTSearchCallback(compute_loss=lambda module, batch: module.loss(batch))
trainer = pl.Trainer(
    max_epochs=epochs,
    callbacks=[search],
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)
trainer.fit(Classifier(), loader)
for epoch, result in enumerate(search.results):
    print(f"epoch {epoch}: searched lr {result.lr:.4g} ({result.trials} trials, {result.status})")
print(f"final train loss {float(trainer.callback_metrics['train_loss']):.4f}")
