"""Configuration helpers shared by the entry scripts: paths, OmegaConf resolvers and run identity.

A run's identity is its resolved configuration minus the execution keys (device, threads, paths,
progress bar ...), which do not change its results. The run directory name is descriptive (data, model,
shape, optimizer, lr, epochs, seed) and ends with a hash of that identity, so rerunning the same config
lands in the same directory and two distinct configs never collide.

Resolvers registered here (use them in conf/*.yaml):
    ${repo_root:}   absolute path of this repository (paths never depend on the working directory)
    ${run_name:}    the run directory name of the config it appears in
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

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


def run_identity(cfg: DictConfig) -> dict:
    """The resolved config without execution keys and lookup tables: what determines its results."""
    keys = [key for key in cfg.keys() if key not in EXECUTION_KEYS]
    identity = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    identity.pop(LOOKUP_KEY, None)
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
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# key -> (predicate, what is allowed); checked in this order before anything is loaded or trained.
VALUE_RULES = {
    "layer_num": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (a line fit needs >= 3 points)"),
    "hidden_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _is_int(v) and v >= 2, "an integer >= 2 (BatchNorm needs 2 samples)"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "threads": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: torch's default)"),
    "data.sample_size_per_class": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "analysis.bn_batch_size": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "analysis.eval_batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "analysis.pca_dim": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "analysis.test_subset_size": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: off)"),
    "analysis.every_n_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: off)"),
}


def input_shape_of(data_cfg: DictConfig) -> tuple[int, int, int]:
    """(channels, height, width) of a data config's tensors, known without loading anything."""
    channels = data_cfg.get("channels")
    count = len(channels) if channels is not None else len(data_cfg.mean)
    return (count, int(data_cfg.image_size), int(data_cfg.image_size))


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError (naming the key, the value and what is allowed) for any invalid value.

    Checks the scalar keys, the choices (measure, BatchNorm mode, training, device), then builds the
    model on PyTorch's meta device (no memory, no compute) so architecture constraints -- a fixed
    depth, a block count a model cannot split, a frozen split beyond the model -- fail here too.
    """
    import torch

    from representation_analysis import BN_MODES
    from variance_analysis import MEASURES
    from train_models import build_model, resolve_device

    for key, (allowed, description) in VALUE_RULES.items():
        value = OmegaConf.select(cfg, key)
        if not allowed(value):
            raise ConfigError(f"{key}={value}: allowed: {description}")
    choices = {"measure": MEASURES, "analysis.bn_mode": BN_MODES,
               "training.name": ("standard", "frozen")}
    for key, allowed in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value}: allowed: {', '.join(allowed)}")
    resolve_device(str(cfg.device))
    try:
        with torch.device("meta"):
            model = build_model(cfg, input_shape_of(cfg.data), int(cfg.data.num_classes))
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model={cfg.model.name}: {error}") from None
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


def register_resolvers() -> None:
    """Register ${repo_root:} and ${run_name:} (idempotent)."""
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", lambda _root_: run_name(_root_))
