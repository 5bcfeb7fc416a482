"""CIFAR data: loading and caching, class-balanced subsets, on-device batched augmentation.

Typical use::

    train = load_cifar("cifar10", "../shared/data/cifar10-jpeg.tar.gz", "train")
    test = load_cifar("cifar10", "../shared/data/cifar10-jpeg.tar.gz", "test")
    loader = DeviceLoader.from_dataset(train, 200, shuffle=True, augment="paper", seed=0,
                                       device="cuda")
    for images, labels in loader.epoch(epoch):
        ...
"""

from bgd_experiments.data.augment import (
    AUGMENT_MODES,
    CIFAR_MEAN,
    CIFAR_STD,
    augment_batch,
    normalize,
)
from bgd_experiments.data.cifar import (
    CACHE_ENV_VAR,
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    NUM_CLASSES,
    ArrayDataset,
    DatasetError,
    check_dataset_source,
    data_identity,
    describe_data,
    load_cifar,
    resolve_cache_dir,
    same_data,
)
from bgd_experiments.data.loader import DeviceLoader, EvalBatches, derive_seed
from bgd_experiments.data.subsets import (
    class_balanced_indices,
    class_balanced_subset,
    split_validation,
)

__all__ = [
    "AUGMENT_MODES",
    "CACHE_ENV_VAR",
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "NUM_CLASSES",
    "ArrayDataset",
    "DatasetError",
    "DeviceLoader",
    "EvalBatches",
    "augment_batch",
    "check_dataset_source",
    "class_balanced_indices",
    "class_balanced_subset",
    "data_identity",
    "derive_seed",
    "describe_data",
    "load_cifar",
    "normalize",
    "resolve_cache_dir",
    "same_data",
    "split_validation",
]
