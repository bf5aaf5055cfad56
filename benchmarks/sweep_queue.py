"""How long a CPU job queue takes for the reproduction sweep, in the order sweep_jobs.py used to print
the jobs (group by group) and longest first (what run_experiments.sh does now), simulated with the
measured run times of docs/reproduction/runs.csv.

    python benchmarks/sweep_queue.py [--workers 2] [--runs docs/reproduction/runs.csv]

Each worker takes the next job when it is free (xargs -P): the queue's wall time is the last finish.
Prints both wall times against the ideal, the sum of run times divided by the workers.
"""
from __future__ import annotations

import argparse
import csv
import heapq
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
import dependencies  # noqa: E402,F401  (one line, not a traceback, in a Python without the project's packages)

from sweep_jobs import sweep_jobs  # noqa: E402

GROUPS = ["fig1", "lr", "imbalanced", "depth_cfm", "width", "shape", "linearized", "nobn"]


def queue_wall_time(seconds: list[float], workers: int) -> float:
    """Finish time of a queue that hands the jobs, in this order, to the first free worker."""
    free_at = [0.0] * workers
    for duration in seconds:
        heapq.heappush(free_at, heapq.heappop(free_at) + duration)
    return max(free_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="jobs run at once, as xargs -P (default 2)")
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "docs" / "reproduction" / "runs.csv",
                        help="the measured run times (default: docs/reproduction/runs.csv)")
    args = parser.parse_args()
    with open(args.runs) as handle:
        measured = {row["run"]: float(row["wall_seconds"]) for row in csv.DictReader(handle) if row["wall_seconds"]}
    groups, _ = sweep_jobs(GROUPS, compose_jobs=True)
    jobs = [job for _, group_jobs in groups for job in group_jobs if job.run_name in measured]
    ideal = sum(measured[job.run_name] for job in jobs) / args.workers
    print(f"{len(jobs)} jobs with a measured run time, {args.workers} workers; ideal (sum / workers) "
          f"{ideal / 60:.1f} min")
    for label, order in (("group by group", jobs), ("longest first", sorted(jobs, key=lambda job: -job.cost))):
        wall = queue_wall_time([measured[job.run_name] for job in order], args.workers)
        print(f"  {label:15s} {wall / 60:6.1f} min ({100 * (wall / ideal - 1):+.1f}% over the ideal)")


if __name__ == "__main__":
    main()
