"""On a machine with a CUDA GPU: the main job and one VGG13 epoch as whole processes on the GPU (twice
each, to check that D comes out identical) and on the CPU, with wall times and step timings.

    python benchmarks/bench_cuda.py [--only main|vgg13] [--skip-cpu-vgg]   (VGG13 needs fashion_mnist data)

Prints one line per process and a verdict per pair; exits with status 1 when two GPU runs of the same
command disagree.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB = ("data=cfm", "model=GFNN", "layer_num=6")
VGG_EPOCH = ("data=fashion_mnist", "model=VGG13", "layer_num=11", "epochs=1")


def run(overrides: tuple[str, ...], device: str, scratch: Path, tag: str) -> dict:
    """One whole process; returns its results.json with the wall time added."""
    command = [sys.executable, str(REPO_ROOT / "representation_dynamics_terminal.py"), *overrides,
               f"device={device}", "threads=0" if device == "cpu" else "threads=1", "progress=false",
               f"log_root={scratch}/{tag}", f"figures_dir={scratch}/figures", "download=false"]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{tag}: exit {completed.returncode}: {completed.stderr.strip()[-800:]}")
    results = json.loads(Path(completed.stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text())
    timings = ", ".join(f"{key} {value:.2f}" for key, value in results["timings"].items())
    fit = results["fit"] or {}
    print(f"{tag:14s} {results['device']:7s} wall {seconds:6.2f} s ({timings}); r {fit.get('pearson_r')}, "
          f"test accuracy {results['test_accuracy']}", flush=True)
    return results


def max_relative_difference(first: dict, second: dict) -> float:
    pairs = [(a["D"], b["D"]) for a, b in zip(first["layers"] + first["test_layers"],
                                              second["layers"] + second["test_layers"])]
    return max(abs(a - b) / abs(a) for a, b in pairs if math.isfinite(a) and a != 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-cpu-vgg", action="store_true", help="leave out the VGG13 epoch on the CPU")
    parser.add_argument("--only", choices=("main", "vgg13"), help="run one of the two commands only")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, {torch.get_num_threads()} CPU threads")
    disagreements = 0
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name, overrides, cpu in (("main", MAIN_JOB, True), ("vgg13", VGG_EPOCH, not args.skip_cpu_vgg)):
            if args.only not in (None, name):
                continue
            first = run(overrides, "cuda", scratch, f"{name}-cuda-1")
            second = run(overrides, "cuda", scratch, f"{name}-cuda-2")
            same = first["layers"] == second["layers"] and first["test_layers"] == second["test_layers"] \
                and first["fit"] == second["fit"] and first["test_accuracy"] == second["test_accuracy"]
            disagreements += not same
            print(f"{name}: two GPU runs {'give identical D, fits and accuracies' if same else 'DIFFER'}")
            if cpu:
                on_cpu = run(overrides, "cpu", scratch, f"{name}-cpu")
                print(f"{name}: GPU against CPU, largest relative difference of D: "
                      f"{max_relative_difference(first, on_cpu):.2e} (different kernels; not expected equal)")
    raise SystemExit(1 if disagreements else 0)


if __name__ == "__main__":
    main()
