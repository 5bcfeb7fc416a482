"""Data loading, caching, subsets, the device loader and the batched augmentation."""

from __future__ import annotations

import colorsys
import itertools
import os
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from datagen import (
    TINY_CIFAR10_TEST_PER_CLASS,
    TINY_CIFAR10_TRAIN_PER_CLASS,
    TINY_CIFAR100_TEST_PER_CLASS,
    TINY_CIFAR100_TRAIN_PER_CLASS,
    TINY_SEED,
    loaded_order,
    make_arrays,
    write_image_folder_targz,
    write_torchvision_cifar,
)
from PIL import Image
from torchvision.transforms import InterpolationMode

from bgd_experiments.data import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    CIFAR_MEAN,
    CIFAR_STD,
    ArrayDataset,
    DatasetError,
    DeviceLoader,
    augment_batch,
    check_dataset_source,
    cifar,
    class_balanced_subset,
    load_cifar,
    normalize,
    split_validation,
)
from bgd_experiments.data import augment as aug
from bgd_experiments.data import loader as loader_module

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Records every call of the slow decode path (name, split)."""
    calls: list[tuple[str, str]] = []
    original = cifar._decode_split

    def counting(name: str, source: cifar._Source, split: str) -> ArrayDataset:
        calls.append((name, split))
        return original(name, source, split)

    monkeypatch.setattr(cifar, "_decode_split", counting)
    return calls


def _expected(name: str, per_class: int, split: str, folder_order: bool):
    images, labels = make_arrays(name, per_class, TINY_SEED, split)
    if folder_order:
        order = loaded_order(labels)
        images, labels = images[order], labels[order]
    return torch.from_numpy(images), torch.from_numpy(labels)


# ------------------------------------------------------------------------------------------
# Layouts


@pytest.mark.parametrize("split", ["train", "test"])
def test_torchvision_folder_loads_exact_arrays(tiny_cifar10_torchvision: Path, split: str):
    per_class = TINY_CIFAR10_TRAIN_PER_CLASS if split == "train" else TINY_CIFAR10_TEST_PER_CLASS
    images, labels = _expected("cifar10", per_class, split, folder_order=False)
    for root in (tiny_cifar10_torchvision, tiny_cifar10_torchvision / "cifar-10-batches-py"):
        data = load_cifar("cifar10", root, split)
        assert data.images.dtype == torch.uint8 and data.images.shape == (10 * per_class, 3, 32, 32)
        assert data.labels.dtype == torch.int64
        assert torch.equal(data.images, images)
        assert torch.equal(data.labels, labels)
        assert data.classes == list(CIFAR10_CLASSES)


def test_generated_pickles_match_torchvision_reader(tmp_path: Path, monkeypatch):
    # torchvision would accept the files but for the md5 of the official release.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    for name, dataset_class in (
        ("cifar10", torchvision.datasets.CIFAR10),
        ("cifar100", torchvision.datasets.CIFAR100),
    ):
        write_torchvision_cifar(tmp_path, name, 2, 1, seed=3)
        for split in ("train", "test"):
            reference = dataset_class(tmp_path, train=split == "train", download=False)
            ours = load_cifar(name, tmp_path, split)
            assert np.array_equal(ours.images.permute(0, 2, 3, 1).numpy(), reference.data)
            assert ours.labels.tolist() == list(reference.targets)
            assert ours.classes == reference.classes


@pytest.mark.parametrize("split", ["train", "test"])
def test_image_folder_loads_sorted_by_class_then_path(tiny_cifar10_imagefolder: Path, split):
    per_class = TINY_CIFAR10_TRAIN_PER_CLASS if split == "train" else TINY_CIFAR10_TEST_PER_CLASS
    images, labels = _expected("cifar10", per_class, split, folder_order=True)
    data = load_cifar("cifar10", tiny_cifar10_imagefolder, split)
    assert torch.equal(data.images, images)  # PNG is lossless
    assert torch.equal(data.labels, labels)
    assert data.classes == list(CIFAR10_CLASSES)


def test_image_folder_one_level_down(tiny_cifar10_imagefolder: Path, tmp_path: Path):
    shutil.copytree(tiny_cifar10_imagefolder, tmp_path / "data" / "cifar10")
    data = load_cifar("cifar10", tmp_path / "data", "test")
    assert len(data) == 10 * TINY_CIFAR10_TEST_PER_CLASS


def test_jpeg_targz_with_top_folder(tiny_cifar10_targz: Path):
    with tarfile.open(tiny_cifar10_targz) as archive:
        assert any(n.startswith("cifar10/train/airplane/") for n in archive.getnames())
    for split, per_class in (
        ("train", TINY_CIFAR10_TRAIN_PER_CLASS),
        ("test", TINY_CIFAR10_TEST_PER_CLASS),
    ):
        images, labels = _expected("cifar10", per_class, split, folder_order=True)
        data = load_cifar("cifar10", tiny_cifar10_targz, split)
        assert data.images.shape == (10 * per_class, 3, 32, 32)
        assert torch.equal(data.labels, labels)
        assert data.classes == list(CIFAR10_CLASSES)
        # JPEG blurs the noise but keeps each image's mean colour and its identity: every
        # loaded image is nearest to its own original.
        mean_colour_error = (data.images.float() - images.float()).mean(dim=(2, 3)).abs()
        assert mean_colour_error.max() < 4
        distances = torch.cdist(data.images.flatten(1).float(), images.flatten(1).float())
        assert torch.equal(distances.argmin(dim=1), torch.arange(len(images)))


def test_png_targz_cifar100(tiny_cifar100_targz: Path):
    for split, per_class in (
        ("train", TINY_CIFAR100_TRAIN_PER_CLASS),
        ("test", TINY_CIFAR100_TEST_PER_CLASS),
    ):
        images, labels = _expected("cifar100", per_class, split, folder_order=True)
        data = load_cifar("cifar100", tiny_cifar100_targz, split)
        assert torch.equal(data.images, images)
        assert torch.equal(data.labels, labels)
        assert data.classes == list(CIFAR100_CLASSES)
        assert torch.bincount(data.labels, minlength=100).tolist() == [per_class] * 100


def test_targz_without_top_folder(tmp_path: Path):
    path = write_image_folder_targz(tmp_path / "flat.tgz", "cifar10", 2, 1, seed=1)
    with tarfile.open(path) as archive:
        assert any(n.startswith("./train/") for n in archive.getnames())
    data = load_cifar("cifar10", path, "train")
    assert torch.bincount(data.labels).tolist() == [2] * 10


def test_folder_holding_both_archives_picks_the_right_one(
    tiny_cifar10_targz: Path, tiny_cifar100_targz: Path, tmp_path: Path
):
    # Like passing ../shared/data itself as the root: cifar10 must not take cifar100-png.
    (tmp_path / tiny_cifar10_targz.name).symlink_to(tiny_cifar10_targz)
    (tmp_path / tiny_cifar100_targz.name).symlink_to(tiny_cifar100_targz)
    assert load_cifar("cifar10", tmp_path, "test").num_classes == 10
    assert load_cifar("cifar100", tmp_path, "test").num_classes == 100


# ------------------------------------------------------------------------------------------
# Cache


def test_second_load_reads_cache(tiny_cifar10_targz: Path, decode_calls, isolated_data_cache):
    first = load_cifar("cifar10", tiny_cifar10_targz, "train")
    second = load_cifar("cifar10", tiny_cifar10_targz, "train")
    assert decode_calls == [("cifar10", "train")]
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.classes == second.classes
    # One decoded array, and the archive's sha256 that keys it.
    names = sorted(p.name for p in isolated_data_cache.iterdir())
    assert [n.split("-")[:2] for n in names] == [["cifar10", "train"], ["digest", names[1][7:]]]
    load_cifar("cifar10", tiny_cifar10_targz, "test")  # another split: its own entry
    assert decode_calls == [("cifar10", "train"), ("cifar10", "test")]


@pytest.mark.parametrize("layout", ["torchvision", "imagefolder"])
def test_cache_for_every_layout(request, layout, decode_calls):
    root = request.getfixturevalue(f"tiny_cifar10_{layout}")
    for _ in range(3):
        load_cifar("cifar10", root, "test")
    assert len(decode_calls) == 1


def test_cache_dir_argument_overrides_env(tiny_cifar10_targz, tmp_path, isolated_data_cache):
    explicit = tmp_path / "explicit-cache"
    load_cifar("cifar10", tiny_cifar10_targz, "test", cache_dir=explicit)
    assert len(list(explicit.glob("cifar10-test-*.pt"))) == 1
    assert not isolated_data_cache.exists()


def test_cache_follows_the_archive_content_not_its_mtime(
    tiny_cifar10_targz, tmp_path, decode_calls
):
    copy = tmp_path / "copy.tar.gz"
    shutil.copy(tiny_cifar10_targz, copy)
    load_cifar("cifar10", copy, "test")
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_cifar("cifar10", copy, "test")
    assert len(decode_calls) == 1  # same bytes: the cache serves them
    other = write_image_folder_targz(
        tmp_path / "other.tar.gz", "cifar10", 1, 1, seed=7, fmt="jpg", top_folder="cifar10"
    )
    shutil.copy(other, copy)
    load_cifar("cifar10", copy, "test")
    assert len(decode_calls) == 2


def test_unreadable_cache_file_is_rebuilt(tiny_cifar10_targz, decode_calls, isolated_data_cache):
    load_cifar("cifar10", tiny_cifar10_targz, "test")
    (entry,) = isolated_data_cache.glob("cifar10-test-*.pt")
    entry.write_bytes(b"not a torch file")
    data = load_cifar("cifar10", tiny_cifar10_targz, "test")
    assert len(decode_calls) == 2 and len(data) == 10 * TINY_CIFAR10_TEST_PER_CLASS
    load_cifar("cifar10", tiny_cifar10_targz, "test")
    assert len(decode_calls) == 2


# ------------------------------------------------------------------------------------------
# Errors


def test_missing_data_names_the_options_and_the_path(tmp_path: Path):
    missing = tmp_path / "nowhere"
    for call in (
        lambda: load_cifar("cifar10", missing, "train"),
        lambda: check_dataset_source("cifar10", missing, download=False),
    ):
        with pytest.raises(DatasetError) as info:
            call()
        message = str(info.value)
        assert isinstance(info.value, ValueError)
        assert str(missing) in message
        assert "dataset.download=true" in message
        assert "cifar-10-batches-py" in message
        assert "../shared/data/cifar10-jpeg.tar.gz" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No cifar100 data found"):
        load_cifar("cifar100", tmp_path / "empty", "test")


def test_download_failure_is_a_dataset_error(tmp_path: Path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetError) as info:
        check_dataset_source("cifar10", tmp_path / "dl", download=True)
    assert "network is unreachable" in str(info.value)
    assert "dataset.download=true" in str(info.value)


def test_download_then_load(tmp_path: Path, monkeypatch):
    downloads = []

    def fake_download(root, train, download):
        downloads.append(root)
        write_torchvision_cifar(root, "cifar10", 1, 1, seed=5)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_download)
    root = tmp_path / "dl"
    check_dataset_source("cifar10", root, download=True)
    assert len(load_cifar("cifar10", root, "train", download=True)) == 10
    assert downloads == [str(root)]  # found locally the second time


def test_wrong_class_count(tiny_cifar10_imagefolder: Path, tmp_path: Path, tiny_cifar10_targz):
    tree = tmp_path / "tree"
    shutil.copytree(tiny_cifar10_imagefolder, tree)
    shutil.rmtree(tree / "train" / "truck")
    with pytest.raises(DatasetError, match=r"has 9 classes .* but cifar10 has 10"):
        load_cifar("cifar10", tree, "train")
    with pytest.raises(DatasetError, match="has 9 classes"):
        check_dataset_source("cifar10", tree)
    with pytest.raises(DatasetError, match=r"has 10 classes .* but cifar100 has 100"):
        load_cifar("cifar100", tiny_cifar10_targz, "test")
    with pytest.raises(DatasetError, match="but cifar100 has 100"):
        check_dataset_source("cifar100", tiny_cifar10_targz)


@pytest.mark.parametrize(("size", "mode"), [((28, 28), "RGB"), ((32, 32), "L"), ((32, 32), "RGBA")])
def test_wrong_image_shape(tiny_cifar10_imagefolder: Path, tmp_path: Path, size, mode):
    tree = tmp_path / "tree"
    shutil.copytree(tiny_cifar10_imagefolder, tree)
    bad = sorted((tree / "train" / "airplane").iterdir())[0]
    Image.new(mode, size).save(bad)
    with pytest.raises(DatasetError, match="must be 32x32 RGB"):
        load_cifar("cifar10", tree, "train")
    with pytest.raises(DatasetError, match="must be 32x32 RGB"):
        check_dataset_source("cifar10", tree)  # the first image is the one it samples


def test_undecodable_image(tiny_cifar10_imagefolder: Path, tmp_path: Path):
    tree = tmp_path / "tree"
    shutil.copytree(tiny_cifar10_imagefolder, tree)
    (tree / "test" / "ship" / "zz_broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"cannot decode image .*zz_broken\.png"):
        load_cifar("cifar10", tree, "test")


def _tar_of(path: Path, files: dict[str, bytes]) -> Path:
    import io

    with tarfile.open(path, "w:gz") as archive:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return path


def _png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_archive_layout_errors(tmp_path: Path):
    png = _png()
    two_tops = {f"{top}/train/c{i}/0.png": png for top in ("a", "b") for i in range(10)}
    with pytest.raises(DatasetError, match="unknown layout"):
        load_cifar("cifar10", _tar_of(tmp_path / "two_tops.tar.gz", two_tops), "train")
    too_deep = {f"x/y/train/c{i}/0.png": png for i in range(10)}
    with pytest.raises(DatasetError, match="no images under"):
        load_cifar("cifar10", _tar_of(tmp_path / "deep.tar.gz", too_deep), "train")
    train_only = {f"train/c{i}/0.png": png for i in range(10)}
    train_only_path = _tar_of(tmp_path / "train_only.tar.gz", train_only)
    assert len(load_cifar("cifar10", train_only_path, "train")) == 10
    with pytest.raises(DatasetError, match=r"no images under \[top/\]test/"):
        check_dataset_source("cifar10", train_only_path)
    (tmp_path / "not_an_archive.zip").write_bytes(b"zip")
    with pytest.raises(DatasetError, match="not an archive"):
        load_cifar("cifar10", tmp_path / "not_an_archive.zip", "train")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(DatasetError, match="cannot read archive"):
        load_cifar("cifar10", tmp_path / "broken.tar.gz", "train")


def test_incomplete_torchvision_folder(tiny_cifar10_torchvision: Path, tmp_path: Path):
    root = tmp_path / "tv"
    shutil.copytree(tiny_cifar10_torchvision, root)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert len(load_cifar("cifar10", root, "test")) == 10 * TINY_CIFAR10_TEST_PER_CLASS
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        load_cifar("cifar10", root, "train")
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        check_dataset_source("cifar10", root)


def test_unknown_name_or_split(tiny_cifar10_targz: Path):
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_cifar("mnist", tiny_cifar10_targz, "train")
    with pytest.raises(DatasetError, match="unknown split"):
        load_cifar("cifar10", tiny_cifar10_targz, "val")


def test_check_dataset_source_decodes_nothing(
    request, monkeypatch, tiny_cifar10_targz, tiny_cifar100_targz
):
    def refuse(*args, **kwargs):
        raise AssertionError("check_dataset_source must not decode the dataset")

    monkeypatch.setattr(cifar, "_decode_split", refuse)
    for fixture in ("tiny_cifar10_torchvision", "tiny_cifar10_imagefolder"):
        check_dataset_source("cifar10", request.getfixturevalue(fixture), download=False)
    check_dataset_source("cifar10", tiny_cifar10_targz)
    check_dataset_source("cifar100", tiny_cifar100_targz)


# ------------------------------------------------------------------------------------------
# Subsets


def _dataset(labels: list[int], num_classes: int) -> ArrayDataset:
    n = len(labels)
    images = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8)
    images = images.view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    return ArrayDataset(images, torch.tensor(labels), [f"c{i}" for i in range(num_classes)])


def test_class_balanced_subset_counts_and_determinism(tiny_cifar10_torchvision: Path):
    train = load_cifar("cifar10", tiny_cifar10_torchvision, "train")
    subset = class_balanced_subset(train, 50, seed=1)
    assert torch.bincount(subset.labels, minlength=10).tolist() == [5] * 10
    again = class_balanced_subset(train, 50, seed=1)
    other = class_balanced_subset(train, 50, seed=2)
    assert torch.equal(subset.images, again.images) and torch.equal(subset.labels, again.labels)
    assert not torch.equal(subset.images, other.images)
    uneven = class_balanced_subset(train, 53, seed=1)
    assert torch.bincount(uneven.labels, minlength=10).tolist() == [6, 6, 6] + [5] * 7
    assert uneven.classes == train.classes


def test_class_balanced_subset_picks_real_samples():
    data = _dataset([i % 4 for i in range(40)], 4)
    subset = class_balanced_subset(data, 8, seed=0)
    ids = subset.images[:, 0, 0, 0].long()  # image i is filled with the value i
    assert torch.equal(data.labels[ids], subset.labels)
    assert len(set(ids.tolist())) == 8


def test_class_balanced_subset_errors():
    data = _dataset([0] * 10 + [1] * 3, 2)
    with pytest.raises(ValueError, match="exceeds"):
        class_balanced_subset(data, 14, seed=0)
    with pytest.raises(ValueError, match="fewer than the 2 classes"):
        class_balanced_subset(data, 1, seed=0)
    with pytest.raises(ValueError, match="class 1 has 3 samples, 4 needed"):
        class_balanced_subset(data, 8, seed=0)
    assert len(class_balanced_subset(data, 6, seed=0)) == 6


def test_split_validation_is_disjoint_balanced_and_seeded():
    data = _dataset([i % 5 for i in range(100)], 5)
    train, val = split_validation(data, 15, seed=4)
    assert len(train) == 85 and len(val) == 15
    assert torch.bincount(val.labels, minlength=5).tolist() == [3] * 5
    train_ids = set(train.images[:, 0, 0, 0].tolist())
    val_ids = set(val.images[:, 0, 0, 0].tolist())
    assert not train_ids & val_ids and len(train_ids | val_ids) == 100
    again_train, again_val = split_validation(data, 15, seed=4)
    assert torch.equal(again_val.images, val.images) and torch.equal(
        again_train.labels, train.labels
    )
    _, other_val = split_validation(data, 15, seed=5)
    assert not torch.equal(other_val.images, val.images)
    with pytest.raises(ValueError):
        split_validation(data, 100, seed=0)


# ------------------------------------------------------------------------------------------
# DeviceLoader


def _indexed_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
    return images, torch.arange(n)  # label = index, to identify samples


def _collect(loader: DeviceLoader, epoch: int, stream: int = 0):
    batches = list(loader.epoch(epoch, stream))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]), batches


def test_loader_covers_every_sample_once(tmp_path):
    images, labels = _indexed_images(53)
    loader = DeviceLoader(images, labels, 10, shuffle=True, augment="none", seed=3)
    assert len(loader) == 6 and loader.num_samples == 53
    x, y, batches = _collect(loader, epoch=0)
    assert [len(b[1]) for b in batches] == [10] * 5 + [3]
    assert sorted(y.tolist()) == list(range(53))
    assert not torch.equal(y, labels)  # shuffled
    assert torch.allclose(x, normalize(images[y]))  # each image travels with its label
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (53, 3, 32, 32)


def test_loader_drop_last_and_no_shuffle():
    images, labels = _indexed_images(53)
    loader = DeviceLoader(images, labels, 10, shuffle=False, drop_last=True)
    assert len(loader) == 5
    _, y, batches = _collect(loader, epoch=7)
    assert len(batches) == 5 and torch.equal(y, labels[:50])


@pytest.mark.parametrize("augment", ["none", "paper"])
def test_loader_channels_last_changes_the_layout_not_the_values(augment):
    images, labels = _indexed_images(40)

    def batches(channels_last: bool):
        loader = DeviceLoader(
            images, labels, 16, shuffle=True, augment=augment, seed=2, channels_last=channels_last
        )
        return list(loader.epoch(1))

    for (x, y), (x_nhwc, y_nhwc) in zip(batches(False), batches(True), strict=True):
        assert torch.equal(x, x_nhwc) and torch.equal(y, y_nhwc)
        assert x_nhwc.is_contiguous(memory_format=torch.channels_last)
        assert not x_nhwc.is_contiguous() and x.is_contiguous()


def test_loader_rejects_bad_arguments():
    images, labels = _indexed_images(4)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(images, labels, 0, shuffle=True)
    with pytest.raises(ValueError, match="augment"):
        DeviceLoader(images, labels, 2, shuffle=True, augment="heavy")
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), labels, 2, shuffle=True)


@pytest.mark.parametrize("augment", ["none", "flip_crop", "paper"])
def test_loader_is_a_function_of_seed_epoch_stream(augment):
    images, labels = _indexed_images(40)

    def run(seed: int, epoch: int, stream: int = 0):
        loader = DeviceLoader(images, labels, 16, shuffle=True, augment=augment, seed=seed)
        x, y, _ = _collect(loader, epoch, stream)
        return x, y

    x, y = run(seed=1, epoch=3)
    x_again, y_again = run(seed=1, epoch=3)
    assert torch.equal(x, x_again) and torch.equal(y, y_again)
    for other in (run(1, 4), run(1, 3, stream=1), run(2, 3)):
        assert not torch.equal(other[1], y)
    # The stream of the lr search leaves the training stream untouched.
    loader = DeviceLoader(images, labels, 16, shuffle=True, augment=augment, seed=1)
    list(loader.epoch(3, stream=1))
    assert torch.equal(_collect(loader, 3)[0], x)


def test_loader_assembles_batches_single_threaded_and_restores_threads(monkeypatch):
    images, labels = _indexed_images(18)
    seen_threads: list[int] = []
    real_augment = loader_module.augment_batch

    def spying_augment(*args, **kwargs):
        seen_threads.append(torch.get_num_threads())
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(loader_module, "augment_batch", spying_augment)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loader = DeviceLoader(images, labels, 6, shuffle=True, augment="paper", seed=1)
        batches = []
        for batch in loader.epoch(0):
            assert torch.get_num_threads() == 2  # the consumer keeps its threads
            batches.append(batch)
        assert seen_threads == [1, 1, 1]
        untouched = DeviceLoader(
            images, labels, 6, shuffle=True, augment="paper", seed=1, augment_threads=None
        )
        for (x, y), (x_other, y_other) in zip(batches, untouched.epoch(0), strict=True):
            assert torch.equal(x, x_other) and torch.equal(y, y_other)
        assert seen_threads[3:] == [2, 2, 2]
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(ValueError, match="augment_threads"):
        DeviceLoader(images, labels, 16, shuffle=True, augment_threads=0)


def test_loader_from_dataset(tiny_cifar10_torchvision: Path):
    test = load_cifar("cifar10", tiny_cifar10_torchvision, "test")
    loader = DeviceLoader.from_dataset(test, 16, shuffle=False)
    x, y, _ = _collect(loader, 0)
    assert torch.equal(y, test.labels) and torch.allclose(x, normalize(test.images))


# ------------------------------------------------------------------------------------------
# Augmentation


def test_none_is_plain_normalisation():
    images, _ = _indexed_images(5)
    out = augment_batch(images, "none", torch.Generator().manual_seed(0))
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    assert torch.allclose(out, (images.float() / 255 - mean) / std, atol=1e-6)
    reference = torch.stack([TF.normalize(TF.to_tensor(TF.to_pil_image(i)), CIFAR_MEAN, CIFAR_STD)
                             for i in images])  # fmt: skip
    assert torch.allclose(out, reference, atol=1e-5)


@pytest.mark.parametrize("mode", ["flip_crop", "paper"])
def test_augmentation_varies_per_image(mode):
    generator = torch.Generator().manual_seed(0)
    image, _ = _indexed_images(1)
    batch = image.expand(64, 3, 32, 32).contiguous()
    out = augment_batch(batch, mode, generator)
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
    assert len(distinct) > 32  # 81 crops x 2 flips (x angles, colours for "paper")
    # Augmented values stay inside the normalised image range.
    low = (0 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    high = (1 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    assert (out >= low.view(1, 3, 1, 1) - 1e-5).all() and (
        out <= high.view(1, 3, 1, 1) + 1e-5
    ).all()


def test_crop_and_flip_with_fixed_params():
    images, _ = _indexed_images(6)
    center = torch.full((6,), 4)
    no_flip = torch.zeros(6, dtype=torch.bool)
    assert torch.equal(aug.crop_and_flip(images, center, center, no_flip), images)
    flipped = aug.crop_and_flip(images, center, center, ~no_flip)
    assert torch.equal(flipped, images.flip(3))
    top = torch.tensor([0, 8, 3, 4, 1, 7])
    left = torch.tensor([8, 0, 5, 2, 4, 6])
    flip = torch.tensor([False, True, True, False, True, False])
    ours = aug.crop_and_flip(images, top, left, flip)
    for i in range(6):  # torchvision: zero pad 4, crop, flip
        expected = TF.crop(TF.pad(images[i], [4]), int(top[i]), int(left[i]), 32, 32)
        expected = TF.hflip(expected) if flip[i] else expected
        assert torch.equal(ours[i], expected)
    assert (ours[0, :, :4, :] == 0).all() and (ours[0, :, :, -4:] == 0).all()


def test_rotation_matches_torchvision_nearest():
    images, _ = _indexed_images(4)
    unit = images.float() / 255
    assert torch.equal(aug.rotate(unit, torch.zeros(4)), unit)
    angles = torch.tensor([90.0, 17.0, -23.5, -30.0])
    ours = aug.rotate(unit, angles)
    for i, angle in enumerate(angles.tolist()):
        expected = TF.rotate(unit[i], angle, interpolation=InterpolationMode.NEAREST, fill=0.0)
        mismatch = (ours[i] != expected).float().mean().item()
        assert mismatch < 0.01  # identical but for rare rounding ties
    assert torch.equal(ours[0], torch.rot90(unit[0], 1, dims=(1, 2)))  # counter-clockwise


def _geometry_edge_cases(n: int) -> tuple[torch.Tensor, ...]:
    """Crop offsets at both extremes, both flips, angles 0, the largest drawn (+-30), right
    angles, half-pixel-prone 45 degrees, and angles beyond the drawn range."""
    angles = torch.tensor([0.0, 30.0, -30.0, 90.0, -90.0, 180.0, 45.0, -45.0, 0.5, 270.0, 359.9])
    angles = angles.repeat(-(-n // len(angles)))[:n]
    top = torch.tensor([0, 8, 4, 0, 8]).repeat(-(-n // 5))[:n]
    left = torch.tensor([8, 0, 4, 0, 8, 3, 5]).repeat(-(-n // 7))[:n]
    flip = torch.arange(n) % 3 == 0
    return top, left, flip, angles


def test_fast_geometry_is_the_reference_pixel_for_pixel():
    """crop_flip_rotate (one uint8 gather) == rotate(crop_and_flip(...)), on uint8 images."""
    images, _ = _indexed_images(66, seed=3)
    draws = [_geometry_edge_cases(66)]
    for seed in range(30):  # the draws of training: sample_paper_params
        params = aug.sample_paper_params(66, torch.Generator().manual_seed(seed))
        draws.append((params.top, params.left, params.flip, params.degrees))
    for top, left, flip, degrees in draws:
        fast = aug.crop_flip_rotate(images, top, left, flip, degrees)
        reference = aug.rotate(aug.crop_and_flip(images, top, left, flip), degrees)
        assert fast.dtype == torch.uint8 and torch.equal(fast, reference)
    # The fill is there and only there: a white image is black exactly where it is fill.
    top, left, flip, degrees = draws[0]
    white = torch.full_like(images, 255)
    fill = aug.crop_flip_rotate(white, top, left, flip, degrees) == 0
    reference_fill = aug.rotate(aug.crop_and_flip(white, top, left, flip), degrees) == 0
    assert torch.equal(fill, reference_fill) and 0 < fill.float().mean() < 0.5
    index = aug.crop_flip_rotate_index(top, left, flip, degrees, 32, 32)
    assert index.min() >= 0 and index.max() == 32 * 32  # 32 * 32 = the fill pixel


def test_fast_paper_augment_is_the_reference_in_fp32():
    """The whole paper augmentation, fast vs readable, same draws: the same float batches."""
    images, _ = _indexed_images(50, seed=4)
    for seed in range(8):
        params = aug.sample_paper_params(50, torch.Generator().manual_seed(seed))
        fast = aug.apply_paper_augment(images, params)
        assert fast.dtype == torch.float32
        assert torch.equal(fast, aug.apply_paper_augment_reference(images, params))
        # augment_batch draws these very parameters first from its generator.
        batch = aug.augment_batch(images, "paper", torch.Generator().manual_seed(seed))
        assert torch.equal(batch, aug.normalize(fast))


def test_rotation_rounding_agrees_with_grid_sample():
    """Our nearest-neighbour rounding vs affine_grid + grid_sample (the previous reference):
    the share of pixels read from a different source; rare half-pixel ties at most."""
    generator = torch.Generator().manual_seed(5)
    images = torch.randint(1, 256, (400, 3, 32, 32), generator=generator).float()  # no 0
    degrees = torch.cat([torch.rand(390, generator=generator) * 60 - 30, torch.zeros(10)])
    radians = degrees * (torch.pi / 180)
    cos, sin, zero = torch.cos(radians), torch.sin(radians), torch.zeros(400)
    theta = torch.stack(
        [torch.stack([cos, -sin, zero], dim=1), torch.stack([sin, cos, zero], dim=1)], dim=1
    )
    grid = torch.nn.functional.affine_grid(theta, [400, 3, 32, 32], align_corners=False)
    expected = torch.nn.functional.grid_sample(
        images, grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    ours = aug.rotate(images, degrees)
    different = (ours != expected).any(dim=1).float().mean().item()
    assert different <= 1e-4  # 0 of 4 million pixels where this was written
    assert torch.equal(ours[390:], images[390:])


def test_colour_jitter_identity_and_torchvision_semantics():
    images, _ = _indexed_images(6)
    unit = images.float() / 255
    ones, zeros = torch.ones(6), torch.zeros(6)
    order = torch.stack(
        [torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    )
    assert torch.equal(aug.adjust_brightness(unit, ones), unit)
    assert torch.equal(aug.adjust_contrast(unit, ones), unit)
    assert torch.equal(aug.adjust_saturation(unit, ones), unit)
    assert torch.allclose(aug.adjust_hue(unit, zeros), unit, atol=1e-6)
    assert torch.allclose(aug.color_jitter(unit, ones, ones, ones, zeros, order), unit, atol=1e-6)
    assert not torch.allclose(aug.adjust_hue(unit, torch.full((6,), 0.1)), unit, atol=1e-2)

    factors = {
        aug.BRIGHTNESS_OP: torch.linspace(0.8, 1.2, 6),
        aug.CONTRAST_OP: torch.linspace(1.2, 0.8, 6),
        aug.SATURATION_OP: torch.linspace(0.9, 1.1, 6),
        aug.HUE_OP: torch.linspace(-0.1, 0.1, 6),
    }
    reference_ops = {
        aug.BRIGHTNESS_OP: TF.adjust_brightness,
        aug.CONTRAST_OP: TF.adjust_contrast,
        aug.SATURATION_OP: TF.adjust_saturation,
        aug.HUE_OP: TF.adjust_hue,
    }
    ours = aug.color_jitter(unit, *factors.values(), order)
    for i in range(6):  # per image, torchvision's functional ops in that image's order
        expected = unit[i]
        for op in order[i].tolist():
            expected = reference_ops[op](expected, float(factors[op][i]))
        assert torch.allclose(ours[i], expected, atol=1e-4)


def test_colour_jitter_batched_is_image_by_image():
    """The batched jitter (images regrouped by op at each position) gives exactly the
    numbers of applying each image's ops one after the other to that image alone."""
    generator = torch.Generator().manual_seed(6)
    unit = torch.rand(40, 3, 32, 32, generator=generator)
    unit[0] = 0.5  # grey: hue and saturation without chroma
    params = aug.sample_paper_params(40, generator)
    params.order[:24] = torch.tensor(list(itertools.permutations(range(4))))  # every order
    factors = {
        aug.BRIGHTNESS_OP: params.brightness,
        aug.CONTRAST_OP: params.contrast,
        aug.SATURATION_OP: params.saturation,
        aug.HUE_OP: params.hue,
    }
    batched = aug.color_jitter(unit, *factors.values(), params.order)
    ops = {
        aug.BRIGHTNESS_OP: aug.adjust_brightness,
        aug.CONTRAST_OP: aug.adjust_contrast,
        aug.SATURATION_OP: aug.adjust_saturation,
        aug.HUE_OP: aug.adjust_hue,
    }
    for i in range(40):
        expected = unit[i : i + 1]
        for op in params.order[i].tolist():
            expected = ops[op](expected, factors[op][i : i + 1])
        assert torch.equal(batched[i : i + 1], expected)


def test_hsv_round_trip_and_reference():
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(4, 3, 8, 8, generator=generator)
    rgb[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.5])  # grey
    rgb[0, :, 0, 1] = torch.tensor([1.0, 1.0, 0.0])  # tie between red and green
    rgb[0, :, 0, 2] = 0.0  # black
    hsv = aug.rgb_to_hsv(rgb)
    assert torch.allclose(aug.hsv_to_rgb(hsv), rgb, atol=1e-6)
    pixels = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.tensor([colorsys.rgb_to_hsv(*p.tolist()) for p in pixels])
    assert torch.allclose(hsv.permute(0, 2, 3, 1).reshape(-1, 3), expected, atol=1e-6)


def test_hsv_float_tricks_equal_the_plain_formulas():
    """The comparison-free forms in the HSV code give exactly the plain formulas' numbers."""
    turns = torch.linspace(-1.5, 2.5, 400_001)
    near_whole = torch.tensor([-1.0, 0.0, 1.0, 2.0, 1 / 6, 0.5, 5 / 6])
    turns = torch.cat(
        [turns, near_whole.nextafter(near_whole + 1), near_whole.nextafter(near_whole - 1)]
    )
    assert torch.equal(aug._fraction(turns), torch.remainder(turns, 1.0))
    hue = aug._fraction(turns).view(1, -1, 1)
    saturation, value = torch.rand_like(hue), torch.rand_like(hue)
    phase = torch.tensor(aug._HSV_CHANNEL_PHASE).view(1, 3, 1, 1)
    k = torch.remainder(phase + 6.0 * hue.unsqueeze(1), 6.0)
    plain = value.unsqueeze(1) - value.unsqueeze(1) * saturation.unsqueeze(1) * torch.minimum(
        k, 4.0 - k
    ).clamp(0.0, 1.0)
    assert torch.equal(aug._hsv_planes_to_rgb(hue, saturation, value), plain)
    a, b = torch.rand(2, 100_000).unbind()
    b[::3] = a[::3]  # ties
    assert torch.equal(aug._reaches(torch.minimum(a, b), b), (torch.minimum(a, b) == b).float())


def test_paper_params_ranges():
    params = aug.sample_paper_params(2000, torch.Generator().manual_seed(0))
    assert params.top.min() == 0 and params.top.max() == 8
    assert params.left.min() == 0 and params.left.max() == 8
    assert 0.4 < params.flip.float().mean() < 0.6
    assert params.degrees.abs().max() <= 30 and params.degrees.abs().max() > 20
    assert params.brightness.min() >= 0.8 and params.brightness.max() <= 1.2
    assert params.contrast.min() >= 0.8 and params.contrast.max() <= 1.2
    assert params.saturation.min() >= 0.9 and params.saturation.max() <= 1.1
    assert params.hue.abs().max() <= 0.1
    assert torch.equal(params.order.sort(dim=1).values, torch.arange(4).expand(2000, 4))
    assert len({tuple(row) for row in params.order.tolist()}) == 24  # every order occurs


def test_paper_augment_with_identity_params_is_identity():
    images, _ = _indexed_images(5)
    n = 5
    params = aug.PaperAugmentParams(
        top=torch.full((n,), 4),
        left=torch.full((n,), 4),
        flip=torch.zeros(n, dtype=torch.bool),
        degrees=torch.zeros(n),
        brightness=torch.ones(n),
        contrast=torch.ones(n),
        saturation=torch.ones(n),
        hue=torch.zeros(n),
        order=torch.arange(4).expand(n, 4),
    )
    assert torch.allclose(aug.apply_paper_augment(images, params), images.float() / 255, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Real data


@pytest.mark.real_data
@pytest.mark.slow
def test_real_cifar10_archive_loads_and_caches(monkeypatch):
    archive = REAL_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {archive}")
    check_dataset_source("cifar10", archive)
    train = load_cifar("cifar10", archive, "train")
    test = load_cifar("cifar10", archive, "test")
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.classes == list(CIFAR10_CLASSES) == test.classes
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10

    def refuse(*args, **kwargs):
        raise AssertionError("second load must come from the cache")

    monkeypatch.setattr(cifar, "_decode_split", refuse)
    again = load_cifar("cifar10", archive, "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
