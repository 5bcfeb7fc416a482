"""Each paper artefact's sweep composes and covers exactly the paper's cells."""

from __future__ import annotations

import csv
from importlib import resources

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bgd_experiments.cli import CONFIG_DIR, validate
from hydra_plugins.bgd_grid_sweeper import expand_grids, union_of


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def sweep_jobs(experiment: str, *command_line: str) -> list[dict[str, str]]:
    cfg = compose_with_hydra(f"experiment={experiment}")
    sweeper = cfg.hydra.sweeper
    params = OmegaConf.to_container(sweeper.params) if sweeper.params else {}
    grids = union_of(OmegaConf.to_container(sweeper.grids), params)
    return [
        dict(line.split("=", 1) for line in job) for job in expand_grids(grids, list(command_line))
    ]


def paper_cells(table: str) -> list[dict[str, str]]:
    text = resources.files("bgd_experiments.reporting").joinpath("paper_results.csv").read_text()
    return [row for row in csv.DictReader(text.splitlines()) if row["table"] == table]


def test_table1_sweeps_batch_sizes_by_start_rates():
    jobs = sweep_jobs("table1")
    ours = {(int(j["trainer.batch_size"]), float(j["optimizer.lr"])) for j in jobs}
    paper = {(int(r["batch_size"]), float(r["start_lr"])) for r in paper_cells("1")}
    assert len(jobs) == 63 and ours == paper
    cfg = compose_with_hydra("experiment=table1")
    assert cfg.task == "search" and cfg.optimizer.name == "mbt_gd"
    assert cfg.dataset.train_subset is None and cfg.hydra.mode.name == "MULTIRUN"


def test_table2_is_the_union_of_baselines_and_mbt_rows():
    jobs = sweep_jobs("table2")
    ours = {(j["optimizer"], float(j["optimizer.lr"])) for j in jobs}
    paper = {(r["optimizer"], float(r["start_lr"])) for r in paper_cells("2")}
    assert len(jobs) == 75 and ours == paper
    cfg = compose_with_hydra("experiment=table2")
    assert (cfg.dataset.name, cfg.model.name, cfg.trainer.batch_size) == (
        "cifar10",
        "resnet18",
        200,
    )


def test_table3_covers_models_datasets_and_both_mbt_momentum_methods():
    jobs = sweep_jobs("table3")
    ours = {(j["dataset"], j["model"], j["optimizer"]) for j in jobs}
    paper = {(r["dataset"], r["model"], r["optimizer"]) for r in paper_cells("3")}
    assert len(jobs) == 20 and ours == paper
    assert compose_with_hydra("experiment=table3").optimizer.lr == 100


def test_fig3_reuses_the_table3_resnet18_runs():
    fig3 = {(j["dataset"], j["optimizer"]) for j in sweep_jobs("fig3")}
    table3 = {
        (j["dataset"], j["optimizer"]) for j in sweep_jobs("table3") if j["model"] == "resnet18"
    }
    assert fig3 == table3 and len(fig3) == 4
    fig3_cfg = compose_with_hydra("experiment=fig3")
    table3_cfg = compose_with_hydra("experiment=table3")
    # Same start rate and model: the run folders coincide, so nothing is retrained.
    assert fig3_cfg.optimizer.lr == table3_cfg.optimizer.lr
    assert fig3_cfg.model.name == "resnet18"


def test_command_line_seeds_multiply_every_grid():
    jobs = sweep_jobs("table2", "seed=0,1,2")
    assert len(jobs) == 75 * 3
    assert {j["seed"] for j in jobs} == {"0", "1", "2"}
    narrowed = sweep_jobs("table2", "optimizer.lr=0.1")
    assert {float(j["optimizer.lr"]) for j in narrowed} == {0.1}


@pytest.mark.parametrize("experiment", ["table1", "table2", "table3", "fig2", "fig3", "functions"])
@pytest.mark.parametrize("budget", ["paper", "short", "cpu", "smoke"])
def test_every_experiment_composes_with_every_budget(experiment, budget):
    cfg = compose_with_hydra(f"experiment={experiment}", f"budget={budget}")
    validate(cfg)
    if budget == "short" and experiment in ("table2", "table3"):
        assert cfg.trainer.epochs == 30 and cfg.model.width == 1.0
        assert cfg.dataset.train_subset is None and cfg.dataset.test_subset is None
    if budget == "paper" and experiment in ("table2", "table3"):
        assert cfg.trainer.epochs == 200 and cfg.model.width == 1.0
        assert cfg.dataset.train_subset is None and cfg.dataset.test_subset is None


@pytest.mark.parametrize("experiment", ["table3", "fig3"])
def test_mbt_keys_can_be_set_on_a_table3_sweeps_command_line(experiment):
    # A multirun composes its primary config before the sweep picks the optimizer: that
    # config must already have the MBT keys, or `optimizer.warm_start=restart` is refused.
    cfg = compose_with_hydra(f"experiment={experiment}", "optimizer.warm_start=restart")
    assert cfg.optimizer.warm_start == "restart"
    assert {job["optimizer"] for job in sweep_jobs(experiment)} == {"mbt_mmt", "mbt_nag"}
