"""Crafted and malformed inputs of summarize_runs.py and reproduction_report.py: nothing is written
outside the output folder or through a symbolic link, every bad file read gets one warning line (a bad
argument or a bad report table one error line and exit status 2), never a crash or a hang, a failing
run leaves the previous outputs untouched, and values from files are escaped in the markdown and CSV."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import campaign
import queue_logs
import report_figures
import report_merge
import report_tables
import run_records
import safe_output
import reproduction_report as report
import summarize_runs
from tests.child_processes import main_outcome
from tests.test_summarize import write_run

REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ helpers
def snapshot(root: Path) -> dict:
    """Every entry under `root` (links not followed): relative path -> link target, bytes or 'folder'."""
    entries, stack = {}, [root]
    while stack:
        folder = stack.pop()
        for entry in os.scandir(folder):
            path = Path(entry.path)
            key = str(path.relative_to(root))
            if entry.is_symlink():
                entries[key] = ("link", os.readlink(path))
            elif entry.is_dir():
                entries[key] = "folder"
                stack.append(path)
            elif entry.is_file():
                entries[key] = path.read_bytes()
            else:
                entries[key] = "special"
    return entries


def remove_tree(root: Path) -> None:
    """rm -r without recursion (shutil.rmtree recurses once per level: a 1,100-deep tree defeats it)."""
    order, stack = [], [str(root)]
    while stack:
        folder = stack.pop()
        order.append(folder)
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                os.unlink(entry.path)
    for folder in reversed(order):
        os.rmdir(folder)


def run_main(main, capsys, *argv) -> tuple[int, str, str]:
    return main_outcome(capsys, main, *argv)


def edit(path: Path, change) -> Path:
    results = json.loads(path.read_text())
    change(results)
    path.write_text(json.dumps(results))
    return path


def two_depths(logs: Path, **fields) -> None:
    """Two runs of one family at depths 2 and 6: summarize_runs draws their depth_<data>.png."""
    write_run(logs, "L2", depth=2, **fields)
    write_run(logs, "L6", depth=6, **fields)


# ------------------------------------------------------------------------ A. nothing outside --out
UNSAFE_DATA_NAMES = {"parent": "/../../escaped", "dotdot": "../../x", "absolute": "ABSOLUTE", "slash": "a/b",
                     "nul": "a\0b", "newline": "a\nb", "leading-dot": ".hidden", "long": "x" * 120,
                     "leading-dash": "-rf", "non-ascii": "d\u00e9j\u00e0", "space": "c f m"}


@pytest.mark.parametrize("case", UNSAFE_DATA_NAMES)
def test_a_data_name_never_places_a_figure_outside_the_output_folder(tmp_path, capsys, case):
    data = str(tmp_path / "abs" / "x") if case == "absolute" else UNSAFE_DATA_NAMES[case]
    logs, out = tmp_path / "logs", tmp_path / "a" / "out"
    two_depths(logs, data=data)
    before = snapshot(tmp_path)
    code, stdout, stderr = run_main(summarize_runs.main, capsys, logs, "--out", out)
    assert code == 0 and "2 runs in the table (0 diverged)" in stdout
    (line,) = stderr.splitlines()       # one line, the data name escaped in it
    assert line.startswith(f"warning: not drawing the depth figure of data {json.dumps(data)[:80]}: ")
    assert line.endswith("is not a safe file name (allowed: a name of letters, digits and ._=+,- starting with "
                         "a letter or digit, at most 100 characters)")
    after = snapshot(tmp_path)
    assert {key: after[key] for key in before} == before      # nothing that was there changed
    assert set(after) - set(before) == {"a", "a/out", "a/out/runs.csv", "a/out/runs.md"}   # only the tables are new
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "abs").exists()


@pytest.mark.parametrize("name", ["runs.md", "runs.csv", "depth_cfm.png", "fig1_grid.png"])
@pytest.mark.parametrize("target", ["existing", "dangling"])
def test_a_symbolic_link_at_an_output_name_is_refused_and_nothing_is_written(tmp_path, capsys, name, target):
    logs, out = tmp_path / "logs", tmp_path / "out"
    two_depths(logs)                              # cfm, GFNN, width 100: tables, fig1 grid, depth_cfm
    out.mkdir()
    if name != "runs.csv":
        (out / "runs.csv").write_text("previous table\n")
    victim = tmp_path / ("victim" if target == "existing" else "nowhere")
    if target == "existing":
        victim.write_text("keep")
    (out / name).symlink_to(victim)
    before = snapshot(tmp_path)
    code, stdout, stderr = run_main(summarize_runs.main, capsys, logs, "--out", out)
    assert code == 2 and stdout == ""
    assert stderr == (f"error: {out.resolve() / name} is a symbolic link (to {victim}): refusing to write "
                      "through or over it; remove it or choose another --out\n")
    assert snapshot(tmp_path) == before           # the link, its target and the old table as they were
    assert (victim.read_text() == "keep") if target == "existing" else not victim.exists()


def test_a_folder_at_an_output_name_or_a_file_as_the_output_folder_is_refused(tmp_path, capsys):
    logs = tmp_path / "logs"
    write_run(logs, "one")
    (tmp_path / "out" / "runs.md").mkdir(parents=True)
    code, _, stderr = run_main(summarize_runs.main, capsys, logs, "--out", tmp_path / "out")
    assert code == 2 and stderr == f"error: {(tmp_path / 'out').resolve() / 'runs.md'} is a folder: refusing to write over it\n"
    assert os.listdir(tmp_path / "out") == ["runs.md"]
    (tmp_path / "file").write_text("mine")
    code, _, stderr = run_main(summarize_runs.main, capsys, logs, "--out", tmp_path / "file")
    assert code == 2 and stderr.startswith(f"error: {tmp_path / 'file'}: cannot be the output folder (")
    assert stderr.count("\n") == 1 and (tmp_path / "file").read_text() == "mine"


def test_safe_names():
    for name in ("runs.csv", "depth_cm5k_best_lr.png", "depth_fashion_mnist.png", "a=b-c.d"):
        assert safe_output.safe_name(name) == name
    for name in ("", ".", "..", "../x", "/x", "a/b", "a\\b", "a\0b", "a\nb", ".x", "-x", "x" * 101, "\u00e9", "a b"):
        with pytest.raises(safe_output.UnsafeOutput, match="is not a safe file name"):
            safe_output.safe_name(name)


# ------------------------------------------------------------------- B. one line per bad file read
def test_special_files_named_results_json_are_never_opened_and_never_hang(tmp_path):
    logs = tmp_path / "logs"
    write_run(logs, "good")
    special = {}
    for name in ("fifo", "zero", "loop", "dangling", "folder"):
        (logs / name).mkdir()
        special[name] = logs / name / "results.json"
    os.mkfifo(special["fifo"])
    special["zero"].symlink_to("/dev/zero")
    special["loop"].symlink_to(special["loop"])
    special["dangling"].symlink_to(tmp_path / "missing.json")
    special["folder"].mkdir()
    direct_fifo = tmp_path / "direct.json"
    os.mkfifo(direct_fifo)
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "summarize_runs.py"), str(logs), str(direct_fifo),
                                "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and "1 runs in the table (0 diverged)" in completed.stdout
    lines = completed.stderr.splitlines()
    assert len(lines) == 6 and all(line.startswith("warning: skipping ") for line in lines), completed.stderr
    expected = {f"{special['fifo']}: a named pipe, not a regular file: not read",
                f"{direct_fifo}: a named pipe, not a regular file: not read",
                f"{special['zero']}: a character device, not a regular file: not read",
                f"{special['folder']}: a folder, not a regular file: not read",
                f"{special['dangling']}: No such file or directory"}
    assert expected <= {line.removeprefix("warning: skipping ") for line in lines}
    assert any(line.startswith(f"warning: skipping {special['loop']}: Symlink loop") for line in lines)


BAD_FILES = {
    "oversized": (b'{"pad": "' + b" " * run_records.MAX_RESULTS_BYTES + b'"}',
                  "larger than 8 MiB, the most read of such a file: not read"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
    "invalid UTF-8": (b'{"run_name": "\xff"}', "not UTF-8 text (byte 0xff at offset 14)"),
    "lone surrogate": (b'{"run_name": "\\ud800"}', 'holds a string that is not valid Unicode ("\\ud800")'),
    "huge integer": (b'{"config": {"seed": ' + b"9" * 5000 + b"}}", "not JSON (Exceeds the limit (4300 digits)"),
    "truncated": (b'{"config": ', "not JSON (Expecting value: line 1 column 12 (char 11))"),
    "empty": (b"", "not JSON (Expecting value: line 1 column 1 (char 0))"),
    "a list": (b"[1, 2]", "it holds a list, expected an object"),
}


def nest(levels: int):
    node = 0
    for _ in range(levels):
        node = [node]
    return node


def _set(dotted: str, value):
    def change(results):
        *path, last = dotted.split(".")
        node = results
        for key in path:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return change


DELETE = object()
BAD_FIELDS = {
    "no lr": ("config.lr", DELETE, "config.lr is missing, a run records it"),
    "null lr": ("config.lr", None, "config.lr is null, a run records it"),
    "no status": ("status", DELETE, "status is missing, a run records it"),
    "no config": ("config", DELETE, "config is missing, a run records it"),
    "a null r": ("fit.pearson_r", None, "fit.pearson_r is null, a run records it"),
    "no rho": ("fit.rho", DELETE, "fit.rho is missing, a run records it"),
    "string for a mapping": ("config.data", "cfm", 'config.data is str "cfm", expected a dict'),
    "string for the config": ("config", "abc", 'config is str "abc", expected a dict'),
    "list for a number": ("final_train_loss", [1], "final_train_loss is list [1], expected a number"),
    "boolean lr": ("config.lr", True, "config.lr is bool true, expected a number"),
    "boolean epochs": ("config.epochs", False, "config.epochs is bool false, expected an integer"),
    "float seed": ("config.seed", 1.5, "config.seed is float 1.5, expected an integer"),
    "number for a name": ("config.training.name", 5, "config.training.name is int 5, expected a str"),
    "list for test_fit": ("test_fit", [1], "test_fit is list [1], expected a dict"),
    "number for the cpu": ("machine", {"cpu": 5}, "machine.cpu is int 5, expected a str"),
    "string for a layer's value": ("layers", [{"index": 0, "D": 1.0, "value": "x"}],
                                   'layers[0].value is str "x", expected a number'),
    "a layer without index": ("layers", [{"D": 1.0}], "layers[0] has no index"),
    "too many layers": ("layers", [{"index": i, "D": 1.0} for i in range(10_001)],
                        "layers has 10001 points, at most 10000"),
    "too many segments": ("fit.segments", [{"slope": 0.0, "intercept": 0.0}] * 101,
                          "fit.segments has 101 entries, at most 100"),
    "a string for a segment's line": ("fit.segments", [{"first_index": 0, "last_index": 3, "slope": "x"}],
                                      'fit.segments[0].slope is str "x", expected a number'),
    "a string for the test fit's r": ("test_fit", {"slope": 0, "intercept": 0, "rho": 1, "pearson_r": "x"},
                                      'test_fit.pearson_r is str "x", expected a number'),
    "nested too deep": ("history", nest(70), "nested deeper than 64 levels"),
}


@pytest.mark.parametrize("case", [*BAD_FILES, *BAD_FIELDS])
def test_each_malformed_results_json_is_one_warning_line_and_the_others_are_tabled(tmp_path, capsys, case):
    logs = tmp_path / "logs"
    write_run(logs, "good")
    bad = write_run(logs, "bad")
    if case in BAD_FILES:
        content, expected = BAD_FILES[case]
        bad.write_bytes(content)
    else:
        dotted, value, expected = BAD_FIELDS[case]
        edit(bad, _set(dotted, value))
    runs = run_records.load_runs([logs])
    assert [run.name for run in runs] == ["good"]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: skipping {bad}: {expected}"), line


def test_a_crafted_folder_name_cannot_forge_or_split_a_warning_line(tmp_path, capsys):
    logs = tmp_path / "logs"
    folder = logs / "evil\nwarning: all runs are fine\x1b[2J"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{")
    assert run_records.load_runs([logs]) == []
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: skipping {logs}/evil\\nwarning: all runs are fine\\x1b[2J/results.json: not JSON")


def test_a_deep_folder_tree_and_a_folder_loop_are_walked_without_recursion(tmp_path, capsys):
    logs = tmp_path / "logs"
    write_run(logs, "top")
    (logs / "loop").symlink_to(logs)              # a link back up: not followed
    deep = str(logs)
    for _ in range(1100):                         # pathlib's rglob recurses once per level: RecursionError
        deep += "/d"
        os.mkdir(deep)
    try:
        write_run(Path(deep), "bottom")
        assert sorted(run.name for run in run_records.load_runs([logs])) == ["bottom", "top"]
        assert capsys.readouterr().err == ""
    finally:
        remove_tree(logs / "d")


def test_a_name_with_mathtext_and_a_fit_segment_without_its_line_are_drawn(tmp_path, capsys):
    logs, out = tmp_path / "logs", tmp_path / "out"
    two_depths(logs)
    for path in logs.glob("*/results.json"):      # bad math: matplotlib raised while drawing
        edit(path, _set("config.model.name", "$\\frac{$"))
    edit(logs / "L6" / "results.json", _set("fit.segments", [{"first_index": 0, "last_index": 3}]))  # KeyError
    code, stdout, stderr = run_main(summarize_runs.main, capsys, logs, "--out", out)
    assert code == 0 and stderr == "", stderr
    assert sorted(os.listdir(out)) == ["depth_cfm.png", "runs.csv", "runs.md"]
    assert (out / "depth_cfm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_command_line_argument_is_one_error_line(tmp_path, capsys):
    code, _, stderr = run_main(summarize_runs.main, capsys, tmp_path, "--fig1-width", "abc")
    assert code == 2 and stderr == "error: argument --fig1-width: invalid int value: 'abc' (see --help)\n"
    code, _, stderr = run_main(report.main, capsys, tmp_path, "--merge", tmp_path / "missing")
    assert code == 2 and stderr == f"error: --merge {tmp_path / 'missing'}: no such file or folder (see --help)\n"
    code, _, stderr = run_main(report.main, capsys, tmp_path, "--queue-log", tmp_path / "missing.log")
    assert code == 2 and stderr == f"error: --queue-log {tmp_path / 'missing.log'}: no such file or folder (see --help)\n"
    code, _, stderr = run_main(report.main, capsys, tmp_path, "--bogus")
    assert code == 2 and stderr == "error: unrecognized arguments: --bogus (see --help)\n"
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- C. escaped outputs
def test_values_from_files_are_escaped_in_runs_md_and_runs_csv(tmp_path, capsys):
    logs, out = tmp_path / "logs", tmp_path / "out"
    model = '=HYPERLINK("http://x")|<img src=x>`x`[a](javascript:b)\n| forged | row |'
    path = write_run(logs, "crafted", lr=-1e-3, loss=-0.5)
    edit(path, _set("config.model.name", model))
    edit(path, _set("config.training.name", "@SUM(A1)"))
    code, _, stderr = run_main(summarize_runs.main, capsys, logs, "--out", out)
    assert code == 0 and stderr == ""
    with open(out / "runs.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert row["model"] == "'" + model and row["variant"] == "'@SUM(A1)"
    assert (row["lr"], row["final_train_loss"], row["pearson_r"]) == ("-0.001", "-0.5", "-1.0")  # numbers stay
    lines = (out / "runs.md").read_text().splitlines()
    header, body = lines[0], [line for line in lines if line.startswith("| crafted | cfm ")]
    (line,) = body                                # the newline and pipes in the name made no row
    assert len(re.split(r"(?<!\\)\|", line)) == len(re.split(r"(?<!\\)\|", header))
    assert ('| =HYPERLINK("http://x")\\|&lt;img src=x&gt;\\`x\\`\\[a\\](javascript:b) \\| forged \\| row \\| '
            '| @SUM(A1) |') in line


def test_the_escaping_functions():
    cell = safe_output.csv_cell
    assert [cell(v) for v in ("=1+1", "+1x", "-1+2", "@x", "\tx", "\rx", "'x", "plain", "")] == \
        ["'=1+1", "'+1x", "'-1+2", "'@x", "'\tx", "'\rx", "''x", "plain", ""]
    assert [cell(v) for v in (-0.99, "-0.99", "+1e-3", "-inf", -7, None, float("nan"))] == \
        ["-0.99", "-0.99", "+1e-3", "-inf", "-7", "", "nan"]
    escape = safe_output.markdown_escape
    assert escape("a|b\n<script>&amp;`x`[l](u)\\") == "a\\|b &lt;script&gt;&amp;amp;\\`x\\`\\[l\\](u)\\\\"
    assert escape("a\0b\x1bc") == "a\ufffdb\ufffdc" and escape(None) == ""
    code = safe_output.markdown_code
    assert code("sh run.sh fig1") == "`sh run.sh fig1`"
    assert code("a`b") == "``a`b``" and code("`x") == "`` `x ``" and code("x|y", table=True) == "`x\\|y`"
    assert code("a\nb") == "`a b`"
    rows = [{"group": "fig1", "run": "'quoted", "commit": "=1+1", "machine": "\tx", "lr": -0.5, "status": "missing"}]
    (back,) = report_tables.read_rows(Path("runs.csv"), report_tables._csv_text(report_tables.RUN_COLUMNS, rows))
    assert {key: back[key] for key in rows[0]} == rows[0]     # every escape is read back exactly


# ---------------------------------------------------------------------------- the report's inputs
def job(name: str, depth: int) -> SimpleNamespace:
    return SimpleNamespace(run_name=name, config={
        "data": {"name": "cfm"}, "model": {"name": "GFNN", "depth": depth}, "optimization": {"name": "sgd"},
        "lr": 0.3, "epochs": 600, "seed": 666, "hidden_size": 100})


@pytest.fixture
def plan(monkeypatch):
    """A two-run campaign (composing the real one takes minutes)."""
    jobs = [("fig1", job("fig1-a", 2)), ("fig1", job("fig1-b", 6))]
    monkeypatch.setattr(report_merge, "campaign_jobs", lambda groups=None: jobs)
    return jobs


def report_folder(tmp_path: Path) -> Path:
    """A report whose two planned runs are missing (no profile, so no figure to draw)."""
    folder = tmp_path / "report"
    folder.mkdir()
    rows = [{"group": "fig1", **report_merge._missing_record(item)} for _, item in
            [("fig1", job("fig1-a", 2)), ("fig1", job("fig1-b", 6))]]
    (folder / "runs.csv").write_text(report_tables._csv_text(report_tables.RUN_COLUMNS, rows))
    (folder / "profiles.csv").write_text(report_tables._csv_text(report_tables.PROFILE_COLUMNS, []))
    (folder / "context.json").write_text("{}\n")
    (folder / "README.md").write_text("previous report\n")
    return folder


def test_merge_skips_bad_runs_and_reanalyses_in_one_line_each_and_escapes_the_rest(tmp_path, capsys, plan):
    folder, logs = report_folder(tmp_path), tmp_path / "logs"
    good = write_run(logs, "fig1-a", depth=2, optimizer="sgd", lr=0.3)
    edit(good, _set("machine", {"cpu": "<script>|x\nforged", "cpu_kernels": "`AVX2`"}))
    edit(good, _set("commit", "=1+1"))
    bad = edit(write_run(logs, "fig1-b", depth=6, optimizer="sgd", lr=0.3), _set("config.lr", "fast"))
    reanalysis = good.parent / "reanalysis" / "analysis.bn_mode=eval" / "results.json"
    reanalysis.parent.mkdir(parents=True)
    reanalysis.write_bytes(b"[" * 10_000)
    code, stdout, stderr = run_main(report.main, capsys, folder, "--merge", logs)
    assert code == 0, stderr
    assert stderr.splitlines() == [f'warning: skipping {bad}: config.lr is str "fast", expected a number',
                                   f"warning: skipping reanalysis {reanalysis}: nested deeper than 64 levels"]
    assert stdout.startswith("merged: 1 new runs, 0 already recorded")
    rows = {row["run"]: row for row in report_tables.read_rows(folder / "runs.csv")}
    assert rows["fig1-a"]["status"] == "completed" and rows["fig1-b"]["status"] == "missing"
    assert rows["fig1-a"]["commit"] == "=1+1" and ",'=1+1,\n" in (folder / "runs.csv").read_text()
    readme = (folder / "README.md").read_text()
    assert "| &lt;script&gt;\\|x forged | \\`AVX2\\` | " in readme and "<script>" not in readme
    assert (folder / "fig1.png").is_file()


FAULTS = {
    "a figure fails to render": "report: [Errno 28] No space left on device",
    "README.md is a symbolic link": "README.md is a symbolic link (to ",
    "context.json has a string for a count": 'context.json: queues[0].jobs is str "many", expected an integer',
    "context.json is not an object": "context.json: it holds a list, expected an object",
    "context.json has a bad time": 'context.json: queues[0].started "yesterday" is not a time YYYY-MM-DD HH:MM:SS',
    "epoch_costs.csv has a bad number": 'epoch_costs.csv: row 1: seconds_per_epoch is "abc", expected a number of seconds',
    "runs.csv has a bad lr": 'runs.csv: row 1: lr "abc" is not a number',
    "runs.csv has an overflowing integer": 'runs.csv: row 1: depth "1e999" is not an integer',
    "profiles.csv is a folder": "profiles.csv: a folder, not a regular file: not read",
    "profiles.csv is not CSV": "profiles.csv: not CSV (field larger than field limit (131072))",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_report_leaves_every_previous_output_untouched(tmp_path, capsys, plan, monkeypatch, fault):
    folder, logs = report_folder(tmp_path), tmp_path / "logs"
    write_run(logs, "fig1-a", depth=2, optimizer="sgd", lr=0.3)      # a new run the merge would add
    if fault == "a figure fails to render":
        def fail(group, series):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(report, "group_figure_png", fail)
    elif fault == "README.md is a symbolic link":
        (tmp_path / "victim.md").write_text("keep")
        (folder / "README.md").unlink()
        (folder / "README.md").symlink_to(tmp_path / "victim.md")
    elif fault.startswith("context.json"):
        context = {"context.json has a string for a count":
                   {"queues": [{"command": "x", "jobs": "many", "peak_parallel_jobs": 1, "wall_seconds": 1}]},
                   "context.json is not an object": [],
                   "context.json has a bad time": {"queues": [{"command": "x", "jobs": 1, "peak_parallel_jobs": 1,
                                                               "wall_seconds": 1, "started": "yesterday"}]}}
        (folder / "context.json").write_text(json.dumps(context[fault]))
    elif fault.startswith("epoch_costs.csv"):
        (folder / "epoch_costs.csv").write_text("group,command,model,seconds_per_epoch,epochs,runs\ncnn,c,m,abc,600,5\n")
    elif fault == "runs.csv has a bad lr":
        text = (folder / "runs.csv").read_text().replace(",0.3,", ",abc,", 1)
        (folder / "runs.csv").write_text(text)
    elif fault == "runs.csv has an overflowing integer":
        text = (folder / "runs.csv").read_text().replace(",2,100,", ",1e999,100,", 1)
        (folder / "runs.csv").write_text(text)
    elif fault == "profiles.csv is a folder":
        (folder / "profiles.csv").unlink()
        (folder / "profiles.csv").mkdir()
    else:
        (folder / "profiles.csv").write_text('run,split,bn_mode,point,D\n"' + "x" * 200_000 + '",train,a,0,1\n')
    before = snapshot(tmp_path)
    code, stdout, stderr = run_main(report.main, capsys, folder, "--merge", logs)
    assert code == 2 and stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith("error: ") and FAULTS[fault] in line, line
    assert snapshot(tmp_path) == before            # README.md, the tables and context.json as they were


def write_log(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def test_each_bad_queue_log_is_one_warning_line_and_the_good_one_counts(tmp_path, capsys, monkeypatch):
    start, stop = "[2026-11-27 04:00:00] start: a", "[2026-11-27 04:01:00] exit 0: a"
    good = write_log(tmp_path / "good.log", "# command: sh run_experiments.sh fig1", start, stop)
    bad = {
        write_log(tmp_path / "date.log", start, "[2026-02-30 04:01:00] exit 0: a"):
            "line 2: '2026-02-30 04:01:00' is not a valid time",
        write_log(tmp_path / "hour.log", "[2026-11-27 25:61:00] start: a"): "line 1: '2026-11-27 25:61:00' is not a valid time",
        write_log(tmp_path / "slashes.log", "[2026/11/27 04:00:00] start: a"):
            'line 1: a malformed start or exit line "[2026/11/27 04:00:00] start: a"',
        write_log(tmp_path / "status.log", start, "[2026-11-27 04:01:00] exit 0x: a"):
            'line 2: a malformed start or exit line "[2026-11-27 04:01:00] exit 0x: a"',
        write_log(tmp_path / "latin1.log", b"# command: caf\xe9", start): "not UTF-8 text (byte 0xe9 at offset 14)",
        write_log(tmp_path / "empty.log"): "no start line of run_experiments.sh",
        write_log(tmp_path / "big.log", start, stop, "#" * 300): "larger than 200 bytes, the most read of such a file",
    }
    (tmp_path / "folder.log").mkdir()
    bad[tmp_path / "folder.log"] = "a folder, not a regular file: not read"
    monkeypatch.setattr(queue_logs, "MAX_QUEUE_LOG_BYTES", 200)
    context = {}
    queue_logs.add_queues(context, [good, *bad])
    assert context["queues"] == [{"command": "sh run_experiments.sh fig1", "jobs": 1, "wall_seconds": 60.0,
                                  "peak_parallel_jobs": 1, "started": "2026-11-27 04:00:00"}]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(bad)
    for line, (path, problem) in zip(lines, bad.items()):
        assert line.startswith(f"warning: skipping queue log {path}: {problem}"), line


def test_report_files_that_are_named_pipes_never_hang(tmp_path):
    folder = report_folder(tmp_path)
    fifo_log = tmp_path / "queue.log"
    os.mkfifo(fifo_log)
    command = [sys.executable, str(REPO_ROOT / "reproduction_report.py"), str(folder)]
    completed = subprocess.run(command + ["--queue-log", str(fifo_log)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == f"warning: skipping queue log {fifo_log}: a named pipe, not a regular file: not read\n"
    (folder / "context.json").unlink()
    os.mkfifo(folder / "context.json")
    before = snapshot(tmp_path)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr == f"error: {folder / 'context.json'}: a named pipe, not a regular file: not read\n"
    assert snapshot(tmp_path) == before


def test_the_committed_context_and_tables_pass_the_checks():
    committed = REPO_ROOT / "docs" / "reproduction"
    assert report_tables.context_problem(json.loads((committed / "context.json").read_text())) is None
    assert report_tables.read_epoch_costs(committed / "epoch_costs.csv")
    report_tables.check_rows(committed / "runs.csv", report_tables.read_rows(committed / "runs.csv"))
