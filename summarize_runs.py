"""Summarize finished runs into runs.csv, runs.md and the paper's composite figures (fig1_grid.png,
depth_<data>.png).

    python summarize_runs.py logs/ --out summaries/             # every results.json under logs/
    python summarize_runs.py logs/ --out summaries/ --best-lr   # per configuration, its best lr only

Arguments are run directories, results.json files or folders searched for results.json; runs are read
by run_records (untrusted files: bounded, checked, skipped with one warning line), written through
safe_output (checked names, atomic, escaped), and --best-lr picks by the training rule of verdicts.py
(training_rank), the rule the reproduction report uses.
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)

import argparse
import csv
import io
import json
import math
import os
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from config_utils import CONF_DIR
from run_records import NOT_CONFIGURATION, _is_number, load_runs, printable, Run, warn
from safe_output import (csv_cell, figure_text, markdown_escape, OneLineParser, output_folder, output_path,
                         safe_name, UnsafeOutput, write_outputs)

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


def sort_key(run: Run) -> tuple:
    """Table order: data, model, variant, optimizer, then width, epochs, seed, depth, lr."""
    row = run.row()
    return (tuple(str(row[key] or "") for key in ("data", "model", "variant", "optimizer"))
            + tuple(-1 if row[key] is None else row[key]
                    for key in ("width", "epochs", "seed", "depth", "lr")))


def best_lr_runs(runs: list[Run]) -> list[Run]:
    """Per configuration, the run the report's lr rule by training picks (verdicts.training_rank: the
    lowest final train loss, then the higher test accuracy, then the smaller lr), among the completed
    runs if any completed, else among the diverged ones."""
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
