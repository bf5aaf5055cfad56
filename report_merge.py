"""The merge of finished runs into the committed tables (reproduction_report.py --merge, --reruns).

A merge (merge_tables) runs under the report folder's lock, reads the tables through report_tables'
checked reader before anything else, adds a finished run of the logs only when its config gives the name
it claims (claimed_name_problem) and its numbers are in range (two differing copies: neither), never
removes or changes a recorded finished row or profile (lost_evidence checks the result; rows the campaign
no longer plans stay, reported, unless --retire-unplanned removes them), and writes both tables together
(write_tables): what an interrupted merge leaves is refused by the rebuild and repaired by the next merge.
A merge into a folder without runs.csv needs --new-report. record_reruns adds the runs of a folder that
rerun committed rows to reruns.csv.

It writes tables only; it renders nothing and decides no verdict.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from atomic_io import atomic_path, folder_lock
from campaign import GROUPS, campaign_jobs
from config_utils import EXECUTION_KEYS, LABEL_MODEL_KEYS, LOOKUP_KEY, MODEL_SHAPE_KEYS
from report_tables import (COMPARED, ORIGINAL_CODE_COLUMNS, PAPER_MODE, RERUN_COLUMNS,
                           RERUN_NUMBERS, RUN_COLUMNS, _csv_text, _number, _same, check_tables, profile_problem,
                           profiles_text,
                           read_original_code, read_profiles, read_reruns, read_tables, report_output, Tables,
                           value_problem)
from run_records import MAX_LAYERS, BadFile, load_runs, printable, read_results, Run, warn
from safe_output import output_folder
from verdicts import FINISHED


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
    """(the run's row without its group, its profile rows) from a finished run (run_records.Run)."""
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
    record["D_last_layer"] = record.pop("D_last")    # summarize_runs' name: the D of the last layer point
    record.update({"run": run.name, "r2": _number(fit.get("r2")),
                   "points": int(fit["num_points"]) if isinstance(fit.get("num_points"), int) else None,
                   "test_pearson_r": _number(test_fit.get("pearson_r")), "test_rho": _number(test_fit.get("rho")),
                   "test_split": str(data_config.get("test_split") or "official"),
                   "machine": machine.get("cpu") or fallback.get("machine"),
                   "cpu_kernels": machine.get("cpu_kernels") or fallback.get("cpu_kernels"),
                   "device": results.get("device"), "torch": versions.get("torch"),
                   "commit": results.get("commit") or fallback.get("commit"),
                   "trained_in": results.get("trained_in")})
    record = {key: (re.sub(r"[\r\n]+", " ", value) if isinstance(value, str) else value)
              for key, value in record.items()}   # the tables hold no line break (strict_csv)
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


def same_numbers(first: dict, second: dict) -> bool:
    """Whether two records of a run give the same numbers bit for bit (nan equals nan)."""
    return all(_same(first.get(key), second.get(key)) for key in COMPARED)


EVAL_COLUMNS = ("eval_pearson_r", "eval_rho")    # a merge may fill these in on a recorded row, nothing else


def _identity_view(config) -> dict:
    """A resolved config (a results.json's, a planned job's) without what no run name depends on: the
    execution keys, the lookup tables and the model's label keys (config_utils.run_identity's rule)."""
    view = {key: value for key, value in (config or {}).items() if key not in EXECUTION_KEYS and key != LOOKUP_KEY}
    if isinstance(view.get("model"), dict):
        view["model"] = {key: value for key, value in view["model"].items() if key not in LABEL_MODEL_KEYS}
    return view


def _leaves(node, prefix: str = ""):
    """(dotted key, JSON text of the value) of every leaf of nested dicts (a list is one leaf)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], json.dumps(node, sort_keys=True, default=str)


def identity_hashes(config) -> set[str]:
    """The identity hashes (config_utils.identity_hash) a resolved config can give: the resolved form no
    longer says which shape keys (MODEL_SHAPE_KEYS) its model referred to, so one per choice of them."""
    view = _identity_view(config)
    hashes = set()
    for count in range(len(MODEL_SHAPE_KEYS) + 1):
        for kept in itertools.combinations(MODEL_SHAPE_KEYS, count):
            identity = {key: value for key, value in view.items() if key not in MODEL_SHAPE_KEYS or key in kept}
            text = json.dumps(identity, sort_keys=True, default=str)
            hashes.add(hashlib.sha256(text.encode()).hexdigest()[:8])
    return hashes


NAME_HASH = re.compile(r"-([0-9a-f]{8})$")


def claimed_name_problem(run, job) -> str | None:
    """Why the finished run `run` (its results.json) is not the planned run `job` whose name it claims,
    or None: its config must give every value of the planned config (execution keys, lookups and labels
    aside), and its own config must give the name's identity hash (and its identity_hash field, if any)."""
    own = dict(_leaves(_identity_view(run.config)))
    for key, value in _leaves(_identity_view(job.config)):
        if own.get(key) != value:
            return (f"claims to be planned run {job.run_name}, but its config has {key}={own.get(key, 'nothing')[:40]} "
                    f"where that run has {value[:40]}: not merged")
    if match := NAME_HASH.search(job.run_name):
        if match.group(1) not in identity_hashes(run.config):
            return f"claims to be planned run {job.run_name}, but its config does not give the hash {match.group(1)}: not merged"
        claimed = run.results.get("identity_hash")
        if claimed is not None and claimed != match.group(1):
            return f"claims to be planned run {job.run_name}, but its identity_hash is {json.dumps(claimed)[:20]}: not merged"
    return None


def record_problem(record: dict, series: list[tuple]) -> str | None:
    """Why a finished run's row and profile (record_of) cannot be recorded: its numbers out of range
    (value_problem), its profile points not points (read_profiles' rules), or the two not belonging
    together (profile_problem); None when they can."""
    row = {key: record.get(key) for key in RUN_COLUMNS}
    for split, mode, point, value in series:
        if not (isinstance(point, int) and 0 <= point <= MAX_LAYERS) or not (value >= 0 or math.isnan(value)):
            return f"profile point {point!r} with D {value!r}: expected a point in [0, {MAX_LAYERS}] and a D >= 0"
    if len({(split, mode, point) for split, mode, point, _ in series}) < len(series):
        return "its profile lists a point twice"
    return value_problem(row) or profile_problem(row, series)


def _same_profile(first: list[tuple], second: list[tuple]) -> bool:
    """Whether two profiles (lists of tuples ending in D) are the same bit for bit (nan equals nan)."""
    return [tuple(map(repr, point)) for point in sorted(first)] == [tuple(map(repr, point)) for point in sorted(second)]


@dataclass
class MergeOutcome:
    added: int = 0             # finished runs new to the tables
    kept: int = 0              # already recorded, the logs' copy gives the same numbers
    conflicting: list = None   # already recorded, the logs' copy differs: the recorded row is kept
    reproduced: int = 0        # a row without provenance (before the tables) replaced by an identical run
    replaced_differing: list = None   # ... replaced by a run that gave other numbers
    eval_added: int = 0
    outside: int = 0           # finished runs of the logs that the campaign does not plan
    refused: list = field(default_factory=list)       # (results.json, why): a false name or impossible numbers
    copies: list = field(default_factory=list)        # (run, paths): copies of a new run that differ: none recorded
    unplanned: int = 0         # finished rows the campaign no longer plans: kept
    retired: int = 0           # ... removed, with their profiles (retire_unplanned)
    retired_reruns: int = 0    # ... and their reruns (reruns.csv) and original-code records (original_code.csv)
    dropped_missing: int = 0   # rows of runs not finished that the campaign no longer plans
    restored: int = 0          # completed rows that had no profile (an interrupted merge): profile added
    orphans: int = 0           # runs whose profile points no row supports (an interrupted merge): dropped

    def lines(self) -> list[str]:
        lines = [f"merged: {self.added} new runs, {self.kept} already recorded (same numbers), "
                 f"{self.eval_added} eval-mode profiles added, {self.outside} runs outside the campaign ignored"]
        if self.reproduced or self.replaced_differing:
            lines.append(f"rows recorded before the tables (no profile, no provenance) replaced: {self.reproduced} "
                         f"reproduced bit for bit, {len(self.replaced_differing)} with other numbers")
        if self.restored or self.orphans:
            lines.append(f"repaired what an interrupted merge left: {self.restored} profiles restored, the profile "
                         f"points of {self.orphans} runs without a row dropped")
        if self.retired:
            lines.append(f"retired: {self.retired} finished rows the campaign no longer plans, and their profiles "
                         f"(--retire-unplanned)" + (f" and {self.retired_reruns} reruns or original-code records" if self.retired_reruns else ""))
        if self.dropped_missing:
            lines.append(f"dropped: {self.dropped_missing} rows of runs not finished that the campaign no longer plans")
        lines += [f"warning: {name}: {text}" for name, text in (self.conflicting or []) + (self.replaced_differing or [])]
        lines += [f"warning: skipping {printable(path)}: {problem}" for path, problem in self.refused]
        lines += [f"warning: {name}: {len(paths)} copies with different numbers ({', '.join(map(printable, paths))}): "
                  "none recorded" for name, paths in self.copies]
        if self.unplanned:
            lines.append(f"warning: {self.unplanned} finished rows are runs the campaign no longer plans (its config "
                         "or plan changed?): kept; --retire-unplanned removes them and their profiles")
        return lines


def _difference(recorded: dict, fresh: dict) -> str:
    return ", ".join(f"{key} {recorded.get(key)!r} -> {fresh.get(key)!r}" for key in COMPARED
                     if not _same(recorded.get(key), fresh.get(key)))


def merge(out: Path, log_paths: list[Path], fallback: dict | None = None, groups=GROUPS,
          retire_unplanned: bool = False) -> MergeOutcome:
    """Add the finished runs under `log_paths` to out/runs.csv and out/profiles.csv (merge_tables), under
    the report folder's lock, writing both tables together (write_tables) once the new ones pass every
    check of the rebuild (read_tables)."""
    output_folder(out)
    with folder_lock(out):
        outcome, tables = merge_tables(out, log_paths, fallback, groups, retire_unplanned)
        checked = read_tables(out, groups, tables)     # what is written passes every check of the rebuild
        read_reruns(out, checked.rows, tables.get("reruns.csv"))
        write_tables(out, tables)
    return outcome


def _fresh_runs(log_paths: list[Path], jobs: dict, fallback: dict, outcome: MergeOutcome) -> dict:
    """run name -> (run, its record, its profile rows) of the finished runs under `log_paths` that can be
    recorded: planned (jobs: name -> job), named as their own config gives (claimed_name_problem), with
    numbers in range (record_problem), and one copy, or copies with the same numbers and profile."""
    copies = defaultdict(list)
    for run in load_runs(log_paths):
        if run.status in FINISHED:
            copies[run.name].append(run)
    fresh = {}
    for name, runs in copies.items():
        if name not in jobs:
            outcome.outside += 1
            continue
        candidates = []
        for run in runs:
            problem = claimed_name_problem(run, jobs[name])
            if problem is None:
                record, profiles = record_of(run, fallback)
                problem = record_problem(record, [profile[1:] for profile in profiles])
            if problem is not None:
                outcome.refused.append((run.path, problem))
                continue
            candidates.append((run, record, profiles))
        if candidates and all(same_numbers(candidates[0][1], other) and _same_profile(candidates[0][2], series)
                              for _, other, series in candidates[1:]):
            fresh[name] = candidates[0]
        elif candidates:
            outcome.copies.append((name, [run.path for run, _, _ in candidates]))
    return fresh


def _profile_key(series) -> set:
    return {(split, mode, point, repr(value)) for split, mode, point, value in series}


def lost_evidence(before: Tables, rows: list[dict], profiles: dict, retired: set) -> str | None:
    """What recorded evidence the new tables (`rows`, `profiles`) would lose, or None: every finished row
    of `before` stays finished in its group, a row with provenance (a commit) keeps every value (eval-mode
    values may be filled in), and every profile point its row supports stays -- except the (group, run)
    pairs `retired` names."""
    after = {(row["group"], row["run"]): row for row in rows}
    for row in before.rows:
        pair = (row["group"], row["run"])
        if row["status"] not in FINISHED or pair in retired:
            continue
        new = after.get(pair)
        if new is None or new["status"] not in FINISHED:
            return f"the finished row of {row['run']} in group {row['group']} would be dropped"
        if row["commit"] and any(not _same(row[key], new[key]) for key in RUN_COLUMNS
                                 if key not in EVAL_COLUMNS or row[key] is not None):
            return f"the recorded row of {row['run']} in group {row['group']} would change"
    kept = {row["run"]: row for row in before.rows
            if row["status"] in FINISHED and (row["group"], row["run"]) not in retired}
    for name, series in before.profiles.items():
        if name not in kept or name in before.orphans:
            continue
        if not _profile_key(series) <= _profile_key(profiles.get(name, [])):
            return f"the recorded profile of {name} would lose points"
    return None


def merge_tables(out: Path, log_paths: list[Path], fallback: dict | None = None, groups=GROUPS,
                 retire_unplanned: bool = False) -> tuple[MergeOutcome, dict[str, str]]:
    """merge's outcome and the new content of runs.csv and profiles.csv, nothing written.

    The tables are evidence, appended to only. They are read by read_tables (every check of the rebuild)
    before anything else, so a hand-edited or broken table is refused, not rewritten; what an interrupted
    merge leaves (a completed row without its profile, profile points without their row) is repaired from
    the logs. A finished run of the logs is recorded only when _fresh_runs accepts it (planned, named as
    its config gives, numbers in range, no differing copy). A recorded run is never replaced, except a
    row written before the tables existed (no commit): a fresh run of it replaces it and the merge says
    whether its numbers are the same bit for bit. Rows of the planned runs not finished anywhere stay
    `missing`; finished rows the campaign no longer plans stay, reported, unless retire_unplanned removes
    them (and says how many). lost_evidence checks the result before it is returned."""
    fallback = fallback or {}
    rows_path = out / "runs.csv"
    if os.path.lexists(rows_path):
        before = read_tables(out, groups, repairable=True)
    else:   # a new report (the command refuses one without --new-report)
        profiles_path = out / "profiles.csv"
        before = check_tables(rows_path, [], profiles_path, read_profiles(profiles_path), groups, repairable=True)
    recorded = {row["run"]: row for row in before.rows if row["status"] in FINISHED}
    profiles = {name: list(series) for name, series in before.profiles.items()}
    outcome = MergeOutcome(conflicting=[], replaced_differing=[])
    planned = campaign_jobs(groups)
    jobs = {}
    for _, job in planned:
        jobs.setdefault(job.run_name, job)
    fresh = _fresh_runs(log_paths, jobs, fallback, outcome)
    records = {}
    for name, job in jobs.items():
        old, (run, new, new_profiles) = recorded.get(name), fresh.get(name, (None, None, None))
        if old is not None and (old.get("commit") or run is None):
            record = {key: old.get(key) for key in RUN_COLUMNS if key != "group"}
            if run is not None:
                if not same_numbers(old, new):
                    outcome.conflicting.append((name, "differs from its recorded row, which is kept: "
                                                + _difference(old, new)))
                else:
                    outcome.kept += 1
                    if name in before.unprofiled:    # an interrupted merge wrote the row, not its profile
                        profiles[name] = [p for p in profiles.get(name, []) if p[1] == "eval"] + \
                                         [profile[1:] for profile in new_profiles]
                        outcome.restored += 1
        elif run is not None:
            record = new
            profiles[name] = [profile[1:] for profile in new_profiles]
            if old is None:
                outcome.added += 1
            elif same_numbers(old, new):
                outcome.reproduced += 1
            else:
                outcome.replaced_differing.append((name, "the rerun replaced a row recorded before the "
                                                   "tables, with other numbers: " + _difference(old, new)))
        else:
            record = _missing_record(job)
        if run is not None and record.get("eval_pearson_r") is None and same_numbers(record, new):
            evaluated, eval_profiles = _eval_record(run)
            series = [p for p in profiles.get(name, []) if p[1] != "eval"] + [p[1:] for p in eval_profiles]
            if evaluated and record_problem({**record, **evaluated}, series) is None:
                record.update(evaluated)
                profiles[name] = series
                outcome.eval_added += 1
        records[name] = record
    rows = [{"group": group, **records[job.run_name]} for group, job in planned]
    planned_pairs = {(group, job.run_name) for group, job in planned}
    unplanned = [row for row in before.rows if (row["group"], row["run"]) not in planned_pairs]
    outcome.dropped_missing = sum(row["status"] not in FINISHED for row in unplanned)
    unplanned = [{**row, **records.get(row["run"], {})} for row in unplanned if row["status"] in FINISHED]
    retired = {(row["group"], row["run"]) for row in unplanned} if retire_unplanned else set()
    if retire_unplanned:
        outcome.retired = len(unplanned)
    else:
        rows += unplanned
        outcome.unplanned = len(unplanned)
    finished = {row["run"]: row for row in rows if row["status"] in FINISHED}
    if unprofiled := [name for name in before.unprofiled if name in finished and not any(
            split == "train" and mode == PAPER_MODE for split, mode, _, _ in profiles.get(name, []))]:
        raise BadFile(rows_path, f"{len(unprofiled)} completed run(s) without their profile (e.g. "
                                 f"{printable(unprofiled[0])[:80]}), and the logs merged do not hold them: an "
                                 "interrupted merge? Merge the logs that hold them")
    for name in list(profiles):    # keep the series a row supports (orphan_profiles: an interrupted merge's)
        row = finished.get(name)
        supported = [p for p in profiles[name] if row is not None and (
            (p[0], p[1]) == ("train", PAPER_MODE) or (p[0], p[1]) == ("test", PAPER_MODE) and row["status"] == "completed"
            or p[1] == "eval" and row["eval_pearson_r"] is not None)]
        if len(supported) < len(profiles[name]) and name in before.orphans:
            outcome.orphans += 1
        profiles[name] = supported
    if (lost := lost_evidence(before, rows, profiles, retired)) is not None:
        raise BadFile(rows_path, f"{lost}: nothing written (a recorded row or profile is never removed)")
    tables = {"runs.csv": _csv_text(RUN_COLUMNS, rows), "profiles.csv": profiles_text(profiles)}
    if retired and (reruns := read_reruns(out, before.rows)):    # a retired row's reruns go with it
        kept = [rerun for rerun in reruns if (rerun["group"], rerun["run"]) not in retired]
        outcome.retired_reruns = len(reruns) - len(kept)
        if outcome.retired_reruns:
            tables["reruns.csv"] = _csv_text(RERUN_COLUMNS, kept)
    if retired and (records := read_original_code(out, before.rows)):    # ... and its original-code record
        kept = [record for record in records if (record["group"], record["our_run"]) not in retired]
        outcome.retired_reruns += len(records) - len(kept)
        if len(kept) < len(records):
            tables["original_code.csv"] = _csv_text(ORIGINAL_CODE_COLUMNS, kept)
    return outcome, tables


DEPENDENT_TABLES = ("reruns.csv", "original_code.csv")   # tables whose records name rows of runs.csv


def write_tables(out: Path, tables: dict[str, str]) -> list[Path]:
    """Write the new runs.csv and profiles.csv (and the DEPENDENT_TABLES, when given) together: every name
    checked (output_path) and every temporary written and synced before any replaces its file, the
    dependent tables and profiles.csv first. So no full disk leaves one table new and the other old, and a crash between
    the renames leaves profile points no row supports yet, which the rebuild refuses and a re-merge
    repairs -- never a completed row without its profile."""
    paths = {name: report_output(out, name) for name in (*DEPENDENT_TABLES, "profiles.csv", "runs.csv")
             if name in tables}
    with contextlib.ExitStack() as stack:
        temporaries = {name: stack.enter_context(atomic_path(path)) for name, path in reversed(paths.items())}
        for name, temporary in temporaries.items():
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(tables[name])
                handle.flush()
                os.fsync(handle.fileno())
    return [Path(out) / name for name in ("runs.csv", "profiles.csv", *DEPENDENT_TABLES) if name in paths]


def record_reruns(out: Path, rerun_logs: list[Path]) -> tuple[str, list[str]]:
    """The new text of out/reruns.csv with the completed runs under `rerun_logs` that rerun a completed
    row of runs.csv (named as their config gives: claimed_name_problem), and the lines to print. Rows
    already there stay as they are (a (run, machine) rerun again with other numbers: a warning)."""
    tables = read_tables(out)
    reruns = read_reruns(out, tables.rows)
    known = {(rerun["run"], rerun["machine"]): rerun for rerun in reruns}
    recorded = {}
    for row in tables.rows:
        if row["status"] == "completed":
            recorded.setdefault(row["run"], row)
    jobs = {job.run_name: job for _, job in campaign_jobs()}
    lines, added = [], 0
    for run in load_runs(rerun_logs):
        row = recorded.get(run.name)
        if run.status != "completed" or row is None:
            lines.append(f"warning: {printable(run.name)}: not a completed row of runs.csv rerun: not recorded")
            continue
        if (problem := claimed_name_problem(run, jobs[run.name]) if run.name in jobs else "not planned") is not None:
            lines.append(f"warning: skipping {printable(run.path)}: {problem}")
            continue
        record, _ = record_of(run, {})
        rerun = {"run": run.name, "group": row["group"], "machine": record["machine"] or "not recorded",
                 "cpu_kernels": record["cpu_kernels"] or "", **{key: record[key] for key in RERUN_NUMBERS[:-1]},
                 "recorded_machine": row["machine"], "recorded_pearson_r": row["pearson_r"]}
        if (problem := value_problem({**rerun, "status": "completed"})) is not None:
            lines.append(f"warning: skipping {printable(run.path)}: {problem}")
            continue
        if (old := known.get((run.name, rerun["machine"]))) is not None:
            if any(not _same(old[key], rerun[key]) for key in RERUN_NUMBERS[:-1]):
                lines.append(f"warning: {printable(run.name)}: rerun on {printable(rerun['machine'])} again with other "
                             "numbers: the recorded rerun is kept")
            continue
        known[(run.name, rerun["machine"])] = rerun
        reruns.append(rerun)
        added += 1
    lines.insert(0, f"reruns: {added} new, {len(reruns)} in all")
    return _csv_text(RERUN_COLUMNS, reruns), lines
