"""The reproduction report: per experiment group of the paper, its claim, a figure, a table of every
run and a verdict computed from the runs by a stated rule.

    python summarize_runs.py logs --report docs/reproduction       # from the runs (writes everything)
    python reproduction_report.py docs/reproduction                # README.md again from runs.csv alone

The first command writes runs.csv (one row per group and run, every number the report shows),
context.json (machine, versions, sweep wall time from run_experiments.sh's queue logs, and the
per-epoch costs of the groups not run, from epoch_costs.csv that benchmarks/epoch_costs.py writes),
one PNG per group and README.md. The second rebuilds README.md from runs.csv and context.json, so the markdown is
never edited by hand (a test checks that the committed one is what the table gives).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from atomic_io import atomic_savefig, atomic_write, atomic_write_json

# A run "shows the law" when ln D_l against l has Pearson r at or below this: BatchNorm MLPs on cfm,
# for which the law is known to hold, reach r below -0.99.
R_THRESHOLD = -0.99
REPORT_COMMAND = "python summarize_runs.py logs --report docs/reproduction --queue-log logs/jobs/run-*.log"
REBUILD_COMMAND = "python reproduction_report.py docs/reproduction"
EVAL_REANALYSIS = "analysis.bn_mode=eval"


@dataclass(frozen=True)
class Group:
    """An experiment group of the paper as the report shows it."""
    name: str
    claim: str                         # the paper's claim, in our words
    setting: tuple[str, ...]           # row keys that make a setting (the best lr is chosen per setting)
    expect: str = "holds"              # holds | fails (the controls)
    lines: str = "setting"             # figure: one line per setting's best-lr run, or per "lr" (all runs)
    panels: str | None = None          # figure: one panel per value of this row key

    @property
    def command(self) -> str:
        return f"sh run_experiments.sh {self.name}"


GROUPS = (
    Group("fig1", "With BatchNorm, a feedforward network trained on the 1,000-image Fashion-MNIST "
          "subset separates the classes by the same factor at every layer: ln D_l falls on a straight "
          "line in l, for plain SGD, momentum and Adam alike and at depths 2, 6 and 18.",
          setting=("optimizer", "depth"), panels="optimizer"),
    Group("lr", "The law's emergence depends on the learning rate: a depth-7 network trained with plain "
          "SGD shows it at well-chosen rates, while rates that are too small leave the profile curved "
          "at the end of training.", setting=("depth",), lines="lr"),
    Group("imbalanced", "Class imbalance (five classes with 500 images, five with 100) does not break "
          "the law: at depths 2, 6 and 18 the profile is still a straight line.", setting=("depth",)),
    Group("depth_cfm", "The law holds at every depth from 1 to 16 on cfm; deeper networks reach a "
          "similar last-layer D with a decay ratio rho closer to 1 (each layer does a smaller share).",
          setting=("depth",)),
    Group("width", "Width does not matter for the law: depth-6 networks 20 and 1,000 units wide both "
          "separate at a constant rate.", setting=("width",)),
    Group("shape", "Networks whose widths vary along the depth (narrow-then-wide, wide-then-narrow, "
          "mixed) still show a straight-line profile.", setting=("model",)),
    Group("linearized", "Control: without ReLU (a linear network with BatchNorm) the law does not "
          "appear: D falls slowly and not geometrically.", setting=("model",), expect="fails", lines="lr"),
    Group("nobn", "Control: without BatchNorm a depth-18 network does not train at these rates and "
          "the law does not appear (D grows or scatters).", setting=("model",), expect="fails", lines="lr"),
)
BEYOND_GROUPS = ("fig1", "depth_cfm")     # eval-mode reanalysis beside the paper's mode
NOT_RUN = (                               # (group, why): the groups this CPU did not run
    ("depth_cm", "needs MNIST, not available offline here"),
    ("depth_cc", "needs CIFAR-10, not available offline here"),
    ("frozen", "needs CIFAR-10, not available offline here"),
    ("cnn", "VGG13 and AlexNet: hours per run on a CPU (and cifar10 is not available offline)"),
    ("residual", "GResNet and ResNetMixV2: hours per run on a CPU"),
    ("original", "1,000-wide MLPs on 1,024 or 3,072 inputs: hours per group on a CPU (cifar10 is not "
                 "available offline; the depth-2 row on fashion_mnist did not fit this report's time)"),
)

COLUMNS = ("group", "run", "data", "model", "depth", "width", "optimizer", "lr", "epochs", "seed",
           "status", "best_lr", "pearson_r", "rho", "r2", "D_first", "D_last", "train_accuracy",
           "test_accuracy", "final_train_loss", "wall_seconds", "eval_pearson_r", "eval_rho",
           "test_pearson_r", "test_rho")
NUMERIC = {"depth", "width", "lr", "epochs", "seed", "pearson_r", "rho", "r2", "D_first", "D_last",
           "train_accuracy", "test_accuracy", "final_train_loss", "wall_seconds", "eval_pearson_r",
           "eval_rho", "test_pearson_r", "test_rho"}


# ------------------------------------------------------------------------------------------ the rows
def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _fit_value(fit, key: str) -> float | None:
    return _number(fit.get(key)) if isinstance(fit, dict) else None


def eval_reanalysis(run_dir: Path) -> dict | None:
    """The fit of this run re-measured with BatchNorm in eval mode (reanalyze.py), if one exists."""
    for path in sorted((run_dir / "reanalysis").glob("*/results.json")):
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        config = results.get("config") or {}
        if (isinstance(config, dict) and (config.get("analysis") or {}).get("bn_mode") == "eval"
                and results.get("split", "train") == "train"
                and config.get("measure", "within_variance") == "within_variance"):
            return results.get("fit")
    return None


def run_row(group: str, job, run) -> dict:
    """One table row: the finished run (summarize_runs.Run) of a sweep job, or the job not run yet."""
    from summarize_runs import Run

    if run is None:
        run = Run(Path(job.run_name) / "results.json",
                  {"config": job.config, "run_name": job.run_name, "status": "missing"})
    row = run.row()
    completed = row["status"] == "completed"
    eval_fit = eval_reanalysis(run.path.parent) if completed else None
    test_fit = run.results.get("test_fit") if completed else None
    return {"group": group, "run": job.run_name, **{key: row[key] for key in (
                "data", "model", "depth", "width", "optimizer", "lr", "epochs", "seed", "status",
                "pearson_r", "rho", "D_first", "D_last", "train_accuracy", "test_accuracy",
                "final_train_loss", "wall_seconds")},
            "r2": _fit_value(run.fit, "r2") if completed else None, "best_lr": 0,
            "eval_pearson_r": _fit_value(eval_fit, "pearson_r"), "eval_rho": _fit_value(eval_fit, "rho"),
            "test_pearson_r": _fit_value(test_fit, "pearson_r"), "test_rho": _fit_value(test_fit, "rho")}


def mark_best_lr(rows: list[dict], setting: tuple[str, ...]) -> None:
    """Per setting, best_lr = 1 on the completed run of the lowest final train loss (ties: higher test
    accuracy, then smaller lr): the lr is chosen by training, never by the Pearson r it gives."""
    by_setting = defaultdict(list)
    for row in rows:
        if row["status"] == "completed":
            by_setting[tuple(row[key] for key in setting)].append(row)
    for candidates in by_setting.values():
        def ranking(row):
            loss = row["final_train_loss"]
            loss = loss if loss is not None and math.isfinite(loss) else math.inf
            return (loss, -(row["test_accuracy"] or 0.0), row["lr"] or 0.0)
        min(candidates, key=ranking)["best_lr"] = 1


def collect_rows(runs, groups=GROUPS) -> list[dict]:
    """Rows of every group's runs, in the order run_experiments.sh lists them (missing runs too)."""
    from sweep_jobs import sweep_jobs

    by_name = {run.name: run for run in runs}
    rows = []
    for group in groups:
        ((_, jobs),), _ = sweep_jobs([group.name], compose_jobs=True)
        group_rows = [run_row(group.name, job, by_name.get(job.run_name)) for job in jobs]
        mark_best_lr(group_rows, group.setting)
        rows += group_rows
    return rows


# -------------------------------------------------------------------------------- the context facts
QUEUE_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] (start|exit \d+): (.*)$")


def queue_statistics(log_paths: list[Path]) -> dict | None:
    """Wall time, job count and the most jobs running at once, from run_experiments.sh's start/exit
    lines (its output on the CPU: logs/jobs/run-*.log)."""
    events = []
    for path in log_paths:
        for line in Path(path).read_text(errors="replace").splitlines():
            match = QUEUE_LINE.match(line)
            if match:
                moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
                events.append((moment, 0 if match.group(2) == "start" else -1, match.group(3)))
    if not events:
        return None
    events.sort(key=lambda event: (event[0], event[1]))   # at one second, exits before starts
    running = peak = 0
    for _, kind, _ in events:
        running += 1 if kind == 0 else -1
        peak = max(peak, running)
    starts = sum(kind == 0 for _, kind, _ in events)
    return {"jobs": starts, "wall_seconds": events[-1][0] - events[0][0], "peak_parallel_jobs": peak}


def machine_facts(runs) -> dict:
    """The machine and software of the report's runs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = next((run.results.get("versions") for run in runs if run.results.get("versions")), {})
    devices = sorted({str(run.results.get("device")) for run in runs if run.results.get("device")})
    seeds = sorted({run.config.get("seed") for run in runs if run.config.get("seed") is not None})
    return {"cpu": cpu, "cores": os.cpu_count(), "system": f"{platform.system()} {platform.machine()}",
            "versions": versions, "devices": devices, "seeds": seeds}


def read_epoch_costs(path: Path) -> list[dict]:
    """benchmarks/epoch_costs.py's table (epoch_costs.csv in the report folder), if it is there."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [dict(row) for row in csv.DictReader(handle)]


# ------------------------------------------------------------------------------------------ figures
def draw_group_figure(group: Group, rows: list[dict], runs_by_name: dict, path: Path) -> Path | None:
    """The paper's style: D_l on a log axis against l, fitted line, one line per setting's best-lr
    run (or per lr); a panel per `group.panels` value."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    shown = [row for row in rows if row["status"] == "completed"
             and (row["best_lr"] if group.lines == "setting" else True)]
    if not shown:
        return None
    panel_values = sorted({row[group.panels] for row in shown}, key=str) if group.panels else [None]
    if group.panels == "optimizer":
        panel_values = [v for v in ("sgd", "momentum", "adam") if v in panel_values]
    figure, axes_list = plt.subplots(1, len(panel_values), figsize=(4.6 * len(panel_values), 3.9),
                                     squeeze=False)
    for axes, panel in zip(axes_list[0], panel_values):
        members = [row for row in shown if group.panels is None or row[group.panels] == panel]
        members.sort(key=lambda row: tuple(_sortable(row[key]) for key in (*group.setting, "lr")))
        colormap = plt.get_cmap("viridis" if len(members) > 4 else "tab10")
        for position, row in enumerate(members):
            color = colormap(position / max(len(members) - 1, 1)) if len(members) > 4 else colormap(position)
            run = runs_by_name[row["run"]]
            points = [(layer["index"], _number(layer.get("D"))) for layer in run.layers]
            points = [(x, y) for x, y in points if y is not None and math.isfinite(y) and y > 0]
            label = _line_label(group, row)
            axes.semilogy(*zip(*points), "o", color=color, markersize=4, label=label)
            fit = run.fit or {}
            for segment in fit.get("segments") or ([fit] if fit else []):
                xs = [segment.get("first_index", 0), segment.get("last_index", len(run.layers) - 1)]
                axes.semilogy(xs, [math.exp(segment["intercept"] + segment["slope"] * x) for x in xs],
                              "-", color=color, alpha=0.8)
        axes.set_title(f"{group.panels} {panel}" if group.panels else group.name, fontsize=10)
        axes.set_xlabel("layer l")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("D_l (log scale)")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=6.5)
    figure.suptitle(f"{group.name}: separation fuzziness D_l against layer l "
                    f"({'best lr per setting' if group.lines == 'setting' else 'every lr'})", fontsize=10)
    figure.tight_layout()
    atomic_savefig(figure, path, dpi=100)
    plt.close(figure)
    return path


def _sortable(value):
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _line_label(group: Group, row: dict) -> str:
    parts = [f"{key} {row[key]}" for key in group.setting if group.panels != key and key != "data"]
    parts = [part for part in parts if not (group.lines == "lr" and len(group.setting) == 1)]
    parts.append(f"lr {row['lr']:g}")
    if row["pearson_r"] is not None:
        parts.append(f"r {row['pearson_r']:.3f}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------ files: csv, json
def rows_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else (repr(row[key]) if isinstance(row[key], float)
                                                            else row[key]) for key in COLUMNS})
    return buffer.getvalue()


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in COLUMNS:
            value = row[key]
            if value == "":
                row[key] = None
            elif key in NUMERIC:
                number = float(value)
                row[key] = int(number) if key in ("depth", "width", "epochs", "seed") else number
        row["best_lr"] = int(row["best_lr"] or 0)
    return rows


# ------------------------------------------------------------------------------------------ verdicts
def verdict(group: Group, rows: list[dict]) -> tuple[str, str]:
    """(short verdict, sentence) for a group, by the rule stated in the report."""
    best = [row for row in rows if row["best_lr"]]
    settings = {tuple(row[key] for key in group.setting) for row in rows}
    if not best:
        return "not run", "No run of this group finished."
    showing = [row for row in best if row["pearson_r"] is not None and row["pearson_r"] <= R_THRESHOLD]
    failing = [row for row in best if row not in showing]
    unfinished = len(settings) - len(best)
    missing = f" {unfinished} setting(s) have no finished run." if unfinished else ""
    described = "; ".join(_failure_text(group, row, rows) for row in failing)
    if group.expect == "holds":
        if not failing and not unfinished:
            return "holds", (f"Holds: the best-lr run of every setting ({len(best)}) has r <= {R_THRESHOLD}.")
        if showing:
            return "partly", (f"Holds for {len(showing)} of {len(settings)} settings; does not hold for "
                              f"{described}.{missing}")
        return "does not hold", f"Does not hold: no setting's best-lr run has r <= {R_THRESHOLD} ({described}).{missing}"
    if not showing:
        return "fails, as the paper says", (f"Fails, as the paper says: the best-lr run has r > {R_THRESHOLD} "
                                            f"({described}).{missing}")
    return "holds (unexpected)", (f"The law appears in {len(showing)} of {len(settings)} settings although "
                                  f"the paper says it should not: this control does not reproduce.{missing}")


def _failure_text(group: Group, best: dict, rows: list[dict]) -> str:
    """A setting whose best-lr run misses the threshold: its r, and the lowest r of the setting's other
    learning rates (the law may still appear at an lr that training does not prefer)."""
    text = f"{_setting_text(group, best)}: r = {_format(best['pearson_r'], '.4f')}"
    others = [row for row in rows if row is not best and row["status"] == "completed"
              and row["pearson_r"] is not None
              and all(row[key] == best[key] for key in group.setting)]
    if others:
        lowest = min(others, key=lambda row: row["pearson_r"])
        text += f" (lowest r at another lr: {lowest['pearson_r']:.4f} at lr {lowest['lr']:g})"
    return text


def _setting_text(group: Group, row: dict) -> str:
    return ", ".join(f"{key} {row[key]}" for key in group.setting) + f" (lr {_format(row['lr'], 'g')})"


def _format(value, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


# ------------------------------------------------------------------------------------------ markdown
TABLE = (("depth", "depth", "d"), ("width", "width", "d"), ("model", "model", "s"),
         ("optimizer", "optimizer", "s"), ("lr", "lr", "g"), ("pearson_r", "Pearson r", ".4f"),
         ("rho", "rho", ".4f"), ("train_accuracy", "train acc", ".4f"), ("test_accuracy", "test acc", ".4f"),
         ("D_first", "D first", ".4g"), ("D_last", "D last", ".4g"), ("status", "status", "s"))


def _table(rows: list[dict], columns) -> list[str]:
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, spec in columns:
            text = _format(row[key], spec) if spec != "s" else str(row[key] or "")
            cells.append(f"**{text}**" if key == "lr" and row["best_lr"] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _beyond_the_paper(rows: list[dict]) -> list[str]:
    chosen = [row for row in rows if row["group"] in BEYOND_GROUPS and row["status"] == "completed"]
    seen, unique = set(), []
    for row in chosen:                       # fig1's adam depth-6 run is also a depth_cfm run
        if row["run"] not in seen:
            seen.add(row["run"])
            unique.append(row)
    paired = [row for row in unique if row["eval_pearson_r"] is not None]
    lines = ["## Beyond the paper", "",
             "From the same checkpoints, without retraining: every fig1 and depth_cfm run re-measured "
             "with BatchNorm in eval mode (`python reanalyze.py RUN " + EVAL_REANALYSIS + "`), and the "
             "profile of a balanced, seeded 1,000-image subset of the test split (out-of-sample D, "
             "measured by the run itself in the paper's mode, `analysis.test_subset_size`). The paper "
             "has neither.", ""]
    if paired:
        paper_ok = sum(row["pearson_r"] <= R_THRESHOLD for row in paired)
        eval_ok = sum(row["eval_pearson_r"] <= R_THRESHOLD for row in paired)
        lower_rho = sum(row["eval_rho"] < row["rho"] for row in paired if row["eval_rho"] is not None)
        lines += [f"- BatchNorm mode: of {len(paired)} runs, {paper_ok} have r <= {R_THRESHOLD} in the "
                  f"paper's mode and {eval_ok} in eval mode (median r {statistics.median(r['pearson_r'] for r in paired):.4f} "
                  f"against {statistics.median(r['eval_pearson_r'] for r in paired):.4f}); eval mode gives "
                  f"the smaller decay ratio rho in {lower_rho} of them."
                  + (" Whether a run shows the law depends on how BatchNorm is evaluated while measuring."
                     if paper_ok != eval_ok else "")]
    tested = [row for row in unique if row["test_pearson_r"] is not None]
    if tested:
        test_ok = sum(row["test_pearson_r"] <= R_THRESHOLD for row in tested)
        higher_rho = sum(row["test_rho"] > row["rho"] for row in tested)
        lines += [f"- Test split: {test_ok} of {len(tested)} runs have r <= {R_THRESHOLD} on held-out "
                  f"images (median r {statistics.median(r['test_pearson_r'] for r in tested):.4f}); the "
                  f"test profile decays more slowly (larger rho) in {higher_rho} of them: out of sample, "
                  "the separation per layer is weaker and less regular."]
    columns = (("run", "run", "s"), ("lr", "lr", "g"), ("pearson_r", "r (paper mode)", ".4f"),
               ("eval_pearson_r", "r (eval mode)", ".4f"), ("rho", "rho (paper)", ".4f"),
               ("eval_rho", "rho (eval)", ".4f"), ("test_pearson_r", "r (test split)", ".4f"),
               ("test_rho", "rho (test)", ".4f"))
    lines += [""] + _table([{**row, "best_lr": 0} for row in unique], columns) + [""]
    return lines


def render(rows: list[dict], context: dict) -> str:
    """README.md of the report, from its rows and context alone."""
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    lines = ["# Reproduction of He & Su, \"A Law of Data Separation in Deep Learning\" (PNAS 2023)", "",
             "Generated from the runs by `" + context.get("command", REPORT_COMMAND) + "`; the markdown "
             "alone is rebuilt from `runs.csv` and `context.json` by `" + REBUILD_COMMAND + "`. "
             "Do not edit it by hand.", "",
             "**Rule.** A run shows the law when the least-squares line of ln D_l against l has Pearson r "
             f"<= {R_THRESHOLD}. In every setting (a depth, width, shape, optimizer...) the learning rate "
             "is chosen by training alone: the completed run of the lowest final training loss (ties: "
             "higher test accuracy), never by the r it gives; in the tables its lr is **bold**. A group "
             "*holds* when the best-lr run of every setting shows the law; a control group *fails, as "
             "the paper says* when its best-lr run does not. Measured as the paper did: BatchNorm in train "
             "mode over consecutive batches of 100 training images.", "",
             "| group | runs finished | verdict |", "|---|---|---|"]
    groups = [group for group in GROUPS if group.name in by_group]
    verdicts = {group.name: verdict(group, by_group[group.name]) for group in groups}
    for group in groups:
        members = by_group[group.name]
        finished = sum(row["status"] in ("completed", "diverged") for row in members)
        lines.append(f"| [{group.name}](#{group.name}) | {finished} of {len(members)} | {verdicts[group.name][0]} |")
    lines.append("")
    for group in groups:
        members = by_group[group.name]
        lines += [f"## {group.name}", "", f"**The paper:** {group.claim}", "",
                  f"![{group.name}]({group.name}.png)", "", f"**Verdict:** {verdicts[group.name][1]}", ""]
        lines += _table(members, [column for column in TABLE
                                  if len({str(row[column[0]]) for row in members}) > 1
                                  or column[0] in ("lr", "pearson_r", "rho", "status")])
        diverged = sum(row["status"] == "diverged" for row in members)
        missing = sum(row["status"] == "missing" for row in members)
        notes = [f"{diverged} diverged" if diverged else "", f"{missing} not run" if missing else ""]
        if any(notes):
            lines += ["", "Runs: " + ", ".join(note for note in notes if note) + "."]
        lines += ["", f"Rerun: `{group.command}`", ""]
    lines += _beyond_the_paper(rows)
    lines += ["## Not run here", "",
              "The per-epoch cost below is measured on this machine by `python benchmarks/epoch_costs.py` "
              "(CPU time of one thread, as run_experiments.sh runs CPU jobs; training steps only, on "
              "random inputs of the real shape; measured while other jobs shared the machine's caches, "
              "so it may read high), so a reader can plan; the total is that cost times the epochs of "
              "every run of the group.", "",
              "| group | why not here | command | model | seconds per epoch | runs | total, one thread |",
              "|---|---|---|---|---|---|---|"]
    reasons = dict(NOT_RUN)
    for cost in context.get("epoch_costs", []):
        hours = float(cost["seconds_per_epoch"]) * int(cost["epochs"]) * int(cost["runs"]) / 3600
        lines.append(f"| {cost['group']} | {reasons.get(cost['group'], '')} | `{cost['command']}` | "
                     f"{cost['model']} | {float(cost['seconds_per_epoch']):.3g} | {cost['runs']} | "
                     f"{hours:.1f} h |")
    lines += ["", "## Machine and compute", ""]
    machine = context.get("machine", {})
    versions = machine.get("versions", {})
    lines.append(f"- Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('system')}; "
                 f"device {', '.join(machine.get('devices', []))}.")
    lines.append("- Software: " + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())) + ".")
    lines.append(f"- Seeds: {', '.join(str(seed) for seed in machine.get('seeds', []))} (data subset, "
                 "initialization and batch order).")
    unique_runs = {row["run"]: row for row in rows if row["wall_seconds"] is not None}
    compute = sum(row["wall_seconds"] for row in unique_runs.values())
    lines.append(f"- Compute: {len(unique_runs)} runs, {compute / 3600:.2f} h of run time in all "
                 "(each run on one thread).")
    for queue in context.get("queues", []):
        lines.append(f"- Sweep `{queue['command']}`: {queue['jobs']} jobs, at most "
                     f"{queue['peak_parallel_jobs']} at once, {queue['wall_seconds'] / 60:.1f} min wall time.")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------- the commands
def write_report(runs, out: Path, queue_logs: list[Path] = (), groups=GROUPS) -> list[Path]:
    """Rows, context, figures and README.md of the report into `out`; returns the files written."""
    rows = collect_rows(runs, groups)
    by_name = {run.name: run for run in runs}
    queues = []
    for path in queue_logs:
        queue = queue_statistics([path])
        if queue:
            command = next((line[len("# command: "):] for line in Path(path).read_text().splitlines()
                            if line.startswith("# command: ")), Path(path).name)
            queues.append({"command": command, **queue})
    context = {"machine": machine_facts(runs), "queues": queues,
               "epoch_costs": read_epoch_costs(out / "epoch_costs.csv")}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    for group in groups:
        figure = draw_group_figure(group, by_group[group.name], by_name, out / f"{group.name}.png")
        written += [figure] if figure else []
    table = rows_csv(rows)
    written.append(atomic_write(out / "runs.csv", lambda tmp: tmp.write_text(table)))
    written.append(atomic_write_json(out / "context.json", context))
    text = render(read_rows(out / "runs.csv"), context)
    written.append(atomic_write(out / "README.md", lambda tmp: tmp.write_text(text)))
    return written


def rebuild(out: Path) -> str:
    """README.md's text from out/runs.csv and out/context.json."""
    return render(read_rows(out / "runs.csv"), json.loads((out / "context.json").read_text()))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Rebuild the report's README.md from its runs.csv.")
    parser.add_argument("report", type=Path, help="the report folder (docs/reproduction)")
    args = parser.parse_args(argv)
    try:
        text = rebuild(args.report)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {args.report}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    atomic_write(args.report / "README.md", lambda tmp: tmp.write_text(text))
    print(f"wrote {args.report / 'README.md'}")


if __name__ == "__main__":
    main()
