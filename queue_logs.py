"""Statistics of run_experiments.sh's queue logs for the report's context (jobs, wall time, workers) and
the commands they record, made relative to the repository as a user types them.

A queue log is untrusted: a regular UTF-8 file of at most MAX_QUEUE_LOG_BYTES whose start and exit lines
carry valid times, each exit after its job's start; a log that fails is skipped with one warning line.
"""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from run_records import BadFile, read_text, warn

MAX_QUEUE_LOG_BYTES = 16 * 2 ** 20   # a queue log: a line per job start and exit, some 100 bytes each
# -------------------------------------------------------------------------------- the context facts
QUEUE_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] (start|exit \d+): (.*)$")
QUEUE_LIKE = re.compile(r"^\[[^\]]*\] (start|exit)\b")   # what a start/exit line, well-formed or not, starts with
TIMESTAMP = "%Y-%m-%d %H:%M:%S"


def _moment(text: str) -> float:
    """A queue log's time as a timestamp; ValueError (or OverflowError, OSError) for an invalid one."""
    return datetime.strptime(text, TIMESTAMP).timestamp()


QUEUE_JOB = re.compile(r"^\[\d+/\d+\]")   # run_experiments.sh's job number: '[k/N] ...' on its start and exit
MAX_QUEUE_SECONDS = 366 * 24 * 3600      # a queue log spans at most a year


def _queue_job(text: str) -> str:
    """What pairs a job's exit line with its start line: its [k/N] number, or (older logs) its text."""
    match = QUEUE_JOB.match(text)
    return match.group(0) if match else text


def queue_events(path: Path, text: str) -> list[tuple[float, int, str]]:
    """(time, 0 for a start or -1 for an exit, job) per start/exit line of a queue log's `text`;
    BadFile for a line that looks like one but is malformed (its time or exit status), an exit with no
    start of its job before it (in the file, and in time), or a log spanning over MAX_QUEUE_SECONDS."""
    events, running = [], defaultdict(list)
    for position, line in enumerate(text.splitlines(), start=1):
        match = QUEUE_LINE.match(line)
        if not match:
            if QUEUE_LIKE.match(line):
                raise BadFile(path, f"line {position}: a malformed start or exit line {json.dumps(line)[:60]}")
            continue
        try:
            moment = _moment(match.group(1))
        except (ValueError, OverflowError, OSError):
            raise BadFile(path, f"line {position}: {match.group(1)!r} is not a valid time") from None
        job, starting = _queue_job(match.group(3)), match.group(2) == "start"
        if starting:
            running[job].append(moment)
        elif not running[job]:
            raise BadFile(path, f"line {position}: the exit of {json.dumps(job)[:60]} has no start line before it")
        elif running[job].pop() > moment:
            raise BadFile(path, f"line {position}: the exit of {json.dumps(job)[:60]} at {match.group(1)} precedes "
                                "its start")
        events.append((moment, 0 if starting else -1, match.group(3)))
    if events and max(event[0] for event in events) - min(event[0] for event in events) > MAX_QUEUE_SECONDS:
        raise BadFile(path, f"its start and exit lines span more than {MAX_QUEUE_SECONDS // 86400} days")
    return events


def queue_statistics(log_paths: list[Path]) -> dict | None:
    """Wall time, job count and the most jobs running at once, from run_experiments.sh's start/exit
    lines (its output on the CPU: logs/jobs/run-*.log); BadFile for a log that cannot be read."""
    events = []
    for path in log_paths:
        events += queue_events(path, read_text(path, MAX_QUEUE_LOG_BYTES))
    if not events:
        return None
    events.sort(key=lambda event: (event[0], event[1]))   # at one second, exits before starts
    running = peak = 0
    for _, kind, _ in events:
        running += 1 if kind == 0 else -1
        peak = max(peak, running)
    starts = sum(kind == 0 for _, kind, _ in events)
    return {"jobs": starts, "wall_seconds": events[-1][0] - events[0][0], "peak_parallel_jobs": peak,
            "started": datetime.fromtimestamp(events[0][0]).strftime("%Y-%m-%d %H:%M:%S")}


def add_queues(context: dict, queue_logs: list[Path]) -> None:
    """Each run_experiments.sh queue log's statistics into context['queues'] (once per log start); a log
    that cannot be read, is malformed or holds no start line is skipped with one warning line."""
    queues = context.setdefault("queues", [])
    for path in queue_logs:
        try:
            queue = queue_statistics([path])
            if not queue or not queue["jobs"]:
                raise BadFile(path, "no start line of run_experiments.sh")
        except BadFile as error:
            warn(f"warning: skipping queue log {error}")
            continue
        command = next((line[len("# command: "):] for line in read_text(path, MAX_QUEUE_LOG_BYTES).splitlines()
                        if line.startswith("# command: ")), Path(path).name)
        entry = {"command": repository_relative(command), **queue}
        queues[:] = [known for known in queues if (known.get("command"), known.get("started"))
                     != (entry["command"], entry["started"])] + [entry]
    for known in queues:
        known["command"] = repository_relative(known["command"])


ABSOLUTE_OVERRIDE = re.compile(r"(?<=[A-Za-z_]=)(/[^\s'\"]*)")


def repository_relative(command: str) -> str:
    """A recorded command with each absolute path of an override (log_root=/...) relative to the
    repository, as a user of a checkout types it (log_root=../campaign/logs)."""
    from config_utils import REPO_ROOT

    return ABSOLUTE_OVERRIDE.sub(lambda match: os.path.relpath(match.group(1), REPO_ROOT), command)
