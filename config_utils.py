"""Configuration helpers shared by the entry scripts: paths, OmegaConf resolvers and run identity.

A run's identity is its resolved configuration minus the execution keys (device, threads, paths,
progress bar ...), which do not change its results, and minus the MLP shape keys layer_num and
hidden_size where the model config does not interpolate them. The run directory name is descriptive
(data, model, shape, optimizer, lr, epochs, seed) and ends with a hash of that identity, so rerunning
the same config lands in the same directory and two distinct configs never collide.

Resolvers registered here (use them in conf/*.yaml):
    ${repo_root:}   absolute path of this repository (paths never depend on the working directory)
    ${run_name:}    the run directory name of the config it appears in

Validation: validate_config refuses any value a run cannot use (ConfigError naming KEY=VALUE and what is
allowed) before anything is loaded or trained. The Hydra callback ValidateBeforeLaunch (hydra.callbacks
in conf/config.yaml) runs it on a run -- or on every job of a multirun -- before Hydra creates any
directory, and records which run directories the command is about to create, so that a run failing
later removes only a directory of its own (created_by_this_command).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parent
CONF_DIR = REPO_ROOT / "conf"

class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the key and what is allowed."""


# Keys that say how and where a run executes, not what it computes.
EXECUTION_KEYS = ("hydra", "device", "threads", "progress", "download", "data_root", "log_root",
                  "figures_dir", "force")


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


def model_refers_to(cfg: DictConfig, key: str) -> bool:
    """Whether the model config, unresolved, interpolates the root key `key` (${key})."""
    unresolved = json.dumps(OmegaConf.to_container(cfg.model, resolve=False))
    return "${" + key + "}" in unresolved


def run_identity(cfg: DictConfig) -> dict:
    """The resolved config without execution keys, lookup tables, model labels and the shape keys
    that the model does not refer to: what determines its results."""
    keys = [key for key in cfg.keys() if key not in EXECUTION_KEYS]
    identity = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    identity.pop(LOOKUP_KEY, None)
    for key in LABEL_MODEL_KEYS:
        identity["model"].pop(key, None)
    for key in MODEL_SHAPE_KEYS:
        if not model_refers_to(cfg, key):
            identity.pop(key, None)
    return identity


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


def _is_int(value) -> bool:
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
    "layer_num": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (a line fit needs >= 3 points)"),
    "hidden_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _is_int(v) and v >= 2, "an integer >= 2 (BatchNorm needs 2 samples)"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "seed": (lambda v: _is_int(v) and 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED} (2**63 - 1)"),
    "threads": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: torch's default)"),
    "data.sample_size_per_class": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "analysis.bn_batch_size": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "analysis.eval_batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "analysis.pca_dim": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "analysis.test_subset_size": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: off)"),
    "analysis.every_n_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: off)"),
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

# Optimizer state per parameter (besides the parameter and its gradient), for the memory estimate.
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2}


def input_shape_of(data_cfg: DictConfig) -> tuple[int, int, int]:
    """(channels, height, width) of a data config's tensors, known without loading anything."""
    channels = data_cfg.get("channels")
    count = len(channels) if channels is not None else len(data_cfg.mean)
    return (count, int(data_cfg.image_size), int(data_cfg.image_size))


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


def check_folders(cfg: DictConfig, output_keys: tuple[str, ...]) -> None:
    """ConfigError when a folder of `output_keys` (log_root, figures_dir) cannot be written, or when
    data_root cannot be written although the data's cache has to be built there."""
    from data import cache_dir_of, cache_must_be_built

    for key in output_keys:
        if problem := folder_problem(cfg[key]):
            raise ConfigError(f"{key}={cfg[key]}: {problem}; allowed: a folder this user can write "
                              "(made if missing)")
    data_root = Path(cfg.data_root)
    if cache_must_be_built(cfg.data, data_root, int(cfg.seed)):
        if problem := folder_problem(cache_dir_of(data_root)):
            raise ConfigError(f"data_root={cfg.data_root}: the cache of data={cfg.data.name} must be built "
                              f"in it, but {problem}; allowed: a writable folder, or one that holds the cache")


def check_memory(cfg: DictConfig, model, device) -> None:
    """ConfigError when the model's training state (parameters, gradients, optimizer state) exceeds
    the memory of the device it would train on: such a model could never be allocated."""
    import torch

    parameters = sum(parameter.numel() for parameter in model.parameters())
    states = 2 + OPTIMIZER_STATES.get(str(cfg.optimization.get("name")), 2)
    needed = parameters * states * torch.finfo(torch.float32).bits // 8
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    else:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise ConfigError(f"hidden_size={cfg.get('hidden_size')}: model {cfg.model.name} then has "
                          f"{parameters:,} parameters, whose training state needs {needed / 2**30:,.1f} GiB; "
                          f"allowed: a model whose training state fits in the {available / 2**30:.1f} GiB "
                          f"of {device.type} memory")


def validate_config(cfg: DictConfig, output_keys: tuple[str, ...] = ("log_root", "figures_dir")) -> None:
    """Raise ConfigError (naming the key, the value and what is allowed) for any invalid value.

    Checks the scalar keys, the optimizer and schedule settings, the choices (measure, BatchNorm mode,
    training, optimizer, device), the training and test subsets against the dataset's class sizes, the
    folders written (output_keys, and data_root when its cache must be built), then builds the model on
    PyTorch's meta device (no memory, no compute) so architecture constraints -- a fixed depth, a block
    count a model cannot split, a frozen split beyond the model, a model too big for the device's
    memory -- fail here too.
    """
    import torch

    from data import check_split_sizes
    from representation_analysis import BN_MODES
    from variance_analysis import MEASURES
    from train_models import build_model, resolve_device

    for key, (allowed, description) in VALUE_RULES.items():
        value = OmegaConf.select(cfg, key)
        if not allowed(value):
            raise ConfigError(f"{key}={_format(value)}: allowed: {description}")
    choices = {"measure": MEASURES, "analysis.bn_mode": BN_MODES,
               "training.name": ("standard", "frozen"), "optimization.name": tuple(OPTIMIZER_STATES)}
    for key, allowed in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value}: allowed: {', '.join(allowed)}")
    for key, applies, allowed, description in CONDITIONAL_RULES:
        if applies(cfg) and not allowed(value := OmegaConf.select(cfg, key)):
            raise ConfigError(f"{key}={_format(value)}: allowed: {description}")
    check_split_sizes(cfg.data, cfg.analysis.test_subset_size)
    device = resolve_device(str(cfg.device))
    check_folders(cfg, output_keys)
    try:
        with torch.device("meta"):
            model = build_model(cfg, input_shape_of(cfg.data), int(cfg.data.num_classes))
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model={cfg.model.name}: {error}") from None
    check_memory(cfg, model, device)
    points = len(model.measured_points)
    if points < 3:
        raise ConfigError(f"layer_num={cfg.layer_num}: model {cfg.model.name} then has {points} measured "
                          "points; a line fit needs at least 3")
    if cfg.training.name == "frozen":
        stages = len(getattr(model, "stages", []))
        split = cfg.training.get("split")
        if not (_is_int(split) and 0 < split < stages):
            raise ConfigError(f"training.split={split}: model {cfg.model.name} has {stages} trainable "
                              f"stages; allowed: 1..{max(stages - 1, 0)}")
        if not (_is_int(cfg.training.get("stage1_epochs")) and cfg.training.stage1_epochs >= 1):
            raise ConfigError(f"training.stage1_epochs={cfg.training.get('stage1_epochs')}: "
                              "allowed: an integer >= 1")


# ------------------------------------------------------------------- validation before Hydra launches
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


def _record_new_run_dirs(run_dirs: list[Path]) -> None:
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


def refuse_invalid(configs: list[DictConfig]) -> None:
    """Validate every config; print one `error:` line per distinct problem and exit with status 2 if
    any is invalid (before any job of them starts)."""
    errors = []
    for config in configs:
        try:
            validate_config(config)
        except ConfigError as error:
            if str(error) not in errors:
                errors.append(str(error))
    for message in errors:
        print(f"error: {message}", file=sys.stderr, flush=True)
    if errors:
        raise SystemExit(2)


class ValidateBeforeLaunch(Callback):
    """Hydra callback: validate a run, or every job of a multirun, before Hydra creates a directory or
    starts a job (a bad value in a sweep's third job stops the sweep before its first trains), and
    record the run directories the command creates. Acts on `config_name` (the entry's config) only."""

    def __init__(self, config_name: str = "config"):
        self.config_name = config_name

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs) -> None:
        if config_name != self.config_name:
            return
        refuse_invalid([config])
        _record_new_run_dirs([Path(config.hydra.run.dir)])

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs) -> None:
        if config_name != self.config_name:
            return
        try:
            jobs = sweep_job_configs(config)
        except Exception:  # a job that cannot be composed: Hydra's sweeper reports it itself
            return
        if jobs is None:
            return
        refuse_invalid(jobs)
        _record_new_run_dirs([Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir) for job in jobs])


def register_resolvers() -> None:
    """Register ${repo_root:} and ${run_name:} (idempotent)."""
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", lambda _root_: run_name(_root_))
