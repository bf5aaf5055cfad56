"""The job watcher of QueueAwareSlurmLauncher (conf/hydra/launcher/slurm.yaml): squeue where SLURM keeps no
accounting. Imported only when a sweep is launched (this module's leading underscore keeps Hydra's plugin
scan, which runs at every start of a Hydra app, from importing it and submitit).

submitit follows its jobs with `sacct`. Where a cluster runs without accounting storage (no slurmdbd:
`AccountingStorageType=accounting_storage/none`, as on the one-node cluster of scripts/local_slurm.sh and
on some small clusters), every poll fails: sacct prints "Slurm accounting storage is disabled" to the
terminal and submitit logs "Bypassing sacct error ..., status may be inaccurate" after it, over and over.
That is harmless while jobs finish normally (submitit then sees their result files), but a job that ends
without a result (cancelled with scancel, killed for memory or time) stays in state UNKNOWN for ever and
the submitting command waits for it for ever.

So instead of filtering the messages, the launcher keeps them from arising: it asks the controller once
(`scontrol show config`) whether accounting is disabled, and if so follows the jobs with `squeue`, which
reports them, finished ones included, for MinJobAge seconds after they end; a job that has left the
queue counts as ended. Where accounting works, nothing changes: submitit uses sacct as always (and
still warns when sacct really fails). Only the submitting process is affected; the jobs run as before.
"""
from __future__ import annotations

import subprocess
import time

from submitit.core import logger
from submitit.slurm import slurm

LEFT_QUEUE = "LEFT_QUEUE"  # state of a job that squeue no longer lists: it ended, how is not known


def accounting_disabled() -> bool | None:
    """Whether the SLURM controller stores no accounting (so that sacct cannot answer); None if
    `scontrol show config` gives no answer."""
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in config.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AccountingStorageType":
            return value.strip() == "accounting_storage/none"
    return None


class QueueWatcher(slurm.SlurmInfoWatcher):
    """submitit's SLURM job watcher, with squeue in place of sacct where accounting is disabled."""

    def __init__(self, delay_s: int = 600) -> None:
        super().__init__(delay_s=delay_s)
        self.use_squeue: bool | None = None  # decided at the first poll the controller answers

    def update(self) -> None:
        if self.use_squeue is None:
            self.use_squeue = accounting_disabled()
        if not self.use_squeue:  # accounting on (or not known yet): submitit's sacct as always
            super().update()
            return
        pending = self._registered - self._finished
        if not pending:
            return
        self._num_calls += 1
        main_ids = sorted({job_id.split("_")[0] for job_id in pending})
        command = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N",
                   "--jobs=" + ",".join(main_ids)]
        logger.get_logger().debug(f"Call #{self.num_calls} - Command {' '.join(command)}")
        try:
            listed = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as error:
            listed = subprocess.CompletedProcess(command, 1, "", str(error))
        # squeue fails with "Invalid job id" only when it knows none of the ids: all have left the queue
        if listed.returncode != 0 and "Invalid job id" not in listed.stderr:
            logger.get_logger().warning(f"Call #{self.num_calls} - Bypassing squeue error "
                                        f"{listed.stderr.strip()}, status may be inaccurate.")
        else:
            info = self.read_info("JobID|State|NodeList\n" + listed.stdout)
            for job_id in pending - info.keys():
                info[job_id] = {"JobID": job_id, "State": LEFT_QUEUE, "NodeList": ""}
            self._info_dict.update(info)
        self._last_status_check = time.time()
        for job_id in pending:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


def install() -> None:
    """Make every SLURM job of this process report its state through a QueueWatcher (idempotent)."""
    if not isinstance(slurm.SlurmJob.watcher, QueueWatcher):
        slurm.SlurmJob.watcher = QueueWatcher(delay_s=getattr(slurm.SlurmJob.watcher, "_delay_s", 600))
