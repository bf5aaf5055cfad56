"""Runs that differ only in what they measure train once (shared_training): a tiny GResNet measured per
block and per layer in one sweep gives, run for run, the numbers of each variant trained by itself; a
crafted index is passed over; force=true and training-time measurements never share."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from run_records import results_problem
from shared_training import MEASUREMENT_ONLY_KEYS, TRAINED_INDEX, training_key

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["data=cfm", "model=GResNet", "model.params.block_num=2", "epochs=2", "data.sample_size_per_class=20",
        "analysis.test_subset_size=0", "progress=false"]
NOT_COMPARED = {"timings", "wall_seconds", "trained_in", "config", "commit", "machine", "versions"}


def run(tmp_path: Path, log_root: str, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "representation_dynamics_terminal.py"),
                                *(["-m"] if multirun else []), *TINY,
                                f"log_root={tmp_path / log_root}", f"figures_dir={tmp_path / 'figures'}",
                                *overrides], capture_output=True, text=True, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed


def results_of(folder: Path, variant: str) -> dict:
    (path,) = folder.glob(f"*-{variant}-*/results.json")
    return json.loads(path.read_text())


def test_a_sweep_over_the_measured_points_trains_once_and_gives_the_numbers_of_separate_trainings(tmp_path):
    sweep = run(tmp_path, "sweep", "model.params.feature_option=block,layer", multirun=True)
    assert (sweep.stderr + sweep.stdout).count("measuring the network") == 1
    for variant in ("block", "layer"):
        run(tmp_path, f"alone-{variant}", f"model.params.feature_option={variant}")
    first, second = results_of(tmp_path / "sweep", "block"), results_of(tmp_path / "sweep", "layer")
    assert "trained_in" not in first and second["trained_in"] == next((tmp_path / "sweep").glob("*-block-*")).name
    assert second["timings"]["train"] < first["timings"]["train"] / 5
    for variant, shared in (("block", first), ("layer", second)):
        alone = results_of(tmp_path / f"alone-{variant}", variant)
        assert results_problem(shared) is None
        assert {key: shared.get(key) for key in shared if key not in NOT_COMPARED} == \
               {key: alone.get(key) for key in alone if key not in NOT_COMPARED}, variant
        assert len(shared["layers"]) == len(alone["layers"]) >= 3
    assert len(first["layers"]) != len(second["layers"])     # two different profiles of one network
    assert training_key(first["config"]) == training_key(second["config"])
    assert "model.params.feature_option" in MEASUREMENT_ONLY_KEYS


@pytest.mark.parametrize("planted", ["../elsewhere", "no-such-run", "a/b"])
def test_a_crafted_index_is_passed_over_and_the_run_trains(tmp_path, planted):
    run(tmp_path, "logs", "model.params.feature_option=block")
    (index,) = (tmp_path / "logs" / TRAINED_INDEX).iterdir()
    index.write_text(planted)
    second = run(tmp_path, "logs", "model.params.feature_option=layer")
    assert "not measuring the trained network" in second.stderr + second.stdout
    assert "trained_in" not in results_of(tmp_path / "logs", "layer")


def test_force_and_training_time_measurements_never_share(tmp_path):
    run(tmp_path, "logs", "model.params.feature_option=block")
    run(tmp_path, "logs", "model.params.feature_option=layer", "force=true")
    assert "trained_in" not in results_of(tmp_path / "logs", "layer")
    run(tmp_path, "dynamics", "model.params.feature_option=block", "analysis.every_n_epochs=1")
    run(tmp_path, "dynamics", "model.params.feature_option=layer", "analysis.every_n_epochs=1")
    assert "trained_in" not in results_of(tmp_path / "dynamics", "layer")
    assert not (tmp_path / "dynamics" / TRAINED_INDEX).exists()


# ------------------------------------------------------------------- the tables, the report, the plan
def test_the_tables_record_which_run_trained_the_network_and_read_older_headers():
    import report_tables

    columns = report_tables.RUN_COLUMNS
    assert columns[-1] == "trained_in"
    row = {key: "" for key in columns} | {"group": "residual", "run": "b-layer", "status": "missing", "lr": "0.001"}
    for header in (columns, *report_tables.LEGACY_RUN_COLUMNS):   # older tables: no trained_in column
        text = ",".join(header) + "\n" + ",".join(row[key] for key in columns[:len(header)]) + "\n"
        (read,) = report_tables.read_rows(Path("runs.csv"), text)
        assert read["trained_in"] is None and read["run"] == "b-layer"
    for name, problem in (("b-block", None), ("../elsewhere", "trained_in \"../elsewhere\": a name of letters")):
        found = report_tables.value_problem({"status": "completed", "final_train_loss": 0.1, "trained_in": name})
        assert (found if found is None else found[:len(problem)]) == problem


def test_the_report_says_what_sharing_the_training_saved():
    from report_markdown import _shared_training

    rows = {"b-block": {"wall_seconds": 1800.0, "trained_in": None},
            "b-layer": {"wall_seconds": 36.0, "trained_in": "b-block"},
            "m-layer": {"wall_seconds": 36.0, "trained_in": "m-block"}}   # its twin not in the tables
    (line,) = _shared_training(rows)
    assert "2 runs measured the network" in line and "they took 0.02 h" in line
    assert "about 0.50 h (the run time of the 1 run that trained them, in the tables), 0.48 h saved" in line
    assert _shared_training({"b-layer": rows["b-layer"]})[0].startswith("- Training shared: 1 run measured")
    assert _shared_training({"b-block": rows["b-block"]}) == []


def test_the_plan_estimates_a_twin_as_measuring_only_and_runs_it_after_its_training(capsys):
    import sweep_jobs

    sweep_jobs.main(["residual", "--list", "--longest-first"])
    out = capsys.readouterr().out
    assert "# group residual: 30 jobs" in out and "training shared: 15)" in out
    costs = [(float(cost), source) for cost, source in
             re.findall(r"^# job estimate: (\d+) s \((?:[^,\n]*, )?([^)\n]*)\)$", out, re.MULTILINE)]
    assert len(costs) == 30
    shared = [cost for cost, source in costs if source == "training shared"]
    trained = [cost for cost, source in costs if source != "training shared"]
    assert len(shared) == 15 and max(shared) < min(trained) / 10
    assert costs.index(next(c for c in costs if c[1] == "training shared")) == 15   # every training first
