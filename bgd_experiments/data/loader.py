"""A data loader that keeps the whole dataset on the training device as uint8.

CIFAR is 150 MB as uint8, so it fits on any GPU: batches are indexed and augmented there,
with no worker processes and no host-to-device copies per batch. Each epoch's order and
augmentation are a pure function of (seed, epoch, stream), so resuming a run needs no saved
data-RNG state, and a second stream (the learning-rate search) draws its own batches
without disturbing the training stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bgd_experiments.data.augment import AUGMENT_MODES, augment_batch
from bgd_experiments.data.cifar import ArrayDataset
from bgd_experiments.distributed import shard_slice


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch, stream); nearby inputs give unrelated seeds."""
    digest = hashlib.sha256(f"bgd-data:{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextmanager
def intra_op_threads(count: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with ``count`` CPU intra-op threads (None or a non-CPU device: as is)."""
    previous = torch.get_num_threads()
    if count is None or device.type != "cpu" or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class DeviceLoader:
    """Batches of normalised float32 NCHW images and int64 labels, on ``device``.

    ``augment`` is one of "none", "flip_crop", "paper" (see :mod:`augment`). With
    ``shuffle=False`` the order is the dataset order (augmentation, if any, still random).
    ``channels_last`` lays the image batches out as NHWC in memory (same values and shape),
    the layout a model converted with ``model.to(memory_format=torch.channels_last)`` wants.

    ``augment_threads``: CPU intra-op threads while a batch is assembled (default 1; None:
    torch's setting). A batch is many small element-wise passes over 200 images; split over
    threads they gain little, and on a busy machine each pass's thread barrier waits for a
    descheduled thread (measured: 2 threads 5-40x slower than 1 with a background job on
    both cores). The threads count is restored before each batch is handed out, so the
    model's steps keep theirs. Each of the authors' DataLoader workers also runs 1 thread.

    ``shard`` = (rank, world_size): one process of a distributed run. Every process keeps
    the whole dataset and draws the same order and augmentation; each yields only its
    slice of every global batch of ``batch_size`` (``distributed.shard_slice``), so the
    slices of all processes together are exactly the single-process batches.
    ``num_samples`` and ``len`` stay those of the whole dataset and of the global batches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        augment: str = "none",
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        channels_last: bool = False,
        augment_threads: int | None = 1,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        rank, world_size = shard
        if not 0 <= rank < world_size:
            raise ValueError(
                f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if augment not in AUGMENT_MODES:
            raise ValueError(f"unknown augment mode {augment!r}; expected one of {AUGMENT_MODES}")
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must be (N,) with N = {images.shape[0]}, got {tuple(labels.shape)}"
            )
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.drop_last = drop_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if augment_threads is not None and augment_threads < 1:
            raise ValueError(f"augment_threads must be >= 1 or None, got {augment_threads}")
        self.augment_threads = augment_threads
        self.shard = (int(rank), int(world_size))

    @classmethod
    def from_dataset(cls, dataset: ArrayDataset, batch_size: int, **kwargs) -> DeviceLoader:
        """Same as the constructor, with images/labels taken from ``dataset``."""
        return cls(dataset.images, dataset.labels, batch_size, **kwargs)

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def epoch(self, epoch: int, stream: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch, a deterministic function of (seed, epoch, stream)."""
        generator = torch.Generator()  # CPU: the same numbers whatever the device
        generator.manual_seed(derive_seed(self.seed, epoch, stream))
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        order = order.to(self.device, non_blocking=True)
        rank, world_size = self.shard
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            shard = None
            if world_size > 1:
                keep = shard_slice(int(index.shape[0]), rank, world_size)
                shard = (int(index.shape[0]), keep)
                index = index[keep]
            with intra_op_threads(self.augment_threads, self.device):
                images = augment_batch(
                    self.images.index_select(0, index), self.augment, generator, shard=shard
                )
                images = images.contiguous(memory_format=self.memory_format)
                labels = self.labels.index_select(0, index)
            yield images, labels


class EvalBatches:
    """Re-iterable view of a loader's fixed, un-augmented order (for evaluation)."""

    def __init__(self, loader: DeviceLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.loader.epoch(0)
