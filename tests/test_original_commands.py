"""Every command form of the original repository's scripts (tests/data/original_command_forms.txt)
composes, with our entry script, to the same config and run as its documented form (README: "The
original's scripts"); the residual models' root keys are aliases of model.params.*."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from config_utils import expand_root_aliases, run_name
from tests.conftest import compose_config

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMS = Path(__file__).with_name("data") / "original_command_forms.txt"

# Per original script: the values its positional arguments took in the original's own loops (two
# settings each where the script takes any), and our documented form of its command, written out.
SCRIPTS = {
    "run_experiments.sh": ([{}], None),
    "run_optimization.sh": (
        [{"1": "cm", "2": "6", "3": "sgd", "lr": "0.3"}, {"1": "cc", "2": "18", "3": "momentum", "lr": "1e-3"}],
        "data=$1 model=GFNN layer_num=$2 hidden_size=100 measure=within_variance optimization=$3 lr=$lr"),
    "run_optimization_CNN.sh": (
        [{"1": "fashion_mnist", "2": "VGG13", "3": "11", "4": "adam", "lr": "1e-4"},
         {"1": "cifar10", "2": "AlexNet", "3": "8", "4": "sgd", "lr": "0.01"}],
        "data=$1 model=$2 layer_num=$3 measure=within_variance optimization=$4 lr=$lr"),
    "run_optimization_NoBN.sh": (
        [{"1": "cfm", "2": "6", "3": "adam", "lr": "1e-3"}, {"1": "cm", "2": "2", "3": "sgd", "lr": "0.1"}],
        "data=$1 model=GFNNNoBN layer_num=$2 hidden_size=100 measure=within_variance optimization=$3 lr=$lr"),
    "run_optimization_frozen.sh": (
        [{"1": "cc", "2": "18", "3": "adam", "lr": "1e-4"}, {"1": "cfm", "2": "18", "3": "sgd", "lr": "0.01"}],
        "data=$1 model=GFNN layer_num=$2 hidden_size=100 measure=within_variance optimization=$3 lr=$lr "
        "training=frozen"),
    "run_optimization_imbalanced.sh": (
        [{"1": "6", "2": "adam", "lr": "1e-3"}, {"1": "18", "2": "momentum", "lr": "3e-4"}],
        "data=imbalanced_cfm model=GFNN layer_num=$1 hidden_size=100 measure=within_variance optimization=$2 "
        "lr=$lr"),
    "run_optimization_linearized.sh": (
        [{"1": "cfm", "2": "6", "3": "adam", "lr": "1e-3"}, {"1": "cc", "2": "2", "3": "momentum", "lr": "0.03"}],
        "data=$1 model=GLNN layer_num=$2 hidden_size=100 measure=within_variance optimization=$3 lr=$lr"),
    "run_optimization_mixresidual.sh": (
        [{"1": "ResNetMixV2", "2": "4", "3": "layer", "4": "adam", "lr": "1e-4"},
         {"1": "ResNetMixV2", "2": "8", "3": "block", "4": "sgd", "lr": "0.01"}],
        "data=fashion_mnist model=$1 model.params.block_option=MIX model.params.block_num=$2 "
        "model.params.feature_option=$3 measure=within_variance optimization=$4 lr=$lr"),
    "run_optimization_original.sh": (
        [{"1": "fashion_mnist", "2": "6", "3": "1000", "4": "adam", "lr": "3e-4"},
         {"1": "cifar10", "2": "18", "3": "1000", "4": "adam", "lr": "1e-3"}],
        "data=$1 model=GFNNOriginal layer_num=$2 hidden_size=$3 measure=within_variance optimization=$4 lr=$lr"),
    "run_optimization_residual.sh": (
        [{"1": "bottleneck", "2": "4", "3": "layer", "4": "adam", "lr": "1e-4"},
         {"1": "basicblock", "2": "8", "3": "block", "4": "momentum", "lr": "3e-3"}],
        "data=fashion_mnist model=GResNet model.params.block_option=$1 model.params.block_num=$2 "
        "model.params.feature_option=$3 measure=within_variance optimization=$4 lr=$lr"),
}


# The original's entry scripts that differ from its main one by the experiment they run, and what that
# experiment is here (README): each other entry script is our representation_dynamics_terminal.py as is.
ENTRY_SCRIPTS = {
    "representation_dynamics_terminal_imbalance.py":
        lambda overrides: ["data=imbalanced_cfm" if item == "data=cfm" else item for item in overrides],
    "representation_dynamics_terminal_frozen.py": lambda overrides: [*overrides, "training=frozen"],
}


def substitute(template: str, values: dict) -> list[str]:
    for name in sorted(values, key=len, reverse=True):
        template = template.replace("$" + name, values[name])
    assert "$" not in template, template
    return shlex.split(template)


def original_forms() -> list[tuple[str, str]]:
    lines = [line for line in FORMS.read_text().splitlines() if line and not line.startswith("#")]
    return [tuple(part.strip() for part in line.split(":", 1)) for line in lines]


def cases() -> list[tuple[str, list[str], list[str]]]:
    """(script, the original's overrides with its entry script's experiment, documented overrides) for
    every form and setting."""
    result = []
    for script, command in original_forms():
        settings, documented = SCRIPTS[script]
        entry, _, overrides = command.removeprefix("python ").partition(" ")
        assert entry.startswith("representation_dynamics_terminal"), command
        for values in settings:
            original = ENTRY_SCRIPTS.get(entry, list)(substitute(overrides, values))
            expected = substitute(documented, values) if documented else original
            result.append((script, original, expected))
    return result


def test_every_original_script_is_covered():
    scripts = {script for script, _ in original_forms()}
    assert scripts == set(SCRIPTS)
    assert len(original_forms()) == 43
    assert len(cases()) == 34 + 2 * 9


@pytest.mark.parametrize("script, original, documented", cases(),
                         ids=lambda value: value if isinstance(value, str) else None)
def test_an_original_command_is_the_documented_run(script, original, documented):
    ours = compose_config(*expand_root_aliases(original))
    expected = compose_config(*documented)
    assert OmegaConf.to_container(ours, resolve=True) == OmegaConf.to_container(expected, resolve=True)
    assert run_name(ours) == run_name(expected)


def test_the_aliases_name_the_same_keys():
    assert expand_root_aliases(["block_option=MIX", "+block_num=2,4", "~feature_option", "lr=1e-3",
                                "--cfg", "job", "hydra.run.dir=block_num=4"]) == [
        "model.params.block_option=MIX", "+model.params.block_num=2,4", "~model.params.feature_option",
        "lr=1e-3", "--cfg", "job", "hydra.run.dir=block_num=4"]


def cfg_job(*overrides: str) -> str:
    command = [sys.executable, str(REPO_ROOT / "representation_dynamics_terminal.py"), "--cfg", "job", *overrides]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.mark.parametrize("script", ["run_optimization_residual.sh", "run_optimization_mixresidual.sh"])
def test_the_entry_script_takes_the_original_root_keys(script):
    _, original, documented = next(case for case in cases() if case[0] == script)
    printed = cfg_job(*original)
    assert printed == cfg_job(*documented)
    assert "block_num: 4\n" in printed and "feature_option: layer\n" in printed
