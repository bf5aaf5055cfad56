"""Figures of separation profiles (ln D_l against the point index l, with the fitted line(s)) and of
training curves (loss and accuracies against the epoch).

Matplotlib runs headless (Agg); figures are written atomically.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from atomic_io import atomic_write  # noqa: E402

SAVE_DPI = 120      # run figures are laid out and written at this resolution (one text layout for both)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
SEQUENCE_END = 0.85   # ordered colours (epochs, depths) stop at viridis(0.85): its pale yellow end is unreadable on white
WRAP_MARGIN = 0.97    # a wrapped line takes at most this share of its width (the measure is the font's own)


def text_width(text: str, fontsize: float) -> float:
    """The width in inches of one line of `text` at `fontsize` points, measured with matplotlib's font."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    return text_to_path.get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)[0] / 72


def _wrap_line(line: str, width_inches: float, fontsize: float) -> list[str]:
    """`line` broken greedily at spaces, after hyphens and, for a piece wider than the width alone,
    between characters, into lines that each fit `width_inches`; an escaped dollar (\\$) stays whole."""
    fits = lambda text: text_width(text, fontsize) <= WRAP_MARGIN * width_inches  # noqa: E731
    pieces = [piece for word in re.split(r"(\s+)", line) for piece in re.findall(r"[^-]*-|[^-]+", word)]
    lines, current = [], ""
    for piece in pieces:
        if fits(current + piece):
            current += piece
            continue
        if current.strip():
            lines.append(current.rstrip())
        current = piece.lstrip()
        while current and not fits(current):          # one piece wider than the line: cut it
            cut = max(1, next((n for n in range(len(current), 0, -1) if fits(current[:n])), 1))
            cut -= current[cut - 1] == "\\" and cut > 1 and current[cut:cut + 1] == "$"
            lines.append(current[:cut])
            current = current[cut:]
    return lines + [current.rstrip()] if current.strip() or not lines else lines


def wrap_text(text: str, width_inches: float, fontsize: float) -> str:
    """`text` with every line wrapped to `width_inches` at `fontsize` points (_wrap_line)."""
    return "\n".join("\n".join(_wrap_line(line, width_inches, fontsize)) if line.strip() else line
                     for line in text.split("\n"))


def axes_width(axes) -> float:
    """The width of `axes` in inches (before tight_layout, which only widens it)."""
    return axes.get_position().width * axes.figure.get_figwidth()


def set_title(axes, title: str, fontsize: float) -> None:
    """An axes title wrapped to the axes' width."""
    axes.set_title(wrap_text(title, axes_width(axes), fontsize), fontsize=fontsize)


def set_suptitle(figure, title: str, fontsize: float) -> None:
    """A figure title wrapped to the figure's width (less a margin)."""
    figure.suptitle(wrap_text(title, 0.94 * figure.get_figwidth(), fontsize), fontsize=fontsize)


def sequence_color(position: int, count: int):
    """The colour of item `position` of `count` ordered items (epochs, depths): viridis, dark to green-yellow."""
    return plt.get_cmap("viridis")(SEQUENCE_END * position / max(count - 1, 1))


def log_axis_labels(axes, powers: bool = False) -> None:
    """A log y axis holding fewer than two powers of ten gets labelled ticks at 1, 2 and 5 times each
    power, written as plain numbers (0.5, 2, 30), so that it never shows one lone label or 3x10^1; with
    `powers`, a wider one gets its powers of ten as power_label writes them (matplotlib's look, without
    mathtext); else it keeps matplotlib's own labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = axes.get_ylim()
    if low > 0 and math.floor(math.log10(high)) - math.ceil(math.log10(low)) < 1:
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    elif powers:
        axes.yaxis.set_major_formatter(FuncFormatter(power_label))
        axes.yaxis.set_minor_formatter(NullFormatter())


SUPERSCRIPTS = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def power_label(value: float, _position=None) -> str:
    """A log axis tick label without mathtext (whose parser costs 0.12 s at a process's first use): 10
    with a Unicode superscript exponent at a power of ten (10\u207b\u00b2), else the plain number."""
    exponent = round(math.log10(value)) if value > 0 else None
    if exponent is not None and math.isclose(value, 10.0 ** exponent, rel_tol=1e-9):
        return "1" if exponent == 0 else "10" + str(exponent).translate(SUPERSCRIPTS)
    return f"{value:g}"


def split_label(split: str, samples: int) -> str:
    """A profile's label in figures: the split it was measured on and how many samples."""
    return f"{split}, {samples} samples"


def fit_label(label: str, fit: dict | None) -> str:
    """A profile's legend entry: its label and, when fitted, its Pearson r and rho."""
    return f"{label}: r = {fit['pearson_r']:.4f}, rho = {fit['rho']:.3f}" if fit else label


def draw_profile(axes, layers: list[dict], fit: dict | None, label: str = "train",
                 color: str = "tab:blue", value_key: str = "value") -> None:
    """Points ln(value) against index and, when `fit` is given, its line(s) (fit['segments'] if any)."""
    points = [(r["index"], math.log(r[value_key])) for r in layers
              if isinstance(r[value_key], float) and math.isfinite(r[value_key]) and r[value_key] > 0]
    if points:
        axes.plot(*zip(*points), "o", color=color, label=label)
    for segment in (fit or {}).get("segments") or ([fit] if fit else []):
        first, last = segment.get("first_index", 0), segment.get("last_index", len(layers) - 1)
        xs = [first, last]
        axes.plot(xs, [segment["intercept"] + segment["slope"] * x for x in xs], "-", color=color,
                  alpha=0.8)


def _layout(figure, all_axes):
    """Grid every axes and lay the figure out; returns the figure."""
    for axes in all_axes:
        axes.grid(alpha=0.3)
    figure.tight_layout()
    # tight_layout leaves a placeholder layout engine, for which every savefig draws the whole figure once
    # more before drawing it; without it the same bytes come out of one draw
    figure.set_layout_engine(None)
    return figure


def _save(figure, paths: list[Path]) -> None:
    """Write the figure to every path atomically and free it: drawn once per format, the same bytes to
    each path of that format."""
    rendered: dict[str, bytes] = {}
    for path in paths:
        suffix = Path(path).suffix.lstrip(".") or "png"
        if suffix not in rendered:
            buffer = io.BytesIO()
            figure.savefig(buffer, format=suffix, dpi=SAVE_DPI)
            rendered[suffix] = buffer.getvalue()
        atomic_write(path, lambda temporary, content=rendered[suffix]: temporary.write_bytes(content))
    plt.close(figure)


def save_profile_figure(profiles: list[tuple[str, list[dict], dict | None]], title: str,
                        paths: list[Path], ylabel: str = "ln D") -> None:
    """figure_profile written to every path."""
    _save(figure_profile(profiles, title, ylabel), paths)


def figure_profile(profiles: list[tuple[str, list[dict], dict | None]], title: str, ylabel: str = "ln D"):
    """One panel with each (label, layers, fit) profile and its fit line(s); the legend names each
    profile's split (label) with its Pearson r and rho; the title is wrapped to fit."""
    figure, axes = plt.subplots(figsize=(5.0, 3.8), dpi=SAVE_DPI)
    for (label, layers, fit), color in zip(profiles, COLORS):
        draw_profile(axes, layers, fit, label=fit_label(label, fit), color=color)
    set_title(axes, title, 8)
    axes.set_xlabel("layer l")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=7)
    return _layout(figure, [axes])


def save_dynamics_figure(dynamics: dict, title: str, path: Path, ylabel: str = "ln D") -> None:
    """figure_dynamics written to `path`."""
    _save(figure_dynamics(dynamics, title, ylabel), [path])


def figure_dynamics(dynamics: dict, title: str, ylabel: str = "ln D"):
    """Left: ln value_l against l at each recorded epoch (colour by epoch). Right: Pearson r and rho of
    the per-epoch fits against the epoch."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.8), dpi=SAVE_DPI)
    epochs = dynamics["epochs"]
    for position, (epoch, values) in enumerate(zip(epochs, dynamics["values"])):
        color = sequence_color(position, len(epochs))
        points = [(i, math.log(v)) for i, v in enumerate(values)
                  if isinstance(v, float) and math.isfinite(v) and v > 0]
        if points:
            left.plot(*zip(*points), "o-", color=color, markersize=3, linewidth=1, label=f"epoch {epoch}")
    left.set_xlabel("layer l")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel(ylabel)
    left.legend(fontsize=6, ncol=2)
    fits = dynamics["fits"]
    known = [(e, f) for e, f in zip(epochs, fits) if f]
    right.plot([e for e, _ in known], [f["pearson_r"] for _, f in known], "o-", label="Pearson r")
    right.plot([e for e, _ in known], [f["rho"] for _, f in known], "s-", label="rho")
    right.set_xlabel("epoch")
    right.set_ylabel("fit of ln D_l against l")
    right.legend(fontsize=8)
    set_suptitle(figure, title, 8)
    return _layout(figure, [left, right])


def save_training_figure(history: dict, title: str, path: Path, final: dict | None = None) -> None:
    """figure_training written to `path`."""
    _save(figure_training(history, title, final), [path])


def figure_training(history: dict, title: str, final: dict | None = None):
    """Top: mean train loss per epoch (log y axis). Bottom: train and test accuracy at the epochs they
    were measured (history["accuracy_epoch"]), sharing the epoch axis; without such epochs, `final`
    ({"train": accuracy, "test": accuracy}, at the last epoch) as two points and a note on how to get
    curves. `history` is results.json's."""
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(5.0, 5.0), dpi=SAVE_DPI)
    losses = [(e, v) for e, v in zip(history["epoch"], history["train_loss"])
              if isinstance(v, float) and math.isfinite(v) and v > 0]
    if losses:
        top.plot(*zip(*losses), "-", color=COLORS[0], linewidth=1)
    top.set_yscale("log")
    log_axis_labels(top, powers=True)
    top.set_ylabel("train loss")
    accuracy_epochs = history.get("accuracy_epoch") or []
    if accuracy_epochs:
        bottom.plot(accuracy_epochs, history["train_accuracy"], "o-", color=COLORS[0], markersize=3,
                    linewidth=1, label="train")
        bottom.plot(accuracy_epochs, history["test_accuracy"], "s-", color=COLORS[1], markersize=3,
                    linewidth=1, label="test")
        bottom.legend(fontsize=8)
    elif final and history["epoch"]:
        last = history["epoch"][-1]
        for key, marker, color in (("train", "o", COLORS[0]), ("test", "s", COLORS[1])):
            bottom.plot([last], [final[key]], marker, color=color, label=f"{key} at the end: {final[key]:.4f}")
        bottom.set_ylim(0, 1.05)
        bottom.text(0.02, 0.06, wrap_text("no accuracy curve: curves_every_n_epochs=N draws one", 3.6, 7),
                    transform=bottom.transAxes, fontsize=7, color="0.35")
        bottom.legend(fontsize=8, loc="center left")
    else:
        bottom.text(0.5, 0.5, "no accuracy measured", ha="center", va="center", transform=bottom.transAxes,
                    fontsize=8, color="0.35")
    bottom.set_ylabel("accuracy")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    set_title(top, title, 8)
    return _layout(figure, [top, bottom])
