"""A sweep's fixed costs: the fig1 group at 100 epochs through run_experiments.sh, one job at a time,
against its nine trainings as bare loops in one process.

    python benchmarks/bench_sweep.py [--epochs 100] [--before /work/bench-before] [--repeats 1]

Runs `JOBS=1 GPUS= sh run_experiments.sh fig1 epochs=100` (into a scratch folder) with this checkout's
code (a CPU queue of warm workers, sweep_worker.py) and, with --before, with another checkout's (a git
worktree of an older commit, e.g. `git worktree add /work/bench-before b84b03a`: one process per job);
then one process that trains the nine runs' models as bare PyTorch loops (benchmarks/bare_loop.py: same
models, data, batches, steps and fused optimizers, one thread) one after another. It prints each wall
time, the ratio sweep/bare, and the sweep's cost per job beyond its training (results.json's train
timing). The load average is printed before and after: compare figures of one run only.
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
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from bench_process import load   # noqa: E402


def sweep(root: Path, scratch: Path, epochs: int) -> dict:
    """One run of the fig1 group by the run_experiments.sh of the checkout at `root`: its wall time and
    the summed step timings of its nine results.json."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("CUDA_VISIBLE_DEVICES", "FORCE", "EQUI_SEPARATION_WORKERS")}
    environment.update(JOBS="1", GPUS="", PYTHON=sys.executable)
    started = time.perf_counter()
    completed = subprocess.run(["sh", str(root / "run_experiments.sh"), "fig1", f"epochs={epochs}",
                                f"log_root={scratch}/logs", f"figures_dir={scratch}/figures"],
                               cwd=root, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{root}: run_experiments.sh failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    timings = [json.loads(path.read_text())["timings"] for path in (scratch / "logs").glob("*/results.json")]
    steps = {step: sum(t.get(step, 0.0) for t in timings) for step in ("validate", "setup", "train", "measure", "write")}
    return {"wall": seconds, "jobs": len(timings), **steps}


def bare_settings(scratch: Path, epochs: int) -> Path:
    """The nine fig1 runs' trainings as bare_loop.py settings (one file, a list)."""
    import torch
    from omegaconf import OmegaConf

    from bare_loop import settings_of
    from data import prepare_dataset
    from sweep_jobs import sweep_jobs

    groups, _ = sweep_jobs(["fig1"], [f"epochs={epochs}"], compose_jobs=True, estimate=False)
    settings = []
    for _, jobs in groups:
        for job in jobs:
            cfg = OmegaConf.create(job.config)
            dataset = prepare_dataset(cfg.data, Path(cfg.data_root), int(cfg.seed), torch.device("cpu"), False)
            settings.append(settings_of(cfg, dataset.train_x, dataset.train_y))
    path = scratch / "bare-fig1.pt"
    torch.save(settings, path)
    return path


def bare(settings: Path) -> dict:
    started = time.perf_counter()
    stdout = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bare_loop.py"), str(settings)],
                            capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - started
    trainings = [float(line.split()[2]) for line in stdout.splitlines() if line.startswith("bare training:")]
    return {"wall": seconds, "jobs": len(trainings), "train": sum(trainings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="epochs of each fig1 job (default 100)")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT", help="also sweep with this checkout's code")
    parser.add_argument("--repeats", type=int, default=1, help="times each side is run (default 1)")
    args = parser.parse_args()
    variants = {"after": REPO_ROOT, **({"before": args.before} if args.before else {})}
    rows = {name: [] for name in [*variants, "bare"]}
    print(f"at the start: {load()}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        settings = bare_settings(scratch, args.epochs)
        for repeat in range(args.repeats):   # interleaved: each sees the same load
            rows["bare"].append(bare(settings))
            for name, root in variants.items():
                rows[name].append(sweep(root, scratch / f"{name}-{repeat}", args.epochs))
    bare_wall = statistics.median(row["wall"] for row in rows["bare"])
    print(f"fig1 at epochs={args.epochs}, one job at a time (JOBS=1), median of {args.repeats}, seconds:")
    for name in rows:
        wall = statistics.median(row["wall"] for row in rows[name])
        train = statistics.median(row["train"] for row in rows[name])
        where = "" if name == "bare" else f" ({variants[name]})"
        fixed = (wall - train) / max(rows[name][0]["jobs"], 1)
        print(f"  {name:6s}{where}: wall {wall:7.2f}  training {train:6.2f}  beyond training {fixed:5.2f} per job; "
              f"{wall / bare_wall:.2f}x the bare loops' process")
    print(f"at the end: {load()}")


if __name__ == "__main__":
    main()
