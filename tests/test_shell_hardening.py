"""Hardening II, the shell script: every value run_experiments.sh reads from the environment or its command
line is data. GPU ids never become part of a sed program, nothing is globbed or evaluated, a refused value
is one line on stderr (exit 2) before anything is planned, a MIG id's / makes no folders in the queue file
names, and the plan (the script's one temporary file) is removed however the script ends.

No GPU and no training: a fake `nvidia-smi` lists the GPUs and a fake interpreter (PYTHON, a shell stub)
plans four jobs that only print their arguments, so each call of the script takes a fraction of a second."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.child_processes import default_signals, running

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_EXPERIMENTS = REPO_ROOT / "run_experiments.sh"
OLD_MIG = "MIG-GPU-1234-abcd/1/0"                       # MIG-GPU-<GPU uuid>/<instance>/<compute instance>
NEW_MIG = "MIG-4f2b1c3d-0000-5e6f-8a9b-0123456789ab"
NVIDIA_SMI = f"""#!/bin/sh
echo "GPU 0: Fake GPU (UUID: GPU-1234-abcd)"
echo "  MIG 1g.10gb     Device  0: (UUID: {OLD_MIG})"
echo "  MIG 1g.10gb     Device  1: (UUID: {NEW_MIG})"
"""
# The fake planner's plan (shell lines inside `if [ "$1" = sweep_jobs.py ]`): STUB_JOBS (default 4) jobs
# `STUB job.py n=K >> LOG_ROOT/jobs/jK.log 2>&1`, each running this stub again; tests/test_sweep_failures.py
# builds its stub on it too.
STUB_PLAN = r"""    log_root=logs
    for argument do case $argument in log_root=*) log_root=${argument#log_root=} ;; esac; done
    jobs=${STUB_JOBS:-4}
    printf '# job logs: %s/jobs\n# group g: %s jobs\n' "$log_root" "$jobs"
    n=1
    while [ "$n" -le "$jobs" ]; do
        printf "'%s' job.py n=%s >> '%s/jobs/j%s.log' 2>&1\n" "$0" "$n" "$log_root" "$n"
        n=$((n + 1))
    done
    echo "# total: $jobs jobs"
    exit 0
"""
# The fake interpreter. `sweep_jobs.py ARGS` (the planner) notes its folder and arguments next to itself
# and prints a plan of four jobs that run this stub again; STUB_PLANNER=slow makes the planner sleep (as
# itself: exec), =fail makes it fail; STUB_JOBS=N plans N jobs. A job prints its arguments and
# CUDA_VISIBLE_DEVICES.
PYTHON_STUB = r"""#!/bin/sh
here=$(dirname "$0")
if [ "$1" = sweep_jobs.py ]; then
    pwd > "$here/planner.cwd"
    printf '%s\n' "$@" > "$here/planner.args"
    case ${STUB_PLANNER:-} in
        slow) echo $$ > "$here/planner.pid"; exec sleep 30 ;;
        fail) exit 3 ;;
    esac
""" + STUB_PLAN + r"""fi
[ "$1" = -c ] && exit 0
echo "ran $* CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"
"""
INHERITED = ("GPUS", "CUDA_VISIBLE_DEVICES", "JOBS", "FORCE", "PYTHON", "CDPATH", "TMPDIR", "MARK", "STUB_PLANNER",
             "STUB_JOBS")


class Sandbox:
    """A fake nvidia-smi and interpreter in tmp_path/bin, TMPDIR=tmp_path/tmp (where the plan is made),
    logs under tmp_path/logs and MARK=tmp_path/marker: the file an injected command would create."""

    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.tmp = root / "tmp"
        self.logs = root / "logs"
        self.marker = root / "marker"
        self.bin.mkdir()
        self.tmp.mkdir()
        for name, text in (("nvidia-smi", NVIDIA_SMI), ("python", PYTHON_STUB)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)

    def environment(self, **env: str | None) -> dict[str, str]:
        environment = {key: value for key, value in os.environ.items() if key not in INHERITED}
        environment.update(PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}", PYTHON=str(self.bin / "python"),
                           TMPDIR=str(self.tmp), MARK=str(self.marker))
        for key, value in env.items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return environment

    def run(self, *arguments: str, script: str | Path = RUN_EXPERIMENTS, cwd: Path = REPO_ROOT,
            **env: str | None) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(script), *arguments], cwd=cwd, env=self.environment(**env),
                              capture_output=True, text=True, timeout=60)

    def planned(self) -> bool:
        return (self.bin / "planner.args").exists()

    def temporary_files(self) -> list[str]:
        return sorted(path.name for path in self.tmp.iterdir())


@pytest.fixture
def box(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)


def assert_refused_in_one_line(completed: subprocess.CompletedProcess, key: str) -> None:
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert completed.stdout == ""
    assert completed.stderr.startswith(f"error: {key}=") and completed.stderr.count("\n") == 1, completed.stderr
    assert ": allowed: " in completed.stderr


# ------------------------------------------------------------------------------- GPU ids are data
# What the old script ran in a dry run (it put each id into `sed "s/^/CUDA_VISIBLE_DEVICES=$gpu /"`), or
# other shell and sed syntax: none may run a command; each is refused or shown as it is.
PAYLOADS = [
    "0;touch${IFS}$MARK;#/e;#",     # sed s///e: the old script ran the job line with this prefix, in a dry run
    "0/;etouch${IFS}$MARK;#",       # sed's e command: the old script ran `touch $MARK`
    "0/w{marker}",                  # sed's w flag: write a file
    "0/e touch {marker}",           # the example: three words
    "0\n/e;touch${IFS}$MARK",       # a line break
    "0; touch $MARK",
    "`touch $MARK`",
    "$(touch $MARK)",
    "*",                            # the old script globbed: the repository's file names became GPU ids
    "[0-9]*",
    "?",
    "0\\n1",                        # sed replacement escapes: \n made a line break, & the matched text
    "0&touch",
    "0 1",                          # plain ids: shown as they are (1 is missing)
    "-1",                           # CUDA_VISIBLE_DEVICES=-1, the usual way to hide the GPUs
]


@pytest.mark.parametrize("source", ["GPUS", "CUDA_VISIBLE_DEVICES"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_gpu_ids_never_run_a_command(box, source, payload):
    value = payload.replace("{marker}", str(box.marker))
    env = {source: value} if source == "GPUS" else {"GPUS": None, source: value}
    dry = box.run("--dry-run", "g", f"log_root={box.logs}", **env)
    assert not box.marker.exists()
    real = box.run("g", f"log_root={box.logs}", **env)
    assert not box.marker.exists() and not box.logs.exists()          # nothing started
    if dry.returncode == 2:                                            # refused: before anything is planned
        assert_refused_in_one_line(dry, source)
        assert dry.stderr == real.stderr and not box.planned()
    else:                                                              # shown as it is, one queue per word
        assert dry.returncode == 0, dry.stderr
        words = re.split(r"[ \t\n,]+" if source == "CUDA_VISIBLE_DEVICES" else r"[ \t\n]+", value.strip())
        assert f'# plan: {len(words)} GPU queues (GPUS="{" ".join(words)}")' in dry.stdout
        assert f"# note: a real run refuses this plan: {source}={' '.join(words)}: no GPU" in dry.stdout
        for word in words:
            assert f"# queue gpu{word}: " in dry.stdout
            assert f"\nCUDA_VISIBLE_DEVICES={word} '{box.bin / 'python'}' job.py n=" in dry.stdout
        assert real.returncode == 2 and real.stdout == "" and real.stderr.count("\n") == 1
        assert real.stderr.startswith(f"error: {source}={' '.join(words)}: no GPU")
    assert box.temporary_files() == []


def test_a_refused_gpu_value_is_shown_on_one_line(box):
    completed = box.run("--dry-run", "g", GPUS="0\x1b[31m \\c")
    assert_refused_in_one_line(completed, "GPUS")
    assert completed.stderr == ("error: GPUS=0?[31m \\c: allowed: GPU indices and UUIDs as nvidia-smi -L lists "
                                "them (letters, digits, - and /), or GPUS= (empty) to run on the CPU\n")


# ----------------------------------------------------------------------------- MIG ids, queue files
def test_mig_ids_with_a_slash_give_valid_queue_files(box):
    gpus = f"0 {OLD_MIG} 0 {NEW_MIG}"  # 0 twice: two queues on one GPU must not share files
    dry = box.run("--dry-run", "g", f"log_root={box.logs}", GPUS=gpus)
    assert dry.returncode == 0 and "# note" not in dry.stdout, dry.stderr
    jobs = box.logs / "jobs"
    stems = ["gpu0", "gpuMIG-GPU-1234-abcd_1_0", "gpu0.q2", f"gpu{NEW_MIG}"]
    for queue, (gpu, stem) in enumerate(zip(gpus.split(), stems)):
        assert f"# queue gpu{gpu}: 1 jobs, follow: tail -f {jobs}/queue-<time>-{stem}.log\n" in dry.stdout
        assert f"\nCUDA_VISIBLE_DEVICES={gpu} '{box.bin / 'python'}' job.py n={queue + 1} " in dry.stdout

    started = box.run("g", f"log_root={box.logs}", GPUS=gpus)
    assert started.returncode == 0, started.stderr
    assert "started 4 jobs on 4 GPUs in the background." in started.stdout
    deadline = time.monotonic() + 30  # the queues run in the background: wait for their summaries (their
    while (sum(path.read_text().count("\nsummary: ") for path in jobs.glob("queue-*.log")) < 4  # last lines)
           or any(path.suffix == ".state" for path in jobs.iterdir())):     # and their state folders to go
        assert time.monotonic() < deadline, started.stdout
        time.sleep(0.05)
    stamp = re.search(r"queue-(\d{8}-\d{6})-gpu", started.stdout)[1]
    assert sorted(path.name for path in jobs.iterdir()) == sorted(
        [f"queue-{stamp}-{stem}.{kind}" for stem in stems for kind in ("jobs", "log")]
        + [f"j{n}.log" for n in (1, 2, 3, 4)])                         # files only: no folder from a /
    for queue, (gpu, stem) in enumerate(zip(gpus.split(), stems)):
        queue_log = jobs / f"queue-{stamp}-{stem}.log"
        assert f"queue gpu{gpu}: 1 jobs, pid " in started.stdout and f"log {queue_log}\n" in started.stdout
        assert (jobs / f"queue-{stamp}-{stem}.jobs").read_text().count("\n") == 1
        assert "] exit 0: " in queue_log.read_text()
        # the job saw the original id
        assert (jobs / f"j{queue + 1}.log").read_text() == f"ran job.py n={queue + 1} CUDA_VISIBLE_DEVICES={gpu}\n"
    assert box.temporary_files() == []


# ----------------------------------------------------------------------------- the temporary plan
@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_killed_script_leaves_no_plan_file(box, sent):
    process = subprocess.Popen(["sh", str(RUN_EXPERIMENTS), "--dry-run", "g"], cwd=REPO_ROOT,
                               env=box.environment(GPUS="", STUB_PLANNER="slow"), preexec_fn=default_signals,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pid_file = box.bin / "planner.pid"
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    planner = int(pid_file.read_text())
    assert len(box.temporary_files()) == 1                             # the plan, while it is being made
    time.sleep(0.1)  # the stub's exec of sleep
    process.send_signal(sent)
    try:
        process.wait(timeout=10)                                       # at once, not after the planner
    finally:
        process.kill()
    assert process.returncode == -sent                                 # died of the signal, as it would
    assert box.temporary_files() == []
    deadline = time.monotonic() + 5                                    # and it stopped the planner
    while running(planner):
        assert time.monotonic() < deadline, "the planner runs on"
        time.sleep(0.02)


def test_a_failing_planner_leaves_no_plan_file(box):
    completed = box.run("--dry-run", "g", GPUS="", STUB_PLANNER="fail")
    assert completed.returncode == 3 and box.planned()
    assert box.temporary_files() == []


@pytest.mark.parametrize("jobs", ["4", "5000"])
def test_a_dry_run_read_by_head_leaves_no_plan_file(box, jobs):
    # `| head` closes the pipe early. 4 jobs: the plan fits in the pipe, head has gone when the script
    # prints its next line (the old script died there of SIGPIPE, without its EXIT trap); 5000 jobs
    # (500 kB) fill the pipe: cat gets the SIGPIPE.
    pipeline = f"sh '{RUN_EXPERIMENTS}' --dry-run g 'log_root={box.logs}' | head -n 1"
    for gpus in ("", "0 0"):
        completed = subprocess.run(["sh", "-c", pipeline], cwd=REPO_ROOT,
                                   env=box.environment(GPUS=gpus, STUB_JOBS=jobs),
                                   capture_output=True, text=True, timeout=60)
        assert completed.stdout == f"# job logs: {box.logs}/jobs\n" and completed.stderr == ""
        assert box.temporary_files() == []


def test_a_cpu_run_leaves_no_plan_file_and_runs_every_job(box):
    completed = box.run("g", f"log_root={box.logs}", GPUS="", JOBS="2")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("] exit 0: ") == 4 and "done: 4 jobs." in completed.stdout
    assert (box.logs / "jobs" / "j3.log").read_text() == "ran job.py n=3 CUDA_VISIBLE_DEVICES=unset\n"
    assert box.temporary_files() == []


# ----------------------------------------------------------------------- the other values are data
@pytest.mark.parametrize("key, value, allowed", [
    ("JOBS", "1\\c", "a positive integer (jobs run at a time on the CPU)"),       # dash's echo: \c ends it
    ("JOBS", "1\n2", "a positive integer (jobs run at a time on the CPU)"),
    ("JOBS", "99999999999999999999999", "a positive integer (jobs run at a time on the CPU)"),
    ("JOBS", "$(touch $MARK)", "a positive integer (jobs run at a time on the CPU)"),
    ("FORCE", "true", "1 (rerun finished runs: force=true), 0 or empty"),        # was silently ignored
    ("FORCE", "1;touch $MARK", "1 (rerun finished runs: force=true), 0 or empty"),
])
def test_jobs_and_force_are_refused_in_one_line(box, key, value, allowed):
    completed = box.run("g", f"log_root={box.logs}", GPUS="", **{key: value})
    shown = value.replace("\n", "?")
    assert completed.stderr == f"error: {key}={shown}: allowed: {allowed}\n" and completed.returncode == 2
    assert completed.stdout == "" and not box.planned() and not box.marker.exists()
    assert not box.logs.exists() and box.temporary_files() == []


def test_an_argument_with_a_line_break_is_refused(box):
    # the plan holds one command per line: a line break in log_root would make its second line a job
    completed = box.run("--dry-run", "g", f"log_root={box.logs}\ntouch {box.marker}", GPUS="")
    assert completed.returncode == 2 and completed.stdout == "" and not box.planned()
    assert completed.stderr == f"error: log_root={box.logs}?touch {box.marker}: allowed: an argument on one line (no line break)\n"


@pytest.mark.parametrize("python", ["sh -c 'touch $MARK'", "touch $MARK; sh", "`touch $MARK`"])
def test_python_is_a_program_name_not_a_command_line(box, python):
    completed = box.run("--dry-run", "g", GPUS="", PYTHON=python)
    assert completed.returncode == 127 and not box.marker.exists()   # no such program; nothing evaluated
    assert box.temporary_files() == []


def test_the_planner_gets_python_as_one_argument(box):
    completed = box.run("--dry-run", "g", "seed=1", GPUS="")
    assert completed.returncode == 0, completed.stderr
    arguments = (box.bin / "planner.args").read_text().splitlines()
    assert arguments == ["sweep_jobs.py", "--list", "--log", "--longest-first", f"--python={box.bin / 'python'}",
                         "--warm-workers", "threads=1", "g", "seed=1"]


# ------------------------------------------------------------------- from another folder, CDPATH
def test_cdpath_cannot_send_the_script_to_another_checkout(box):
    # `sh main/run_experiments.sh` with CDPATH naming a folder that holds a main/: the old script's
    # `cd main` went there (and ran that folder's sweep_jobs.py)
    decoy = box.root / "decoy" / REPO_ROOT.name
    decoy.mkdir(parents=True)
    completed = box.run("--dry-run", "g", f"log_root={box.logs}", script=f"{REPO_ROOT.name}/run_experiments.sh",
                        cwd=REPO_ROOT.parent, GPUS="", CDPATH=str(decoy.parent))
    assert completed.returncode == 0, completed.stderr
    assert (box.bin / "planner.cwd").read_text() == f"{REPO_ROOT}\n"
    assert completed.stdout.startswith("# job logs: ")                 # cd printed no folder either


def test_help_works_from_another_folder(box):
    completed = box.run("--help", script=f"{REPO_ROOT.name}/run_experiments.sh", cwd=REPO_ROOT.parent)
    assert completed.returncode == 0 and completed.stderr == ""
    assert completed.stdout.startswith("Run the paper's experiment groups")
    assert "GPUS=\"0 1 2 3\"" in completed.stdout and "set -eu" not in completed.stdout
