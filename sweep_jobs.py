"""Expand experiment presets (conf/experiment/*.yaml) into one command line per run of their sweeps,
the same runs (same configs, same run directories) as `representation_dynamics_terminal.py -m
+experiment=PRESET`; run_experiments.sh runs what this prints.

    python sweep_jobs.py fig1                    # one command line per run of the fig1 preset (9)
    python sweep_jobs.py residual epochs=1       # a group; KEY=VALUE overrides go into every run
    python sweep_jobs.py all --list              # per group a '# group GROUP: N jobs' line, its commands
    python sweep_jobs.py all --longest-first     # every job, the longest (estimated) first
    python sweep_jobs.py fig1 seed=666,1,2 --skip-recorded docs/reproduction   # only runs not in its runs.csv
    python sweep_jobs.py --groups                # the group names
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import argparse
import csv
import dataclasses
import itertools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from config_utils import CONF_DIR, expand_root_aliases, register_resolvers, run_name
from override_check import refuse_override_typos

ENTRY = "representation_dynamics_terminal.py"
EXPERIMENT_DIR = CONF_DIR / "experiment"

# The paper's experiment groups (those of the original code's run_experiments.sh) -> their presets.
GROUPS = {
    "fig1": ["fig1"],
    "lr": ["lr"],
    "imbalanced": ["imbalanced"],
    "depth_cm": ["depth_cm"],
    "depth_cfm": ["depth_cfm"],
    "depth_cm5k": ["depth_cm5k"],
    "depth_cc": ["depth_cc"],
    "width": ["width"],
    "shape": ["shape"],
    "cnn": ["cnn"],
    "residual": ["residual_gresnet", "residual_mix"],
    "frozen": ["frozen"],
    "original": ["original"],
    "linearized": ["linearized"],
    "nobn": ["nobn"],
}
ALIASES = {"all": list(GROUPS), "depth": ["depth_cm", "depth_cfm", "depth_cc", "depth_cm5k"]}


@dataclass(frozen=True)
class Job:
    group: str
    preset: str
    overrides: tuple[str, ...]     # +experiment=PRESET first, then the sweep's choices and the extras
    name: str                      # preset and swept values, e.g. fig1-optimization=sgd-layer_num=2

    cost: float = 0.0              # estimated seconds on one CPU thread (estimate_cost); 0: not estimated
    run_name: str = ""             # its run directory name (filled in with compose_jobs=True)
    config: dict | None = field(default=None, compare=False)   # its resolved config (compose_jobs=True)

    def command(self, python: str = "python") -> str:
        return shlex.join([python, ENTRY, *self.overrides])


def preset_names() -> list[str]:
    return sorted(path.stem for path in EXPERIMENT_DIR.glob("*.yaml"))


def expand_groups(names: list[str]) -> list[tuple[str, list[str]]]:
    """[(group, its presets)] for group names, aliases (all, depth) and preset names, in order."""
    known = preset_names()
    expanded = []
    for name in names:
        if name in ALIASES:
            expanded += expand_groups(ALIASES[name])
        elif name in GROUPS:
            expanded.append((name, GROUPS[name]))
        elif name in known:
            expanded.append((name, [name]))
        else:
            raise SystemExit(f"error: unknown group or preset {name!r}; groups: "
                             f"{', '.join([*GROUPS, *ALIASES])}; presets: {', '.join(known)}")
    return expanded


def product_of(arguments: list[str], config_loader=None) -> list[list[str]]:
    """Hydra's basic sweeper on override strings: one override list per job.

    Keys keep the position of their first appearance and the value of their last one; a sweep
    (a,b,c / range(...) / choice(...) / glob(...), with sort or shuffle) contributes its values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create(config_loader).parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise SystemExit(f"error: {override.input_line}: only discrete sweeps can be expanded")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)


def preset_jobs(group: str, preset: str, extras: list[str], hydra_config, config_loader) -> list[Job]:
    """The jobs of one preset, each with `extras` (overrides; sweeps multiply) added."""
    experiment = f"+experiment={preset}"
    params = hydra_config.sweeper.params or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + [experiment, *extras]
    override_lists = product_of(arguments, config_loader)
    varying = [index for index in range(len(override_lists[0]))
               if len({job[index] for job in override_lists}) > 1]
    jobs = []
    for overrides in override_lists:
        ordered = [experiment] + [o for o in overrides if o != experiment]
        name = "-".join([preset] + [_safe(overrides[index].lstrip("+~")) for index in varying])
        jobs.append(Job(group, preset, tuple(ordered), name))
    return jobs


# A rough cost model of one run on one CPU thread, only used to start the longest jobs first (so the
# last jobs of a queue are short and no core idles at the end). Fitted by eye to this repository's
# MLP runs on a 2-core x86 machine: a per-point overhead per sample-epoch and a per-parameter one.
SECONDS_PER_POINT_SAMPLE_EPOCH = 2e-6
SECONDS_PER_PARAMETER_SAMPLE_EPOCH = 1.2e-10


def estimate_cost(cfg) -> float:
    """Estimated seconds of one run of the composed config `cfg` on one CPU thread."""
    import torch

    from data import input_shape_of
    from train_models import build_model

    with torch.device("meta"):
        model = build_model(cfg, input_shape_of(cfg.data), int(cfg.data.num_classes))
    parameters = sum(p.numel() for p in model.parameters())
    counts = cfg.data.get("class_counts")
    samples = sum(counts) if counts else int(cfg.data.sample_size_per_class) * int(cfg.data.num_classes)
    epochs = int(cfg.epochs) + (int(cfg.training.stage1_epochs) if cfg.training.name == "frozen" else 0)
    per_sample_epoch = (len(model.measured_points) * SECONDS_PER_POINT_SAMPLE_EPOCH
                        + parameters * SECONDS_PER_PARAMETER_SAMPLE_EPOCH)
    return epochs * samples * per_sample_epoch


def _with_config(job: Job, cfg, estimate: bool = True) -> Job:
    return dataclasses.replace(job, cost=estimate_cost(cfg) if estimate else 0.0, run_name=run_name(cfg),
                               config=OmegaConf.to_container(cfg, resolve=True))


def sweep_jobs(names: list[str], extras: list[str] = (), compose_jobs: bool = False, estimate: bool = True
               ) -> tuple[list[tuple[str, list[Job]]], Path]:
    """[(group, its jobs)] for group/preset names, and the folder for job logs (<log_root>/jobs).
    With compose_jobs=True each job's config is composed, so that it carries its run directory name and
    (unless estimate=False) its estimated cost (estimate_cost)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    register_resolvers()
    extras = expand_root_aliases(list(extras))
    groups = expand_groups(list(names))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parsed = OverridesParser.create(loader).parse_overrides(list(extras))
        fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
        result = []
        for group, presets in groups:
            jobs = []
            for preset in presets:
                cfg = compose("config", overrides=[f"+experiment={preset}", *fixed],
                              return_hydra_config=True)
                jobs += preset_jobs(group, preset, list(extras), cfg.hydra, loader)
            if compose_jobs:
                jobs = [_with_config(job, compose("config", overrides=list(job.overrides)), estimate)
                        for job in jobs]
            result.append((group, jobs))
        log_dir = Path(str(compose("config", overrides=fixed).log_root)) / "jobs"
    return result, log_dir


def recorded_runs(report: Path) -> set[str]:
    """Names of the finished runs in a report's runs.csv (reproduction_report.py's table)."""
    table = Path(report) / "runs.csv" if Path(report).is_dir() else Path(report)
    try:
        with open(table, newline="") as handle:
            return {row.get("run") for row in csv.DictReader(handle) if row.get("status") in ("completed", "diverged")}
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise SystemExit(f"error: --skip-recorded {report}: {error}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Print one command line per run of experiment presets (conf/experiment/).",
        epilog="Arguments with '=' are overrides added to every run (sweeps like seed=1,2 multiply).")
    parser.add_argument("names", nargs="*", metavar="GROUP|PRESET|KEY=VALUE")
    parser.add_argument("--list", action="store_true",
                        help="precede each group by '# group GROUP: N jobs' and end with the total")
    parser.add_argument("--log", action="store_true",
                        help="append each job's output to <log_root>/jobs/<job name>.log")
    parser.add_argument("--python", default="python", help="interpreter in the command lines")
    parser.add_argument("--groups", action="store_true", help="print the group names and exit")
    parser.add_argument("--longest-first", action="store_true",
                        help="print all jobs after the group lines, the longest (estimated) first")
    parser.add_argument("--skip-recorded", type=Path, metavar="REPORT",
                        help="leave out the runs already finished in REPORT/runs.csv (docs/reproduction)")
    args = parser.parse_intermixed_args(argv)
    if args.groups:
        print(" ".join([*GROUPS, *ALIASES]))
        return
    names = [name for name in args.names if "=" not in name]
    extras = [name for name in args.names if "=" in name]
    if not names:
        parser.error("name at least one group or preset (see --groups)")
    if extras:   # a typo: the entry's one line, for the jobs of every preset named
        presets = dict.fromkeys(preset for _, presets in expand_groups(names) for preset in presets)
        refuse_override_typos(["-m", f"+experiment={','.join(presets)}", *extras], "config", ENTRY)
    groups, log_dir = sweep_jobs(names, extras, compose_jobs=args.longest_first or bool(args.skip_recorded))
    if args.skip_recorded:
        recorded = recorded_runs(args.skip_recorded)
        kept = [(group, [job for job in jobs if job.run_name not in recorded]) for group, jobs in groups]
        skipped = sum(len(jobs) for _, jobs in groups) - sum(len(jobs) for _, jobs in kept)
        print(f"# skipped: {skipped} jobs already recorded in {args.skip_recorded}")
        groups = kept

    def print_jobs(jobs):
        for job in jobs:
            line = job.command(args.python)
            if args.log:
                line += f" >> {shlex.quote(str(log_dir / (job.name + '.log')))} 2>&1"
            print(line)

    if args.list and args.log:
        print(f"# job logs: {log_dir}")
    for group, jobs in groups:
        if args.list:
            presets = sorted({job.preset for job in jobs}, key=[j.preset for j in jobs].index)
            parts = f" (presets {', '.join(presets)})" if presets != [group] else ""
            estimate = f", about {sum(j.cost for j in jobs) / 60:.0f} min on one thread" if args.longest_first else ""
            print(f"# group {group}: {len(jobs)} jobs{parts}{estimate}")
        if not args.longest_first:
            print_jobs(jobs)
    every_job = [job for _, jobs in groups for job in jobs]
    if args.longest_first:
        print_jobs(sorted(every_job, key=lambda job: -job.cost))
    if args.list:
        print(f"# total: {len(every_job)} jobs")


if __name__ == "__main__":
    main()
