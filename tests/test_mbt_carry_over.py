"""The default carry-over of the search's start, against the authors' LR finder.

``_AuthorsFinder`` below is our own minimal transcription of the control flow of the
authors' ``LRFinder`` (``lr_backtrack.py`` of hank-nguyen/MBT-optimizer): one object per
run whose ``lr_current`` survives between searches. It is deliberately written in their
style (state_dict copies, evaluate then test the guards), not with our helpers.
"""

from __future__ import annotations

import copy
import importlib
import math

import numpy as np
import pytest
import torch
from test_mbt_search import BATCH, NUM_SAMPLES, random_batches
from test_precision import tiny_network
from torch import nn

from bgd_experiments.optim import MBTSGD

START_LR = 100.0  # Table 3's start rate
NUM_ITER = 4


def net() -> nn.Module:
    """Conv + BatchNorm + linear, no dropout: their search runs in train mode with dropout on."""
    return tiny_network(num_classes=5, seed=3).double()


class _AuthorsFinder:
    """lr_current set once from the start rate; each search: per batch, start at
    lr_current (first batch) or max(lr_min, mean so far), two-way backtracking, record
    the sigma, then lr_current = sigma * ratio and one SGD step at it; finally restore."""

    def __init__(self, model: nn.Module, start_lr: float) -> None:
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=start_lr)
        self.lr_current = start_lr  # the attribute that outlives each search
        self.lr_min, self.lr_max, self.thres = 1e-6 - 1e-8, 100 + 1e-8, 1e-7
        self.criterion = nn.CrossEntropyLoss()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def backtrack(self, batches: list, alpha: float, beta: float, num_samples: int) -> None:
        self.alpha, self.beta = alpha, beta
        self.ratio = 1 / np.sqrt(num_samples / BATCH)
        self.model_state = copy.deepcopy(self.model.state_dict())
        self.history: list[float] = []
        self.tried: list[tuple[float, bool]] = []  # (sigma, guards held) per evaluation
        for inputs, labels in batches[:NUM_ITER]:
            self.train_batch(inputs, labels)
        self.lr_bt = np.mean(self.history) * self.ratio
        self.model.load_state_dict(self.model_state)  # reset(); lr_current is left alone

    def train_batch(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if self.history:
            self.lr_current = max(self.lr_min, np.mean(self.history))
        self.state = copy.deepcopy(self.model.state_dict())
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.criterion(self.model(inputs), labels)
        loss.backward()
        self.loss = loss.item()
        params = list(self.model.parameters())
        self.norm_squared = np.sum([torch.norm(p.grad, p=2).item() ** 2 for p in params])
        self.track(inputs, labels)
        if (self.check > 0 or np.isnan(self.check)) and self.cond:
            while (self.check > 0 or np.isnan(self.check)) and self.cond:
                self.lr_current = self.lr_current * self.beta
                self.track(inputs, labels)
        elif self.check < 0 and self.cond:
            while self.check < 0 and self.cond:
                self.lr_current = self.lr_current / self.beta
                self.track(inputs, labels)
            self.lr_current = self.lr_current * self.beta
        self.history.append(self.lr_current)
        self.model.load_state_dict(self.state)
        self.lr_current = self.lr_current * self.ratio  # carried into the next search
        self.set_lr(self.lr_current)
        self.optimizer.step()

    def track(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.model.load_state_dict(self.state)
        self.set_lr(self.lr_current)
        self.optimizer.step()
        new_loss = self.criterion(self.model(inputs), labels).item()
        self.check = new_loss - self.loss + self.alpha * self.lr_current * self.norm_squared
        self.cond = (
            self.lr_current * self.norm_squared > self.thres
            and self.lr_min <= self.lr_current <= self.lr_max
        )
        self.tried.append((self.lr_current, self.cond))


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> None:
    for inputs, targets in batches:
        optimizer.zero_grad()
        nn.CrossEntropyLoss()(model(inputs), targets).backward()
        optimizer.step()


@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_carry_over_matches_the_authors_finder_over_two_searches(
    implementation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = random_batches()
    ours_model = net()
    theirs_model = copy.deepcopy(ours_model)
    ours = MBTSGD(
        ours_model.parameters(),
        lr=START_LR,
        momentum=0.9,
        nesterov=True,
        num_batches=NUM_ITER,
        implementation=implementation,
    )
    assert ours.warm_start == "carry_over"  # the default
    finder = _AuthorsFinder(theirs_model, START_LR)
    # Their training optimizer (model_main.py): its rate is set from the finder's result.
    theirs = torch.optim.SGD(theirs_model.parameters(), lr=START_LR, momentum=0.9, nesterov=True)

    tried: list[float] = []  # sigmas whose Armijo check our fast path evaluated
    search_module = importlib.import_module("bgd_experiments.optim.search")
    check = search_module.TrialPoint.armijo_check

    def recording_check(self, sigma: float) -> float:
        tried.append(sigma)
        return check(self, sigma)

    monkeypatch.setattr(search_module.TrialPoint, "armijo_check", recording_check)

    carried = None
    for number, chunk in enumerate((batches[0:4], batches[8:12])):
        tried.clear()
        result = ours.search(ours_model, nn.CrossEntropyLoss(), chunk, NUM_SAMPLES)
        finder.backtrack(chunk, alpha=1e-4, beta=0.5, num_samples=NUM_SAMPLES)
        if number == 0:
            assert result.start_lr == START_LR
        else:
            # The second search starts at the first one's last sigma times the ratio.
            assert result.start_lr == pytest.approx(carried, rel=1e-12)
            assert not math.isclose(result.start_lr, START_LR)
        assert result.sigmas == pytest.approx(finder.history, rel=1e-12)
        assert result.lr == pytest.approx(finder.lr_bt, rel=1e-12)
        if implementation == "fast":
            # Ours skips the trials at a sigma the guards already reject (see mbt_search).
            assert tried == pytest.approx([s for s, ok in finder.tried if ok], rel=1e-12)
        else:
            assert result.trials == len(finder.tried)
        carried = finder.lr_current
        assert ours.search_start_lr() == pytest.approx(carried, rel=1e-12)
        # An epoch of training between the searches, momentum buffers fresh after a search.
        theirs.state.clear()
        for group in theirs.param_groups:
            group["lr"] = finder.lr_bt
        train_steps(ours_model, ours, batches[4:8])
        train_steps(theirs_model, theirs, batches[4:8])


def test_checkpoint_keeps_the_carried_start() -> None:
    model = net()
    optimizer = MBTSGD(model.parameters(), lr=START_LR, num_batches=NUM_ITER)
    first = optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
    resumed = MBTSGD(net().parameters(), lr=START_LR, num_batches=NUM_ITER)
    assert resumed.search_start_lr() == START_LR
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert resumed.search_start_lr() == first.sigmas[-1] * first.ratio != START_LR
