"""A job run by a warm worker (sweep_worker.py, the CPU queue's) is the job run as its own process: the same
results.json numbers bit for bit, the same run folder and job log, and it starts from the same global state
(threads, RNG, flags, logging, signals, cwd, environment), whatever the jobs before it did in that worker:
jobs of different models and optimizers with a refused job (exit 2) and a failing one (exit 1) between
them, all in one worker process. Hydra's multirun (basic launcher: every job in one process) is checked
the same way. Tiny runs (data=cfm, 2 epochs).

    .venv/bin/python -m pytest -q -p no:xdist tests/test_workers.py
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.child_processes import default_signals, running, running_children
from tests.test_bitwise import COMPARED, differences

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY = REPO_ROOT / "representation_dynamics_terminal.py"
TINY = ("data=cfm", "epochs=2", "layer_num=3", "hidden_size=32", "progress=false", "threads=1", "device=cpu",
        "analysis.test_subset_size=200")
GFNN_ADAM = ("model=GFNN", "optimization=adam")
GLNN_SGD = ("model=GLNN", "optimization=sgd")
NOBN_MOMENTUM = ("model=GFNNNoBN", "optimization=momentum", "lr=0.01", "analysis.every_n_epochs=1")
REFUSED = ("model=GFNN", "layer_num=0")                          # exit 2: one `error:` line
FAILING = ("model=GFNN", "optimization=momentum", "lr=0.003")    # exit 1: its checkpoint.pt is a folder
TIMESTAMP = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]", re.MULTILINE)


def probe(path: Path) -> tuple[str, ...]:
    return ("+hydra.callbacks.state_probe._target_=tests.state_probe.StateProbe",
            f"+hydra.callbacks.state_probe.path={path}")


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("EQUI_SEPARATION_WORKERS", "PYTEST_CURRENT_TEST")}
    return env | extra


def run_job(overrides, root: Path, log: Path, env: dict) -> int:
    """The job as a queue's job line runs it: `python ENTRY ARGS >> LOG 2>&1`, in `root`."""
    command = [sys.executable, str(ENTRY), *TINY, *overrides, f"log_root={root}/logs",
               f"figures_dir={root}/figures", *probe(root / "probe.jsonl")]
    with open(log, "ab") as output:
        return subprocess.run(command, cwd=root, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=env, timeout=300, preexec_fn=default_signals).returncode


def numbers(results_path: Path) -> dict:
    results = json.loads(results_path.read_text())
    return {key: results[key] for key in COMPARED} | {"history": results["history"]}


def run_folder(root: Path, overrides) -> Path:
    from config_utils import run_name
    from tests.conftest import compose_config

    return root / "logs" / run_name(compose_config(*TINY, *overrides))


def normalized_log(text: str, root: Path) -> str:
    return TIMESTAMP.sub("[TIME]", text).replace(str(root), "ROOT")


def probes(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "probe.jsonl").read_text().splitlines()]


RNG_STATES = ("torch_rng", "python_rng", "numpy_rng")   # each fresh process's own (seeded from the OS)
# What a warm worker has imported before its first job (matplotlib; torch._dynamo, whose import adds a
# warnings filter that a job's own process adds at its first optimizer): the same at every job's start.
PRE_IMPORTED = ("matplotlib", "warnings")


def comparable(state: dict, root: Path) -> dict:
    """A job's start state less what differs between any two fresh processes (the RNG states) and what a
    warm worker has imported in advance, its paths made relative to the folder the job ran in."""
    kept = {key: value for key, value in state.items() if key not in (*PRE_IMPORTED, *RNG_STATES)}
    return json.loads(json.dumps(kept).replace(str(root), "ROOT"))


def same_across(entries: list[dict], keys) -> bool:
    """Whether every job of one process started with the same values of `keys` (restored after each)."""
    return len({json.dumps([entry["state"].get(key) for key in keys]) for entry in entries}) == 1


@pytest.fixture(scope="module")
def own_processes(tmp_path_factory):
    """The three successful jobs, each as its own process: their numbers, job logs and start states."""
    root = tmp_path_factory.mktemp("own")
    found = {}
    for name, overrides in (("gfnn", GFNN_ADAM), ("glnn", GLNN_SGD), ("nobn", NOBN_MOMENTUM)):
        log = root / f"{name}.log"
        assert run_job(overrides, root, log, environment()) == 0, log.read_text()[-3000:]
        folder = run_folder(root, overrides)
        found[name] = {"numbers": numbers(folder / "results.json"), "log": normalized_log(log.read_text(), root),
                       "files": sorted(path.name for path in folder.iterdir()), "state": probes(root)[-1]["state"]}
    found["root"] = root
    return found


def test_jobs_in_one_worker_are_their_own_processes(own_processes, tmp_path):
    root = tmp_path
    pool_folder = root / "pool"
    pool_folder.mkdir()
    pool = subprocess.Popen([sys.executable, str(REPO_ROOT / "sweep_worker.py"), "pool", str(pool_folder),
                             "--workers", "1"], cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            env=environment(), preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 30
        while not (pool_folder / "ready").exists():
            assert pool.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        failing_folder = run_folder(root, FAILING)
        (failing_folder / "checkpoint.pt").mkdir(parents=True)   # writing the checkpoint fails: a traceback
        env = environment(EQUI_SEPARATION_WORKERS=str(pool_folder))
        plan = [("gfnn", GFNN_ADAM, 0), ("refused", REFUSED, 2), ("glnn", GLNN_SGD, 0), ("failing", FAILING, 1),
                ("nobn", NOBN_MOMENTUM, 0)]
        for name, overrides, expected in plan:
            log = root / f"{name}.log"
            assert run_job(overrides, root, log, env) == expected, log.read_text()[-3000:]
        assert pool.poll() is None                                                # the worker is still there
    finally:
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(timeout=30) == 0
    assert not (pool_folder / "ready").exists()

    # every job that reached Hydra ran in the same worker process, none in its job line's process
    started = probes(root)
    assert len(started) == 4 and len({entry["pid"] for entry in started}) == 1    # refused before its start
    assert started[0]["pid"] != pool.pid
    # the refusal and the failure are as a process's: one error line; a traceback and no results
    assert (root / "refused.log").read_text() == (
        "error: layer_num=0: allowed: an integer >= 1 (a line fit needs >= 3 points)\n")
    failed = (root / "failing.log").read_text()
    assert "Traceback (most recent call last)" in failed and "checkpoint.pt" in failed
    assert not (failing_folder / "results.json").exists()
    # the others: the same numbers bit for bit, the same run folder and log, the same state at their start
    own = own_processes
    by_job = {tuple(entry["overrides"]): entry["state"] for entry in started}
    for name, overrides in (("gfnn", GFNN_ADAM), ("glnn", GLNN_SGD), ("nobn", NOBN_MOMENTUM)):
        folder = run_folder(root, overrides)
        assert differences(own[name]["numbers"], numbers(folder / "results.json")) == [], name
        assert sorted(path.name for path in folder.iterdir()) == own[name]["files"]
        assert normalized_log((root / f"{name}.log").read_text(), root) == own[name]["log"]
        state = next(state for job, state in by_job.items() if all(o in job for o in overrides))
        assert comparable(state, root) == comparable(own[name]["state"], own["root"]), name
    assert same_across(started, RNG_STATES) and same_across(started, PRE_IMPORTED)   # rcParams, figures, filters


def test_a_hydra_multirun_starts_each_job_afresh(own_processes, tmp_path):
    # the basic launcher runs the four jobs in this one process: each starts as the first did (a fresh
    # process's state), and the two that the own processes ran give their numbers bit for bit
    root = tmp_path
    completed = subprocess.run([sys.executable, str(ENTRY), "-m", *TINY, "model=GFNN,GLNN", "optimization=adam,sgd",
                                f"log_root={root}/logs", f"figures_dir={root}/figures", *probe(root / "probe.jsonl")],
                               cwd=root, capture_output=True, text=True, env=environment(), timeout=300,
                               preexec_fn=default_signals)
    assert completed.returncode == 0, completed.stderr[-3000:]
    started = probes(root)
    assert len(started) == 4 and len({entry["pid"] for entry in started}) == 1
    assert same_across(started, RNG_STATES)
    first = comparable(started[0]["state"], root)
    for entry in started:
        state = comparable(entry["state"], root)
        assert len(state.pop("open_log_files")) == 1                                # its own job log only
        assert state == {key: value for key, value in first.items() if key != "open_log_files"}, entry["overrides"]
    own = own_processes
    assert comparable(started[0]["state"], root) == comparable(own["gfnn"]["state"], own["root"])
    for name, overrides in (("gfnn", GFNN_ADAM), ("glnn", GLNN_SGD)):
        assert differences(own[name]["numbers"], numbers(run_folder(root, overrides) / "results.json")) == [], name


def wait_for(condition, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_pool_replaces_a_worker_that_dies_and_ends_with_its_workers(tmp_path):
    """A worker killed between jobs is replaced by a new one (the pool wakes at its end); SIGTERM ends the
    pool with status 0 and no worker left behind."""
    folder, log = tmp_path / "pool", tmp_path / "pool.log"
    folder.mkdir()
    with open(log, "wb") as output:
        pool = subprocess.Popen([sys.executable, str(REPO_ROOT / "sweep_worker.py"), "pool", str(folder), "--workers",
                                 "2"], stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=environment(), preexec_fn=default_signals)
    try:
        assert wait_for(lambda: len(running_children(pool.pid)) == 2), log.read_text()
        first = running_children(pool.pid)
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        assert wait_for(lambda: len(running_children(pool.pid)) == 2 and killed not in running_children(pool.pid))
        workers = running_children(pool.pid)
        assert workers - first and workers & first == first - {killed}   # one new, the other kept
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(timeout=60) == 0
        assert not any(running(pid) for pid in workers)
        assert not (folder / "ready").exists()
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait()
