"""What a newcomer reads: summarize_runs refuses a missing path in one line, runs.md names each run, the
fig1 grid lists its left-out runs one reason per line, every entry script's --help shows its whole
docstring and a help text per option, the run log holds one line every log_every_n_epochs epochs (and
logging them leaves the numbers bit for bit), bars label the run by its whole name and show the
measuring, and numbers for people are rounded."""
from __future__ import annotations

import argparse
import ast
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import summarize_runs
from config_utils import ConfigError, run_identity, run_name
from experiment import epoch_line, fit_summary, progress_label, run_experiment, validate_config
from tests.child_processes import main_outcome
from tests.conftest import REPO_ROOT
from tests.test_summarize import write_run

# --------------------------------------------------------------------------------------- summarize_runs


def run_summarize(capsys, *argv) -> tuple[int, str, str]:
    return main_outcome(capsys, summarize_runs.main, *argv)


def test_a_missing_path_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    write_run(tmp_path / "logs", "cfm-GFNN-L6-a")
    missing = tmp_path / "no-such-logs"
    code, out, err = run_summarize(capsys, tmp_path / "logs", missing, "--out", tmp_path / "out")
    assert (code, out, err) == (2, "", f"error: {missing}: no such file or folder (see --help)\n")
    assert not (tmp_path / "out").exists()


def test_runs_md_names_each_run_so_two_configurations_never_read_as_one_row(tmp_path, capsys):
    logs = tmp_path / "logs"
    for name in ("cfm-GFNN-L6-w100-adam-lr0.001-e600-s666-1a2b3c4d",    # the same columns but for the
                 "cfm-GFNN-L6-w100-adam-lr0.001-e600-s666-5e6f7a8b"):   # name (another schedule, say)
        write_run(logs, name, loss=0.0123456789, test_accuracy=0.812345678, first_d=31.23456789)
    code, _, _ = run_summarize(capsys, logs, "--out", tmp_path / "out")
    lines = (tmp_path / "out" / "runs.md").read_text().splitlines()
    assert code == 0 and lines[0].startswith("| run | data | model | variant | depth |")
    rows = [line for line in lines if line.startswith("| cfm-GFNN")]
    assert [row.split(" | ")[0] for row in rows] == ["| cfm-GFNN-L6-w100-adam-lr0.001-e600-s666-1a2b3c4d",
                                                     "| cfm-GFNN-L6-w100-adam-lr0.001-e600-s666-5e6f7a8b"]
    assert rows[0].split(" | ")[1:] == rows[1].split(" | ")[1:]
    # rounded for people (runs.csv keeps every digit): D_first, ..., test accuracy, final train loss
    assert " | 31.23 | 0.01428 | 1.0000 | 0.8123 | 0.01235 | completed | 12.5 |" in rows[0]
    with open(tmp_path / "out" / "runs.csv") as handle:
        assert "0.0123456789" in handle.read()
    assert len(lines[0].split(" | ")) == len(rows[0].split(" | "))


def short_sweep(logs: Path) -> None:
    """fig1's nine runs at epochs=2 but one at 600 epochs, and two more runs of the adam depth-6 panel."""
    lrs = summarize_runs.fig1_lr_table()
    for optimizer in summarize_runs.FIG1_OPTIMIZERS:
        for depth in summarize_runs.FIG1_DEPTHS:
            epochs = 600 if (optimizer, depth) == ("sgd", 2) else 2
            write_run(logs, f"cfm-GFNN-L{depth}-w100-{optimizer}-lr{lrs[optimizer, depth]}-e{epochs}-s666-1a2b3c4d",
                      depth=depth, optimizer=optimizer, lr=lrs[optimizer, depth], epochs=epochs)
    write_run(logs, "cfm-GFNN-L6-w100-adam-lr0.003-e600-s666-5e6f7a8b", lr=3e-3)


def test_fig1_left_out_runs_are_a_list_one_reason_per_line_grouped_and_wrapped(tmp_path, capsys):
    short_sweep(tmp_path / "logs")
    code, out, _ = run_summarize(capsys, tmp_path / "logs", "--out", tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "fig1_grid.png").read_bytes()[:4] == b"\x89PNG"
    lines = out.splitlines()
    assert lines[0] == "fig1 grid: left out 9 runs of other protocols:"
    items = [line for line in lines if line.startswith("  - ")]
    assert items == ["  - epochs=2 (8 runs): cfm-GFNN-L2-w100-adam-lr0.003-e2-s666-1a2b3c4d,",
                     "  - lr=0.003, fig1's is 0.001: cfm-GFNN-L6-w100-adam-lr0.003-e600-s666-5e6f7a8b"]
    listed = lines[1:lines.index(items[1])]
    assert all(len(line) <= 100 for line in listed) and len(listed) > 1       # wrapped between names
    names = re.findall(r"cfm-GFNN-[^,\s]+", " ".join(listed))
    assert len(names) == 8 and all(name.endswith("-1a2b3c4d") for name in names)   # never cut inside a name


def test_a_panel_without_a_run_says_why_its_runs_were_left_out():
    left = [summarize_runs.LeftOut(("adam", 6), "a", "epochs=2"), summarize_runs.LeftOut(("adam", 6), "b", "epochs=2"),
            summarize_runs.LeftOut(("adam", 6), "c", "training=frozen")]
    assert summarize_runs.no_run_note([]) == "no run"
    assert summarize_runs.no_run_note(left) == ("no run of the fig1 protocol\nleft out:\nepochs=2: 2 runs\n"
                                                "training=frozen: 1 run")
    many = [summarize_runs.LeftOut(("adam", 6), "x", f"epochs={n}") for n in range(5)]
    assert summarize_runs.no_run_note(many).splitlines()[-1] == "and 3 more reasons (listed on stdout)"


def test_without_a_fig1_run_the_left_out_runs_still_say_why(tmp_path, capsys):
    write_run(tmp_path / "logs", "cfm-GFNN-L2-w100-sgd-lr0.3-e2-s666-1a2b3c4d", depth=2, optimizer="sgd", lr=0.3,
              epochs=2)
    code, out, _ = run_summarize(capsys, tmp_path / "logs", "--out", tmp_path / "out")
    assert code == 0 and not (tmp_path / "out" / "fig1_grid.png").exists()
    assert out.splitlines()[:2] == [
        "fig1 grid not drawn (no run of the fig1 protocol): left out 1 run of other protocols:",
        "  - epochs=2: cfm-GFNN-L2-w100-sgd-lr0.3-e2-s666-1a2b3c4d"]


# ------------------------------------------------------------------------------------------ --help texts
ENTRY_SCRIPTS = ["summarize_runs.py", "reanalyze.py", "reproduction_report.py", "sweep_jobs.py",
                 "scripts/readme_table.py",
                 *sorted(str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "benchmarks").glob("*.py"))]


class ParserSeen(Exception):
    pass


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_help_shows_the_whole_docstring_and_every_option_has_a_help_text(script, monkeypatch):
    """The parser the script builds when run (caught at parse_args, before it does anything)."""
    seen = []

    def catch(parser, *args, **kwargs):
        seen.append(parser)
        raise ParserSeen

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_intermixed_args", catch)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(ParserSeen):
        runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    (parser,) = seen
    docstring = ast.get_docstring(ast.parse((REPO_ROOT / script).read_text()), clean=False)
    assert " ".join(docstring.split()) in " ".join(parser.format_help().split())   # every sentence
    assert docstring.strip() in parser.format_help()                            # and its layout
    undocumented = [action.dest for action in parser._actions if not action.help]
    assert undocumented == [], f"{script}: options without a help text: {undocumented}"


# --------------------------------------------------------------------------------------- the run log
RUN = ("data=cfm", "model=GFNN", "layer_num=2", "epochs=4", "curves_every_n_epochs=2", "threads=1", "device=cpu")
COMPARED = ("layers", "fit", "test_layers", "test_fit", "train_accuracy", "test_accuracy", "final_train_loss",
            "epochs_completed", "history")


def test_the_run_log_holds_a_line_every_n_epochs_and_the_numbers_stay_bit_for_bit(tmp_path, compose):
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "representation_dynamics_terminal.py"), *RUN,
                                "log_every_n_epochs=1", f"log_root={tmp_path}/logs", f"figures_dir={tmp_path}/figures"],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    results_path = Path(completed.stdout.strip().splitlines()[-1].removeprefix("results: "))
    results = json.loads(results_path.read_text())
    log = (results_path.parent / "representation_dynamics_terminal.log").read_text()
    epoch_lines = [line.split("] - ", 1)[1] for line in log.splitlines() if "] - epoch " in line]
    history = results["history"]
    accuracies = dict(zip(history["accuracy_epoch"], zip(history["train_accuracy"], history["test_accuracy"])))
    lrs = [1e-3, 1e-4, 1e-5, 1e-5]     # the step schedule of 4 epochs: /10 at epoch int(4/3), /100 at int(8/3)
    assert epoch_lines == [epoch_line(epoch, 4, loss, lr, accuracies.get(epoch))
                           for epoch, loss, lr in zip(history["epoch"], history["train_loss"], lrs)]
    assert epoch_lines[1] == (f"epoch 2/4: loss {history['train_loss'][1]:.4g}, lr 0.0001, accuracy train "
                              f"{accuracies[2][0]:.4f} test {accuracies[2][1]:.4f}")
    assert re.search(r"\] - fit: pearson_r -?\d\.\d{4} rho \d\.\d{4}; accuracy train \d\.\d{4} test \d\.\d{4}\n",
                     log)
    # progress: the training bar is labelled with the whole run name, and the measuring has its bar
    assert f"{results['run_name']}: " in completed.stderr and "measure train: " in completed.stderr
    # without epoch lines or bars, in this process: the same numbers to the last bit
    cfg = compose(*RUN, "log_every_n_epochs=0", "progress=false", f"log_root={tmp_path}/quiet",
                  f"figures_dir={tmp_path}/figures")
    assert run_name(cfg) == results["run_name"]
    quiet = json.loads(run_experiment(cfg, tmp_path / "quiet" / run_name(cfg)).read_text())
    assert {key: quiet[key] for key in COMPARED} == {key: results[key] for key in COMPARED}


def test_log_every_n_epochs_is_an_execution_key(compose):
    assert run_identity(compose("log_every_n_epochs=5")) == run_identity(compose())
    assert compose().log_every_n_epochs == 20                   # 30 lines for the paper's 600 epochs
    for value in (-1, 2.5, "often"):
        with pytest.raises(ConfigError, match=f"^log_every_n_epochs={value}: allowed: an integer >= 0"):
            validate_config(compose(f"log_every_n_epochs={value}"), output_keys=())


# ------------------------------------------------------------------------------- numbers for people
def test_numbers_for_people_are_rounded():
    assert epoch_line(30, 600, 0.123456789, 0.001) == "epoch 30/600: loss 0.1235, lr 0.001"
    assert epoch_line(600, 600, 1.0e-05 / 3, 1.0000000000000002e-05, (0.99912345, 0.7868)) == \
        "epoch 600/600: loss 3.333e-06, lr 1e-05, accuracy train 0.9991 test 0.7868"
    assert fit_summary({"pearson_r": -0.9974789282051831, "rho": 0.7131210360685958}) == \
        "pearson_r -0.9975 rho 0.7131"
    assert fit_summary(None) == "none (fewer than two finite points)"


def test_progress_labels_keep_the_run_name_whole_or_shorten_it_between_parts():
    name = "cfm-GFNN-L6-w100-adam-lr0.001-e600-s666-0f08cd6c"
    assert progress_label(name) == name
    long = "imbalanced_cfm-GFNNOriginal-L18-w1000-momentum-lr1e-05-e600-s9223372036854775807-frozen-1a2b3c4d"
    assert progress_label(long) == "imbalanced_cfm-GFNNOriginal-L18-w1000-momentum-...-1a2b3c4d"
    assert progress_label(long, limit=72) == "imbalanced_cfm-GFNNOriginal-L18-w1000-momentum-lr1e-05-e600-...-1a2b3c4d"
    assert progress_label(long, limit=71) == "imbalanced_cfm-GFNNOriginal-L18-w1000-momentum-lr1e-05-...-1a2b3c4d"
    for limit in range(10, len(long)):
        label = progress_label(long, limit)
        kept = label.split("-...-")[0]
        assert label.endswith("-1a2b3c4d") and long.startswith(kept + "-") and not kept.endswith("lr1e")
