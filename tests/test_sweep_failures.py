"""Sweeps that go wrong finish and say how they went: run_experiments.sh with one failed job, with every
job failed, with a job the entry point refuses (exit 2: the queue stops after it, with its one-line
reason), and interrupted (SIGINT, SIGTERM, SIGHUP to the script: the running jobs get SIGTERM). Each
ends with the closing summary (N finished, M failed, K not run), a matching exit status and nothing
half-written: no queue state, no temporary file, no results of a stopped run. The GPU queues (a fake
nvidia-smi) end their logs the same way. The SLURM launcher without SLURM refuses in one line, and
scripts/local_slurm.sh runs under sh.

    .venv/bin/python -m pytest -q tests/test_sweep_failures.py

Most jobs are a fake interpreter (PYTHON, a shell stub: a fraction of a second per call); one test
interrupts a real tiny training (data=cfm, cached in embedded/) to see that it leaves no partial run.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from queue_logs import queue_statistics
from tests.child_processes import default_signals, running
from tests.test_shell_hardening import STUB_PLAN

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_EXPERIMENTS = REPO_ROOT / "run_experiments.sh"
ENTRY = REPO_ROOT / "representation_dynamics_terminal.py"
NVIDIA_SMI = """#!/bin/sh
echo "GPU 0: Fake GPU (UUID: GPU-1234-abcd)"
echo "GPU 1: Fake GPU (UUID: GPU-5678-abcd)"
"""
# The fake interpreter. `sweep_jobs.py ARGS` (the planner) prints a plan of STUB_JOBS jobs (default 4),
# each `STUB job.py n=K >> LOG_ROOT/jobs/jK.log 2>&1`; job K does what STUB_OUTCOME_K says: ok (the
# default), fail (exit 1), refuse (the entry point's one `error:` line, exit 2) or slow (notes its pid in
# BIN/jK.pid, then sleeps for STUB_SLEEP seconds, as itself: exec).
PYTHON_STUB = r"""#!/bin/sh
here=$(dirname "$0")
if [ "$1" = sweep_jobs.py ]; then
""" + STUB_PLAN + r"""fi
[ "$1" = -c ] && exit 0
n=${2#n=}
outcome=$(printenv "STUB_OUTCOME_$n" || echo ok)
echo "job $n: $outcome"
case $outcome in
    ok) exit 0 ;;
    fail) echo "Traceback (most recent call last): boom" >&2; exit 1 ;;
    refuse) echo "error: dataset 'mnist' is not available: searched /nowhere" >&2; exit 2 ;;
    slow) echo $$ > "$here/j$n.pid"; exec sleep "${STUB_SLEEP:-1}" ;;
esac
"""
INHERITED = ("GPUS", "CUDA_VISIBLE_DEVICES", "JOBS", "FORCE", "PYTHON", "TMPDIR", "STUB_JOBS", "STUB_SLEEP")
SUMMARY = re.compile(r"^summary: (\d+) finished, (\d+) failed, (?:(\d+) stopped, )?(\d+) not run \(of (\d+) jobs",
                     re.MULTILINE)


class Sweep:
    """The fake interpreter and nvidia-smi in tmp_path/bin, TMPDIR=tmp_path/tmp, logs in tmp_path/logs."""

    def __init__(self, root: Path):
        self.bin, self.tmp, self.logs = root / "bin", root / "tmp", root / "logs"
        self.jobs = self.logs / "jobs"
        self.bin.mkdir()
        self.tmp.mkdir()
        for name, text in (("nvidia-smi", NVIDIA_SMI), ("python", PYTHON_STUB)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)

    def environment(self, **env: str) -> dict[str, str]:
        environment = {key: value for key, value in os.environ.items()
                       if key not in INHERITED and not key.startswith("STUB_OUTCOME_")}
        environment.update({"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(self.bin / "python"),
                            "TMPDIR": str(self.tmp), "GPUS": "", **env})
        return environment

    def command(self, *arguments: str) -> list[str]:
        return ["sh", str(RUN_EXPERIMENTS), "g", f"log_root={self.logs}", *arguments]

    def run(self, *arguments: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*arguments), cwd=REPO_ROOT, env=self.environment(**env),
                              capture_output=True, text=True, timeout=60)

    def queue_log(self, pattern: str = "run-*.log") -> Path:
        (log,) = self.jobs.glob(pattern)
        return log

    def assert_nothing_left(self) -> None:
        """Only the queue's jobs and log files and the jobs' logs: no state folder, no temporary file."""
        assert [path.name for path in self.jobs.iterdir() if not path.name.endswith((".log", ".jobs"))] == []
        assert list(self.tmp.iterdir()) == []


@pytest.fixture
def sweep(tmp_path) -> Sweep:
    return Sweep(tmp_path)


def summary(text: str) -> tuple[int, int, int, int, int]:
    """(finished, failed, stopped, not run, jobs) from the one summary line of a queue's output."""
    (match,) = SUMMARY.findall(text)
    return tuple(int(number or 0) for number in match)


def outcomes(**by_job: str) -> dict[str, str]:
    return {f"STUB_OUTCOME_{job.lstrip('j')}": outcome for job, outcome in by_job.items()}


# ------------------------------------------------------------------------------------- the CPU queue
def test_one_failed_job_among_finished_ones(sweep):
    completed = sweep.run(JOBS="2", **outcomes(j2="fail"))
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert summary(completed.stdout) == (3, 1, 0, 0, 4)
    assert f"logs of the failed jobs:\n  {sweep.jobs}/j2.log (exit 1)\n" in completed.stdout
    assert "rerun the same command" in completed.stdout and "done:" not in completed.stdout
    assert completed.stderr == ""
    # progress per job: [k/N], the time it took, the jobs done and the time left
    for k in (1, 2, 3, 4):
        assert re.search(rf"\] start: \[{k}/4\] '{re.escape(str(sweep.bin))}/python' job.py n={k} ", completed.stdout)
        assert re.search(rf"\] exit [01]: \[{k}/4\] j{k} after \d+s; [1-4]/4 done in \d+s", completed.stdout)
    assert len(re.findall(r"about \d+s left", completed.stdout)) == 3          # not after the last one
    # the queue log holds the same lines, and the report still reads its wall time and job count
    log = sweep.queue_log()
    assert summary(log.read_text()) == (3, 1, 0, 0, 4)
    assert queue_statistics([log])["jobs"] == 4
    sweep.assert_nothing_left()


def test_every_job_failed(sweep):
    completed = sweep.run(JOBS="2", **outcomes(j1="fail", j2="fail", j3="fail", j4="fail"))
    assert completed.returncode == 1
    assert summary(completed.stdout) == (0, 4, 0, 0, 4)
    assert completed.stdout.count(" (exit 1)\n") == 4 and completed.stdout.count("] start: ") == 4
    sweep.assert_nothing_left()


def test_every_job_finished(sweep):
    completed = sweep.run(JOBS="3", STUB_JOBS="7")
    assert completed.returncode == 0 and completed.stderr == ""
    assert summary(completed.stdout) == (7, 0, 0, 0, 7) and "done: 7 jobs." in completed.stdout
    done = sorted(int(m) for m in re.findall(r"; (\d)/7 done in", completed.stdout))
    assert done == [1, 2, 3, 4, 5, 6, 7]                                       # each job its own place
    sweep.assert_nothing_left()


def test_a_refusal_stops_the_queue_after_its_first_job(sweep):
    # a missing dataset: every job would be refused; one is run, its one-line reason shown, not six
    refusing = outcomes(**{f"j{n}": "refuse" for n in range(1, 7)})
    completed = sweep.run(JOBS="1", STUB_JOBS="6", **refusing)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert completed.stdout.count("] start: ") == 1
    assert summary(completed.stdout) == (0, 1, 0, 5, 6)
    assert ("stopped after a refused job: j1: error: dataset 'mnist' is not available: searched /nowhere\n"
            in completed.stdout)
    assert completed.stdout.count("error: dataset") == 1
    assert not (sweep.jobs / "j2.log").exists()
    sweep.assert_nothing_left()


def test_a_refusal_lets_the_jobs_beside_it_finish(sweep):
    completed = sweep.run(JOBS="2", STUB_JOBS="6", STUB_SLEEP="2", **outcomes(j1="refuse", j2="slow"))
    assert completed.returncode == 2
    assert completed.stdout.count("] start: ") == 2                            # no third job started
    assert "] exit 0: [2/6] j2 after " in completed.stdout
    assert summary(completed.stdout) == (1, 1, 0, 4, 6)
    sweep.assert_nothing_left()


@pytest.mark.parametrize("sent, to_group", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGHUP, False),
                                             (signal.SIGINT, True), (signal.SIGTERM, True)])
def test_an_interrupted_queue_stops_its_jobs_and_says_so(sweep, sent, to_group):
    # to the script alone (kill PID), or to its whole process group (Ctrl-C in a terminal, kill -- -PID)
    process = subprocess.Popen(sweep.command(), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=sweep.environment(JOBS="2", STUB_JOBS="5", STUB_SLEEP="60",
                                                                **outcomes(j1="slow", j2="slow")),
                               start_new_session=to_group, preexec_fn=default_signals)
    pid_files = [sweep.bin / "j1.pid", sweep.bin / "j2.pid"]
    deadline = time.monotonic() + 30
    while not all(path.exists() and path.read_text().strip() for path in pid_files):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    jobs = [int(path.read_text()) for path in pid_files]
    time.sleep(0.2)                                                             # the stubs' exec of sleep
    started = time.monotonic()
    if to_group:
        os.killpg(process.pid, sent)
    else:
        process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=20)
    assert time.monotonic() - started < 10                                      # at once, not after the jobs
    assert process.returncode == -sent, stdout + stderr                        # died of the signal
    assert not any(running(pid) for pid in jobs)                               # the jobs were stopped
    assert f"interrupted ({sent.name}): stopping the queue" in stdout
    assert stdout.count("] exit 143: ") == 2
    assert summary(stdout) == (0, 0, 2, 3, 5)
    assert summary(sweep.queue_log().read_text()) == (0, 0, 2, 3, 5)
    assert "rerun the same command to go on" in stdout
    sweep.assert_nothing_left()


def test_an_interrupted_real_job_leaves_no_partial_run(tmp_path):
    # a real tiny training stopped while it trains: the entry point unwinds on SIGTERM, so its run folder
    # holds no results and no temporary file; the rerun can then redo it
    logs = tmp_path / "logs"
    command = ["sh", str(RUN_EXPERIMENTS), "lr", "lr=0.01,0.03", "epochs=2000", "hidden_size=8", "progress=false",
               f"log_root={logs}", f"figures_dir={tmp_path / 'figures'}"]
    environment = {key: value for key, value in os.environ.items() if key not in INHERITED}
    environment.update(GPUS="", JOBS="1", PYTHON=sys.executable)
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    job_log = logs / "jobs" / "lr-lr=0.01.log"
    deadline = time.monotonic() + 120
    while not (job_log.exists() and "epoch " in job_log.read_text()):          # it trains
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM, stdout + stderr
    assert "] exit 143: [1/2] lr-lr=0.01 after " in stdout
    assert summary(stdout) == (0, 0, 1, 1, 2)
    (run_dir,) = [path for path in logs.iterdir() if path.name != "jobs" and not path.name.startswith(".")]  # not .training-locks
    assert not (run_dir / "results.json").exists()
    assert [path.name for path in tmp_path.rglob("*") if ".tmp" in path.name] == []
    assert sorted(path.suffix for path in (logs / "jobs").iterdir()) == [".jobs", ".log", ".log"]


# ------------------------------------------------------------------------------------ the GPU queues
def wait_for_summaries(sweep: Sweep, count: int) -> list[Path]:
    deadline = time.monotonic() + 30
    while True:
        logs = sorted(sweep.jobs.glob("queue-*.log"))
        if len(logs) == count and all(SUMMARY.search(log.read_text()) for log in logs):
            break
        assert time.monotonic() < deadline, [log.read_text() for log in logs]
        time.sleep(0.05)
    deadline = time.monotonic() + 10                                            # the state folder goes last
    while [path for path in sweep.jobs.iterdir() if path.name.endswith(".state")]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return logs


def test_gpu_queues_stop_on_a_refusal_and_end_with_a_summary(sweep):
    # jobs dealt round-robin: gpu0 runs j1 (refused) and j3, gpu1 runs j2 and j4 (failed)
    started = sweep.run(GPUS="0 1", **outcomes(j1="refuse", j4="fail"))
    assert started.returncode == 0, started.stderr
    assert "stop:    kill PID" in started.stdout
    gpu0, gpu1 = wait_for_summaries(sweep, 2)
    text0, text1 = gpu0.read_text(), gpu1.read_text()
    assert gpu0.name.endswith("-gpu0.log") and text0.count("] start: ") == 1
    assert "stopped after a refused job: j1: error: dataset 'mnist' is not available" in text0
    assert summary(text0) == (0, 1, 0, 1, 2)
    assert summary(text1) == (1, 1, 0, 0, 2) and f"  {sweep.jobs}/j4.log (exit 1)" in text1
    assert "] exit 0: [1/2] j2 after " in text1
    sweep.assert_nothing_left()


def test_a_killed_gpu_queue_stops_its_job_and_ends_its_log(sweep):
    started = sweep.run(GPUS="1", STUB_JOBS="3", STUB_SLEEP="60", **outcomes(j1="slow"))
    assert started.returncode == 0, started.stderr
    queue = int(re.search(r"queue gpu1: 3 jobs, pid (\d+),", started.stdout)[1])
    pid_file = sweep.bin / "j1.pid"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = int(pid_file.read_text())
    time.sleep(0.2)
    os.kill(queue, signal.SIGTERM)                                              # as the script says: kill PID
    (log,) = wait_for_summaries(sweep, 1)
    text = log.read_text()
    assert "stopping the queue (SIGTERM)" in text and "] exit 143: [1/3] j1 after " in text
    assert summary(text) == (0, 0, 1, 2, 3)
    assert not running(job)
    sweep.assert_nothing_left()


# ----------------------------------------------------------------------------------- SLURM, no SLURM
def test_the_slurm_launcher_without_slurm_refuses_in_one_line(tmp_path):
    empty = tmp_path / "bin"                                                    # a PATH without sbatch or srun
    empty.mkdir()
    logs = tmp_path / "logs"
    completed = subprocess.run([sys.executable, str(ENTRY), "-m", "+experiment=fig1", "hydra/launcher=slurm",
                                f"log_root={logs}", f"figures_dir={tmp_path / 'figures'}"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PATH": str(empty)})
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.startswith("error: hydra/launcher=slurm: no SLURM found (sbatch, srun not on PATH); "
                                       "allowed: ")
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr
    assert "scripts/local_slurm.sh up" in completed.stderr and "hydra/launcher=joblib" in completed.stderr
    assert not logs.exists()                                                    # no sweep folder, no run


def test_the_slurm_launcher_looks_for_sbatch_and_srun_on_path(tmp_path, monkeypatch):
    from hydra_plugins.slurm_queue_launcher.slurm_queue_launcher import missing_slurm_programs

    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_slurm_programs() == ["sbatch", "srun"]
    (tmp_path / "sbatch").write_text("#!/bin/sh\n")
    (tmp_path / "sbatch").chmod(0o755)
    assert missing_slurm_programs() == ["srun"]


def test_local_slurm_runs_under_sh_as_documented():
    # dash has no `set -o pipefail`: the script runs itself again with bash; its usage and status answer
    for shell in ("sh", "bash"):
        usage = subprocess.run([shell, "scripts/local_slurm.sh"], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=30)
        assert usage.returncode == 2 and usage.stderr == "usage: scripts/local_slurm.sh up|down|status\n"
        status = subprocess.run([shell, "scripts/local_slurm.sh", "status"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=30, env={**os.environ, "LOCAL_SLURM_DIR": "/nonexistent/slurm"})
        assert status.returncode == 3 and "Illegal option" not in status.stderr, status.stderr
        assert status.stdout.startswith("local_slurm: munged not running\n")
