"""A typo on the command line gets one `error:` line with the close match and exit status 2, before any
directory is made (override_check.py), from every entry that takes overrides; an entry script in a
Python without the project's packages says so in one line (dependencies.py)."""
import os
import subprocess
import sys

import pytest

import sweep_jobs
from override_check import override_problem
from tests.test_end_to_end import ENTRY, REPO_ROOT

KEYS_SHOWN = "allowed: the keys that python representation_dynamics_terminal.py --cfg job shows"
MODELS = "AlexNet, FNNMIX, FNNSW, FNNWS, GFNN, GFNNNoBN, GFNNOriginal, GLNN, GResNet, ResNetMixV2, VGG13"
LAYER_NUMS = f"error: layer_nums=6: unknown key (did you mean layer_num?); {KEYS_SHOWN}"


def first_error_line(completed: subprocess.CompletedProcess) -> str:
    return completed.stderr.splitlines()[0] if completed.stderr else ""


# --------------------------------------------------------------------------- the entry's refusals
@pytest.mark.parametrize("arguments, line", [
    (["layer_nums=6"], LAYER_NUMS),
    (["block_num=4"], "error: block_num=4: not a key of model=GFNN; allowed: with model=GResNet or model=ResNetMixV2 "
                      "(their key model.params.block_num)"),
    (["model=gfnn"], f"error: model=gfnn: no model config of that name (did you mean GFNN?); allowed: {MODELS}"),
    (["-m", "lr=1e-3,3e-3", "layer_nums=6"], LAYER_NUMS),
])
def test_typos_are_refused_in_one_line_before_any_directory(tmp_path, arguments, line):
    completed = subprocess.run([sys.executable, str(ENTRY), *arguments, f"log_root={tmp_path / 'logs'}",
                                f"figures_dir={tmp_path / 'figures'}", f"data_root={tmp_path / 'data'}", "epochs=1"],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert (completed.returncode, first_error_line(completed)) == (2, line)
    assert len(completed.stderr.splitlines()) == 1 and completed.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script, overrides, line", [
    ("data.py", ["data=cfmm"], "error: data=cfmm: no data config of that name (did you mean cfm?); allowed: cc, cfm, "
                               "cifar10, cm, cm5k, fashion_mnist, imbalanced_cfm"),
    ("imbalanced_data.py", ["data=cfm", "data.imbalance.majority_size=300"],
     "error: data.imbalance.majority_size=300: not a key of data=cfm; allowed: with data=imbalanced_cfm"),
])
def test_the_data_scripts_refuse_typos_in_one_line(tmp_path, script, overrides, line):
    completed = subprocess.run([sys.executable, str(REPO_ROOT / script), f"data_root={tmp_path / 'data'}", *overrides],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert (completed.returncode, first_error_line(completed)) == (2, line)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_refuses_a_typo_with_the_entrys_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        sweep_jobs.main(["fig1", "layer_nums=6"])
    assert exit_status.value.code == 2 and capsys.readouterr().err.splitlines() == [LAYER_NUMS]
    completed = subprocess.run(["sh", str(REPO_ROOT / "run_experiments.sh"), "fig1", "layer_nums=6",
                                f"log_root={tmp_path / 'logs'}"], capture_output=True, text=True, cwd=tmp_path,
                               env={**os.environ, "GPUS": "", "PYTHON": sys.executable}, timeout=300)
    assert completed.returncode == 2 and LAYER_NUMS in completed.stderr.splitlines()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- each kind of typo
@pytest.mark.parametrize("overrides, config_name, multirun, problem", [
    (["+layer_nums=6"], "config", False, "+layer_nums=6: unknown key, which nothing would read (did you mean "
                                         f"layer_num?); {KEYS_SHOWN}"),
    (["++layer_nums=6"], "config", False, "++layer_nums=6: unknown key, which nothing would read (did you mean "
                                          f"layer_num?); {KEYS_SHOWN}"),
    (["Layer_num=3"], "config", False, f"Layer_num=3: unknown key (did you mean layer_num?); {KEYS_SHOWN}"),
    (["pca_dim=50"], "config", False, "pca_dim=50: unknown key (did you mean model.pca_dim or analysis.pca_dim?); "
                                      f"{KEYS_SHOWN}"),
    (["model=GFNN", "+model.params.block_num=4"], "config", False,
     "+model.params.block_num=4: not a key of model=GFNN; allowed: with model=GResNet or model=ResNetMixV2"),
    (["+data.test_split=official"], "config", False, "+data.test_split=official: not a key of data=cfm; allowed: "
                                                     "with data=cm5k"),
    (["model=GFNN,gfnn"], "config", True, f"model=gfnn: no model config of that name (did you mean GFNN?); allowed: "
                                          f"{MODELS}"),
    (["optimization=adm"], "config", False, "optimization=adm: no optimization config of that name (did you mean "
                                            "adam?); allowed: adam, momentum, sgd"),
    (["+experiment=fig"], "config", True, "+experiment=fig: no experiment config of that name (did you mean fig1?); "
                                          "allowed: cnn, depth_cc, depth_cfm, depth_cm, depth_cm5k, fig1, frozen, "
                                          "imbalanced, linearized, lr, nobn, original, residual_gresnet, residual_mix, "
                                          "shape, width"),
    (["hydra/launcher=joblibb"], "config", True, "hydra/launcher=joblibb: no hydra/launcher config of that "
                                                          "name (did you mean joblib?); allowed: basic, joblib, slurm, "
                                                          "submitit_local, submitit_slurm"),
    (["experiment=fig1"], "config", False, "experiment=fig1: experiment is not in the defaults list (a preset is "
                                           "added with +); allowed: +experiment=fig1"),
    (["+model=GFNN"], "config", False, "+model=GFNN: model is in the defaults list already (+ adds a group); "
                                       "allowed: model=GFNN"),
    (["+layer_num=3"], "config", False, "+layer_num=3: layer_num is a key of the config already (+ adds a key); "
                                        "allowed: layer_num=3"),
    # a preset's own group sweep (fig1: optimization sgd,momentum,adam) makes jobs without the key
    (["+experiment=fig1", "optimization.momentum=0.5"], "config", True,
     "optimization.momentum=0.5: not a key of optimization=sgd; allowed: with optimization=momentum"),
])
def test_each_kind_of_typo_is_named_with_its_close_match(overrides, config_name, multirun, problem):
    assert override_problem(overrides, config_name, multirun) == problem


@pytest.mark.parametrize("overrides, config_name, multirun", [
    (["+experiment=fig1"], "config", True),
    (["+experiment=cnn", "hydra/launcher=slurm"], "config", True),
    (["+experiment=residual_gresnet", "block_num=2,4", "lr=1e-3"], "config", True),
    (["data=fashion_mnist", "model=GResNet", "block_option=bottleneck", "model.params.block_num=4",
      "~model.params.feature_option"], "config", False),
    (["model=VGG13", "layer_num=11", "++epochs=3", "schedule=null"], "config", False),
    (["~schedule", "analysis.bn_mode=eval", "hydra.run.dir=/tmp/x"], "config", False),
    (["data=cm5k", "data.test_split=heldout"], "config", False),
    (["lr=3e-5,1e-4", "seed=1,2"], "config", True),
    (["data=cfm"], "data_only", False),
    (["data=cfm", "default_imbalance.minority_size=50"], "imbalanced_data", False),
    (["data.imbalance.majority_size=300"], "imbalanced_data", False),
])
def test_commands_that_are_right_pass(overrides, config_name, multirun):
    assert override_problem(overrides, config_name, multirun) is None


def test_a_warm_process_checks_again_without_composing_until_conf_changes(tmp_path, monkeypatch):
    """A warm worker's next job: the configs the check composed are kept (no composition), and a changed
    file of conf/ is read again (a key added to a model config is then known)."""
    import shutil

    import hydra

    import override_check

    conf = tmp_path / "conf"
    shutil.copytree(override_check.CONF_DIR, conf)
    monkeypatch.setattr(override_check, "CONF_DIR", conf)
    composed = []
    real_compose = hydra.compose
    monkeypatch.setattr(hydra, "compose", lambda *a, **k: composed.append(k["overrides"]) or real_compose(*a, **k))
    command = ["data=cfm", "model=GFNN", "layer_num=6", "model.params.extra_width=3"]
    assert override_problem(command).startswith("model.params.extra_width=3: unknown key")
    assert composed[0] == ["data=cfm", "model=GFNN"]   # then the other models, to say which has the key
    checked_once = len(composed)
    assert override_problem(command).startswith("model.params.extra_width=3: unknown key")
    assert override_problem(command[:3]) is None
    assert len(composed) == checked_once
    model = conf / "model" / "GFNN.yaml"
    model.write_text(model.read_text() + "  extra_width: 1\n")
    assert override_problem(command) is None
    assert composed[checked_once:] == [["data=cfm", "model=GFNN"]]


def test_a_single_run_of_primary_groups_and_keys_is_checked_without_composing(monkeypatch):
    """The main command's and a sweep job's overrides (groups the defaults list chooses, a + preset, keys
    of the primary file) are settled by the primary file alone: no composition (0.06 s of every process,
    0.1 s of a warm worker's job), the same answers."""
    import hydra

    monkeypatch.setattr(hydra, "compose", lambda *a, **k: pytest.fail(f"composed {k['overrides']}"))
    assert override_problem(["data=cfm", "model=GFNN", "layer_num=6", "analysis.pca_dim=3", "++epochs=2"]) is None
    assert override_problem(["+experiment=fig1", "optimization=sgd", "layer_num=2", "seed=666"]) is None
    assert override_problem(["epochs=3", "+analysis.pca_dim=2"]) == (
        "+analysis.pca_dim=2: analysis.pca_dim is a key of the config already (+ adds a key); "
        "allowed: analysis.pca_dim=2")


# ------------------------------------------------------------------------- without the dependencies
# -S: without site-packages (where make install puts them), -E: whatever PYTHONPATH says.
ENTRY_SCRIPTS = ["representation_dynamics_terminal.py", "data.py", "imbalanced_data.py", "summarize_runs.py",
                 "reanalyze.py", "reproduction_report.py", "sweep_jobs.py", "benchmarks/bench_run.py",
                 "benchmarks/bench_pca.py", "benchmarks/epoch_costs.py", "benchmarks/sweep_queue.py"]
NOT_INSTALLED = (f"error: this project's dependencies (torch, torchvision, hydra ...) are not installed for "
                 f"{sys.executable}: run 'make install', then use .venv/bin/python (or: source .venv/bin/activate)")


def test_entry_scripts_without_the_dependencies_say_so_in_one_line(tmp_path):
    for script in ENTRY_SCRIPTS:
        completed = subprocess.run([sys.executable, "-S", "-E", str(REPO_ROOT / script)], capture_output=True,
                                   text=True, cwd=tmp_path, timeout=60)
        assert (completed.returncode, completed.stderr, completed.stdout) == (2, NOT_INSTALLED + "\n", ""), script


def test_the_sweep_script_without_the_dependencies_says_so_in_one_line(tmp_path):
    python = tmp_path / "python"   # a Python without the project's packages, as a clone without make install has
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S -E "$@"\n')
    python.chmod(0o755)
    completed = subprocess.run(["sh", str(REPO_ROOT / "run_experiments.sh"), "fig1"], capture_output=True, text=True,
                               cwd=tmp_path, env={**os.environ, "GPUS": "", "PYTHON": str(python)}, timeout=60)
    assert completed.returncode == 2 and completed.stderr.splitlines() == [NOT_INSTALLED]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["python"]
