"""Whole-process time of the main job, step by step, against the bare loop's process; what start-up and
the optimizer cost; the training step against the bare loop in one process (--loop).

    python benchmarks/bench_process.py [--repeats 3] [--before /work/bench-before] [--optimizers]
    python benchmarks/bench_process.py --loop 600 --repeats 3    # the training step against the bare loop

Runs `python representation_dynamics_terminal.py data=cfm model=GFNN layer_num=6` (the plain main
command, into a scratch folder, force=true) as a separate process `--repeats` times and prints the median
wall time with its breakdown: start-up (interpreter, imports, Hydra's composition: wall time minus the
steps), then the steps results.json times (validate, setup, train, measure, write). Beside it, as many
whole processes of the same training as a bare PyTorch loop (benchmarks/bare_loop.py: same model, data,
batches, steps and fused Adam, one thread; no schedule, bookkeeping, measuring or writing), and with
--before the main command of another checkout (a git worktree of an older commit, e.g. `git worktree add
/work/bench-before b84b03a`), the three interleaved so that they share the machine's load; the ratios
main/bare are printed. It also times bare imports in fresh processes. --optimizers times training alone
in this process with torch's fused, foreach and single-tensor Adam and says whether each gives the fused
one's loss bit for bit.
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
MAIN_COMMAND = ["data=cfm", "model=GFNN", "layer_num=6"]
STEPS = ("validate", "setup", "train", "measure", "write")


def wall(command: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=True)
    return time.perf_counter() - started, completed.stdout


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main_command(root: Path, scratch: Path) -> dict:
    """One process of the main command of the checkout at `root`: its wall time and step timings."""
    seconds, stdout = wall([sys.executable, str(root / "representation_dynamics_terminal.py"), *MAIN_COMMAND,
                            f"log_root={scratch}/logs", f"figures_dir={scratch}/figures", "progress=false",
                            "force=true"], scratch)
    results = json.loads(Path(stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text())
    timings = results["timings"]
    return {"wall": seconds, "start-up": seconds - sum(timings.values()),
            **{step: timings.get(step, 0.0) for step in STEPS}}


def bare_settings(scratch: Path, overrides: list[str]) -> Path:
    """The main command's training as benchmarks/bare_loop.py's settings, saved for its process."""
    sys.path.insert(0, str(REPO_ROOT))
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import cpu_kernels  # noqa: F401
    import torch
    from hydra import compose, initialize_config_dir

    from bare_loop import settings_of
    from config_utils import CONF_DIR, register_resolvers
    from data import prepare_dataset

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "device=cpu"])
    dataset = prepare_dataset(cfg.data, Path(cfg.data_root), int(cfg.seed), torch.device("cpu"), False)
    path = scratch / "bare-settings.pt"
    torch.save(settings_of(cfg, dataset.train_x, dataset.train_y), path)
    return path


def bare_process(settings: Path, scratch: Path) -> dict:
    seconds, stdout = wall([sys.executable, str(REPO_ROOT / "benchmarks" / "bare_loop.py"), str(settings)], scratch)
    return {"wall": seconds, "train": float(stdout.split("bare training: ")[1].split()[0])}


def median_line(label: str, rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows]
    return f"  {label:9s} {statistics.median(values):7.2f}   ({', '.join(f'{v:.2f}' for v in values)})"


def main_job(repeats: int, before: Path | None = None) -> None:
    variants = {"after": REPO_ROOT, **({"before": before} if before else {})}
    rows = {name: [] for name in variants}
    bare = []
    print(f"at the start: {load()}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        settings = bare_settings(scratch, MAIN_COMMAND)
        for _ in range(repeats):   # interleaved: each variant sees the same load
            for name, root in variants.items():
                (scratch / name).mkdir(exist_ok=True)
                rows[name].append(main_command(root, scratch / name))
            bare.append(bare_process(settings, scratch))
    for name, root in variants.items():
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        print(f"plain main command ({' '.join(MAIN_COMMAND)}), {name} ({root}, {commit}), {repeats} processes, "
              "median seconds:")
        for key in ("wall", "start-up", *STEPS):
            print(median_line(key, rows[name], key))
        before_training = statistics.median(row["validate"] + row["setup"] for row in rows[name])
        print(f"  before the first training step (validate + setup): {before_training:.2f} s")
    print(f"bare loop (benchmarks/bare_loop.py, the same training), {repeats} processes, median seconds:")
    print(median_line("wall", bare, "wall"))
    print(median_line("train", bare, "train"))
    bare_wall = statistics.median(row["wall"] for row in bare)
    for name in variants:
        wall_seconds = statistics.median(row["wall"] for row in rows[name])
        print(f"  main command {name}: {wall_seconds / bare_wall:.2f}x the bare loop's process "
              f"({wall_seconds:.2f} s / {bare_wall:.2f} s)")
    print(f"at the end: {load()}")


def imports(repeats: int) -> None:
    for statement in ("pass", "import torch", "import torch, torch._dynamo", "import hydra, omegaconf",
                      "import matplotlib.pyplot", "import experiment"):
        times = [wall([sys.executable, "-c", statement], REPO_ROOT)[0] for _ in range(repeats)]
        print(f"  python -c {statement!r:34s} median {statistics.median(times):.2f} s")


def loop(epochs: int, repeats: int) -> None:
    """The main job's training step (experiment.train_step: schedule, loss bookkeeping, curves, log lines)
    against bare_loop.bare_run of the same training, in this process, interleaved, after one warm-up each."""
    sys.path.insert(0, str(REPO_ROOT))
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from hydra import compose, initialize_config_dir

    from bare_loop import bare_run, settings_of
    from config_utils import CONF_DIR, register_resolvers
    from experiment import set_up, train_step

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*MAIN_COMMAND, f"epochs={epochs}", "progress=false", "device=cpu"])
    project, bare = [], []
    for repeat in range(repeats + 1):
        run = set_up(cfg)
        started = time.perf_counter()
        train_step(cfg, run)
        seconds = time.perf_counter() - started
        bare_seconds = bare_run(settings_of(cfg, run.dataset.train_x, run.dataset.train_y))
        if repeat:   # the first of each: warm-up
            project.append(seconds)
            bare.append(bare_seconds)
    print(f"training in this process, {epochs} epochs, median of {repeats} after a warm-up, {load()}:")
    print(f"  train_step {statistics.median(project):.3f} s ({', '.join(f'{v:.3f}' for v in project)})")
    print(f"  bare loop  {statistics.median(bare):.3f} s ({', '.join(f'{v:.3f}' for v in bare)})")
    print(f"  ratio {statistics.median(project) / statistics.median(bare):.3f}")


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
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also run the main command of this checkout (a git worktree of an older commit)")
    parser.add_argument("--no-imports", action="store_true", help="skip the bare imports' times")
    parser.add_argument("--loop", type=int, metavar="EPOCHS",
                        help="only compare the training step with the bare loop in this process, at EPOCHS")
    args = parser.parse_args()
    if args.loop:
        loop(args.loop, args.repeats)
        raise SystemExit(0)
    main_job(args.repeats, args.before)
    if args.no_imports:
        raise SystemExit(0)
    print("imports in a fresh process:")
    imports(args.repeats)
    if args.optimizers:
        print("training alone, in this process:")
        optimizers()
