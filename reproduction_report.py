"""The reproduction report: per experiment group of the paper, its claim, a figure of every seed's
profile, a table per setting and learning rate, and a verdict over seeds computed by a stated rule.

    python reproduction_report.py docs/reproduction --merge logs/     # add logs/' finished runs, rebuild
    python reproduction_report.py docs/reproduction                   # rebuild README.md and the PNGs
    python reproduction_report.py docs/reproduction --reruns DIR      # record DIR's reruns of committed rows
    python reproduction_report.py docs/reproduction --campaign        # the sweep commands of the campaign

The evidence lives in committed tables, not in any machine's logs/ (report_tables); this command merges
(report_merge) and rebuilds README.md (report_markdown) and every figure (report_figures) from them by
the rules of verdicts.py. Nothing is written until every output is rendered and every output name
checked (report_output: no symbolic link or other non-regular file at a name is followed or replaced,
refused in one error line instead), and each file is then replaced atomically: a run that fails leaves
the previous README.md, tables and figures as they were.
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)

import argparse
import contextlib
import os
import sys
from collections import defaultdict
from pathlib import Path

from atomic_io import atomic_write_json, folder_lock
from campaign import GROUPS
from queue_logs import add_queues
from report_figures import figure_series, grid_figure_png, grid_series, group_figure_png, misses_figure_png, misses_of
from report_markdown import render
from report_merge import merge_tables, record_reruns, write_tables
from report_tables import read_context, read_epoch_costs, read_original_code, read_reruns, read_tables, report_output
from run_records import BadFile, printable
from safe_output import OneLineParser, output_folder, UnsafeOutput, write_outputs
from verdicts import settings_of


# -------------------------------------------------------------------------------------- the commands
def rebuild(out: Path, groups=GROUPS, pending: dict | None = None) -> tuple[str, dict[str, object]]:
    """README.md's text and each figure's data (name without .png -> what it draws), from out/runs.csv,
    out/profiles.csv, out/reruns.csv, out/context.json (or their pending content: text of the CSVs, the
    context as a dict)."""
    pending = pending or {}
    tables = read_tables(out, groups, pending)
    rows, profiles = tables.rows, tables.profiles
    reruns = read_reruns(out, rows, pending.get("reruns.csv"))
    original = read_original_code(out, rows, pending.get("original_code.csv"))
    context = pending["context.json"] if "context.json" in pending else read_context(out / "context.json")
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
    figures, misses = {}, []
    for group in groups:
        if group.name in by_group and group.kind == "paper":
            figures[group.name] = figure_series(group, by_group[group.name], profiles)
            figures[f"{group.name}-grid"] = grid_series(group, by_group[group.name])
            misses += misses_of(group, settings_of(group, by_group[group.name]), profiles)
    figures["misses"] = misses
    return render(rows, profiles, context, groups, reruns, original), figures


def figure_png(name: str, data, groups=GROUPS) -> bytes | None:
    """The PNG of the figure `name` of rebuild (a group's profiles, its heat map '-grid', or 'misses')."""
    if name == "misses":
        return misses_figure_png(data)
    if name.endswith("-grid"):
        return grid_figure_png(data) if data else None
    return group_figure_png(next(group for group in groups if group.name == name), data)


def write_report(out: Path, groups=GROUPS, pending: dict | None = None) -> list[Path]:
    """README.md and the PNGs of the figures with data, rebuilt from the tables in `out` (or `pending`:
    name -> the new runs.csv, profiles.csv or reruns.csv text, or the context.json dict, written too).
    Everything is rendered and every output name checked (output_path) before anything is written;
    README.md last."""
    pending = dict(pending or {})
    text, figures = rebuild(out, groups, pending)
    drawn = [name for name, data in figures.items() if data]
    output_folder(out)
    for name in [*pending, *(f"{name}.png" for name in drawn), "README.md"]:
        report_output(out, name)         # refuse before drawing anything
    pngs = {f"{name}.png": figure_png(name, figures[name], groups) for name in drawn}
    context = pending.pop("context.json", None)
    written = write_tables(out, pending)
    if context is not None:
        atomic_write_json(report_output(out, "context.json"), context)
        written.append(out / "context.json")
    return written + write_outputs(out, pngs) + write_outputs(out, {"README.md": text})


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="the report folder (docs/reproduction)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="LOGS", default=[],
                        help="add the finished runs under these folders (e.g. logs/) to the tables first")
    parser.add_argument("--queue-log", type=Path, nargs="*", default=[],
                        help="run_experiments.sh queue logs (logs/jobs/run-*.log): the sweeps' wall times")
    parser.add_argument("--commit", help="with --merge: the commit of runs whose results.json records none")
    parser.add_argument("--machine", help="with --merge: the CPU of runs whose results.json records none")
    parser.add_argument("--cpu-kernels", help="with --merge: the CPU kernels of runs that record none")
    parser.add_argument("--new-report", action="store_true",
                        help="with --merge: start a new report in a folder that holds no runs.csv yet (without it "
                             "such a folder is refused: a typo would start an all-missing report)")
    parser.add_argument("--retire-unplanned", action="store_true",
                        help="with --merge: remove the finished rows the campaign no longer plans, and their "
                             "profiles (otherwise they are kept and reported)")
    parser.add_argument("--reruns", type=Path, nargs="+", metavar="DIR", default=[],
                        help="record the completed runs under these folders that rerun a committed row (on another "
                             "machine) in reruns.csv, then rebuild")
    parser.add_argument("--campaign", action="store_true",
                        help="print the sweep commands of the whole campaign (each skips recorded runs) and exit")
    args = parser.parse_args(argv)
    for option in ("new_report", "retire_unplanned"):
        if getattr(args, option) and not args.merge:
            parser.error(f"--{option.replace('_', '-')} goes with --merge")
    if args.campaign:
        for group in GROUPS:
            for command in group.commands:
                print(command.replace("sh run_experiments.sh ", f"sh run_experiments.sh --skip-recorded {args.report} "))
        return
    for option, paths in (("--merge", args.merge), ("--queue-log", args.queue_log), ("--reruns", args.reruns)):
        for path in paths:
            if not os.path.lexists(path):
                parser.error(f"{option} {path}: no such file or folder")
    try:
        if args.merge and not os.path.lexists(args.report / "runs.csv") and not args.new_report:
            raise BadFile(args.report / "runs.csv", "no such file: not a report folder (a typo?); --new-report "
                                                    "starts a new report there")
        if args.new_report:
            output_folder(args.report)
        with folder_lock(args.report) if args.report.is_dir() else contextlib.nullcontext():
            written, lines = _report_command(args)   # read, merge and write under the folder's lock
    except (OSError, ValueError, KeyError) as error:   # BadFile and UnsafeOutput (ValueErrors) name their path
        where = "" if isinstance(error, (BadFile, UnsafeOutput)) else f"{args.report}: "
        print(f"error: {printable(where)}{printable(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    for line in lines:
        print(line, file=sys.stderr if line.startswith("warning") else sys.stdout)
    print(f"wrote {', '.join(path.name for path in written)} in {printable(args.report)}")


def _report_command(args) -> tuple[list[Path], list[str]]:
    """main's merge (if asked), context facts and rebuild: the paths written and the merge's lines."""
    pending, lines = {}, []
    if args.merge:
        fallback = {"commit": args.commit, "machine": args.machine, "cpu_kernels": args.cpu_kernels}
        outcome, tables = merge_tables(args.report, args.merge, fallback, GROUPS, args.retire_unplanned)
        pending.update(tables)
        lines = outcome.lines()
    if args.reruns:
        if args.merge:
            raise BadFile(args.report / "reruns.csv", "--reruns goes without --merge (record the reruns of merged tables)")
        pending["reruns.csv"], rerun_lines = record_reruns(args.report, args.reruns)
        lines += rerun_lines
    if args.queue_log or args.merge:
        context = read_context(args.report / "context.json")
        add_queues(context, args.queue_log)
        context["epoch_costs"] = read_epoch_costs(args.report / "epoch_costs.csv")
        pending["context.json"] = context
    return write_report(args.report, GROUPS, pending), lines


if __name__ == "__main__":
    main()
