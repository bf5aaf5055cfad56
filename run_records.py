"""Checked reading of run records, the one reader of untrusted results.json files for summarize_runs,
the reproduction report and experiment.py: bounded reads of regular files only (read_bytes, read_text,
read_json: stat first, a named pipe or device never opened, at most MAX_RESULTS_BYTES, UTF-8, JSON nested
at most MAX_JSON_DEPTH deep), the results.json schema (results_problem), the Run record a results.json
gives, and the search for runs under folders (load_runs: no symbolic link to a folder followed,
reanalyses are not runs). What fails is BadFile, or one `warning: skipping PATH: problem` line.

It reads; it never writes a file, draws or decides which lr or run shows the law (verdicts.py).
"""
from __future__ import annotations

import json
import math
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from config_utils import EXECUTION_KEYS, LOOKUP_KEY
from verdicts import training_rank


# Keys of a run's config that are not part of its configuration in the --best-lr sense: where it ran,
# its lr, and `lookup` (tables presets interpolate from, e.g. fig1's lr; the run's lr is in `lr`).
NOT_CONFIGURATION = (*EXECUTION_KEYS, "lr", LOOKUP_KEY)
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
        """Lower is better, by the report's lr rule by training (verdicts.training_rank)."""
        return training_rank(number(self.results.get("final_train_loss")), number(self.results.get("test_accuracy")),
                             number(self.config.get("lr")) or 0.0)

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
                 "versions": "dict", "device": "str", "commit": "str", "split": "str", "trained_in": "str"}
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
