"""Every figure the project writes fits its text: each kind is drawn with its longest realistic title (a
run name of 160 characters and the BatchNorm line) and every Text artist's window extent must lie inside
the figure (1 px allowed). Also: the fig1 grid and depth figures hold the runs of their protocol only."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from omegaconf import OmegaConf

import plotting
import campaign
import report_figures
import run_records
import summarize_runs
from representation_analysis import bn_mode_label

NAME = ("imbalanced_cfm-GFNNOriginal-L18-w1000-momentum-lr0.0003-e600-s9223372036854775807-frozen-1a2b3c4d"
        "-curves5-dynamics10-subset1000-bn_eval-pca100-measure_within_variance-x")[:160]
BN = bn_mode_label("train_batches", 100)
TITLE = f"{NAME}\n{BN}"


def outside(figure: Figure) -> list[str]:
    """The Text artists (with text) whose window extent leaves the figure by more than 1 px."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    box = figure.bbox
    undrawn = set()          # tick labels at ticks outside the view interval: made, never drawn
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * max(abs(low), abs(high), 1.0)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - slack <= tick.get_loc() <= high + slack:
                    undrawn.update((id(tick.label1), id(tick.label2)))
    found = []
    for text in figure.findobj(Text):
        if id(text) in undrawn or not text.get_visible() or not text.get_text().strip():
            continue
        extent = text.get_window_extent(renderer)
        if (extent.x0 < box.x0 - 1 or extent.y0 < box.y0 - 1 or extent.x1 > box.x1 + 1
                or extent.y1 > box.y1 + 1):
            found.append(f"{text.get_text()!r}: {extent} not in {box}")
    return found


def check(figure: Figure) -> None:
    problems = outside(figure)
    matplotlib.pyplot.close(figure)
    assert not problems, "\n".join(problems)


def layers(count: int, ratio: float = 0.5) -> list[dict]:
    return [{"index": i, "D": 30.0 * ratio ** i, "value": 30.0 * ratio ** i} for i in range(count)]


def fit(count: int, ratio: float = 0.5) -> dict:
    return {"slope": math.log(ratio), "intercept": math.log(30.0), "rho": ratio, "pearson_r": -1.0,
            "first_index": 0, "last_index": count - 1}


def legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for axes in figure.axes if axes.get_legend() for text in axes.get_legend().get_texts()]


def test_profile_figure_fits_its_text_and_gives_each_split_its_fit():
    profiles = [(plotting.split_label("train", 1000), layers(20), fit(20)),
                (plotting.split_label("test", 1000), layers(20, 0.6), {**fit(20, 0.6), "pearson_r": -0.98765})]
    figure = plotting.figure_profile(profiles, TITLE, ylabel="ln between_variance")
    assert legend_texts(figure) == ["train, 1000 samples: r = -1.0000, rho = 0.500",
                                    "test, 1000 samples: r = -0.9877, rho = 0.600"]
    check(figure)


def test_profile_title_of_a_model_without_batch_norm_says_so():
    from experiment import profile_title

    analysis = {"bn_mode": "train_batches", "bn_batch_size": 100}
    without = OmegaConf.create({"measure": "within_variance", "analysis": analysis,
                                "model": {"params": {"batch_norm": False}}})
    assert profile_title("run", without) == "run\nmeasure within_variance, no BatchNorm layers"
    with_bn = OmegaConf.create({"measure": "within_variance", "analysis": analysis, "model": {"params": {}}})
    assert profile_title("run", with_bn) == f"run\nmeasure within_variance, {BN}"


def test_reanalysis_profile_figure_names_measure_split_and_bn_mode_and_fits():
    from experiment import profile_title

    cfg = OmegaConf.create({"measure": "nc1", "analysis": {"bn_mode": "eval", "bn_batch_size": 100}})
    title = profile_title(f"{NAME} [measure=nc1,split=test,analysis.bn_mode=eval]", cfg, "test")
    assert title.endswith(f"\nmeasure nc1, split test, {bn_mode_label('eval', 100)}")
    figure = plotting.figure_profile([("test", layers(20), fit(20))], title, ylabel="ln nc1")
    texts = " ".join(t.get_text() for t in figure.findobj(Text))
    assert "test" in texts and "ln nc1" in texts
    check(figure)


def test_dynamics_figure_fits_its_text():
    epochs = list(range(0, 601, 50))
    dynamics = {"epochs": epochs, "values": [[30.0 * 0.5 ** i for i in range(20)] for _ in epochs],
                "fits": [fit(20) for _ in epochs]}
    check(plotting.figure_dynamics(dynamics, TITLE))


def test_training_figure_fits_its_text():
    history = {"epoch": list(range(1, 601)), "train_loss": [1.0 / e for e in range(1, 601)],
               "accuracy_epoch": [0, 300, 600], "train_accuracy": [0.1, 0.9, 1.0],
               "test_accuracy": [0.1, 0.7, 0.8]}
    check(plotting.figure_training(history, TITLE))


def test_training_figure_without_curves_shows_the_final_accuracies_and_how_to_get_curves():
    history = {"epoch": list(range(1, 601)), "train_loss": [1.0 / e for e in range(1, 601)],
               "accuracy_epoch": [], "train_accuracy": [], "test_accuracy": []}
    figure = plotting.figure_training(history, TITLE, {"train": 1.0, "test": 0.8059})
    assert legend_texts(figure) == ["train at the end: 1.0000", "test at the end: 0.8059"]
    bottom = figure.axes[1]
    assert [tuple(line.get_xydata()[0]) for line in bottom.get_lines()] == [(600, 1.0), (600, 0.8059)]
    assert "curves_every_n_epochs=N" in " ".join(t.get_text() for t in bottom.texts).replace("\n", "")
    check(figure)
    diverged = plotting.figure_training({**history, "train_loss": [1.0] * 10 + [math.nan]}, TITLE)
    assert [t.get_text() for t in diverged.axes[1].texts] == ["no accuracy measured"]
    check(diverged)


@pytest.mark.parametrize("low, high, labels", [(1.6, 35.0, ["2", "5", "10", "20"]),
                                               (0.5, 3.0, ["0.5", "1", "2"]),
                                               (0.3, 0.9, ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8"]),
                                               (1e-3, 10.0, None)])   # 5 decades: matplotlib's own
def test_a_log_axis_under_two_decades_gets_plain_labels(low, high, labels):
    figure, axes = matplotlib.pyplot.subplots()
    axes.semilogy([0, 1], [low, high])
    axes.set_ylim(low, high)
    default = axes.yaxis.get_major_formatter()
    plotting.log_axis_labels(axes)
    figure.canvas.draw()
    if labels is None:
        assert axes.yaxis.get_major_formatter() is default
    else:
        shown = [tick.label1.get_text() for tick in axes.yaxis.get_major_ticks()
                 if low <= tick.get_loc() <= high]
        assert shown == labels
    matplotlib.pyplot.close(figure)


def test_ordered_colours_stop_before_viridis_pale_end():
    assert plotting.sequence_color(0, 5) == matplotlib.colormaps["viridis"](0.0)
    assert plotting.sequence_color(4, 5) == matplotlib.colormaps["viridis"](plotting.SEQUENCE_END)
    assert plotting.sequence_color(0, 1) == matplotlib.colormaps["viridis"](0.0)


@pytest.fixture
def checked_figures(monkeypatch):
    """Every figure the summaries and the report save is checked (then saved as usual)."""
    seen = []
    real = Figure.savefig

    def savefig(self, *args, **kwargs):
        seen.append(outside(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def run(name: str, *, depth: int, optimizer="adam", lr=1e-3, epochs=600, data="cfm", training="standard",
        bn_mode="train_batches", measure="within_variance", seed=9223372036854775807) -> run_records.Run:
    count = depth + 2
    config = {"data": {"name": data}, "model": {"name": "GFNN", "tag": f"L{depth}-w100", "depth": depth},
              "optimization": {"name": optimizer}, "training": {"name": training}, "layer_num": depth,
              "hidden_size": 100, "lr": lr, "epochs": epochs, "seed": seed, "measure": measure,
              "analysis": {"bn_mode": bn_mode, "bn_batch_size": 100}}
    results = {"config": config, "run_name": name, "status": "completed", "layers": layers(count),
               "fit": fit(count), "final_train_loss": 0.01, "test_accuracy": 0.8}
    return run_records.Run(Path("logs") / name / "results.json", results)


def test_fig1_grid_holds_the_fig1_protocol_only_and_fits_its_text(checked_figures, capsys, monkeypatch):
    drawn = []
    real = summarize_runs.draw_profile
    monkeypatch.setattr(summarize_runs, "draw_profile",
                        lambda axes, layers, fit, label="", color="": (drawn.append(len(layers)),
                                                                        real(axes, layers, fit, label, color)))
    lrs = summarize_runs.fig1_lr_table()
    runs = [run(f"fig1-{o}-L{d}", depth=d, optimizer=o, lr=lrs[o, d])
            for o in ("sgd", "momentum", "adam") for d in (2, 6, 18)]
    runs += [run("frozen-adam-L18", depth=18, training="frozen", epochs=1, lr=3e-4),
             run("short-adam-L18", depth=18, epochs=1, lr=3e-4), run("eval-adam-L2", depth=2, bn_mode="eval", lr=3e-3)]
    png = summarize_runs.fig1_grid_png(runs, "cfm", "GFNN", 100)
    assert png[:4] == b"\x89PNG" and len(drawn) == 9
    assert capsys.readouterr().out.splitlines() == [
        "fig1 grid: left out 3 runs of other protocols:", "  - training=frozen: frozen-adam-L18",
        "  - epochs=1: short-adam-L18", "  - analysis.bn_mode=eval: eval-adam-L2"]
    assert checked_figures and all(problems == [] for problems in checked_figures), checked_figures


def test_depth_figure_splits_protocols_and_fits_its_text(checked_figures):
    data = "imbalanced_cfm"
    runs = [run(f"{NAME[:120]}-L{d}", depth=d, data=data) for d in (1, 3, 16)]
    runs += [run(f"e1-L{d}", depth=d, data=data, epochs=1) for d in (1, 3)]
    runs += [run(f"eval-L{d}", depth=d, data=data, bn_mode="eval", measure="nc1") for d in (1, 3)]
    runs += [run(f"frozen-L{d}", depth=d, data=data, training="frozen") for d in (1, 3)]
    ((name, panels),) = summarize_runs.depth_families(runs)
    assert name == data and len(panels) == 4
    for family, members in panels:
        assert len({summarize_runs.depth_protocol(m) for m in members}) == 1
        assert len({m.config["epochs"] for m in members}) == 1
    png = summarize_runs.depth_figure_png(data, panels)
    assert png[:4] == b"\x89PNG"
    assert checked_figures and all(problems == [] for problems in checked_figures), checked_figures


def test_report_group_figure_fits_its_text(checked_figures, tmp_path):
    for group in (campaign.GROUPS[0], next(g for g in campaign.GROUPS if g.name == "residual")):
        series = []
        for panel in ("sgd", "momentum", "adam") if group.panels else (group.name,):
            for line in ("model ResNetMixV2, variant bottleneck/layer/measure_within_variance, lr 0.0003",
                         "model GFNNOriginal, variant frozen/bn=eval, lr 0.003"):
                for seed in (666, 1, 2, 3, 4):
                    series.append({"panel": panel, "line": line, "seed": seed,
                                   "points": [(i, 30.0 * 0.5 ** i) for i in range(20)]})
        assert report_figures.draw_group_figure(group, series, tmp_path / f"{group.name}.png") is not None
    assert len(checked_figures) == 2 and all(problems == [] for problems in checked_figures), checked_figures


def test_wrapping_measures_the_font_breaks_where_a_reader_would_and_keeps_escaped_dollars_whole():
    # fits on one line: measured, it takes 3.66 of 4.125 inches (a character count said it did not)
    assert plotting.wrap_text("GFNN on cm5k: w 100, adam, 600 epochs, seed 666", 4.125, 9) == \
        "GFNN on cm5k: w 100, adam, 600 epochs, seed 666"
    wrapped = plotting.wrap_text(f"{NAME} measured with BatchNorm in train mode", 4.0, 8)
    lines = wrapped.split("\n")
    assert all(plotting.text_width(line, 8) <= plotting.WRAP_MARGIN * 4.0 for line in lines)
    assert len(lines) > 2 and "".join(lines).replace(" ", "") == f"{NAME}measuredwithBatchNormintrainmode"
    assert lines[0].endswith("-")                      # a run name breaks after one of its hyphens
    dollars = plotting.wrap_text("x" * 40 + "\\$" + "y" * 40, 1.0, 9).split("\n")
    assert all(not line.endswith("\\") for line in dollars) and "\\$" in "".join(dollars)
    assert plotting.wrap_text("a\n\nb", 4.0, 8) == "a\n\nb"


def test_the_training_loss_axis_is_labelled_without_mathtext():
    """Powers of ten as 10 with a Unicode superscript (matplotlib's look; its mathtext parser costs 0.12 s
    at a process's first figure), other values as plain numbers; under two decades plain numbers at 1, 2, 5."""
    assert [plotting.power_label(v) for v in (1e-2, 1.0, 1e5, 2e-3, 10.0)] == \
        ["10\u207b\u00b2", "1", "10\u2075", "0.002", "10\u00b9"]
    for losses, expected in (([2.0, 1e-3], ["10\u207b\u00b3", "10\u207b\u00b2", "10\u207b\u00b9", "1"]),
                             ([0.9, 0.3], ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"])):
        history = {"epoch": [1, 2], "train_loss": losses, "accuracy_epoch": [], "train_accuracy": [],
                   "test_accuracy": []}
        figure = plotting.figure_training(history, "run")
        figure.canvas.draw()
        top = figure.axes[0]
        low, high = top.get_ylim()
        shown = [tick.label1.get_text() for tick in top.yaxis.get_major_ticks() + top.yaxis.get_minor_ticks()
                 if low <= tick.get_loc() <= high and tick.label1.get_text()]
        assert sorted(shown) == sorted(expected), shown
        assert not any("$" in text for text in shown)
        check(figure)
