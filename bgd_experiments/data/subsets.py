"""Seeded, class-balanced subsets and validation splits of an :class:`ArrayDataset`."""

from __future__ import annotations

import torch

from bgd_experiments.data.cifar import ArrayDataset


def _per_class_counts(n: int, num_classes: int) -> list[int]:
    # The remainder goes to the lowest labels (one extra image each): deterministic, no seed.
    base, remainder = divmod(n, num_classes)
    return [base + (1 if label < remainder else 0) for label in range(num_classes)]


def class_balanced_indices(
    labels: torch.Tensor, num_classes: int, n: int, seed: int
) -> torch.Tensor:
    """Sorted indices of ``n`` samples, equally many per class, chosen at random by ``seed``.

    When ``n`` is not a multiple of ``num_classes`` the first ``n % num_classes`` labels get
    one image more. Raises ValueError if ``n`` < ``num_classes`` or a class has too few.
    """
    total = int(labels.shape[0])
    if n < num_classes:
        raise ValueError(f"n = {n} is fewer than the {num_classes} classes (need >= 1 per class)")
    if n > total:
        raise ValueError(f"n = {n} exceeds the {total} available samples")
    generator = torch.Generator().manual_seed(int(seed))
    labels_cpu = labels.detach().to("cpu")
    chosen = []
    for label, count in enumerate(_per_class_counts(n, num_classes)):
        members = (labels_cpu == label).nonzero().flatten()
        if members.numel() < count:
            raise ValueError(
                f"class {label} has {members.numel()} samples, {count} needed for n = {n}"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:count]])
    return torch.cat(chosen).sort().values


def class_balanced_subset(dataset: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    """``n`` samples of ``dataset``, class-balanced and seeded (same seed = same subset)."""
    index = class_balanced_indices(dataset.labels, dataset.num_classes, n, seed)
    return dataset.subset(index.to(dataset.labels.device))


def split_validation(
    dataset: ArrayDataset, n_val: int, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """Carve a class-balanced, seeded validation set of ``n_val`` samples out of ``dataset``.

    Returns ``(train, val)``: disjoint, together all of ``dataset``, each in dataset order.
    """
    if n_val >= len(dataset):
        raise ValueError(f"n_val = {n_val} leaves no training samples out of {len(dataset)}")
    val_index = class_balanced_indices(dataset.labels, dataset.num_classes, n_val, seed)
    keep = torch.ones(len(dataset), dtype=torch.bool)
    keep[val_index] = False
    train_index = keep.nonzero().flatten()
    device = dataset.labels.device
    return dataset.subset(train_index.to(device)), dataset.subset(val_index.to(device))
