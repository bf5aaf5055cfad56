"""Summarize finished runs into runs.csv, runs.md and the paper's composite figures (fig1_grid.png,
depth_<data>.png); the reproduction report is reproduction_report.py's (it reads runs through this).

    python summarize_runs.py logs/ --out summaries/             # every results.json under logs/
    python summarize_runs.py logs/ --out summaries/ --best-lr   # per configuration, its best lr only

Arguments are run directories, results.json files or folders searched for results.json; reanalyses are
not runs, and a results.json with fields of the wrong types is skipped with a one-line warning.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from atomic_io import atomic_savefig, atomic_write
from config_utils import EXECUTION_KEYS, LOOKUP_KEY
from plotting import draw_profile  # also selects matplotlib's headless backend

import matplotlib.pyplot as plt  # noqa: E402  (after plotting chose the backend)

# Keys of a run's config that are not part of its configuration in the --best-lr sense: where it ran,
# its lr, and `lookup` (tables presets interpolate from, e.g. fig1's lr; the run's lr is in `lr`).
NOT_CONFIGURATION = (*EXECUTION_KEYS, "lr", LOOKUP_KEY)
FIG1_OPTIMIZERS = ("sgd", "momentum", "adam")
FIG1_DEPTHS = (2, 6, 18)
CSV_COLUMNS = ("run", "data", "model", "variant", "depth", "width", "optimizer", "lr", "epochs", "seed",
               "pearson_r", "rho", "D_first", "D_last", "train_accuracy", "test_accuracy",
               "final_train_loss", "status", "wall_seconds", "path")
MARKDOWN_COLUMNS = (("data", "s"), ("model", "s"), ("variant", "s"), ("depth", "d"), ("width", "d"),
                    ("optimizer", "s"), ("lr", "g"), ("epochs", "d"), ("seed", "d"),
                    ("pearson_r", ".4f"), ("rho", ".4f"), ("D_first", ".4g"), ("D_last", ".4g"),
                    ("train_accuracy", ".4f"), ("test_accuracy", ".4f"),
                    ("final_train_loss", ".4g"), ("status", "s"), ("wall_seconds", ".1f"))


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
    def fit(self) -> dict | None:
        return self.results.get("fit")

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


def find_results(paths: list[Path]) -> list[Path]:
    """results.json files of runs named directly, in run directories, or anywhere under folders
    (reanalyses excluded)."""
    found = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob("results.json"))
        else:
            print(f"warning: {path} does not exist", file=sys.stderr)
    unique = {}
    for path in found:
        if not is_reanalysis(path):
            unique.setdefault(path.resolve(), path)
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


def _type_problem(where: str, value, expected: str) -> str | None:
    """A one-line description when `value` is not of the `expected` kind (None is always allowed)."""
    checks = {"dict": lambda v: isinstance(v, dict), "list": lambda v: isinstance(v, list),
              "str": lambda v: isinstance(v, str), "number": _is_number,
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)}
    if value is None or checks[expected](value):
        return None
    return f"{where} is {type(value).__name__} {json.dumps(value)[:40]}, expected a {expected}"


RESULT_FIELDS = {"config": "dict", "status": "str", "run_name": "str", "layers": "list", "fit": "dict",
                 "final_train_loss": "number", "train_accuracy": "number", "test_accuracy": "number",
                 "wall_seconds": "number"}
CONFIG_FIELDS = {"data": "dict", "model": "dict", "optimization": "dict", "training": "dict",
                 "analysis": "dict", "lr": "number", "hidden_size": "integer", "epochs": "integer",
                 "seed": "integer", "layer_num": "integer", "block_num": "integer", "measure": "str"}
FIT_FIELDS = {"slope": "number", "intercept": "number", "rho": "number", "pearson_r": "number",
              "r2": "number", "segments": "list"}
LAYER_FIELDS = {"index": "integer", "D": "number", "value": "number"}


def results_problem(results) -> str | None:
    """Why a loaded results.json cannot be tabled (a field of the wrong type), or None."""
    if not isinstance(results, dict):
        return f"it holds a {type(results).__name__}, expected an object"
    for fields, node, prefix in ((RESULT_FIELDS, results, ""), (CONFIG_FIELDS, results.get("config"), "config."),
                                 (FIT_FIELDS, results.get("fit"), "fit.")):
        for key, expected in fields.items():
            if isinstance(node, dict) and (problem := _type_problem(f"{prefix}{key}", node.get(key), expected)):
                return problem
    for name in ("data", "model", "optimization"):
        section = (results.get("config") or {}).get(name)
        if isinstance(section, dict) and (problem := _type_problem(f"config.{name}.name", section.get("name"), "str")):
            return problem
    model = (results.get("config") or {}).get("model")
    if isinstance(model, dict) and (problem := _type_problem("config.model.depth", model.get("depth"), "integer")):
        return problem
    for position, layer in enumerate(results.get("layers") or []):
        if not isinstance(layer, dict):
            return f"layers[{position}] is {type(layer).__name__}, expected an object"
        if "index" not in layer and results.get("status") == "completed":
            return f"layers[{position}] has no index"
        for key, expected in LAYER_FIELDS.items():
            if problem := _type_problem(f"layers[{position}].{key}", layer.get(key), expected):
                return problem
    for position, segment in enumerate((results.get("fit") or {}).get("segments") or []):
        if not isinstance(segment, dict):
            return f"fit.segments[{position}] is {type(segment).__name__}, expected an object"
    return None


def load_runs(paths: list[Path]) -> list[Run]:
    """The runs of the results.json files under `paths`; unreadable or ill-typed files are skipped
    with a one-line warning each."""
    runs = []
    for path in find_results(paths):
        try:
            results = restore_non_finite(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            print(f"warning: skipping {path}: {error}", file=sys.stderr)
            continue
        if isinstance(results, dict) and {"source", "overrides"} <= results.keys() and "status" not in results:
            continue  # a reanalysis (reanalyze.py) moved out of its run directory: not a run
        if (problem := results_problem(results)) is not None:
            print(f"warning: skipping {path}: {problem}", file=sys.stderr)
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
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run in runs:
        writer.writerow({key: "" if value is None else value for key, value in run.row().items()})
    return buffer.getvalue()


def markdown_text(runs: list[Run]) -> str:
    def cell(value, spec):
        if value is None or value == "":
            return ""
        return format(value, spec) if spec != "s" else str(value)

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
def curve_label(run: Run, panel_runs: list[Run]) -> str:
    """lr, plus whatever else differs between the runs of one panel."""
    parts = [f"lr={run.row()['lr']:g}"]
    for key, short in (("width", "w"), ("epochs", "e"), ("seed", "s"), ("variant", "")):
        value = run.row()[key]
        if value not in (None, "") and len({str(other.row()[key]) for other in panel_runs}) > 1:
            parts.append(f"{short}={value}" if short else str(value))
    return ", ".join(parts)


def save_fig1_grid(runs: list[Run], path: Path, data: str, model: str, width: int) -> Path | None:
    """Rows optimizers, columns depths; None (nothing written) when no run fits any panel."""
    def fits(run, optimizer, depth):
        row = run.row()
        return (run.drawable and row["data"] == data and row["model"] == model and row["width"] == width
                and row["optimizer"] == optimizer and row["depth"] == depth
                and run.config.get("measure", "within_variance") == "within_variance")

    panels = {(o, d): [r for r in runs if fits(r, o, d)] for o in FIG1_OPTIMIZERS for d in FIG1_DEPTHS}
    if not any(panels.values()):
        return None
    figure, grid = plt.subplots(len(FIG1_OPTIMIZERS), len(FIG1_DEPTHS), figsize=(12, 10), squeeze=False)
    colors = plt.get_cmap("tab10")
    for (row, optimizer) in enumerate(FIG1_OPTIMIZERS):
        for (column, depth) in enumerate(FIG1_DEPTHS):
            axes, panel_runs = grid[row][column], panels[(optimizer, depth)]
            title = f"{optimizer}, depth {depth}"
            if not panel_runs:
                axes.text(0.5, 0.5, "no run", ha="center", va="center", transform=axes.transAxes)
                axes.set_xticks([])
                axes.set_yticks([])
            for index, run in enumerate(sorted(panel_runs, key=sort_key)):
                draw_profile(axes, run.layers, run.fit, label=curve_label(run, panel_runs),
                             color=colors(index % 10))
            if len(panel_runs) == 1 and panel_runs[0].fit:
                fit = panel_runs[0].fit
                title += f"\nlr {panel_runs[0].row()['lr']:g}: r = {fit['pearson_r']:.4f}, rho = {fit['rho']:.3f}"
            elif panel_runs:
                axes.legend(fontsize=7)
            axes.set_title(title, fontsize=9)
            axes.set_xlabel("layer l")
            axes.set_ylabel("ln D")
            axes.grid(alpha=0.3)
    figure.suptitle(f"{model} on {data}, width {width}: ln D_l against l", fontsize=11)
    figure.tight_layout()
    atomic_savefig(figure, path, dpi=110)
    plt.close(figure)
    return path


def save_depth_figures(runs: list[Run], out: Path, suffix: str) -> list[Path]:
    """depth_<data>.png: per family run at >= 2 depths, one panel overlaying a profile per depth."""
    families = defaultdict(list)
    for run in runs:
        if run.drawable:
            row = run.row()
            families[tuple(str(row[k]) for k in ("data", "model", "variant", "width", "optimizer",
                                                 "epochs", "seed"))].append(run)
    by_data = defaultdict(list)
    for family, members in sorted(families.items()):
        best_per_depth = {}
        for run in members:
            if run.depth not in best_per_depth or run.ranking() < best_per_depth[run.depth].ranking():
                best_per_depth[run.depth] = run
        if len(best_per_depth) >= 2:
            by_data[family[0]].append((family, [best_per_depth[d] for d in sorted(best_per_depth)]))
    written = []
    for data, panels in sorted(by_data.items()):
        columns = min(3, len(panels))
        rows = math.ceil(len(panels) / columns)
        figure, grid = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False)
        colormap = plt.get_cmap("viridis")
        for index, ((_, model, variant, width, optimizer, epochs, seed), members) in enumerate(panels):
            axes = grid[index // columns][index % columns]
            for position, run in enumerate(members):
                draw_profile(axes, run.layers, run.fit, color=colormap(position / max(len(members) - 1, 1)),
                             label=f"depth {run.depth} (lr {run.row()['lr']:g})")
            details = ", ".join(part for part in (variant, f"w {width}", optimizer, f"{epochs} epochs",
                                                  f"seed {seed}") if part)
            axes.set_title(f"{model} on {data}: {details}", fontsize=9)
            axes.set_xlabel("layer l")
            axes.set_ylabel("ln D")
            axes.grid(alpha=0.3)
            axes.legend(fontsize=7)
        for index in range(len(panels), rows * columns):
            grid[index // columns][index % columns].axis("off")
        figure.tight_layout()
        path = out / f"depth_{data}{suffix}.png"
        atomic_savefig(figure, path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------- main
def summarize(paths: list[Path], out: Path, best_lr: bool = False, fig1_data: str = "cfm",
              fig1_model: str = "GFNN", fig1_width: int = 100) -> tuple[list[Run], list[Path]]:
    """Load the runs under `paths`, write the tables and figures into `out`; returns the runs tabled
    and the files written."""
    runs = load_runs(paths)
    if best_lr:
        runs = best_lr_runs(runs)
    runs.sort(key=sort_key)
    suffix = "_best_lr" if best_lr else ""
    out.mkdir(parents=True, exist_ok=True)
    table_csv, table_md = csv_text(runs), markdown_text(runs)
    written = [atomic_write(out / f"runs{suffix}.csv", lambda tmp: tmp.write_text(table_csv)),
               atomic_write(out / f"runs{suffix}.md", lambda tmp: tmp.write_text(table_md))]
    grid = save_fig1_grid(runs, out / f"fig1_grid{suffix}.png", fig1_data, fig1_model, fig1_width)
    written += [grid] if grid else []
    written += save_depth_figures(runs, out, suffix)
    return runs, written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, results.json files or folders")
    parser.add_argument("--out", type=Path, default=Path("summaries"), help="output folder (summaries/)")
    parser.add_argument("--best-lr", action="store_true",
                        help="per configuration keep the run with the lowest final train loss")
    parser.add_argument("--fig1-data", default="cfm")
    parser.add_argument("--fig1-model", default="GFNN")
    parser.add_argument("--fig1-width", type=int, default=100)
    args = parser.parse_args(argv)
    runs, written = summarize(args.paths, args.out, args.best_lr, args.fig1_data, args.fig1_model,
                              args.fig1_width)
    diverged = sum(run.status == "diverged" for run in runs)
    print(f"{len(runs)} runs in the table ({diverged} diverged); wrote:")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
