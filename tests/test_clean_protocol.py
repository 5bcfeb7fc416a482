"""The clean protocol: validation drives the run, the test set is read once at the end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bgd_experiments.data import DeviceLoader
from bgd_experiments.io import read_json, read_jsonl
from bgd_experiments.training import SealedTestSet, TestSetSealed, evaluate
from tests.test_training import Reiterable, fit_quietly, tiny_problem


def validation_set(samples: int = 48) -> Reiterable:
    """Images of the tiny problem's kind, drawn apart from its training/test images."""
    generator = torch.Generator().manual_seed(7)
    labels = torch.arange(samples) % 4
    images = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8, generator=generator)
    images[:, 0] = (labels * 60).to(torch.uint8)[:, None, None]
    return Reiterable(DeviceLoader(images, labels, 16, shuffle=False))


class RecordedReads:
    """Test batches that note how many epochs had ended at each read."""

    def __init__(self, batches, epochs_ended: list[int]) -> None:
        self.batches, self.epochs_ended, self.reads_after = batches, epochs_ended, []

    def __iter__(self):
        self.reads_after.append(len(self.epochs_ended))
        return iter(self.batches)


class EpochCounter:
    def __init__(self) -> None:
        self.ended: list[int] = []

    def after_epoch(self, end) -> None:
        self.ended.append(end.epoch + 1)


def clean_fit(run_dir, epochs: int, test_batches, callbacks=(), lr: float = 0.05):
    model, train, _ = tiny_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    summary = fit_quietly(
        model,
        optimizer,
        train,
        test_batches,
        run_dir,
        epochs,
        val_loader=validation_set(),
        callbacks=callbacks,
    )
    return model, summary


def test_a_sealed_test_set_refuses_every_read_until_unsealed():
    sealed = SealedTestSet([(torch.zeros(1), torch.zeros(1))])
    with pytest.raises(TestSetSealed, match="cannot be read before"):
        iter(sealed)
    with pytest.raises(TestSetSealed):
        list(sealed)
    assert sealed.reads == 0
    sealed.unseal()
    assert len(list(sealed)) == 1 and sealed.reads == 1


def test_the_clean_protocol_reads_the_test_set_once_after_the_last_epoch(tmp_path):
    counter = EpochCounter()
    test = RecordedReads(Reiterable(tiny_problem()[2]), counter.ended)
    _, summary = clean_fit(tmp_path, 3, test, callbacks=[counter])
    assert counter.ended == [1, 2, 3]
    assert test.reads_after == [3]  # one read, when all 3 epochs had ended
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert all("val_acc" in r and "test_acc" not in r and "test_loss" not in r for r in records)
    assert summary["protocol"] == "clean" and summary["best_test_acc"] is None
    best = max(records, key=lambda r: r["val_acc"])
    assert (summary["best_val_epoch"], summary["best_val_acc"]) == (best["epoch"], best["val_acc"])
    assert summary == read_json(tmp_path / "summary.json")


def test_the_one_test_read_is_of_the_best_validation_weights(tmp_path):
    test = Reiterable(tiny_problem()[2])
    model, summary = clean_fit(tmp_path / "long", 4, test)
    best_epoch = summary["best_val_epoch"]
    assert best_epoch < 4  # (validation accuracy 44, 50, 25, 25: the final weights are worse)
    # The same run stopped at its best validation epoch has those weights as its last ones.
    short_model, _ = clean_fit(tmp_path / "short", best_epoch, test)
    loss, accuracy, _ = evaluate(short_model, nn.CrossEntropyLoss(), test)
    assert summary["test_acc_at_best_val"] == accuracy
    assert summary["test_loss_at_best_val"] == pytest.approx(loss, rel=1e-6)
    # fit leaves the model with its final weights (the checkpoint's), not the best ones.
    final = torch.load(tmp_path / "long" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())
    assert evaluate(model, nn.CrossEntropyLoss(), test)[1] != accuracy


def test_a_resumed_clean_run_keeps_its_best_validation_weights(tmp_path):
    test = Reiterable(tiny_problem()[2])
    _, straight = clean_fit(tmp_path / "straight", 4, test)
    clean_fit(tmp_path / "resumed", 2, test)
    (tmp_path / "resumed" / "summary.json").unlink()  # as if killed after epoch 2
    _, resumed = clean_fit(tmp_path / "resumed", 4, test)
    for key in ("best_val_epoch", "best_val_acc", "test_acc_at_best_val"):
        assert resumed[key] == straight[key], key
