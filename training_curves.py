"""Training curves: the mean train loss of every epoch and, every n epochs, train and test accuracy.

TrainingCurves is called once per finished epoch during training. Its `record` is the "history" of
results.json, write_csv writes one row per epoch, and an optional TensorBoard writer (made by
tensorboard_writer, which alone imports tensorboard) receives the same numbers as they come. Accuracies
are train_models.accuracy: eval mode, no gradients, the model's mode restored, so recording them leaves
training bit-identical. Nothing here reads the Hydra config: callers pass plain values.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import math
from pathlib import Path

import torch

from atomic_io import atomic_write
from config_utils import ConfigError
from train_models import accuracy

CSV_COLUMNS = ("epoch", "train_loss", "train_accuracy", "test_accuracy")


LOGGERS = ("none", "tensorboard")  # logger= choices; null in configs saved before the key existed


def check_logger(logger: str | None) -> None:
    """ConfigError naming the key for a logger outside LOGGERS, or logger=tensorboard without the
    tensorboard package installed."""
    if logger is not None and logger not in LOGGERS:
        raise ConfigError(f"logger={logger}: allowed: {', '.join(LOGGERS)}")
    if logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logger=tensorboard: the tensorboard package is not installed "
                          "(pip install -r requirements.txt); allowed: none")


def tensorboard_writer(log_dir: Path | str):
    """A torch.utils.tensorboard.SummaryWriter writing event files into log_dir (check_logger first)."""
    check_logger("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


class TrainingCurves:
    """Records the curves of one training run.

    Call start() before the first epoch (accuracies at epoch 0), then curves(epoch, train_loss) after
    each finished epoch (epoch counts from 1, one call per epoch, in order), then finish() (accuracies
    at the last epoch if its cadence missed it; flushes and closes the writer). Accuracies are taken
    every `every` epochs (0: never, losses only), never after an epoch whose loss is not finite.
    `writer` (a SummaryWriter or None) gets train/loss per epoch and accuracy/train, accuracy/test
    when they are measured; the recorder closes it in finish().
    """

    def __init__(self, model: torch.nn.Module, train_x: torch.Tensor, train_y: torch.Tensor,
                 test_x: torch.Tensor, test_y: torch.Tensor, every: int, eval_batch_size: int,
                 writer=None):
        if every < 0:
            raise ValueError(f"every={every}: allowed: an integer >= 0 (0: losses only)")
        self.model, self.every, self.eval_batch_size, self.writer = model, every, eval_batch_size, writer
        self.train_data, self.test_data = (train_x, train_y), (test_x, test_y)
        self.history = {"epoch": [], "train_loss": [], "accuracy_epoch": [], "train_accuracy": [],
                        "test_accuracy": []}

    def _measure(self, epoch: int) -> None:
        train_accuracy = accuracy(self.model, *self.train_data, self.eval_batch_size)
        test_accuracy = accuracy(self.model, *self.test_data, self.eval_batch_size)
        self.history["accuracy_epoch"].append(epoch)
        self.history["train_accuracy"].append(train_accuracy)
        self.history["test_accuracy"].append(test_accuracy)
        if self.writer is not None:
            self.writer.add_scalar("accuracy/train", train_accuracy, epoch)
            self.writer.add_scalar("accuracy/test", test_accuracy, epoch)

    def start(self) -> None:
        """Accuracies of the untrained model (epoch 0), when accuracies are recorded."""
        if self.every > 0:
            self._measure(0)

    def __call__(self, epoch: int, train_loss: float) -> None:
        expected = len(self.history["epoch"]) + 1
        if epoch != expected:
            raise ValueError(f"epoch {epoch}: the curves expect epoch {expected} next")
        train_loss = float(train_loss)
        self.history["epoch"].append(epoch)
        self.history["train_loss"].append(train_loss)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", train_loss, epoch)
        if self.every > 0 and epoch % self.every == 0 and math.isfinite(train_loss):
            self._measure(epoch)

    def finish(self) -> None:
        """Accuracies at the last epoch (if measured at all and not yet taken); close the writer."""
        epochs, losses = self.history["epoch"], self.history["train_loss"]
        if (self.every > 0 and epochs and math.isfinite(losses[-1])
                and self.history["accuracy_epoch"][-1:] != epochs[-1:]):
            self._measure(epochs[-1])
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()

    def accuracies_at(self, epoch: int) -> tuple[float, float] | None:
        """(train, test) accuracy when the last measurement was at `epoch`, else None."""
        if self.history["accuracy_epoch"][-1:] != [epoch]:
            return None
        return self.history["train_accuracy"][-1], self.history["test_accuracy"][-1]

    @property
    def record(self) -> dict:
        """results.json's "history": epoch and train_loss (one entry per epoch), accuracy_epoch and
        train_accuracy, test_accuracy (one entry per measurement; empty lists when every=0)."""
        return {key: list(values) for key, values in self.history.items()}

    def csv_text(self) -> str:
        """One row per epoch (epoch 0 too when measured); empty cells where nothing was measured."""
        rows = {epoch: {"epoch": epoch, "train_loss": loss}
                for epoch, loss in zip(self.history["epoch"], self.history["train_loss"])}
        for epoch, train_accuracy, test_accuracy in zip(self.history["accuracy_epoch"],
                                                        self.history["train_accuracy"],
                                                        self.history["test_accuracy"]):
            rows.setdefault(epoch, {"epoch": epoch}).update(train_accuracy=train_accuracy,
                                                            test_accuracy=test_accuracy)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[epoch] for epoch in sorted(rows))
        return buffer.getvalue()

    def write_csv(self, path: Path | str) -> Path:
        """Write csv_text() to path atomically."""
        text = self.csv_text()
        return atomic_write(path, lambda temporary: temporary.write_text(text))
