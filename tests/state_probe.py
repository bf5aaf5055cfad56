"""A Hydra callback for tests/test_workers.py: at each job's start it appends the process id, the job's
overrides and the global state that sweep_worker.JobState resets (sweep_worker.global_state) to a JSON
lines file, so that a job run in a worker, or as a later job of a Hydra multirun, can be compared with the
same job run as its own process. Added on a command line as

    +hydra.callbacks.state_probe._target_=tests.state_probe.StateProbe +hydra.callbacks.state_probe.path=FILE
"""
from __future__ import annotations

import json
import os

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf


class StateProbe(Callback):
    def __init__(self, path: str):
        self.path = path

    def on_job_start(self, config, **kwargs) -> None:
        from sweep_worker import global_state

        overrides = [o for o in OmegaConf.to_container(config.hydra.overrides.task) if "state_probe" not in o]
        with open(self.path, "a") as probe:
            probe.write(json.dumps({"pid": os.getpid(), "overrides": overrides, "state": global_state()}) + "\n")
