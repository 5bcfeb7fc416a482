"""The MBT learning-rate search: Armijo property, restore, modes, fast == reference, NaNs."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from torch import nn

from bgd_experiments.optim import SearchResult, mbt_search, mbt_search_reference

NUM_SAMPLES = 480
BATCH = 24


def tiny_net(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """conv + BatchNorm + ReLU + dropout + linear: every trait the search must care about."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 5),
    ).to(dtype)


def random_batches(dtype: torch.dtype = torch.float64, seed: int = 1) -> list:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(NUM_SAMPLES, 3, 6, 6, generator=generator, dtype=dtype)
    labels = torch.randint(0, 5, (NUM_SAMPLES,), generator=generator)
    return [(images[i : i + BATCH], labels[i : i + BATCH]) for i in range(0, NUM_SAMPLES, BATCH)]


def run_search(implementation=mbt_search, dtype=torch.float64, **overrides) -> tuple:
    """Search on the tiny net in ``dtype``; returns (result, model, optimizer)."""
    model = tiny_net(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.123)
    settings = {"start_lr": 1e-2, "num_batches": 8, "num_samples": NUM_SAMPLES} | overrides
    batches = random_batches(dtype)
    result = implementation(model, nn.CrossEntropyLoss(), batches, optimizer, **settings)
    return result, model, optimizer


def loss_and_gradient(model: nn.Module, batch: tuple) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = nn.CrossEntropyLoss()(model(batch[0]), batch[1])
    loss.backward()
    return loss.item(), [p.grad.detach().clone() for p in model.parameters()]


def loss_at(model: nn.Module, point: list[torch.Tensor], batch: tuple) -> float:
    with torch.no_grad():
        for p, value in zip(model.parameters(), point, strict=True):
            p.copy_(value)
        return nn.CrossEntropyLoss()(model(batch[0]), batch[1]).item()


def test_accepted_rates_satisfy_armijo_and_are_locally_largest() -> None:
    alpha, beta = 1e-4, 0.5
    result, _, _ = run_search(alpha=alpha, beta=beta)
    assert result.status == "ok" and len(result.sigmas) == 8 and result.guard_hits == 0

    # Replay the search's walk independently: BN on batch statistics, dropout off.
    model = tiny_net()
    model.train()
    model[3].eval()
    point = [p.detach().clone() for p in model.parameters()]
    for sigma, batch in zip(result.sigmas, random_batches(), strict=False):
        loss_at(model, point, batch)
        loss, grad = loss_and_gradient(model, batch)
        norm_sq = sum(float(g.norm()) ** 2 for g in grad)

        def check(step: float, point=point, batch=batch, grad=grad, loss=loss, norm_sq=norm_sq):
            trial = [x - step * g for x, g in zip(point, grad, strict=True)]
            return loss_at(model, trial, batch) - loss + alpha * step * norm_sq

        assert check(sigma) <= 1e-12, "accepted sigma must satisfy the mini-batch Armijo check"
        assert check(sigma / beta) > -1e-12, "sigma / beta must fail (two-way search stops)"
        point = [x - sigma * result.ratio * g for x, g in zip(point, grad, strict=True)]


@pytest.mark.parametrize("channels_last", [False, True])
def test_restore_mode_is_bit_exact_and_leaves_modes_and_optimizer_state_alone(
    channels_last: bool,
) -> None:
    model = tiny_net(torch.float32)
    batches = random_batches(torch.float32)
    if channels_last:  # the trainer's default layout: weights, grads and copies are NHWC
        model = model.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    for x, y in batches[:3]:  # BN statistics and momentum buffers that are not trivial
        optimizer.zero_grad()
        nn.CrossEntropyLoss()(model(x), y).backward()
        optimizer.step()
    model[1].eval()  # a submodule in another mode must come back in that mode
    modes = [m.training for m in model.modules()]
    model_before = copy.deepcopy(model.state_dict())
    optimizer_before = copy.deepcopy(optimizer.state_dict()["state"])

    result = mbt_search(
        model,
        nn.CrossEntropyLoss(),
        batches,
        optimizer,
        start_lr=1.0,
        num_batches=6,
        num_samples=NUM_SAMPLES,
    )
    assert result.restored and result.num_batches == 6
    for name, value in model.state_dict().items():
        assert torch.equal(value, model_before[name]), f"{name} changed by the search"
    assert model.state_dict()["1.num_batches_tracked"].item() == 3
    for index, state in optimizer.state_dict()["state"].items():
        assert torch.equal(state["momentum_buffer"], optimizer_before[index]["momentum_buffer"])
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert optimizer.param_groups[0]["lr"] == result.lr == result.mean_sigma * result.ratio
    if channels_last:  # restored in place, so the layout survives the search
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("start_lr", [100.0, 1e-2, 1e-6])
@pytest.mark.parametrize("keep", [False, True])
def test_fast_path_equals_reference_in_float64(start_lr: float, keep: bool) -> None:
    fast, fast_model, fast_opt = run_search(mbt_search, start_lr=start_lr, keep_search_steps=keep)
    ref, ref_model, ref_opt = run_search(
        mbt_search_reference, start_lr=start_lr, keep_search_steps=keep
    )
    assert fast.sigmas == ref.sigmas
    assert fast.lr == ref.lr == fast_opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    assert fast.status == ref.status == "ok"
    # The fast path never evaluates a trial a guard already rejects; otherwise identical.
    assert fast.trials + fast.trials_skipped >= ref.trials >= fast.trials
    assert fast.backward_passes == ref.backward_passes == 8
    assert fast.forward_passes == 8 + fast.trials
    fast_state, ref_state = fast_model.state_dict(), ref_model.state_dict()
    for name, value in fast_state.items():
        assert torch.allclose(value.double(), ref_state[name].double(), rtol=1e-12, atol=1e-14)
    if keep:  # the k steps were kept and BN statistics saw the k gradient forwards
        assert not fast.restored
        assert fast_state["1.num_batches_tracked"].item() == 8
        assert not torch.equal(fast_state["6.weight"], tiny_net().state_dict()["6.weight"])


def test_fast_path_close_to_reference_in_float32() -> None:
    fast, _, _ = run_search(mbt_search, dtype=torch.float32, start_lr=1.0)
    ref, _, _ = run_search(mbt_search_reference, dtype=torch.float32, start_lr=1.0)
    assert fast.lr == pytest.approx(ref.lr, rel=1e-5)
    assert len(fast.sigmas) == len(ref.sigmas) == 8


def test_found_rate_nearly_independent_of_start_rate() -> None:
    """Table 1's property on a small fixed problem: starts over eight decades agree."""
    rates = [
        run_search(start_lr=start, num_batches=20)[0].lr for start in (100.0, 1.0, 1e-2, 1e-4, 1e-6)
    ]
    assert max(rates) / min(rates) < 1.6, rates


def test_dropout_is_off_during_search() -> None:
    """With dropout active the trial losses would depend on the random stream."""
    outcomes = []
    for seed in (11, 12):
        model = tiny_net()
        model[3].p = 0.9
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(seed)
        result = mbt_search(
            model,
            nn.CrossEntropyLoss(),
            random_batches(),
            optimizer,
            start_lr=1e-2,
            num_batches=4,
            num_samples=NUM_SAMPLES,
        )
        outcomes.append(result.sigmas)
        assert model[3].training, "dropout must be back in train mode afterwards"
    assert outcomes[0] == outcomes[1]


def test_consumes_exactly_num_batches_and_keep_mode_walks_forward() -> None:
    model = tiny_net()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    iterator = iter(random_batches())
    result = mbt_search(
        model,
        nn.CrossEntropyLoss(),
        iterator,
        optimizer,
        start_lr=1e-2,
        num_batches=5,
        num_samples=NUM_SAMPLES,
        keep_search_steps=True,
    )
    assert result.num_batches == 5
    assert sum(1 for _ in iterator) == NUM_SAMPLES // BATCH - 5
    assert any(not torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))


def test_short_batch_source_uses_what_is_there() -> None:
    result, _, _ = run_search(num_batches=50)
    assert result.num_batches == len(result.sigmas) == NUM_SAMPLES // BATCH
    assert "ran out" in result.message


def nan_for_large_trial_steps(model: nn.Module, limit: float):
    """CrossEntropy, but NaN for trial points whose weights moved beyond ``limit``."""
    criterion = nn.CrossEntropyLoss()

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = criterion(outputs, targets)
        largest = max(float(p.detach().abs().max()) for p in model.parameters())
        if not torch.is_grad_enabled() and largest > limit:
            return loss * math.nan
        return loss

    return loss_fn


def test_nan_trial_losses_count_as_failures() -> None:
    results = []
    for implementation in (mbt_search, mbt_search_reference):
        model = tiny_net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        limit = 1.5 * max(float(p.detach().abs().max()) for p in model.parameters())
        results.append(
            implementation(
                model,
                nan_for_large_trial_steps(model, limit),
                random_batches(),
                optimizer,
                start_lr=100.0,
                num_batches=4,
                num_samples=NUM_SAMPLES,
            )
        )
    fast, reference = results
    assert fast.status == "ok" and math.isfinite(fast.lr)
    assert fast.sigmas[0] < 100.0  # the NaN at the start rate made it shrink
    assert fast.sigmas == reference.sigmas


def test_nonfinite_loss_at_current_point_stops_the_search(
    caplog: pytest.LogCaptureFixture,
) -> None:
    criterion = nn.CrossEntropyLoss()
    gradient_passes = 0

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nonlocal gradient_passes
        if torch.is_grad_enabled():
            gradient_passes += 1
            if gradient_passes == 4:
                return criterion(outputs, targets) * math.inf
        return criterion(outputs, targets)

    model = tiny_net()
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.WARNING, logger="bgd_experiments.optim"):
        result = mbt_search(
            model, loss_fn, random_batches(), optimizer, start_lr=1e-2, num_samples=NUM_SAMPLES
        )
    assert result.status == "nonfinite" and result.num_batches == 4
    assert len(result.sigmas) == 2 and len(result.dropped_sigmas) == 1
    assert result.lr == pytest.approx(sum(result.sigmas) / 2 * result.ratio)
    assert optimizer.param_groups[0]["lr"] == result.lr
    assert any("NONFINITE" in record.getMessage() for record in caplog.records)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


class ShiftedNet(nn.Module):
    """tiny_net plus a scalar whose loss term 1e37 * shift has a gradient of 1e37 (float32):
    trial losses overflow to -inf and pass Armijo, the accepted step overflows the weight --
    the authors' "a large trial step passed, the weights became NaN" case."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_net(torch.float32)
        self.shift = nn.Parameter(torch.zeros(()))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.body(inputs)


@pytest.mark.parametrize("implementation", [mbt_search, mbt_search_reference])
@pytest.mark.parametrize("keep", [False, True])
def test_nonfinite_weights_after_a_search_step(implementation, keep: bool) -> None:
    model = ShiftedNet()
    before = copy.deepcopy(model.state_dict())
    criterion = nn.CrossEntropyLoss()

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return criterion(outputs, targets) + 1e37 * model.shift

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result: SearchResult = implementation(
        model,
        loss_fn,
        random_batches(torch.float32),
        optimizer,
        start_lr=1.0,
        num_samples=NUM_SAMPLES,
        rescale=False,
        keep_search_steps=keep,
    )
    assert result.status == "nonfinite"
    assert "non-finite after the search step" in result.message
    assert result.sigmas == [] and len(result.dropped_sigmas) == 1
    assert optimizer.param_groups[0]["lr"] == 0.1 == result.lr  # left unchanged
    assert result.restored
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


def test_guard_on_every_batch_is_reported_as_saturated(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bgd_experiments.optim"):
        result, _, _ = run_search(min_decrease=1e6, start_lr=1e-2)
    assert result.status == "saturated"
    assert result.guard_hits == 8 and result.trials == 0
    assert result.sigmas == [1e-2] * 8
    assert any("SATURATED" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("alpha", 0.0),
        ("alpha", 1.0),
        ("beta", 1.5),
        ("num_batches", 0),
        ("num_samples", 0),
        ("start_lr", 1000.0),
        ("lr_min", -1.0),
    ],
)
def test_invalid_settings_raise(setting: str, value: float) -> None:
    with pytest.raises(ValueError, match=setting):
        run_search(**{setting: value})


def test_parameters_without_gradient_are_left_alone() -> None:
    """A parameter the loss does not use gets no gradient: no step, no crash, same rates."""
    sigmas = []
    for implementation in (mbt_search, mbt_search_reference):
        model = tiny_net()
        model.unused = nn.Parameter(torch.ones(3, dtype=torch.float64))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        result = implementation(
            model,
            nn.CrossEntropyLoss(),
            random_batches(),
            optimizer,
            start_lr=1e-2,
            num_batches=3,
            num_samples=NUM_SAMPLES,
            keep_search_steps=True,
        )
        assert torch.equal(model.unused, torch.ones(3, dtype=torch.float64))
        sigmas.append(result.sigmas)
    assert sigmas[0] == sigmas[1]
