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


class PaperProtocol:
    """The paper's protocol: the test set is evaluated after every epoch and drives the
    plateau rules; the summary reports the best test accuracy over the epochs."""

    def __init__(self, test_batches: Iterable[Batch]) -> None:
        self.test_batches = test_batches

    def evaluate(self, model, loss_fn, ranks, state, epoch: int) -> tuple[dict, float, int]:
        """(record fields, the accuracy the plateau rules see, forward passes)."""
        from bgd_experiments.training.loop import evaluate

        loss, accuracy, forwards = evaluate(model, loss_fn, self.test_batches, ranks)
        return {"test_loss": loss, "test_acc": accuracy}, accuracy, forwards

    def final_read(self, model, loss_fn, state, ranks) -> tuple[float, float] | None:
        return None  # every epoch read the test set already


class CleanProtocol:
    """The clean protocol: the validation split is evaluated after every epoch and drives
    the plateau rules, the weights of the best validation epoch are kept (``state.best_val``,
    checkpointed), and the test set, sealed until then, is read once on those weights."""

    def __init__(self, val_batches: Iterable[Batch], test_batches: Iterable[Batch]) -> None:
        self.val_batches = val_batches
        sealed = isinstance(test_batches, SealedTestSet)
        self.test_batches = test_batches if sealed else SealedTestSet(test_batches)

    def evaluate(self, model, loss_fn, ranks, state, epoch: int) -> tuple[dict, float, int]:
        from bgd_experiments.training.loop import evaluate, weights_copy

        loss, accuracy, forwards = evaluate(model, loss_fn, self.val_batches, ranks)
        if state.best_val is None or accuracy > state.best_val["acc"]:
            # The weights just evaluated (after the eval hooks: e.g. schedule-free's
            # averaged weights with recomputed BatchNorm statistics).
            state.best_val = {"epoch": epoch, "acc": accuracy, "model": weights_copy(model)}
        return {"val_loss": loss, "val_acc": accuracy}, accuracy, forwards

    def final_read(self, model, loss_fn, state, ranks) -> tuple[float, float] | None:
        """(loss, accuracy) of the best validation epoch's weights on the test set; the
        model is left with its final weights (those of the checkpoint)."""
        from bgd_experiments.training.loop import evaluate, weights_copy

        if state.best_val is None:
            return None
        final_weights = weights_copy(model)
        model.load_state_dict(state.best_val["model"])
        self.test_batches.unseal()
        try:
            test_loss, test_acc, _ = evaluate(model, loss_fn, self.test_batches, ranks)
        finally:
            model.load_state_dict(final_weights)
        return test_loss, test_acc
