"""Whole-process time of the main job, step by step, and what start-up and the optimizer cost.

    python benchmarks/bench_process.py [--repeats 3] [--optimizers]

Runs `python representation_dynamics_terminal.py data=cfm model=GFNN layer_num=6` (the plain main
command, into a scratch folder, force=true) as a separate process `--repeats` times and prints the median
wall time with its breakdown: start-up (interpreter, imports, Hydra's composition: wall time minus the
steps), then the steps results.json times (validate, setup, train, measure, write). It also times bare
imports in fresh processes. --optimizers times training alone in this process with torch's fused,
foreach and single-tensor Adam and says whether each gives the fused one's loss bit for bit.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MAIN_COMMAND = ["data=cfm", "model=GFNN", "layer_num=6"]
STEPS = ("validate", "setup", "train", "measure", "write")


def wall(command: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=True)
    return time.perf_counter() - started, completed.stdout


def main_job(repeats: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            seconds, stdout = wall([sys.executable, str(REPO_ROOT / "representation_dynamics_terminal.py"),
                                    *MAIN_COMMAND, f"log_root={scratch}/logs", f"figures_dir={scratch}/figures",
                                    "progress=false", "force=true"], Path(scratch))
            results = json.loads(Path(stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text())
            timings = results["timings"]
            rows.append({"wall": seconds, "start-up": seconds - sum(timings.values()),
                         **{step: timings.get(step, 0.0) for step in STEPS}})
    print(f"plain main command ({' '.join(MAIN_COMMAND)}), {repeats} processes, median seconds:")
    for key in ("wall", "start-up", *STEPS):
        values = [row[key] for row in rows]
        print(f"  {key:9s} {statistics.median(values):7.2f}   ({', '.join(f'{v:.2f}' for v in values)})")
    before = statistics.median(row["validate"] + row["setup"] for row in rows)
    print(f"  before the first training step (validate + setup): {before:.2f} s")


def imports(repeats: int) -> None:
    for statement in ("pass", "import torch", "import torch, torch._dynamo", "import hydra, omegaconf",
                      "import matplotlib.pyplot", "import experiment"):
        times = [wall([sys.executable, "-c", statement], REPO_ROOT)[0] for _ in range(repeats)]
        print(f"  python -c {statement!r:34s} median {statistics.median(times):.2f} s")


def optimizers(epochs: int = 150) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    import torch
    from hydra import compose, initialize_config_dir

    import train_models
    from config_utils import CONF_DIR, register_resolvers
    from experiment import set_up, train_step

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*MAIN_COMMAND, f"epochs={epochs}", "progress=false", "device=cpu"])
    losses = {}
    for variant in ("fused", "foreach", "single"):
        def adam(_optimization_cfg, parameters, lr, weight_decay, variant=variant):
            flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}
            return torch.optim.Adam(list(parameters), lr=lr, weight_decay=weight_decay, **flags[variant])
        train_models.build_optimizer = adam  # this process only
        run = set_up(cfg)
        started = time.perf_counter()
        trained = train_step(cfg, run)
        losses[variant] = trained.outcome.loss_history
        same = "bitwise equal to fused" if losses[variant] == losses["fused"] else "differs from fused"
        print(f"  Adam {variant:8s} {epochs} epochs: {time.perf_counter() - started:.2f} s ({same})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3,
                        help="processes of the main job and of each import (default 3)")
    parser.add_argument("--optimizers", action="store_true",
                        help="also time fused, foreach and single-tensor Adam and compare their losses")
    args = parser.parse_args()
    main_job(args.repeats)
    print("imports in a fresh process:")
    imports(args.repeats)
    if args.optimizers:
        print("training alone, in this process:")
        optimizers()
