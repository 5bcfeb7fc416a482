"""Today's baselines: each trains through the real CLI, SLS agrees with a plain
reference on a quadratic, schedule-free evaluates x with recomputed BatchNorm statistics,
DoG evaluates its averaged weights, and SLS's trial forward passes are counted."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from bgd_experiments.cli import CONFIG_DIR, run, validate
from bgd_experiments.hooks import MiniBatchLoss
from bgd_experiments.io import read_json, read_jsonl
from bgd_experiments.linesearch.sls import SLS
from bgd_experiments.optim.modern import AveragedDoG, CosineSGD, ScheduleFreeSGD
from bgd_experiments.reporting.paper import (
    BASELINE_OPTIMIZERS,
    MBT_OPTIMIZERS,
    MODERN_OPTIMIZERS,
)
from tests.test_training import Reiterable, fit_quietly, tiny_problem


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("optimizer", MODERN_OPTIMIZERS)
def test_each_modern_baseline_lowers_the_loss_through_the_cli(
    optimizer, tmp_path, tiny_cifar10_torchvision
):
    results = tmp_path / "results"
    cfg = compose_train(
        f"optimizer={optimizer}",
        f"dataset.root={tiny_cifar10_torchvision}",
        "dataset.train_subset=100",
        "dataset.augment=none",
        "model.width=0.0625",
        "trainer.epochs=2",
        "trainer.batch_size=10",
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "trainer.progress=plain",
        "trainer.tensorboard=false",
        f"results_dir={results}",
    )
    summary = run(cfg)
    assert summary is not None and summary["status"] == "finished", summary
    (run_dir,) = {path.parent for path in results.rglob("summary.json")}
    assert read_json(run_dir / "summary.json")["run"]["optimizer"] == optimizer
    first, second = read_jsonl(run_dir / "metrics.jsonl")
    assert math.isfinite(second["train_loss"])
    assert second["train_loss"] < first["train_loss"], (first, second)
    steps = 10  # 100 images, batches of 10
    assert first["backward_passes"] == steps
    if optimizer == "sls":  # every step evaluates at least one trial point
        assert first["forward_passes"] >= 2 * steps
    elif optimizer == "sf_sgd":
        # README: islice(train_loader, 50), so one epoch's 10 batches here
        assert first["forward_passes"] == steps + first["bn_recompute_batches"] == 2 * steps
    else:
        assert first["forward_passes"] == steps
    if optimizer in ("prodigy", "dadapt_sgd", "sf_sgd", "dog"):  # the rate they adapted
        assert second["effective_lr"] > 0 and math.isfinite(second["effective_lr"])
    if optimizer in ("prodigy", "dadapt_sgd"):  # d grew from d0 = 1e-6
        assert second["effective_lr"] > 1e-6
    if optimizer == "sgd_cosine":  # cosine over trainer.epochs=2, per epoch
        assert (first["lr"], second["lr"]) == pytest.approx((0.1, 0.05))


# --- SLS against a reference in the paper's notation -----------------------------------------


def sls_reference(
    hessian: torch.Tensor,
    w: torch.Tensor,
    steps: int,
    *,
    eta_0: float = 1.0,
    c: float = 0.1,
    beta_b: float = 0.9,
    gamma: float = 2.0,
    eta_max: float = 10.0,
    b_over_n: float = 1.0,
) -> list[tuple[torch.Tensor, float]]:
    """Vaswani et al. (2019), Algorithm 1 with reset option 1, on f(w) = w^T A w / 2."""

    def f(point: torch.Tensor) -> float:
        return float(0.5 * point @ hessian @ point)

    eta, iterates = eta_0, []
    for _ in range(steps):
        g = hessian @ w
        eta = min(eta * gamma**b_over_n, eta_max)
        while f(w - eta * g) > f(w) - c * eta * float(g @ g):
            eta *= beta_b
        w = w - eta * g
        iterates.append((w.clone(), eta))
    return iterates


def quadratic(dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(-0.5, 0.5, dim, dtype=torch.float64)  # condition number 10
    return basis @ torch.diag(eigenvalues) @ basis.T, torch.randn(
        dim, generator=generator, dtype=torch.float64
    )


def test_sls_matches_its_reference_and_converges_with_armijo_at_every_step():
    hessian, start = quadratic()
    steps = 80
    expected = sls_reference(hessian, start.clone(), steps)
    w = nn.Parameter(start.clone())
    optimizer = SLS([w], batches_per_epoch=1)  # the paper's defaults; full batch: b/n = 1

    def loss() -> torch.Tensor:
        return 0.5 * w @ hessian @ w

    values = [float(loss().detach())]
    trials: list[int] = []
    for reference_w, reference_eta in expected:
        optimizer.zero_grad()
        before = loss()
        before.backward()
        grad_norm_sq = float(w.grad @ w.grad)
        closure = MiniBatchLoss(nn.Identity(), lambda _, __: loss(), w, w, before.detach())
        optimizer.step(closure)
        eta = optimizer.param_groups[0]["lr"]
        assert eta == pytest.approx(reference_eta, rel=1e-12)
        torch.testing.assert_close(w.detach(), reference_w, rtol=1e-10, atol=1e-12)
        after = float(loss().detach())
        assert after <= float(before.detach()) - 0.1 * eta * grad_norm_sq  # Armijo held
        assert closure.forward_passes == optimizer.last_trials >= 1
        trials.append(optimizer.last_trials)
        values.append(after)
    assert values[-1] < 1e-8 * values[0]
    # Both rules were exercised: steps that backtracked, and steps the reset grew.
    etas = [eta for _, eta in expected]
    assert max(trials) > 1 and any(b > a for a, b in itertools.pairwise(etas))


def test_sls_refuses_a_step_without_closure_and_bad_settings():
    w = nn.Parameter(torch.ones(2))
    w.sum().backward()
    with pytest.raises(ValueError, match="closure"):
        SLS([w]).step()
    with pytest.raises(ValueError, match="beta_b"):
        SLS([w], beta_b=1.0)


def test_fit_counts_the_trial_forward_passes_of_sls(tmp_path):
    model, train, test = tiny_problem()
    trials: list[int] = []

    class CountingSLS(SLS):
        def step(self, closure: Any = None) -> Any:
            loss = super().step(closure)
            trials.append(self.last_trials)
            return loss

    optimizer = CountingSLS(model.parameters())
    fit_quietly(model, optimizer, train, Reiterable(test), tmp_path, 1, name="sls")
    (record,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(trials) == record["backward_passes"] == len(train)
    assert record["forward_passes"] == record["backward_passes"] + sum(trials)
    # n is announced before the epoch: the reset grows eta by 2^(b/n) per step.
    assert optimizer.num_samples == train.num_samples


# --- the evaluation hooks ----------------------------------------------------------------------


def batch_norm_stats(model: nn.Module) -> torch.Tensor:
    return torch.cat(
        [
            torch.cat([m.running_mean, m.running_var])
            for m in model.modules()
            if isinstance(m, nn.BatchNorm2d)
        ]
    ).clone()


class EvaluationWatch(nn.Module):
    """Wraps the model; remembers what the optimizer said while the model was evaluated."""

    def __init__(self, model: nn.Module, ask: Any) -> None:
        super().__init__()
        self.model, self.ask, self.seen = model, ask, []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.seen.append(self.ask())
        return self.model(inputs)


def test_schedule_free_evaluates_x_in_eval_mode_with_recomputed_batch_norm(tmp_path):
    inner, train, test = tiny_problem()
    optimizer = ScheduleFreeSGD(inner.parameters(), lr=0.5, bn_batches=3)
    model = EvaluationWatch(inner, lambda: optimizer.param_groups[0]["train_mode"])

    class BatchNormWatch:
        def __init__(self) -> None:
            self.before: list[torch.Tensor] = []
            self.after: list[torch.Tensor] = []

        def eval(self) -> None:  # called after optimizer.eval(), before any recompute
            self.before.append(batch_norm_stats(inner))

        def before_evaluation(self, model: nn.Module, batches: Any) -> None:
            self.after.append(batch_norm_stats(inner))  # after the optimizer's recompute

    watch = BatchNormWatch()
    fit_quietly(
        model, optimizer, train, Reiterable(test), tmp_path, 2, name="sf_sgd", callbacks=[watch]
    )
    assert model.seen and not any(model.seen)  # every evaluation forward ran in eval mode
    assert len(watch.before) == len(watch.after) == 2
    for before, after in zip(watch.before, watch.after, strict=True):
        assert not torch.allclose(before, after)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert all(r["bn_recompute_batches"] == 3 for r in records)
    assert all(r["forward_passes"] == len(train) + 3 for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_dog_evaluates_its_averaged_weights_and_trains_on_its_own(tmp_path):
    model, train, test = tiny_problem()
    optimizer = AveragedDoG(model.parameters(), reps_rel=1e-4)

    class WeightsWatch:
        def __init__(self) -> None:
            self.evaluated: list[dict[str, torch.Tensor]] = []
            self.averaged: list[dict[str, torch.Tensor]] = []
            self.after: list[dict[str, torch.Tensor]] = []

        def eval(self) -> None:
            self.evaluated.append({k: v.clone() for k, v in model.state_dict().items()})
            averaged = optimizer.averager.averaged_model.state_dict()
            self.averaged.append({k: v.clone() for k, v in averaged.items()})

        def after_epoch(self, end: Any) -> None:
            self.after.append({k: v.clone() for k, v in model.state_dict().items()})

    watch = WeightsWatch()
    fit_quietly(
        model, optimizer, train, Reiterable(test), tmp_path, 2, name="dog", callbacks=[watch]
    )
    for evaluated, averaged, after in zip(
        watch.evaluated, watch.averaged, watch.after, strict=True
    ):
        for key in averaged:
            torch.testing.assert_close(evaluated[key], averaged[key])
        # The training weights are back before the checkpoint, and they are not the average.
        assert not torch.allclose(after["0.weight"], averaged["0.weight"])
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.testing.assert_close(checkpoint["model"]["0.weight"], watch.after[-1]["0.weight"])
    assert checkpoint["optimizer"][AveragedDoG.AVERAGER_KEY]["t"] == 2 * len(train) + 1


RESUMABLE = {
    "dog": lambda params: AveragedDoG(params, reps_rel=1e-4),
    "sf_sgd": lambda params: ScheduleFreeSGD(params, lr=0.5, bn_batches=2),
    "sls": lambda params: SLS(params),
}


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_a_resumed_run_equals_an_uninterrupted_one(name, tmp_path):
    """The state these optimizers keep besides torch's (DoG's averager, schedule-free's mode,
    SLS's step) survives the checkpoint."""

    def run(run_dir, epochs: int) -> list[dict]:
        model, train, test = tiny_problem()
        optimizer = RESUMABLE[name](model.parameters())
        fit_quietly(model, optimizer, train, Reiterable(test), run_dir, epochs, name=name)
        return read_jsonl(run_dir / "metrics.jsonl")

    straight = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    (tmp_path / "b" / "summary.json").unlink()  # extend the finished run by one epoch
    resumed = run(tmp_path / "b", 2)
    for key in ("train_loss", "test_loss", "test_acc", "lr", "forward_passes"):
        assert resumed[1][key] == pytest.approx(straight[1][key], rel=1e-6), key


def test_cosine_sgd_follows_the_cosine_over_the_runs_epochs():
    w = nn.Parameter(torch.ones(1))
    optimizer = CosineSGD([w], total_epochs=4, lr=0.1, momentum=0.9)

    class Start:
        def __init__(self, epoch: int) -> None:
            self.epoch = epoch

    rates = []
    for epoch in range(4):
        optimizer.before_epoch(Start(epoch))  # type: ignore[arg-type]
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx(
        [
            0.1,
            0.1 * (1 + math.cos(math.pi / 4)) / 2,
            0.05,
            0.1 * (1 + math.cos(3 * math.pi / 4)) / 2,
        ]
    )
    with pytest.raises(ValueError, match="total_epochs"):
        CosineSGD([w], total_epochs=0, lr=0.1)


# --- experiment=table2_plus --------------------------------------------------------------------


def test_table2_plus_runs_every_optimizer_at_the_papers_best_rate_both_protocols_3_seeds():
    from tests.test_experiments import compose_with_hydra, paper_cells, sweep_jobs

    jobs = sweep_jobs("table2_plus")
    names = {*BASELINE_OPTIMIZERS, *MBT_OPTIMIZERS, *MODERN_OPTIMIZERS}
    cells = {(j["optimizer"], j["trainer.protocol"], j["seed"]) for j in jobs}
    assert len(jobs) == len(cells) == len(names) * 2 * 3
    assert {c[0] for c in cells} == names and {c[1] for c in cells} == {"clean", "paper"}
    # Each paper optimizer's default rate is its best cell of the paper's Table 2.
    best: dict[str, tuple[float, float]] = {}
    for row in paper_cells("2"):
        if row["metric"] == "best_test_acc" and row["value"]:
            rate, accuracy = float(row["start_lr"]), float(row["value"])
            if row["optimizer"] not in best or accuracy > best[row["optimizer"]][1]:
                best[row["optimizer"]] = (rate, accuracy)
    assert set(best) == {*BASELINE_OPTIMIZERS, *MBT_OPTIMIZERS}
    for optimizer, (rate, _) in best.items():
        option = OmegaConf.load(CONFIG_DIR / "optimizer" / f"{optimizer}.yaml")
        if "lr" not in option:  # mbt_*: from the shared MBT settings
            option = OmegaConf.load(CONFIG_DIR / "mbt_optimizer_base.yaml")
        assert option.lr == pytest.approx(rate), optimizer
    cfg = compose_with_hydra("experiment=table2_plus", "budget=cpu", "optimizer=sgd_cosine")
    validate(cfg)
    assert cfg.trainer.epochs == 4
    assert cfg.optimizer.total_epochs == cfg.trainer.epochs  # the schedule spans the run
