"""Seconds per training epoch, on this machine, of the experiment groups the reproduction report did
not run (MNIST/CIFAR-10 groups, CNNs, ResNets, `original`), so a reader can plan them.

    python benchmarks/epoch_costs.py [--out docs/reproduction/epoch_costs.csv] [--batches 2] [--min-seconds 2]
    python benchmarks/epoch_costs.py --only original    # re-measure one group, keep the others' rows

For every distinct model of a group (its runs differ only in lr) the script builds the model as the
run would and trains it on one thread on random inputs of the run's real shape: a warm-up batch, then
rounds of --batches batches until --min-seconds of CPU time are measured; the time per batch is scaled
to a whole epoch. It is the process's CPU time (what an idle core takes in wall time), so other work on
the machine does not inflate it. Training steps only: the final measurement and the test-set forward
pass come on top. Writes one CSV row per group, model and data set; the report shows it, and the dry
run's estimates (sweep_jobs.CostModel) use it for the jobs no run of runs.csv is like.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import dependencies  # noqa: E402,F401  (one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: E402,F401  (before torch: the entry scripts' CPU kernels)

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from atomic_io import atomic_write  # noqa: E402
from config_utils import CONF_DIR, register_resolvers  # noqa: E402
from data import input_shape_of  # noqa: E402
from campaign import NOT_RUN  # noqa: E402
from sweep_jobs import epoch_cost_label, sweep_jobs, total_epochs, training_samples  # noqa: E402
from train_models import build_model, build_optimizer, train  # noqa: E402

COLUMNS = ("group", "command", "model", "seconds_per_epoch", "epochs", "runs")


def seconds_per_epoch(cfg, batches: int, min_seconds: float) -> float:
    """One epoch of cfg's training, timed on `batches` batches of random inputs of the real shape,
    repeated until at least `min_seconds` of CPU time are measured."""
    shape, classes, batch_size = input_shape_of(cfg.data), int(cfg.data.num_classes), int(cfg.batch_size)
    torch.manual_seed(0)
    model = build_model(cfg, shape, classes)
    inputs = torch.randn(batches * batch_size, *shape)
    labels = torch.arange(batches * batch_size) % classes
    optimizer = build_optimizer(cfg.optimization, model.parameters(), float(cfg.lr), float(cfg.weight_decay))
    common = {"batch_size": batch_size, "base_lr": float(cfg.lr), "schedule_cfg": None, "seed": 0,
              "progress": False}
    train(model, inputs[:batch_size], labels[:batch_size], optimizer, epochs=1, **common)   # warm-up
    started = time.process_time()   # CPU time of this one-thread process: unaffected by other processes
    rounds = 0
    while rounds == 0 or time.process_time() - started < min_seconds:
        train(model, inputs, labels, optimizer, epochs=1, **common)
        rounds += 1
    per_batch = (time.process_time() - started) / (rounds * batches)
    return per_batch * math.ceil(training_samples(cfg) / batch_size)


def group_costs(group: str, batches: int, min_seconds: float) -> list[dict]:
    """Rows (one per model, data set and training scheme) of one group's per-epoch cost."""
    ((_, jobs),), _ = sweep_jobs([group], compose_jobs=True, estimate=False)
    kinds = defaultdict(list)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for job in jobs:
            cfg = compose("config", overrides=[*job.overrides, "lr=1e-3"])
            kinds[(epoch_cost_label(cfg), total_epochs(cfg))].append(cfg)
    rows = []
    for (model, epochs), configs in kinds.items():
        distinct = {str(c.model.tag): c for c in configs}   # runs of one model differ in lr only
        seconds = [seconds_per_epoch(c, batches, min_seconds) for c in distinct.values()]
        per_run = sum(seconds) / len(seconds)
        print(f"{group}: {model}: {per_run:.3f} s per epoch ({len(configs)} runs)", flush=True)
        rows.append({"group": group, "command": f"sh run_experiments.sh {group}", "model": model,
                     "seconds_per_epoch": f"{per_run:.4g}", "epochs": epochs, "runs": len(configs)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "reproduction" / "epoch_costs.csv",
                        help="the CSV table written (default: docs/reproduction/epoch_costs.csv)")
    parser.add_argument("--only", nargs="*", metavar="GROUP",
                        help="measure only these groups and replace their rows in an existing --out table")
    parser.add_argument("--batches", type=int, default=2, help="batches per timed round (default 2)")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="time rounds until this much CPU time is measured per model (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    register_resolvers()
    rows = []
    if args.only and args.out.is_file():   # keep the other groups' rows
        with open(args.out, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["group"] not in args.only]
    for group, _ in NOT_RUN:
        if args.only and group not in args.only:
            continue
        rows += group_costs(group, args.batches, args.min_seconds)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(args.out, lambda tmp: tmp.write_text(buffer.getvalue()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
