"""Sweeps: presets expand to the paper's job counts, run_experiments.sh plans GPU queues, a killed sweep
resumes without redoing finished runs, and Hydra's joblib and submitit launchers run a preset.

The tiny runs read raw Fashion-MNIST files the tests write in torchvision's layout, with the operating
system's dataset folder hidden, so they pass on a fresh machine without the dataset package."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from config_utils import CONF_DIR, run_name
from sweep_jobs import product_of, sweep_jobs
from tests.test_data import fake_images, write_idx

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_EXPERIMENTS = REPO_ROOT / "run_experiments.sh"
ENTRY = REPO_ROOT / "representation_dynamics_terminal.py"
EXPECTED_COUNTS = {"fig1": 9, "lr": 7, "imbalanced": 15, "depth_cm": 45, "depth_cfm": 45, "depth_cm5k": 45,
                   "depth_cc": 55, "width": 10, "shape": 15, "cnn": 20, "residual": 30, "frozen": 10,
                   "original": 30, "linearized": 5, "nobn": 5}
ADAM_GRID = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
# The runs below must not depend on the OS dataset package (data.system_dirs reads this variable).
NO_SYSTEM_DATASETS = {"SYSTEM_DATASETS_DIR": "/nonexistent/system-datasets"}


def write_fake_fashion_mnist(data_root: Path) -> Path:
    """Raw Fashion-MNIST in torchvision's layout under data_root: 6 training and 100 test images per
    class (enough for data.sample_size_per_class=5 and the default test subset of 1000)."""
    raw = data_root / "FashionMNIST" / "raw"
    if not raw.is_dir():
        write_idx(raw / "train-images-idx3-ubyte", fake_images(60, (28, 28), 0), gzipped=True)
        write_idx(raw / "train-labels-idx1-ubyte", np.tile(np.arange(10), 6).astype(np.uint8), gzipped=True)
        write_idx(raw / "t10k-images-idx3-ubyte", fake_images(1000, (28, 28), 1), gzipped=True)
        write_idx(raw / "t10k-labels-idx1-ubyte", np.tile(np.arange(10), 100).astype(np.uint8), gzipped=True)
    return data_root


def tiny(tmp_path: Path) -> list[str]:
    """Overrides that make a run take seconds, read the fake raw files and keep every output under
    tmp_path."""
    data_root = write_fake_fashion_mnist(tmp_path / "data")
    return ["epochs=1", "data.sample_size_per_class=5", "hidden_size=8", "progress=false",
            f"log_root={tmp_path / 'logs'}", f"figures_dir={tmp_path / 'figures'}", f"data_root={data_root}",
            "download=false"]


def run_script(*arguments: str, gpus: str = "", timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("FORCE", "JOBS")}
    environment.update(GPUS=gpus, PYTHON=sys.executable, **NO_SYSTEM_DATASETS, **env)
    completed = subprocess.run(["sh", str(RUN_EXPERIMENTS), *arguments], cwd=REPO_ROOT, env=environment,
                               capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    return completed


def compose_jobs(jobs) -> list:
    """The config of each job, composed as the entry point would (one Hydra context for all)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return [compose("config", overrides=list(job.overrides)) for job in jobs]


def commands(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


# ------------------------------------------------------------------------------------ job expansion
def test_dry_run_of_all_lists_the_paper_job_counts_per_group(tmp_path):
    # some 7 s of CPU time (346 configs composed, JobComposer); the bound leaves room for a busy machine
    out = run_script("--dry-run", "all", f"log_root={tmp_path}", timeout=60).stdout
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^# group (\w+): (\d+) jobs", out, re.MULTILINE)}
    assert counts == EXPECTED_COUNTS
    assert re.search(r"^# total: 346 jobs, about [\d.]+ h on one thread$", out, re.MULTILINE)
    jobs = commands(out)
    assert len(jobs) == 346 and len(set(jobs)) == 346
    assert len(re.findall(r"^# job estimate: \d+ s ", out, re.MULTILINE)) == 346   # one before each job
    # longest first: the CNN runs (a minute per epoch on one CPU thread) lead, the small MLPs (depth 1 or
    # 2 on 1,000 cfm samples, some 10 s each) come last of the jobs that train; the 20 jobs that measure a
    # network an earlier job trains (residual's per-conv twins, frozen's standard runs) fall among them
    sources = re.findall(r"^# job estimate: \d+ s \((?:[^,\n]*, )?([^)\n]*)\)$", out, re.MULTILINE)
    trains = [job for job, source in zip(jobs, sources) if source != "training shared"]
    assert len(sources) == 346 and len(trains) == 346 - 20
    assert "model=VGG13" in jobs[0] and re.search(r" layer_num=[12] ", trains[-1])
    for job in jobs:  # CPU plan: one thread per job, output appended to <log_root>/jobs/<name>.log
        assert f" {ENTRY.name} +experiment=" in job and " threads=1 " in job
        assert re.search(rf">> {re.escape(str(tmp_path))}/jobs/[\w.=+-]+\.log 2>&1$", job), job
    assert "# plan: 346 jobs on the CPU" in out


def test_fig1_jobs_resolve_the_paper_lr_per_optimizer_and_depth():
    ((group, jobs),), _ = sweep_jobs(["fig1"])
    assert group == "fig1" and len(jobs) == 9
    expected = {("sgd", 2): 0.3, ("sgd", 6): 0.03, ("sgd", 18): 0.01,
                ("momentum", 2): 0.3, ("momentum", 6): 0.01, ("momentum", 18): 0.001,
                ("adam", 2): 3e-3, ("adam", 6): 1e-3, ("adam", 18): 3e-4}
    resolved = {}
    for job, cfg in zip(jobs, compose_jobs(jobs)):
        assert job.overrides[0] == "+experiment=fig1" and not any(o.startswith("lr=") for o in job.overrides)
        assert (cfg.data.name, cfg.model.name, cfg.hidden_size) == ("cfm", "GFNN", 100)
        resolved[(cfg.optimization.name, cfg.layer_num)] = cfg.lr
        assert isinstance(cfg.lr, float)
        assert f"-lr{cfg.lr}-" in run_name(cfg)  # the resolved number names the run
    assert resolved == pytest.approx(expected)


def test_a_key_of_the_presets_models_only_is_taken_for_their_group(tmp_path):
    # block_num exists only in the residual models' config: the log folder must not be composed without them
    ((group, jobs),), log_dir = sweep_jobs(["residual"],
                                           ["block_num=2", f"log_root={tmp_path}"])
    assert group == "residual" and len(jobs) == 30 and log_dir == tmp_path / "jobs"
    assert all("model.params.block_num=2" in job.overrides for job in jobs)


def test_group_presets_set_what_differs():
    groups, _ = sweep_jobs(["cnn", "residual", "frozen", "shape"])
    groups = dict(groups)
    for jobs in groups.values():  # each variant over the whole adam grid, every job distinct
        lrs = sorted(float(o.split("=")[1]) for job in jobs for o in job.overrides if o.startswith("lr="))
        assert lrs == pytest.approx(sorted(ADAM_GRID * (len(jobs) // 5)))
        assert len({job.overrides for job in jobs}) == len(jobs)
    # compose one job per variant (the first lr) to see what each variant sets
    variants = {group: compose_jobs([job for job in jobs if "lr=3e-05" in job.overrides])
                for group, jobs in groups.items()}
    assert {(c.model.name, c.data.name, c.layer_num) for c in variants["cnn"]} == {
        ("VGG13", "fashion_mnist", 11), ("VGG13", "cifar10", 11),
        ("AlexNet", "fashion_mnist", 6), ("AlexNet", "cifar10", 6)}
    assert {(c.model.name, c.model.params.block_option, c.model.params.feature_option, c.model.params.block_num,
             c.data.name) for c in variants["residual"]} == {
        (model, block, feature, 4, "fashion_mnist") for feature in ("block", "layer")
        for model, block in (("GResNet", "basicblock"), ("GResNet", "bottleneck"), ("ResNetMixV2", "MIX"))}
    assert len(groups["residual"]) == 30 and len(variants["residual"]) == 6
    assert {(c.training.name, c.data.name, c.model.name, c.layer_num) for c in variants["frozen"]} == {
        ("frozen", "cc", "GFNN", 18), ("standard", "cc", "GFNN", 18)}
    assert {(c.model.name, c.layer_num, c.data.name) for c in variants["shape"]} == {
        ("FNNSW", 6, "cfm"), ("FNNWS", 6, "cfm"), ("FNNMIX", 6, "cfm")}
    assert all(c.lr == 3e-5 and c.optimization.name == "adam" for cs in variants.values() for c in cs)


def test_expansion_follows_the_basic_sweeper():
    assert product_of(["a=1,2", "b=x", "+c=range(0,3)"]) == [
        ["a=1", "b=x", "+c=0"], ["a=1", "b=x", "+c=1"], ["a=1", "b=x", "+c=2"],
        ["a=2", "b=x", "+c=0"], ["a=2", "b=x", "+c=1"], ["a=2", "b=x", "+c=2"]]
    # a key given again keeps its first position and takes the last value (command line over preset)
    assert product_of(["lr=1,2,3", "seed=1", "lr=5"]) == [["lr=5", "seed=1"]]
    ((_, jobs),), _ = sweep_jobs(["lr"], ["lr=0.1,0.3", "seed=1,2"])
    assert [job.overrides[1:] for job in jobs] == [("lr=0.1", "seed=1"), ("lr=0.1", "seed=2"),
                                                   ("lr=0.3", "seed=1"), ("lr=0.3", "seed=2")]
    assert [job.name for job in jobs][:2] == ["lr-lr=0.1-seed=1", "lr-lr=0.1-seed=2"]


# ------------------------------------------------------------------------------------- GPU queues
def test_gpu_dry_run_deals_jobs_round_robin_to_one_queue_per_gpu(tmp_path):
    out = run_script("--dry-run", "fig1", "lr", f"log_root={tmp_path}", gpus="0 1").stdout
    listed = commands(out.split("# plan:")[0])
    assert len(listed) == 16 and not any("threads=1" in job for job in listed)
    assert '# plan: 2 GPU queues (GPUS="0 1")' in out
    queues = {}
    for block in out.split("# queue gpu")[1:]:
        gpu, count = re.match(r"(\d+): (\d+) jobs", block).groups()
        queues[gpu] = commands(block.split("\n", 1)[1])
        assert len(queues[gpu]) == int(count)
        assert all(line.startswith(f"CUDA_VISIBLE_DEVICES={gpu} ") for line in queues[gpu])
    assert {gpu: len(lines) for gpu, lines in queues.items()} == {"0": 8, "1": 8}
    unprefixed = [line.split(" ", 1)[1] for gpu in ("0", "1") for line in queues[gpu]]
    assert sorted(unprefixed) == sorted(listed)            # every job in exactly one queue
    assert [line.split(" ", 1)[1] for line in queues["0"]] == listed[0::2]   # round-robin
    assert [line.split(" ", 1)[1] for line in queues["1"]] == listed[1::2]


def test_force_env_adds_force_true(tmp_path):
    out = run_script("--dry-run", "nobn", f"log_root={tmp_path}", FORCE="1").stdout
    assert all(" force=true " in job.lower() for job in commands(out)) and len(commands(out)) == 5


# ------------------------------------------------------------------------------ running for real
def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    arguments = ["lr", "lr=0.01,0.03,0.1", *tiny(tmp_path)]
    logs = tmp_path / "logs"
    environment = {key: value for key, value in os.environ.items() if key != "FORCE"}
    environment.update(GPUS="", JOBS="1", PYTHON=sys.executable, **NO_SYSTEM_DATASETS)
    process = subprocess.Popen(["sh", str(RUN_EXPERIMENTS), *arguments], cwd=REPO_ROOT, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while not list(logs.glob("*/results.json")):
        assert process.poll() is None and time.monotonic() < deadline, "no run finished"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the script, xargs and the job running now
    process.wait()
    finished = {path: (path.stat().st_mtime_ns, json.loads(path.read_text())["wall_seconds"])
                for path in logs.glob("*/results.json")}
    assert 1 <= len(finished) < 3

    rerun = run_script(*arguments, JOBS="2")
    results = sorted(logs.glob("*/results.json"))
    assert len(results) == 3
    assert sorted(json.loads(p.read_text())["config"]["lr"] for p in results) == [0.01, 0.03, 0.1]
    for path in results:
        assert json.loads(path.read_text())["status"] == "completed"
        assert not list(path.parent.glob(".*.tmp-*"))
    for path, (mtime, wall_seconds) in finished.items():  # not run again
        assert path.stat().st_mtime_ns == mtime
        assert json.loads(path.read_text())["wall_seconds"] == wall_seconds
        lr = json.loads(path.read_text())["config"]["lr"]
        job_log = (logs / "jobs" / f"lr-lr={lr}.log").read_text()
        assert job_log.count(f"skipped: {path.parent.name}") == 1   # the rerun skipped it
        assert job_log.count("training GFNN") == 1                      # it trained once
    assert rerun.stdout.count("] exit 0: ") == 3


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_hydra_launchers_run_a_preset_sweep(tmp_path, launcher):
    overrides = ["+experiment=lr", "lr=0.01,0.1", *tiny(tmp_path)]
    completed = subprocess.run([sys.executable, str(ENTRY), "-m", f"hydra/launcher={launcher}", *overrides],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300,
                               env={**os.environ, **NO_SYSTEM_DATASETS})
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = sorted((tmp_path / "logs").glob("*/results.json"))
    assert len(results) == 2
    assert {json.loads(p.read_text())["status"] for p in results} == {"completed"}
    # the same runs, in the same directories, as the jobs sweep_jobs.py gives run_experiments.sh
    ((_, jobs),), _ = sweep_jobs(["lr"], overrides[1:])
    assert {p.parent.name for p in results} == {run_name(cfg) for cfg in compose_jobs(jobs)}


def test_slurm_launcher_config_asks_one_gpu_per_job(monkeypatch):
    from hydra import compose, initialize_config_dir

    monkeypatch.setenv("SLURM_PARTITION", "a100")
    monkeypatch.setenv("SLURM_TIMEOUT_MIN", "90")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=fig1", "hydra/launcher=slurm", "hydra.launcher.mem_gb=8"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.mem_gb) == ("a100", 90, 1, 8)
