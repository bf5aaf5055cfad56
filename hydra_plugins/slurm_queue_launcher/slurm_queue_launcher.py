"""QueueAwareSlurmLauncher: hydra-submitit-launcher's SlurmLauncher (the `_target_` of
conf/hydra/launcher/slurm.yaml) whose submitting process follows its jobs with squeue where the cluster
keeps no accounting, so that sacct's failures neither fill the terminal nor leave a cancelled job's
sweep waiting for ever; see _queue_watcher.py. The jobs themselves run exactly as with SlurmLauncher.
"""
from __future__ import annotations

from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class QueueAwareSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ._queue_watcher import install  # lazily, like submitit in SlurmLauncher

        install()
        return super().launch(job_overrides, initial_job_idx)
