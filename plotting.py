"""Figures of separation profiles (ln D_l against the point index l, with the fitted line(s)) and of
training curves (loss and accuracies against the epoch).

Matplotlib runs headless (Agg); figures are written atomically.
"""
from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from atomic_io import atomic_savefig  # noqa: E402

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
CHARACTER_EM = 0.66   # a conservative mean advance of DejaVu Sans letters, digits and punctuation, in em


def wrap_text(text: str, width_inches: float, fontsize: float) -> str:
    """`text` with every line wrapped (textwrap, also inside long words and after hyphens) to the
    characters that fit `width_inches` at `fontsize` points. An escaped dollar (\\$) is never split."""
    columns = max(8, int(width_inches * 72 / (fontsize * CHARACTER_EM)))
    wrapped = "\n".join(textwrap.fill(line, columns) if line.strip() else line for line in text.split("\n"))
    return re.sub(r"\\\n\$", "\n\\$", wrapped)


def axes_width(axes) -> float:
    """The width of `axes` in inches (before tight_layout, which only widens it)."""
    return axes.get_position().width * axes.figure.get_figwidth()


def set_title(axes, title: str, fontsize: float) -> None:
    """An axes title wrapped to the axes' width."""
    axes.set_title(wrap_text(title, axes_width(axes), fontsize), fontsize=fontsize)


def set_suptitle(figure, title: str, fontsize: float) -> None:
    """A figure title wrapped to the figure's width (less a margin)."""
    figure.suptitle(wrap_text(title, 0.94 * figure.get_figwidth(), fontsize), fontsize=fontsize)


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
    return figure


def _save(figure, paths: list[Path]) -> None:
    """Write the figure to every path atomically and free it."""
    for path in paths:
        atomic_savefig(figure, path, dpi=120)
    plt.close(figure)


def save_profile_figure(profiles: list[tuple[str, list[dict], dict | None]], title: str,
                        paths: list[Path], ylabel: str = "ln D") -> None:
    """figure_profile written to every path."""
    _save(figure_profile(profiles, title, ylabel), paths)


def figure_profile(profiles: list[tuple[str, list[dict], dict | None]], title: str, ylabel: str = "ln D"):
    """One panel with each (label, layers, fit) profile and its fit line(s), a legend naming each
    profile's split (label); the first profile's Pearson r and rho go in the title, wrapped to fit."""
    figure, axes = plt.subplots(figsize=(5.0, 3.8))
    for (label, layers, fit), color in zip(profiles, COLORS):
        draw_profile(axes, layers, fit, label=label, color=color)
    _, _, first_fit = profiles[0]
    if first_fit:
        title = f"{title}\nPearson r = {first_fit['pearson_r']:.4f}, rho = {first_fit['rho']:.4f}"
    set_title(axes, title, 8)
    axes.set_xlabel("layer l")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=8)
    return _layout(figure, [axes])


def save_dynamics_figure(dynamics: dict, title: str, path: Path, ylabel: str = "ln D") -> None:
    """figure_dynamics written to `path`."""
    _save(figure_dynamics(dynamics, title, ylabel), [path])


def figure_dynamics(dynamics: dict, title: str, ylabel: str = "ln D"):
    """Left: ln value_l against l at each recorded epoch (colour by epoch). Right: Pearson r and rho of
    the per-epoch fits against the epoch."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    epochs = dynamics["epochs"]
    colormap = plt.get_cmap("viridis")
    for position, (epoch, values) in enumerate(zip(epochs, dynamics["values"])):
        color = colormap(position / max(len(epochs) - 1, 1))
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
    right.legend(fontsize=8)
    set_suptitle(figure, title, 8)
    return _layout(figure, [left, right])


def save_training_figure(history: dict, title: str, path: Path) -> None:
    """figure_training written to `path`."""
    _save(figure_training(history, title), [path])


def figure_training(history: dict, title: str):
    """Top: mean train loss per epoch (log y axis). Bottom: train and test accuracy at the epochs they
    were measured (history["accuracy_epoch"]), sharing the epoch axis. `history` is results.json's."""
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(5.0, 5.0))
    losses = [(e, v) for e, v in zip(history["epoch"], history["train_loss"])
              if isinstance(v, float) and math.isfinite(v) and v > 0]
    if losses:
        top.plot(*zip(*losses), "-", color=COLORS[0], linewidth=1)
    top.set_yscale("log")
    top.set_ylabel("train loss")
    accuracy_epochs = history.get("accuracy_epoch") or []
    if accuracy_epochs:
        bottom.plot(accuracy_epochs, history["train_accuracy"], "o-", color=COLORS[0], markersize=3,
                    linewidth=1, label="train")
        bottom.plot(accuracy_epochs, history["test_accuracy"], "s-", color=COLORS[1], markersize=3,
                    linewidth=1, label="test")
        bottom.legend(fontsize=8)
    bottom.set_ylabel("accuracy")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    set_title(top, title, 8)
    return _layout(figure, [top, bottom])
