"""QueueAwareSlurmLauncher: hydra-submitit-launcher's SlurmLauncher (the `_target_` of
conf/hydra/launcher/slurm.yaml) whose submitting process follows its jobs with squeue where the cluster
keeps no accounting, so that sacct's failures neither fill the terminal nor leave a cancelled job's
sweep waiting for ever; see _queue_watcher.py. The jobs themselves run exactly as with SlurmLauncher.
On a machine without SLURM's client programs it refuses in one line (exit status 2) when Hydra sets it
up, before the sweep writes anything (submitit would end in a traceback after multirun.yaml is written):

    python representation_dynamics_terminal.py -m +experiment=fig1 hydra/launcher=slurm
"""
from __future__ import annotations

import shutil
import sys
from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

SLURM_PROGRAMS = ("sbatch", "srun")  # sbatch submits; submitit's SlurmExecutor refuses to start without srun
INSTEAD = ("a machine with SLURM's client programs on PATH (as root, `sh scripts/local_slurm.sh up` starts a "
           "one-node cluster here), hydra/launcher=joblib or submitit_local (this machine), or "
           "`sh run_experiments.sh GROUP` (local queues)")


def missing_slurm_programs() -> list[str]:
    """The programs of SLURM_PROGRAMS that are not on PATH."""
    return [program for program in SLURM_PROGRAMS if shutil.which(program) is None]


class QueueAwareSlurmLauncher(SlurmLauncher):
    def setup(self, **kwargs) -> None:
        missing = missing_slurm_programs()
        if missing:
            print(f"error: hydra/launcher=slurm: no SLURM found ({', '.join(missing)} not on PATH); "
                  f"allowed: {INSTEAD}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        super().setup(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ._queue_watcher import install  # lazily, like submitit in SlurmLauncher

        install()
        return super().launch(job_overrides, initial_job_idx)
