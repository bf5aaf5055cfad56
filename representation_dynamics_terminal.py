"""Train a network, measure its separation fuzziness D_l at every measured point, fit ln D_l against l.

    python representation_dynamics_terminal.py data=cfm model=GFNN layer_num=6     # the main job
    python representation_dynamics_terminal.py -m lr=3e-5,1e-4,3e-4,1e-3,3e-3     # Hydra multirun

This file wires Hydra (conf/config.yaml) to experiment.run_experiment and turns failures into exit
statuses: 2 for an invalid value or a missing dataset (one `error:` line), 1 for memory, 75 when another
process is running the same run. The last stdout line of a run is `results: <path to results.json>`.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":   # a job of a CPU queue: run by a warm worker of the queue's pool when one takes it
    import sweep_worker
    sweep_worker.run_in_worker_if_queued(sys.argv[1:])
    import gc
    gc.disable()   # no collections while importing (frozen below, at the start of the run)

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: F401  (first, before torch: the same CPU kernels on every x86-64 machine)

import contextlib
import os
import re
import signal
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from config_utils import (CONF_DIR, REPO_ROOT, VALIDATION_CALLBACK, ConfigError, expand_root_aliases,
                          register_resolvers, removes_validation)
from data import DatasetUnavailableError
from experiment import allocation_failure, run_experiment
from run_folder import RunInProgressError, discard_unused_run_dir
from override_check import refuse_override_typos
from sweep_worker import job_state

EXIT_RUNNING_ELSEWHERE = os.EX_TEMPFAIL  # 75: this process did not produce the run; another one is


def _terminate(signal_number, _frame):
    signal.signal(signal_number, signal.SIG_IGN)   # once: a second one does not interrupt the unwinding
    raise SystemExit(128 + signal_number)  # unwinds: temporary files are removed on the way out


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    # Hydra's basic launcher runs a multirun's jobs in this process (as a queue's worker does): each job
    # puts back the global state it set (threads, RNG, flags, matplotlib, logging, signals, cwd, env).
    with job_state():
        run_job(cfg)


def run_job(cfg: DictConfig) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results_path = run_experiment(cfg, run_dir)
    except RunInProgressError as error:
        print(f"not run: {error}", flush=True)
        raise SystemExit(EXIT_RUNNING_ELSEWHERE) from None
    except (ConfigError, DatasetUnavailableError) as error:
        discard_unused_run_dir(run_dir)
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except RuntimeError as error:
        if not allocation_failure(error):
            raise
        discard_unused_run_dir(run_dir)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: out of memory on device={cfg.device}: {first_line}; try a smaller hidden_size, "
              "batch_size or analysis.eval_batch_size", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(f"results: {results_path}", flush=True)


register_resolvers()


def command_line(argv: list[str]) -> None:
    """What `python representation_dynamics_terminal.py ARGV` does (sweep_worker runs a queue's jobs
    through it): refuse a removed validation callback and typos in one line, expand the original's root
    keys, then Hydra's main (which reads sys.argv)."""
    if (override := removes_validation(argv)) is not None:
        print(f"error: {override}: {VALIDATION_CALLBACK} checks every value before a directory is made; "
              "allowed: adding callbacks, not removing or replacing it", file=sys.stderr)
        raise SystemExit(2)
    refuse_override_typos(argv, "config", Path(__file__).name)   # one line, not Hydra's advice to add +
    sys.argv[1:] = expand_root_aliases(argv)   # the original's `block_option=...` at the root
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    with mode_without_composing(argv):
        main()


# `mode` as a key (hydra: {mode: MULTIRUN}) or hydra.mode in an override; bn_mode and the like are not
MODE_SETTING = re.compile(r"(?<![\w.])mode\s*:|hydra\.mode")


@contextlib.contextmanager
def mode_without_composing(argv: list[str]):
    """Hydra's main composes the whole config once only to read hydra.mode (Hydra.get_mode), then again
    to run: 0.1 s of every run and of every job of a warm worker. Where neither the command line nor a
    file of conf/ sets hydra.mode and no other config is named (--config-dir ...), that read gives None
    (Hydra then runs as the command line says: a run, or a multirun with -m): answered here without the
    composition. Anywhere else Hydra's own get_mode answers."""
    from hydra._internal.hydra import Hydra

    own = Hydra.get_mode
    if any(MODE_SETTING.search(argument) or argument.startswith(("-c", "--config", "--exp")) for argument in argv) \
            or any(MODE_SETTING.search(path.read_text(errors="replace")) for path in CONF_DIR.rglob("*.yaml")):
        yield
        return
    Hydra.get_mode = lambda self, config_name, overrides: None
    try:
        yield
    finally:
        Hydra.get_mode = own


if __name__ == "__main__":
    # Hydra's joblib and submitit launchers pickle the task function for other processes: taken from
    # the importable module it pickles by reference (from __main__ it would be copied by value, which
    # fails on torch's module objects); PYTHONPATH (command_line) lets those processes import it.
    from representation_dynamics_terminal import command_line as importable_command_line

    # The objects the imports made (torch, Hydra, the project: ~400,000) are frozen, so that no collection
    # scans them again; the collections while importing took 0.5 s of the main command on the 2-core Xeon.
    gc.freeze()
    gc.enable()
    importable_command_line(sys.argv[1:])
