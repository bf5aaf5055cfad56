"""Refactors keep every number: five short runs through the command line give the D values, fits,
accuracies, losses and dynamics recorded for this CPU model in tests/data/bitwise/<machine>.json.

    python tests/test_bitwise.py --record     # write this machine's reference (a new CPU model; or a
                                              # change meant to alter numbers, stated in its commit:
                                              # then re-record on every CPU model or drop the others)

What agrees across CPUs, and so what each machine checks:
- On a CPU model with a reference of its own (same model name and, where recorded, the same family,
  model and stepping; same torch; same CPU kernels) the five runs must agree bit for bit.
- Training does not carry across CPU models: MKL and oneDNN take other code paths on other CPUs (AMD
  against Intel, AVX-512 or not, even with cpu_kernels.py's AVX2 pin), the last bits of a matrix
  product differ, and 20 epochs turn them into other D values (seen: fig1 momentum depth 18, layer 1,
  D 30.50 on an AMD EPYC, 36.50 on an Intel Xeon). Elsewhere every machine checks what does carry:
  the prepared data bit for bit, the measurement of fixed float64 features to 1e-9, and in the five
  runs the layer names and widths, the epochs, the untrained input's D to 1e-9, the seeded initial
  network's profile to 1e-4 and the first epoch's training loss to 1e-4 (1e-2 at depth 18 with SGD
  momentum): bounds measured between the references of two CPU models (see INPUT_RTOL below).
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCES = REPO_ROOT / "tests" / "data" / "bitwise"
CROSS_CPU = REPO_ROOT / "tests" / "data" / "cross_cpu_reference.json"
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

# Relative agreement across CPU models, measured between the AMD EPYC and Intel Xeon references:
# - the untrained input's D (float64 statistics of the same float32 pixels): 8e-16;
# - the seeded initial network's profile (the dynamics at epoch 0: one float32 forward): 2.2e-6;
# - the first epoch's mean training loss: 8.8e-8 to 6.9e-6 for the shallow runs, 1.0e-3 for depth 18
#   trained with SGD momentum (~80 float32 steps, each amplifying the last-bit differences of the last).
# Each bound leaves a margin of 10x or more over what was measured; a change of data, initialisation,
# model or the first steps' optimiser moves these values far beyond it.
INPUT_RTOL = 1e-9
INITIAL_PROFILE_RTOL = 1e-4
FIRST_EPOCH_LOSS_RTOL = {"fig1_momentum_dynamics": 1e-2}
FIRST_EPOCH_LOSS_RTOL_DEFAULT = 1e-4
# Float64 measurement of the same fixed features: only the summation order of a BLAS kernel differs.
MEASUREMENT_RTOL = 1e-9


def machine() -> dict:
    """This machine's CPU model (name, and family/model/stepping where /proc/cpuinfo has them), torch
    version and CPU kernels: a reference recorded on the same machine is compared bit for bit."""
    info = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    found = {"cpu": info.get("model name") or platform.processor() or platform.machine()}
    if "cpu family" in info:
        found["cpu_id"] = "{} family {} model {} stepping {}".format(
            info.get("vendor_id", "?"), info["cpu family"], info.get("model", "?"), info.get("stepping", "?"))
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    from cpu_kernels import cpu_kernels

    return found | {"torch": torch.__version__, "cpu_kernels": cpu_kernels()}


def references() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(REFERENCES.glob("*.json"))}


def matches(recorded: dict, here: dict) -> bool:
    """A reference's machine is this one when every field it recorded is the same here (the first
    reference recorded the CPU's name only)."""
    return all(here.get(key) == value for key, value in recorded.items())


def own_reference() -> dict | None:
    here = machine()
    return next((ref for ref in references().values() if matches(ref["machine"], here)), None)


def reference_stem(here: dict) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{here['cpu']} {here.get('cpu_id', '')}").strip("-")[:100]


def run(name: str, out: Path) -> dict:
    command = [sys.executable, str(REPO_ROOT / "representation_dynamics_terminal.py"), *RUNS[name],
               f"log_root={out}/logs", f"figures_dir={out}/figures", "progress=false", "threads=1", "device=cpu"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=out, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results_path = Path(completed.stdout.strip().splitlines()[-1].removeprefix("results: "))
    results = json.loads(results_path.read_text())
    return {key: results[key] for key in COMPARED} | {"train_loss": results["history"]["train_loss"]}


def differences(expected, observed, where: str = "") -> list[str]:
    """Paths at which `observed` differs from `expected` in any bit (NaN equals NaN)."""
    if isinstance(expected, dict) and isinstance(observed, dict):
        if expected.keys() != observed.keys():
            return [f"{where}: keys {sorted(expected)} != {sorted(observed)}"]
        return [d for key in expected for d in differences(expected[key], observed[key], f"{where}.{key}")]
    if isinstance(expected, list) and isinstance(observed, list):
        if len(expected) != len(observed):
            return [f"{where}: length {len(expected)} != {len(observed)}"]
        return [d for i, (e, o) in enumerate(zip(expected, observed)) for d in differences(e, o, f"{where}[{i}]")]
    if isinstance(expected, float) and isinstance(observed, (int, float)) and math.isnan(expected):
        return [] if math.isnan(observed) else [f"{where}: {observed} != nan"]
    return [] if expected == observed else [f"{where}: {observed!r} != {expected!r}"]


def cross_cpu_differences(name: str, expected: dict, observed: dict) -> list[str]:
    """What must agree between two CPU models' runs of one command (see the module docstring)."""
    found = []
    if expected["epochs_completed"] != observed["epochs_completed"]:
        found.append(f"epochs_completed: {observed['epochs_completed']} != {expected['epochs_completed']}")

    def close(where: str, first: float, seen: float, rtol: float) -> None:
        if not math.isclose(first, seen, rel_tol=rtol):
            found.append(f"{where}: {seen!r} != {first!r} (rel. tol {rtol:g})")

    for key in ("layers", "test_layers"):
        shape = [(p["name"], p["dim"]) for p in expected[key]]
        if shape != [(p["name"], p["dim"]) for p in observed[key]]:
            found.append(f"{key}: measured points {[(p['name'], p['dim']) for p in observed[key]]} != {shape}")
            continue
        close(f"{key}[0].D (the untrained input)", expected[key][0]["D"], observed[key][0]["D"], INPUT_RTOL)
    if expected["dynamics"]:
        for index, (first, seen) in enumerate(zip(expected["dynamics"]["values"][0],
                                                  observed["dynamics"]["values"][0], strict=True)):
            close(f"dynamics at epoch 0, point {index} (the initial network)", first, seen, INITIAL_PROFILE_RTOL)
    close("train_loss[0] (the first epoch)", expected["train_loss"][0], observed["train_loss"][0],
          FIRST_EPOCH_LOSS_RTOL.get(name, FIRST_EPOCH_LOSS_RTOL_DEFAULT))
    return found


@pytest.mark.parametrize("name", sorted(RUNS))
def test_numbers_match_the_reference(name, tmp_path):
    observed = run(name, tmp_path)
    own = own_reference()
    if own is not None:
        found = differences(own["runs"][name], observed)
        assert not found, (f"{name} differs from this CPU's reference (bitwise, {own['machine']}): "
                           + "; ".join(found[:8]))
        return
    for stem, reference in references().items():
        found = cross_cpu_differences(name, reference["runs"][name], observed)
        assert not found, (f"{name} differs from {stem}'s reference in what carries across CPUs (no "
                           f"reference for this CPU {machine()}; record one with --record): " + "; ".join(found))


def test_references_agree_across_cpu_models():
    """The recorded references of different CPU models agree in what carries across CPUs: the
    evidence behind FIRST_EPOCH_LOSS_RTOL and MEASUREMENT_RTOL."""
    recorded = references()
    assert len(recorded) >= 2, f"references of two CPU models expected in {REFERENCES}, found {sorted(recorded)}"
    stems = sorted(recorded)
    for stem in stems[1:]:
        for name in RUNS:
            found = cross_cpu_differences(name, recorded[stems[0]]["runs"][name], recorded[stem]["runs"][name])
            assert not found, f"{name}: {stems[0]} against {stem}: " + "; ".join(found)
    # and they do differ after training: the reason the bitwise check is per CPU model
    assert recorded[stems[0]]["runs"]["gfnn"]["layers"] != recorded[stems[1]]["runs"]["gfnn"]["layers"]


def fixed_features():
    """Seeded float64 features (numpy's generator: the same values on every machine) in 10 classes of
    unequal sizes, 50 wide, class means on a shifted simplex far from the origin."""
    import numpy as np
    import torch

    rng = np.random.default_rng(2023)
    counts = [40 + 7 * k for k in range(10)]
    labels = np.repeat(np.arange(10), counts)
    centers = 3.0 * rng.standard_normal((10, 50)) + 100.0
    features = centers[labels] + rng.standard_normal((len(labels), 50))
    return torch.from_numpy(features), torch.from_numpy(labels)


def measured_fixed_features() -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    from variance_analysis import (between_variance, cdnv_from_statistics, class_statistics, fit_log_linear,
                                   nc1_from_statistics, separation_fuzziness)

    features, labels = fixed_features()
    layered = [features[:, : 10 * (i + 1)] for i in range(5)]
    values = [separation_fuzziness(x, labels) for x in layered]
    stats = class_statistics(features, labels)
    fit = fit_log_linear(list(range(5)), values)
    return {"D": values, "nc1": nc1_from_statistics(stats), "cdnv": cdnv_from_statistics(stats),
            "between_variance": between_variance(features, labels),
            "fit": {"slope": fit.slope, "intercept": fit.intercept, "pearson_r": fit.pearson_r}}


def prepared_data_digest() -> dict:
    """sha256 of the normalized cfm tensors a run trains and measures on (elementwise float32 ops of
    a shipped uint8 cache: the same bits on every CPU)."""
    sys.path.insert(0, str(REPO_ROOT))
    from hydra import compose, initialize_config_dir

    from config_utils import CONF_DIR, register_resolvers
    from data import prepare_dataset

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["data=cfm"])
    dataset = prepare_dataset(cfg.data, Path(str(cfg.data_root)), int(cfg.seed), "cpu", download=False)
    return {name: hashlib.sha256(getattr(dataset, name).numpy().tobytes()).hexdigest()
            for name in ("train_x", "train_y", "test_x", "test_y")}


def nested_close(expected, observed, where: str = "") -> list[str]:
    if isinstance(expected, dict):
        return [d for key in expected for d in nested_close(expected[key], observed[key], f"{where}.{key}")]
    if isinstance(expected, list):
        return [d for i, (e, o) in enumerate(zip(expected, observed)) for d in nested_close(e, o, f"{where}[{i}]")]
    return [] if math.isclose(expected, observed, rel_tol=MEASUREMENT_RTOL) else [f"{where}: {observed!r} != {expected!r}"]


def test_fixed_features_measure_the_same_on_every_cpu():
    expected = json.loads(CROSS_CPU.read_text())["fixed_features"]
    found = nested_close(expected, measured_fixed_features())
    assert not found, f"the measurement of fixed features changed (rel. tol {MEASUREMENT_RTOL}): " + "; ".join(found)


def test_prepared_data_is_bitwise_the_same_on_every_cpu():
    assert prepared_data_digest() == json.loads(CROSS_CPU.read_text())["prepared_cfm_sha256"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(__doc__)
    import tempfile

    here = machine()
    with tempfile.TemporaryDirectory() as scratch:
        runs = {}
        for name in sorted(RUNS):
            (Path(scratch) / name).mkdir()
            runs[name] = run(name, Path(scratch) / name)
            print(f"{name}: recorded", flush=True)
    REFERENCES.mkdir(parents=True, exist_ok=True)
    path = REFERENCES / f"{reference_stem(here)}.json"
    path.write_text(json.dumps({"machine": here, "runs": runs}, indent=1) + "\n")
    print(f"wrote {path}")
    if not CROSS_CPU.exists():
        CROSS_CPU.write_text(json.dumps({"fixed_features": measured_fixed_features(),
                                         "prepared_cfm_sha256": prepared_data_digest()}, indent=1) + "\n")
        print(f"wrote {CROSS_CPU}")
