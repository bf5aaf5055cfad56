"""The dry run's time estimates (sweep_jobs.CostModel) against the committed measurements, and the fast
composition of the jobs' configs (sweep_jobs.JobComposer) against Hydra's own compose.

    .venv/bin/python -m pytest -q tests/test_estimates.py -s     # -s: prints the ratio per group

- For every group the reproduction report holds, the estimates of its recorded runs add up to within
  1.5x of their committed wall_seconds (docs/reproduction/runs.csv), and each run estimated from its
  like runs other than itself (leave one out: the estimate predicts, not just repeats) is within 1.5x
  on (geometric) average per group.
- A short sweep is not "0 min": each job carries the measured start-up.
- The fast composition names every run (config_utils.run_name) as a full Hydra compose does, for a
  sample of the jobs of every group, with extra overrides of every kind.
- `run_experiments.sh --dry-run` prints the plan's wall time on the CPU and per GPU queue.
No training and no dataset: a minute or so on a 2-core machine."""
from __future__ import annotations

import math
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import campaign
import report_tables
import reproduction_report
import sweep_jobs
from config_utils import CONF_DIR, register_resolvers, run_name
from sweep_jobs import (MEASURE_EPOCHS, REPORT_DIR, SET_UP_SECONDS, SOURCES, START_UP_SECONDS, WARM_JOB_SECONDS,
                        CostModel, JobComposer, fallback_seconds_per_epoch, like_key, total_epochs)

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_EXPERIMENTS = REPO_ROOT / "run_experiments.sh"
BOUND = 1.5     # the bound on estimate / measured per group


@pytest.fixture(scope="module")
def recorded():
    """(the planned jobs of every report group that has recorded runs, with their estimates: {group:
    [(job, its runs.csv row)]}, the runs.csv rows with a wall time by group)."""
    rows = report_tables.read_rows(REPORT_DIR / "runs.csv")
    measured = defaultdict(dict)
    for row in rows:
        if row["status"] == "completed" and row["wall_seconds"] is not None:
            measured[row["group"]][row["run"]] = row
    planned = defaultdict(list)
    for group in campaign.GROUPS:
        if group.name not in measured:
            continue
        seen = set()
        for preset, part in group.part_groups():
            ((_, jobs),), _ = sweep_jobs.sweep_jobs([preset], list(part), compose_jobs=True)
            for job in jobs:
                if job.run_name in measured[group.name] and job.run_name not in seen:
                    seen.add(job.run_name)
                    planned[group.name].append((job, measured[group.name][job.run_name]))
    return planned, measured


def test_every_recorded_run_is_a_planned_job(recorded):
    planned, measured = recorded
    assert set(planned) == set(measured)
    for group, runs in measured.items():
        assert {job.run_name for job, _ in planned[group]} == set(runs), group


def trained(planned: dict) -> dict:
    """The planned runs that trained their network: a run that measured a twin's (trained_in) took the
    set-up and measuring only, and the estimator leaves it out of its like runs."""
    return {group: [(job, row) for job, row in pairs if not row["trained_in"]] for group, pairs in planned.items()}


def test_group_estimates_are_within_1_5x_of_the_recorded_wall_times(recorded):
    planned, _ = recorded
    ratios = {}
    for group, pairs in trained(planned).items():
        # wall_seconds is the run's own time (results.json): the estimate less the process start-up
        estimated = sum(job.cost - START_UP_SECONDS for job, _ in pairs)
        measured = sum(row["wall_seconds"] for _, row in pairs)
        ratios[group] = estimated / measured
        assert {job.cost_source for job, _ in pairs} == {SOURCES[0]}, group   # every one from like runs
    print("\nestimate / measured per group (runs.csv):",
          ", ".join(f"{group} {ratio:.2f}" for group, ratio in ratios.items()))
    assert all(1 / BOUND <= ratio <= BOUND for ratio in ratios.values()), ratios


def test_each_run_estimated_from_its_other_like_runs_is_unbiased_per_group(recorded):
    """Each recorded run estimated from its like runs other than itself (leave one out: a prediction, not
    a repetition; the group total of these equals the measured total by construction, so the check is per
    run): the geometric mean of estimate / measured within 1.5x per group. Printed beside it: the share
    of runs within 1.5x, and the fallback model's group ratio (no like run used)."""
    planned, _ = recorded
    costs = CostModel(REPORT_DIR, composer=None)
    report = {}
    for group, pairs in trained(planned).items():
        ratios, fallback, measured = [], 0.0, 0.0
        for job, row in pairs:
            cfg = OmegaConf.create(job.config)
            fallback += SET_UP_SECONDS + fallback_seconds_per_epoch(cfg) * (total_epochs(cfg) + MEASURE_EPOCHS)
            measured += row["wall_seconds"]
            like = costs.like_runs[like_key(row)]
            own = max(row["wall_seconds"] - SET_UP_SECONDS, 0.0) / (row["epochs"] + MEASURE_EPOCHS)
            if len(like) < 2:
                continue
            like.remove(own)
            try:
                ratios.append(costs.estimate(job, cfg, job.config).run_seconds / row["wall_seconds"])
            finally:
                like.append(own)
        mean = math.exp(statistics.fmean(math.log(ratio) for ratio in ratios))
        within = sum(1 / BOUND <= ratio <= BOUND for ratio in ratios) / len(ratios)
        report[group] = (mean, within, fallback / measured)
    print("\nleave one out per run, geometric mean (share within 1.5x); fallback model's group ratio:",
          "; ".join(f"{group} {mean:.2f} ({within:.0%}); {fallback:.2f}"
                    for group, (mean, within, fallback) in report.items()))
    assert all(1 / BOUND <= mean <= BOUND for mean, _, _ in report.values()), report


def test_a_short_sweep_carries_its_start_up(capsys):
    sweep_jobs.main(["fig1", "epochs=3", "--list", "--longest-first"])
    out = capsys.readouterr().out
    line = re.search(r"^# group fig1: 9 jobs, about (\d+) (s|min) on one thread \(measured like runs: 9\)$",
                     out, re.MULTILINE)
    assert line, out
    seconds = int(line[1]) * (60 if line[2] == "min" else 1)
    assert seconds >= 9 * (START_UP_SECONDS + SET_UP_SECONDS)   # 3 epochs are little; starting is not
    estimates = [float(cost) for cost in re.findall(r"^# job estimate: (\d+) s", out, re.MULTILINE)]
    assert len(estimates) == 9 and min(estimates) >= round(START_UP_SECONDS + SET_UP_SECONDS)
    assert re.search(r"^# total: 9 jobs, about \d+ (s|min) on one thread$", out, re.MULTILINE)


def test_warm_workers_pay_the_start_up_once(tmp_path, capsys):
    """The CPU queue's estimates (--warm-workers): each job its warm fixed cost, the start-up once per
    worker in the dry run's plan (one worker: the sum of the jobs and one start-up)."""
    sweep_jobs.main(["fig1", "epochs=3", "--list", "--longest-first", "--warm-workers"])
    out = capsys.readouterr().out
    assert f"# worker start-up: {START_UP_SECONDS:g} s\n" in out
    estimates = [float(cost) for cost in re.findall(r"^# job estimate: (\d+) s", out, re.MULTILINE)]
    assert len(estimates) == 9 and all(round(WARM_JOB_SECONDS) <= cost < START_UP_SECONDS + SET_UP_SECONDS
                                       for cost in estimates)
    out = dry_run("fig1", "epochs=100", f"log_root={tmp_path}", GPUS="", JOBS="1")
    estimates = [float(cost) for cost in re.findall(r"^# job estimate: (\d+) s", out, re.MULTILINE)]
    wall = re.search(r"^# plan: 9 jobs on the CPU, 1 at a time, threads=1 each; about (\d+) s of wall", out,
                     re.MULTILINE)
    assert wall and abs(int(wall[1]) - (sum(estimates) + START_UP_SECONDS)) <= 9 / 2 + 1, out


def test_the_fallback_model_covers_an_unmeasured_shape():
    ((_, jobs),), _ = sweep_jobs.sweep_jobs(["width"], ["hidden_size=333", "lr=1e-3"], compose_jobs=True)
    assert [job.cost_source for job in jobs] == [SOURCES[2]]
    assert jobs[0].cost > START_UP_SECONDS + SET_UP_SECONDS
    # fewer samples, less time: data.* overrides scale a measured cost by the sample count
    ((_, small),), _ = sweep_jobs.sweep_jobs(["fig1"], ["data.sample_size_per_class=10"], compose_jobs=True)
    ((_, whole),), _ = sweep_jobs.sweep_jobs(["fig1"], [], compose_jobs=True)
    for few, every in zip(small, whole):
        assert few.cost_source == every.cost_source == SOURCES[0]
        run_part = (every.cost - START_UP_SECONDS - SET_UP_SECONDS) / 10
        assert few.cost - START_UP_SECONDS - SET_UP_SECONDS == pytest.approx(run_part)


# ------------------------------------------------------------------------------ fast composition
EXTRAS = ["seed=1", "epochs=7", "lr=0.02", "data.sample_size_per_class=50", "+analysis.extra=1",
          "~analysis.pca_dim", "model.params.block_num=2", "optimization=sgd", "threads=1"]


def test_fast_composition_names_runs_as_hydra_does():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    groups, _ = sweep_jobs.sweep_jobs(["all"])
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composer = JobComposer(GlobalHydra.instance().config_loader())
        compared = 0
        for index, (group, jobs) in enumerate(groups):
            # the first job as planned, the last with an extra override (of another kind per group)
            for overrides in (list(jobs[0].overrides), [*jobs[-1].overrides, EXTRAS[index % len(EXTRAS)]]):
                try:
                    expected = compose("config", overrides=overrides)
                except Exception as error:   # noqa: BLE001  (an override this config refuses)
                    with pytest.raises(type(error)):
                        composer(overrides)
                    continue
                fast = composer(overrides)
                assert run_name(fast) == run_name(expected), (group, overrides)
                assert OmegaConf.to_container(fast) == OmegaConf.to_container(expected), (group, overrides)
                compared += 1
        assert compared >= 1.5 * len(groups)


# ------------------------------------------------------------------------------------- dry runs
def dry_run(*arguments: str, **env: str) -> str:
    environment = {key: value for key, value in os.environ.items() if key not in ("FORCE", "JOBS", "GPUS")}
    environment.update(PYTHON=sys.executable, **env)
    completed = subprocess.run(["sh", str(RUN_EXPERIMENTS), "--dry-run", *arguments], cwd=REPO_ROOT,
                               env=environment, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_dry_run_prints_the_plans_wall_time(tmp_path):
    out = dry_run("fig1", "lr", f"log_root={tmp_path}", GPUS="", JOBS="2")
    estimates = [float(cost) for cost in re.findall(r"^# job estimate: (\d+) s", out, re.MULTILINE)]
    assert len(estimates) == 16
    wall = re.search(r"^# plan: 16 jobs on the CPU, 2 at a time, threads=1 each; about (\d+) (s|min) of wall "
                     r"time \(the estimates above\)$", out, re.MULTILINE)
    assert wall, out
    seconds = int(wall[1]) * (60 if wall[2] == "min" else 1)
    assert sum(estimates) / 2 - 60 <= seconds <= sum(estimates) / 2 + max(estimates) + 60
    out = dry_run("fig1", "lr", f"log_root={tmp_path}", GPUS="0 1")
    assert "# GPU times: no GPU run's time is committed" in out
    queues = re.findall(r"^# queue gpu(\d): 8 jobs, about \d+ (?:s|min) at the CPU estimates, follow: ", out,
                        re.MULTILINE)
    assert queues == ["0", "1"]
