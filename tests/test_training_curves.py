"""Training curves: the recorder's history and CSV, training.png, TensorBoard event files, the config
keys (valid values, unchanged run identities) and that recording leaves training bit-identical."""
from __future__ import annotations

import csv
import io
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from config_utils import ConfigError, identity_hash, run_identity
from experiment import validate_config
from models import MLP
from plotting import save_training_figure
from tests.conftest import REPO_ROOT
from train_models import accuracy
from training_curves import CSV_COLUMNS, TrainingCurves, tensorboard_writer

# identity_hash of the default config, taken before the curve keys existed (commit fd2ed9f).
DEFAULT_IDENTITY_HASH = "306a91a2"
EVAL_BATCH = 7  # smaller than the splits, so accuracy runs over several chunks


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as runs use (threads: 1): on a busy 2-core machine two threads make these
    tiny BatchNorm forwards 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_problem(seed: int = 0):
    """A 2-hidden-block MLP with BatchNorm and 3-class Gaussian data: 40 train, 30 test samples."""
    generator = torch.Generator().manual_seed(seed)
    train_x, test_x = torch.randn(40, 6, generator=generator), torch.randn(30, 6, generator=generator)
    train_y, test_y = torch.arange(40) % 3, torch.arange(30) % 3
    torch.manual_seed(seed)
    return MLP((6,), 3, layer_num=2, hidden_size=8), train_x, train_y, test_x, test_y


def train_epochs(model, train_x, train_y, epochs: int, after_epoch) -> None:
    """Plain minibatch gradient descent (no torch.optim: its first use imports torch._dynamo, seconds);
    after_epoch(epoch, mean_loss) after each epoch (epoch from 1)."""
    generator = torch.Generator().manual_seed(1)
    model.train()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for index in torch.randperm(40, generator=generator).split(10):
            loss = F.cross_entropy(model(train_x[index]), train_y[index])
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter -= 0.1 * parameter.grad
            total += float(loss.detach()) * index.numel()
        after_epoch(epoch, total / 40)


def recorded_run(epochs: int = 5, every: int = 2, writer=None):
    """(curves, direct) of a tiny training run: the recorder's curves and, at the epochs where it
    should measure, the losses and accuracies computed here with train_models.accuracy."""
    model, train_x, train_y, test_x, test_y = tiny_problem()
    curves = TrainingCurves(model, train_x, train_y, test_x, test_y, every=every,
                            eval_batch_size=EVAL_BATCH, writer=writer)
    direct = {"losses": [], "accuracies": {}}

    def measure_directly(epoch: int) -> None:
        direct["accuracies"][epoch] = (accuracy(model, train_x, train_y, EVAL_BATCH),
                                       accuracy(model, test_x, test_y, EVAL_BATCH))

    measure_directly(0)
    curves.start()

    def after_epoch(epoch: int, loss: float) -> None:
        direct["losses"].append(loss)
        if epoch % 2 == 0 or epoch == epochs:
            measure_directly(epoch)
        assert model.training
        curves(epoch, loss)
        assert model.training, "the recorder must restore train mode"

    train_epochs(model, train_x, train_y, epochs, after_epoch)
    curves.finish()
    return curves, direct


def test_record_keys_lengths_and_values_match_direct_accuracy():
    curves, direct = recorded_run(epochs=5, every=2)
    record = curves.record
    assert list(record) == ["epoch", "train_loss", "accuracy_epoch", "train_accuracy", "test_accuracy"]
    assert record["epoch"] == [1, 2, 3, 4, 5]
    assert record["train_loss"] == direct["losses"]
    assert record["accuracy_epoch"] == [0, 2, 4, 5]  # start, every 2, and the last epoch by finish()
    assert record["train_accuracy"] == [direct["accuracies"][e][0] for e in (0, 2, 4, 5)]
    assert record["test_accuracy"] == [direct["accuracies"][e][1] for e in (0, 2, 4, 5)]
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in record["train_accuracy"] + record["test_accuracy"])
    assert record["train_accuracy"][-1] > record["train_accuracy"][0]  # it learned something


def test_last_epoch_on_the_cadence_is_measured_once_and_every_zero_records_losses_only():
    curves, _ = recorded_run(epochs=4, every=2)
    assert curves.record["accuracy_epoch"] == [0, 2, 4]
    curves, direct = recorded_run(epochs=3, every=0)
    assert curves.record == {"epoch": [1, 2, 3], "train_loss": direct["losses"], "accuracy_epoch": [],
                             "train_accuracy": [], "test_accuracy": []}


def test_record_is_a_copy_and_epochs_must_come_in_order():
    model, *data = tiny_problem()
    curves = TrainingCurves(model, *data, every=1, eval_batch_size=EVAL_BATCH)
    curves(1, 0.5)
    curves.record["epoch"].append(99)
    assert curves.record["epoch"] == [1]
    with pytest.raises(ValueError, match="epoch 3: the curves expect epoch 2"):
        curves(3, 0.4)
    with pytest.raises(ValueError, match="every=-1"):
        TrainingCurves(model, *data, every=-1, eval_batch_size=EVAL_BATCH)


def test_a_non_finite_loss_gets_no_accuracy():
    model, *data = tiny_problem()
    curves = TrainingCurves(model, *data, every=1, eval_batch_size=EVAL_BATCH)
    curves(1, 0.5)
    curves(2, math.nan)
    curves.finish()
    assert curves.record["accuracy_epoch"] == [1]
    assert math.isnan(curves.record["train_loss"][1])


def test_model_mode_is_restored_in_eval_mode_too():
    model, *data = tiny_problem()
    model.eval()
    curves = TrainingCurves(model, *data, every=1, eval_batch_size=EVAL_BATCH)
    curves.start()
    curves(1, 0.5)
    curves.finish()
    assert not model.training and not any(module.training for module in model.modules())


def test_recording_every_epoch_leaves_training_bit_identical():
    def final_state(record: bool):
        model, train_x, train_y, test_x, test_y = tiny_problem()
        curves = TrainingCurves(model, train_x, train_y, test_x, test_y, every=1, eval_batch_size=EVAL_BATCH)
        losses = []

        def after_epoch(epoch: int, loss: float) -> None:
            losses.append(loss)
            if record:
                curves(epoch, loss)

        if record:
            curves.start()
        train_epochs(model, train_x, train_y, 4, after_epoch)
        if record:
            curves.finish()
            assert curves.record["accuracy_epoch"] == [0, 1, 2, 3, 4]
        return losses, model.state_dict()

    plain_losses, plain_state = final_state(record=False)
    recorded_losses, recorded_state = final_state(record=True)
    assert recorded_losses == plain_losses
    assert plain_state.keys() == recorded_state.keys()
    assert all(torch.equal(plain_state[key], recorded_state[key]) for key in plain_state)  # BN stats too


def test_csv_has_one_row_per_epoch_with_empty_cells_where_not_measured(tmp_path):
    curves, direct = recorded_run(epochs=5, every=2)
    path = curves.write_csv(tmp_path / "curves" / "training_curves.csv")
    text = path.read_text()
    assert text.splitlines()[0] == "epoch,train_loss,train_accuracy,test_accuracy"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    assert rows[0]["train_loss"] == ""  # epoch 0: accuracies only
    assert [float(row["train_loss"]) for row in rows[1:]] == direct["losses"]  # exact round trip
    for row in rows:
        measured = int(row["epoch"]) in (0, 2, 4, 5)
        assert (row["train_accuracy"] != "") == measured and (row["test_accuracy"] != "") == measured
    assert float(rows[2]["test_accuracy"]) == direct["accuracies"][2][1]
    assert [p.name for p in path.parent.iterdir()] == ["training_curves.csv"]  # no temporary left


def test_training_figure_is_written(tmp_path):
    curves, _ = recorded_run(epochs=5, every=2)
    path = tmp_path / "training.png"
    save_training_figure(curves.record, "tiny MLP", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    # results.json before the curves: no accuracy keys; losses only; "nan" strings from atomic_io
    save_training_figure({"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, "nan"]}, "old", tmp_path / "old.png")
    assert (tmp_path / "old.png").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png", "training.png"]


def test_tensorboard_events_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves, direct = recorded_run(epochs=5, every=2, writer=tensorboard_writer(tmp_path / "tb"))
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    accumulator = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert sorted(accumulator.Tags()["scalars"]) == ["accuracy/test", "accuracy/train", "train/loss"]
    loss = accumulator.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5]
    assert [e.value for e in loss] == pytest.approx(direct["losses"], rel=1e-6)  # stored as float32
    test = accumulator.Scalars("accuracy/test")
    assert [e.step for e in test] == [0, 2, 4, 5]
    assert [e.value for e in test] == pytest.approx(curves.record["test_accuracy"], rel=1e-6)


def test_tensorboard_is_imported_only_by_the_writer_factory():
    script = ("import sys, training_curves; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorboard' "
              "or m.startswith('torch.utils.tensorboard')))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_missing_tensorboard_is_a_one_line_config_error(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else find_spec(name, *args))
    with pytest.raises(ConfigError) as error:
        tensorboard_writer(tmp_path / "tb")
    assert str(error.value).startswith("logger=tensorboard: the tensorboard package is not installed")
    assert str(error.value).endswith("allowed: none") and "\n" not in str(error.value)
    assert not (tmp_path / "tb").exists()


def test_curve_keys_do_not_change_run_identities(compose):
    default = compose()
    assert identity_hash(default) == DEFAULT_IDENTITY_HASH
    assert (default.curves_every_n_epochs, default.logger) == (0, "none")
    changed = compose("curves_every_n_epochs=10", "logger=tensorboard")
    assert identity_hash(changed) == DEFAULT_IDENTITY_HASH
    assert "curves_every_n_epochs" not in run_identity(changed) and "logger" not in run_identity(changed)


@pytest.mark.parametrize("override, message", [
    ("curves_every_n_epochs=-1", "curves_every_n_epochs=-1: allowed: an integer >= 0 (0: losses only)"),
    ("curves_every_n_epochs=2.5", "curves_every_n_epochs=2.5: allowed: an integer >= 0"),
    ("logger=wandb", "logger=wandb: allowed: none, tensorboard"),
])
def test_invalid_curve_keys_are_refused(compose, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(compose(override), output_keys=())


def test_configs_saved_before_the_curve_keys_still_validate(compose):
    """reanalyze.py validates the config stored in a checkpoint, which may predate these keys."""
    config = OmegaConf.to_container(compose(), resolve=True)
    del config["curves_every_n_epochs"], config["logger"]
    validate_config(OmegaConf.create(config), output_keys=())
    validate_config(compose("curves_every_n_epochs=50", "logger=tensorboard"), output_keys=())
