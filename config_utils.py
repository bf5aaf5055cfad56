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

# Keys that say how and where a run executes, not what it computes.
EXECUTION_KEYS = ("hydra", "device", "threads", "progress", "download", "data_root", "log_root",
                  "figures_dir", "force")


def run_identity(cfg: DictConfig) -> dict:
    """The resolved config without execution keys: what determines a run's results."""
    keys = [key for key in cfg.keys() if key not in EXECUTION_KEYS]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


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


def register_resolvers() -> None:
    """Register ${repo_root:} and ${run_name:} (idempotent)."""
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", lambda _root_: run_name(_root_))
