"""Wall time of `make test` from a fresh clone of a commit, as a developer or CI meets it.

    python benchmarks/bench_test_suite.py                  # HEAD, reusing this checkout's .venv
    python benchmarks/bench_test_suite.py --commit 2cc4152 --own-venv   # another commit, its own .venv

Clones the repository into a scratch folder, checks out the commit and runs `CI=true make test` there
(the real-data tests included, as CI runs them). By default the clone's .venv is a link to this
checkout's (make install then only checks it); --own-venv lets make install build one, as CI does.
Prints the wall time and pytest's summary line.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default="HEAD", help="the commit to measure (default: HEAD)")
    parser.add_argument("--own-venv", action="store_true", help="let make install build the clone's .venv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", args.commit], cwd=clone, check=True)
        if not args.own_venv:
            (clone / ".venv").symlink_to(REPO_ROOT / ".venv")
        started = time.perf_counter()
        completed = subprocess.run(["make", "test"], cwd=clone, capture_output=True, text=True,
                                   env={**os.environ, "CI": "true"})
        seconds = time.perf_counter() - started
    summary = [line for line in completed.stdout.splitlines() if " passed" in line or " failed" in line]
    print(f"{args.commit}: make test {'passed' if completed.returncode == 0 else 'FAILED'} in {seconds:.0f} s "
          f"({os.cpu_count()} cores): {summary[-1] if summary else completed.stdout[-500:]}")


if __name__ == "__main__":
    main()
