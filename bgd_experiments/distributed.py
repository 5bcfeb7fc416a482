"""One run on several processes (``torchrun``): the few collective operations the run needs.

Everything else stays single-process code: the loader cuts each global batch into disjoint
shards (:class:`~bgd_experiments.data.DeviceLoader`'s ``shard``), the training step goes
through :class:`torch.nn.parallel.DistributedDataParallel`, and the MBT search reduces its
losses and gradient with a :class:`BatchReducer` passed in (the search itself never imports
``torch.distributed``). Only rank 0 touches the run folder.

The run is distributed when ``torchrun`` (or any launcher) set ``WORLD_SIZE`` > 1 and the
trainer's ``distributed`` setting is ``auto``; ``off`` ignores the variables. Backend: NCCL on
CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on the CPU.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("bgd_experiments")

DISTRIBUTED_MODES = ("auto", "off")
T = TypeVar("T")


def launched_world_size(mode: str = "auto") -> int:
    """The number of processes a launcher started for this run (1 without one, or ``off``)."""
    if mode == "off":
        return 1
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def shard_slice(batch_size: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s part of a global batch of ``batch_size``: contiguous, disjoint, sizes
    differing by at most one (equal when ``world_size`` divides the batch)."""
    base, extra = divmod(batch_size, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class BatchReducer:
    """Count-weighted means over the ranks, for the MBT search (``optim._common.Reducer``).

    Every rank receives the very same reduced bytes (an all-reduce ends with a broadcast of
    each reduced chunk), so decisions taken on reduced values agree on every rank.
    """

    def __init__(self, group: Any = None) -> None:
        self.group = group

    def total(self, count: int) -> int:
        """The sum of ``count`` over the ranks (the global batch size)."""
        tensor = torch.tensor([count], dtype=torch.int64, device=_collective_device(self.group))
        dist.all_reduce(tensor, group=self.group)
        return int(tensor.item())

    def weighted_mean_(self, tensors: Sequence[torch.Tensor], weight: float) -> None:
        """Replace each tensor, in place, by the sum over ranks of ``weight * tensor``
        (``weight`` = local count / global count: the mean over the global batch).

        One all-reduce per dtype: the tensors are packed into one flat buffer."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            if weight == 0.0:  # an empty shard: its mean is NaN, its contribution nothing
                flat.zero_()
            elif weight != 1.0:
                flat.mul_(weight)
            dist.all_reduce(flat, group=self.group)
            offset = 0
            for tensor in group:
                count = tensor.numel()
                tensor.copy_(flat[offset : offset + count].view_as(tensor))
                offset += count


def _collective_device(group: Any = None) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a distributed run (``world_size`` 1: a plain single run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def device(self, requested: torch.device) -> torch.device:
        """Each rank's own GPU (``cuda:LOCAL_RANK``) when the run trains on CUDA."""
        if self.active and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def reducer(self) -> BatchReducer | None:
        return BatchReducer() if self.active else None

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (nothing to do on one rank)."""
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics): without
        SyncBatchNorm each rank's statistics follow its own shards."""
        if not self.active:
            return
        buffers = [buffer for buffer in model.buffers() if buffer.numel()]
        for buffer in buffers:
            dist.broadcast(buffer, src=0)

    def on_main(self, decide: Callable[[], T]) -> T:
        """Run ``decide`` on rank 0 only and hand its result to every rank; when it raises,
        every other rank raises :class:`RankZeroFailed` with its message (no rank hangs)."""
        if not self.active:
            return decide()
        payload: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                payload[0] = ("ok", decide())
            except Exception as caught:
                error = caught
                payload[0] = ("error", f"{type(caught).__name__}: {caught}")
        dist.broadcast_object_list(payload, src=0)
        if error is not None:
            raise error
        kind, value = payload[0]
        if kind == "error":
            raise RankZeroFailed(f"rank 0 stopped the run: {value}")
        return value

    def close(self) -> None:
        """Leave the process group now (else it is left when the process exits)."""
        if self.active:
            _leave()


SINGLE = Ranks()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class RankZeroFailed(RuntimeError):
    """Raised on ranks > 0 when rank 0 refused or failed a step the run needs."""


def start(mode: str, requested_device: torch.device) -> Ranks:
    """Join the process group a launcher prepared (``torchrun`` sets RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR/PORT); :data:`SINGLE` when there is none or ``mode`` is off."""
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be one of {DISTRIBUTED_MODES}, got {mode!r}")
    world_size = launched_world_size(mode)
    if world_size == 1:
        return SINGLE
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if requested_device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # Once per process, kept for every job of a sweep (``-m``): a second group over
        # torchrun's store would read the first one's stale addresses.
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        atexit.register(_leave)
    if rank != 0:
        # One voice in the terminal: the other ranks only speak up when something is wrong.
        logging.getLogger("bgd_experiments").setLevel(logging.WARNING)
    log.info("distributed run: %d ranks, backend %s", world_size, backend)
    return Ranks(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)
