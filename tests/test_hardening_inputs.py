"""Issue 26, the inputs a command or the measuring API reads besides the report's tables: --skip-recorded
reads its table through the report's checked reader (class 2), the entry point's finished-run check reads
results.json through summarize_runs.read_json and refuses a run folder's .lock, .hydra or Hydra's job
log that leads elsewhere or is no regular file (classes 2 and 3; the job log's handler,
atomic_io.RegularFileHandler, opens none), and measure_separation and the planner refuse what they cannot
measure or plan truthfully (class 4). Each case: one line, its exit status or exception, nothing created, no hang.
The report's own table cases are in test_hardening_tables.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import config_utils
import measure_memory
import representation_analysis
import sweep_jobs
from config_utils import ConfigError
from representation_analysis import measure_separation
from run_folder import JOB_LOG, check_run_dir, finished_results, run_dir_problem, run_lock
from tests.child_processes import finishes

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED = REPO_ROOT / "docs" / "reproduction"
QUICK = ("layer_num=1", "hidden_size=8", "epochs=1")


def run(*command: str, timeout: float = 120, **environment) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout,
                          env={**os.environ, **environment})


def one_error_line(completed: subprocess.CompletedProcess) -> str:
    """The refusal: exit status 2, stderr exactly one `error:` line, no traceback; returns the line."""
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr[-2000:]
    return lines[0]


# ------------------------------------------- class 2: --skip-recorded reads through the checked reader
def plant_table(report: Path, kind: str) -> None:
    """report/ holding the committed profiles.csv and a runs.csv of `kind`."""
    report.mkdir()
    shutil.copy(COMMITTED / "profiles.csv", report / "profiles.csv")
    table, good = report / "runs.csv", (COMMITTED / "runs.csv").read_text()
    header, first, rest = good.split("\n", 2)
    if kind == "fifo":
        os.mkfifo(table)
    elif kind == "dev-zero link":
        table.symlink_to("/dev/zero")
    elif kind == "folder":
        table.mkdir()
    elif kind == "header Run":
        table.write_text("\n".join([header.replace(",run,", ",Run,"), first, rest]))
    elif kind == "status Completed":
        table.write_text("\n".join([header, first.replace(",completed,", ",Completed,"), rest]))
    elif kind == "empty run name":
        cells = first.split(",")
        table.write_text("\n".join([header, ",".join([cells[0], "", *cells[2:]]), rest]))
    elif kind == "a duplicated row":
        table.write_text("\n".join([header, first, first, rest]))
    elif kind == "cut last line":
        table.write_text(good[:-40])
    elif kind == "no profiles.csv":
        table.write_text(good)
        (report / "profiles.csv").unlink()
    else:
        raise AssertionError(kind)


SKIP_CASES = {   # kind -> what the one line says
    "fifo": "runs.csv: a named pipe, not a regular file: not read",
    "dev-zero link": "runs.csv: a symbolic link, not a regular file: not read",
    "folder": "runs.csv: a folder, not a regular file: not read",
    "header Run": 'runs.csv: header "group,Run,',
    "status Completed": 'status "Completed" is not one of completed, diverged, missing',
    "empty run name": "row 1: run empty, every row of the report needs it",
    "a duplicated row": "listed twice in group fig1",
    "cut last line": "the table ends inside a line (cut short?)",
    "no profiles.csv": "profiles.csv: no such file, and runs.csv's row",
}


@pytest.mark.parametrize("kind", list(SKIP_CASES))
def test_skip_recorded_refuses_what_the_report_refuses_in_one_line_without_hanging(tmp_path, kind):
    """A FIFO hung the sweep and its dry run, /dev/zero grew without bound, a header `Run` or status
    `Completed` reran everything with rc 0: now the report's reader refuses them, before any composing."""
    report = tmp_path / "report"
    plant_table(report, kind)
    before = sorted(os.listdir(report))
    started = time.monotonic()
    line = one_error_line(run(sys.executable, "sweep_jobs.py", "fig1", "--skip-recorded", str(report), timeout=60))
    assert line.startswith(f"error: --skip-recorded {report}") and SKIP_CASES[kind] in line, line
    assert time.monotonic() - started < 60 and sorted(os.listdir(report)) == before


@pytest.mark.parametrize("kind", ["fifo", "dev-zero link", "header Run", "status Completed"])
def test_the_dry_run_with_skip_recorded_stops_at_the_same_line(tmp_path, kind):
    report, temporary = tmp_path / "report", tmp_path / "tmp"
    plant_table(report, kind)
    temporary.mkdir()
    completed = run("sh", "run_experiments.sh", "--dry-run", "--skip-recorded", str(report), "fig1",
                    f"log_root={tmp_path / 'logs'}", timeout=60, TMPDIR=str(temporary))
    assert SKIP_CASES[kind] in one_error_line(completed)
    assert completed.stdout == "" and os.listdir(temporary) == [] and not (tmp_path / "logs").exists()


def test_skip_recorded_leaves_out_the_finished_runs_of_a_good_table(tmp_path, capsys):
    """The committed tables: fig1's 9 seed-666 runs are recorded; a path to runs.csv names its folder."""
    report = tmp_path / "report"
    report.mkdir()
    for name in ("runs.csv", "profiles.csv"):
        shutil.copy(COMMITTED / name, report / name)
    for argument in (report, report / "runs.csv"):
        sweep_jobs.main(["fig1", "seed=666,4242", "--skip-recorded", str(argument)])
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"# skipped: 9 jobs already recorded in {argument}"
        assert len(lines) == 10 and all("seed=4242" in line for line in lines[1:])


# ------------------------------------------------------------------------ class 4: an empty sweep
@pytest.mark.parametrize("extras", [["seed=range(0)"], ["lr=range(5,1)"], ["seed=1,2", "hidden_size=range(3,3)"]])
def test_a_sweep_over_no_values_is_one_line(extras, capsys):
    with pytest.raises(SystemExit) as stopped:
        sweep_jobs.main(["fig1", *extras])
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and "sweeps over no values" in err


def test_the_issues_empty_sweeps_exit_2_in_one_line(tmp_path):
    """`sweep_jobs.py fig1 seed='range(0)'` and `sh run_experiments.sh --dry-run fig1 'seed=range(0)'` ended
    in an IndexError traceback."""
    line = one_error_line(run(sys.executable, "sweep_jobs.py", "fig1", "seed=range(0)", timeout=60))
    assert line == ("error: seed=range(0): sweeps over no values, so nothing would run; allowed: a sweep of "
                    "at least one value (range(0,3), 1,2)")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    completed = run("sh", "run_experiments.sh", "--dry-run", "residual", "seed=range(0)",
                    f"log_root={tmp_path / 'logs'}", timeout=60, TMPDIR=str(temporary))
    assert one_error_line(completed) == line and completed.stdout == ""
    assert os.listdir(temporary) == [] and not (tmp_path / "logs").exists()


def test_the_entry_points_multirun_over_no_values_is_the_same_line(tmp_path):
    """Hydra launched 0 jobs with exit status 0 (and wrote a multirun.yaml)."""
    completed = run(sys.executable, "representation_dynamics_terminal.py", "-m", *QUICK, "seed=range(0)", "lr=0.1,0.2",
                    f"log_root={tmp_path / 'logs'}", f"figures_dir={tmp_path / 'figures'}", timeout=120)
    assert one_error_line(completed) == ("error: seed=range(0): sweeps over no values, so nothing would run; "
                                         "allowed: a sweep of at least one value (range(0,3), 1,2)")
    assert os.listdir(tmp_path) == []


def test_an_unknown_group_is_the_same_refusal(capsys):
    with pytest.raises(SystemExit) as stopped:
        sweep_jobs.main(["fig9"])
    assert stopped.value.code == 2 and capsys.readouterr().err.startswith("error: unknown group or preset 'fig9'")


# ------------------------------------------------- classes 2 and 3: files planted in a run folder
@pytest.fixture
def run_folder(tmp_path, compose):
    """(config, its run folder under tmp_path/logs, made and empty) of a QUICK run."""
    cfg = compose(*QUICK, f"log_root={tmp_path / 'logs'}", f"figures_dir={tmp_path / 'figures'}", "progress=false")
    folder = tmp_path / "logs" / config_utils.run_name(cfg)
    folder.mkdir(parents=True)
    return cfg, folder


def deeply_nested(levels: int) -> str:
    return "[" * levels + "]" * levels


RESULTS_CASES = {
    "fifo": lambda path: os.mkfifo(path),
    "dev-zero link": lambda path: path.symlink_to("/dev/zero"),
    "link to a missing file": lambda path: path.symlink_to(path.parent / "nowhere"),
    "folder": lambda path: path.mkdir(),
    "a list": lambda path: path.write_text("[]"),
    "null": lambda path: path.write_text("null"),
    "a string": lambda path: path.write_text('"completed"'),
    "nested 100,000 deep": lambda path: path.write_text(deeply_nested(100_000)),
    "nested 100 deep": lambda path: path.write_text(deeply_nested(100)),
    "not UTF-8": lambda path: path.write_bytes(b'{"status": "\xff"}'),
    "9 MB": lambda path: path.write_text('{"status": "completed", "pad": "' + "x" * 9_000_000 + '"}'),
    "truncated": lambda path: path.write_text('{"status": "comp'),
}


@pytest.mark.parametrize("kind", list(RESULTS_CASES))
def test_the_finished_run_check_never_hangs_floods_or_raises(run_folder, kind):
    """A FIFO hung the entry point, a link to /dev/zero took all memory, `[]` or deep nesting raised:
    read_json reads a regular file of bounded size and depth; anything else is no finished run."""
    cfg, folder = run_folder
    RESULTS_CASES[kind](folder / "results.json")
    identity = config_utils.identity_hash(cfg)
    assert finishes(lambda: finished_results(folder, identity)) is None
    assert finishes(lambda: run_dir_problem(folder, cfg)) is None   # its own folder: it reruns


def test_a_finished_record_still_counts(run_folder):
    cfg, folder = run_folder
    identity = config_utils.identity_hash(cfg)
    (folder / "results.json").write_text(f'{{"identity_hash": "{identity}", "status": "diverged"}}')
    assert finished_results(folder, identity) == folder / "results.json"
    (folder / "results.json").write_text(f'{{"identity_hash": "{identity}", "status": "running"}}')
    assert finished_results(folder, identity) is None


@pytest.mark.parametrize("kind", ["link to a missing file", "fifo", "dev-zero link", "folder"])
def test_a_run_folders_lock_that_is_no_regular_file_is_a_config_error(run_folder, tmp_path, kind):
    cfg, folder = run_folder
    lock, target = folder / ".lock", tmp_path / "elsewhere" / "created"
    {"link to a missing file": lambda: lock.symlink_to(target), "fifo": lambda: os.mkfifo(lock),
     "dev-zero link": lambda: lock.symlink_to("/dev/zero"), "folder": lambda: lock.mkdir()}[kind]()

    def take():
        with run_lock(folder):
            return "locked"
    error = finishes(take)
    assert isinstance(error, ConfigError), error
    assert str(error).startswith(f"hydra.run.dir={folder}: {lock}: a ") and "never followed" in str(error)
    assert "\n" not in str(error) and not target.parent.exists()
    assert sorted(os.listdir(folder)) == [".lock"]


def entry(tmp_path: Path, *overrides: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return run(sys.executable, "representation_dynamics_terminal.py", *QUICK, f"log_root={tmp_path / 'logs'}",
               f"figures_dir={tmp_path / 'figures'}", "progress=false", *overrides, timeout=timeout)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_the_entry_point_refuses_a_planted_lock_in_one_line(run_folder, tmp_path, kind):
    """Was Hydra's error (with 'Set HYDRA_FULL_ERROR'), a FIFO hung and a link created its target."""
    _, folder = run_folder
    target = tmp_path / "planted"
    if kind == "symlink":
        (folder / ".lock").symlink_to(target)
    else:
        os.mkfifo(folder / ".lock")
    line = one_error_line(entry(tmp_path))
    assert line.startswith(f"error: hydra.run.dir={folder}: {folder / '.lock'}: a ") and "HYDRA_FULL_ERROR" not in line
    assert not target.exists() and not (folder / "results.json").exists()


def test_the_entry_point_reruns_over_a_results_fifo(run_folder, tmp_path):
    """A results.json that is a FIFO is no finished run: the run trains and replaces it (it hung)."""
    _, folder = run_folder
    os.mkfifo(folder / "results.json")
    completed = entry(tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines()[-1] == f"results: {folder / 'results.json'}"
    assert (folder / "results.json").is_file() and not (folder / "results.json").is_symlink()


@pytest.mark.parametrize("kind", ["link to a folder", "file"])
def test_a_run_record_folder_that_leads_elsewhere_is_refused(run_folder, tmp_path, kind):
    """.hydra linked elsewhere: the record was written there, and a forced rerun removed the *.yaml there."""
    cfg, folder = run_folder
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.yaml").write_text("keep")
    if kind == "file":
        (folder / ".hydra").write_text("not a folder")
    else:
        (folder / ".hydra").symlink_to(victim)
    with pytest.raises(ConfigError, match=r"its \.hydra \(the run record written there\) is not a folder"):
        check_run_dir(folder, cfg)
    assert os.listdir(victim) == ["keep.yaml"]


@pytest.mark.parametrize("target", ["run folder", "checkpoint"])
def test_reanalyze_refuses_a_checkpoint_fifo_in_one_line(tmp_path, target):
    folder = tmp_path / "run"
    folder.mkdir()
    os.mkfifo(folder / "checkpoint.pt")
    path = folder if target == "run folder" else folder / "checkpoint.pt"
    line = one_error_line(run(sys.executable, "reanalyze.py", str(path), timeout=60))
    assert line.startswith(f"error: {folder / 'checkpoint.pt'}: refused: a named pipe, not a regular file")
    assert os.listdir(folder) == ["checkpoint.pt"]


# ------------------------------------------- class 3: Hydra's job log, opened before the project's code
def plant_job_log(log: Path, kind: str, target: Path) -> None:
    {"fifo": lambda: os.mkfifo(log), "symlink": lambda: log.symlink_to(target),
     "dev-zero link": lambda: log.symlink_to("/dev/zero"), "folder": lambda: log.mkdir()}[kind]()


@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder"])
def test_the_entry_point_refuses_a_job_log_that_is_no_regular_file_in_one_line(run_folder, tmp_path, kind):
    """Hydra's FileHandler opened logs/<run>/representation_dynamics_terminal.log before any project code:
    a FIFO hung the entry point, a link was appended to (its target created). Now the run folder check
    (ValidateBeforeLaunch, before Hydra's logging set-up) refuses it: one line, exit 2, nothing created."""
    _, folder = run_folder
    log, target = folder / JOB_LOG, tmp_path / "outside" / "target.log"
    target.parent.mkdir()
    plant_job_log(log, kind, target)
    line = one_error_line(entry(tmp_path, timeout=120))   # a hang is subprocess.TimeoutExpired
    kinds = {"fifo": "a named pipe", "symlink": "a symbolic link", "folder": "a folder"}
    assert line.startswith(f"error: hydra.run.dir={folder}: its {JOB_LOG} (Hydra's job log")
    assert f"is {kinds[kind]}, not a regular file" in line and "HYDRA_FULL_ERROR" not in line
    assert not target.exists() and os.listdir(target.parent) == []
    assert os.listdir(folder) == [JOB_LOG] and (log.is_symlink() or not log.is_file())


def test_a_multirun_refuses_a_job_log_fifo_before_launching(run_folder, tmp_path):
    _, folder = run_folder
    os.mkfifo(folder / JOB_LOG)
    line = one_error_line(run(sys.executable, "representation_dynamics_terminal.py", "-m", *QUICK, "seed=666",
                              f"log_root={tmp_path / 'logs'}", f"figures_dir={tmp_path / 'figures'}",
                              "progress=false", timeout=120))
    assert line.startswith(f"error: hydra.sweep.subdir={folder}: its {JOB_LOG} (Hydra's job log")
    assert "a named pipe" in line and os.listdir(folder) == [JOB_LOG]


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dev-zero link", "folder"])
def test_the_check_names_a_planted_job_log(run_folder, tmp_path, kind):
    cfg, folder = run_folder
    plant_job_log(folder / JOB_LOG, kind, tmp_path / "outside" / "target.log")
    error = finishes(lambda: check_run_dir(folder, cfg))
    assert isinstance(error, ConfigError) and "\n" not in str(error), error
    assert f"its {JOB_LOG} (Hydra's job log, appended to by every run) is a " in str(error)
    assert not (tmp_path / "outside").exists()


def test_a_regular_job_log_is_no_problem(run_folder):
    cfg, folder = run_folder
    (folder / JOB_LOG).write_text("[earlier run's line]\n")
    assert run_dir_problem(folder, cfg) is None


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dev-zero link", "folder"])
def test_the_job_log_handler_opens_no_special_file_and_emits_nothing(tmp_path, kind):
    """atomic_io.RegularFileHandler (Hydra's job log handler): no hang, no link followed, no exception."""
    import logging

    from atomic_io import NotRegularFile, RegularFileHandler
    log, target = tmp_path / "job.log", tmp_path / "outside" / "target.log"
    target.parent.mkdir()
    plant_job_log(log, kind, target)
    for delay in (False, True):
        handler = finishes(lambda: RegularFileHandler(str(log), delay=delay))
        assert isinstance(handler, RegularFileHandler), handler
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "a line", (), None)
        assert finishes(lambda: (handler.handle(record), handler.handle(record))) == (True, True)
        assert handler.stream is None and isinstance(handler.refused, NotRegularFile)
        handler.close()
    assert not target.exists() and os.listdir(target.parent) == []


def test_the_job_log_handler_appends_to_a_regular_file(tmp_path):
    import logging

    from atomic_io import RegularFileHandler
    log = tmp_path / "job.log"
    log.write_text("earlier\n")
    for delay in (False, True):
        handler = RegularFileHandler(str(log), delay=delay)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "line %s", (delay,), None))
        handler.close()
    assert log.read_text() == "earlier\nline False\nline True\n"
    handler = RegularFileHandler(str(tmp_path / "new.log"))
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "first", (), None))
    handler.close()
    assert (tmp_path / "new.log").read_text() == "first\n"


def test_hydras_job_logging_is_its_default_but_the_file_handlers_class(compose):
    """Same format, level, file name and handlers as Hydra 1.3's default; only the class differs; the
    data scripts (data_only: hydra/job_logging=stdout) keep theirs."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    import hydra
    default = OmegaConf.load(Path(hydra.__file__).parent / "conf" / "hydra" / "job_logging" / "default.yaml")
    with initialize_config_dir(str(config_utils.CONF_DIR), version_base="1.3"):
        ours = hydra_compose("config", return_hydra_config=True).hydra.job_logging
        data_only = hydra_compose("data_only", return_hydra_config=True).hydra.job_logging
    ours = OmegaConf.to_container(ours, resolve=False)
    default = OmegaConf.to_container(default)
    assert ours["handlers"]["file"].pop("class") == "atomic_io.RegularFileHandler"
    assert default["handlers"]["file"].pop("class") == "logging.FileHandler"
    assert ours == default
    assert sorted(OmegaConf.to_container(data_only)["handlers"]) == ["console"]


def test_hydras_logging_set_up_with_a_job_log_fifo_does_not_hang(tmp_path):
    """Were the run folder check passed by (a FIFO made after it), Hydra's own set-up (its target policy
    included) of this job logging neither hangs nor raises, and logs to the console only."""
    os.mkfifo(tmp_path / "job.log")
    script = (
        "import logging, sys\n"
        "from omegaconf import OmegaConf\n"
        "from hydra._internal.logging_config import configure_logging\n"
        "conf = OmegaConf.to_container(OmegaConf.load('conf/hydra/job_logging/regular_file.yaml'))\n"
        "conf['handlers']['file']['filename'] = sys.argv[1]\n"
        "configure_logging(conf)\n"
        "logging.getLogger('x').info('a line')\n")
    completed = run(sys.executable, "-c", script, str(tmp_path / "job.log"), timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.endswith("[x][INFO] - a line\n") and completed.stderr == ""


# ---------------------------------------------------- class 4: the API refuses what it cannot measure
@pytest.fixture(scope="module")
def small_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 3))
    inputs, labels = torch.randn(60, 20), torch.arange(60) % 3
    return net, inputs, labels


API_CASES = {   # name -> (arguments changed, exception, the start of its one line)
    "float labels": (lambda x, y: {"labels": y.float()}, TypeError, "labels: dtype torch.float32"),
    "fractional labels": (lambda x, y: {"labels": y.float() + 0.7}, TypeError, "labels: dtype torch.float32"),
    "float64 labels": (lambda x, y: {"labels": y.double()}, TypeError, "labels: dtype torch.float64"),
    "bool labels": (lambda x, y: {"labels": y == 1}, TypeError, "labels: dtype torch.bool"),
    "numpy labels": (lambda x, y: {"labels": y.numpy()}, TypeError, "labels: of type ndarray"),
    "labels [N, 1]": (lambda x, y: {"labels": y[:, None]}, ValueError, "labels: shape (60, 1)"),
    "fewer labels than samples": (lambda x, y: {"labels": y[:50]}, ValueError, "labels: 50 for 60 samples"),
    "a negative label": (lambda x, y: {"labels": y - 1}, ValueError, "labels: holds -1"),
    "a label beyond num_classes": (lambda x, y: {"num_classes": 2}, ValueError, "labels: holds 2 with num_classes=2"),
    "a batch's float labels": (lambda x, y: {"data": [(x[:30], y[:30]), (x[30:], y[30:].float())], "labels": None,
                                             "num_classes": 3}, TypeError, "labels: dtype torch.float32"),
    "a batch's labels cut short": (lambda x, y: {"data": [(x[:30], y[:29])], "labels": None, "num_classes": 3},
                                   ValueError, "labels: 29 for a batch of 30 samples"),
    "modules='13'": (lambda x, y: {"modules": "13"}, TypeError, "modules='13': a single string"),
    "modules='2'": (lambda x, y: {"modules": "2"}, TypeError, "modules='2': a single string"),
    "modules=[]": (lambda x, y: {"modules": []}, ValueError, "modules: an empty list"),
    "modules of ints": (lambda x, y: {"modules": [2, 4]}, TypeError, "modules: 2 (of type int) is not a name"),
    "a module twice": (lambda x, y: {"modules": ["2", "2"]}, ValueError, "modules: '2' is listed more than once"),
    "a set of modules": (lambda x, y: {"modules": {"2", "4"}}, TypeError, "modules: of type set"),
    "pca_dim=-1": (lambda x, y: {"pca_dim": -1}, ValueError, "pca_dim=-1: allowed: None (no PCA) or an integer >= 1"),
    "pca_dim=0": (lambda x, y: {"pca_dim": 0}, ValueError, "pca_dim=0: allowed"),
    "pca_dim=2.5": (lambda x, y: {"pca_dim": 2.5}, TypeError, "pca_dim=2.5: of type float"),
    "pca_dim='5'": (lambda x, y: {"pca_dim": "5"}, TypeError, "pca_dim='5': of type str"),
    "pca_dim=True": (lambda x, y: {"pca_dim": True}, TypeError, "pca_dim=True: of type bool"),
    "batch_size=0": (lambda x, y: {"batch_size": 0}, ValueError, "batch_size=0: allowed: an integer >= 1"),
    "batch_size=2.5": (lambda x, y: {"batch_size": 2.5}, TypeError, "batch_size=2.5: allowed"),
    "num_classes=0": (lambda x, y: {"num_classes": 0}, ValueError, "num_classes=0: allowed: None or an integer >= 1"),
    "an unknown measure": (lambda x, y: {"measure": "nc2"}, ValueError, "measure='nc2': allowed: within_variance"),
    "no samples": (lambda x, y: {"data": x[:0], "labels": y[:0]}, ValueError, "data: no samples"),
    "no batches": (lambda x, y: {"data": [], "labels": None, "num_classes": 3}, ValueError, "data: no samples"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_the_api_refuses_what_it_cannot_measure_in_one_line(small_problem, case):
    net, inputs, labels = small_problem
    changes, error_type, start = API_CASES[case]
    arguments = {"data": inputs, "labels": labels, "modules": ["2", "4"], **changes(inputs, labels)}
    before, mode = {name: value.clone() for name, value in net.state_dict().items()}, net.training
    with pytest.raises(error_type) as raised:
        measure_separation(net, arguments.pop("data"), arguments.pop("labels"), **arguments)
    message = str(raised.value)
    assert message.startswith(start) and "\n" not in message and ("allowed" in message or "pass " in message), message
    assert all(torch.equal(before[name], value) for name, value in net.state_dict().items()) and net.training == mode


def test_a_module_the_forward_pass_never_runs_is_refused(small_problem):
    """It had no width: a KeyError once every batch had been measured."""
    net, inputs, labels = small_problem
    model = nn.Sequential()
    model.add_module("body", net)
    model.add_module("unused", nn.Linear(3, 3))
    model.forward = lambda batch: model.body(batch)
    with pytest.raises(ValueError, match=r"^modules: \['unused'\] gave no output in the forward pass; allowed"):
        measure_separation(model, inputs, labels, modules=["body.2", "unused"])


def test_integer_labels_of_any_width_give_the_same_numbers(small_problem):
    net, inputs, labels = small_problem
    reference = measure_separation(net, inputs, labels, modules=["2", "4"])
    for dtype in (torch.int32, torch.uint8, torch.int16):
        again = measure_separation(net, inputs, labels.to(dtype), modules=("2", "4"))
        assert [r["D"] for r in again["layers"]] == [r["D"] for r in reference["layers"]]
    reduced = measure_separation(net, inputs, labels, modules=["2", "4"], pca_dim=1)
    assert [r["dim"] for r in reduced["layers"]] == [30, 30]


def test_a_width_whose_sums_exceed_the_memory_is_refused_before_allocating(monkeypatch):
    """Width 60,000 tried to allocate 28.8 GB (then 2 more d x d at finalize): refused in one line naming
    the size, before any d x d sum exists; pca_dim still measures it."""
    monkeypatch.setattr(measure_memory, "available_memory", lambda device: 16 * 10 ** 9)
    updates = []
    monkeypatch.setattr(representation_analysis.StreamingClassStatistics, "update",
                        lambda self, *args: updates.append(self))
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(20, 60_000))
    inputs, labels = torch.randn(40, 20), torch.arange(40) % 4
    with pytest.raises(ValueError) as raised:
        measure_separation(wide, inputs, labels, modules=["0"], batch_size=20, passes=1)
    assert str(raised.value) == (
        "modules: measuring 1 point(s) without pca_dim streams d x d float64 sums (widest '0', d = 60,000): "
        "86.4 GB, more than the 16.0 GB available on cpu; allowed: passes=None or 2 (two passes, O(K d) memory), "
        "pca_dim=K (features held in memory, PCA-reduced to K first) or fewer or narrower modules")
    assert updates == []
    profile = measure_separation(wide, inputs, labels, modules=["0"], batch_size=20, pca_dim=10)
    assert profile["layers"][0]["dim"] == 60_000


def test_the_memory_needed_counts_every_point_and_the_widest_twice_more(monkeypatch, small_problem):
    assert measure_memory.streaming_bytes({"a": 100, "b": 10}) == 8 * (100 ** 2 + 10 ** 2 + 2 * 100 ** 2)
    net, inputs, labels = small_problem
    needed = measure_memory.streaming_bytes({"2": 30, "4": 30})
    monkeypatch.setattr(measure_memory, "available_memory", lambda device: needed)
    measure_separation(net, inputs, labels, modules=["2", "4"])                    # fits exactly
    monkeypatch.setattr(measure_memory, "available_memory", lambda device: needed - 1)
    with pytest.raises(ValueError, match="more than the 0.0 GB available on cpu"):
        measure_separation(net, inputs, labels, modules=["2", "4"], passes=1)
    monkeypatch.setattr(measure_memory, "available_memory", lambda device: None)   # unknown: measured
    measure_separation(net, inputs, labels, modules=["2", "4"])


def test_this_machines_memory_is_known():
    available = measure_memory.available_memory(torch.device("cpu"))
    assert available is None or 0 < available < 2 ** 50

