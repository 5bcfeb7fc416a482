"""Tiny generated CIFAR-format datasets for tests (no real data needed).

Images are random uint8 noise around a class-dependent mean colour, so a small model can
beat chance on them. Class names are the official ones, so the layouts look exactly like
the real datasets:

- :func:`write_torchvision_cifar`: torchvision's pickle folders (``cifar-10-batches-py`` /
  ``cifar-100-python``). torchvision itself would refuse them only because of its md5 check
  of the official files; ``bgd_experiments.data`` reads the pickles directly, so it loads them.
- :func:`write_image_folder`: ``<root>/{train,test}/<class>/<index>.<fmt>``;
- :func:`write_image_folder_targz`: a ``.tar.gz`` of that tree, optionally under one top
  folder (``cifar10/train/...`` as in ``../shared/data/cifar10-jpeg.tar.gz``).

File names are the zero-padded indices into :func:`make_arrays`' arrays, so the loaded
order (sorted by class folder, then path) is the stable sort of the arrays by label.
"""

from __future__ import annotations

import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bgd_experiments.data import CIFAR10_CLASSES, CIFAR100_CLASSES, NUM_CLASSES

CLASS_NAMES = {"cifar10": list(CIFAR10_CLASSES), "cifar100": list(CIFAR100_CLASSES)}
_SPLIT_IDS = {"train": 0, "test": 1}
_NOISE_STD = 30.0


def make_arrays(
    name: str, n_per_class: int, seed: int, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,), classes interleaved at random.

    The class colours depend only on the dataset, so train and test share them.
    """
    num_classes = NUM_CLASSES[name]
    palette = np.random.default_rng(1000 + num_classes).integers(30, 226, size=(num_classes, 3))
    rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
    labels = rng.permutation(np.repeat(np.arange(num_classes), n_per_class)).astype(np.int64)
    noise = rng.normal(0.0, _NOISE_STD, size=(labels.size, 3, 32, 32))
    images = np.clip(palette[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    return images, labels


def loaded_order(labels: np.ndarray) -> np.ndarray:
    """The permutation an image-folder loader applies: by class, then by file index."""
    return np.argsort(labels, kind="stable")


def _dump(path: Path, payload: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=2)


def write_torchvision_cifar(
    root: str | Path, name: str, n_train_per_class: int, n_test_per_class: int, seed: int
) -> Path:
    """Write torchvision's pickle folder for ``name`` under ``root``; returns that folder."""
    root = Path(root)
    classes = CLASS_NAMES[name]
    train_images, train_labels = make_arrays(name, n_train_per_class, seed, "train")
    test_images, test_labels = make_arrays(name, n_test_per_class, seed, "test")

    def batch(images: np.ndarray, labels: np.ndarray, label_key: str, title: str) -> dict:
        return {
            "batch_label": title,
            label_key: [int(x) for x in labels],
            "data": images.reshape(len(images), -1),  # (N, 3072): R plane, G plane, B plane
            "filenames": [f"generated_{i:05d}.png" for i in range(len(images))],
        }

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        chunks = np.array_split(np.arange(len(train_labels)), 5)
        for number, chunk in enumerate(chunks, start=1):
            title = f"training batch {number} of 5"
            payload = batch(train_images[chunk], train_labels[chunk], "labels", title)
            _dump(folder / f"data_batch_{number}", payload)
        _dump(folder / "test_batch", batch(test_images, test_labels, "labels", "testing batch"))
        _dump(
            folder / "batches.meta",
            {"label_names": classes, "num_cases_per_batch": len(chunks[0]), "num_vis": 3072},
        )
    elif name == "cifar100":
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for split, images, labels in (
            ("train", train_images, train_labels),
            ("test", test_images, test_labels),
        ):
            payload = batch(images, labels, "fine_labels", split)
            payload["coarse_labels"] = [int(x) // 5 for x in labels]  # placeholder superclasses
            _dump(folder / split, payload)
        _dump(
            folder / "meta",
            {
                "fine_label_names": classes,
                "coarse_label_names": [f"superclass_{i:02d}" for i in range(20)],
            },
        )
    else:
        raise ValueError(f"unknown dataset {name!r}")
    return folder


def write_image_folder(
    root: str | Path,
    name: str,
    n_train_per_class: int,
    n_test_per_class: int,
    seed: int,
    fmt: str = "png",
) -> Path:
    """Write ``<root>/{train,test}/<class>/<index>.<fmt>``; returns ``root``."""
    root = Path(root)
    classes = CLASS_NAMES[name]
    for split, per_class in (("train", n_train_per_class), ("test", n_test_per_class)):
        images, labels = make_arrays(name, per_class, seed, split)
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = root / split / classes[label] / f"{index:05d}.{fmt}"
            Image.fromarray(image.transpose(1, 2, 0)).save(path, quality=95)
    return root


def write_image_folder_targz(
    path: str | Path,
    name: str,
    n_train_per_class: int,
    n_test_per_class: int,
    seed: int,
    fmt: str = "png",
    top_folder: str | None = None,
) -> Path:
    """Write a ``.tar.gz`` of an image-folder tree (under ``top_folder`` if given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        tree = write_image_folder(
            Path(scratch) / "tree", name, n_train_per_class, n_test_per_class, seed, fmt
        )
        with tarfile.open(path, "w:gz") as archive:
            archive.add(tree, arcname=top_folder or ".")
    return path


# Sizes of the shared session fixtures in conftest.py (images per class).
TINY_SEED = 0
TINY_CIFAR10_TRAIN_PER_CLASS = 20
TINY_CIFAR10_TEST_PER_CLASS = 5
TINY_CIFAR100_TRAIN_PER_CLASS = 3
TINY_CIFAR100_TEST_PER_CLASS = 1
