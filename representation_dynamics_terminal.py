"""Train a network, measure its separation fuzziness D_l at every measured point, fit ln D_l against l.

    python representation_dynamics_terminal.py data=cfm model=GFNN layer_num=6     # the main job
    python representation_dynamics_terminal.py -m lr=3e-5,1e-4,3e-4,1e-3,3e-3     # Hydra multirun

This file wires Hydra (conf/config.yaml) to experiment.run_experiment and turns failures into exit
statuses: 2 for an invalid value or a missing dataset (one `error:` line), 1 for memory, 75 when another
process is running the same run. The last stdout line of a run is `results: <path to results.json>`.
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: F401  (first, before torch: the same CPU kernels on every x86-64 machine)

import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from config_utils import (CONF_DIR, REPO_ROOT, VALIDATION_CALLBACK, ConfigError, expand_root_aliases,
                          register_resolvers, removes_validation)
from data import DatasetUnavailableError
from experiment import RunInProgressError, allocation_failure, discard_unused_run_dir, run_experiment
from override_check import refuse_override_typos

EXIT_RUNNING_ELSEWHERE = os.EX_TEMPFAIL  # 75: this process did not produce the run; another one is


def _terminate(signal_number, _frame):
    raise SystemExit(128 + signal_number)  # unwinds: temporary files are removed on the way out


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
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

if __name__ == "__main__":
    # Hydra's joblib and submitit launchers pickle the task function for other processes: taken from
    # the importable module it pickles by reference (from __main__ it would be copied by value, which
    # fails on torch's module objects); PYTHONPATH lets those processes import it.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    from representation_dynamics_terminal import main as importable_main

    if (override := removes_validation(sys.argv[1:])) is not None:
        print(f"error: {override}: {VALIDATION_CALLBACK} checks every value before a directory is made; "
              "allowed: adding callbacks, not removing or replacing it", file=sys.stderr)
        raise SystemExit(2)
    refuse_override_typos(sys.argv[1:], "config", Path(__file__).name)   # one line, not Hydra's advice to add +
    sys.argv[1:] = expand_root_aliases(sys.argv[1:])   # the original's `block_option=...` at the root

    importable_main()
