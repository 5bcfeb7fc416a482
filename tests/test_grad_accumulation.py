"""Gradient accumulation with MBTSGD: the search is handed batches of the accumulated size
k*b, and a loop that accumulates k micro-batches of size b (each loss divided by k, one
``step()`` per k) then makes the same update at the found rate as one batch of size k*b."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bgd_experiments.optim import MBTSGD

ACCUMULATED = 40  # k * b
NUM_SAMPLES = 160


def _setup() -> tuple[nn.Module, TensorDataset]:
    torch.manual_seed(0)
    data = TensorDataset(
        torch.randn(NUM_SAMPLES, 6, dtype=torch.float64), torch.randint(0, 3, (NUM_SAMPLES,))
    )
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, data


def _accumulated(micro: DataLoader, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive groups of k micro-batches, each concatenated into one batch of k*b."""
    batches = list(micro)
    groups = [batches[i : i + k] for i in range(0, len(batches), k)]
    return [(torch.cat([x for x, _ in g]), torch.cat([y for _, y in g])) for g in groups]


def _search(model: nn.Module, batches: list) -> tuple[MBTSGD, float]:
    opt = MBTSGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True, num_batches=4)
    result = opt.search(model, nn.CrossEntropyLoss(), batches, num_samples=NUM_SAMPLES)
    assert result.status == "ok" and result.batch_size == ACCUMULATED
    return opt, result.lr


def test_search_over_accumulated_batches_ignores_the_micro_batch_size() -> None:
    model, data = _setup()
    full = DataLoader(data, batch_size=ACCUMULATED)
    _, reference = _search(copy.deepcopy(model), list(full))
    for micro_size in (5, 10, 20, 40):
        micro = DataLoader(data, batch_size=micro_size)
        k = ACCUMULATED // micro_size
        _, found = _search(copy.deepcopy(model), _accumulated(micro, k))
        assert found == reference, micro_size
    # Searching the micro-batches themselves rescales by sqrt(b / N): another rate.
    opt = MBTSGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True, num_batches=4)
    micro_batches = DataLoader(data, batch_size=10)
    micro_rate = opt.search(model, nn.CrossEntropyLoss(), micro_batches, NUM_SAMPLES).lr
    assert micro_rate != pytest.approx(reference, rel=1e-3)


@pytest.mark.parametrize("micro_size", [5, 10, 20])
def test_accumulated_micro_batches_step_like_one_batch_of_their_total(micro_size: int) -> None:
    loss_fn = nn.CrossEntropyLoss()
    model, data = _setup()
    k = ACCUMULATED // micro_size
    micro = list(DataLoader(data, batch_size=micro_size))
    accumulated = _accumulated(DataLoader(data, batch_size=micro_size), k)

    one = copy.deepcopy(model)
    opt_one, lr = _search(one, accumulated)
    many = copy.deepcopy(model)
    opt_many, lr_many = _search(many, accumulated)
    assert lr_many == lr
    for name, param in one.named_parameters():  # the search restored the start weights
        torch.testing.assert_close(param, dict(model.named_parameters())[name], rtol=0, atol=0)

    # Three optimizer steps, so the momentum buffers take part as well.
    for step in range(3):
        x, y = accumulated[step]
        opt_one.zero_grad()
        loss_fn(one(x), y).backward()
        opt_one.step()

        opt_many.zero_grad()
        for x_micro, y_micro in micro[step * k : (step + 1) * k]:
            (loss_fn(many(x_micro), y_micro) / k).backward()
        opt_many.step()

        assert opt_one.param_groups[0]["lr"] == opt_many.param_groups[0]["lr"] == lr
        for p_one, p_many in zip(one.parameters(), many.parameters(), strict=True):
            torch.testing.assert_close(p_many, p_one, rtol=1e-12, atol=1e-14)
