"""scripts/bench_epoch.py end to end on tiny generated data (CPU; compile off for speed)."""

from __future__ import annotations

import json

import torch
from scriptload import load_script

from bgd_experiments.training.provenance import ARTEFACT_PROVENANCE_KEYS


def load_bench():
    return load_script("bench_epoch")


def test_authors_transform_gives_normalised_float_images():
    bench = load_bench()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    dataset = bench.PILDataset(images, torch.arange(4))
    image, label = dataset[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label == 1
    # Normalised with the CIFAR stats: values outside [0, 1] occur.
    assert image.min() < 0


def test_bench_epoch_runs_and_writes_md_and_json(tmp_path, tiny_cifar10_targz):
    bench = load_bench()
    code = bench.main(
        [
            "--device=cpu",
            f"--data={tiny_cifar10_targz}",
            "--width=0.0625",
            "--batch-size=8",
            "--steps=3",
            "--num-batches=2",
            "--repeats=1",
            "--data-batches=2",
            "--threads=1",
            "--compile=off",
            f"--out={tmp_path}",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert set(ARTEFACT_PROVENANCE_KEYS) <= set(report["provenance"])
    assert report["provenance"]["data"]["name"] == tiny_cifar10_targz.name
    assert report["data_path"]["ratio_ours_over_authors"] > 0
    assert report["data_path"]["ours_augment_threads"] == 1
    assert "Ours assembles each batch with 1 CPU thread" in (tmp_path / "cpu.md").read_text()
    (result,) = report["models"]
    assert result["model"] == "resnet18" and result["width"] == 0.0625
    for name in ("authors", "nag-fp32", "mbt-restore", "mbt-keep"):
        entry = result["variants"][name]
        assert entry["images_per_s"] > 0 and entry["epoch_s"] > 0
    assert result["variants"]["authors"]["epoch_ratio_vs_authors"] == 1.0
    # bf16 autocast either ran or its failure was recorded; compile was skipped and said so.
    assert "nag-bf16" in result["variants"] or "nag-bf16" in result["failures"]
    assert "--compile off" in result["failures"]["nag-fp32-compiled"]
    text = (tmp_path / "cpu.md").read_text()
    assert "Data path alone" in text and "| authors |" in text and "Machine:" in text
