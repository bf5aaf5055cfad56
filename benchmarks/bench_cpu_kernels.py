"""What pinning the CPU kernels to AVX2 (cpu_kernels.py) costs: the main job as whole processes, pinned
against the CPU's widest kernels, alternating, with the training seconds results.json records.

    python benchmarks/bench_cpu_kernels.py [--repeats 3] [--epochs 600] [--command data=cfm model=GFNN ...]

Prints per mode the kernels torch used, the median wall and training seconds, and whether the two modes
give the same final training loss (they do not on a CPU with AVX-512: that is why the pin exists).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = {"pinned (AVX2)": {},
         "widest": {"PIN_CPU_KERNELS": "0"}}


def run(overrides: list[str], environment: dict, scratch: Path) -> tuple[float, dict]:
    command = [sys.executable, str(REPO_ROOT / "representation_dynamics_terminal.py"), *overrides,
               f"log_root={scratch}/logs", f"figures_dir={scratch}/figures", "progress=false", "force=true",
               "threads=1", "device=cpu"]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, cwd=scratch, check=True,
                               env={**os.environ, **environment})
    seconds = time.perf_counter() - started
    results = Path(completed.stdout.strip().splitlines()[-1].removeprefix("results: "))
    return seconds, json.loads(results.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="processes per mode, alternating (default 3)")
    parser.add_argument("--epochs", type=int, default=600, help="epochs of each run (default 600)")
    parser.add_argument("--command", nargs="*", default=["data=cfm", "model=GFNN", "layer_num=6"],
                        metavar="KEY=VALUE", help="the run's overrides (default: data=cfm model=GFNN layer_num=6)")
    args = parser.parse_args()
    overrides = [*args.command, f"epochs={args.epochs}"]
    walls, trains, losses, kernels = ({mode: [] for mode in MODES} for _ in range(4))
    pinned = [name for name in os.environ if name in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                                                      "ONEDNN_MAX_CPU_ISA")]
    if pinned:
        raise SystemExit(f"error: unset {', '.join(pinned)} first (the modes set them)")
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for mode, environment in MODES.items():   # alternating, so load changes hit both alike
                seconds, results = run(overrides, environment, Path(scratch))
                walls[mode].append(seconds)
                trains[mode].append(results["timings"]["train"])
                losses[mode].append(results["final_train_loss"])
                kernels[mode].append(results["machine"]["cpu_kernels"])
    print(f"{' '.join(overrides)}, {args.repeats} repeats, one thread")
    for mode in MODES:
        print(f"{mode:>14}: kernels {kernels[mode][0]}, wall {statistics.median(walls[mode]):.2f} s, "
              f"training {statistics.median(trains[mode]):.2f} s, final loss {losses[mode][0]!r}")
    first, second = (losses[mode][0] for mode in MODES)
    print("same final loss bit for bit:", first == second)


if __name__ == "__main__":
    main()
