"""The report's committed tables and their checked reading: runs.csv (one row per group and planned run,
finished or `missing`, with the machine, CPU kernels, torch version and commit that produced it),
profiles.csv (every measured D: run, split, BatchNorm mode, point), reruns.csv (committed rows rerun on
another CPU), original_code.csv (the original's scripts on the failing settings), context.json and
epoch_costs.csv.

One checked reader, read_tables, reads the tables for the rebuild, the merge and sweep_jobs'
--skip-recorded (recorded_runs): regular files only (never a link followed or a pipe or device opened),
at most MAX_TABLE_BYTES, strict CSV (the exact header, every row whole, no cut line), known groups and
statuses, numbers in range, no row twice, every completed row with its fit and profile. A table that
fails is BadFile in one line (`error: PATH: problem`, exit status 2 from the command).

It reads and checks; merging is report_merge's, rendering report_markdown's and report_figures'.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from atomic_io import NotRegularFile, open_regular
from campaign import GROUPS
from config_utils import MAX_RUN_NAME, name_problem
from queue_logs import _moment
from run_records import MAX_LAYERS, _size_text, BadFile, fields_problem, printable, read_json, read_text
from safe_output import csv_cell, output_path, UnsafeOutput
from verdicts import FINISHED

REBUILD_COMMAND = "python reproduction_report.py docs/reproduction"
MERGE_COMMAND = "python reproduction_report.py docs/reproduction --merge logs/"
RUN_COLUMNS = ("group", "run", "data", "model", "variant", "depth", "width", "optimizer", "lr", "epochs",
               "seed", "status", "pearson_r", "rho", "r2", "points", "D_first", "D_last_layer", "train_accuracy",
               "test_accuracy", "final_train_loss", "wall_seconds", "eval_pearson_r", "eval_rho",
               "test_pearson_r", "test_rho", "test_split", "machine", "cpu_kernels", "device", "torch",
               "commit", "trained_in")
# D_first and D_last_layer: the D of the first and of the last measured layer, whether or not the fit could
# use it (a D of 0 or not finite is left out of the fit: nobn's last layer has D 0.0). trained_in: the run
# whose trained network this run measured (shared_training.py; empty: it trained its own), so its
# wall_seconds is set-up and measuring only. Tables written before either column (LEGACY_RUN_COLUMNS: the
# last column named D_last, or no trained_in) are read, and rewritten by a merge, as RUN_COLUMNS.
LEGACY_RUN_COLUMNS = (RUN_COLUMNS[:-1],
                      tuple("D_last" if key == "D_last_layer" else key for key in RUN_COLUMNS[:-1]))
INTEGER = {"depth", "width", "epochs", "seed", "points"}
NUMERIC = INTEGER | {"lr", "pearson_r", "rho", "r2", "D_first", "D_last_layer", "train_accuracy", "test_accuracy",
                     "final_train_loss", "wall_seconds", "eval_pearson_r", "eval_rho", "test_pearson_r",
                     "test_rho"}
# Numbers a run is identified by: a run name recorded twice must give these bit for bit.
COMPARED = ("pearson_r", "rho", "D_first", "D_last_layer", "train_accuracy", "test_accuracy", "final_train_loss")
PROFILE_COLUMNS = ("run", "split", "bn_mode", "point", "D")
PAPER_MODE = "train_batches"
MAX_TABLE_BYTES = 64 * 2 ** 20       # runs.csv and profiles.csv: some 1 MB now (the test bounds them at 20 MB)
MAX_CONTEXT_BYTES = 4 * 2 ** 20      # context.json: some 4 kB
REQUIRED_COLUMNS = ("group", "run", "status", "lr")   # what every row of runs.csv holds for the report
STATUSES = (*FINISHED, "missing")
PROFILE_SERIES = (("train", PAPER_MODE), ("test", PAPER_MODE), ("train", "eval"))   # (split, bn_mode)
# The range of each number of a row (runs.csv's and a results.json's alike): (low, high, nan allowed).
# r within rounding of [-1, 1]; rho and D are ratios and variances (>= 0, possibly inf); accuracies are
# fractions; a completed run's final loss is finite and >= 0 (a diverged run's may be nan or inf); a run
# takes under MAX_WALL_SECONDS.
MAX_WALL_SECONDS = 30 * 24 * 3600
R_SLACK = 1e-9
RANGES = {**{key: (-1 - R_SLACK, 1 + R_SLACK, True) for key in ("pearson_r", "eval_pearson_r", "test_pearson_r")},
          "r2": (0.0, 1 + R_SLACK, True),
          **{key: (0.0, math.inf, True) for key in ("rho", "eval_rho", "test_rho", "D_first", "D_last_layer")},
          **{key: (0.0, 1.0, False) for key in ("train_accuracy", "test_accuracy")},
          "final_train_loss": (0.0, math.inf, True), "wall_seconds": (0.0, MAX_WALL_SECONDS, False),
          "lr": (0.0, math.inf, False), "depth": (0, 10_000, False), "width": (1, 10 ** 9, False),
          "epochs": (0, 10 ** 9, False), "seed": (0, 2 ** 63 - 1, False), "points": (2, MAX_LAYERS, False)}


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


def profiles_text(profiles: dict) -> str:
    """profiles.csv's text for `profiles` (run -> its (split, bn_mode, point, D) points), runs and points
    sorted."""
    return _csv_text(PROFILE_COLUMNS, [{"run": name, "split": split, "bn_mode": mode, "point": point, "D": value}
                                       for name in sorted(profiles) for split, mode, point, value in
                                       sorted(profiles[name])])


def _csv_rows(path: Path, text: str | None = None, limit: int = MAX_TABLE_BYTES) -> list[dict]:
    """The rows of a CSV file (or of `text`, its pending content) as dicts; BadFile when it is not a
    regular UTF-8 file of at most `limit` bytes or not CSV (epoch_costs.csv: a table anyone may write)."""
    text = read_text(path, limit) if text is None else text
    try:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise BadFile(path, f"not CSV ({printable(error)})") from None


TABLE_REFUSAL = "not read"   # as run_records.read_bytes says it: "PATH: a named pipe, not a regular file: not read"


def read_table_text(path: Path, limit: int = MAX_TABLE_BYTES) -> str:
    """The text of the report table `path`: a regular file (never a link followed or a pipe or device
    opened: atomic_io.open_regular), at most `limit` bytes of UTF-8; BadFile in one line otherwise."""
    try:
        descriptor = open_regular(path, os.O_RDONLY, TABLE_REFUSAL)
    except NotRegularFile as error:
        raise BadFile(path, error.strerror) from None
    except (OSError, ValueError) as error:   # ValueError: a NUL in the name
        raise BadFile(path, getattr(error, "strerror", None) or str(error)) from None
    with os.fdopen(descriptor, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise BadFile(path, error.strerror or str(error)) from None
    if len(data) > limit:
        raise BadFile(path, f"larger than {_size_text(limit)}, the most read of such a file: not read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadFile(path, f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") from None


def strict_csv(path: Path, text: str, columns: tuple[str, ...], legacy: tuple[tuple[str, ...], ...] = ()
               ) -> list[dict]:
    """The rows of a report table's `text` as dicts of strings. Strict: the header is exactly `columns`,
    every row has exactly their number of fields, no field holds a line break (the tables' writer puts
    none there, so the rows an unclosed quote swallows are caught), and the text ends with a line end
    (a cut table); BadFile naming the line otherwise. A header of `legacy` (the first columns of `columns`,
    some under former names) is read as `columns`, the columns it lacks empty."""
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        lines = [(reader.line_num, fields) for fields in reader]
    except csv.Error as error:
        raise BadFile(path, f"not CSV ({printable(error)}) at line {reader.line_num}") from None
    if not lines:
        raise BadFile(path, "empty: expected the header " + ",".join(columns))
    if tuple(lines[0][1]) != columns and tuple(lines[0][1]) not in legacy:
        header = ",".join(lines[0][1])
        raise BadFile(path, f"header {json.dumps(header)[:200]} is not {','.join(columns)}")
    if not text.endswith("\n"):
        raise BadFile(path, f"line {lines[-1][0]}: the table ends inside a line (cut short?)")
    width = len(lines[0][1])
    rows, previous = [], lines[0][0]
    for line, fields in lines[1:]:
        if len(fields) != width:
            raise BadFile(path, f"line {line}: {len(fields)} fields, the header has {width}")
        if any("\n" in field or "\r" in field for field in fields):
            raise BadFile(path, f"line {previous + 1}: a field holds a line break (an unclosed quote that "
                                f"swallowed lines {previous + 1}-{line}?)")
        rows.append(dict(zip(columns, fields + [""] * (len(columns) - width))))
        previous = line
    return rows


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
    """runs.csv (or `text`, its pending content) as dicts (numbers as numbers, empty cells None), read by
    read_table_text and strict_csv; BadFile naming the row of a number that is none. The rows' meaning
    is checked by check_tables."""
    rows = strict_csv(path, read_table_text(path) if text is None else text, RUN_COLUMNS, LEGACY_RUN_COLUMNS)
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
    when there is no such file. Strict (strict_csv); BadFile for an unknown split or BatchNorm mode, a
    point that is not an integer in [0, MAX_LAYERS], a D that is not a number >= 0 (or nan), or a point
    listed twice."""
    profiles = defaultdict(list)
    if text is None and not os.path.lexists(path):
        return profiles
    seen = set()
    rows = strict_csv(path, read_table_text(path) if text is None else text, PROFILE_COLUMNS)
    for position, row in enumerate(rows, start=1):
        if missing := [key for key in PROFILE_COLUMNS if row.get(key) in (None, "")]:
            raise BadFile(path, f"row {position}: {', '.join(missing)} empty")
        if (row["split"], row["bn_mode"]) not in PROFILE_SERIES:
            raise BadFile(path, f"row {position}: split {json.dumps(row['split'])[:40]} in BatchNorm mode "
                                f"{json.dumps(row['bn_mode'])[:40]} is none of the report's profiles "
                                f"({', '.join('/'.join(series) for series in PROFILE_SERIES)})")
        point = _table_number(path, position, "point", row["point"], integer=True)
        value = _table_number(path, position, "D", row["D"])
        if not 0 <= point <= MAX_LAYERS or value < 0:
            raise BadFile(path, f"row {position}: point {point}, D {value!r}: expected a point in [0, {MAX_LAYERS}] "
                                "and a D >= 0")
        key = (row["run"], row["split"], row["bn_mode"], point)
        if key in seen:
            raise BadFile(path, f"row {position}: point {point} of {printable(row['run'])} "
                                f"({row['split']}, {row['bn_mode']}) is listed twice")
        seen.add(key)
        profiles[row["run"]].append((row["split"], row["bn_mode"], point, value))
    return profiles


def value_problem(row: dict) -> str | None:
    """Why a row's numbers (runs.csv's, or a results.json's as record_of reads it) cannot be true: one
    outside its RANGES, or a completed run without a finite final loss >= 0; None when they can."""
    for key, (low, high, nan_allowed) in RANGES.items():
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, float) and math.isnan(value):
            if nan_allowed:
                continue
        elif low <= value <= high:
            continue
        return f"{key} {value!r} is outside [{low:g}, {high:g}]"
    loss = row.get("final_train_loss")
    if row.get("status") == "completed" and (loss is None or not math.isfinite(loss)):
        return f"final_train_loss {loss!r}: a completed run has a finite final training loss"
    if row.get("trained_in") is not None and (problem := name_problem(str(row["trained_in"]), MAX_RUN_NAME)):
        return f"trained_in {json.dumps(str(row['trained_in']))[:80]}: {problem}"
    return None


def profile_problem(row: dict, series: list[tuple[str, str, int, float]]) -> str | None:
    """Why a finished row and its profile points (profiles.csv's (split, bn_mode, point, D) of its run)
    do not belong together, or None: a completed row has its fit (pearson_r, rho) and, unless it was
    recorded before the tables (no commit), its training profile, with `points` at most the profile's
    finite, positive D values; an eval-mode or test fit has its profile, and a profile its row."""
    completed = row["status"] == "completed"
    kinds = {(split, mode) for split, mode, _, _ in series}
    if completed and (row["pearson_r"] is None or row["rho"] is None):
        return "completed without its fit (pearson_r and rho)"
    if completed and row["commit"] and ("train", PAPER_MODE) not in kinds:
        return "completed, but profiles.csv holds no profile of it"
    train = [value for split, mode, _, value in series if (split, mode) == ("train", PAPER_MODE)]
    if row["points"] is not None and train and row["points"] > sum(math.isfinite(v) and v > 0 for v in train):
        return f"a fit of {row['points']} points from a profile of {len(train)} (fewer finite, positive D)"
    for (split, mode), key in ((("train", "eval"), "eval_pearson_r"), (("test", PAPER_MODE), "test_pearson_r")):
        if row[key] is not None and (split, mode) not in kinds:
            return f"{key} without its profile ({split}, {mode}) in profiles.csv"
    return None


def orphan_profiles(rows: list[dict], profiles: dict) -> list[str]:
    """Runs whose profiles.csv points no row supports: no finished row, an eval-mode profile without
    eval_pearson_r, a test profile of a run not completed (what a merge stopped between writing
    profiles.csv and runs.csv leaves; a re-merge repairs it)."""
    finished = {row["run"]: row for row in rows if row["status"] in FINISHED}
    orphans = []
    for name, series in profiles.items():
        row = finished.get(name)
        kinds = {(split, mode) for split, mode, _, _ in series}
        if (row is None or (("train", "eval") in kinds and row["eval_pearson_r"] is None)
                or (("test", PAPER_MODE) in kinds and row["status"] != "completed")):
            orphans.append(name)
    return orphans


@dataclass
class Tables:
    """runs.csv's rows and profiles.csv's profiles, read and checked (read_tables)."""
    rows: list[dict]
    profiles: dict
    unprofiled: list[str]        # completed runs without their profile (repairable=True only)
    orphans: list[str]           # runs with profile points no row supports (repairable=True only)


def check_tables(rows_path: Path, rows: list[dict], profiles_path: Path, profiles: dict, groups=GROUPS,
                 repairable: bool = False) -> Tables:
    """BadFile naming the row for tables the report cannot stand on: a row without group, run, status or
    lr; an unknown group or status; a run name that is no plain name; a number out of range
    (value_problem); a (group, run) listed twice, or one run's rows in two groups that differ; a missing
    run holding measured numbers; a finished row and its profile that do not belong together
    (profile_problem); profile points no row supports (orphan_profiles). With repairable=True the last
    two kinds a merge can repair (a completed row without its profile, points without a row: what an
    interrupted merge leaves) are returned in Tables instead, and a row recorded before the tables (no
    commit) may lack its lr (a fresh run replaces it; the merged tables pass every check)."""
    legacy_lr = [row for row in rows if repairable and row["lr"] is None and not row["commit"]
                 and row["status"] in FINISHED and None not in (row["group"], row["run"])]
    check_rows(rows_path, [row if row not in legacy_lr else {**row, "lr": "replaced"} for row in rows])
    known = [group.name for group in groups]
    seen, by_run = {}, {}
    unprofiled = []
    for position, row in enumerate(rows, start=1):
        where = f"row {position} ({printable(row['run'])[:80]})"
        if row["group"] not in known:
            raise BadFile(rows_path, f"{where}: group {json.dumps(row['group'])[:40]} is not a group of the report "
                                     f"({', '.join(known)})")
        if row["status"] not in STATUSES:
            raise BadFile(rows_path, f"{where}: status {json.dumps(row['status'])[:40]} is not one of "
                                     f"{', '.join(STATUSES)}")
        if name_problem(row["run"], MAX_RUN_NAME) is not None:
            raise BadFile(rows_path, f"row {position}: run {json.dumps(row['run'])[:80]} is not a run name")
        if (problem := value_problem(row)) is not None:
            raise BadFile(rows_path, f"{where}: {problem}")
        if (row["group"], row["run"]) in seen:
            raise BadFile(rows_path, f"{where}: listed twice in group {row['group']} (rows {seen[row['group'], row['run']]} "
                                     f"and {position})")
        seen[row["group"], row["run"]] = position
        other = by_run.setdefault(row["run"], (position, row))[1]
        if any(other[key] != row[key] and not _same(other[key], row[key]) for key in RUN_COLUMNS if key != "group"):
            raise BadFile(rows_path, f"{where}: differs from row {by_run[row['run']][0]}, the same run in group "
                                     f"{other['group']}")
        if row["status"] == "missing":
            if measured := [key for key in COMPARED if row[key] is not None]:
                raise BadFile(rows_path, f"{where}: status missing, but it holds {', '.join(measured)}")
            continue
        if (problem := profile_problem(row, profiles.get(row["run"], []))) is not None:
            if not profiles and row["commit"]:   # no crash leaves this (each table is replaced whole)
                raise BadFile(profiles_path, ("no such file" if not os.path.lexists(profiles_path) else "holds no "
                                              "profile") + f", and runs.csv's {where} is a completed run")
            if repairable and problem.startswith("completed, but profiles.csv holds no profile"):
                unprofiled.append(row["run"])
                continue
            raise BadFile(rows_path, f"{where}: {problem}")
    orphans = orphan_profiles(rows, profiles)
    if orphans and not repairable:
        raise BadFile(profiles_path, f"profile points of {len(orphans)} run(s) no row of runs.csv supports "
                                     f"(e.g. {printable(orphans[0])[:80]}): left by an interrupted merge? "
                                     f"Merge again (`{MERGE_COMMAND}`)")
    return Tables(rows, profiles, sorted(set(unprofiled)), orphans)


def read_tables(out: Path, groups=GROUPS, pending: dict | None = None, repairable: bool = False) -> Tables:
    """The one checked reader of a report's tables: out/runs.csv and out/profiles.csv (or their pending
    text) read strictly (read_table_text, strict_csv: regular files only, size bounds, the exact header)
    and checked together (check_tables); BadFile in one line for anything the report cannot stand on.
    The rebuild, the merge (before it merges anything) and recorded_runs read the tables through it."""
    pending = pending or {}
    rows_path, profiles_path = out / "runs.csv", out / "profiles.csv"
    rows = read_rows(rows_path, pending.get("runs.csv"))
    profiles = read_profiles(profiles_path, pending.get("profiles.csv"))
    return check_tables(rows_path, rows, profiles_path, profiles, groups, repairable)


def recorded_runs(report: Path, groups=GROUPS) -> set[str]:
    """The names of the finished runs (completed or diverged) of a report folder's tables, read and
    checked by read_tables (what sweep_jobs.py --skip-recorded leaves out); BadFile (a ValueError whose
    str is 'PATH: problem', one line) when the tables cannot be trusted."""
    return {row["run"] for row in read_tables(Path(report), groups).rows if row["status"] in FINISHED}


def profile_of(profiles: dict, run: str, split: str = "train", bn_mode: str = PAPER_MODE) -> list[tuple[int, float]]:
    return [(point, value) for s, mode, point, value in profiles.get(run, []) if s == split and mode == bn_mode]


def _same(first, second) -> bool:
    both_nan = isinstance(first, float) and isinstance(second, float) and math.isnan(first) and math.isnan(second)
    return first == second or both_nan


def report_output(out: Path, name: str) -> Path:
    """safe_output.output_path for a file of the report folder, a symbolic link at the name refused
    in the report's own words (the report has no --out: the folder is its argument)."""
    path = Path(out).resolve() / name
    if os.path.islink(path):
        raise UnsafeOutput(f"{printable(path)} is a symbolic link (to {printable(os.readlink(path))}): refusing "
                           "to write through or over it; replace it by the file itself")
    return output_path(out, name)


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


RERUN_COLUMNS = ("run", "group", "machine", "cpu_kernels", "pearson_r", "rho", "final_train_loss", "test_accuracy",
                 "recorded_machine", "recorded_pearson_r")
RERUN_NUMBERS = ("pearson_r", "rho", "final_train_loss", "test_accuracy", "recorded_pearson_r")


def read_reruns(out: Path, rows: list[dict], text: str | None = None) -> list[dict]:
    """out/reruns.csv (or `text`, its pending content): committed rows rerun on another machine, [] when
    there is no such file. Read as runs.csv is (read_table_text, strict_csv: regular file, size bound,
    exact header, whole rows) and checked against runs.csv's `rows`: every rerun is a completed row of
    its group whose machine and r are recorded as the row has them, its numbers in range, no (run,
    machine) twice; BadFile naming the row otherwise."""
    path = Path(out) / "reruns.csv"
    if text is None and not os.path.lexists(path):
        return []
    reruns = strict_csv(path, read_table_text(path) if text is None else text, RERUN_COLUMNS)
    recorded = {(row["group"], row["run"]): row for row in rows if row["status"] == "completed"}
    seen = set()
    for position, rerun in enumerate(reruns, start=1):
        for key in RERUN_NUMBERS:
            rerun[key] = _table_number(path, position, key, rerun[key])
        rerun.update({key: rerun[key][1:] for key in ("machine", "recorded_machine") if rerun[key].startswith("'")})
        problem = value_problem({key: rerun[key] for key in RERUN_NUMBERS[:-1]} | {"status": "completed"})
        if problem is None and not -1 - R_SLACK <= rerun["recorded_pearson_r"] <= 1 + R_SLACK:
            problem = f"recorded_pearson_r {rerun['recorded_pearson_r']!r} is outside [-1, 1]"
        row = recorded.get((rerun["group"], rerun["run"]))
        if problem is None and row is None:
            problem = f"{printable(rerun['run'])[:80]} is no completed row of group {printable(rerun['group'])[:40]} in runs.csv"
        elif problem is None and (row["machine"] != rerun["recorded_machine"] or row["pearson_r"] != rerun["recorded_pearson_r"]):
            problem = "its recorded machine or r is not what runs.csv holds"
        elif problem is None and (rerun["run"], rerun["machine"]) in seen:
            problem = f"{printable(rerun['run'])[:80]} on {printable(rerun['machine'])[:60]} is listed twice"
        if problem is not None:
            raise BadFile(path, f"row {position}: {problem}")
        seen.add((rerun["run"], rerun["machine"]))
    return reruns


ORIGINAL_CODE_COLUMNS = ("group", "setting", "lr", "our_run", "command", "pearson_r", "slope", "final_train_loss",
                         "train_accuracy", "test_accuracy", "wall_seconds", "machine", "torch", "original_commit")
ORIGINAL_CODE_NUMBERS = ("lr", "pearson_r", "slope", "final_train_loss", "train_accuracy", "test_accuracy",
                         "wall_seconds")


def read_original_code(out: Path, rows: list[dict], text: str | None = None) -> list[dict]:
    """out/original_code.csv (or `text`): the failing settings run through the original repository's own
    scripts (benchmarks/original_code.py), [] when there is no such file. Read as reruns.csv is: every
    record names a completed row of its group at its lr (our seed-666 run of the setting), its r in
    [-1, 1] or empty (the original's fit gave none), its other numbers finite; BadFile naming the row
    otherwise."""
    path = Path(out) / "original_code.csv"
    if text is None and not os.path.lexists(path):
        return []
    records = strict_csv(path, read_table_text(path) if text is None else text, ORIGINAL_CODE_COLUMNS)
    completed = {row["run"]: row for row in rows if row["status"] == "completed"}
    for position, record in enumerate(records, start=1):
        for key in ORIGINAL_CODE_NUMBERS:
            record[key] = None if record[key] == "" and key != "lr" else _table_number(path, position, key, record[key])
        record.update({key: record[key][1:] for key in ("setting", "machine", "command") if record[key].startswith("'")})
        row = completed.get(record["our_run"])
        r = record["pearson_r"]
        if r is not None and not -1 - R_SLACK <= r <= 1 + R_SLACK:
            problem = f"pearson_r {r!r} is outside [-1, 1]"
        elif any(record[key] is not None and not math.isfinite(record[key]) for key in ORIGINAL_CODE_NUMBERS[2:]):
            problem = "a number is not finite"
        elif row is None or row["group"] != record["group"] or not math.isclose(row["lr"], record["lr"]):
            problem = f"{printable(record['our_run'])[:80]} is no completed row of group {printable(record['group'])[:40]} at its lr"
        else:
            continue
        raise BadFile(path, f"row {position}: {problem}")
    return records
