"""Figures of separation profiles (ln D_l against the point index l, with the fitted line(s)) and of
training curves (loss and accuracies against the epoch).

Matplotlib runs headless (Agg); figures are written atomically.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from atomic_io import atomic_savefig  # noqa: E402

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


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


def _save(figure, all_axes, paths: list[Path]) -> None:
    """Grid every axes, lay the figure out, write it to every path atomically and free it."""
    for axes in all_axes:
        axes.grid(alpha=0.3)
    figure.tight_layout()
    for path in paths:
        atomic_savefig(figure, path, dpi=120)
    plt.close(figure)


def save_profile_figure(profiles: list[tuple[str, list[dict], dict | None]], title: str,
                        paths: list[Path], ylabel: str = "ln D") -> None:
    """One panel with each (label, layers, fit) profile and its fit line(s); the first profile's
    Pearson r and rho go in the title. Written to every path."""
    figure, axes = plt.subplots(figsize=(5.0, 3.8))
    for (label, layers, fit), color in zip(profiles, COLORS):
        draw_profile(axes, layers, fit, label=label, color=color)
    _, _, first_fit = profiles[0]
    if first_fit:
        title = f"{title}\nPearson r = {first_fit['pearson_r']:.4f}, rho = {first_fit['rho']:.4f}"
    axes.set_title(title, fontsize=8)
    axes.set_xlabel("layer l")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ylabel)
    if len(profiles) > 1:
        axes.legend(fontsize=8)
    _save(figure, [axes], paths)


def save_dynamics_figure(dynamics: dict, title: str, path: Path, ylabel: str = "ln D") -> None:
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
    figure.suptitle(title, fontsize=8)
    _save(figure, [left, right], [path])


def save_training_figure(history: dict, title: str, path: Path) -> None:
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
    top.set_title(title, fontsize=8)
    _save(figure, [top, bottom], [path])
