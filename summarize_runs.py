"""Summarize finished runs into runs.csv, runs.md and the paper's composite figures (fig1_grid.png,
depth_<data>.png); the reproduction report is reproduction_report.py's (it reads runs through this).

    python summarize_runs.py logs/ --out summaries/             # every results.json under logs/
    python summarize_runs.py logs/ --out summaries/ --best-lr   # per configuration, its best lr only

Arguments are run directories, results.json files or folders searched for results.json; reanalyses are
not runs, and a results.json with fields of the wrong types is skipped with a one-line warning.

Files read are untrusted (this module is also reproduction_report.py's reader): a results.json is read
only when it is a regular file (a named pipe or device is never opened for reading: stat first, then
O_NONBLOCK), of at most MAX_RESULTS_BYTES, UTF-8, JSON nested at most MAX_JSON_DEPTH deep, and of the
schema results_problem() states; anything else is skipped with one `warning: skipping PATH: problem` line
on stderr. Folders are searched without following symbolic links to folders.

Files written: every output name is a checked component (safe_name: [A-Za-z0-9._=-], no leading '.' or
'-', at most 100 characters), joined to the resolved --out folder and verified to lie in it
(output_path). A figure whose name would come out unsafe (a data name like `../../x`) is not drawn, with
one warning line. A symbolic link, folder or other non-regular file at an output name is refused: one
`error:` line and exit status 2 before anything is written (a link is neither followed nor replaced).
Every file is rendered in memory first and then written atomically (atomic_io: a temporary beside the
target, renamed onto it), so a failing run leaves the previous outputs as they were. Values from files
placed in runs.md and runs.csv go through markdown_escape and csv_cell (the one escaping function per
format both tools use).
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import argparse
import csv
import io
import json
import math
import os
import re
import stat
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from atomic_io import atomic_write
from config_utils import CONF_DIR, EXECUTION_KEYS, LOOKUP_KEY, name_problem

# Keys of a run's config that are not part of its configuration in the --best-lr sense: where it ran,
# its lr, and `lookup` (tables presets interpolate from, e.g. fig1's lr; the run's lr is in `lr`).
NOT_CONFIGURATION = (*EXECUTION_KEYS, "lr", LOOKUP_KEY)
FIG1_OPTIMIZERS = ("sgd", "momentum", "adam")
FIG1_DEPTHS = (2, 6, 18)
CSV_COLUMNS = ("run", "data", "model", "variant", "depth", "width", "optimizer", "lr", "epochs", "seed",
               "pearson_r", "rho", "D_first", "D_last", "train_accuracy", "test_accuracy",
               "final_train_loss", "status", "wall_seconds", "path")
MARKDOWN_COLUMNS = (("run", "s"), ("data", "s"), ("model", "s"), ("variant", "s"), ("depth", "d"), ("width", "d"),
                    ("optimizer", "s"), ("lr", "g"), ("epochs", "d"), ("seed", "d"),
                    ("pearson_r", ".4f"), ("rho", ".4f"), ("D_first", ".4g"), ("D_last", ".4g"),
                    ("train_accuracy", ".4f"), ("test_accuracy", ".4f"),
                    ("final_train_loss", ".4g"), ("status", "s"), ("wall_seconds", ".1f"))

MAX_RESULTS_BYTES = 8 * 2 ** 20   # a results.json: tens of kB (config, profile, curves per epoch); more is not read
MAX_JSON_DEPTH = 64               # a results.json nests under 10 levels (dynamics -> points -> fields)
MAX_LAYERS = 10_000               # measured points of one profile (the models here have at most some 100)
MAX_SEGMENTS = 100                # line fits per profile (one per part of a ResNetMixV2)


def warn(line: str) -> None:
    """One warning line on stderr."""
    print(line, file=sys.stderr)


def printable(value) -> str:
    """str(value) on one printable line: newlines, NUL and other control or undecodable characters as
    escapes (a crafted file name cannot forge or split a warning line)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(character if character.isprintable() else character.encode("unicode_escape").decode("ascii")
                   for character in text)


# ------------------------------------------------------------------------------ reading untrusted files
class BadFile(ValueError):
    """A file that is not read or not used; str() is 'PATH: problem' on one line."""

    def __init__(self, path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{printable(path)}: {problem}")


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def _size_text(limit: int) -> str:
    return f"{limit // 2 ** 20} MiB" if limit >= 2 ** 20 else f"{limit} bytes"


def read_bytes(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file `path` (symbolic links to one are followed), at most `limit` of
    them; BadFile for anything else. A named pipe or device is never opened (stat first); the open is
    O_NONBLOCK and checked again (fstat), so a file swapped for a pipe meanwhile cannot block either."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as error:   # ValueError: a NUL in the name
        raise BadFile(path, getattr(error, "strerror", None) or str(error)) from None
    if not stat.S_ISREG(mode):
        raise BadFile(path, f"{_kind(mode)}, not a regular file: not read")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise BadFile(path, error.strerror or str(error)) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise BadFile(path, f"{_kind(mode)}, not a regular file: not read")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(descriptor, min(2 ** 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise BadFile(path, error.strerror or str(error)) from None
    finally:
        os.close(descriptor)
    if size > limit:
        raise BadFile(path, f"larger than {_size_text(limit)}, the most read of such a file: not read")
    return b"".join(chunks)


def read_text(path: Path | str, limit: int) -> str:
    """read_bytes as strict UTF-8 text."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadFile(path, f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") from None


def structure_problem(value, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why parsed JSON cannot be used whatever its schema: nested deeper than `max_depth`, or a string
    (key or value) that is not valid Unicode (a lone surrogate \\ud800 cannot be written out). Iterative,
    so it never recurses itself."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            items = node.items() if isinstance(node, dict) else ((None, item) for item in node)
            for key, item in items:
                if key is not None:
                    stack.append((key, depth))
                stack.append((item, depth + 1))
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return f"holds a string that is not valid Unicode ({json.dumps(node)[:40]})"
    return None


def read_json(path: Path | str, limit: int = MAX_RESULTS_BYTES):
    """The parsed JSON of the file `path` (read_text's checks, then structure_problem's); BadFile when it
    is not usable."""
    text = read_text(path, limit)
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadFile(path, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:
        raise BadFile(path, f"not JSON ({printable(error)})") from None
    if (problem := structure_problem(value)) is not None:
        raise BadFile(path, problem)
    return value


# ------------------------------------------------------------------------------ writing inside --out
class UnsafeOutput(ValueError):
    """An output name or path that is not written; str() is one line."""


def safe_name(name: str) -> str:
    """`name` when it is a safe file name (config_utils.name_problem, at most 100 characters: no
    separator, NUL, newline, '..' or absolute path can pass), else UnsafeOutput."""
    if (problem := name_problem(name, max_length=100)) is not None:
        raise UnsafeOutput(f"{json.dumps(str(name))[:80]} is not a safe file name (allowed: {problem})")
    return name


def output_path(out: Path, name: str) -> Path:
    """The path of output `name` in the folder `out`: a safe_name, inside the resolved `out`, and not a
    symbolic link, folder or other non-regular file already (UnsafeOutput: such a name is refused, never
    followed or replaced). Writes then go through atomic_io, which renames a temporary made beside it
    onto the name: a hard link there keeps its old content, and a link made after this check is replaced,
    not followed."""
    folder = Path(out).resolve()
    path = folder / safe_name(name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise UnsafeOutput(f"{printable(path)}: {error.strerror or error}") from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise UnsafeOutput(f"{printable(path)} is a symbolic link (to {printable(os.readlink(path))}): refusing "
                           "to write through or over it; remove it or choose another --out")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UnsafeOutput(f"{printable(path)} is {_kind(info.st_mode)}: refusing to write over it")
    if path.resolve().parent != folder:   # cannot happen after the checks above; the rule, stated
        raise UnsafeOutput(f"{printable(path)} is outside {printable(folder)}")
    return path


def output_folder(out: Path) -> Path:
    """`out`, created if missing; UnsafeOutput in one line when it cannot be a folder."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as error:
        raise UnsafeOutput(f"{printable(out)}: cannot be the output folder "
                           f"({getattr(error, 'strerror', None) or error})") from None
    if not Path(out).is_dir():
        raise UnsafeOutput(f"{printable(out)}: cannot be the output folder (not a folder)")
    return Path(out)


def write_outputs(out: Path, contents: dict[str, str | bytes]) -> list[Path]:
    """Write each name -> text or bytes into `out` atomically, after checking every name first (one
    refused name: nothing written). Returns the paths, in order."""
    paths = {name: output_path(out, name) for name in contents}
    written = []
    for name, content in contents.items():
        def write(temporary, content=content):
            if isinstance(content, bytes):
                temporary.write_bytes(content)
            else:
                temporary.write_text(content, encoding="utf-8")
        written.append(atomic_write(paths[name], write))
    return [Path(out) / path.name for path in written]


# --------------------------------------------------------------------------- escaping values from files
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def one_line(value) -> str:
    """str(value) with control characters as U+FFFD and every run of whitespace (newlines included) as
    one space."""
    text = "" if value is None else str(value)
    return re.sub(r"\s+", " ", _CONTROL.sub("\ufffd", text))


def markdown_escape(value) -> str:
    """A value from a file as markdown text (a table cell or prose): one line, and no character that
    would end a table cell, open a code span, link or image, or be HTML (backslash, |, `, [, ] escaped;
    &, <, > as entities)."""
    text = one_line(value).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for character in "|`[]":
        text = text.replace(character, "\\" + character)
    return text


def markdown_code(value, table: bool = False) -> str:
    """A value from a file as a markdown code span, backticks included: one line, fenced by more
    backticks than it holds (it cannot close its span), `|` escaped in a table cell (GFM reads the
    escape there). Code spans show HTML as text, so nothing else needs escaping."""
    text = one_line(value)
    if table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == " " and text[-1:] == " ") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_NUMERIC_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.ASCII)


def csv_cell(value) -> str:
    """A CSV cell: None empty, floats as repr (they read back bit for bit), other numbers as str; text
    that a spreadsheet would run as a formula (starting with = + - @, tab or CR, OWASP's rule) gets a
    leading apostrophe, and so does text that starts with one (the reader strips exactly one). Text
    that is a plain number ("-0.5") stays as it is."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, bool)):
        return str(value)
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r", "'") and not _NUMERIC_TEXT.fullmatch(text):
        return "'" + text
    return text


def figure_text(value, limit: int = 80) -> str:
    """A value from a file as matplotlib text: one line, at most `limit` characters, `$` escaped (else
    mathtext parses it, and bad math raises when the figure is drawn)."""
    text = one_line(value)
    text = text if len(text) <= limit else text[:limit - 1] + "\u2026"
    return text.replace("$", r"\$")


def number(value) -> float | None:
    """A JSON number, or the strings atomic_io writes for inf/nan, as a float; None stays None."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Run:
    path: Path                   # its results.json
    results: dict

    @property
    def config(self) -> dict:
        return self.results.get("config") or {}

    def _select(self, dotted: str):
        node = self.config
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        return node

    @property
    def name(self) -> str:
        return self.results.get("run_name") or self.path.parent.name

    @property
    def status(self) -> str:
        return self.results.get("status") or "unknown"

    @property
    def layers(self) -> list[dict]:
        return self.results.get("layers") or []

    @property
    def plot_layers(self) -> list[dict]:
        """The layers draw_profile can place (an index and a value)."""
        return [layer for layer in self.layers if "index" in layer and "value" in layer]

    @property
    def fit(self) -> dict | None:
        return self.results.get("fit")

    @property
    def plot_fit(self) -> dict | None:
        """The fit draw_profile can draw: of its segments, those with a line (slope and intercept)."""
        fit = self.fit
        if not fit or not fit.get("segments"):
            return fit
        return {**fit, "segments": [segment for segment in fit["segments"]
                                    if _is_number(segment.get("slope")) and _is_number(segment.get("intercept"))]}

    @property
    def drawable(self) -> bool:
        return self.status == "completed" and bool(self.layers)

    @property
    def depth(self):
        """model.depth; in a results.json written before models declared it, block_num (the residual
        networks' root key then) or else layer_num."""
        depth = self._select("model.depth")
        return depth if depth is not None else self.config.get("block_num", self.config.get("layer_num"))

    @property
    def variant(self) -> str:
        """What sets a run apart beyond data/model/shape/optimizer: two-stage training, residual
        block kind and feature points, a non-default measure or BatchNorm measuring mode (eval)."""
        parts = []
        if self._select("training.name") not in (None, "standard"):
            parts.append(self._select("training.name"))
        params = self._select("model.params")
        if isinstance(params, dict):
            parts += [str(params[key]) for key in ("block_option", "feature_option") if key in params]
        if self.config.get("measure", "within_variance") != "within_variance":
            parts.append(self.config["measure"])
        if self._select("analysis.bn_mode") not in (None, "train_batches"):
            parts.append(f"bn={self._select('analysis.bn_mode')}")
        return "/".join(parts)

    @property
    def configuration(self) -> str:
        """The config without execution keys and lr, as a comparable string."""
        kept = {key: value for key, value in self.config.items() if key not in NOT_CONFIGURATION}
        return json.dumps(kept, sort_keys=True, default=str)

    def ranking(self) -> tuple:
        """Lower is better: final train loss (non-finite or missing last), then the higher test
        accuracy, then the smaller lr (so the choice never depends on the order runs are found)."""
        loss = number(self.results.get("final_train_loss"))
        loss = loss if loss is not None and math.isfinite(loss) else math.inf
        accuracy = number(self.results.get("test_accuracy"))
        return (loss, -(accuracy if accuracy is not None else -1.0), number(self.config.get("lr")) or 0.0)

    def row(self) -> dict:
        fit = self.fit or {}
        completed = self.status == "completed"
        layers = self.layers if completed else []
        return {
            "run": self.name, "data": self._select("data.name"), "model": self._select("model.name"),
            "variant": self.variant, "depth": self.depth, "width": self.config.get("hidden_size"),
            "optimizer": self._select("optimization.name"), "lr": number(self.config.get("lr")),
            "epochs": self.config.get("epochs"), "seed": self.config.get("seed"),
            "pearson_r": number(fit.get("pearson_r")) if completed else None,
            "rho": number(fit.get("rho")) if completed else None,
            "D_first": number(layers[0].get("D")) if layers else None,
            "D_last": number(layers[-1].get("D")) if layers else None,
            "train_accuracy": number(self.results.get("train_accuracy")) if completed else None,
            "test_accuracy": number(self.results.get("test_accuracy")) if completed else None,
            "final_train_loss": number(self.results.get("final_train_loss")),
            "status": self.status, "wall_seconds": number(self.results.get("wall_seconds")),
            "path": str(self.path),
        }


# ------------------------------------------------------------------------------------------ loading
REANALYSIS_DIR = "reanalysis"  # reanalyze.py writes RUN_DIR/reanalysis/<overrides>/results.json


def is_reanalysis(path: Path) -> bool:
    """Whether a results.json is a reanalysis of a run (reanalyze.py's output), not a run."""
    return path.parent.parent.name == REANALYSIS_DIR


def files_named(root: Path, name: str) -> list[Path]:
    """Every entry called `name` under the folder `root`, sorted; symbolic links to folders are not
    followed (no loop), the walk keeps its own stack (no depth limit), and a folder that cannot be
    listed is skipped with one warning line."""
    found, stack = [], [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name == name:
                        found.append(folder / entry.name)
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(folder / entry.name)
                    except OSError:
                        continue
        except OSError as error:
            warn(f"warning: skipping folder {printable(folder)}: {error.strerror or error}")
    return sorted(found)


def find_results(paths: list[Path]) -> list[Path]:
    """results.json files of runs named directly, in run directories, or anywhere under folders
    (reanalyses excluded)."""
    found = []
    for path in paths:
        if path.is_dir():
            found += files_named(path, "results.json")
        elif os.path.lexists(path):
            found.append(path)          # a file, or something else read_bytes names in one line
        else:
            warn(f"warning: {printable(path)} does not exist")
    unique = {}
    for path in found:
        if is_reanalysis(path):
            continue
        try:
            unique.setdefault(path.resolve(), path)
        except (OSError, RuntimeError) as error:    # RuntimeError: a symbolic-link loop
            warn(f"warning: skipping {printable(path)}: {printable(error)}")
    return list(unique.values())


NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}  # atomic_io's JSON spellings


def restore_non_finite(value):
    """The inverse of atomic_io's JSON spelling: the strings "nan", "inf", "-inf" become floats."""
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {key: restore_non_finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [restore_non_finite(item) for item in value]
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_CHECKS = {"dict": lambda v: isinstance(v, dict), "list": lambda v: isinstance(v, list),
           "str": lambda v: isinstance(v, str), "number": _is_number,
           "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)}


def _type_problem(where: str, value, expected: str) -> str | None:
    """A one-line description when `value` is not of the `expected` kind (None is always allowed)."""
    if value is None or _CHECKS[expected](value):
        return None
    return f"{where} is {type(value).__name__} {json.dumps(value)[:40]}, expected {_article(expected)}"


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


# The schema of a results.json, one table per object: field -> kind (None, or a missing field, is always
# allowed unless REQUIRED names it). Booleans are never numbers.
RESULT_FIELDS = {"config": "dict", "status": "str", "run_name": "str", "layers": "list", "fit": "dict",
                 "final_train_loss": "number", "train_accuracy": "number", "test_accuracy": "number",
                 "wall_seconds": "number", "test_layers": "list", "test_fit": "dict", "machine": "dict",
                 "versions": "dict", "device": "str", "commit": "str", "split": "str"}
CONFIG_FIELDS = {"data": "dict", "model": "dict", "optimization": "dict", "training": "dict",
                 "analysis": "dict", "lr": "number", "hidden_size": "integer", "epochs": "integer",
                 "seed": "integer", "layer_num": "integer", "block_num": "integer", "measure": "str"}
SECTION_FIELDS = {"data": {"name": "str", "test_split": "str"},
                  "model": {"name": "str", "depth": "integer", "params": "dict"},
                  "optimization": {"name": "str"}, "training": {"name": "str"}, "analysis": {"bn_mode": "str"}}
FIT_FIELDS = {"slope": "number", "intercept": "number", "rho": "number", "pearson_r": "number",
              "r2": "number", "num_points": "integer", "segments": "list"}
FIT_REQUIRED = ("slope", "intercept", "rho", "pearson_r")      # what every fit holds (the line, its r)
SEGMENT_FIELDS = {"first_index": "integer", "last_index": "integer", "slope": "number", "intercept": "number"}
LAYER_FIELDS = {"index": "integer", "D": "number", "value": "number"}
MACHINE_FIELDS = {"cpu": "str", "cpu_kernels": "str"}
VERSION_FIELDS = {"torch": "str"}
# What a run records (load_runs requires it): its config, lr and outcome, and in a fit that is there
# (a fit may be null: fewer than two finite points) the line and its r.
RUN_REQUIRED = ("config", "status", "config.lr", *(f"{fit}.{key}" for fit in ("fit", "test_fit") for key in FIT_REQUIRED))


def fields_problem(node, fields: dict, prefix: str, required=()) -> str | None:
    if not isinstance(node, dict):
        return None
    for key in required:
        if node.get(key) is None:
            return f"{prefix}{key} is {'null' if key in node else 'missing'}, expected {_article(fields[key])}"
    for key, expected in fields.items():
        if problem := _type_problem(f"{prefix}{key}", node.get(key), expected):
            return problem
    return None


def _layers_problem(layers, where: str, completed: bool) -> str | None:
    if len(layers or []) > MAX_LAYERS:
        return f"{where} has {len(layers)} points, at most {MAX_LAYERS}"
    for position, layer in enumerate(layers or []):
        if not isinstance(layer, dict):
            return f"{where}[{position}] is {type(layer).__name__}, expected an object"
        if "index" not in layer and completed:
            return f"{where}[{position}] has no index"
        if problem := fields_problem(layer, LAYER_FIELDS, f"{where}[{position}]."):
            return problem
    return None


def _fit_problem(fit, where: str) -> str | None:
    if problem := fields_problem(fit, FIT_FIELDS, f"{where}."):
        return problem
    segments = (fit or {}).get("segments") or []
    if len(segments) > MAX_SEGMENTS:
        return f"{where}.segments has {len(segments)} entries, at most {MAX_SEGMENTS}"
    for position, segment in enumerate(segments):
        if not isinstance(segment, dict):
            return f"{where}.segments[{position}] is {type(segment).__name__}, expected an object"
        if problem := fields_problem(segment, SEGMENT_FIELDS, f"{where}.segments[{position}]."):
            return problem
    return None


def results_problem(results, required=()) -> str | None:
    """Why a loaded results.json (restore_non_finite applied) cannot be used, in one line, or None: not
    an object, a field of the wrong type, too many points, or a `required` field (dotted; required
    when the object holding it is there) missing or null. The one schema of both tools: runs are checked
    with required=RUN_REQUIRED (load_runs), reanalyses with required=()."""
    if not isinstance(results, dict):
        return f"it holds a {type(results).__name__}, expected an object"
    config = results.get("config")
    for fields, node, prefix in ((RESULT_FIELDS, results, ""), (CONFIG_FIELDS, config, "config."),
                                 (MACHINE_FIELDS, results.get("machine"), "machine."),
                                 (VERSION_FIELDS, results.get("versions"), "versions.")):
        if problem := fields_problem(node, fields, prefix):
            return problem
    for section, fields in SECTION_FIELDS.items():
        node = config.get(section) if isinstance(config, dict) else None
        if problem := fields_problem(node, fields, f"config.{section}."):
            return problem
    for dotted in required:
        *parents, key = dotted.split(".")
        node = results
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(key) is None:   # a parent that is null is not required
            return f"{dotted} is {'null' if key in node else 'missing'}, a run records it"
    completed = results.get("status") == "completed"
    for key in ("layers", "test_layers"):
        if problem := _layers_problem(results.get(key), key, completed):
            return problem
    for key in ("fit", "test_fit"):
        if problem := _fit_problem(results.get(key), key):
            return problem
    return None


def read_results(path: Path, required=RUN_REQUIRED) -> dict:
    """A results.json as restore_non_finite gives it, checked by read_json and results_problem;
    BadFile (its str: 'PATH: problem') when it cannot be used."""
    results = restore_non_finite(read_json(path))
    if (problem := results_problem(results, required)) is not None:
        raise BadFile(path, problem)
    return results


def _moved_reanalysis(results) -> bool:
    """A reanalysis (reanalyze.py) moved out of its run directory: not a run."""
    return isinstance(results, dict) and {"source", "overrides"} <= results.keys() and "status" not in results


def load_runs(paths: list[Path]) -> list[Run]:
    """The runs of the results.json files under `paths`; unreadable, oversized, malformed or ill-typed
    files are skipped with one `warning: skipping PATH: problem` line each."""
    runs = []
    for path in find_results(paths):
        try:
            results = restore_non_finite(read_json(path))
        except BadFile as error:
            warn(f"warning: skipping {error}")
            continue
        if _moved_reanalysis(results):
            continue
        if (problem := results_problem(results, RUN_REQUIRED)) is not None:
            warn(f"warning: skipping {printable(path)}: {problem}")
            continue
        runs.append(Run(path, results))
    return runs


def sort_key(run: Run) -> tuple:
    """Table order: data, model, variant, optimizer, then width, epochs, seed, depth, lr."""
    row = run.row()
    return (tuple(str(row[key] or "") for key in ("data", "model", "variant", "optimizer"))
            + tuple(-1 if row[key] is None else row[key]
                    for key in ("width", "epochs", "seed", "depth", "lr")))


def best_lr_runs(runs: list[Run]) -> list[Run]:
    """Per configuration, the run of the lowest final train loss (ties: higher test accuracy), among
    the completed runs if any completed, else among the diverged ones."""
    by_configuration = defaultdict(list)
    for run in runs:
        by_configuration[run.configuration].append(run)
    chosen = []
    for candidates in by_configuration.values():
        completed = [run for run in candidates if run.status == "completed"]
        chosen.append(min(completed or candidates, key=Run.ranking))
    return chosen


# ------------------------------------------------------------------------------------------- tables
def csv_text(runs: list[Run]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        row = run.row()
        writer.writerow([csv_cell(row[key]) for key in CSV_COLUMNS])
    return buffer.getvalue()


def markdown_text(runs: list[Run]) -> str:
    def cell(value, spec):
        if value is None or value == "":
            return ""
        return format(value, spec) if spec != "s" else markdown_escape(value)

    header = [name for name, _ in MARKDOWN_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for run in runs:
        row = run.row()
        lines.append("| " + " | ".join(cell(row[name], spec) for name, spec in MARKDOWN_COLUMNS) + " |")
    completed = sum(run.status == "completed" for run in runs)
    diverged = sum(run.status == "diverged" for run in runs)
    lines.append("")
    lines.append(f"{len(runs)} runs: {completed} completed, {diverged} diverged.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ figures
def _pyplot():
    """matplotlib.pyplot, its headless backend chosen by plotting (imported here, not at import time:
    reproduction_report imports this module for its reading and escaping alone)."""
    import plotting  # noqa: F401  (selects the headless backend)
    import matplotlib.pyplot as plt

    return plt


def draw_profile(axes, layers, fit, label="train", color="tab:blue"):
    """plotting.draw_profile (imported when first drawn)."""
    from plotting import draw_profile as draw

    draw(axes, layers, fit, label=label, color=color)


def png_bytes(figure, **kwargs) -> bytes:
    """The figure as PNG bytes (then written atomically with the other outputs), and closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **kwargs)
    _pyplot().close(figure)
    return buffer.getvalue()


def curve_label(run: Run, panel_runs: list[Run]) -> str:
    """lr, plus whatever else differs between the runs of one panel."""
    parts = [f"lr={run.row()['lr']:g}"]
    for key, short in (("width", "w"), ("epochs", "e"), ("seed", "s"), ("variant", "")):
        value = run.row()[key]
        if value not in (None, "") and len({str(other.row()[key]) for other in panel_runs}) > 1:
            parts.append(f"{short}={figure_text(value)}" if short else figure_text(value))
    return ", ".join(parts)


# The fig1 protocol besides data, model, width, optimizer and depth (the grid's own axes): the keys of
# conf/config.yaml it runs at (a key a record lacks is taken at this default: older files did not record
# it). The lr is the paper's per panel (fig1_lr_table), or with --best-lr the one training chose; a panel
# of several runs (seeds, or a researcher's lrs under --best-lr) draws each as a curve with its label.
FIG1_PROTOCOL = (("training.name", "standard"), ("epochs", 600), ("measure", "within_variance"),
                 ("analysis.bn_mode", "train_batches"), ("analysis.bn_batch_size", 100),
                 ("schedule.milestone_fractions", [1 / 3, 2 / 3]), ("schedule.gamma", 0.1))


def _same(value, expected) -> bool:
    """Equal, numbers (and lists of them) to 1e-9 relative."""
    if isinstance(expected, list):
        return (isinstance(value, list) and len(value) == len(expected)
                and all(_same(item, other) for item, other in zip(value, expected)))
    if _is_number(expected) and _is_number(value):
        return math.isclose(value, expected, rel_tol=1e-9)
    return value == expected


def _dotted(run: Run, dotted: str, default=None):
    node = run._select(dotted)
    return default if node is None else node


def fig1_protocol_problem(run: Run) -> str | None:
    """The first fig1-protocol key at which `run` differs ("training=frozen", "epochs=1"), or None."""
    for dotted, expected in FIG1_PROTOCOL:
        value = _dotted(run, dotted, expected)
        if not _same(value, expected):
            return f"{dotted.removesuffix('.name')}={figure_text(value if not isinstance(value, list) else json.dumps(value), 40)}"
    return None


def fig1_lr_table() -> dict[tuple[str, int], float]:
    """(optimizer, depth) -> the paper's lr for that fig1 panel, as conf/experiment/fig1.yaml holds it."""
    from omegaconf import OmegaConf

    table = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / "fig1.yaml").lookup.lr)
    return {(optimizer, int(depth.removeprefix("L"))): float(lr)
            for optimizer, by_depth in table.items() for depth, lr in by_depth.items()}


@dataclass
class LeftOut:
    """A run of a fig1 panel's data, model, width, optimizer and depth that the panel leaves out."""
    panel: tuple[str, int]
    name: str                    # printable
    reason: str                  # the first protocol key at which it differs, or its lr against fig1's

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def fig1_sorting(runs: list[Run], data: str, model: str, width: int,
                 paper_lr: bool = True) -> tuple[dict, list[LeftOut]]:
    """((optimizer, depth) -> the runs of that fig1 panel, [the runs of a panel's data/model/width/
    optimizer/depth left out for another protocol]). With `paper_lr` a panel keeps only runs at fig1's
    lr for it (conf/experiment/fig1.yaml); without (--best-lr: one lr per configuration is already
    chosen by training) any lr."""
    lrs = fig1_lr_table() if paper_lr else {}
    panels = {(o, d): [] for o in FIG1_OPTIMIZERS for d in FIG1_DEPTHS}
    left_out = []
    for run in runs:
        row = run.row()
        panel = (row["optimizer"], row["depth"])
        if not (run.drawable and row["data"] == data and row["model"] == model and row["width"] == width
                and panel in panels):
            continue
        problem = fig1_protocol_problem(run)
        if problem is None and panel in lrs and not _same(row["lr"], lrs[panel]):
            problem = f"lr={row['lr']:g}, fig1's is {lrs[panel]:g}"
        if problem is not None:
            left_out.append(LeftOut(panel, printable(run.name), problem))
        else:
            panels[panel].append(run)
    return panels, left_out


def fig1_selection(runs: list[Run], data: str, model: str, width: int,
                   paper_lr: bool = True) -> tuple[dict | None, list[str]]:
    """fig1_sorting's panels, or None when no run fits any panel, and its left-out runs as 'name (why)'."""
    panels, left_out = fig1_sorting(runs, data, model, width, paper_lr)
    return (panels if any(panels.values()) else None), [str(item) for item in left_out]


def by_reason(left_out: list[LeftOut]) -> dict[str, list[str]]:
    """reason -> the names of the left-out runs with that reason, in the order the reasons come."""
    grouped = defaultdict(list)
    for item in left_out:
        grouped[item.reason].append(item.name)
    return dict(grouped)


def left_out_text(what: str, left_out: list[LeftOut], width: int = 100) -> str:
    """A readable list of left-out runs: a heading line, then one item per reason (the run's name when one
    run has it, else how many and their names), wrapped at `width` columns between names."""
    runs = "run" if len(left_out) == 1 else "runs"
    lines = [f"{what}: left out {len(left_out)} {runs} of other protocols:"]
    for reason, names in by_reason(left_out).items():
        item = (f"  - {reason}: {names[0]}" if len(names) == 1
                else f"  - {reason} ({len(names)} runs): {', '.join(names)}")
        lines += textwrap.wrap(item, width, subsequent_indent="      ", break_long_words=False,
                               break_on_hyphens=False)
    return "\n".join(lines)


def no_run_note(left_out: list[LeftOut], most: int = 3) -> str:
    """The text of a panel without a run: 'no run' and, when runs of its shape were left out, why
    (one line per reason, at most `most` reasons)."""
    grouped = by_reason(left_out)
    if not grouped:
        return "no run"
    lines = [f"{reason}: {len(names)} {'run' if len(names) == 1 else 'runs'}" for reason, names in grouped.items()]
    if len(lines) > most:
        lines = lines[:most - 1] + [f"and {len(lines) - most + 1} more reasons (listed on stdout)"]
    return "no run of the fig1 protocol\nleft out:\n" + "\n".join(lines)


def fig1_grid_png(runs: list[Run], data: str, model: str, width: int, paper_lr: bool = True) -> bytes | None:
    """Rows optimizers, columns depths, of the runs of the fig1 protocol (at the paper's lr per panel,
    or at any lr when not `paper_lr`); None when no run fits any panel. The runs of a panel's shape
    left out for another protocol are listed on stdout (left_out_text), and a panel without a run says
    why its runs were left out (no_run_note)."""
    from matplotlib.ticker import MaxNLocator
    from plotting import axes_width, set_suptitle, set_title, wrap_text

    panels, left_out = fig1_sorting(runs, data, model, width, paper_lr)
    if not any(panels.values()):
        return None
    if left_out:
        print(left_out_text("fig1 grid", left_out))
    plt = _pyplot()
    figure, grid = plt.subplots(len(FIG1_OPTIMIZERS), len(FIG1_DEPTHS), figsize=(12, 10), squeeze=False)
    colors = plt.get_cmap("tab10")
    for (row, optimizer) in enumerate(FIG1_OPTIMIZERS):
        for (column, depth) in enumerate(FIG1_DEPTHS):
            axes, panel_runs = grid[row][column], panels[(optimizer, depth)]
            title = f"{optimizer}, depth {depth}"
            if not panel_runs:
                note = no_run_note([item for item in left_out if item.panel == (optimizer, depth)])
                axes.text(0.5, 0.5, wrap_text(note, 0.9 * axes_width(axes), 8), ha="center", va="center",
                          fontsize=8, transform=axes.transAxes)
                axes.set_xticks([])
                axes.set_yticks([])
            else:
                axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            for index, run in enumerate(sorted(panel_runs, key=sort_key)):
                draw_profile(axes, run.plot_layers, run.plot_fit, label=curve_label(run, panel_runs),
                             color=colors(index % 10))
            if len(panel_runs) == 1 and panel_runs[0].fit:
                fit = panel_runs[0].fit
                title += f"\nlr {panel_runs[0].row()['lr']:g}: r = {fit['pearson_r']:.4f}, rho = {fit['rho']:.3f}"
            elif panel_runs:
                axes.legend(fontsize=7)
            set_title(axes, title, 9)
            axes.set_xlabel("layer l")
            axes.set_ylabel("ln D")
            axes.grid(alpha=0.3)
    lr_rule = "the paper's lr per optimizer and depth" if paper_lr else "the lr of lowest final training loss"
    set_suptitle(figure, f"{figure_text(model)} on {figure_text(data)}, width {width}: ln D_l against l "
                 f"(standard training, 600 epochs, {lr_rule}, BatchNorm in train mode)", 11)
    figure.tight_layout()
    return png_bytes(figure, dpi=110)


# Config keys that are the depth (or derived from it), or do not change a run's profile: not part of
# a depth family's protocol.
DEPTH_KEYS = ("layer_num", "block_num", "model.depth", "model.tag", "model.params.layer_num",
              "model.params.block_num", "run_name")
NOT_PROTOCOL = ("analysis.test_subset_size", "analysis.every_n_epochs", "analysis.eval_batch_size", "seed",
                "data.name", "model.name", "hidden_size", "optimization.name", "epochs")


def _flat(node, prefix: str = "") -> dict:
    """A config as dotted key -> JSON text of its value (lists as one value)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: json.dumps(node, sort_keys=True, default=str)}
    flat = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def depth_protocol(run: Run) -> tuple:
    """What a run of a depth family shares with the family's other runs beyond the panel title's fields
    (data, model, variant, width, optimizer, epochs, seed): every config key but the depth's, the lr's,
    where it ran, and measurement keys that do not change the profile; sorted (key, value) pairs."""
    flat = _flat({key: value for key, value in run.config.items() if key not in NOT_CONFIGURATION})
    return tuple(sorted((key, value) for key, value in flat.items()
                        if not any(key == k or key.startswith(k + ".") for k in DEPTH_KEYS + NOT_PROTOCOL)))


def depth_families(runs: list[Run]) -> list[tuple[str, list]]:
    """[(data, [(family, runs by depth)])]: per family run at >= 2 depths, the best run per depth. A
    family is one protocol (depth_protocol: runs that differ in training scheme, epochs, BatchNorm
    mode, measure, schedule... are never one panel); family is (data, model, variant, width, optimizer,
    epochs, seed, protocol text), the protocol text naming the keys at which the families of one data
    and the same titled fields differ (empty when the titled fields tell a panel apart)."""
    families = defaultdict(list)
    for run in runs:
        if run.drawable:
            row = run.row()
            families[tuple(str(row[k]) for k in ("data", "model", "variant", "width", "optimizer",
                                                 "epochs", "seed")) + (depth_protocol(run),)].append(run)
    by_data = defaultdict(list)
    for family, members in sorted(families.items()):
        best_per_depth = {}
        for run in members:
            if run.depth not in best_per_depth or run.ranking() < best_per_depth[run.depth].ranking():
                best_per_depth[run.depth] = run
        if len(best_per_depth) >= 2:
            by_data[family[0]].append((family, [best_per_depth[d] for d in sorted(best_per_depth)]))
    result = []
    for data, panels in sorted(by_data.items()):
        titled = defaultdict(list)    # panels whose titles would read alike: their protocols tell them apart
        for family, _ in panels:
            titled[family[:-1]].append(dict(family[-1]))
        differing = {}
        for title, protocols in titled.items():
            keys = sorted({key for protocol in protocols for key in protocol})
            differing[title] = [key for key in keys if len({protocol.get(key) for protocol in protocols}) > 1]
        result.append((data, [(family[:-1] + (", ".join(f"{key}={dict(family[-1]).get(key, 'unset')}"
                                                          for key in differing[family[:-1]]),), members)
                              for family, members in panels]))
    return result


def depth_figure_name(data: str, suffix: str) -> str | None:
    """depth_<data><suffix>.png, or None (with one warning line) when the data name, a component from a
    file, or the whole name is not a safe file name."""
    try:
        return safe_name(f"depth_{safe_name(data)}{suffix}.png")
    except UnsafeOutput as error:
        warn(f"warning: not drawing the depth figure of data {json.dumps(data)[:80]}: {error}")
        return None


def depth_figure_png(data: str, panels: list) -> bytes:
    """One panel per family (one protocol), overlaying a profile per depth."""
    from matplotlib.ticker import MaxNLocator
    from plotting import sequence_color, set_title

    plt = _pyplot()
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False)
    for index, ((_, model, variant, width, optimizer, epochs, seed, protocol), members) in enumerate(panels):
        axes = grid[index // columns][index % columns]
        for position, run in enumerate(members):
            draw_profile(axes, run.plot_layers, run.plot_fit, color=sequence_color(position, len(members)),
                         label=f"depth {run.depth} (lr {run.row()['lr']:g})")
        details = ", ".join(figure_text(part) for part in (variant, f"w {width}", optimizer, f"{epochs} epochs",
                                                           f"seed {seed}") if part)
        if protocol:
            details += ", " + figure_text(protocol, 200)
        set_title(axes, f"{figure_text(model)} on {figure_text(data)}: {details}", 9)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("layer l")
        axes.set_ylabel("ln D")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    for index in range(len(panels), rows * columns):
        grid[index // columns][index % columns].axis("off")
    figure.tight_layout()
    return png_bytes(figure, dpi=110)


def save_depth_figures(runs: list[Run], out: Path, suffix: str) -> list[Path]:
    """depth_<data>.png: per family run at >= 2 depths, one panel overlaying a profile per depth."""
    figures = {name: depth_figure_png(data, panels) for data, panels in depth_families(runs)
               if (name := depth_figure_name(data, suffix)) is not None}
    return write_outputs(out, figures)


# --------------------------------------------------------------------------------------------- main
def summarize(paths: list[Path], out: Path, best_lr: bool = False, fig1_data: str = "cfm",
              fig1_model: str = "GFNN", fig1_width: int = 100) -> tuple[list[Run], list[Path]]:
    """Load the runs under `paths`, write the tables and figures into `out`; returns the runs tabled
    and the files written. Every output name is checked (output_path) before anything is drawn and
    every file rendered before any is written: UnsafeOutput, or an error while drawing, leaves the
    previous outputs as they were."""
    runs = load_runs(paths)
    if best_lr:
        runs = best_lr_runs(runs)
    runs.sort(key=sort_key)
    suffix = "_best_lr" if best_lr else ""
    output_folder(out)
    plan = {f"runs{suffix}.csv": csv_text(runs), f"runs{suffix}.md": markdown_text(runs)}
    fig1_runs, fig1_left_out = fig1_sorting(runs, fig1_data, fig1_model, fig1_width, not best_lr)
    if any(fig1_runs.values()):
        plan[f"fig1_grid{suffix}.png"] = lambda: fig1_grid_png(runs, fig1_data, fig1_model, fig1_width,
                                                               not best_lr)
    elif fig1_left_out:
        print(left_out_text("fig1 grid not drawn (no run of the fig1 protocol)", fig1_left_out))
    for data, panels in depth_families(runs):
        if (name := depth_figure_name(data, suffix)) is not None:
            plan[name] = lambda data=data, panels=panels: depth_figure_png(data, panels)
    for name in plan:                    # refuse before drawing anything
        output_path(out, name)
    contents = {name: item() if callable(item) else item for name, item in plan.items()}
    return runs, write_outputs(out, contents)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one `error:` line on stderr (exit status 2), not usage + error."""

    def error(self, message):
        self.exit(2, f"error: {printable(message)} (see --help)\n")


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, results.json files or folders")
    parser.add_argument("--out", type=Path, default=Path("summaries"), help="output folder (summaries/)")
    parser.add_argument("--best-lr", action="store_true",
                        help="per configuration keep the run with the lowest final train loss")
    parser.add_argument("--fig1-data", default="cfm", metavar="DATA",
                        help="the data set (data.name) of the runs fig1_grid.png draws (default: cfm)")
    parser.add_argument("--fig1-model", default="GFNN", metavar="MODEL",
                        help="the model (model.name) of the runs fig1_grid.png draws (default: GFNN)")
    parser.add_argument("--fig1-width", type=int, default=100, metavar="WIDTH",
                        help="the width (hidden_size) of the runs fig1_grid.png draws (default: 100)")
    args = parser.parse_args(argv)
    for path in args.paths:
        if not os.path.lexists(path):
            parser.exit(2, f"error: {printable(path)}: no such file or folder (see --help)\n")
    try:
        runs, written = summarize(args.paths, args.out, args.best_lr, args.fig1_data, args.fig1_model,
                                  args.fig1_width)
    except (UnsafeOutput, OSError) as error:
        where = "" if isinstance(error, UnsafeOutput) else f"{args.out}: "
        print(f"error: {printable(where)}{printable(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    diverged = sum(run.status == "diverged" for run in runs)
    print(f"{len(runs)} runs in the table ({diverged} diverged); wrote:")
    for path in written:
        print(f"  {printable(path)}")


if __name__ == "__main__":
    main()
