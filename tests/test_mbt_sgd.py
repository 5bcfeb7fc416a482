"""MBTSGD: schedule, plateau switch, momentum reset, validation, checkpoint round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from test_mbt_search import NUM_SAMPLES, random_batches, tiny_net
from torch import nn

from bgd_experiments.optim import MBTSGD


def make(dtype: torch.dtype = torch.float64, **settings) -> tuple[nn.Module, MBTSGD]:
    model = tiny_net(dtype)
    settings = {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "num_batches": 4} | settings
    return model, MBTSGD(model.parameters(), **settings)


def train_epoch(model: nn.Module, optimizer: MBTSGD, epoch: int, batches: list) -> float:
    """One epoch of the lead's loop: search if due (restore mode), then SGD steps."""
    criterion = nn.CrossEntropyLoss()
    if optimizer.needs_search(epoch):
        optimizer.search(model, criterion, batches[epoch % 3 :], num_samples=NUM_SAMPLES)
    losses = []
    for inputs, targets in batches[:6]:
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def test_search_sets_rate_and_resets_momentum_buffers() -> None:
    model, optimizer = make()
    batches = random_batches()
    train_epoch(model, optimizer, 0, batches)
    first = optimizer.last_result
    assert first is not None and first.start_lr == 1e-2
    assert all("momentum_buffer" in optimizer.state[p] for p in model.parameters())
    result = optimizer.search(model, nn.CrossEntropyLoss(), batches, num_samples=NUM_SAMPLES)
    assert len(optimizer.state) == 0, "momentum buffers must be reset after a search"
    assert all(group["lr"] == result.lr for group in optimizer.param_groups)
    # The default carry-over: the second search starts where the first one's walk ended.
    assert result.alpha == 1e-4 and result.start_lr == first.sigmas[-1] * first.ratio
    assert optimizer.momentum_enabled


def test_reference_implementation_chooses_the_same_rate() -> None:
    rates = []
    for implementation in ("fast", "reference"):
        model, optimizer = make(implementation=implementation)
        rates.append(
            optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES).lr
        )
    assert rates[0] == rates[1]


def test_authors_code_plateau_switches_alpha_and_momentum_off() -> None:
    model, optimizer = make()
    assert optimizer.end_epoch(train_loss=1.0, test_acc=50.0) is False  # first: improvement
    for epoch in range(1, 7):  # loss worse, accuracy not better: patience 1..6
        assert optimizer.momentum_enabled, f"switched too early at patience {epoch - 1}"
        optimizer.end_epoch(train_loss=1.0 + epoch, test_acc=40.0)
    assert optimizer.patience == 6
    assert optimizer.alpha == 0.5 and optimizer.plateau_reached
    assert not optimizer.momentum_enabled
    assert all(not g["nesterov"] and g["momentum"] == 0 for g in optimizer.param_groups)
    result = optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
    assert result.alpha == 0.5
    assert optimizer.needs_search(8)  # MBT-NAG keeps searching every epoch


def test_authors_code_plateau_needs_both_patiences() -> None:
    _, optimizer = make()
    optimizer.end_epoch(1.0, 50.0)
    for epoch in range(1, 12):  # training loss stuck but test accuracy still improving
        optimizer.end_epoch(1.0 + epoch, 50.0 + epoch)
    assert optimizer.patience == 0 and optimizer.momentum_enabled and optimizer.alpha == 1e-4


def test_paper_text_plateau_uses_training_loss_only() -> None:
    _, optimizer = make(plateau_rule="paper_text")
    optimizer.end_epoch(1.0, 50.0)
    for epoch in range(1, 6):
        assert optimizer.momentum_enabled
        optimizer.end_epoch(1.0, 50.0 + epoch)  # equal loss is no decrease in the text
    assert optimizer.alpha == 0.5 and not optimizer.momentum_enabled
    assert all(optimizer.end_epoch(2.0, 0.0) is False for _ in range(60))  # no early stop


def test_authors_code_early_stop_one_epoch_after_patience_reaches_limit() -> None:
    _, optimizer = make(stop_patience=3)
    calls = [optimizer.end_epoch(1.0 + epoch, 10.0 - epoch) for epoch in range(6)]
    # Patience after each call: 0, 1, 2, 3, 4, 5; the code checks the previous epoch's value.
    assert calls == [False, False, False, False, True, True]


def test_mbt_gd_searches_once_then_on_plateau() -> None:
    model, optimizer = make(momentum=0.0, nesterov=False, search_every_epoch=False)
    assert not optimizer.momentum_enabled
    assert optimizer.needs_search(0)
    optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
    assert not optimizer.needs_search(1)
    optimizer.end_epoch(1.0, 50.0)
    for epoch in range(1, 7):
        optimizer.end_epoch(1.0 + epoch, 40.0)
    assert optimizer.needs_search(7) and optimizer.alpha == 0.5
    optimizer.end_epoch(0.5, 40.0)  # loss improves: authors' patience drops to 0
    assert not optimizer.needs_search(8)

    model, text_rule = make(
        momentum=0.0, nesterov=False, search_every_epoch=False, plateau_rule="paper_text"
    )
    text_rule.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
    for _ in range(6):
        text_rule.end_epoch(1.0, 40.0)
    text_rule.end_epoch(0.5, 40.0)
    assert text_rule.needs_search(7), "paper text: search every epoch after the plateau"


def test_warm_start_starts_from_previous_rate() -> None:
    for restart in (False, "off", "restart"):
        model, optimizer = make(warm_start=restart)
        assert optimizer.warm_start == "restart"
        optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
        second = optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
        assert second.start_lr == 1e-2
    model, optimizer = make(warm_start=True)
    first = optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
    second = optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
    assert second.start_lr == first.mean_sigma
    model, optimizer = make(warm_start="previous_lr")
    first = optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
    second = optimizer.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
    assert second.start_lr == first.lr
    for carry_over in ("last_sigma", "carry_over"):
        model, authors = make(warm_start=carry_over)
        assert authors.warm_start == "carry_over" == make()[1].warm_start
        first = authors.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
        second = authors.search(model, nn.CrossEntropyLoss(), random_batches(), NUM_SAMPLES)
        assert second.start_lr == first.sigmas[-1] * first.ratio


def test_state_dict_round_trip_resumes_identically() -> None:
    batches = random_batches()
    model, optimizer = make(plateau_patience=1)
    scripted = [(1.0, 50.0), (2.0, 40.0), (3.0, 30.0), (4.0, 20.0), (5.0, 10.0)]
    for epoch in range(3):
        train_epoch(model, optimizer, epoch, batches)
        optimizer.end_epoch(*scripted[epoch])
    assert optimizer.plateau_reached  # the checkpoint holds a switched controller
    checkpoint = copy.deepcopy((model.state_dict(), optimizer.state_dict()))

    def finish(model: nn.Module, optimizer: MBTSGD) -> tuple:
        torch.manual_seed(5)  # the training steps use dropout
        for epoch in range(3, 5):
            train_epoch(model, optimizer, epoch, batches)
            optimizer.end_epoch(*scripted[epoch])
        return model.state_dict(), optimizer.state_dict()

    original = finish(model, optimizer)
    resumed_model, resumed_optimizer = make(plateau_patience=1)
    resumed_model.load_state_dict(checkpoint[0])
    resumed_optimizer.load_state_dict(checkpoint[1])
    assert resumed_optimizer.alpha == 0.5 and not resumed_optimizer.momentum_enabled
    resumed = finish(resumed_model, resumed_optimizer)
    for name, value in original[0].items():
        assert torch.equal(value, resumed[0][name]), name
    assert original[1]["mbt_controller"] == resumed[1]["mbt_controller"]
    assert original[1]["param_groups"] == resumed[1]["param_groups"]


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("lr", 0.0, "lr"),
        ("lr", 1000.0, "lr"),
        ("alpha", 1.0, "alpha"),
        ("alpha_after_plateau", 0.0, "alpha_after_plateau"),
        ("beta", 0.0, "beta"),
        ("num_batches", 0, "num_batches"),
        ("num_batches", 2.5, "num_batches"),
        ("plateau_rule", "paper", "plateau_rule"),
        ("warm_start", "sometimes", "warm_start"),
        ("implementation", "slow", "implementation"),
        ("momentum", 1.0, "momentum"),
        ("stop_patience", 0, "stop_patience"),
        ("lr_max", 1e-7, "lr_max"),
        ("keep_search_steps", "yes", "keep_search_steps"),
    ],
)
def test_constructor_validates_arguments(setting: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**{setting: value})


def test_nesterov_needs_momentum() -> None:
    with pytest.raises(ValueError, match="nesterov"):
        make(momentum=0.0, nesterov=True)
