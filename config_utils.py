"""Configuration helpers shared by the entry scripts: paths, OmegaConf resolvers, run identity, the
scalar value rules, and the record of the run directories a command creates.

A run's identity is its resolved configuration minus the execution keys (device, threads, paths,
progress bar ...), which do not change its results, and minus the MLP shape keys layer_num and
hidden_size where the model config does not interpolate them. The run directory name is descriptive
(data, model, shape, optimizer, lr, epochs, seed) and ends with a hash of that identity, so rerunning
the same config lands in the same directory and two distinct configs never collide.

Resolvers registered here (use them in conf/*.yaml):
    ${repo_root:}   absolute path of this repository (paths never depend on the working directory)
    ${run_name:}    the run directory name of the config it appears in

This module imports no other module of the project: the full validation of a run (experiment.py) puts
these rules together with the data's, the model's and the training scheme's own checks.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parent
CONF_DIR = REPO_ROOT / "conf"

class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the key and what is allowed."""


# Keys that say how and where a run executes, not what it computes.
EXECUTION_KEYS = ("hydra", "device", "threads", "progress", "download", "data_root", "log_root",
                  "figures_dir", "force", "curves_every_n_epochs", "logger", "log_every_n_epochs")


# A table that presets interpolate from (conf/experiment/fig1.yaml: lr per optimizer and depth). The
# value a run picks is in its own key (lr); the table is not part of the run's identity, so a preset's
# run and the same run typed out on the command line share one directory.
LOOKUP_KEY = "lookup"


# Model keys that label a run for tables and figures and are derived from keys the identity holds
# (model.depth: from layer_num or model.params): left out, so that declaring them kept every existing
# run's identity.
LABEL_MODEL_KEYS = ("depth",)

# Root keys of the MLPs' shape. A model sees them only where its config interpolates them (conf/model/
# GFNN.yaml: layer_num: ${layer_num}), so they belong to a run's identity only there: a residual
# network's or VGG13's run is not told apart by a layer_num or hidden_size that it ignores.
MODEL_SHAPE_KEYS = ("layer_num", "hidden_size")


# The original repository passes the residual models' arguments at the root (`block_option=bottleneck
# block_num=4 feature_option=layer`); here they are model.params.*. Command lines accept the root keys
# as aliases, rewritten before Hydra parses them, so both forms compose to one config and one run.
ROOT_KEY_ALIASES = {key: f"model.params.{key}" for key in ("block_option", "block_num", "feature_option")}


def expand_root_aliases(arguments: list[str]) -> list[str]:
    """Command line arguments with each override of an alias key (`block_num=4`, `+block_num=4`,
    `block_num=2,4` ...) written as the key it stands for (`model.params.block_num=4`)."""
    expanded = []
    for argument in arguments:
        body = argument.lstrip("+~")
        key, separator, value = body.partition("=")
        if not argument.startswith("-") and key in ROOT_KEY_ALIASES:
            argument = argument[:len(argument) - len(body)] + ROOT_KEY_ALIASES[key] + separator + value
        expanded.append(argument)
    return expanded


def model_refers_to(cfg: DictConfig, key: str) -> bool:
    """Whether the model config, unresolved, interpolates the root key `key` (${key})."""
    unresolved = json.dumps(OmegaConf.to_container(cfg.model, resolve=False))
    return "${" + key + "}" in unresolved


def run_identity(cfg: DictConfig) -> dict:
    """The resolved config without execution keys, lookup tables, model labels and the shape keys
    that the model does not refer to: what determines its results."""
    identity = {key: _resolved(cfg, key) for key in cfg.keys() if key not in (*EXECUTION_KEYS, LOOKUP_KEY)}
    for key in LABEL_MODEL_KEYS:
        identity["model"].pop(key, None)
    for key in MODEL_SHAPE_KEYS:
        if not model_refers_to(cfg, key):
            identity.pop(key, None)
    return identity


def _resolved(cfg: DictConfig, key: str):
    """cfg's root key `key` resolved, as plain containers ('???' where it is missing), without copying cfg:
    a copy of the whole config (OmegaConf.masked_copy) took half of every run name's time."""
    if OmegaConf.is_missing(cfg, key):
        return "???"
    value = cfg[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def identity_hash(cfg: DictConfig) -> str:
    text = json.dumps(run_identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_name(cfg: DictConfig) -> str:
    """e.g. cfm-GFNN-L6-w100-adam-lr0.001-e600-s666-1a2b3c4d."""
    parts = [cfg.data.name, cfg.model.name, cfg.model.tag, cfg.optimization.name,
             f"lr{cfg.lr}", f"e{cfg.epochs}", f"s{cfg.seed}"]
    if cfg.training.name != "standard":
        parts.append(cfg.training.name)
    return "-".join(str(part) for part in parts) + f"-{identity_hash(cfg)}"


# Values that become parts of file names (run directories, caches, figures): each a plain name of
# letters, digits and ._=+,- that starts with a letter or digit (no '/', no '..', nothing hidden),
# at most 64 characters; a run name at most 160, so that a temporary beside any of its files
# (.NAME.tmp-<owner>-<random>, atomic_io) fits the 255 bytes of a file name.
# The same rule (longer) makes every other output name: summaries' figures (safe_output.safe_name).
NAME_KEYS = ("data.name", "model.name", "model.tag", "optimization.name", "training.name")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+,-]*", re.ASCII)
MAX_RUN_NAME = 160


def name_problem(value, max_length: int = 64) -> str | None:
    """Why `value` cannot be a file name (SAFE_NAME, at most max_length characters), or None."""
    if not isinstance(value, str) or len(value) > max_length or not SAFE_NAME.fullmatch(value):
        return (f"a name of letters, digits and ._=+,- starting with a letter or digit, at most {max_length} "
                "characters")
    return None


def check_names(cfg: DictConfig, keys: tuple[str, ...] = NAME_KEYS) -> None:
    """ConfigError for a value of `keys` that is not a safe file name component, or a run name too long."""
    for key in keys:
        if (problem := name_problem(OmegaConf.select(cfg, key))) is not None:
            raise ConfigError(f"{key}={_format(OmegaConf.select(cfg, key))}: allowed: {problem}")
    if keys == NAME_KEYS and len(name := run_name(cfg)) > MAX_RUN_NAME:
        longest = max(keys, key=lambda key: len(str(OmegaConf.select(cfg, key))))
        raise ConfigError(f"{longest}={OmegaConf.select(cfg, longest)}: makes the run name {len(name)} "
                          f"characters long; allowed: a run name of at most {MAX_RUN_NAME}")


def inside(root: Path | str, path: Path | str) -> bool:
    """Whether `path`, with every link resolved, lies inside the folder `root` (resolved too)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float (not a bool): inf and nan are never a usable setting."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_fraction_list(value) -> bool:
    return OmegaConf.is_list(value) and all(_is_number(v) and 0 <= v <= 1 for v in value)


# Seeds seed torch generators, which take up to 64 bits; the frozen training's second stage adds 1.
MAX_SEED = 2 ** 63 - 1

# key -> (predicate, what is allowed); checked in this order before anything is loaded or trained.
VALUE_RULES = {
    "layer_num": (lambda v: is_int(v) and v >= 1, "an integer >= 1 (a line fit needs >= 3 points)"),
    "hidden_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "epochs": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: is_int(v) and v >= 2, "an integer >= 2 (BatchNorm needs 2 samples)"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "seed": (lambda v: is_int(v) and 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED} (2**63 - 1)"),
    "threads": (lambda v: is_int(v) and 0 <= v <= 1024, "an integer from 0 to 1024 (0: torch's default)"),
    "data.sample_size_per_class": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "analysis.bn_batch_size": (lambda v: is_int(v) and v >= 2, "an integer >= 2"),
    "analysis.eval_batch_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "analysis.pca_dim": (lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1"),
    "analysis.test_subset_size": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: off)"),
    "analysis.every_n_epochs": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: off)"),
    # null (as 0): configs saved before this key existed, e.g. checkpoints for reanalyze.py
    "curves_every_n_epochs": (lambda v: v is None or (is_int(v) and v >= 0),
                              "an integer >= 0 (0: losses only)"),
}

# Rules of keys that exist only with some choices: (key, applies to this config, predicate, allowed).
CONDITIONAL_RULES = (
    ("optimization.momentum", lambda cfg: cfg.optimization.get("name") == "momentum",
     lambda v: _is_number(v) and 0 <= v < 1, "a number from 0 to below 1"),
    ("optimization.betas", lambda cfg: cfg.optimization.get("name") == "adam",
     lambda v: OmegaConf.is_list(v) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
     "[beta1,beta2], each from 0 to below 1"),
    ("schedule.gamma", lambda cfg: cfg.get("schedule") is not None,
     lambda v: _is_number(v) and v > 0, "a finite number > 0 (the lr is multiplied by it at each milestone)"),
    ("schedule.milestone_fractions", lambda cfg: cfg.get("schedule") is not None,
     _is_fraction_list, "a list of fractions of the epochs, each from 0 to 1"),
)

def _format(value) -> str:
    """A config value as typed on the command line ([1.5,0.9] rather than ListConfig's repr)."""
    if OmegaConf.is_config(value):
        return json.dumps(OmegaConf.to_container(value), separators=(",", ":"))
    return str(value)


def folder_problem(path: Path | str) -> str | None:
    """Why files cannot be written into the folder `path` (made if missing), or None when they can.

    Looks without writing anything: the nearest existing ancestor must be a folder this user may write,
    on a file system that is neither mounted read-only nor virtual (no blocks to store files, as /proc).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return "it is a file, not a folder"
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    file_system = os.statvfs(existing)
    if file_system.f_flag & os.ST_RDONLY:
        return f"{existing} is on a read-only file system"
    if file_system.f_blocks == 0:
        return f"{existing} is on a virtual file system that holds no files"
    return None


def check_output_folders(cfg: DictConfig, output_keys: tuple[str, ...]) -> None:
    """ConfigError when a folder of `output_keys` (log_root, figures_dir) cannot be written."""
    for key in output_keys:
        if problem := folder_problem(cfg[key]):
            raise ConfigError(f"{key}={cfg[key]}: {problem}; allowed: a folder this user can write "
                              "(made if missing)")


def check_values(cfg: DictConfig, choices: dict[str, tuple[str, ...]]) -> None:
    """ConfigError (naming KEY=VALUE and what is allowed) for a scalar value outside VALUE_RULES, a
    choice key whose value is not among `choices` (key -> allowed names, from the modules that implement
    them), or an optimizer or schedule setting outside CONDITIONAL_RULES."""
    for key, (allowed, description) in VALUE_RULES.items():
        value = OmegaConf.select(cfg, key)
        if not allowed(value):
            raise ConfigError(f"{key}={_format(value)}: allowed: {description}")
    for key, allowed in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value}: allowed: {', '.join(allowed)}")
    for key, applies, allowed, description in CONDITIONAL_RULES:
        if applies(cfg) and not allowed(value := OmegaConf.select(cfg, key)):
            raise ConfigError(f"{key}={_format(value)}: allowed: {description}")


# ------------------------------------------------------------------- validation before Hydra launches
# The callback that validates every run before Hydra makes a directory (conf/config.yaml). Without it
# a refused value would leave a directory behind, so command lines may add callbacks but not remove or
# replace this one.
VALIDATION_CALLBACK = "hydra.callbacks.validate_before_launch"


def removes_validation(arguments: list[str]) -> str | None:
    """The first command line override that would remove or replace VALIDATION_CALLBACK, or None."""
    for argument in arguments:
        key = argument.lstrip("+~").partition("=")[0]
        if key == "hydra.callbacks" or key == VALIDATION_CALLBACK or key.startswith(VALIDATION_CALLBACK + "."):
            return argument
    return None

# The run directories a command is about to create (a JSON list), set before Hydra creates any; jobs
# in other processes (joblib, submitit) inherit it.
NEW_RUN_DIRS_ENV = "EQUI_SEPARATION_NEW_RUN_DIRS"


def created_by_this_command(run_dir: Path | str) -> bool:
    """Whether run_dir did not exist before this command started (as ValidateBeforeLaunch recorded);
    False when nothing was recorded, so an unknown directory is never treated as this command's."""
    try:
        new_dirs = json.loads(os.environ.get(NEW_RUN_DIRS_ENV, "[]"))
    except ValueError:
        return False
    return str(Path(run_dir).absolute()) in new_dirs


def record_new_run_dirs(run_dirs: list[Path]) -> None:
    os.environ[NEW_RUN_DIRS_ENV] = json.dumps(
        sorted({str(path.absolute()) for path in run_dirs if not path.exists()}))


def sweep_job_configs(config: DictConfig) -> list[DictConfig] | None:
    """The composed config of every job of a multirun, as Hydra's basic sweeper will launch them
    (hydra.sweeper.params, then the command line's overrides); None for another sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None
    loader = GlobalHydra.instance().config_loader()
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(params + task)
    jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    return [loader.load_sweep_config(config, list(job)) for job in jobs]


def register_resolvers() -> None:
    """Register ${repo_root:} and ${run_name:} (idempotent)."""
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", lambda _root_: run_name(_root_))
