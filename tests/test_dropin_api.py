"""The optimizer and the searches as a PyTorch user meets them: clear refusals, any batch
shape through compute_loss, weight decay, param groups, the first-step warning, end_epoch's
scale, and the line-search library's plain inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from bgd_experiments.optim import MBTSGD, mbt_search, mbt_search_reference


def _setup(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    batches = [(torch.randn(10, 6), torch.randint(0, 3, (10,))) for _ in range(4)]
    return model, batches


def test_non_sgd_optimizer_is_refused_and_left_alone() -> None:
    model, batches = _setup()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(TypeError, match="SGD"):
        mbt_search(model, nn.CrossEntropyLoss(), batches, adam, start_lr=1.0, num_samples=100)
    assert adam.param_groups[0]["lr"] == 1e-3


def test_dict_batch_without_compute_loss_names_the_way_out() -> None:
    model, batches = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dict_batches = [{"x": x, "y": y} for x, y in batches]
    with pytest.raises(TypeError, match="compute_loss"):
        mbt_search(model, nn.CrossEntropyLoss(), dict_batches, opt, start_lr=0.1, num_samples=40)


def test_num_samples_below_a_batch_is_refused() -> None:
    model, batches = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="num_samples"):
        mbt_search(model, nn.CrossEntropyLoss(), batches, opt, start_lr=0.1, num_samples=5)


def test_unknown_keyword_is_a_type_error() -> None:
    model, batches = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError):
        mbt_search(  # type: ignore[call-arg]
            model, nn.CrossEntropyLoss(), batches, opt, start_lr=0.1, num_samples=40, bogus=1
        )


def test_compute_loss_on_dict_batches_finds_the_same_rate_as_pairs() -> None:
    loss_fn = nn.CrossEntropyLoss()
    model, batches = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pairs = mbt_search(model, loss_fn, batches, opt, start_lr=0.1, num_samples=40)
    model2, _ = _setup()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    dicts = [{"x": x, "y": y} for x, y in batches]
    result = mbt_search(
        model2,
        None,
        dicts,
        opt2,
        start_lr=0.1,
        num_samples=40,
        compute_loss=lambda m, b: loss_fn(m(b["x"]), b["y"]),
    )
    assert result.sigmas == pairs.sigmas
    assert result.lr == pairs.lr == opt2.param_groups[0]["lr"]
    assert result.batch_size == 10


def test_mbtsgd_search_accepts_compute_loss() -> None:
    loss_fn = nn.CrossEntropyLoss()
    model, batches = _setup()
    opt = MBTSGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, num_batches=4)
    result = opt.search(
        model,
        None,
        [{"x": x, "y": y} for x, y in batches],
        num_samples=40,
        compute_loss=lambda m, b: loss_fn(m(b["x"]), b["y"]),
    )
    assert opt.param_groups[0]["lr"] == result.lr > 0


def test_weight_decay_is_sgds_and_not_in_the_search() -> None:
    loss_fn = nn.CrossEntropyLoss()
    model, batches = _setup()
    plain = MBTSGD(model.parameters(), lr=0.1, num_batches=4)
    found = plain.search(model, loss_fn, batches, num_samples=40).lr
    decayed = MBTSGD(model.parameters(), lr=0.1, num_batches=4, weight_decay=0.5)
    # Armijo's condition sees loss_fn only: the decay does not change the rate found.
    assert decayed.search(model, loss_fn, batches, num_samples=40).lr == found
    # The training step applies it as torch.optim.SGD does.
    reference = torch.optim.SGD(model.parameters(), lr=found, weight_decay=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batches[0]
    decayed.zero_grad()
    loss_fn(model(x), y).backward()
    decayed.step()
    after_mbt = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, b in zip(model.parameters(), before, strict=True):
            p.copy_(b)
    reference.zero_grad()
    loss_fn(model(x), y).backward()
    reference.step()
    for p, a in zip(model.parameters(), after_mbt, strict=True):
        assert torch.equal(p, a)


def test_param_groups_with_different_lr_are_refused_same_lr_accepted() -> None:
    model, batches = _setup()
    first, second = model[0], model[2]
    with pytest.raises(ValueError, match="same lr"):
        MBTSGD([{"params": first.parameters(), "lr": 0.1}, {"params": second.parameters()}])
    opt = MBTSGD(
        [{"params": first.parameters(), "weight_decay": 1e-4}, {"params": second.parameters()}],
        lr=0.1,
        num_batches=4,
    )
    result = opt.search(model, nn.CrossEntropyLoss(), batches, num_samples=40)
    assert [g["lr"] for g in opt.param_groups] == [result.lr, result.lr]


def test_search_overwrites_a_schedulers_rate() -> None:
    model, batches = _setup()
    opt = MBTSGD(model.parameters(), lr=0.1, num_batches=4, warm_start="restart")
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    first = opt.search(model, nn.CrossEntropyLoss(), batches, num_samples=40).lr
    opt.step()
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(first * 0.1)
    second = opt.search(model, nn.CrossEntropyLoss(), batches, num_samples=40).lr
    assert opt.param_groups[0]["lr"] == second == first  # the scheduler's change is gone


def test_step_before_any_search_warns_once() -> None:
    model, batches = _setup()
    opt = MBTSGD(model.parameters(), lr=0.1)
    x, y = batches[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            nn.CrossEntropyLoss()(model(x), y).backward()
            opt.step()
    assert sum("before any search" in str(w.message) for w in caught) == 1


def test_step_after_a_search_does_not_warn() -> None:
    model, batches = _setup()
    opt = MBTSGD(model.parameters(), lr=0.1, num_batches=2)
    opt.search(model, nn.CrossEntropyLoss(), batches, num_samples=40)
    x, y = batches[0]
    nn.CrossEntropyLoss()(model(x), y).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


@pytest.mark.parametrize("bad", [-1.0, 101.0, float("nan")])
def test_end_epoch_checks_the_accuracy_scale(bad: float) -> None:
    model, _ = _setup()
    opt = MBTSGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        opt.end_epoch(1.0, bad)


def test_linesearch_exports_and_plain_inputs() -> None:
    from bgd_experiments.linesearch import (
        SLS,
        Backtracking,
        Stopping,
        backtracking_gd,
        minimize,
        two_way_backtracking_gd,
    )

    def f(x: torch.Tensor) -> torch.Tensor:
        return ((x - 3.0) ** 2).sum()

    for start in (np.array([0.0, 1.0]), [0.0, 1.0], np.array([0, 1])):
        run = two_way_backtracking_gd(f, start, max_iter=200)
        assert torch.allclose(run.x, torch.tensor([3.0, 3.0], dtype=run.x.dtype), atol=1e-4)
    assert backtracking_gd(f, [0.0], max_iter=200).value < 1e-8
    assert SLS is not None and Backtracking is not None and Stopping is not None
    assert callable(minimize)


def test_linesearch_refuses_a_non_callable_naming_the_wrapper() -> None:
    from bgd_experiments.linesearch import backtracking_gd

    with pytest.raises(TypeError, match="objective_from_function"):
        backtracking_gd(42, [0.0])  # type: ignore[arg-type]


def test_momentum_guard_scales_the_found_rate_and_is_off_by_default() -> None:
    loss_fn = nn.CrossEntropyLoss()
    model, batches = _setup()
    faithful = MBTSGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, num_batches=4)
    found = faithful.search(model, loss_fn, batches, num_samples=40).lr
    assert faithful.param_groups[0]["lr"] == found
    guarded = MBTSGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, num_batches=4,
        momentum_guard=True,
    )  # fmt: skip
    result = guarded.search(model, loss_fn, batches, num_samples=40)
    assert result.lr == found
    assert guarded.param_groups[0]["lr"] == pytest.approx(found * 0.1)


def test_a_search_with_an_optimizer_of_another_model_is_refused_clearly():
    model, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    batches = [(torch.randn(4, 3), torch.randint(0, 2, (4,)))]
    for search in (mbt_search, mbt_search_reference):
        with pytest.raises(ValueError, match="none of the model's parameters"):
            search(
                model,
                torch.nn.CrossEntropyLoss(),
                batches,
                optimizer,
                start_lr=0.1,
                num_samples=4,
            )
