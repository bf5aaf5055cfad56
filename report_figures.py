"""The report's figures, drawn from the tables' rows alone: per group every seed's profile at each
setting's chosen lr (<group>.png), the heat map of the law over the lr grid (<group>-grid.png) and the
failing settings' profiles with their two-segment fits (misses.png). Each PNG carries the digest of the
data it draws (png_description), so a test can tell a stale figure.

It draws; the rules it marks come from verdicts.py, and it reads no file.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import statistics
import struct
import zlib
from pathlib import Path

from campaign import SEEDS, Group
from report_tables import profile_of
from safe_output import figure_text, write_outputs
from verdicts import R_NOISE, R_THRESHOLD, _median, failing_cells, LrCell, Setting, settings_of


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
