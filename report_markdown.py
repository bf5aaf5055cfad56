"""The report's README.md, rendered from the tables' rows alone (render): the rules stated first (the text
verdicts.py implements), the summary table, what did not reproduce and why, a section per group, group
`longer`, the original's code beside ours, the eval-mode and test-split comparison, numbers across CPUs,
the groups not run and the machines. Values from files go in through safe_output's escaping.

It renders text; it reads no file and decides no verdict.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from campaign import BEYOND_GROUPS, EVAL_REANALYSIS, GROUPS, LONGER_EPOCHS, NOT_RUN, SEEDS, Group
from report_figures import figure_series, miss_fits, miss_sentence, misses_of
from report_tables import MERGE_COMMAND, REBUILD_COMMAND, RERUN_NUMBERS, profile_of
from safe_output import markdown_code, markdown_escape
from verdicts import (FINISHED, LOSS_NEAR, MIN_FIT_POINTS, R_NOISE, R_THRESHOLD, RULES, _median, count_verdict,
                      failing_cells, group_verdict, LrCell, miss_cause, needed_seeds, Setting, settings_of,
                      shows_law, some_lr_holds, within_noise)


# ------------------------------------------------------------------------------------------ markdown
def _format(value, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


_escape = markdown_escape   # the one markdown escaping of both tools (summarize_runs)


def _setting_text(group: Group, key: tuple) -> str:
    return ", ".join(f"{name} {_escape(value)}" for name, value in zip(group.setting, key))


def _r_summary(cell: LrCell) -> str:
    rs = cell.rs()
    if not rs:
        return "no finished run"
    return f"median r {statistics.median(rs):.4f} (range {min(rs):.4f} to {max(rs):.4f})"


def _dropped_points(cell: LrCell, profiles: dict) -> list[tuple[int, int]]:
    """(points fitted, points of the profile) of each completed run whose fit left points out (D of 0 or
    not finite: the fit takes the finite, positive D only)."""
    dropped = []
    for row in cell.completed:
        measured = len(profile_of(profiles, row["run"]))
        if row["points"] is not None and measured and row["points"] < measured:
            dropped.append((row["points"], measured))
    return dropped


def _cell_row(group: Group, setting: Setting, cell: LrCell, profiles: dict, choosing_column: bool = False) -> str:
    rs, rhos = cell.rs(), cell.rhos()
    mark = "**" if cell is setting.by_loss else ""
    lr = (f"{mark}{cell.lr:g}{mark}" + (" †" if cell is setting.by_accuracy else "")
          + (" ★" if cell is setting.by_paper else ""))
    rho = (f"{statistics.mean(rhos):.4f} ± {statistics.stdev(rhos):.4f}" if len(rhos) > 1
           else f"{rhos[0]:.4f}" if rhos else "")
    flags = []
    if cell.two_point:
        flags.append(f"{cell.two_point} fit(s) of 2 points")
    if dropped := [item for item in _dropped_points(cell, profiles) if item[0] >= MIN_FIT_POINTS]:
        fitted = sorted({points for points, _ in dropped})
        span = f"{fitted[0]}" if len(fitted) == 1 else f"{fitted[0]}-{fitted[-1]}"
        flags.append(f"{len(dropped)} fit(s) dropped points ({span} of {max(m for _, m in dropped)} fitted)")
    diverged = sum(row["status"] == "diverged" for row in cell.rows)
    if diverged:
        flags.append(f"{diverged} diverged")
    missing = sum(row["status"] == "missing" for row in cell.rows)
    if missing:
        flags.append(f"{missing} not run")
    cells = [_escape(value) for value in setting.key] + [
        lr, f"{len(cell.finished)} of {len(cell.rows)}", _format(cell.median_loss() if cell.finished else None, ".3g"),
        *([_format(cell.median_loss(setting.shared_seeds) if cell.finished_at(setting.shared_seeds) else None,
                   ".3g")] if choosing_column else []),
        _format(cell.median_test_accuracy() if cell.finished else None, ".4f"),
        _format(_median(rs), ".4f"), f"{min(rs):.4f} to {max(rs):.4f}" if rs else "", rho,
        f"{cell.showing} of {len(cell.finished)}" if cell.finished else "", ", ".join(flags)]
    return "| " + " | ".join(cells) + " |"


def _verdict_at(setting: Setting, cell: LrCell | None, rule: str) -> str:
    """A settings-table cell: the verdict at the lr `rule` picks, with that lr and the count of seeds."""
    if rule == "by_paper" and setting.paper_lr is None:
        return "no lr named"
    if cell is None:
        return f"not in the grid ({setting.paper_lr:g})" if rule == "by_paper" else "no finished run"
    text = f"{setting.verdict(cell)} at {cell.lr:g} ({cell.showing} of {len(cell.rows)})"
    if rule == "by_loss" and (other := setting.decided_by_rule()) is not None:
        loss = other.median_loss(setting.shared_seeds) / cell.median_loss(setting.shared_seeds) - 1
        text += (f"; *decided by the lr rule*: {setting.verdict(other)} at {other.lr:g}, median loss "
                 f"{loss:+.0%}")
    return text


def _settings_table(group: Group, settings: list[Setting]) -> list[str]:
    paper = any(setting.paper_lr is not None for setting in settings)
    header = [*group.setting, *(["at the paper's lr ★"] if paper else []), "at the lr by training loss (bold)",
              "at the lr by test accuracy (†)", "largest lr with 4 of 5 seeds (1 of 1)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for setting in settings:
        largest = setting.largest_holding()
        cells = [_escape(value) for value in setting.key]
        if paper:
            cells.append(_verdict_at(setting, setting.by_paper, "by_paper"))
        cells += [_verdict_at(setting, setting.by_loss, "by_loss"), _verdict_at(setting, setting.by_accuracy,
                                                                                "by_accuracy"),
                  f"{largest.lr:g} ({largest.showing} of {len(largest.rows)})" if largest else "none"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


SAME_NETWORK = ("data", "model", "variant", "depth", "width", "optimizer", "lr")   # a setting at an lr, but epochs


def miss_evidence(setting: Setting, cell: LrCell, all_rows: list[dict], original: list[dict]) -> str:
    """What the longer runs and the original's code say of a failing cell (' At 1200 epochs: ...',
    ' The original's code (seed 666): r ...', each when the tables have it), then why it misses
    (verdicts.miss_cause)."""
    network = {tuple(row.get(key) for key in SAME_NETWORK) for row in cell.rows}
    longer = LrCell(cell.setting, cell.lr, [row for row in all_rows if row["group"] == "longer"
                                            and tuple(row.get(key) for key in SAME_NETWORK) in network])
    seeds = {row["seed"] for row in longer.rows}
    same_seeds = LrCell(cell.setting, cell.lr, [row for row in cell.rows if row["seed"] in seeds])
    partial = seeds < {row["seed"] for row in cell.rows}     # shape, original: seed 666 only at 1200 epochs
    text = ""
    if longer.finished:
        text += (f" At {LONGER_EPOCHS} epochs" + (f", seed{'s' if len(seeds) > 1 else ''} "
                                                    f"{', '.join(map(str, sorted(seeds)))} only" if partial else "")
                 + f": {longer.showing} of {len(longer.finished)} seeds show the law, median r "
                 f"{_format(_median(longer.rs()), '.4f')}, median final loss {_format(longer.median_loss(), '.3g')} "
                 f"(the same seeds at 600: {same_seeds.showing} of {len(same_seeds.rows)}, median r "
                 f"{_format(_median(same_seeds.rs()), '.4f')}, median final loss "
                 f"{_format(same_seeds.median_loss(), '.3g')}).")
    if partial:    # too few seeds to judge the setting at 1200 epochs: not a cause
        longer = LrCell(cell.setting, cell.lr, [])
    runs = {row["run"] for row in cell.rows}
    for record in (record for record in original if record["our_run"] in runs):
        text += (f" The original's code (seed 666): r {_format(record['pearson_r'], '.4f')}, final loss "
                 f"{_format(record['final_train_loss'], '.3g')}.")
    return text + f" Why: {miss_cause(setting, cell, longer, LONGER_EPOCHS)}."


def _group_section(group: Group, rows: list[dict], profiles: dict, all_rows: list[dict] = (),
                   original: list[dict] = ()) -> tuple[list[str], list[str]]:
    """(the group's markdown, its 'did not reproduce' sentences; those of a miss at the paper's or the
    training-loss lr add what the longer runs in `all_rows` and the `original` code's runs say)."""
    settings = settings_of(group, rows)
    lines = [f"## {group.name}", "", f"**The paper:** {group.claim}", ""]
    if figure_series(group, rows, profiles):
        lines += [f"![{group.name}]({group.name}.png)", ""]
    lines += [f"![{group.name}: the law over the lr grid]({group.name}-grid.png)", ""]
    verdicts = [(RULES[rule], group_verdict(group, settings, rule)) for rule in RULES
                if rule != "by_paper" or group.paper_lr]
    lines.append("**Verdict:** " + "; ".join(f"{verdict} ({rule})" for rule, verdict in verdicts)
                 + f"; some lr of the grid holds {some_lr_holds(settings)}.")
    lines += ["", f"Seeds: {_seeds_text(rows)}.", ""]
    problems = []
    for setting in settings:
        for cell, rules in failing_cells(group, setting):
            names = "; ".join({"by_paper": "the paper's", "by_loss": "training loss",
                               "by_accuracy": "test accuracy"}[rule] for rule in rules)
            text = (f"{group.name}, {_setting_text(group, setting.key)}: {setting.verdict(cell)} at lr {cell.lr:g} "
                    f"({names}): {cell.showing} of {len(cell.finished)} seeds show the law, {_r_summary(cell)}.")
            if {"by_paper", "by_loss"} & set(rules):
                largest = setting.largest_holding()
                text += (f" Shape of the miss: {miss_sentence(miss_fits(cell, profiles))}. Largest lr of the grid with "
                         f"{needed_seeds(len(SEEDS))} of {len(SEEDS)} seeds showing the law: " + (f"{largest.lr:g} ({largest.showing} of {len(largest.rows)} seeds)"
                                       if largest else "none") + f", beside the failing lr {cell.lr:g}."
                         + miss_evidence(setting, cell, all_rows, original))
            problems.append(text)
    lines += _settings_table(group, settings)
    choosing = any(setting.choice_is_partial for setting in settings)
    header = [*group.setting, "lr", "seeds", "median final loss",
              *(["loss that picks the lr (shared seeds)"] if choosing else []), "median test acc", "median r",
              "r range", "rho mean ± sd", "law (r <= -0.99)", "flags"]
    if choosing:
        lines += ["The lr is picked over the seeds every lr of a setting ran at (" + "; ".join(
            f"{_setting_text(group, setting.key)}: seed{'s' if len(setting.shared_seeds) > 1 else ''} "
            + ", ".join(map(str, setting.shared_seeds)) for setting in settings if setting.choice_is_partial)
                  + "); the other seeds ran at the picked lr only.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for setting in settings:
        lines += [_cell_row(group, setting, cell, profiles, choosing) for cell in setting.cells]
    test_splits = sorted({row["test_split"] for row in rows if row["test_split"]})
    if test_splits and test_splits != ["official"]:
        lines += ["", f"Test accuracy on the test split: {', '.join(_escape(s) for s in test_splits)} "
                  "(heldout: the images of the source not in the training subset)."]
    lines += ["", "Rerun: " + "; ".join(f"`{command}`" for command in group.commands), ""]
    return lines, problems


def _seeds_text(rows: list[dict]) -> str:
    """How many seeds a group's runs have: '5 (666, 1, 2, 3, 4)', '1 (666)', or per lr when they differ."""
    by_cell = defaultdict(set)
    for row in rows:
        by_cell[(tuple(row.get(key) for key in ("data", "model", "variant", "depth", "width", "optimizer")), row["lr"])].add(
            row["seed"])
    counts = sorted({len(seeds) for seeds in by_cell.values()})
    seeds = sorted({row["seed"] for row in rows}, key=lambda s: SEEDS.index(s) if s in SEEDS else 99)
    if len(counts) == 1:
        return f"{counts[0]} per setting and lr ({', '.join(map(str, seeds))})"
    return (f"{counts[-1]} ({', '.join(map(str, seeds))}) at the lr seed {SEEDS[0]}'s training chose, "
            f"{counts[0]} ({SEEDS[0]}) at the other lrs")


def _longer_section(group: Group, rows: list[dict], all_rows: list[dict]) -> list[str]:
    """Per failing setting: the law at 600 epochs (its own group's rows) and at LONGER_EPOCHS (`rows`)."""
    lines = [f"## {group.name}", "", f"**What it asks:** {group.claim}", "",
             f"| setting | lr | seeds | law at 600 epochs | median r at 600 | law at {LONGER_EPOCHS} epochs | "
             f"median r at {LONGER_EPOCHS} | median final loss at {LONGER_EPOCHS} | crosses {R_THRESHOLD}? |",
             "|---|---|---|---|---|---|---|---|---|"]
    identity = ("data", "model", "variant", "depth", "width", "optimizer", "lr", "seed")
    shorter = defaultdict(list)
    for row in all_rows:
        if row["group"] != group.name:
            shorter[tuple(row[key] for key in identity)].append(row)
    for setting in settings_of(group, rows):
        for cell in setting.cells:
            before = [next(iter(shorter.get(tuple(row[key] for key in identity[:-1]) + (row["seed"],), [])), None)
                      for row in cell.rows]
            before = [row for row in before if row is not None]
            source = sorted({row["group"] for row in before})
            verdict = count_verdict(cell.rows)
            answer = {"holds": "yes", "does not hold": "no", "undecided":
                      f"waiting ({len(cell.finished)} of {len(cell.rows)} finished)"}[verdict]
            if verdict != "undecided" and within_noise(cell.rows):
                answer += " (borderline)"
            name = ", ".join(source) + ": " + _setting_text(group, setting.key)
            lines.append(f"| {name} | {cell.lr:g} | {len(cell.rows)} | "
                         f"{sum(shows_law(row) for row in before)} of {len(before)} | "
                         f"{_format(_median(r['pearson_r'] for r in before), '.4f')} | "
                         f"{f'{cell.showing} of {len(cell.finished)}' if cell.finished else ''} | "
                         f"{_format(_median(cell.rs()), '.4f')} | "
                         f"{_format(cell.median_loss() if cell.finished else None, '.3g')} | {answer} |")
    lines += ["", "Rerun: " + "; ".join(f"`{command}`" for command in group.commands), ""]
    return lines


def _beyond_the_paper(rows: list[dict]) -> list[str]:
    lines = ["## Beyond the paper", "",
             "From the same checkpoints, without retraining: every fig1 and depth_cfm run of every seed "
             "re-measured with BatchNorm in eval mode (`python reanalyze.py RUN " + EVAL_REANALYSIS + "`), "
             "and the profile of a balanced, seeded 1,000-image subset of the test split (measured by the "
             "run itself in the paper's mode, `analysis.test_subset_size`). The paper has neither.", "",
             "| group | runs | law, paper's mode | law, eval mode | law, test split | median r (paper / eval / test) "
             "| eval rho < paper rho | test rho > paper rho |", "|---|---|---|---|---|---|---|---|"]
    for name in BEYOND_GROUPS:
        members = [row for row in rows if row["group"] == name and row["status"] == "completed"]
        paired = [row for row in members if row["eval_pearson_r"] is not None]
        tested = [row for row in members if row["test_pearson_r"] is not None]
        if not members:
            continue

        def law(selected, key):
            return f"{sum(row[key] is not None and row[key] <= R_THRESHOLD for row in selected)} of {len(selected)}"
        medians = " / ".join(_format(_median(row[key] for row in selected), ".4f") or "-"
                             for key, selected in (("pearson_r", members), ("eval_pearson_r", paired),
                                                   ("test_pearson_r", tested)))
        lower = sum(None not in (row["eval_rho"], row["rho"]) and row["eval_rho"] < row["rho"] for row in paired)
        higher = sum(None not in (row["test_rho"], row["rho"]) and row["test_rho"] > row["rho"] for row in tested)
        lines.append(f"| {name} | {len(members)} | {law(members, 'pearson_r')} | {law(paired, 'eval_pearson_r')} | "
                     f"{law(tested, 'test_pearson_r')} | {medians} | {lower} of {len(paired)} | {higher} of {len(tested)} |")
    return lines + [""]


def render(rows: list[dict], profiles: dict, context: dict, groups=GROUPS, reruns: list[dict] | None = None,
           original: list[dict] | None = None) -> str:
    """README.md of the report, from the tables alone (reruns: reruns.csv's rows, original:
    original_code.csv's, if any)."""
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    shown = [group for group in groups if group.name in by_group and group.kind == "paper"]
    needed = needed_seeds(len(SEEDS))
    lines = ["# Reproduction of He & Su, \"A Law of Data Separation in Deep Learning\" (PNAS 2023)", "",
             f"Generated from committed tables: `{MERGE_COMMAND}` adds a machine's finished runs to "
             f"`runs.csv` and `profiles.csv`; `{REBUILD_COMMAND}` rebuilds this file and every figure from "
             "them alone. Do not edit it by hand.", "",
             "**Rules, stated before the results.** A run shows the law when the least-squares line of "
             f"ln D_l against l has Pearson r <= {R_THRESHOLD}, from a fit of at least {MIN_FIT_POINTS} points "
             "(two points give r = +-1 whatever the profile: such runs are flagged and never count; a fit takes "
             "the finite, positive D only, and a fit that left points out is flagged). "
             f"A run is repeated over seeds ({', '.join(map(str, SEEDS))}: the seed draws the training subset, "
             "the initialization and the batch order); the summary table says how many each group has "
             "(original and residual: seed 666 only). A setting (a depth, width, shape, optimizer...) is judged "
             "at the lr each of three rules picks. First *the paper's lr*, where the paper or its repository "
             "names one (★): fig1's from the lookup table of `conf/experiment/fig1.yaml` (the lrs of the "
             "paper's seed commands), the original group's and the controls' from the file names of the "
             "original repository's published figures. Then two rules by training alone, never by the r it "
             "gives: the lr of the lowest median final training loss over the seeds every lr of the setting "
             "ran at (ties: the higher median test accuracy, then the smaller lr; **bold**), and the lr of the "
             "highest median test accuracy (ties: the lower median final training loss, then the smaller lr, "
             "so nobn, where every lr has median test accuracy 0.1000, takes its lowest-loss lr; †). At an lr "
             f"a setting *holds* when at least {needed} of its {len(SEEDS)} seeds show the law (an lr run at one "
             "seed: that seed), *does not hold* when too few do, and is *undecided* while any of its planned "
             f"runs is missing. **Margin:** the same run on another CPU gives another r (the committed rows rerun on "
             f"an Intel Xeon moved by a median |delta r| of 0.0029 over the first 30 reruns, up to 0.0225 at depth 18: "
             f"see Numbers across CPUs), so a seed whose r lies within {R_NOISE} of {R_THRESHOLD} may fall on "
             "either side; a setting whose verdict such seeds decide (fewer than the needed seeds below "
             f"{R_THRESHOLD - R_NOISE:g}, enough below {R_THRESHOLD + R_NOISE:g}) is *borderline*, ""neither holds nor does not hold. A setting whose runner-up lr by training loss has a median final "
             f"training loss within {LOSS_NEAR:.0%} of the chosen lr's and another verdict is marked *decided by "
             "the lr rule*. A group holds when every setting holds; otherwise the verdict says in how many it "
             "holds and names the borderline and undecided settings, which count neither for nor against the "
             "law (residual's \"does not hold (4 of 6 settings undecided)\": none of its 2 decided settings "
             "holds). A control group *fails, as the paper says* when no setting holds. Groups width and "
             "shape run seeds 1-4 only at the lr seed 666's training chose (the 1,000- and 2,500-wide layers "
             "are most of the compute), so their lr is picked at seed 666 and judged over the five seeds at "
             "that lr. Measured as the paper did: BatchNorm in train mode over consecutive batches of 100 "
             "training images.", "",
             "The heat map of each group shows the law over its whole lr grid, whatever any rule picks; "
             f"the column *some lr holds* counts the settings in which at least one lr of the grid has {needed} of "
             f"its {len(SEEDS)} seeds (1 of 1) showing the law, the margin aside. "
             f"The last column is the verdict the same rules give from seed {SEEDS[0]}'s runs alone (what a "
             "one-seed report says), to show what the other seeds changed.", "",
             "| group | seeds | runs finished | verdict at the paper's lr | verdict (lr by training loss) | "
             f"verdict (lr by test accuracy) | some lr holds | seed {SEEDS[0]} alone (lr by training loss) |",
             "|---|---|---|---|---|---|---|---|"]
    sections, problems, misses = [], [], []
    for group in shown:
        members = by_group[group.name]
        settings = settings_of(group, members)
        one_seed = settings_of(group, [row for row in members if row["seed"] == SEEDS[0]])
        finished = sum(row["status"] in FINISHED for row in members)
        seeds = sorted({row["seed"] for row in members})
        lines.append(f"| [{group.name}](#{group.name}) | {len(seeds)} | {finished} of {len(members)} | "
                     f"{group_verdict(group, settings, 'by_paper')} | {group_verdict(group, settings)} | "
                     f"{group_verdict(group, settings, 'by_accuracy')} | {some_lr_holds(settings)} | "
                     f"{group_verdict(group, one_seed)} |")
        section, found = _group_section(group, members, profiles, rows, original or [])
        sections += section
        problems += found
        misses += misses_of(group, settings, profiles)
    lines += ["", "## What did not reproduce", "",
              "Every setting that does not hold (or is borderline) at the lr of a rule, that lr's rules named. "
              "Where that is the paper's lr or the training-loss lr, a two-segment fit of ln D_l (two lines "
              "joined at the layer of least squares, per seed) says the shape of the miss, and the largest lr of "
              "the grid at which the setting holds is named; the figure shows their profiles. Its runs at "
              f"{LONGER_EPOCHS} epochs (group longer) and the original's code at seed 666 (The original's code) "
              "follow where they ran, then *Why*, the first of these causes the measurements show: the margin "
              "(borderline), training length (it holds at "
              f"{LONGER_EPOCHS} epochs), the lr (it holds at another lr of the grid), partly training length "
              "(more seeds show the law at twice the epochs, not enough, and no other lr holds), else not found.", ""]
    lines += [f"- {problem}" for problem in problems] or ["- Every decided verdict is what the paper says."]
    if misses:
        lines += ["", "![the failing settings' profiles and their two-segment fits](misses.png)"]
    lines += [""] + sections
    for group in groups:
        if group.kind == "longer" and group.name in by_group:
            lines += _longer_section(group, by_group[group.name], rows)
    lines += _original_code(rows, original or [])
    lines += _beyond_the_paper(rows) + _across_cpus(rows, reruns or [], groups)
    lines += _not_run(context) + _machines(rows, context)
    return "\n".join(lines) + "\n"


RERUNS_COMMAND = "python reproduction_report.py docs/reproduction --reruns DIR"
ORIGINAL_CODE_COMMAND = "python benchmarks/original_code.py CHECKOUT"


def _original_code(rows: list[dict], records: list[dict]) -> list[str]:
    """The section 'The original's code': its r beside ours (seed 666), per failing setting."""
    lines = ["## The original's code", ""]
    if not records:
        return lines + [f"No failing setting is run through the original repository's scripts in this report yet "
                        f"(`{ORIGINAL_CODE_COMMAND}` writes original_code.csv).", ""]
    ours = {row["run"]: row for row in rows}
    machines = sorted({record["machine"] for record in records})
    commits = sorted({record["original_commit"] for record in records})
    agree = sum((record["pearson_r"] is not None and record["pearson_r"] <= R_THRESHOLD) == shows_law(ours[record["our_run"]])
                for record in records)
    lines += [f"Each failing setting of fig1, depth_cfm and imbalanced (at the paper's or the training-loss lr) run "
              f"once through the original repository's own scripts (HornHehhf/Equi-Separation at "
              f"{', '.join(_escape(commit[:12]) for commit in commits)}), unchanged but for the CPU edits (device, "
              f"paths; `{ORIGINAL_CODE_COMMAND}`), on {', '.join(map(_escape, machines))}, beside our run of the "
              f"same setting at the same seed 666 (the original always seeds 666; its RNG draws differ from ours, "
              f"so the two runs are two samples of the setting, not the same run). The two agree on whether the "
              f"run shows the law in {agree} of {len(records)} settings.", "",
              "| setting | lr | the original's command | r (original) | r (ours, seed 666) | final loss (original / ours) | "
              "test acc (original / ours) |", "|---|---|---|---|---|---|---|"]
    for record in records:
        row = ours[record["our_run"]]
        lines.append(f"| {_escape(record['group'])}, {_escape(record['setting'])} | {record['lr']:g} | "
                     f"{markdown_code(record['command'], table=True)} | {_format(record['pearson_r'], '.4f')} | "
                     f"{_format(row['pearson_r'], '.4f')} | {_format(record['final_train_loss'], '.3g')} / "
                     f"{_format(row['final_train_loss'], '.3g')} | {_format(record['test_accuracy'], '.4f')} / "
                     f"{_format(row['test_accuracy'], '.4f')} |")
    return lines + [""]


def _across_cpus(rows: list[dict], reruns: list[dict], groups=GROUPS) -> list[str]:
    """The section 'Numbers across CPUs': per rerun |delta r|, and per setting holding a rerun row
    whether any rule's verdict moves when the rerun's numbers replace the committed ones."""
    lines = ["## Numbers across CPUs", ""]
    if not reruns:
        return lines + [f"No committed row is rerun on another CPU in this report yet (`{RERUNS_COMMAND}` records "
                        "the completed runs of DIR that rerun one, in reruns.csv).", ""]
    deltas = [abs(rerun["pearson_r"] - rerun["recorded_pearson_r"]) for rerun in reruns]
    crossed = sum((rerun["pearson_r"] <= R_THRESHOLD) != (rerun["recorded_pearson_r"] <= R_THRESHOLD) for rerun in reruns)
    machines = sorted({rerun["machine"] for rerun in reruns})
    lines += [f"{len(reruns)} committed rows rerun (reruns.csv, `{RERUNS_COMMAND}`) on {', '.join(map(_escape, machines))}: "
              f"|delta r| median {statistics.median(deltas):.4f}, largest {max(deltas):.4f}; {crossed} rerun(s) "
              f"crossed {R_THRESHOLD} (rows near the threshold were rerun first, so crossings are over-represented). "
              "The torch kernels are pinned to AVX2 on both, yet the numbers differ: "
              "the committed rows are bit for bit only on the CPU family that made them.", "",
              "| run | group | made on | r there | rerun on | r here | abs(delta r) | final loss there / here |",
              "|---|---|---|---|---|---|---|---|"]
    committed = {(row["group"], row["run"]): row for row in rows}
    for rerun, delta in sorted(zip(reruns, deltas), key=lambda item: (item[0]["group"], item[0]["run"])):
        row = committed[(rerun["group"], rerun["run"])]
        lines.append(f"| {_escape(rerun['run'])} | {_escape(rerun['group'])} | {_escape(rerun['recorded_machine'])} | "
                     f"{rerun['recorded_pearson_r']:.4f} | {_escape(rerun['machine'])} | {rerun['pearson_r']:.4f} | "
                     f"{delta:.4f} | {_format(row['final_train_loss'], '.3g')} / {rerun['final_train_loss']:.3g} |")
    lines += ["", "Per setting with a rerun row: its verdict at each rule's lr with the committed numbers and with "
              "the reruns' in their place (the lr rules may pick another lr with the new losses).", ""]
    by_run = defaultdict(list)
    for rerun in reruns:
        by_run[rerun["run"]].append(rerun)
    moves = []
    for group in groups:
        if group.kind != "paper":
            continue
        members = [row for row in rows if row["group"] == group.name]
        swapped = [{**row, **{key: by_run[row["run"]][-1][key] for key in RERUN_NUMBERS[:-1]}}
                   if row["run"] in by_run and row["status"] == "completed" else row for row in members]
        for before, after in zip(settings_of(group, members), settings_of(group, swapped)):
            if not any(row["run"] in by_run for cell in before.cells for row in cell.rows):
                continue
            changes = [f"{RULES[rule]}: {before.verdict(getattr(before, rule))} at {getattr(before, rule).lr:g} -> "
                       f"{after.verdict(getattr(after, rule))} at {getattr(after, rule).lr:g}"
                       for rule in RULES if getattr(before, rule) is not None and getattr(after, rule) is not None
                       and (before.verdict(getattr(before, rule)), getattr(before, rule).lr)
                       != (after.verdict(getattr(after, rule)), getattr(after, rule).lr)]
            moves.append(f"- {group.name}, {_setting_text(group, before.key)}: "
                         + ("; ".join(changes) if changes else "no verdict and no lr moves") + ".")
    return lines + moves + [""]


def _not_run(context: dict) -> list[str]:
    lines = ["## Not run here", "",
             "The per-epoch cost below is measured on this machine by `python benchmarks/epoch_costs.py` "
             "(CPU time of one thread, training steps only, on random inputs of the real shape), so a reader "
             "can plan; the total is that cost times the epochs of every run of the group.", "",
             "| group | why not here | command | model | seconds per epoch | runs | total, one thread |",
             "|---|---|---|---|---|---|---|"]
    reasons = dict(NOT_RUN)
    for cost in context.get("epoch_costs", []):
        if cost["group"] not in reasons or (cost["group"] == "original" and "cifar10" not in cost["model"]):
            continue
        hours = float(cost["seconds_per_epoch"]) * int(cost["epochs"]) * int(cost["runs"]) / 3600
        lines.append(f"| {_escape(cost['group'])} | {reasons[cost['group']]} | {markdown_code(cost['command'], table=True)} | "
                     f"{_escape(cost['model'])} | {float(cost['seconds_per_epoch']):.3g} | {_escape(cost['runs'])} | "
                     f"{hours:.1f} h |")
    return lines + [""]


def _shared_training(unique: dict[str, dict]) -> list[str]:
    """The line on runs that measured a network another run trained (trained_in): their run time, and what
    training them again would have taken (their twins' run time), where the twins are in the tables."""
    shared = [row for row in unique.values() if row.get("trained_in")]
    if not shared:
        return []
    twins = [(row, unique.get(row["trained_in"])) for row in shared]
    took = sum(row["wall_seconds"] or 0.0 for row in shared) / 3600
    again = sum(twin["wall_seconds"] or 0.0 for _, twin in twins if twin) / 3600
    known = sum(twin is not None for _, twin in twins)
    runs = f"{len(shared)} run{'s' if len(shared) != 1 else ''}"
    return [f"- Training shared: {runs} measured the network that a run of the same config but what is "
            f"measured trained (shared_training.py, column trained_in); they took {took:.2f} h, where "
            f"training them again would have taken about {again:.2f} h (the run time of the {known} "
            f"run{'s' if known != 1 else ''} that trained them, in the tables), {again - took:.2f} h saved."]


def _machines(rows: list[dict], context: dict) -> list[str]:
    unique = {row["run"]: row for row in rows if row["status"] in FINISHED}
    lines = ["## Machines and compute", "", "| machine | CPU kernels | device | torch | commits | runs | run time |",
             "|---|---|---|---|---|---|---|"]
    by_machine = defaultdict(list)
    for row in unique.values():
        by_machine[(row["machine"] or "not recorded", row["cpu_kernels"] or "not recorded",
                    row["device"] or "", row["torch"] or "")].append(row)
    for (machine, kernels, device, torch_version), members in sorted(by_machine.items()):
        commits = sorted({row["commit"][:7] if row["commit"] else "not recorded" for row in members})
        hours = sum(row["wall_seconds"] or 0.0 for row in members) / 3600
        lines.append(f"| {_escape(machine)} | {_escape(kernels)} | {_escape(device)} | {_escape(torch_version)} | "
                     f"{', '.join(_escape(c) for c in commits)} | {len(members)} | {hours:.2f} h |")
    total = sum(row["wall_seconds"] or 0.0 for row in unique.values()) / 3600
    lines += ["", f"- Compute: {len(unique)} runs, {total:.2f} h of run time in all (each run on one thread)."]
    lines += _shared_training(unique)
    for queue in context.get("queues", []):
        lines.append(f"- Sweep {markdown_code(queue['command'])} (started {_escape(queue.get('started') or '?')}): "
                     f"{queue['jobs']} jobs, at most {queue['peak_parallel_jobs']} at once, "
                     f"{queue['wall_seconds'] / 60:.1f} min wall time.")
    if any(row["machine"] is None for row in unique.values()):
        lines.append("- Rows whose machine is 'not recorded' were run before the tables existed (the one-seed "
                     "report of 2026-11-27, on an AMD EPYC with AVX2 kernels): they hold no profile.")
    return lines
