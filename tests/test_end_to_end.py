"""The command line end to end: a short real run writes a complete, valid results.json and its files."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY = REPO_ROOT / "representation_dynamics_terminal.py"


def run_cli(tmp_path: Path, *overrides: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ENTRY), f"log_root={tmp_path / 'logs'}",
               f"figures_dir={tmp_path / 'figures'}", "progress=false", *overrides]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    if expect_ok:
        assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def results_of(completed: subprocess.CompletedProcess) -> tuple[Path, dict]:
    last_line = completed.stdout.strip().splitlines()[-1]
    assert last_line.startswith("results: ")
    path = Path(last_line.removeprefix("results: "))
    return path, json.loads(path.read_text())


def test_two_epoch_run_writes_valid_results(tmp_path):
    completed = run_cli(tmp_path, "data=cfm", "model=GFNN", "layer_num=6", "epochs=2")
    path, results = results_of(completed)
    run_dir = path.parent
    assert run_dir.parent == tmp_path / "logs"
    assert run_dir.name.startswith("cfm-GFNN-L6-w100-adam-lr0.001-e2-s666-")
    assert results["status"] == "completed" and results["epochs_completed"] == 2
    assert len(results["layers"]) == 8
    assert [layer["index"] for layer in results["layers"]] == list(range(8))
    assert results["layers"][0]["name"] == "flatten" and results["layers"][0]["dim"] == 100
    for layer in results["layers"]:
        assert math.isfinite(layer["D"]) and layer["D"] > 0
        assert layer["within_trace"] > 0 and layer["between_trace"] > 0
    assert results["layers"][1]["ratio"] == pytest.approx(
        results["layers"][1]["D"] / results["layers"][0]["D"])
    # D of the (untrained-network-independent) input is a property of the data alone
    assert results["layers"][0]["D"] == pytest.approx(31.4341, rel=1e-4)
    assert set(results["fit"]) >= {"slope", "intercept", "rho", "pearson_r", "r2"}
    assert -1.0 <= results["fit"]["pearson_r"] <= 1.0
    assert results["fit"]["rho"] == pytest.approx(math.exp(results["fit"]["slope"]))
    assert 0.1 <= results["train_accuracy"] <= 1.0 and 0.1 <= results["test_accuracy"] <= 1.0
    assert results["config"]["epochs"] == 2 and results["device"] == "cpu"
    assert set(results["versions"]) >= {"python", "torch", "hydra"}
    for name in ("profile.png", "checkpoint.pt", "representation_dynamics_terminal.log",
                 ".hydra/config.yaml"):
        assert (run_dir / name).is_file(), name
    assert (tmp_path / "figures" / f"{run_dir.name}.png").is_file()
    assert not list(run_dir.glob(".*.tmp-*"))


def test_original_command_line_form_works(tmp_path):
    completed = run_cli(tmp_path, "data=cfm", "model=GFNN", "layer_num=2", "hidden_size=100",
                        "measure=within_variance", "optimization=sgd", "lr=0.3", "epochs=2")
    _, results = results_of(completed)
    assert len(results["layers"]) == 4
    assert results["config"]["optimization"]["name"] == "sgd" and results["config"]["lr"] == 0.3


def test_same_config_lands_in_same_directory_and_distinct_configs_do_not(tmp_path):
    first, _ = results_of(run_cli(tmp_path, "layer_num=1", "epochs=1"))
    second, _ = results_of(run_cli(tmp_path, "layer_num=1", "epochs=1"))
    other, _ = results_of(run_cli(tmp_path, "layer_num=1", "epochs=1", "weight_decay=0"))
    assert first == second
    assert other.parent != first.parent
