"""Refactors keep every number: five short runs through the command line give the D values, fits,
accuracies, losses and dynamics recorded in tests/data/bitwise_reference.json.

    python tests/test_bitwise.py --record     # rewrite the reference (only for a change that is meant
                                              # to alter numbers, stated in its commit)

On the CPU model, torch version and CPU kernels (cpu_kernels.py pins AVX2) that recorded the reference
the comparison is exact (bitwise: the float64 values round-trip through JSON); elsewhere another BLAS
kernel may change the last bits of training, so the values must agree to 1e-6 relative and the test
says which rule it applied.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT / "tests" / "data" / "bitwise_reference.json"
TINY_CNN = ("analysis.test_subset_size=100", "epochs=1")  # the shipped cfm cache: no raw files needed
RUNS = {
    "gfnn": ("data=cfm", "model=GFNN", "layer_num=6", "epochs=20"),
    "gresnet_layer": ("data=cfm", "model=GResNet", "model.params.block_option=bottleneck",
                      "model.params.feature_option=layer", *TINY_CNN),
    "resnetmix_layer": ("data=cfm", "model=ResNetMixV2", "model.params.feature_option=layer", *TINY_CNN),
    "fig1_momentum_dynamics": ("data=cfm", "model=GFNN", "optimization=momentum", "layer_num=18", "lr=0.001",
                               "epochs=20", "analysis.every_n_epochs=10"),
    "frozen_eval": ("data=cfm", "model=GFNN", "layer_num=6", "training=frozen", "training.split=3",
                    "training.stage1_epochs=4", "epochs=4", "analysis.bn_mode=eval"),
}
COMPARED = ("layers", "fit", "test_layers", "test_fit", "train_accuracy", "test_accuracy",
            "final_train_loss", "epochs_completed", "dynamics")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    import torch

    from cpu_kernels import cpu_kernels

    return {"cpu": cpu, "torch": torch.__version__, "cpu_kernels": cpu_kernels()}


def run(name: str, out: Path) -> dict:
    command = [sys.executable, str(REPO_ROOT / "representation_dynamics_terminal.py"), *RUNS[name],
               f"log_root={out}/logs", f"figures_dir={out}/figures", "progress=false", "threads=1", "device=cpu"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=out, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results_path = Path(completed.stdout.strip().splitlines()[-1].removeprefix("results: "))
    results = json.loads(results_path.read_text())
    return {key: results[key] for key in COMPARED} | {"train_loss": results["history"]["train_loss"]}


def differences(expected, observed, exact: bool, where: str = "") -> list[str]:
    """Paths at which `observed` differs from `expected` (exactly, or beyond 1e-6 relative)."""
    if isinstance(expected, dict) and isinstance(observed, dict):
        if expected.keys() != observed.keys():
            return [f"{where}: keys {sorted(expected)} != {sorted(observed)}"]
        return [d for key in expected for d in differences(expected[key], observed[key], exact, f"{where}.{key}")]
    if isinstance(expected, list) and isinstance(observed, list):
        if len(expected) != len(observed):
            return [f"{where}: length {len(expected)} != {len(observed)}"]
        return [d for i, (e, o) in enumerate(zip(expected, observed)) for d in differences(e, o, exact, f"{where}[{i}]")]
    if isinstance(expected, float) and isinstance(observed, (int, float)):
        if math.isnan(expected):
            return [] if math.isnan(observed) else [f"{where}: {observed} != nan"]
        same = expected == observed if exact else math.isclose(expected, observed, rel_tol=1e-6, abs_tol=1e-12)
        return [] if same else [f"{where}: {observed!r} != {expected!r}"]
    return [] if expected == observed else [f"{where}: {observed!r} != {expected!r}"]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_numbers_match_the_reference(name, tmp_path):
    reference = json.loads(REFERENCE.read_text())
    exact = reference["machine"] == machine()
    found = differences(reference["runs"][name], run(name, tmp_path), exact)
    rule = "bitwise" if exact else f"1e-6 relative (reference machine {reference['machine']}, this {machine()})"
    assert not found, f"{name} differs from the reference ({rule}): " + "; ".join(found[:8])


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(__doc__)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        runs = {}
        for name in sorted(RUNS):
            (Path(scratch) / name).mkdir()
            runs[name] = run(name, Path(scratch) / name)
            print(f"{name}: recorded", flush=True)
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({"machine": machine(), "runs": runs}, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
