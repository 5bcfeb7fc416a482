"""The MBT search as a function, on batches that are dicts, with a loss of your own.

``mbt_search`` reads each batch through ``compute_loss(model, batch)``, so a model with
several inputs (here a text-like and a numeric feature) is searched as it is trained. The
optimizer must be SGD: the rate found is one for plain gradient steps.
Run: ``python examples/search_custom_loss.py`` (``--tiny`` for a few-second check).
"""

import argparse

import torch
from torch import nn

from bgd_experiments.optim import mbt_search

parser = argparse.ArgumentParser()
parser.add_argument("--tiny", action="store_true", help="a few-second run (the tests use it)")
args = parser.parse_args()
n, batch_size = (400, 40) if args.tiny else (4000, 100)


class TwoInputModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(100, 16)
        self.head = nn.Linear(16 + 4, 1)

    def forward(self, tokens: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.embed(tokens), numbers], dim=1)).squeeze(1)


torch.manual_seed(0)
tokens, numbers = torch.randint(0, 100, (n, 8)), torch.randn(n, 4)
target = numbers.sum(dim=1) + (tokens < 50).float().mean(dim=1)
batches = [
    {"tokens": tokens[i : i + batch_size], "numbers": numbers[i : i + batch_size],
     "target": target[i : i + batch_size]}
    for i in range(0, n, batch_size)
]  # fmt: skip


def compute_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Any scalar loss of the model on one batch (here: mean squared error)."""
    prediction = model(batch["tokens"], batch["numbers"])
    return nn.functional.mse_loss(prediction, batch["target"])


model = TwoInputModel()
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
result = mbt_search(
    model,
    None,  # no (outputs, targets) loss: compute_loss reads the batch
    iter(batches),
    opt,
    start_lr=0.1,  # where the first batch's two-way search starts
    num_samples=n,  # the training set's size: the rate is rescaled by sqrt(batch / n)
    num_batches=5,
    compute_loss=compute_loss,
)
print(f"found lr {result.lr:.4g} ({result.trials} trials, {result.status}); set on opt")
for _epoch in range(2):  # then train as usual at the found rate
    for batch in batches:
        opt.zero_grad()
        compute_loss(model, batch).backward()
        opt.step()
print(f"loss after 2 epochs: {compute_loss(model, batches[0]).item():.4f}")
