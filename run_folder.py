"""A run's folder: whether a folder may hold a configuration's run (run_dir_problem), a finished run in it
(finished_results), its lock (run_lock), the record of how it was made (write_run_record), a forced rerun's
staging folder and its publication (results.json leaves first and arrives last), and the removal of a
folder this command made for a run that failed before writing anything. experiment.run_experiment puts
these around the steps of a run. Nothing here trains, measures or reads a dataset.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from atomic_io import (NotRegularFile, atomic_write, file_kind, file_lock, is_dead_owner, lock_held_elsewhere,
                       owner_token, read_small_text)
from config_utils import ConfigError, created_by_this_command, folder_problem, identity_hash, run_name
from run_records import BadFile, read_json

RUN_OUTPUTS = ("results.json", "profile.png", "checkpoint.pt", "dynamics.png", "training.png", "history.csv")
RUN_MARKER = ".identity"     # the identity hash of the configuration a run folder belongs to
JOB_LOG = "representation_dynamics_terminal.log"   # Hydra's log of the entry script's job


class RunInProgressError(RuntimeError):
    """Another process holds the run directory's lock: it is running this configuration right now."""


def finished_results(run_dir: Path, identity: str) -> Path | None:
    """results.json of an earlier run of the configuration whose identity_hash is `identity` that
    finished (completed or diverged), or None. It is read by run_records.read_json (a regular file of
    at most MAX_RESULTS_BYTES, JSON nested at most MAX_JSON_DEPTH deep: a named pipe, a link to a device
    or a flood is never read); anything it refuses, anything but a JSON object, or a run of another
    configuration does not count."""
    path = Path(run_dir) / "results.json"
    try:
        previous = read_json(path)
    except BadFile:
        return None
    if not isinstance(previous, dict):
        return None
    same_config = previous.get("identity_hash") == identity
    return path if same_config and previous.get("status") in ("completed", "diverged") else None


def job_log_kind(path: Path) -> str | None:
    """What is at the job log's name when it is not a regular file ('a symbolic link', 'a named pipe',
    'a folder', ...: atomic_io's names), else None (a regular file, or nothing there)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"unreadable ({error.strerror})"
    return None if stat.S_ISREG(mode) else file_kind(mode)


def run_dir_problem(run_dir: Path, cfg: DictConfig) -> str | None:
    """Why run_dir cannot hold this configuration's run, or None: it may be missing (and creatable),
    empty (but for Hydra's job log), or this configuration's own folder: named after the run (the name
    ends in the identity hash), or holding its .identity or its results.json. Its .hydra must not lead
    elsewhere (a link: the record would be written, and a rerun's old one removed, where it points), and
    its job log (JOB_LOG) must be a regular file or missing: Hydra opens it before this process's code
    runs (a named pipe would hang that open, a link be appended to; atomic_io.RegularFileHandler, the
    file handler of conf/hydra/job_logging/regular_file.yaml, opens neither and logs nothing there)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return folder_problem(run_dir)
    if not run_dir.is_dir():
        return "it is a file, not a folder"
    record = run_dir / ".hydra"   # write_run_record writes there, a forced rerun's publish empties it
    if record.is_symlink() or (record.exists() and not record.is_dir()):
        return "its .hydra (the run record written there) is not a folder of its own (a link or a file)"
    if (kind := job_log_kind(run_dir / JOB_LOG)) is not None:
        return (f"its {JOB_LOG} (Hydra's job log, appended to by every run) is {kind}, not a regular file "
                "(remove it)")
    if cfg.get("logger") == "tensorboard" and (run_dir / "tensorboard").exists() and not (
            (run_dir / "tensorboard").is_dir() and not (run_dir / "tensorboard").is_symlink()):
        return "its tensorboard/ (logger=tensorboard writes event files there) is not a folder"
    identity = identity_hash(cfg)
    if run_dir.name == run_name(cfg) or read_small_text(run_dir / RUN_MARKER) == identity:
        return None
    if finished_results(run_dir, identity) or not [entry for entry in os.listdir(run_dir) if entry != JOB_LOG]:
        return None
    return "it holds files that are not a run of this configuration"


def check_run_dir(run_dir: Path, cfg: DictConfig, key: str = "hydra.run.dir") -> None:
    if (problem := run_dir_problem(run_dir, cfg)) is not None:
        raise ConfigError(f"{key}={run_dir}: {problem}; allowed: a new or empty folder, or this "
                          "configuration's own run folder")


def write_run_record(folder: Path, cfg: DictConfig) -> None:
    """How the run was made, written by the process that makes it (hydra.output_subdir is null, so a
    skipped command or one that loses the lock never rewrites it): Hydra's .hydra/config.yaml,
    hydra.yaml and overrides.yaml, when Hydra runs this process."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_config = HydraConfig.get()
    for name, content in (("config.yaml", cfg), ("hydra.yaml", OmegaConf.create({"hydra": hydra_config})),
                          ("overrides.yaml", hydra_config.overrides.task)):
        text = OmegaConf.to_yaml(content)
        atomic_write(folder / ".hydra" / name, lambda temporary: temporary.write_text(text))


@contextlib.contextmanager
def staging_folder(run_dir: Path):
    """A private folder inside run_dir for a rerun's outputs (.staging-<owner>, see atomic_io): removed
    on the way out whatever happens; those of writers that died are removed by the next rerun."""
    for leftover in run_dir.glob(".staging-*"):
        if leftover.is_dir() and not leftover.is_symlink() and is_dead_owner(leftover.name.removeprefix(".staging-")):
            shutil.rmtree(leftover, ignore_errors=True)
    staging = run_dir / f".staging-{owner_token()}"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, run_dir: Path) -> Path:
    """Put a staged run in place of the previous one. results.json leaves first (from then on the folder
    reads as unfinished) and arrives last, so a results.json is never beside another run's files."""
    (run_dir / "results.json").unlink(missing_ok=True)
    for name in RUN_OUTPUTS[1:]:
        if (staging / name).exists():
            os.replace(staging / name, run_dir / name)
        else:
            (run_dir / name).unlink(missing_ok=True)
    for folder, pattern in ((".hydra", "*.yaml"), ("tensorboard", "events.out.tfevents.*")):
        if (staging / folder).is_dir():
            for old in (run_dir / folder).glob(pattern):
                old.unlink()
            (run_dir / folder).mkdir(exist_ok=True)
            for new in (staging / folder).iterdir():
                os.replace(new, run_dir / folder / new.name)
    os.replace(staging / "results.json", run_dir / "results.json")
    return run_dir / "results.json"


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """file_lock(run_dir/.lock, wait=False): yields whether this process holds it. A lock file that is no
    regular file (a symbolic link, named pipe, device or folder: atomic_io's NotRegularFile, nothing
    opened, followed or created) is a ConfigError naming the run folder: the entry point's one line."""
    with contextlib.ExitStack() as held:
        try:
            owned = held.enter_context(file_lock(run_dir / ".lock", wait=False))
        except NotRegularFile as error:
            raise ConfigError(f"hydra.run.dir={run_dir}: {error}; allowed: no .lock, or the regular file "
                              "a run made") from None
        yield owned


def discard_unused_run_dir(run_dir: Path) -> None:
    """Remove the run directory of a run that failed before producing anything, if this command created
    it (config_utils.created_by_this_command) and no other process holds its lock. A directory that
    existed before -- another run's, running, finished or interrupted -- or that holds any run output
    is left alone."""
    if not (run_dir.is_dir() and created_by_this_command(run_dir)):
        return
    if any((run_dir / name).exists() for name in RUN_OUTPUTS) or lock_held_elsewhere(run_dir / ".lock"):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
