"""Expand experiment presets (conf/experiment/*.yaml) into one command line per run of their sweeps,
the same runs (same configs, same run directories) as `representation_dynamics_terminal.py -m
+experiment=PRESET`, and estimate each run's time from the committed measurements; run_experiments.sh
runs what this prints.

    python sweep_jobs.py fig1                    # one command line per run of the fig1 preset (9)
    python sweep_jobs.py residual epochs=1       # a group; KEY=VALUE overrides go into every run
    python sweep_jobs.py all --list              # per group a '# group GROUP: N jobs' line, its commands
    python sweep_jobs.py all --longest-first     # every job, the longest (estimated) first
    python sweep_jobs.py all --list --longest-first   # with each group's and each job's estimate, the total
    python sweep_jobs.py fig1 seed=666,1,2 --skip-recorded docs/reproduction   # only runs not in its runs.csv
    python sweep_jobs.py --groups                # the group names
    python sweep_jobs.py --fit-fallback          # refit the fallback cost model to docs/reproduction/runs.csv

Estimates (CostModel) are seconds on one CPU thread per job: the measured process start-up plus the run
(--warm-workers, as run_experiments.sh's CPU queue runs them: a warm worker's fixed cost per job instead),
whose cost per epoch comes from measured like runs (docs/reproduction/runs.csv), else a measured epoch cost
(docs/reproduction/epoch_costs.csv), else a fallback model (a cost per measured point and per parameter,
fitted to runs.csv: within 1.5x of the MLP groups but for depth_cm5k at 0.5x, and 50x too low for the
residual networks, whose cost grows with the image area, not the parameters; every group of the paper has
a measured source). The per-group line names the sources. `--list --longest-first` puts a line
`# job estimate: SECONDS s (...)` before each job, from which run_experiments.sh's dry run sums the plan's
wall time (CPU workers, GPU queues). The configs are composed by JobComposer: some 7 s of CPU time for
the 346 jobs of `all` (Hydra's compose per job took 75 s).
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import argparse
import copy
import dataclasses
import functools
import itertools
import json
import re
import shlex
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from config_utils import CONF_DIR, expand_root_aliases, register_resolvers, run_name
from override_check import refuse_override_typos
from shared_training import shareable, training_key

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
GROUP_OF_PRESET = {preset: group for group, presets in GROUPS.items() for preset in presets}


@dataclass(frozen=True)
class Job:
    group: str
    preset: str
    overrides: tuple[str, ...]     # +experiment=PRESET first, then the sweep's choices and the extras
    name: str                      # preset and swept values, e.g. fig1-optimization=sgd-layer_num=2

    cost: float = 0.0              # estimated seconds on one CPU thread (CostModel); 0: not estimated
    cost_source: str = ""          # where the estimate comes from: one of SOURCES
    measure_cost: float = 0.0      # the estimate when it measures a twin's trained network (no training)
    run_name: str = ""             # its run directory name (filled in with compose_jobs=True)
    training: str = field(default="", compare=False)   # shared_training.training_key, "" if not shareable
    config: dict | None = field(default=None, compare=False)   # its resolved config (compose_jobs=True)

    def command(self, python: str = "python") -> str:
        return shlex.join([python, ENTRY, *self.overrides])


def preset_names() -> list[str]:
    return sorted(path.stem for path in EXPERIMENT_DIR.glob("*.yaml"))


def refuse(problem: str) -> NoReturn:
    """The planner's refusal: one `error:` line on stderr and exit status 2 (as the entry point's)."""
    print(f"error: {problem}", file=sys.stderr, flush=True)
    raise SystemExit(2)


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
            refuse(f"unknown group or preset {name!r}; groups: {', '.join([*GROUPS, *ALIASES])}; "
                   f"presets: {', '.join(known)}")
    return expanded


def product_of(arguments: list[str], config_loader=None) -> list[list[str]]:
    """Hydra's basic sweeper on override strings: one override list per job.

    Keys keep the position of their first appearance and the value of their last one; a sweep
    (a,b,c / range(...) / choice(...) / glob(...), with sort or shuffle) contributes its values. A sweep
    of no values (range(0)) is refused (refuse): it would plan no job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create(config_loader).parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                refuse(f"{override.input_line}: only discrete sweeps can be expanded")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            if not choices[key]:   # range(0), range(5,1): no job at all, not an empty plan
                refuse(f"{override.input_line}: sweeps over no values, so nothing would run; allowed: a "
                       "sweep of at least one value (range(0,3), 1,2)")
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


# ------------------------------------------------------------------------------------ composing jobs
class JobComposer:
    """Each job's config as Hydra's compose("config", overrides) gives it, in a fraction of the time.

    compose spends its time on the defaults list (which config of each group, the files they merge), and
    that depends only on the config-group overrides. So each distinct set of group overrides is composed
    once by Hydra, and the other overrides of a job are applied to a copy of it by Hydra's own step that
    compose runs after the defaults (ConfigLoaderImpl._apply_overrides_to_config), split as Hydra splits
    them (a key that names a config group and a value that is not a dict). A job with a hydra.* override
    (which can change where configs are found), or one the copy refuses, is composed in full, so an error
    is Hydra's own. With hydra=True the config keeps its hydra node (compose's return_hydra_config=True),
    of which the sweeper's params are read; its lists of overrides and choices are the group overrides'.
    tests/test_estimates.py compares the run names with a full compose for every group.
    Use inside initialize_config_dir(CONF_DIR)."""

    def __init__(self, config_loader):
        self.parser = OverridesParser.create(config_loader)
        self.repository = config_loader.repository
        self.bases: dict[tuple[str, ...], tuple] = {}   # group overrides -> their config, with and without hydra
        self.parsed: dict[str, object] = {}             # override text -> its parsed Override

    @staticmethod
    def full(overrides, hydra: bool = False) -> DictConfig:
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)

    def __call__(self, overrides, hydra: bool = False) -> DictConfig:
        try:
            from hydra._internal.config_loader_impl import ConfigLoaderImpl

            for text in overrides:
                if text not in self.parsed:
                    self.parsed[text] = self.parser.parse_override(text)
            parsed = [self.parsed[text] for text in overrides]
            if any(override.key_or_group.startswith("hydra") for override in parsed):
                return self.full(overrides, hydra)
            groups = [override for override in parsed if self.repository.group_exists(override.key_or_group)
                      and not isinstance(override.value(), dict)]
            values = [override for override in parsed if override not in groups]
        except Exception:   # noqa: BLE001  (a Hydra without these internals, an override it refuses)
            return self.full(overrides, hydra)
        key = tuple(override.input_line for override in groups)
        if key not in self.bases:
            with_hydra = self.full(key, hydra=True)
            without = copy.deepcopy(with_hydra)
            with open_dict(without):
                del without["hydra"]
            self.bases[key] = (with_hydra, without)
        cfg = copy.deepcopy(self.bases[key][0 if hydra else 1])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except Exception:   # noqa: BLE001  (Hydra's own message, from the full composition)
            return self.full(overrides, hydra)
        return cfg


# ------------------------------------------------------------------------------------ time estimates
# A job's estimated time on one CPU thread (Estimate): process start-up plus the run itself, what
# results.json's wall_seconds measures: SET_UP_SECONDS + seconds per epoch x (epochs + MEASURE_EPOCHS).
# The seconds per epoch come from the first of these sources that has the job (SOURCES):
#   measured like runs:  the runs of docs/reproduction/runs.csv with the job's data, model, variant, depth,
#                        width and optimizer (their mean wall_seconds, less the set-up, per epoch);
#   measured epoch cost: docs/reproduction/epoch_costs.csv's row of the job's group and model on its data
#                        (benchmarks/epoch_costs.py: the training steps of that group's models, averaged);
#   fallback model:      FALLBACK_* below: per training sample and epoch, a cost per measured point and
#                        one per parameter (the model built on the meta device).
# Measured costs are scaled to the job's epochs and, where its data config is not the one measured, to its
# training sample count. They are the measuring machines' (AMD EPYC, one thread per run, two runs at a time).
REPORT_DIR = Path(__file__).resolve().parent / "docs" / "reproduction"
# Process start-up, beyond what wall_seconds counts (interpreter, imports, Hydra's composition): median of
# 5 processes of the main job, `python benchmarks/bench_process.py --repeats 5` on the Intel Xeon, 2 cores,
# where this estimator was written (wall 20.1 s: start-up 3.3 s, validate + setup + write 1.8 s, the rest
# training and measuring).
START_UP_SECONDS = 3.3
# A job that a warm worker runs (run_experiments.sh's CPU queue, sweep_worker.py: --warm-workers) pays neither
# the start-up nor a fresh process's set-up: its fixed cost beyond training is its job line's small process,
# the typo check, Hydra's composition, set-up, measuring, writing: 0.9 s per job (python benchmarks/bench_sweep.py:
# fig1 at 100 epochs, JOBS=1, on the Intel Xeon, at a5996b7); the pool's start-up is paid once per worker
# (`# worker start-up:`).
WARM_JOB_SECONDS = 0.9
# In a run, the steps that do not grow with the epochs: validate, set-up (data, model) and writing.
SET_UP_SECONDS = 1.8
# The final measurement takes about as long as this many training epochs: 5-9 for the cfm MLPs at depth 18
# and 2 (results.json timings of epochs=20 runs), 5 for VGG13 (README, GPUs and clusters: measure 19.9 s
# against 4.1 s of training for one epoch).
MEASURE_EPOCHS = 5
# Fitted to the measured like runs of runs.csv (least relative squares): python sweep_jobs.py --fit-fallback
FALLBACK_SECONDS_PER_POINT_SAMPLE_EPOCH = 1.94e-6
FALLBACK_SECONDS_PER_PARAMETER_SAMPLE_EPOCH = 1.05e-10
# A job whose network an earlier job of the plan trains (the same config but what is measured,
# shared_training.py) pays start-up, set-up and the measurement only: the fourth source.
SOURCES = ("measured like runs", "measured epoch cost", "fallback model", "training shared")
ESTIMATES_LEGEND = (
    f"# estimates: seconds on one CPU thread per job, start-up ({START_UP_SECONDS:g} s) included; the source per "
    "group: measured like runs (runs.csv, same data, model, variant, shape and optimizer), measured epoch "
    "cost (epoch_costs.csv, the group's model on its data) or fallback model (per point and parameter; "
    "sweep_jobs.py's docstring); scaled to each job's epochs and samples; training shared: an earlier job "
    "trains its network, it measures it (set-up and measurement only)")
WARM_LEGEND = ESTIMATES_LEGEND.replace(f"start-up ({START_UP_SECONDS:g} s) included",
                                       f"run by a warm worker ({WARM_JOB_SECONDS:g} s each beyond training; the "
                                       f"worker's start-up, {START_UP_SECONDS:g} s, once per worker)")


@dataclass(frozen=True)
class Estimate:
    epoch_seconds: float    # training and the final measurement (per epoch x (epochs + MEASURE_EPOCHS))
    source: str             # one of SOURCES
    measure_seconds: float = 0.0   # of epoch_seconds: the final measurement
    warm: bool = False      # run by a warm worker (WARM_JOB_SECONDS), else as a process of its own

    @property
    def run_seconds(self) -> float:
        """The run as its own process's results.json counts it (wall_seconds): set-up, training, measuring."""
        return SET_UP_SECONDS + self.epoch_seconds

    @property
    def fixed_seconds(self) -> float:
        return WARM_JOB_SECONDS if self.warm else START_UP_SECONDS + SET_UP_SECONDS

    @property
    def seconds(self) -> float:
        """The whole job: its fixed cost (start-up and set-up, or a warm worker's job), training, measuring."""
        return self.fixed_seconds + self.epoch_seconds

    @property
    def measuring_only(self) -> float:
        """The whole job when a twin trained its network: its fixed cost and the measurement."""
        return self.fixed_seconds + self.measure_seconds


def total_epochs(cfg) -> int:
    """The epochs a run trains, both stages of the frozen scheme counted."""
    return int(cfg.epochs) + (int(cfg.training.stage1_epochs) if cfg.training.name == "frozen" else 0)


def training_samples(cfg) -> int:
    from data import class_counts_of   # imports torch: only where a job's data differs from the measured

    return sum(class_counts_of(cfg.data))


def epoch_cost_label(cfg) -> str:
    """The model column of epoch_costs.csv: 'VGG13 on cifar10', 'GFNN on cc, frozen'."""
    training = "" if cfg.training.name == "standard" else f", {cfg.training.name}"
    return f"{cfg.model.name} on {cfg.data.name}{training}"


def like_key(row: dict) -> tuple:
    """What makes two runs alike in cost: a runs.csv row's (or a planned job's row's) data, model, variant,
    depth, width and optimizer."""
    return tuple(row.get(key) or "" for key in ("data", "model", "variant", "depth", "width", "optimizer"))


def job_row(config: dict) -> dict:
    """A planned job's row as runs.csv holds it, from its resolved config (the report's own reading)."""
    from run_records import Run

    return Run(Path("planned") / "results.json", {"config": config}).row()


@functools.lru_cache(maxsize=None)
def _model_size(key: str) -> tuple[int, int]:
    import torch

    from data import input_shape_of
    from train_models import build_model

    cfg = OmegaConf.create(json.loads(key))
    with torch.device("meta"):
        model = build_model(cfg, input_shape_of(cfg.data), int(cfg.data.num_classes))
    return len(model.measured_points), sum(parameter.numel() for parameter in model.parameters())


def model_size(cfg) -> tuple[int, int]:
    """(measured points, parameters) of cfg's model, built on the meta device (no memory, no time)."""
    keys = ["model", "layer_num", "hidden_size", "data"]   # what build_model and the input shape read
    return _model_size(json.dumps(OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True),
                                  sort_keys=True))


def fallback_seconds_per_epoch(cfg, per_point: float = FALLBACK_SECONDS_PER_POINT_SAMPLE_EPOCH,
                               per_parameter: float = FALLBACK_SECONDS_PER_PARAMETER_SAMPLE_EPOCH) -> float:
    points, parameters = model_size(cfg)
    return training_samples(cfg) * (points * per_point + parameters * per_parameter)


class CostModel:
    """Estimates of jobs' times (estimate) from a report folder's runs.csv and epoch_costs.csv, read by
    reproduction_report's readers; `composer` composes a job's config (JobComposer). Without the tables
    (report None, or a table that cannot be read: one warning line) every estimate is the fallback
    model's."""

    def __init__(self, report: Path | None, composer, warm: bool = False):
        self.composer, self.warm = composer, warm
        self.like_runs: dict[tuple, list[float]] = defaultdict(list)   # like key -> seconds per epoch
        self.epoch_costs: dict[tuple[str, str], float] = {}            # (group, label) -> seconds per epoch
        if report is None:
            return
        from report_tables import read_epoch_costs, read_rows
        from run_records import BadFile

        try:
            runs = Path(report) / "runs.csv"
            rows = read_rows(runs) if runs.exists() else []
            costs = read_epoch_costs(Path(report) / "epoch_costs.csv")
        except BadFile as error:
            print(f"warning: {error}; the estimates are the fallback model's", file=sys.stderr)
            rows, costs = [], []
        for row in rows:
            # a run that measured a twin's trained network (trained_in) took no training time
            if row["status"] == "completed" and row["wall_seconds"] is not None and row["epochs"] \
                    and not row.get("trained_in"):
                run_part = max(row["wall_seconds"] - SET_UP_SECONDS, 0.0)
                self.like_runs[like_key(row)].append(run_part / (row["epochs"] + MEASURE_EPOCHS))
        for cost in costs:
            self.epoch_costs[(cost["group"], cost["model"])] = float(cost["seconds_per_epoch"])

    def sample_scale(self, job: Job, cfg) -> float:
        """The job's training samples over those of its group's own data config, which the measured runs
        used: 1 unless the job's extra overrides set data.* keys."""
        data_overrides = [text for text in job.overrides if text.lstrip("+~").startswith("data.")]
        if not data_overrides:
            return 1.0
        measured = self.composer([text for text in job.overrides if text not in data_overrides])
        return training_samples(cfg) / training_samples(measured)

    def estimate(self, job: Job, cfg, config: dict | None = None) -> Estimate:
        """The estimate of a job whose composed config is `cfg` (config: cfg resolved)."""
        config = OmegaConf.to_container(cfg, resolve=True) if config is None else config
        epochs = int(cfg.epochs) + MEASURE_EPOCHS
        if like := self.like_runs.get(like_key(job_row(config))):
            per_epoch, source = statistics.fmean(like) * self.sample_scale(job, cfg), SOURCES[0]
        elif (cost := self.epoch_costs.get((GROUP_OF_PRESET.get(job.preset, job.group), epoch_cost_label(cfg)))) is not None:
            epochs = total_epochs(cfg) + MEASURE_EPOCHS
            per_epoch, source = cost * self.sample_scale(job, cfg), SOURCES[1]
        else:
            epochs = total_epochs(cfg) + MEASURE_EPOCHS
            per_epoch, source = fallback_seconds_per_epoch(cfg), SOURCES[2]
        return Estimate(per_epoch * epochs, source, per_epoch * MEASURE_EPOCHS, self.warm)


def fit_fallback(report: Path = REPORT_DIR) -> tuple[float, float, int]:
    """(seconds per point, per parameter, like settings fitted): the fallback model fitted to the measured
    like runs of report/runs.csv, minimizing the squared relative error over the settings of the groups'
    jobs that runs.csv measured (each setting's mean, one equation each)."""
    groups, _ = sweep_jobs(list(GROUPS), compose_jobs=True, estimate=False)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composer = JobComposer(GlobalHydra.instance().config_loader())
        costs = CostModel(report, composer)
        equations = {}
        for _, jobs in groups:
            for job in jobs:
                key = like_key(job_row(job.config))
                if key in costs.like_runs and key not in equations:
                    cfg = composer(job.overrides)
                    points, parameters = model_size(cfg)
                    samples = training_samples(cfg)
                    measured = statistics.fmean(costs.like_runs[key])
                    equations[key] = (points * samples / measured, parameters * samples / measured)
    # least squares of sum((a x + b y) - 1)^2 over the equations (x, y): the 2x2 normal equations
    xx = sum(x * x for x, _ in equations.values())
    xy = sum(x * y for x, y in equations.values())
    yy = sum(y * y for _, y in equations.values())
    x1 = sum(x for x, _ in equations.values())
    y1 = sum(y for _, y in equations.values())
    determinant = xx * yy - xy * xy
    return (x1 * yy - y1 * xy) / determinant, (y1 * xx - x1 * xy) / determinant, len(equations)


def duration(seconds: float) -> str:
    """Seconds for people: 40 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _with_config(job: Job, cfg, costs: CostModel | None) -> Job:
    config = OmegaConf.to_container(cfg, resolve=True)
    estimate = costs.estimate(job, cfg, config) if costs is not None else None
    return dataclasses.replace(job, cost=estimate.seconds if estimate else 0.0,
                               cost_source=estimate.source if estimate else "",
                               measure_cost=estimate.measuring_only if estimate else 0.0,
                               run_name=run_name(cfg), config=config,
                               training=training_key(config) if shareable(cfg) else "")


def share_trainings(groups: list[tuple[str, list[Job]]]) -> list[tuple[str, list[Job]]]:
    """The groups with each job whose network an earlier job (in this order) trains estimated as
    measuring only (SOURCES[3]); run_experiments.sh runs the longest first, so the training job comes
    first and its twins find its weights (shared_training.py)."""
    trained, shared = set(), []
    for group, jobs in groups:
        kept = []
        for job in jobs:
            if job.training and job.training in trained and job.cost:
                job = dataclasses.replace(job, cost=job.measure_cost, cost_source=SOURCES[3])
            trained.add(job.training or None)
            kept.append(job)
        shared.append((group, kept))
    return shared


def sweep_jobs(names: list[str], extras: list[str] = (), compose_jobs: bool = False, estimate: bool = True,
               report: Path | None = REPORT_DIR, warm: bool = False) -> tuple[list[tuple[str, list[Job]]], Path]:
    """[(group, its jobs)] for group/preset names, and the folder for job logs (<log_root>/jobs).
    With compose_jobs=True each job's config is composed (JobComposer), so that it carries its run
    directory name and (unless estimate=False) its estimated time from `report`'s measurements (CostModel;
    report None: the fallback model only), as a warm worker runs it with warm=True."""
    register_resolvers()
    extras = expand_root_aliases(list(extras))
    groups = expand_groups(list(names))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parsed = OverridesParser.create(loader).parse_overrides(list(extras))
        fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
        composer = JobComposer(loader)
        costs = CostModel(report, composer, warm) if compose_jobs and estimate else None
        result, log_roots = [], []
        for group, presets in groups:
            jobs = []
            for preset in presets:
                cfg = composer([f"+experiment={preset}", *fixed], hydra=True)
                log_roots.append(str(cfg.log_root))
                jobs += preset_jobs(group, preset, list(extras), cfg.hydra, loader)
            if compose_jobs:
                jobs = [_with_config(job, composer(job.overrides), costs) for job in jobs]
            result.append((group, jobs))
        # from a preset's config: the overrides may name keys only the presets' models have (block_num)
        log_dir = Path(log_roots[0]) / "jobs"
    return result, log_dir


def recorded_runs(report: Path) -> set[str]:
    """The finished runs of a report folder (a path to its runs.csv names its folder), read by the
    report's one checked reader (report_tables.recorded_runs: regular files only, size bounds,
    strict CSV, runs.csv and profiles.csv checked together); a table it refuses is refused here too."""
    from report_tables import recorded_runs as report_recorded_runs
    from run_records import BadFile

    report = Path(report)
    folder = report.parent if report.name == "runs.csv" and not report.is_dir() else report
    try:
        return report_recorded_runs(folder)
    except BadFile as error:
        refuse(f"--skip-recorded {error}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments with '=' are overrides added to every run (sweeps like seed=1,2 multiply).")
    parser.add_argument("names", nargs="*", metavar="GROUP|PRESET|KEY=VALUE",
                        help="groups (--groups lists them), presets of conf/experiment/, and KEY=VALUE "
                             "overrides for every run")
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
    parser.add_argument("--costs", type=Path, metavar="REPORT", default=REPORT_DIR,
                        help="the folder whose runs.csv and epoch_costs.csv give the time estimates "
                             "(default: docs/reproduction)")
    parser.add_argument("--warm-workers", action="store_true",
                        help="estimate the jobs as warm workers run them (run_experiments.sh's CPU queue): "
                             f"{WARM_JOB_SECONDS:g} s per job beyond training, the start-up once per worker")
    parser.add_argument("--fit-fallback", action="store_true",
                        help="fit the fallback cost model to --costs's runs.csv, print its constants and exit")
    args = parser.parse_intermixed_args(argv)
    if args.groups:
        print(" ".join([*GROUPS, *ALIASES]))
        return
    if args.fit_fallback:
        per_point, per_parameter, settings = fit_fallback(args.costs)
        print(f"FALLBACK_SECONDS_PER_POINT_SAMPLE_EPOCH = {per_point:.3g}\n"
              f"FALLBACK_SECONDS_PER_PARAMETER_SAMPLE_EPOCH = {per_parameter:.3g}\n"
              f"# fitted to {settings} settings of {args.costs / 'runs.csv'}")
        return
    names = [name for name in args.names if "=" not in name]
    extras = [name for name in args.names if "=" in name]
    if not names:
        parser.error("name at least one group or preset (see --groups)")
    if extras:   # a typo: the entry's one line, for the jobs of every preset named
        presets = dict.fromkeys(preset for _, presets in expand_groups(names) for preset in presets)
        refuse_override_typos(["-m", f"+experiment={','.join(presets)}", *extras], "config", ENTRY)
    recorded = recorded_runs(args.skip_recorded) if args.skip_recorded else None   # before composing
    groups, log_dir = sweep_jobs(names, extras, compose_jobs=args.longest_first or bool(args.skip_recorded),
                                 estimate=args.longest_first, report=args.costs,
                                 warm=args.warm_workers)
    if recorded is not None:
        kept = [(group, [job for job in jobs if job.run_name not in recorded]) for group, jobs in groups]
        skipped = sum(len(jobs) for _, jobs in groups) - sum(len(jobs) for _, jobs in kept)
        print(f"# skipped: {skipped} jobs already recorded in {args.skip_recorded}")
        groups = kept
    if args.longest_first:
        groups = share_trainings(groups)

    def print_jobs(jobs):
        for job in jobs:
            if args.list and args.longest_first:   # read by run_experiments.sh's dry run (queue totals)
                about = f"{duration(job.cost)}, " if job.cost >= 90 else ""
                print(f"# job estimate: {job.cost:.0f} s ({about}{job.cost_source})")
            line = job.command(args.python)
            if args.log:
                line += f" >> {shlex.quote(str(log_dir / (job.name + '.log')))} 2>&1"
            print(line)

    if args.list and args.log:
        print(f"# job logs: {log_dir}")
    if args.list and args.longest_first:
        print(WARM_LEGEND if args.warm_workers else ESTIMATES_LEGEND)
        if args.warm_workers:   # read by run_experiments.sh's dry run: once per worker
            print(f"# worker start-up: {START_UP_SECONDS:g} s")
    for group, jobs in groups:
        if args.list:
            presets = sorted({job.preset for job in jobs}, key=[j.preset for j in jobs].index)
            parts = f" (presets {', '.join(presets)})" if presets != [group] else ""
            estimate = ""
            if args.longest_first:
                sources = ", ".join(f"{source}: {count}" for source in SOURCES
                                    if (count := sum(job.cost_source == source for job in jobs)))
                estimate = f", about {duration(sum(job.cost for job in jobs))} on one thread ({sources or 'no jobs'})"
            print(f"# group {group}: {len(jobs)} jobs{parts}{estimate}")
        if not args.longest_first:
            print_jobs(jobs)
    every_job = [job for _, jobs in groups for job in jobs]
    if args.longest_first:
        print_jobs(sorted(every_job, key=lambda job: -job.cost))
    if args.list:
        total = f", about {duration(sum(job.cost for job in every_job))} on one thread" if args.longest_first else ""
        print(f"# total: {len(every_job)} jobs{total}")


if __name__ == "__main__":
    main()
