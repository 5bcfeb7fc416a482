"""Every config option composes, instantiates, and carries only keys the code reads."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bgd_experiments.cli import CONFIG_DIR, ConfigError, validate
from bgd_experiments.reporting.paper import BASELINE_OPTIMIZERS, MBT_OPTIMIZERS, MODERN_OPTIMIZERS

OPTIONS = {
    # Every file of a group is an option that Hydra offers (bgd-run --help lists them all).
    group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    for group in ("dataset", "model", "optimizer", "budget", "experiment")
}


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def test_config_dir_is_absolute_and_complete():
    assert CONFIG_DIR.is_absolute()
    assert OPTIONS["dataset"] == ["cifar10", "cifar100"]
    assert OPTIONS["model"] == sorted(
        ["resnet18", "preactresnet18", "mobilenetv2", "senet18", "densenet121"]
    )
    # No shared base file among the options (optimizer=_mbt was offered and failed).
    assert set(OPTIONS["optimizer"]) == {*BASELINE_OPTIMIZERS, *MBT_OPTIMIZERS, *MODERN_OPTIMIZERS}


@pytest.mark.parametrize("model", OPTIONS["model"])
@pytest.mark.parametrize("dataset", OPTIONS["dataset"])
def test_every_model_instantiates_with_the_dataset_head(model, dataset):
    cfg = compose_train(f"model={model}", f"dataset={dataset}", "model.width=0.125")
    spec = plain(cfg.model)
    assert spec.pop("name") == model
    net = instantiate(spec)
    logits = net.eval()(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, cfg.dataset.num_classes)


@pytest.mark.parametrize("optimizer", OPTIONS["optimizer"])
def test_every_optimizer_instantiates_and_steps(optimizer):
    cfg = compose_train(f"optimizer={optimizer}")
    validate(cfg)
    spec = plain(cfg.optimizer)
    assert spec.pop("name") == optimizer
    weight = torch.nn.Parameter(torch.ones(3))
    opt = instantiate(spec)(params=[weight])
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr)
    if hasattr(opt, "train"):  # a schedule-free optimizer steps in train mode, as fit sets it
        opt.train()
    weight.sum().backward()
    # MBT optimizers train at their start rate until a search, and say so.
    unsearched = (
        pytest.warns(UserWarning, match="before any search")
        if optimizer.startswith("mbt_")
        else contextlib.nullcontext()
    )
    with unsearched:
        if getattr(opt, "wants_closure", False):  # as fit hands it: the loss without backward
            opt.step(lambda: weight.detach().sum())
        else:
            opt.step()
    assert not torch.equal(weight.detach(), torch.ones(3))


def test_momentum_variants_match_the_paper():
    mmt = compose_train("optimizer=mmt").optimizer
    nag = compose_train("optimizer=nag").optimizer
    assert (mmt.momentum, mmt.get("nesterov", False)) == (0.9, False)
    assert (nag.momentum, nag.nesterov) == (0.9, True)
    for name, momentum, nesterov, every_epoch in [
        ("mbt_gd", 0.0, False, False),
        ("mbt_mmt", 0.9, False, True),
        ("mbt_nag", 0.9, True, True),
    ]:
        opt = compose_train(f"optimizer={name}").optimizer
        assert (opt.momentum, opt.nesterov, opt.search_every_epoch) == (
            momentum,
            nesterov,
            every_epoch,
        )
        assert (opt.alpha, opt.beta, opt.num_batches) == (1e-4, 0.5, 20)
        assert opt.keep_search_steps is False and opt.plateau_rule == "authors_code"


@pytest.mark.parametrize("budget", OPTIONS["budget"])
def test_every_budget_composes_and_validates(budget):
    cfg = compose_train(f"budget={budget}")
    validate(cfg)


def test_paper_budget_is_the_papers_protocol():
    cfg = compose_train("budget=paper")
    assert cfg.trainer.epochs == 200 and cfg.trainer.batch_size == 200
    assert cfg.model.width == 1.0 and cfg.dataset.train_subset is None
    assert cfg.dataset.augment == "paper"


def test_every_budget_sets_the_same_keys():
    # Airtight: a key missing from one budget would silently keep another budget's value.
    keys = {
        budget: set(OmegaConf.load(Path(CONFIG_DIR) / "budget" / f"{budget}.yaml"))
        for budget in OPTIONS["budget"]
    }
    assert {"smoke", "cpu", "short", "paper"} <= set(keys)
    assert all(found == keys["paper"] for found in keys.values()), keys


def test_short_budget_is_the_papers_data_and_models_for_30_epochs():
    cfg = compose_train("budget=short")
    validate(cfg)
    assert cfg.trainer.epochs == 30 and cfg.trainer.batch_size == 200
    assert cfg.model.width == 1.0
    assert cfg.dataset.train_subset is None and cfg.dataset.test_subset is None
    assert cfg.budget.search_batches == compose_train("budget=paper").budget.search_batches


def test_validate_collects_every_problem_in_one_message():
    cfg = compose_train("optimizer.lr=0", "trainer.batch_size=0", "model.width=-1")
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    text = str(error.value)
    assert "optimizer.lr" in text and "trainer.batch_size" in text and "model.width" in text


def test_hydra_settings_avoid_the_known_pitfalls():
    raw = OmegaConf.load(Path(CONFIG_DIR) / "train.yaml")
    assert raw.hydra.job.chdir is False
    assert raw.hydra.output_subdir is None


def test_baselines_stop_at_the_authors_patience_by_default():
    cfg = compose_train("optimizer=adam")
    assert cfg.trainer.baseline_stop_patience == 50
    assert compose_train("optimizer=mbt_nag").optimizer.warm_start == "carry_over"
    validate(compose_train("trainer.baseline_stop_patience=null"))
    validate(compose_train("trainer.baseline_stop_patience=0"))
    for bad in ("-1", "2.5", "true"):
        with pytest.raises(ConfigError, match="baseline_stop_patience"):
            validate(compose_train(f"trainer.baseline_stop_patience={bad}"))
