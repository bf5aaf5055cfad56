"""Hardening III (issue 26), the report's side: the committed tables are append-only evidence (a merge
never drops or changes a recorded finished row or profile, whatever the plan or the logs say; it refuses
broken tables, false names, impossible numbers and differing copies; two merges at once lose nothing; a
crash between the two tables is refused by the rebuild and repaired by the next merge), one checked
reader reads the tables (no link followed, no pipe or device opened), and lock files and checkpoints
are never followed or blocked on. Every case works on a copy of docs/reproduction in tmp_path, a few
finished runs of it made missing again (the `copy` fixture)."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import atomic_io
import campaign
import queue_logs
import report_merge
import report_tables
import verdicts
import reproduction_report as report
from run_records import BadFile
from tests.child_processes import finishes, main_outcome
from tests.test_report import fit_of

pytestmark = pytest.mark.xdist_group("report")   # the plan fixture is built once, as test_report's

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED = REPO_ROOT / "docs" / "reproduction"
TABLES = ("runs.csv", "profiles.csv")
PROFILE = [30.0, 12.0, 5.0, 2.0, 0.8, 0.3]       # a straight ln D_l: r = -0.9997


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def plan():
    """The campaign's plan (campaign.campaign_jobs: composed once, then read from its cache)."""
    return campaign.campaign_jobs()


def stub_png(group, series) -> bytes:
    return b"PNG stub"


@pytest.fixture(autouse=True)
def no_drawing(monkeypatch):
    """The figures are not what these cases check (test_report checks them): each PNG is a stub, so a
    merge here takes a second, not five."""
    monkeypatch.setattr(report, "group_figure_png", stub_png)


THINNED = 4   # finished fig1 runs the `copy` fixture turns back into missing ones


@pytest.fixture(scope="module")
def thinned(tmp_path_factory, plan) -> Path:
    """A copy of the committed report folder in which THINNED finished fig1 runs (no rerun or
    original-code record names them; the last ones, so the first rows stay as committed) are missing
    again, rows and profiles, as a merge leaves a planned run not yet finished: the cases below need runs
    a merge would add, and the committed campaign may be complete. Its README.md is rebuilt from the
    thinned tables (its figures are stubs, as in every case here)."""
    folder = tmp_path_factory.mktemp("thinned") / "reproduction"
    shutil.copytree(COMMITTED, folder)
    tables = report_tables.read_tables(folder)
    cited = {record["run"] for record in report_tables.read_reruns(folder, tables.rows)} | {
        record["our_run"] for record in report_tables.read_original_code(folder, tables.rows)}
    fig1 = {job.run_name: job for group, job in plan if group == "fig1"}
    thinned = [row["run"] for row in tables.rows if row["group"] == "fig1" and row["status"] in verdicts.FINISHED
               and row["run"] not in cited][-THINNED:]
    rows = [{"group": row["group"], **report_merge._missing_record(fig1[row["run"]])} if row["run"] in thinned
            else row for row in tables.rows]
    profiles = {name: series for name, series in tables.profiles.items() if name not in thinned}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "group_figure_png", stub_png)
        report.write_report(folder, pending={"runs.csv": report_tables._csv_text(report_tables.RUN_COLUMNS, rows),
                                             "profiles.csv": report_tables.profiles_text(profiles)})
    return folder


@pytest.fixture
def copy(tmp_path, thinned) -> Path:
    """A copy of the thinned report folder, for one case to change."""
    folder = tmp_path / "reproduction"
    shutil.copytree(thinned, folder)
    return folder


def missing_jobs(plan, folder: Path) -> list:
    """The planned runs `folder`'s runs.csv does not hold finished."""
    recorded = {row["run"] for row in report_tables.read_rows(folder / "runs.csv") if row["status"] in verdicts.FINISHED}
    return [job for _, job in plan if job.run_name not in recorded]


def results_of(job, values=PROFILE, **changes) -> dict:
    """A completed results.json of the planned `job`, as experiment.py writes it; `changes` set
    top-level fields, `fit.KEY=...` style keys set fields of the fit."""
    fit = {**fit_of(values), "num_points": len(values)}
    results = {"config": job.config, "run_name": job.run_name, "identity_hash": job.run_name[-8:],
               "status": "completed", "layers": [{"index": i, "D": v} for i, v in enumerate(values)], "fit": fit,
               "test_layers": [{"index": i, "D": 2 * v} for i, v in enumerate(values)],
               "test_fit": fit_of([2 * v for v in values]), "train_accuracy": 1.0, "test_accuracy": 0.8,
               "final_train_loss": 0.01, "wall_seconds": 10.0, "device": "cpu",
               "versions": {"torch": "2.14.1"}, "machine": {"cpu": "Test CPU", "cpu_kernels": "AVX2"},
               "commit": "abc1234"}
    for key, value in changes.items():
        if key.startswith("fit."):
            results["fit"][key[4:]] = value
        else:
            results[key] = value
    return results


def write(logs: Path, results: dict, folder: str | None = None) -> Path:
    path = logs / (folder or results["run_name"]) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path


def snapshot(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def run_main(capsys, *argv) -> tuple[int, str, str]:
    return main_outcome(capsys, report.main, *argv)


def command(*argv, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "reproduction_report.py"), *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def rows_of(folder: Path) -> dict:
    return {(row["group"], row["run"]): row for row in report_tables.read_rows(folder / "runs.csv")}


# ---------------------------------------------------------- class 1: the tables are append-only evidence
def test_a_config_change_keeps_every_recorded_row_and_only_a_named_flag_retires_them(copy, tmp_path, plan,
                                                                                    monkeypatch, capsys):
    """Issue 26, why 1: a new identity key renames every planned run. Merging an empty logs folder used
    to leave 761 `missing` rows and a 1-line profiles.csv; now every finished row and profile stays and
    the merge says so; --retire-unplanned removes them and says how many."""
    changed = []
    for group, job in plan:
        config = {**job.config, "analysis": {**job.config["analysis"], "new_option": False}}
        changed.append((group, type(job)(**{**job.__dict__, "config": config,
                                            "run_name": job.run_name[:-8] + "0badc0de"})))
    monkeypatch.setattr(report_merge, "campaign_jobs", lambda groups=None: changed)
    before = rows_of(copy)
    finished = {key: row for key, row in before.items() if row["status"] in verdicts.FINISHED}
    profile_lines = set((copy / "profiles.csv").read_text().splitlines())
    (tmp_path / "logs").mkdir()
    code, out, err = run_main(capsys, copy, "--merge", tmp_path / "logs")
    assert code == 0, err
    assert f"warning: {len(finished)} finished rows are runs the campaign no longer plans" in err
    after = rows_of(copy)
    assert all(after[key] == row for key, row in finished.items())       # every value of every finished row
    assert sum(row["status"] == "missing" for row in after.values()) == len(changed)
    assert profile_lines <= set((copy / "profiles.csv").read_text().splitlines())
    code, out, err = run_main(capsys, copy, "--merge", tmp_path / "logs", "--retire-unplanned")
    assert code == 0, err
    assert f"retired: {len(finished)} finished rows the campaign no longer plans" in out
    assert all(row["status"] == "missing" for row in rows_of(copy).values())
    assert (copy / "profiles.csv").read_text() == "run,split,bn_mode,point,D\n"


def test_merging_nothing_into_the_committed_tables_changes_no_byte(copy, tmp_path, capsys, plan):
    (tmp_path / "logs").mkdir()
    before = snapshot(copy)
    code, out, err = run_main(capsys, copy, "--merge", tmp_path / "logs")
    assert code == 0 and err == "", err
    assert out.startswith("merged: 0 new runs, 0 already recorded")
    after = snapshot(copy)
    assert {name: after[name] for name in (*TABLES, "README.md")} == {name: before[name] for name in (*TABLES, "README.md")}


def edit_rows(change):
    """A runs.csv edit: change(list of rows as lists, header first) -> text written back by csv."""
    def edit(folder: Path):
        rows = list(csv.reader(io.StringIO((folder / "runs.csv").read_text(), newline="")))
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(change(rows))
        (folder / "runs.csv").write_text(buffer.getvalue())
    return edit


def drop_column(name):
    def change(rows):
        index = rows[0].index(name)
        return [row[:index] + row[index + 1:] for row in rows]
    return edit_rows(change)


def set_cell(position, name, value):
    def change(rows):
        rows[position][rows[0].index(name)] = value
        return rows
    return edit_rows(change)


def replace_text(name, old, new, count=1):
    def edit(folder: Path):
        text = (folder / name).read_text()
        assert old in text
        (folder / name).write_text(text.replace(old, new, count))
    return edit


def first_completed_position() -> int:
    rows = report_tables.read_rows(COMMITTED / "runs.csv")
    return next(position for position, row in enumerate(rows, start=1) if row["status"] == "completed")


BROKEN_TABLES = {   # an edit of the copy -> what the one error line says
    "header Status": (replace_text("runs.csv", ",status,", ",Status,"), 'header "group,run,data,model,variant,'),
    "header Run": (replace_text("runs.csv", "group,run,", "group,Run,"), "is not group,run,data"),
    "an unclosed quote": (replace_text("runs.csv", ",completed,", ',"completed,'), "runs.csv: "),
    "a duplicated row": (edit_rows(lambda rows: rows + [rows[1]]), "listed twice in group"),
    "an added column": (edit_rows(lambda rows: [rows[0] + ["extra"]] + [row + ["x"] for row in rows[1:]]),
                        'header "group,run'),
    "no pearson_r column": (drop_column("pearson_r"), "is not group,run,data"),
    "no seed column": (drop_column("seed"), "is not group,run,data"),
    "no points column": (drop_column("points"), "is not group,run,data"),
    "a row cut to 12 of 33 fields": (edit_rows(lambda rows: rows[:5] + [rows[5][:12]] + rows[6:]),
                                     "line 6: 12 fields, the header has 33"),
    "the last line cut short": (lambda folder: (folder / "runs.csv").write_text((folder / "runs.csv").read_text()[:-40]),
                                "ends inside a line"),
    "an unknown group": (set_cell(3, "group", "fig9"), 'group "fig9" is not a group of the report'),
    "status Completed": (set_cell(3, "status", "Completed"), 'status "Completed" is not one of completed'),
    "pearson_r -1e308": (set_cell(first_completed_position(), "pearson_r", "-1e308"), "pearson_r -1e+308 is outside [-1"),
    "accuracy 7.5": (set_cell(first_completed_position(), "test_accuracy", "7.5"), "test_accuracy 7.5 is outside [0, 1]"),
    "a loss of -1e308": (set_cell(first_completed_position(), "final_train_loss", "-1e308"), "final_train_loss -1e+308"),
    "2.8e304 h of run time": (set_cell(first_completed_position(), "wall_seconds", "1e308"), "wall_seconds 1e+308"),
    "1e30 points": (set_cell(first_completed_position(), "points", "1000000000000000000000000000000"), "points"),
    "points beyond the profile": (set_cell(first_completed_position(), "points", "19"), "a fit of 19 points from a profile"),
    "a completed row without pearson_r": (set_cell(first_completed_position(), "pearson_r", ""), "without its fit"),
    "a missing run with numbers": (edit_rows(lambda rows: [rows[0]] + [
        [*row[:11], "missing", *row[12:]] if index == 1 else row for index, row in enumerate(rows[1:], 1)]),
        "status missing, but it holds pearson_r"),
    "profiles.csv deleted": (lambda folder: (folder / "profiles.csv").unlink(), "profiles.csv: no such file, and runs.csv's row 1"),
    "profiles.csv header D_l": (replace_text("profiles.csv", "point,D\n", "point,D_l\n"), "is not run,split,bn_mode"),
    "a profile point twice": (lambda folder: (folder / "profiles.csv").write_text(
        (folder / "profiles.csv").read_text() + (folder / "profiles.csv").read_text().splitlines()[1] + "\n"),
        "is listed twice"),
    "a profile of an unknown mode": (replace_text("profiles.csv", ",train_batches,", ",train_Batches,"),
                                     "is none of the report's profiles"),
}


@pytest.mark.parametrize("case", BROKEN_TABLES)
def test_broken_tables_are_refused_by_the_rebuild_the_merge_and_the_recorded_runs(copy, tmp_path, plan,
                                                                                 capsys, case):
    """Issue 26, why 2 and 7: what the rebuild refuses, the merge refuses before it merges anything
    (it used to write such tables back, rows swallowed or blanked); one error line, nothing written."""
    edit, message = BROKEN_TABLES[case]
    logs = tmp_path / "logs"
    write(logs, results_of(missing_jobs(plan, copy)[0]))       # a good new run the merge would add
    edit(copy)
    before = snapshot(copy)
    for argv in ((copy,), (copy, "--merge", logs)):
        code, out, err = run_main(capsys, *argv)
        assert code == 2 and out == "", (argv, out, err)
        (line,) = err.splitlines()
        assert line.startswith("error: ") and message in line, line
        assert snapshot(copy) == before
    with pytest.raises(BadFile, match="runs.csv|profiles.csv"):
        report_tables.recorded_runs(copy)


def test_two_merges_at_once_lose_no_row(copy, tmp_path, plan):
    """Issue 26, why 3: both merges said 'merged: 1 new runs' and one row ended missing. The folder's
    lock serializes read-modify-write: both rows are recorded."""
    first, second = missing_jobs(plan, copy)[:2]
    write(tmp_path / "a", results_of(first))
    write(tmp_path / "b", results_of(second))
    script = REPO_ROOT / "reproduction_report.py"
    processes = [subprocess.Popen([sys.executable, str(script), str(copy), "--merge", str(tmp_path / logs)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
                 for logs in ("a", "b")]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and out.startswith("merged: 1 new runs"), err
    statuses = {row["run"]: row["status"] for row in report_tables.read_rows(copy / "runs.csv")}
    assert statuses[first.run_name] == statuses[second.run_name] == "completed"
    report_tables.read_tables(copy)                              # and the tables pass every check


def test_a_crash_between_the_two_tables_is_refused_then_repaired_by_the_next_merge(copy, tmp_path, plan,
                                                                                 monkeypatch):
    """Issue 26, why 4. profiles.csv is replaced before runs.csv, so a crash (or full disk) between them
    leaves profile points no row supports -- never a completed row without its profile: the rebuild
    refuses that state in one line and a merge again gives the tables a clean merge gives."""
    job = missing_jobs(plan, copy)[0]
    logs = tmp_path / "logs"
    write(logs, results_of(job))
    clean = tmp_path / "clean"
    shutil.copytree(copy, clean)
    report_merge.merge(clean, [logs])
    runs_before = (copy / "runs.csv").read_bytes()
    replace = os.replace

    def full_disk(source, target, *args, **kwargs):
        if str(target).endswith("runs.csv"):
            raise OSError(28, "No space left on device")
        return replace(source, target, *args, **kwargs)
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        report_merge.merge(copy, [logs])
    monkeypatch.setattr(os, "replace", replace)
    assert (copy / "runs.csv").read_bytes() == runs_before
    assert (copy / "profiles.csv").read_bytes() == (clean / "profiles.csv").read_bytes()
    with pytest.raises(BadFile, match="no row of runs.csv supports .* interrupted merge"):
        report.rebuild(copy)
    outcome = report_merge.merge(copy, [logs])
    assert outcome.added == 1
    for name in TABLES:
        assert (copy / name).read_bytes() == (clean / name).read_bytes()


def test_profile_points_without_a_row_are_refused_by_the_rebuild_and_dropped_by_a_merge(copy, tmp_path, capsys):
    """What a crash between the two renames leaves when the logs no longer hold the run."""
    before = snapshot(copy)
    (copy / "profiles.csv").write_text((copy / "profiles.csv").read_text()
                                       + "cfm-nobody-s1-00000000,train,train_batches,0,1.0\n")
    code, out, err = run_main(capsys, copy)
    assert code == 2 and "no row of runs.csv supports (e.g. cfm-nobody-s1-00000000): left by an interrupted merge" in err
    (tmp_path / "logs").mkdir()
    code, out, err = run_main(capsys, copy, "--merge", tmp_path / "logs")
    assert code == 0 and "the profile points of 1 runs without a row dropped" in out, err
    assert {name: snapshot(copy)[name] for name in TABLES} == {name: before[name] for name in TABLES}


def test_a_failed_write_of_either_temporary_changes_neither_table(copy, tmp_path, plan, monkeypatch):
    write(tmp_path / "logs", results_of(missing_jobs(plan, copy)[0]))
    before = snapshot(copy)
    fsync, calls = os.fsync, []

    def second_fails(descriptor):
        calls.append(descriptor)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return fsync(descriptor)
    monkeypatch.setattr(os, "fsync", second_fails)
    with pytest.raises(OSError, match="No space left"):
        report_merge.merge(copy, [tmp_path / "logs"])
    assert snapshot(copy) == before and not [p for p in copy.iterdir() if ".tmp-" in p.name]


def test_a_completed_row_left_without_its_profile_gets_it_back_from_the_logs(copy, tmp_path, plan, capsys):
    """What the old merge left after a crash (runs.csv written, profiles.csv not): the rebuild refuses
    it, a merge of the logs holding the run restores the profile, and the tables are the committed ones
    again (as before the edit), byte for byte."""
    rows = report_tables.read_rows(COMMITTED / "runs.csv")
    row = next(row for row in rows if row["status"] == "completed" and row["group"] == "fig1")
    job = next(job for _, job in plan if job.run_name == row["run"])
    profiles = report_tables.read_profiles(COMMITTED / "profiles.csv")
    train = [d for _, d in report_tables.profile_of(profiles, row["run"])]
    test = [d for _, d in report_tables.profile_of(profiles, row["run"], "test")]
    results = results_of(job, train, train_accuracy=row["train_accuracy"], test_accuracy=row["test_accuracy"],
                         final_train_loss=row["final_train_loss"], wall_seconds=row["wall_seconds"],
                         test_layers=[{"index": i, "D": d} for i, d in enumerate(test)],
                         **{"fit.pearson_r": row["pearson_r"], "fit.rho": row["rho"], "fit.num_points": row["points"]})
    write(tmp_path / "logs", results)
    before = snapshot(copy)
    text = (copy / "profiles.csv").read_text()
    kept = [line for line in text.splitlines(keepends=True)
            if not (line.startswith(row["run"] + ",") and ",train_batches," in line)]
    (copy / "profiles.csv").write_text("".join(kept))
    with pytest.raises(BadFile, match="completed, but profiles.csv holds no profile of it"):
        report.rebuild(copy)
    code, out, err = run_main(capsys, copy, "--merge", tmp_path / "logs")
    assert code == 0, err
    assert "1 already recorded (same numbers)" in out and "1 profiles restored" in out
    assert {name: snapshot(copy)[name] for name in TABLES} == {name: before[name] for name in TABLES}


def test_a_record_is_merged_only_under_the_name_its_own_config_gives(copy, tmp_path, plan, capsys):
    """Issue 26, why 5: a results.json claiming a planned run's name with another run's config (another
    lr and seed), or a config with a key the planned run lacks (another identity hash), is skipped with a
    warning; the planned run stays missing, so --skip-recorded still runs it."""
    missing = missing_jobs(plan, copy)
    target = missing[0]
    other = next(job for _, job in plan if job.config["lr"] != target.config["lr"]
                 and job.config["seed"] != target.config["seed"])
    logs = tmp_path / "logs"
    write(logs, {**results_of(other), "run_name": target.run_name}, "lying")
    added_key = {**missing[1].config, "analysis": {**missing[1].config["analysis"], "new_option": False}}
    write(logs, {**results_of(missing[1]), "config": added_key}, "added-key")
    write(logs, {**results_of(missing[2]), "identity_hash": "00000000"}, "other-hash")
    code, out, err = run_main(capsys, copy, "--merge", logs)
    assert code == 0 and out.startswith("merged: 0 new runs"), err
    lines = err.splitlines()
    assert len(lines) == 3
    assert f"claims to be planned run {target.run_name}, but its config has " in lines[0] + lines[1] + lines[2]
    assert "does not give the hash" in err and 'its identity_hash is "00000000"' in err
    statuses = {row["run"]: row["status"] for row in report_tables.read_rows(copy / "runs.csv")}
    assert {statuses[job.run_name] for job in missing[:3]} == {"missing"}
    assert not {job.run_name for job in missing[:3]} & report_tables.recorded_runs(copy)


OUT_OF_RANGE = {   # a change of a good record -> what its warning says
    "pearson_r -1e308": ({"fit.pearson_r": -1e308}, "pearson_r -1e+308 is outside [-1"),
    "pearson_r 1.5": ({"fit.pearson_r": 1.5}, "pearson_r 1.5 is outside"),
    "a loss of -1e308": ({"final_train_loss": -1e308}, "final_train_loss -1e+308 is outside [0, inf]"),
    "a completed run's loss nan": ({"final_train_loss": "nan"}, "a completed run has a finite final training loss"),
    "accuracy 7.5": ({"test_accuracy": 7.5}, "test_accuracy 7.5 is outside [0, 1]"),
    "10**30 points from a 6-point profile": ({"fit.num_points": 10 ** 30}, "points 1000000000000000000000000000000"),
    "9 points from a 6-point profile": ({"fit.num_points": 9}, "a fit of 9 points from a profile of 6"),
    "2.8e304 h": ({"wall_seconds": 1e308}, "wall_seconds 1e+308 is outside"),
    "a negative D": ({"layers": [{"index": 0, "D": -5.0}, {"index": 1, "D": 1.0}]}, "D -5.0"),
    "a point index 1e9": ({"layers": [{"index": 10 ** 9, "D": 1.0}]}, "profile point 1000000000"),
    "rho -3": ({"fit.rho": -3.0}, "rho -3.0 is outside"),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE)
def test_a_record_with_numbers_out_of_range_is_not_merged(copy, tmp_path, plan, capsys, case):
    """Issue 26, why 6: pearson_r -1e308 counted as the law, a loss of -1e308 picked the lr, ... now
    each is one warning and the run stays missing."""
    changes, message = OUT_OF_RANGE[case]
    job = missing_jobs(plan, copy)[0]
    path = write(tmp_path / "logs", results_of(job, **changes))
    code, out, err = run_main(capsys, copy, "--merge", tmp_path / "logs")
    assert code == 0 and out.startswith("merged: 0 new runs"), err
    (line,) = err.splitlines()
    assert line.startswith(f"warning: skipping {path}: ") and message in line, line
    assert rows_of(copy)[next(g for g, j in plan if j is job), job.run_name]["status"] == "missing"


def test_differing_copies_of_a_new_run_are_reported_and_neither_recorded(copy, tmp_path, plan, capsys):
    first, second = missing_jobs(plan, copy)[:2]
    one, two = tmp_path / "one", tmp_path / "two"
    write(one, results_of(first))
    write(two, results_of(first, final_train_loss=0.02))
    write(one, results_of(second))
    write(two, results_of(second))                       # the same numbers twice: recorded once
    code, out, err = run_main(capsys, copy, "--merge", one, two)
    assert code == 0 and out.startswith("merged: 1 new runs"), err
    (line,) = err.splitlines()
    assert line.startswith(f"warning: {first.run_name}: 2 copies with different numbers (") and "none recorded" in line
    statuses = {row["run"]: row["status"] for row in report_tables.read_rows(copy / "runs.csv")}
    assert (statuses[first.run_name], statuses[second.run_name]) == ("missing", "completed")


def test_a_merge_takes_seconds_once_the_plan_is_composed(copy, tmp_path, plan, monkeypatch):
    """The merge composed the 761 planned jobs each time (some 2.5 min once, 13 s with JobComposer);
    the plan is read back from its cache, keyed by the digest of what it depends on; a damaged cache
    is composed again, never trusted."""
    cache = campaign.PLAN_CACHE / f"campaign-{campaign.plan_digest()}.json"
    assert campaign._cached_plan(cache) is not None
    cached = campaign.campaign_jobs()
    assert [(group, job.run_name, job.config) for group, job in cached] == \
        [(group, job.run_name, job.config) for group, job in plan]
    damaged = tmp_path / "campaign.json"
    damaged.write_text('{"plan": [["fig1", {"run_name": "x"}]]}')
    assert campaign._cached_plan(damaged) is None
    os.mkfifo(tmp_path / "fifo.json")
    assert finishes(lambda: campaign._cached_plan(tmp_path / "fifo.json")) is None


def test_a_typo_in_the_report_folder_is_refused_and_creates_nothing(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    typo = tmp_path / "reproductoin"
    code, out, err = run_main(capsys, typo, "--merge", tmp_path / "logs")
    assert code == 2 and out == ""
    assert err == (f"error: {typo / 'runs.csv'}: no such file: not a report folder (a typo?); --new-report "
                   "starts a new report there\n")
    assert not typo.exists()
    code, out, err = run_main(capsys, typo)
    assert code == 2 and not typo.exists()


def test_a_queue_log_whose_exit_precedes_its_start_is_skipped(tmp_path, capsys):
    """It was stored as 29,935,320 minutes of wall time."""
    log = tmp_path / "run.log"
    log.write_text("[2026-11-27 04:00:00] start: [1/1] python experiment.py\n"
                   "[1970-01-01 00:00:01] exit 0: [1/1] fig1 after 1s; 1/1 done in 1s\n")
    context = {}
    queue_logs.add_queues(context, [log])
    assert context["queues"] == []
    assert capsys.readouterr().err == (f"warning: skipping queue log {log}: line 2: the exit of \"[1/1]\" at "
                                       "1970-01-01 00:00:01 precedes its start\n")
    log.write_text("[2026-11-27 04:00:00] exit 0: [1/1] fig1 after 1s\n")
    queue_logs.add_queues(context, [log])
    assert "has no start line before it" in capsys.readouterr().err


# --------------------------------------------------------------- class 2: one checked reader of the tables
def test_the_checked_reader_gives_the_recorded_runs_of_the_committed_tables():
    tables = report_tables.read_tables(COMMITTED)
    finished = {row["run"] for row in tables.rows if row["status"] in verdicts.FINISHED}
    with open(COMMITTED / "runs.csv", newline="") as handle:   # the same table read plainly
        plain = {row["run"] for row in csv.DictReader(handle) if row["status"] in ("completed", "diverged")}
    assert report_tables.recorded_runs(COMMITTED) == finished == plain and len(finished) > 700


@pytest.mark.parametrize("kind", ["fifo", "dev-zero link", "link to a good table", "folder", "too big"])
def test_a_table_that_is_no_regular_file_is_refused_in_one_line_without_hanging(copy, tmp_path, kind,
                                                                               monkeypatch):
    """Issue 26, why 8 (--skip-recorded hung on a FIFO and grew without bound on /dev/zero): the one
    reader opens no link, pipe or device and reads at most MAX_TABLE_BYTES."""
    table = copy / "runs.csv"
    good = table.read_bytes()
    table.unlink()
    expected = {"fifo": "a named pipe, not a regular file: not read",
                "dev-zero link": "a symbolic link, not a regular file: not read",
                "link to a good table": "a symbolic link, not a regular file: not read",
                "folder": "a folder, not a regular file: not read",
                "too big": "larger than 1000 bytes, the most read of such a file: not read"}[kind]
    if kind == "fifo":
        os.mkfifo(table)
    elif kind == "dev-zero link":
        table.symlink_to("/dev/zero")
    elif kind == "link to a good table":
        (tmp_path / "elsewhere.csv").write_bytes(good)
        table.symlink_to(tmp_path / "elsewhere.csv")
    elif kind == "folder":
        table.mkdir()
    else:
        table.write_bytes(good)
        monkeypatch.setattr(report_tables, "MAX_TABLE_BYTES", 1000)
        monkeypatch.setattr(report_tables.read_table_text, "__defaults__", (1000,))
    error = finishes(lambda: report_tables.recorded_runs(copy))
    assert isinstance(error, BadFile) and str(error) == f"{table}: {expected}"
    if kind != "too big":                               # the command too: one line, exit 2, no hang
        completed = command(copy, timeout=60)
        assert completed.returncode == 2 and completed.stderr == f"error: {table}: {expected}\n"
        assert "--out" not in completed.stderr


def test_a_linked_output_is_refused_in_the_reports_own_words(copy, tmp_path, capsys):
    """The refusal named an --out option the report does not have."""
    (tmp_path / "victim.md").write_text("keep")
    (copy / "README.md").unlink()
    (copy / "README.md").symlink_to(tmp_path / "victim.md")
    code, out, err = run_main(capsys, copy)
    assert code == 2 and "README.md is a symbolic link (to " in err and "--out" not in err
    assert (tmp_path / "victim.md").read_text() == "keep"


# ------------------------------------------------------------- class 3: lock files are never followed
@pytest.mark.parametrize("kind", ["fifo", "link to a missing file", "dev-zero link", "folder"])
def test_a_lock_file_that_is_no_regular_file_is_refused_at_once(tmp_path, kind):
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    target = tmp_path / "elsewhere" / "created"
    if kind == "fifo":
        os.mkfifo(lock)
    elif kind == "link to a missing file":
        target.parent.mkdir()
        lock.symlink_to(target)
    elif kind == "dev-zero link":
        lock.symlink_to("/dev/zero")
    else:
        lock.mkdir()

    def take():
        with atomic_io.file_lock(lock, wait=False):
            return "locked"
    error = finishes(take)
    assert isinstance(error, atomic_io.NotRegularFile), error
    assert str(error).startswith(f"{lock}: a ") and "a lock file is never followed or opened" in str(error)
    assert not target.exists()
    assert finishes(lambda: atomic_io.lock_held_elsewhere(lock)) is False


def test_the_data_cache_lock_is_never_followed_or_blocked_on(tmp_path, compose):
    import data
    from config_utils import ConfigError

    cfg = compose("data=cm", "data.sample_size_per_class=4")
    name = data.cache_file_name(data.preprocessing_spec(cfg.data, 7))
    lock = (data.cache_dir_of(tmp_path) / name).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    os.mkfifo(lock)
    error = finishes(lambda: data.load_or_build_cache(cfg.data, tmp_path, 7, download=False))
    assert isinstance(error, ConfigError) and "a named pipe, not a regular file: a lock file is never" in str(error)
    lock.unlink()
    lock.symlink_to(tmp_path / "planted")
    error = finishes(lambda: data.load_or_build_cache(cfg.data, tmp_path, 7, download=False))
    assert isinstance(error, ConfigError) and "a symbolic link" in str(error)
    assert not (tmp_path / "planted").exists()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero link", "link to a file"])
def test_reanalyze_refuses_a_checkpoint_that_is_no_regular_file_without_hanging(tmp_path, kind):
    import reanalyze

    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(checkpoint)
    elif kind == "dev-zero link":
        checkpoint.symlink_to("/dev/zero")
    else:
        (tmp_path / "real.pt").write_bytes(b"not a checkpoint")
        checkpoint.symlink_to(tmp_path / "real.pt")
    error = finishes(lambda: reanalyze.load_checkpoint(checkpoint))
    assert isinstance(error, reanalyze.CheckpointError), error
    assert str(error).startswith(f"{checkpoint}: refused: a ") and "never through a link or from a pipe" in str(error)
