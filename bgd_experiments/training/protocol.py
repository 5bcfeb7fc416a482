"""The clean protocol's test set: sealed until the final evaluation.

Under ``trainer.protocol=clean`` the epochs are judged on a validation split, the weights of
the best validation epoch are kept, and the test set is evaluated once, on those weights,
after the last epoch. :class:`SealedTestSet` makes that true by construction: every read
before :meth:`SealedTestSet.unseal` raises, so no code path (a plateau rule, a logger, a
report hook) can peek at the test set while the run still takes decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class TestSetSealed(RuntimeError):
    """The clean protocol's test set was read before the final evaluation."""

    __test__ = False


class SealedTestSet(Iterable[Batch]):
    """Test batches that refuse to be read until :meth:`unseal` (the final evaluation).

    ``reads`` counts the reads after unsealing: 1 for a run of the clean protocol.
    """

    __test__ = False  # not a pytest class, whatever its name says

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._batches = batches
        self.sealed = True
        self.reads = 0

    def unseal(self) -> None:
        self.sealed = False

    def __iter__(self) -> Iterator[Batch]:
        if self.sealed:
            raise TestSetSealed(
                "the clean protocol's test set is read once, after the last epoch, on the "
                "weights of the best validation epoch; it cannot be read before"
            )
        self.reads += 1
        return iter(self._batches)
