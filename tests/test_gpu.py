"""CUDA checks (`make gpu-check`): skipped on a machine without CUDA.

CUDA training equals CPU training on a tiny model in fp32 (TF32 off) up to rounding, bf16
autocast trains (trainer.precision=bf16, the sync-free epoch), torch.compile keeps the MBT
search's sigmas without recompiling per trial, and `bgd-run` killed mid-epoch on CUDA
resumes to the uninterrupted result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_precision import fit_mbt_nag
from torch import nn
from torch._dynamo.utils import counters

from bgd_experiments.data import DeviceLoader
from bgd_experiments.io import read_jsonl
from bgd_experiments.models import build_model
from bgd_experiments.optim import MBTSGD
from bgd_experiments.training import RunIdentity, fit, train_one_epoch
from bgd_experiments.training.runtime import prepare_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
# As a module, so the test runs where no console script is installed (a bare GPU machine).
BGD_RUN = [sys.executable, "-m", "bgd_experiments.cli"]


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 would make CUDA differ from CPU by ~1e-3 per matmul: off for the comparison."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def learnable_images(samples: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(samples) % 4
    images = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8, generator=generator)
    images[:, 0] = (labels * 60).to(torch.uint8)[:, None, None]
    return images, labels


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 4),
    )


class Reiterable:
    def __init__(self, loader: DeviceLoader) -> None:
        self.loader = loader

    def __iter__(self):
        return self.loader.epoch(0)


def identity(optimizer: str) -> RunIdentity:
    return RunIdentity(
        task="train", dataset="cifar10", model="tiny", optimizer=optimizer, lr=0.05,
        batch_size=16, seed=0, epochs=2, width=1.0, train_subset=None, augment="flip_crop",
        budget=None, data_source="generated",
    )  # fmt: skip


@pytest.mark.parametrize("optimizer", ["nag", "mbt_nag"])
def test_cuda_fit_matches_cpu_in_fp32(tmp_path, optimizer):
    images, labels = learnable_images()
    histories = []
    for device in ("cpu", "cuda"):
        model = tiny_model().to(device)
        # flip_crop is an exact gather: the same batches on both devices (CPU generator).
        train = DeviceLoader(images, labels, 16, shuffle=True, augment="flip_crop", device=device)
        test = DeviceLoader(images, labels, 64, shuffle=False, device=device)
        if optimizer == "nag":
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        else:
            opt = MBTSGD(model.parameters(), lr=1.0, momentum=0.9, nesterov=True, num_batches=2)
        fit(
            model, opt, train, Reiterable(test), epochs=2, run_dir=tmp_path / device,
            identity=identity(optimizer), progress="plain", tensorboard=False,
        )  # fmt: skip
        histories.append(read_jsonl(tmp_path / device / "metrics.jsonl"))
    for cpu, cuda in zip(*histories, strict=True):
        assert cuda["train_loss"] == pytest.approx(cpu["train_loss"], rel=1e-3)
        assert cuda["test_loss"] == pytest.approx(cpu["test_loss"], rel=1e-3)
        assert cuda["lr"] == pytest.approx(cpu["lr"], rel=1e-3)


def test_bf16_autocast_trains_resnet18_on_cuda():
    images, labels = learnable_images(256)
    network = build_model("resnet18", 4, 0.25).cuda().to(memory_format=torch.channels_last)
    model = prepare_model(network, precision="bf16")  # trainer.precision=bf16
    loader = DeviceLoader(images, labels, 64, shuffle=True, device="cuda", channels_last=True)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    losses, syncs = [], []
    for epoch in range(6):
        # check_every=None: the sync-free GPU path of fit (one read per epoch), watched by
        # CUDA's sync debug mode, which warns at every synchronising call.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                stats = train_one_epoch(
                    model, optimizer, nn.CrossEntropyLoss(), loader.epoch(epoch), check_every=None
                )
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs.append(sum("synchroniz" in str(warning.message) for warning in caught))
        losses.append(stats.loss)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses
    assert max(syncs[1:]) <= 1, syncs  # the epoch's one read, none per step (4 steps)


def test_compile_and_bf16_keep_the_search_on_cuda(tmp_path):
    """trainer.compile=true: the search's sigmas equal eager's, and no recompilation in the
    second epoch (its search and trials reuse the first epoch's graphs); bf16 with the
    search in bf16 too still finds ok rates."""
    counters.clear()
    torch._dynamo.reset()
    compiled = fit_mbt_nag(tmp_path, "compiled", device="cuda", compile=True)
    eager = fit_mbt_nag(tmp_path, "eager", device="cuda")
    for ours, theirs in zip(compiled.sigmas, eager.sigmas, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)
    assert compiled.compiles[1] == compiled.compiles[0] <= 5, compiled.compiles
    # bf16 with compile is timed by the epoch benchmark of gpu-check (nag-bf16-compiled).
    fit_mbt_nag(tmp_path, "bf16", device="cuda", precision="bf16", search_precision="train")
    records = read_jsonl(tmp_path / "bf16" / "metrics.jsonl")
    assert [r["search_status"] for r in records] == ["ok", "ok"]
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_bgd_run_on_cuda_resumes_after_a_kill(tmp_path, tiny_cifar10_torchvision):
    def run(results: Path, env: dict[str, str] | None = None):
        return subprocess.run(
            [
                *BGD_RUN, f"dataset.root={tiny_cifar10_torchvision}", "model.width=0.125",
                "trainer.batch_size=25", "trainer.device=cuda", "trainer.progress=plain",
                "optimizer=mbt_mmt", "optimizer.num_batches=2", "trainer.epochs=3",
                f"results_dir={results}",
            ],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    def records(results: Path) -> list[dict]:
        (path,) = results.rglob("metrics.jsonl")
        drop = ("epoch_time", "search_time")
        return [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(path)]

    reference = run(tmp_path / "a")
    assert reference.returncode == 0, reference.stderr
    steps = records(tmp_path / "a")[0]["backward_passes"]
    # The kill comes from the test-only sitecustomize in tests/kill_hook (as in test_cli.py).
    hook_path = os.pathsep.join(
        [str(Path(__file__).resolve().parent / "kill_hook"), os.environ.get("PYTHONPATH", "")]
    )
    killed = run(tmp_path / "b", env={"BGD_KILL_AT_STEP": str(steps + 3), "PYTHONPATH": hook_path})
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    resumed = run(tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout + resumed.stderr
    # Same kernels, same order, same RNG: the resumed CUDA run equals the uninterrupted one
    # up to cuDNN's nondeterministic reductions.
    for a, b in zip(records(tmp_path / "a"), records(tmp_path / "b"), strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["test_acc"] == pytest.approx(a["test_acc"], abs=1.0)
