"""One run on several processes: sharded batches, DDP training and the MBT search on gloo.

The two-process runs go through ``torchrun --standalone`` (it picks a free port), once for
the library (tests/ddp_worker.py) and once for ``bgd-run`` itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import EPOCHS, train
from hydra import compose, initialize_config_dir

from bgd_experiments.cli import CONFIG_DIR, ConfigError, validate
from bgd_experiments.data import DeviceLoader
from bgd_experiments.distributed import shard_slice
from bgd_experiments.io import read_json, read_jsonl
from bgd_experiments.tasks import SettingsError, TrainerSettings

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
# Wall-clock fields differ between ranks; everything else in a record must not.
TIMES = {"epoch_time", "search_time"}


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_shards_partition_every_batch():
    for batch_size in (1, 7, 200):
        for world_size in (1, 2, 3, 8):
            covered = [
                index
                for rank in range(world_size)
                for index in range(batch_size)[shard_slice(batch_size, rank, world_size)]
            ]
            assert covered == list(range(batch_size))


@pytest.mark.parametrize("augment", ["paper", "flip_crop"])
def test_the_union_of_the_shards_is_the_single_process_batch(augment):
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(50) % 10

    def batches(shard):
        loader = DeviceLoader(
            images, labels, 16, shuffle=True, augment=augment, seed=3, shard=shard
        )
        return list(loader.epoch(2, stream=1))

    whole = batches((0, 1))
    assert [len(labels) for _, labels in whole] == [16, 16, 16, 2]  # an uneven last batch
    for world_size in (2, 3):
        shards = [batches((rank, world_size)) for rank in range(world_size)]
        for index, (inputs, targets) in enumerate(whole):
            assert torch.equal(torch.cat([shard[index][0] for shard in shards]), inputs)
            assert torch.equal(torch.cat([shard[index][1] for shard in shards]), targets)


def test_a_batch_size_the_processes_cannot_share_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SettingsError, match="batch_size=200 cannot be split over the 3"):
        TrainerSettings(batch_size=200, device="cpu")
    with pytest.raises(SettingsError, match="sync_bn=true needs CUDA"):
        TrainerSettings(batch_size=300, device="cpu", sync_bn=True)
    TrainerSettings(batch_size=300, device="cpu")
    TrainerSettings(batch_size=200, device="cpu", distributed="off")  # ignores torchrun


def _same_records(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second) == EPOCHS
    for one, other in zip(first, second, strict=True):
        assert {k: v for k, v in one.items() if k not in TIMES} == {
            k: v for k, v in other.items() if k not in TIMES
        }


def test_ddp_ranks_agree_exactly_and_match_one_process(tmp_path):
    done = torchrun(str(WORKER), str(tmp_path), str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["world_size"] == 2

    torch.set_num_threads(1)
    for name in ("mbt_nag", "nag", "sls"):
        # (a) The ranks agree bit for bit: weights, rates, sigmas, metrics.
        for key, value in rank0[name]["weights"].items():
            assert torch.equal(value, rank1[name]["weights"][key]), (name, key)
        assert rank0[name]["sigmas"] == rank1[name]["sigmas"]
        _same_records(rank0[name]["history"], rank1[name]["history"])

        # Only rank 0 wrote the run folder: one record per epoch, one summary.
        run_dir = tmp_path / "runs" / name
        assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
        assert read_json(run_dir / "summary.json")["distributed"]["world_size"] == 2

        # (b) One process on the same global batches (uninterrupted for MBT-NAG, which
        # the two ranks resumed after epoch 1): the same decisions, the same numbers up
        # to the rounding of a sum over two shards.
        single = train(name, tmp_path / "single" / name)
        assert single["sigmas"] == rank0[name]["sigmas"]
        for one, other in zip(single["history"], rank0[name]["history"], strict=True):
            assert one["lr"] == other["lr"]
            assert one.get("search_trials") == other.get("search_trials")
            assert one["train_acc"] == other["train_acc"]
            assert one["test_acc"] == other["test_acc"]
            for key in ("train_loss", "test_loss"):
                assert one[key] == pytest.approx(other[key], rel=1e-5), key
        for key, value in single["weights"].items():
            torch.testing.assert_close(value, rank0[name]["weights"][key], rtol=1e-4, atol=1e-5)
    # With BatchNorm the ranks still end equal, running statistics included (rank 0's).
    bn_weights = rank0["mbt_nag_bn"]["weights"]
    assert "1.running_mean" in bn_weights
    for key, value in bn_weights.items():
        assert torch.equal(value, rank1["mbt_nag_bn"]["weights"][key]), key
    assert rank0["mbt_nag_bn"]["sigmas"] == rank1["mbt_nag_bn"]["sigmas"]
    _same_records(rank0["mbt_nag_bn"]["history"], rank1["mbt_nag_bn"]["history"])
    # The MBT run really searched: two searches of three batches, on a moving start.
    assert [len(sigmas) for sigmas in rank0["mbt_nag"]["sigmas"]] == [3, 3]


def test_bgd_run_under_torchrun_trains_each_run_on_two_processes(tmp_path, tiny_cifar10_targz):
    """A two-cell sweep: both processes train each cell together, in one process group."""
    results = tmp_path / "results"
    done = torchrun(
        "-m",
        "bgd_experiments.cli",
        "-m",
        f"results_dir={results}",
        f"dataset.root={tiny_cifar10_targz}",
        "optimizer=mbt_nag",
        "optimizer.lr=0.01,0.1",
        "optimizer.num_batches=2",
        "model.width=0.0625",
        "dataset.train_subset=100",
        "dataset.test_subset=50",
        "trainer.epochs=1",
        "trainer.batch_size=50",
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "trainer.progress=plain",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summaries = sorted(results.rglob("summary.json"))
    assert len(summaries) == 2
    for summary_path in summaries:
        run_dir = summary_path.parent
        summary = json.loads(summary_path.read_text())
        assert summary["status"] == "finished"
        assert summary["distributed"] == {"world_size": 2, "backend": "gloo"}
        (record,) = read_jsonl(run_dir / "metrics.jsonl")
        assert record["search_status"] in ("ok", "saturated") and record["lr"] > 0
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # rank 0's only
    assert "invalid configuration" not in done.stderr


def test_bgd_run_refuses_a_batch_the_processes_cannot_share(monkeypatch):
    """Checked with the rest of the config, before any process group or run folder."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer.batch_size=25"])
    with pytest.raises(ConfigError) as refused:
        validate(cfg)
    assert str(refused.value) == (
        "trainer.batch_size=25 cannot be split over the 2 processes the launcher started "
        "(WORLD_SIZE): use a batch size divisible by it"
    )


def test_the_reference_search_is_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["optimizer=mbt_nag", "optimizer.implementation=reference"],
        )
    with pytest.raises(ConfigError, match="implementation=reference runs in one process"):
        validate(cfg)
