"""Reliability: bad input stops early and cleanly, divergence is recorded, interruption never leaves
partial files, reruns are deterministic, and concurrent cache builders do not collide."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data import cache_file_name, preprocessing_spec, read_valid_cache
from representation_analysis import profile_fit
from tests.child_processes import default_signals
from tests.test_data import mnist_root  # noqa: F401  (fixture)
from tests.test_end_to_end import ENTRY, REPO_ROOT, results_of, run_cli
from train_models import train

RUN_FILES = ("results.json", "profile.png", "checkpoint.pt")


@pytest.mark.parametrize("override,key", [
    ("layer_num=-1", "layer_num=-1"), ("layer_num=0", "layer_num=0"), ("hidden_size=0", "hidden_size=0"),
    ("lr=0", "lr=0"), ("lr=-0.1", "lr=-0.1"), ("epochs=0", "epochs=0"), ("batch_size=0", "batch_size=0"),
    ("weight_decay=-0.001", "weight_decay=-0.001"), ("measure=entropy", "measure=entropy"),
    ("device=cuda", "device=cuda"), ("analysis.bn_mode=batch", "analysis.bn_mode=batch"),
    ("model=VGG13 layer_num=7", "layer_num=7"), ("model=AlexNet layer_num=11", "layer_num=11"),
    ("model=ResNetMixV2 model.params.block_num=3", "block_num=3"), ("model=FNNSW layer_num=4", "layer_num=4"),
])
def test_invalid_values_stop_before_any_work(tmp_path, override, key):
    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: device=cuda is valid here")
    completed = run_cli(tmp_path, *override.split(), expect_ok=False)
    assert completed.returncode == 2
    error_lines = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and key in error_lines[0] and "allowed" in error_lines[0]
    assert completed.stdout.strip() == ""
    assert list((tmp_path / "logs").glob("*")) == []  # no run directory
    assert not (tmp_path / "figures").exists()


def test_unknown_group_choice_lists_the_options(tmp_path):
    completed = run_cli(tmp_path, "optimization=rmsprop", expect_ok=False)
    assert completed.returncode == 2   # the one line of override_check.py, before Hydra's own message
    assert completed.stderr.startswith("error: optimization=rmsprop: no optimization config of that name; allowed:")
    assert "adam" in completed.stderr and "momentum" in completed.stderr
    assert not (tmp_path / "logs").exists()


def test_offline_dataset_error_names_dataset_places_and_leaves_nothing(tmp_path):
    data_root = tmp_path / "data"
    completed = run_cli(tmp_path, "data=cm", f"data_root={data_root}", "download=false", expect_ok=False)
    assert completed.returncode == 2
    error = completed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: dataset 'mnist' is not available")
    assert str(data_root / "MNIST" / "raw") in error and "/usr/share/datasets/mnist" in error
    assert "Supply the files" in error
    assert list((tmp_path / "logs").glob("*")) == []
    assert not list(data_root.glob("cache/*.pt"))


def test_divergence_is_recorded_and_exits_zero(tmp_path):
    completed = run_cli(tmp_path, "model=GFNNNoBN", "layer_num=3", "optimization=sgd", "lr=1e4",
                        "epochs=20")
    path, results = results_of(completed)
    assert results["status"] == "diverged"
    assert 1 <= results["diverged_epoch"] <= 20 and results["epochs_completed"] == results["diverged_epoch"]
    assert results["fit"] is None and results["layers"] == []
    assert results["final_train_loss"] in ("nan", "inf", "-inf")  # JSON spelling of non-finite
    assert not (path.parent / "profile.png").exists()
    assert not (tmp_path / "figures").exists() or not list((tmp_path / "figures").glob("*.png"))
    rerun = run_cli(tmp_path, "model=GFNNNoBN", "layer_num=3", "optimization=sgd", "lr=1e4", "epochs=20")
    assert "skipped:" in rerun.stdout  # a sweep rerun does not redo it


def test_training_stops_at_the_first_non_finite_epoch():
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.linear(x)
            return out * math.inf if self.calls > 6 else out  # the 4th epoch (2 batches each)

    model = Exploding()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    outcome = train(model, torch.randn(20, 4), torch.arange(20) % 3, optimizer, epochs=50,
                    batch_size=10, base_lr=0.1, schedule_cfg=None, seed=0, progress=False)
    assert outcome.diverged and outcome.diverged_epoch == 4 and outcome.epochs_completed == 4
    assert len(outcome.loss_history) == 4 and all(math.isfinite(v) for v in outcome.loss_history[:3])


def test_fit_uses_only_finite_points_and_counts_the_dropped():
    layers = [{"index": i, "value": v} for i, v in enumerate([8.0, math.inf, 2.0, 1.5, math.nan])]
    fit = profile_fit(layers)
    assert fit["dropped"] == 2 and fit["num_points"] == 3
    x, y = np.array([0.0, 2.0, 3.0]), np.log([8.0, 2.0, 1.5])
    assert fit["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert fit["slope"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-12)
    assert profile_fit([{"index": 0, "value": 1.0}, {"index": 1, "value": math.inf}]) is None


def start_run(tmp_path, *overrides):
    command = [sys.executable, str(ENTRY), f"log_root={tmp_path / 'logs'}",
               f"figures_dir={tmp_path / 'figures'}", "progress=false", *overrides]
    return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_signals)


def wait_for_training(tmp_path, process, timeout=60):
    """Return the run directory once the run log says training started."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for log_file in (tmp_path / "logs").glob("*/representation_dynamics_terminal.log"):
            if "training GFNN" in log_file.read_text():
                return log_file.parent
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError("the run did not start training in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_leaves_nothing_partial_and_reruns_cleanly(tmp_path, sig):
    overrides = ("layer_num=2", "hidden_size=16", "epochs=3000")
    process = start_run(tmp_path, *overrides)
    run_dir = wait_for_training(tmp_path, process)
    time.sleep(0.5)
    process.send_signal(sig)
    process.communicate(timeout=30)
    assert process.returncode != 0
    for name in RUN_FILES:
        assert not (run_dir / name).exists(), name
    assert not (tmp_path / "figures").exists() or not list((tmp_path / "figures").iterdir())
    # the rerun (shorter, so the test is quick: a different config) and the same config both finish
    completed = run_cli(tmp_path, *overrides[:-1], "epochs=3")
    assert results_of(completed)[1]["status"] == "completed"


def test_same_command_twice_gives_identical_numbers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = results_of(run_cli(tmp_path / "a", "layer_num=3", "epochs=4"))[1]
    second = results_of(run_cli(tmp_path / "b", "layer_num=3", "epochs=4"))[1]
    assert [layer["D"] for layer in first["layers"]] == [layer["D"] for layer in second["layers"]]
    assert first["train_accuracy"] == second["train_accuracy"]
    assert first["test_accuracy"] == second["test_accuracy"]
    assert first["final_train_loss"] == second["final_train_loss"]


def test_two_processes_building_one_cache_both_succeed(tmp_path, mnist_root):  # noqa: F811
    command = [sys.executable, str(REPO_ROOT / "data.py"), "data=cm", "data.sample_size_per_class=6",
               f"data_root={mnist_root}", "download=false"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert all("train (60, 1, 10, 10)" in out for out, _ in outputs)
    built = sum("built cache" in out + err for out, err in outputs)
    assert built == 1  # the second waited on the lock and then read the first one's cache
    from tests.conftest import compose_config

    cfg = compose_config("data=cm", "data.sample_size_per_class=6")
    spec = preprocessing_spec(cfg.data, 666)
    assert read_valid_cache(mnist_root / "cache" / cache_file_name(spec), spec) is not None
    assert not list((mnist_root / "cache").glob(".*.tmp-*"))
