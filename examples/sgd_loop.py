"""A plain PyTorch training loop with SGD + Nesterov momentum, on synthetic data.

The baseline for ``mbt_nag_loop.py``: the same loop with MBT-NAG differs in a few lines
(``diff examples/sgd_loop.py examples/mbt_nag_loop.py``).
Run: ``python examples/sgd_loop.py`` (``--tiny`` for a few-second check).
"""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--tiny", action="store_true", help="a few-second run (the tests use it)")
args = parser.parse_args()
n, epochs = (400, 2) if args.tiny else (5000, 10)

torch.manual_seed(0)
inputs = torch.randn(n, 20)
labels = (inputs[:, :5].sum(dim=1) > 0).long()  # a learnable synthetic task
train_set = TensorDataset(inputs, labels)
loader = DataLoader(train_set, batch_size=50, shuffle=True)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
loss_fn = nn.CrossEntropyLoss()

opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
for epoch in range(epochs):
    total, correct = 0.0, 0
    for x, y in loader:
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        total += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
    train_loss, train_acc = total / n, 100.0 * correct / n
    lr = opt.param_groups[0]["lr"]
    print(f"epoch {epoch}: loss {train_loss:.4f} acc {train_acc:.1f}% lr {lr:.4g}")
