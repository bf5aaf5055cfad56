"""Hardening (issue 10): untrusted files never run code, nothing the user already has is destroyed, every
bad value is refused before the compute in one line, and the sweep tools refuse what they cannot do."""
from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import atomic_io
import config_utils
import raw_formats
import data
import reanalyze
import run_records
import summarize_runs
from config_utils import ConfigError
from experiment import allocation_failure, validate_config
from run_folder import discard_unused_run_dir
from representation_analysis import profile_fit, separation_profile
from tests.test_data import cifar_root, fake_images, mnist_root  # noqa: F401  (fixtures)
from tests.test_end_to_end import ENTRY, REPO_ROOT, results_of, run_cli
from tests.test_reliability import start_run, wait_for_training
from tests.test_summarize import write_run

RUN_EXPERIMENTS = REPO_ROOT / "run_experiments.sh"


class RunsCode:
    """Pickles to a call of os.system that creates `marker`: what a hostile file would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def error_lines(completed: subprocess.CompletedProcess) -> list[str]:
    return [line for line in completed.stderr.splitlines() if line.startswith("error:")]


def assert_refused_in_one_line(completed: subprocess.CompletedProcess, key: str) -> None:
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = error_lines(completed)
    assert len(lines) == 1 and key in lines[0] and "allowed" in lines[0], completed.stderr
    assert "Traceback" not in completed.stderr


# ------------------------------------------------------------------------------ 1. a fresh machine
def test_system_dataset_folders_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SYSTEM_DATASETS_DIR", raising=False)
    assert data.system_dirs("fashion_mnist") == [Path("/usr/share/datasets/fashion-mnist")]
    monkeypatch.setenv("SYSTEM_DATASETS_DIR", str(tmp_path))
    assert data.system_dirs("cifar10") == [tmp_path / "cifar-10-batches-py", tmp_path / "cifar10"]
    with pytest.raises(data.DatasetUnavailableError) as error:  # raw Fashion-MNIST hidden: not found
        data.load_raw("fashion_mnist", tmp_path / "root", download=False)
    assert str(tmp_path / "fashion-mnist") in str(error.value)


# ------------------------------------------------------------------ 2. untrusted files never run code
def test_a_hostile_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"model_state": RunsCode(marker), "config": {}}, tmp_path / "checkpoint.pt")
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "reanalyze.py"), str(tmp_path)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert len(error_lines(completed)) == 1 and "refused" in completed.stderr
    assert "posix.system" in completed.stderr and "Traceback" not in completed.stderr
    assert not marker.exists()


def test_a_corrupted_checkpoint_gives_one_line(tmp_path):
    torch.save({"model_state": {"w": torch.zeros(1000)}, "config": {}}, tmp_path / "whole.pt")
    (tmp_path / "checkpoint.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:900])  # truncated
    torch.save([1, 2], tmp_path / "list.pt")  # loads, but is not a checkpoint
    for source in (tmp_path, tmp_path / "list.pt"):
        completed = subprocess.run([sys.executable, str(REPO_ROOT / "reanalyze.py"), str(source)],
                                   capture_output=True, text=True, timeout=120)
        assert completed.returncode == 2 and len(error_lines(completed)) == 1, completed.stderr
        assert "Traceback" not in completed.stderr


def test_a_run_checkpoint_holds_only_what_weights_only_loads(tmp_path):
    path, _ = results_of(run_cli(tmp_path, "layer_num=1", "hidden_size=8", "epochs=1"))
    checkpoint = torch.load(path.parent / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) == {"model_state", "config"}
    assert all(isinstance(value, torch.Tensor) for value in checkpoint["model_state"].values())
    assert checkpoint["config"]["layer_num"] == 1 and "blocks.0.linear.weight" in checkpoint["model_state"]
    assert reanalyze.load_checkpoint(path.parent / "checkpoint.pt").keys() == checkpoint.keys()


def test_a_hostile_cifar_batch_is_refused_and_runs_nothing(cifar_root, compose, tmp_path):  # noqa: F811
    marker = tmp_path / "marker"
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": RunsCode(marker), b"labels": [0]}))
    with pytest.raises(raw_formats.RawFileError, match="data_batch_1 is not a CIFAR-10 batch.*posix.system"):
        data.prepare_dataset(compose("data=cc").data, cifar_root, split_seed=1, download=False)
    assert not marker.exists()
    completed = run_cli(tmp_path, "data=cc", f"data_root={cifar_root}", "download=false", expect_ok=False)
    assert completed.returncode == 2 and len(error_lines(completed)) == 1, completed.stderr
    assert "posix.system" in completed.stderr and "Traceback" not in completed.stderr
    assert not marker.exists()
    assert list((tmp_path / "logs").glob("*")) == []


def test_cifar_batches_of_old_numpy_and_python2_load(tmp_path):
    """Real CIFAR-10 batches name numpy.core (not numpy._core) and hold bytes keys and byte strings."""
    images = fake_images(4, (3072,), 5)
    payload = pickle.dumps({b"batch_label": b"training batch 1 of 5", b"data": images,
                            b"labels": [1, 2, 3, 4], b"filenames": [b"a.png"] * 4}, protocol=2)
    old_style = payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert old_style != payload
    (tmp_path / "batch").write_bytes(old_style)
    read_images, labels = raw_formats.read_cifar_batch(tmp_path / "batch")
    assert np.array_equal(read_images.reshape(4, -1), images) and labels.tolist() == [1, 2, 3, 4]


def test_a_malformed_idx_file_gives_one_error(tmp_path):
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(raw_formats.RawFileError, match="must hold 17 bytes, not 10"):
        raw_formats.read_idx(tmp_path / "short")


# ------------------------------------------------------------ 3. nothing the user has is destroyed
def test_refused_commands_leave_a_running_run_alone(tmp_path):
    overrides = ("layer_num=2", "hidden_size=16", "epochs=3000")
    first = start_run(tmp_path, *overrides)
    try:
        run_dir = wait_for_training(tmp_path, first, timeout=300)  # a loaded machine starts slowly
        before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
        refusals = [("threads=-3", "threads=-3")]
        if not torch.cuda.is_available():
            refusals.append(("device=cuda", "device=cuda"))
        for override, key in refusals:
            assert_refused_in_one_line(run_cli(tmp_path, *overrides, override, expect_ok=False), key)
        for path, content in before.items():  # .hydra/, .lock, the log: all still there, unchanged
            if path.name != "representation_dynamics_terminal.log":
                assert path.read_bytes() == content, path
        assert (run_dir / "representation_dynamics_terminal.log").read_bytes().startswith(
            before[run_dir / "representation_dynamics_terminal.log"])

        loser = run_cli(tmp_path, *overrides, expect_ok=False)  # the same command again
        assert loser.returncode == 75
        assert loser.stdout.strip().splitlines()[-1].startswith("not run: another process is running")
        assert "results:" not in loser.stdout
        assert (run_dir / ".lock").is_file() and (run_dir / ".hydra").is_dir()
        assert first.poll() is None  # still training
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)


def test_a_failing_run_removes_only_a_directory_it_created(tmp_path, monkeypatch):
    mine, theirs, busy = tmp_path / "mine", tmp_path / "theirs", tmp_path / "busy"
    monkeypatch.setenv(config_utils.NEW_RUN_DIRS_ENV, json.dumps([str(mine), str(busy)]))
    for run_dir in (mine, theirs, busy):
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / "representation_dynamics_terminal.log").write_text("")
    discard_unused_run_dir(theirs)  # existed before this command
    assert theirs.is_dir()
    import fcntl

    with open(busy / ".lock", "a") as handle:  # another process holds its lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        discard_unused_run_dir(busy)
        assert busy.is_dir()
    discard_unused_run_dir(mine)
    assert not mine.exists()
    monkeypatch.delenv(config_utils.NEW_RUN_DIRS_ENV)  # nothing recorded: never removed
    discard_unused_run_dir(busy)
    assert busy.is_dir()


def test_reanalysis_overrides_cannot_escape_or_need_retraining(tmp_path, monkeypatch, capsys):
    path, _ = results_of(run_cli(tmp_path, "layer_num=1", "hidden_size=8", "epochs=1"))
    run_dir = path.parent
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "reanalyze.py"), str(run_dir), ".."],
                               capture_output=True, text=True, timeout=120)   # the command itself, once
    assert completed.returncode == 2 and error_lines(completed) == ["error: ..: not KEY=VALUE; allowed keys: "
                                                                    + ", ".join(("split", *reanalyze.MEASUREMENT_KEYS,
                                                                                 *reanalyze.EXECUTION_OVERRIDES))]
    cases = {"foo": "foo: not KEY=VALUE", "nosuchkey=1": "unknown key nosuchkey",
             "layer_num=3": "layer_num changes the trained network", "model=GLNN": "model changes",
             "data=cm": "data changes", "lr=0.1": "lr changes", "measure=../../x": "measure=../../x: allowed",
             "split=../..": "split=../..: allowed",
             "figures_dir=/tmp/elsewhere": "figures_dir does not apply to a reanalysis",
             "hydra.run.dir=/tmp/x": "hydra.run.dir does not apply to a reanalysis"}
    for override, message in cases.items():   # the rest through its main(), in this process
        monkeypatch.setattr(sys, "argv", ["reanalyze.py", str(run_dir), override])
        with pytest.raises(SystemExit) as exit_status:
            reanalyze.main()
        stderr = capsys.readouterr().err
        assert exit_status.value.code == 2 and len([line for line in stderr.splitlines() if line.startswith("error:")]) == 1
        assert message in stderr and "Traceback" not in stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert not (run_dir / "reanalysis").exists()


@pytest.mark.parametrize("overrides", [["measure=nc1"], ["split=test", "analysis.pca_dim=5"],
                                       ["analysis.bn_mode=eval", "device=cpu", "data_root=/a/../../b"],
                                       ["measure=" + "x/.." * 100], ["device=cpu"]])
def test_reanalysis_directory_names_stay_inside_reanalysis(overrides):
    tag = reanalyze.reanalysis_tag(overrides)
    assert "/" not in tag and tag not in (".", "..") and len(tag) <= reanalyze.MAX_TAG_LENGTH
    assert (Path("/run/reanalysis") / tag).resolve().parent == Path("/run/reanalysis")
    assert "device" not in tag and "data_root" not in tag  # execution keys do not name a measurement


def dead_writer_token() -> str:
    """The owner token a writer had while it ran, now that it has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    token = atomic_io.owner_token(child.pid)
    child.communicate(b"")
    return token


def test_a_write_removes_only_temporaries_proved_dead(tmp_path):
    target = tmp_path / "figure.png"
    boot, namespace, _, _ = atomic_io.owner_token().split(".")
    dead = tmp_path / f".figure.png.tmp-{dead_writer_token()}-abcdefgh"
    reused = tmp_path / f".figure.png.tmp-{boot}.{namespace}.{os.getppid()}.1-abcdefgh"  # pid of another process now
    kept = {
        "alive": f".figure.png.tmp-{atomic_io.owner_token(os.getppid())}-abcdefgh",
        "other namespace": f".figure.png.tmp-{boot}.1.{os.getppid()}.1-abcdefgh",   # a container's live writer
        "other boot": f".figure.png.tmp-00000000.{namespace}.999999.1-abcdefgh",
        "legacy": ".figure.png.tmp-999999999-abc",                                   # no provable owner
        "non-ASCII digits": f".figure.png.tmp-{boot}.{namespace}.\u0661\u0662.1-abcdefgh",
        "other target": f".other.png.tmp-{dead_writer_token()}-abcdefgh",
    }
    for path in [dead, reused, *(tmp_path / name for name in kept.values())]:
        path.write_bytes(b"x" * 1000)
    folder = tmp_path / f".figure.png.tmp-{dead_writer_token()}-dirdirdi"       # looks stale, is a folder
    folder.mkdir()
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("keep")
    link = tmp_path / f".figure.png.tmp-{dead_writer_token()}-linklink"
    link.symlink_to(outside)
    atomic_io.atomic_write(target, lambda temporary: temporary.write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, folder.name, link.name, outside.name, *kept.values()])
    assert outside.read_text() == "keep"


def test_a_cache_build_removes_its_stale_temporaries(compose, mnist_root):  # noqa: F811
    cfg = compose("data=cm", "data.sample_size_per_class=4")
    cache = data.cache_dir_of(mnist_root) / data.cache_file_name(data.preprocessing_spec(cfg.data, 3))
    cache.parent.mkdir(parents=True)
    stale = cache.parent / f".{cache.name}.tmp-{dead_writer_token()}-q1w2e3r4"
    stale.write_bytes(b"half a cache")
    data.load_or_build_cache(cfg.data, mnist_root, 3, download=False)
    assert cache.is_file() and not stale.exists()


# ----------------------------------------------------------- 4. every refusal before the compute
@pytest.mark.parametrize("overrides,key", [
    (["lr=inf"], "lr=inf"), (["lr=nan"], "lr=nan"), (["weight_decay=inf"], "weight_decay=inf"),
    (["optimization=momentum", "optimization.momentum=2"], "optimization.momentum=2"),
    (["optimization=momentum", "optimization.momentum=1"], "optimization.momentum=1"),
    (["optimization.betas=[1.5,0.9]"], "optimization.betas=[1.5,0.9]"),
    (["optimization.betas=[0.9]"], "optimization.betas=[0.9]"),
    (["schedule.gamma=-1"], "schedule.gamma=-1"), (["schedule.gamma=0"], "schedule.gamma=0"),
    (["schedule.milestone_fractions=[0.5,2]"], "schedule.milestone_fractions=[0.5,2]"),
    (["seed=99999999999999999999"], "seed=99999999999999999999"), (["seed=-1"], "seed=-1"),
    (["data.sample_size_per_class=6001"], "data.sample_size_per_class=6001"),
    (["data=cc", "data.sample_size_per_class=5001"], "data.sample_size_per_class=5001"),
    (["data=imbalanced_cfm", "data.imbalance.majority_size=7000"], "data.imbalance="),
    (["data.num_classes=5"], "data.num_classes=5"),
    (["analysis.test_subset_size=10010"], "analysis.test_subset_size=10010"),
    (["data=cm", "analysis.test_subset_size=9000"], "analysis.test_subset_size=9000"),  # class 5: 892
    (["analysis.test_subset_size=9"], "analysis.test_subset_size=9"),
    (["hidden_size=100000000"], "hidden_size=100000000"),
])
def test_each_refused_value_names_its_key(compose, overrides, key):
    with pytest.raises(ConfigError) as error:
        validate_config(compose(*overrides))
    message = str(error.value)
    assert message.startswith(key) and "allowed" in message and "\n" not in message


def test_values_at_the_edges_are_accepted(compose):
    for overrides in (["seed=0"], [f"seed={config_utils.MAX_SEED}"], ["schedule=null"],
                      ["analysis.test_subset_size=0"], ["analysis.test_subset_size=10"],
                      ["analysis.test_subset_size=10000"], ["data.sample_size_per_class=6000"],
                      ["data=cm", "analysis.test_subset_size=8920"], ["optimization=momentum"],
                      ["optimization=sgd"], ["data=imbalanced_cfm"], ["data=cc"], ["model=VGG13", "data=cifar10",
                                                                                   "layer_num=11"]):
        validate_config(compose(*overrides))


def test_folders_that_cannot_be_written_are_refused(compose, tmp_path, monkeypatch):
    regular_file = tmp_path / "file"
    regular_file.write_text("")
    for key in ("figures_dir", "log_root"):
        for value, problem in ((regular_file, "it is a file"), (regular_file / "sub", "is a file"),
                               ("/proc/no-such-dir/sub", "/proc is on a virtual file system")):
            with pytest.raises(ConfigError, match=f"^{key}={value}: .*{problem}.*allowed"):
                validate_config(compose(f"{key}={value}"))
    # data_root matters only when the cache must be built there: cfm's cache ships in embedded/
    validate_config(compose("data_root=/proc/no-such-dir"))
    with pytest.raises(ConfigError, match="^data_root=/proc/no-such-dir: the cache of data=cm must be built"):
        validate_config(compose("data=cm", "data_root=/proc/no-such-dir"))
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: let os.access answer as for any other user
        real_access = os.access
        monkeypatch.setattr(config_utils.os, "access", lambda path, mode: (
            Path(path) != read_only and real_access(path, mode)))
    with pytest.raises(ConfigError, match=f"{read_only} is not writable by this user"):
        validate_config(compose(f"figures_dir={read_only / 'figures'}"))


def test_a_cache_that_cannot_be_written_is_one_error(compose, mnist_root):  # noqa: F811
    cfg = compose("data=cm", "data.sample_size_per_class=4")
    (mnist_root / "cache").write_text("a file where the cache folder goes")
    with pytest.raises(ConfigError, match=f"^data_root={mnist_root}: cannot write the cache"):
        data.load_or_build_cache(cfg.data, mnist_root, 7, download=False)


@pytest.mark.parametrize("overrides,key", [
    (["lr=inf"], "lr=inf"), (["schedule.gamma=-1"], "schedule.gamma=-1"),
    (["optimization.betas=[1.5,0.9]"], "optimization.betas=[1.5,0.9]"),
    (["seed=99999999999999999999"], "seed=99999999999999999999"),
    (["data.sample_size_per_class=7000"], "data.sample_size_per_class=7000"),
    (["hidden_size=100000000"], "hidden_size=100000000"),
    (["figures_dir=/proc/no-such-dir"], "figures_dir=/proc/no-such-dir"),
])
def test_refusals_on_the_command_line_come_before_any_directory(tmp_path, overrides, key):
    completed = run_cli(tmp_path, *overrides, expect_ok=False)
    assert_refused_in_one_line(completed, key)
    assert completed.stdout.strip() == ""
    assert not (tmp_path / "logs").exists() and not (tmp_path / "figures").exists()


@pytest.mark.parametrize("overrides,key", [
    (["data.sample_size_per_class=13"], "data.sample_size_per_class=13"),  # the raw files hold 12
    (["data.sample_size_per_class=5", "analysis.test_subset_size=40"], "analysis.test_subset_size=40"),
])
def test_raw_files_smaller_than_asked_are_refused_before_training(tmp_path, mnist_root, overrides, key):  # noqa: F811
    completed = run_cli(tmp_path, "data=cm", f"data_root={mnist_root}", "download=false", *overrides,
                        expect_ok=False)
    assert_refused_in_one_line(completed, key)
    assert "training GFNN" not in completed.stdout + completed.stderr and "results:" not in completed.stdout
    assert list((tmp_path / "logs").glob("*")) == []  # the directory this command made is gone


def test_allocation_failures_are_recognized():
    assert allocation_failure(RuntimeError("[enforce fail at alloc_cpu.cpp:119] . DefaultCPUAllocator: "
                                           "can't allocate memory: you tried to allocate 4000000000000 bytes"))
    assert allocation_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB"))
    assert not allocation_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_a_point_whose_measurement_fails_is_recorded_as_not_finite():
    labels = torch.arange(10).repeat(20)
    generator = torch.Generator().manual_seed(0)
    features = {"first": torch.randn(200, 6, generator=generator),
                "broken": torch.full((200, 40), math.nan),
                "last": torch.randn(200, 6, generator=generator) + labels[:, None]}
    for pca_dim in (None, 10):  # the failing SVD is D's pseudo-inverse, or the PCA before it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = separation_profile(features, labels, pca_dim=pca_dim)
        assert [math.isfinite(r["D"]) for r in records] == [True, False, True]
        assert any("point 'broken'" in str(w.message) and "not finite" in str(w.message) for w in caught)
        fit = profile_fit(records, [(0, 1), (1, 2)])
        assert fit["dropped"] == 1 and fit["num_points"] == 2
        assert all(math.isnan(segment["slope"]) for segment in fit["segments"])  # one finite point each


def test_summaries_skip_ill_typed_results_in_one_line_each(tmp_path):
    logs = tmp_path / "logs"
    write_run(logs, "good")
    bad = {"layers-a-string": {"layers": "abc"}, "config-a-list": {"config": [1]},
           "fit-a-list": {"fit": [1, 2]}, "loss-an-object": {"final_train_loss": {"a": 1}},
           "layer-d-a-list": {"layers": [{"index": 0, "D": [1]}]}, "lr-a-string": {"config": {"lr": "fast"}},
           "not-an-object": None}
    for name, fields in bad.items():
        (logs / name).mkdir(parents=True)
        content = [1, 2] if fields is None else {"status": "completed", **fields}
        (logs / name / "results.json").write_text(json.dumps(content))
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "summarize_runs.py"), str(logs), "--out",
                                str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    skipped = [line for line in completed.stderr.splitlines() if line.startswith("warning: skipping")]
    assert len(skipped) == len(bad) and "1 runs in the table" in completed.stdout
    assert any("layers is str" in line for line in skipped)


def test_non_finite_spellings_are_numbers_again():
    results = run_records.restore_non_finite({"fit": {"pearson_r": "nan", "rho": "inf"}, "status": "completed"})
    assert math.isnan(results["fit"]["pearson_r"]) and results["fit"]["rho"] == math.inf
    assert run_records.results_problem(results) is None


# -------------------------------------------------------------------------------------- 5. sweeps
def sweep_script(*arguments: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("FORCE", "JOBS", "GPUS")}
    environment.update(PYTHON=sys.executable, **env)
    return subprocess.run(["sh", str(RUN_EXPERIMENTS), *arguments], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("jobs", ["0", "-1", "abc", "2x"])
def test_jobs_must_be_a_positive_integer(tmp_path, jobs):
    completed = sweep_script("fig1", f"log_root={tmp_path}", GPUS="", JOBS=jobs)
    assert completed.returncode == 2
    assert completed.stderr.strip() == f"error: JOBS={jobs}: allowed: a positive integer (jobs run at a time on the CPU)"
    assert completed.stdout == "" and list(tmp_path.iterdir()) == []  # nothing planned or started


def test_gpu_ids_this_machine_lacks_are_refused(tmp_path):
    completed = sweep_script("fig1", f"log_root={tmp_path}", GPUS="97 98")
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith("error: GPUS=97 98: no GPU 97 98 on this machine; allowed:")
    assert list(tmp_path.iterdir()) == []
    dry = sweep_script("--dry-run", "fig1", f"log_root={tmp_path}", GPUS="97 98")
    assert dry.returncode == 0 and "# note: a real run refuses this plan: GPUS=97 98" in dry.stdout


def test_gpu_ids_are_checked_against_nvidia_smi(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text('#!/bin/sh\necho "GPU 0: Fake GPU (UUID: GPU-1234-abcd)"\n')
    (bin_dir / "nvidia-smi").chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    refused = sweep_script("fig1", f"log_root={tmp_path / 'logs'}", GPUS="0 1", PATH=path)
    assert refused.returncode == 2 and "no GPU 1 on this machine; allowed: 0 (or their UUIDs)" in refused.stderr
    planned = sweep_script("--dry-run", "fig1", f"log_root={tmp_path / 'logs'}", GPUS="0 GPU-1234-abcd",
                           PATH=path)
    assert planned.returncode == 0 and "# note" not in planned.stdout
    assert '# plan: 2 GPU queues (GPUS="0 GPU-1234-abcd")' in planned.stdout


def test_reanalyses_are_not_counted_as_runs(tmp_path):
    logs = tmp_path / "logs"
    first = write_run(logs, "first")
    write_run(logs, "second", lr=3e-3)
    for tag in ("same-settings", "measure=nc1", "split=test"):  # reanalyze.py's output, by hand
        out = first.parent / "reanalysis" / tag
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"source": str(first.parent / "checkpoint.pt"),
                                                      "overrides": [tag], "layers": [], "fit": None}))
    runs = run_records.load_runs([logs])
    assert sorted(run.name for run in runs) == ["first", "second"]
    assert all(run.status == "completed" for run in runs)


def test_a_multirun_with_one_invalid_job_starts_no_job(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ENTRY), "-m", f"log_root={tmp_path / 'logs'}", f"figures_dir={tmp_path / 'figures'}",
         "progress=false", "layer_num=1", "hidden_size=8", "epochs=1", "lr=1e-3,abc,3e-3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_refused_in_one_line(completed, "lr=abc")
    assert completed.stdout.strip() == ""
    assert not (tmp_path / "logs").exists()  # no job ran, not even the valid first one
