"""Figures of separation profiles: ln D_l against the point index l, with the fitted line(s).

Matplotlib runs headless (Agg); figures are written atomically.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from atomic_io import atomic_savefig  # noqa: E402


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


def save_profile_figure(layers: list[dict], fit: dict | None, title: str, paths: list[Path],
                        ylabel: str = "ln D") -> None:
    """One panel: the profile and its fit; title carries Pearson r and rho. Written to every path."""
    figure, axes = plt.subplots(figsize=(5.0, 3.8))
    draw_profile(axes, layers, fit)
    if fit:
        title = f"{title}\nPearson r = {fit['pearson_r']:.4f}, rho = {fit['rho']:.4f}"
    else:
        title = f"{title}\n(no fit)"
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("layer l")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    for path in paths:
        atomic_savefig(figure, path, dpi=120)
    plt.close(figure)
