"""Shared fixtures: tiny generated CIFAR datasets and an isolated data cache per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from datagen import (
    TINY_CIFAR10_TEST_PER_CLASS,
    TINY_CIFAR10_TRAIN_PER_CLASS,
    TINY_CIFAR100_TEST_PER_CLASS,
    TINY_CIFAR100_TRAIN_PER_CLASS,
    TINY_SEED,
    write_image_folder,
    write_image_folder_targz,
    write_torchvision_cifar,
)

from bgd_experiments.data import CACHE_ENV_VAR


@pytest.fixture(autouse=True)
def isolated_data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty data cache, never the user's ~/.cache."""
    cache_dir = tmp_path / "bgd-cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache_dir))
    return cache_dir


@pytest.fixture(scope="session")
def tiny_cifar10_torchvision(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root folder holding a generated ``cifar-10-batches-py/`` (pass it as dataset root)."""
    root = tmp_path_factory.mktemp("tiny_cifar10_torchvision")
    write_torchvision_cifar(
        root, "cifar10", TINY_CIFAR10_TRAIN_PER_CLASS, TINY_CIFAR10_TEST_PER_CLASS, TINY_SEED
    )
    return root


@pytest.fixture(scope="session")
def tiny_cifar10_imagefolder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated ``{train,test}/<class>/*.png`` tree."""
    root = tmp_path_factory.mktemp("tiny_cifar10_imagefolder")
    return write_image_folder(
        root, "cifar10", TINY_CIFAR10_TRAIN_PER_CLASS, TINY_CIFAR10_TEST_PER_CLASS, TINY_SEED
    )


@pytest.fixture(scope="session")
def tiny_cifar10_targz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``.tar.gz`` laid out like the real one: ``cifar10/{train,test}/<class>/*.jpg``."""
    path = tmp_path_factory.mktemp("tiny_cifar10_targz") / "cifar10-jpeg.tar.gz"
    return write_image_folder_targz(
        path,
        "cifar10",
        TINY_CIFAR10_TRAIN_PER_CLASS,
        TINY_CIFAR10_TEST_PER_CLASS,
        TINY_SEED,
        fmt="jpg",
        top_folder="cifar10",
    )


@pytest.fixture(scope="session")
def tiny_cifar100_targz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``.tar.gz`` laid out like the real one: ``cifar100/{train,test}/<class>/*.png``."""
    path = tmp_path_factory.mktemp("tiny_cifar100_targz") / "cifar100-png.tar.gz"
    return write_image_folder_targz(
        path,
        "cifar100",
        TINY_CIFAR100_TRAIN_PER_CLASS,
        TINY_CIFAR100_TEST_PER_CLASS,
        TINY_SEED,
        fmt="png",
        top_folder="cifar100",
    )
