"""SLURM for real: a preset sweep through `hydra/launcher=slurm` on whatever cluster `sbatch` reaches (CI
starts a one-node one with scripts/local_slurm.sh). One job of it cancelled with scancel while it trains
leaves no partial file, the next submission redoes it and skips the finished one, and a third identical
submission trains nothing. Where no cluster answers, the test skips and says why (pytest -rs). One
sequence of three submissions, not three tests, because each submission costs seconds of Python and
torch start-up, in the submitting command and in every job.

Jobs ask for no GPU, one core and 2 GB (the CPU-partition recipe: SLURM_GPUS_PER_NODE=0) on the partition
in $SLURM_PARTITION, else the cluster's default one. Every run uses the default cfm data (100 images per
class, seed 666), whose cache ships in embedded/, so no job needs a dataset on disk; data_root,
log_root and figures_dir are in the test's tmp_path.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config_utils import CONF_DIR, run_name

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY = REPO_ROOT / "representation_dynamics_terminal.py"
RUN_OUTPUTS = ("results.json", "profile.png", "checkpoint.pt", "dynamics.png")
LOCAL_CLUSTER_HINT = "as root, `scripts/local_slurm.sh up` starts a one-node cluster"


def _cluster_partition() -> tuple[str | None, str]:
    """(partition, '') where sbatch can submit a 1-core, 2 GB, GPU-less job; else (None, why not)."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return None, f"no SLURM client (sbatch) on this machine; {LOCAL_CLUSTER_HINT}"
    partition = os.environ.get("SLURM_PARTITION")
    if not partition:
        try:
            listed = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True,
                                    timeout=20)
        except subprocess.TimeoutExpired:
            return None, "sinfo got no answer from a SLURM controller within 20 s"
        defaults = [name.rstrip("*") for name in listed.stdout.split() if name.endswith("*")]
        if listed.returncode != 0 or not defaults:
            reason = listed.stderr.strip().splitlines()[-1:] or ["no default partition"]
            return None, f"no SLURM cluster answers (sinfo: {reason[0]}); {LOCAL_CLUSTER_HINT}"
        partition = defaults[0]
    try:
        probe = subprocess.run(["sbatch", "--test-only", f"--partition={partition}", "--cpus-per-task=1",
                                "--mem=2G", "--time=10", "--wrap=true"], capture_output=True, text=True,
                               timeout=20)
    except subprocess.TimeoutExpired:
        return None, "sbatch --test-only got no answer within 20 s"
    if probe.returncode != 0:
        return None, f"sbatch cannot submit to partition {partition!r}: {probe.stderr.strip()[-300:]}"
    return partition, ""


@pytest.fixture(scope="module")
def partition() -> str:
    name, reason = _cluster_partition()
    if name is None:
        pytest.skip(reason)
    return name


def sweep_command(tmp_path: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ENTRY), "-m", "+experiment=lr", *overrides, *common(tmp_path),
            "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
            "hydra.launcher.timeout_min=10"]


def common(tmp_path: Path) -> list[str]:
    return ["progress=false", "download=false", f"data_root={tmp_path / 'data'}",
            f"log_root={tmp_path / 'logs'}", f"figures_dir={tmp_path / 'figures'}"]


def sweep_environment(partition: str) -> dict:
    return {**os.environ, "SLURM_PARTITION": partition, "SLURM_GPUS_PER_NODE": "0"}


def submit(tmp_path: Path, partition: str, *overrides: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(sweep_command(tmp_path, *overrides), cwd=tmp_path, env=sweep_environment(partition),
                               capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    # where the cluster keeps no accounting, sacct fails; the launcher must not fill the terminal with it
    for text in (completed.stdout, completed.stderr):
        assert "sacct" not in text and "accounting storage" not in text, text[-2000:]
    return completed


def run_dir_names(tmp_path: Path, lrs: list[str], *overrides: str) -> list[str]:
    """The run directory of each lr of the sweep, named as the entry script names it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return [run_name(compose("config", overrides=["+experiment=lr", lr, *overrides, *common(tmp_path)]))
                for lr in lrs]


def job_folders(tmp_path: Path) -> set[Path]:
    """submitit's folder of every job submitted so far: <log_root>/.submitit/<job id>, named after the
    job (<array id>_<index> for a job of an array), holding the job's pickle and logs."""
    return {path.parent for path in (tmp_path / "logs" / ".submitit").glob("*/*_submitted.pkl")}


def job_output(folder: Path) -> str:
    return "".join(path.read_text() for path in folder.glob("*_log.out"))


def partial_files(run_dir: Path, figures_dir: Path) -> list[str]:
    found = [run_dir / name for name in RUN_OUTPUTS] + [figures_dir / f"{run_dir.name}.png"]
    found = [path for path in found if path.exists()]
    found += list(run_dir.glob(".*.tmp-*")) + list(figures_dir.glob(".*.tmp-*"))
    return sorted(str(path) for path in found)


@pytest.fixture
def cancel_leftovers(tmp_path):
    """After the test, cancel any job it left in the queue (a failed test must not leave work behind)."""
    yield
    ids = sorted(folder.name for folder in job_folders(tmp_path))
    if ids and shutil.which("scancel"):
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


SWEEP = ("lr=0.01,0.3", "epochs=30")  # two jobs; 30 epochs keep a job training for about a second or more
LRS = ["lr=0.01", "lr=0.3"]            # in the sweep's order, which is the order of submitit's array indices


def outputs_by_index(jobs: set[Path]) -> dict[int, str]:
    """Each job's stdout by its index in the array (<array id>_<index>), i.e. by its place in the sweep."""
    return {int(job.name.split("_")[1]): job_output(job) for job in jobs}


def test_slurm_sweep_scancel_and_resubmissions(tmp_path, partition, cancel_leftovers):
    from hydra_plugins.slurm_queue_launcher._queue_watcher import QueueWatcher

    kept_name, cancelled_name = run_dir_names(tmp_path, LRS, SWEEP[1])
    logs, figures = tmp_path / "logs", tmp_path / "figures"
    kept_results = logs / kept_name / "results.json"
    cancelled_dir = logs / cancelled_name
    cancelled_log = cancelled_dir / "representation_dynamics_terminal.log"

    # 1. The sweep. Its second job (lr=0.3) is cancelled with scancel while it trains; the first finishes.
    started = time.monotonic()
    with open(tmp_path / "submitter.out", "w") as out:
        submitter = subprocess.Popen(sweep_command(tmp_path, *SWEEP), cwd=tmp_path, env=sweep_environment(partition),
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not (cancelled_log.exists() and "training GFNN" in cancelled_log.read_text()):
            assert submitter.poll() is None, (tmp_path / "submitter.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the lr=0.3 job did not start training within 150 s"
            time.sleep(0.05)
        (job,) = [folder for folder in job_folders(tmp_path) if folder.name.endswith("_1")]
        subprocess.run(["scancel", job.name], check=True, timeout=30)
        assert not (cancelled_dir / "results.json").exists(), "the run finished before scancel reached it"

        # the launcher's watcher (squeue where there is no accounting) sees the job end, so the
        # submitting command does not wait for it for ever
        watcher = QueueWatcher(delay_s=1)
        watcher.register_job(job.name)
        while not watcher.is_done(job.name, mode="force"):
            assert time.monotonic() < deadline, f"job {job.name} still {watcher.get_state(job.name)}"
            time.sleep(0.2)
        assert watcher.get_state(job.name, mode="cache").startswith("CANCELLED")
        while not kept_results.exists():
            assert submitter.poll() is None, (tmp_path / "submitter.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the lr=0.01 job did not finish within 150 s"
            time.sleep(0.2)
        sweep_wall = time.monotonic() - started
    finally:
        os.killpg(submitter.pid, signal.SIGTERM)   # it would stop with the cancelled job's error, 15 s later
        submitter.wait(timeout=30)
    kept = json.loads(kept_results.read_text())
    assert kept["status"] == "completed" and kept["epochs_completed"] == 30 and kept["fit"] is not None
    assert (logs / kept_name / "profile.png").is_file() and (logs / kept_name / "checkpoint.pt").is_file()
    assert (figures / f"{kept_name}.png").is_file()
    assert partial_files(cancelled_dir, figures) == []
    assert "fit:" not in cancelled_log.read_text()      # stopped before measuring
    kept_mtime = kept_results.stat().st_mtime_ns

    # 2. The same sweep again: the finished run is skipped, the cancelled one is redone.
    submitted = job_folders(tmp_path)
    submit(tmp_path, partition, *SWEEP)
    second = outputs_by_index(job_folders(tmp_path) - submitted)
    assert sorted(second) == [0, 1]
    assert f"skipped: {kept_name}" in second[0] and "training GFNN" not in second[0]
    assert "training GFNN" in second[1] and "skipped" not in second[1]
    redone = json.loads((cancelled_dir / "results.json").read_text())
    assert redone["status"] == "completed" and redone["epochs_completed"] == 30
    assert kept_results.stat().st_mtime_ns == kept_mtime
    assert not list(cancelled_dir.glob(".*.tmp-*"))

    # 3. And again: every run is finished, so nothing trains and no result changes.
    mtimes = {path: path.stat().st_mtime_ns for path in logs.glob("*/results.json")}
    assert len(mtimes) == 2
    submitted = job_folders(tmp_path)
    submit(tmp_path, partition, *SWEEP)
    third = outputs_by_index(job_folders(tmp_path) - submitted)
    assert sorted(re.search(r"^skipped: (\S+)$", text, re.MULTILINE)[1] for text in third.values()) == sorted(
        [kept_name, cancelled_name])
    assert not any("training GFNN" in text for text in third.values())
    assert {path: path.stat().st_mtime_ns for path in logs.glob("*/results.json")} == mtimes
    print(f"\n2-job sweep on partition {partition}, one job cancelled: {sweep_wall:.1f} s until the other "
          f"finished")
