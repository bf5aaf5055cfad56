"""Hardening II (issue 18), classes 1, 2 and 4: a finished run is never lost and its record never
rewritten; nothing is written outside the folder it belongs to; values that crashed get the one-line
refusal. The crafted data files (class 3) are in test_crafted_data.py, the records read by the summaries
in test_untrusted_records.py, the shell script (class 5) in test_shell_hardening.py."""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import atomic_io
import config_utils
import experiment
import reanalyze
from config_utils import ConfigError
from experiment import run_experiment, validate_config
from tests.test_end_to_end import REPO_ROOT, results_of, run_cli
from tests.test_hardening import assert_refused_in_one_line, dead_writer_token

QUICK = ("layer_num=1", "hidden_size=8", "epochs=1")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def quick_config(root: Path):
    from tests.conftest import compose_config

    return compose_config(*QUICK, f"log_root={root / 'logs'}", f"figures_dir={root / 'figures'}", "progress=false")


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory) -> Path:
    """A folder holding logs/ and figures/ of one finished QUICK run, trained once per module (and test
    worker): tests that need a finished run get a copy of it (finished_run)."""
    root = tmp_path_factory.mktemp("trained-once")
    cfg = quick_config(root)
    run_experiment(cfg, root / "logs" / config_utils.run_name(cfg))
    return root


@pytest.fixture
def finished_run(trained_once, tmp_path):
    """(config, run directory) of a finished QUICK run of its own under tmp_path."""
    shutil.copytree(trained_once, tmp_path, dirs_exist_ok=True, symlinks=True)
    cfg = quick_config(tmp_path)
    return cfg, tmp_path / "logs" / config_utils.run_name(cfg)


# ------------------------------------------------------------ 1. a finished run is never lost
@pytest.mark.parametrize("failing_step, error", [
    ("set_up", OSError(errno.ENOSPC, "No space left on device")),      # data or disk gone at set-up
    ("measure_step", RuntimeError("measurement failed")),              # after training
    ("save_profile_figure", OSError(errno.EDQUOT, "Disk quota exceeded")),   # while writing the outputs
])
def test_a_failed_forced_rerun_leaves_the_finished_run_as_it_was(finished_run, tmp_path, monkeypatch, failing_step, error):
    cfg, run_dir = finished_run
    before = snapshot(run_dir)
    figure = (tmp_path / "figures" / f"{run_dir.name}.png").read_bytes()

    def fail(*args, **kwargs):
        raise error

    import plotting
    monkeypatch.setattr(plotting if failing_step == "save_profile_figure" else experiment, failing_step, fail)
    cfg.force = True
    with pytest.raises(type(error)):
        run_experiment(cfg, run_dir)
    assert snapshot(run_dir) == before
    assert not list(run_dir.glob(".staging-*"))
    assert (tmp_path / "figures" / f"{run_dir.name}.png").read_bytes() == figure


def test_a_forced_rerun_replaces_every_output(finished_run, tmp_path):
    cfg, run_dir = finished_run
    (run_dir / "dynamics.png").write_bytes(b"an output this configuration no longer writes")
    first = (run_dir / "results.json").read_text()
    cfg.force = True
    run_experiment(cfg, run_dir)
    assert (run_dir / "results.json").read_text() != first          # new timings
    assert not (run_dir / "dynamics.png").exists()
    assert {"profile.png", "checkpoint.pt", "history.csv", "training.png"} <= {p.name for p in run_dir.iterdir()}
    assert not list(run_dir.glob(".staging-*"))


def test_staging_folders_are_removed_only_when_their_writer_is_provably_dead(finished_run, tmp_path):
    cfg, run_dir = finished_run
    dead = run_dir / f".staging-{dead_writer_token()}"
    alive = run_dir / f".staging-{atomic_io.owner_token(os.getppid())}"
    boot, namespace, _, _ = atomic_io.owner_token().split(".")
    container = run_dir / f".staging-{boot}.7.{os.getppid()}.1"         # another PID namespace
    for folder in (dead, alive, container):
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"x")
    cfg.force = True
    run_experiment(cfg, run_dir)
    assert not dead.exists() and alive.is_dir() and container.is_dir()


def test_a_skipped_rerun_and_a_lost_race_leave_the_record_alone(tmp_path):
    path, _ = results_of(run_cli(tmp_path, *QUICK))
    record = path.parent / ".hydra"
    before = snapshot(record)
    assert "- epochs=1\n" in before["overrides.yaml"].decode()
    skipped = run_cli(tmp_path, *QUICK, "threads=2")
    assert "skipped:" in skipped.stdout
    assert snapshot(record) == before
    forced = run_cli(tmp_path, *QUICK, "threads=2", "force=true")
    assert forced.returncode == 0
    assert "- force=true\n" in (record / "overrides.yaml").read_text()   # the process that made it wrote it


def test_a_run_dir_that_is_not_this_configurations_is_refused(tmp_path):
    theirs = tmp_path / "my-thesis"
    theirs.mkdir()
    (theirs / "results.json").write_text('{"identity_hash": "0000", "status": "completed"}')
    (theirs / "chapter1.tex").write_text("precious")
    (theirs / "history.csv").write_text("precious too")
    before = snapshot(theirs)
    completed = run_cli(tmp_path, *QUICK, f"hydra.run.dir={theirs}", expect_ok=False)
    assert_refused_in_one_line(completed, "hydra.run.dir=")
    assert "not a run of this configuration" in completed.stderr
    assert snapshot(theirs) == before and sorted(os.listdir(theirs)) == sorted(before)

    empty = tmp_path / "empty"
    empty.mkdir()
    path, _ = results_of(run_cli(tmp_path, *QUICK, f"hydra.run.dir={empty}"))   # an empty folder is fine,
    assert path.parent == empty
    again = run_cli(tmp_path, *QUICK, f"hydra.run.dir={empty}")                  # and then it is this run's
    assert "skipped:" in again.stdout


@pytest.mark.parametrize("problem", ["file", "under a file"])
def test_a_run_dir_that_cannot_be_made_is_refused(tmp_path, problem):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    run_dir = blocker if problem == "file" else blocker / "run"
    assert_refused_in_one_line(run_cli(tmp_path, *QUICK, f"hydra.run.dir={run_dir}", expect_ok=False),
                               "hydra.run.dir=")
    assert blocker.read_text() == "a file"


# -------------------------------------------------------------- 2. nothing written outside its folder
@pytest.mark.parametrize("key, value", [
    ("data.name", "../escaped"), ("data.name", "/tmp/absolute"), ("data.name", ".hidden"),
    ("data.name", "a/b"), ("data.name", "x" * 65), ("data.name", "tab\there"), ("data.name", "caf\u00e9"),
    ("model.tag", "../../up"), ("optimization.name", "adam/.."), ("training.name", ".."),
])
def test_values_that_reach_file_names_are_plain_names(compose, key, value):
    cfg = compose()
    cfg[key.split(".")[0]][key.split(".")[1]] = value
    with pytest.raises(ConfigError, match=f"^{key}=.*allowed: a name of letters"):
        config_utils.check_names(cfg)


def test_a_run_name_too_long_for_the_file_system_is_refused(compose):
    cfg = compose()
    cfg.data.name = "d" * 64
    cfg.model.tag = "t" * 64
    with pytest.raises(ConfigError, match=r"^(data.name|model.tag)=.*allowed: a run name of at most 160"):
        config_utils.check_names(cfg)


def test_a_name_that_climbs_out_of_log_root_creates_nothing(tmp_path):
    assert_refused_in_one_line(run_cli(tmp_path, *QUICK, "data.name=../../escaped", expect_ok=False), "data.name=")
    assert not list(tmp_path.rglob("*escaped*")) and not (tmp_path / "logs").exists()


def crafted_checkpoint(run_dir: Path, tmp_path: Path, **config_changes) -> Path:
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for dotted, value in config_changes.items():
        *parents, last = dotted.split("__")
        node = checkpoint["config"]
        for parent in parents:
            node = node[parent]
        node[last] = value
    path = tmp_path / "crafted" / "checkpoint.pt"
    path.parent.mkdir(exist_ok=True)
    torch.save(checkpoint, path)
    return path


def test_reanalysis_takes_no_paths_from_the_checkpoint(finished_run, tmp_path):
    _, run_dir = finished_run
    elsewhere = tmp_path / "elsewhere"
    path = crafted_checkpoint(run_dir, tmp_path, data_root=str(elsewhere), log_root=str(elsewhere),
                              figures_dir=str(elsewhere), device="cpu")
    results = reanalyze.reanalyze(path, ["measure=nc1"])
    assert results.parent.parent == path.parent / "reanalysis" and not elsewhere.exists()


@pytest.mark.parametrize("planted", ["${oc.env:HOME}", "${data.name}", "${oc.decode:'${oc.env:X,1}'}"])
def test_a_checkpoint_config_with_an_interpolation_is_refused(finished_run, tmp_path, planted):
    _, run_dir = finished_run
    path = crafted_checkpoint(run_dir, tmp_path, data__name=planted)
    with pytest.raises(reanalyze.CheckpointError, match="refused: its config holds an interpolation at data.name"):
        reanalyze.load_checkpoint(path)


def test_a_checkpoint_config_nested_too_deep_is_refused(finished_run, tmp_path):
    _, run_dir = finished_run
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    path = crafted_checkpoint(run_dir, tmp_path, extra=deep)
    with pytest.raises(reanalyze.CheckpointError, match="nests deeper than 32 levels"):
        reanalyze.load_checkpoint(path)


def test_a_reanalysis_folder_that_leads_elsewhere_is_refused(finished_run, tmp_path):
    _, run_dir = finished_run
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "reanalysis").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="leads outside the run's folder"):
        reanalyze.reanalyze(run_dir, ["measure=nc1"])
    assert not list(elsewhere.iterdir())


# ------------------------------------------------------------------ 4. one line instead of a crash
@pytest.mark.parametrize("device", ["meta", "xpu", "cpu:1", "cuda:x", "", " cpu", "cuda:99999", "mps"])
def test_devices_outside_the_projects_are_refused(compose, device):
    cfg = compose()
    cfg.device = device
    with pytest.raises(ConfigError, match=r"^device=.*allowed"):
        validate_config(cfg, output_keys=())


@pytest.mark.parametrize("overrides, count", [(("analysis.bn_batch_size=999",), "1000"),
                                              (("analysis.bn_batch_size=3",), "1000"),
                                              (("analysis.test_subset_size=200", "analysis.bn_batch_size=199"), "200")])
def test_measuring_batches_that_leave_one_sample_are_refused(compose, overrides, count):
    with pytest.raises(ConfigError, match=rf"^analysis.bn_batch_size=\d+: the .* of {count} samples would end "
                                          "with a batch of one sample"):
        validate_config(compose(*overrides), output_keys=())
    validate_config(compose("analysis.bn_batch_size=999", "analysis.bn_mode=eval"), output_keys=())  # eval: fine


def test_a_tensorboard_name_taken_by_a_file_is_refused(finished_run, tmp_path):
    cfg, run_dir = finished_run
    (run_dir / "tensorboard").write_text("not a folder")
    cfg.logger, cfg.force = "tensorboard", True
    with pytest.raises(ConfigError, match=r"^hydra.run.dir=.*its tensorboard/ .* is not a folder; allowed"):
        run_experiment(cfg, run_dir)


def test_removing_the_validation_callback_is_refused_before_any_directory(tmp_path):
    for override in ("~hydra.callbacks.validate_before_launch", "hydra.callbacks=null",
                     "hydra.callbacks.validate_before_launch._target_=builtins.dict"):
        completed = run_cli(tmp_path, *QUICK, "lr=-1", override, expect_ok=False)
        assert_refused_in_one_line(completed, override.split("=")[0])
    assert not (tmp_path / "logs").exists()


def test_reanalysis_of_an_empty_test_subset_is_refused(finished_run, tmp_path):
    _, run_dir = finished_run
    with pytest.raises(ConfigError, match="^analysis.test_subset_size=0: .*allowed with split=test: an integer >= 1"):
        reanalyze.reanalyze(run_dir, ["split=test", "analysis.test_subset_size=0"])
    assert not (run_dir / "reanalysis").exists()


@pytest.mark.parametrize("overrides, key", [
    (("data.image_size=0",), "data.image_size=0"), (("data.image_size=-3",), "data.image_size=-3"),
    (("data.image_size=100000",), "data.image_size=100000"), (("data.channels=[5]",), "data.channels=[5]"),
    (("data.channels=[0,0]",), "data.channels=[0, 0]"), (("data.channels=[]",), "data.channels=[]"),
    (("data=cc", "data.channels=[3]"), "data.channels=[3]"), (("data.mean=[0.1,0.2]",), "data.mean="),
    (("data=cc", "data.std=[0.2,0,0.2]"), "data.std="), (("data=cifar10", "data.mean=[0.5]"), "data.mean="),
    (("data=imbalanced_cfm", "data.imbalance.minority_size=abc"), "data.imbalance="),
    (("data=imbalanced_cfm", "data.imbalance=7"), "data.imbalance=7"),
])
def test_image_and_subset_values_are_refused_before_loading(compose, overrides, key):
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}.*allowed"):
        validate_config(compose(*overrides), output_keys=())


@pytest.mark.parametrize("script, override, key", [
    ("imbalanced_data.py", "data.imbalance.majority_size=-5", "data.imbalance="),
    ("imbalanced_data.py", "data.imbalance.minority_size=abc", "data.imbalance="),
    ("data.py", "data.name=../../escaped", "data.name="),
    ("data.py", "data.image_size=0", "data.image_size=0"),
])
def test_the_data_scripts_refuse_in_one_line(tmp_path, script, override, key):
    completed = subprocess.run([sys.executable, str(REPO_ROOT / script), f"data_root={tmp_path / 'data'}", override],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert_refused_in_one_line(completed, key)
    assert not (tmp_path / "data").exists() and not list(tmp_path.rglob("*escaped*"))


def test_a_thread_count_beyond_any_machine_is_refused(compose):
    cfg = compose("threads=100000")
    with pytest.raises(ConfigError, match=r"^threads=100000: allowed: an integer from 0 to 1024"):
        validate_config(cfg, output_keys=())
    validate_config(compose("threads=0"), output_keys=())
