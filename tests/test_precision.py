"""trainer.precision and trainer.compile: bf16 trains and keeps the MBT search
working, compile keeps the search's sigmas and does not recompile per trial, checkpoints
resume across compile on/off, and the GPU path reads the device once per epoch."""

from __future__ import annotations

import math

import pytest
import torch
from test_cli import TINY, bgd_run, only_run_dir
from test_training import Reiterable, fit_quietly
from torch import nn
from torch._dynamo.utils import counters

from bgd_experiments.data import DeviceLoader
from bgd_experiments.io import read_jsonl
from bgd_experiments.optim import MBTSGD
from bgd_experiments.runfolder import config_differences, read_config
from bgd_experiments.tasks import SettingsError, TrainerSettings
from bgd_experiments.training import train_one_epoch
from bgd_experiments.training.runtime import RunModel, cpu_compiler_missing, prepare_model


def tiny_network(num_classes: int = 4, seed: int = 0) -> nn.Module:
    """Conv + BatchNorm + linear, its initial weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def learnable_loader(batch_size: int = 16, samples: int = 64, **kwargs) -> DeviceLoader:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(samples) % 4
    images = torch.randint(0, 256, (samples, 3, 8, 8), dtype=torch.uint8, generator=generator)
    images[:, 0] = (labels * 60).to(torch.uint8)[:, None, None]
    return DeviceLoader(images, labels, batch_size, **kwargs)


class SearchLog:
    """A fit participant that records each epoch's search and the compiles so far."""

    def __init__(self, optimizer: MBTSGD) -> None:
        self.optimizer = optimizer
        self.sigmas: list[list[float]] = []
        self.trials: list[int] = []
        self.compiles: list[int] = []

    def after_epoch(self, end) -> None:
        result = self.optimizer.last_result
        self.sigmas.append(list(result.sigmas))
        self.trials.append(result.trials)
        self.compiles.append(counters["frames"]["total"])


def fit_mbt_nag(
    tmp_path, name: str, *, epochs: int = 2, device: str = "cpu", **runtime
) -> SearchLog:
    """MBT-NAG on the tiny network and 64 learnable images (k = 3), in ``tmp_path / name``."""
    network = tiny_network().to(device)
    optimizer = MBTSGD(network.parameters(), lr=1.0, momentum=0.9, nesterov=True, num_batches=3)
    log = SearchLog(optimizer)
    # flip_crop is an exact gather from a CPU generator: the same batches on every device.
    train = learnable_loader(shuffle=True, augment="flip_crop", device=device)
    test = learnable_loader(batch_size=32, shuffle=False, device=device)
    fit_quietly(
        prepare_model(network, **runtime), optimizer, train, Reiterable(test), tmp_path / name,
        epochs, name="mbt_nag", callbacks=[log],
    )  # fmt: skip
    return log


def test_fp32_eager_is_the_network_itself():
    network = tiny_network()
    assert prepare_model(network) is network  # the fp32 path is exactly the old one
    wrapped = prepare_model(network, precision="bf16")
    assert isinstance(wrapped, RunModel) and wrapped.network is network
    assert list(wrapped.state_dict()) == list(network.state_dict())
    assert len(list(wrapped.parameters())) == len(list(network.parameters()))
    with pytest.raises(ValueError, match="precision"):
        RunModel(network, precision="fp16")


def test_bf16_logits_are_fp32_and_close_to_fp32():
    network = tiny_network()
    inputs = torch.randn(8, 3, 8, 8)
    logits = prepare_model(network, precision="bf16")(inputs)
    assert logits.dtype == torch.float32
    reference = network(inputs)
    assert not torch.equal(logits, reference)  # autocast really ran in bf16
    torch.testing.assert_close(logits, reference, rtol=0.05, atol=0.05)


def test_bf16_search_returns_ok_and_a_finite_rate(tmp_path):
    in_bf16 = fit_mbt_nag(tmp_path, "bf16", precision="bf16", search_precision="train")
    in_fp32 = fit_mbt_nag(tmp_path, "bf16-fp32-search", precision="bf16")
    fp32 = fit_mbt_nag(tmp_path, "fp32")
    for name in ("bf16", "bf16-fp32-search"):
        records = read_jsonl(tmp_path / name / "metrics.jsonl")
        assert [r["search_status"] for r in records] == ["ok", "ok"]
        assert all(math.isfinite(r["lr"]) and r["lr"] > 0 for r in records)
        assert records[-1]["train_loss"] < records[0]["train_loss"]
    # The default searches in fp32: the first search (before any bf16 step) is fp32's.
    assert in_fp32.sigmas[0] == fp32.sigmas[0]
    # In bf16: same decisions as fp32 on this easy problem, up to one halving/doubling.
    for bf16_sigmas, fp32_sigmas in zip(in_bf16.sigmas, fp32.sigmas, strict=True):
        for ours, theirs in zip(bf16_sigmas, fp32_sigmas, strict=True):
            assert 0.5 <= ours / theirs <= 2.0


def test_search_scope_switches_precision_only_inside():
    network = tiny_network()
    model = RunModel(network, precision="bf16")  # searches in fp32
    inputs = torch.randn(4, 3, 8, 8)
    with model.search_scope():
        assert torch.equal(model(inputs), network(inputs))
    assert not torch.equal(model(inputs), network(inputs))
    with pytest.raises(ValueError, match="search_precision"):
        RunModel(network, search_precision="bf16")


def test_settings_check_precision_and_compile():
    assert TrainerSettings(device="cpu", precision="bf16", compile=False).precision == "bf16"
    with pytest.raises(SettingsError) as refused:
        TrainerSettings(device="cpu", precision="fp16", compile="yes", search_precision="bf16")
    assert len(refused.value.problems) == 3
    assert "search_precision must be fp32 or train" in str(refused.value)
    assert "precision must be fp32 or bf16" in str(refused.value)
    assert "compile must be true or false" in str(refused.value)


def test_run_folders_of_older_runs_are_fp32_and_compile_may_change():
    old = {"trainer": {"channels_last": "auto"}}  # written before the keys existed
    assert config_differences(old, {"trainer": {"precision": "fp32", "compile": True}}) == []
    new = {"trainer": {"precision": "bf16", "search_precision": "train", "compile": False}}
    assert config_differences(old, new) == [
        "trainer.precision: 'fp32' -> 'bf16'",
        "trainer.search_precision: 'fp32' -> 'train'",
    ]


def count_host_reads(monkeypatch) -> list[str]:
    """Record every Tensor -> Python read (each one a device synchronisation on a GPU)."""
    reads: list[str] = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_the_gpu_path_reads_the_device_once_per_epoch(monkeypatch):
    network = tiny_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loader = learnable_loader(batch_size=8, shuffle=True, augment="flip_crop")
    steps_seen: list[tuple[int, float | None]] = []
    reads = count_host_reads(monkeypatch)
    stats = train_one_epoch(
        network, optimizer, nn.CrossEntropyLoss(), loader.epoch(0), check_every=None,
        on_step=lambda step, loss: steps_seen.append((step, loss)),
    )  # fmt: skip
    assert stats.steps == len(loader) == 8 and math.isfinite(stats.loss)
    assert reads == ["tolist"], reads  # the one read at the end of the epoch
    assert steps_seen == [(step, None) for step in range(1, 9)]
    # The CPU path reads every step (cheap there): the counter does see reads.
    reads.clear()
    train_one_epoch(network, optimizer, nn.CrossEntropyLoss(), loader.epoch(1), check_every=1)
    assert reads.count("item") == 8


def test_the_gpu_path_notices_divergence_at_the_end_of_the_epoch():
    network = tiny_network()
    optimizer = torch.optim.SGD(network.parameters(), lr=1e30)
    loader = learnable_loader(batch_size=8, shuffle=True, augment="flip_crop")
    stats = train_one_epoch(
        network, optimizer, nn.CrossEntropyLoss(), loader.epoch(0), check_every=None
    )
    assert stats.diverged and stats.steps == len(loader)


@pytest.mark.slow
@pytest.mark.skipif(bool(cpu_compiler_missing()), reason=str(cpu_compiler_missing()))
def test_compile_keeps_the_sigmas_compiles_once_per_mode_and_resumes_eager(tmp_path):
    counters.clear()
    torch._dynamo.reset()
    compiled = fit_mbt_nag(tmp_path, "compiled", compile=True)
    eager = fit_mbt_nag(tmp_path, "eager")
    for ours, theirs in zip(compiled.sigmas, eager.sigmas, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)
    # One graph per mode (training, evaluation, the search's gradient forward with frozen
    # BatchNorm statistics, its inference-mode trials), compiled in the first epoch; the
    # second epoch's search and its trials reuse them.
    assert sum(compiled.trials) >= 10
    assert 1 <= compiled.compiles[0] <= 5, compiled.compiles
    assert compiled.compiles[1] == compiled.compiles[0], compiled.compiles
    # The checkpoint has the network's keys: an eager run resumes the compiled one.
    checkpoint = torch.load(tmp_path / "compiled" / "checkpoint.pt", weights_only=True)
    assert list(checkpoint["model"]) == list(tiny_network().state_dict())
    resumed = fit_mbt_nag(tmp_path, "compiled", epochs=3)
    assert len(resumed.sigmas) == 1  # only the third epoch ran
    assert len(read_jsonl(tmp_path / "compiled" / "metrics.jsonl")) == 3


@pytest.mark.slow
def test_bf16_trains_through_the_cli(tmp_path, tiny_cifar10_torchvision):
    results = tmp_path / "results"
    args = [
        f"dataset.root={tiny_cifar10_torchvision}", *TINY, "optimizer=mbt_nag",
        "optimizer.num_batches=2", "trainer.epochs=3", f"results_dir={results}",
    ]  # fmt: skip
    done = bgd_run(*args, "trainer.precision=bf16", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    records = read_jsonl(only_run_dir(results) / "metrics.jsonl")
    assert [r["search_status"] for r in records] == ["ok"] * 3
    assert all(math.isfinite(r["train_loss"]) for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    # An fp32 run of the same setting does not land in the bf16 run's folder: it gets its own.
    bf16_dir = only_run_dir(results)
    other = bgd_run(*args, "trainer.precision=fp32", cwd=tmp_path)
    assert other.returncode == 0, other.stdout + other.stderr
    folders = sorted(path.parent for path in results.rglob("summary.json"))
    assert len(folders) == 2 and bf16_dir in folders
    fp32_dir = next(folder for folder in folders if folder != bf16_dir)
    assert read_config(fp32_dir / "config.yaml")["trainer"]["precision"] == "fp32"
    assert len(read_jsonl(fp32_dir / "metrics.jsonl")) == 3  # trained, not resumed from bf16


@pytest.mark.slow
@pytest.mark.skipif(bool(cpu_compiler_missing()), reason=str(cpu_compiler_missing()))
def test_a_compiled_bf16_model_searches_in_fp32():
    """Dynamo guards on the autocast state: inside search_scope the compiled model runs a
    graph of its own in fp32, not the bf16 graph it compiled first."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(48, 4))
    model = RunModel(network, precision="bf16", compile=True)
    inputs = torch.randn(8, 3, 4, 4)
    with torch.inference_mode():
        in_bf16 = model(inputs)
        with model.search_scope():
            in_fp32 = model(inputs)
        reference = network(inputs)
    torch.testing.assert_close(in_fp32, reference, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(in_bf16, reference, rtol=1e-6, atol=1e-6)
