"""Re-measure a finished run from its checkpoint, without retraining (another measure, BatchNorm mode,
PCA dimension or split), into RUN_DIR/reanalysis/<overrides>/; the run's own files are never touched.

    python reanalyze.py logs/<run name>                                  # same settings: same D
    python reanalyze.py logs/<run name> measure=nc1 analysis.bn_mode=eval
    python reanalyze.py logs/<run name> split=test analysis.test_subset_size=2000
    python reanalyze.py path/to/checkpoint.pt analysis.pca_dim=50        # a checkpoint and its config

Only measurement keys, the execution keys device, threads, data_root and download, and split=train|test
are accepted; errors are one line (exit status 2); the last stdout line is `results: <path>`.
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: F401  (first, before torch: the same CPU kernels on every x86-64 machine)

import argparse
import hashlib
import os
import pickle
import re
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from atomic_io import NotRegularFile, atomic_write_json, open_regular
from config_utils import CONF_DIR, EXECUTION_KEYS, ConfigError, folder_problem, inside, register_resolvers
from data import DatasetUnavailableError
from experiment import measure_split, measured_test_subset, profile_title, set_up, validate_config
from plotting import save_profile_figure, split_label
from variance_analysis import MEASURE_LABELS

SPLITS = ("train", "test")
MEASUREMENT_KEYS = ("measure", "analysis.bn_mode", "analysis.bn_batch_size", "analysis.pca_dim",
                    "analysis.eval_batch_size", "analysis.test_subset_size")
EXECUTION_OVERRIDES = ("device", "threads", "data_root", "download")
EXECUTION_DEFAULTS = ("data_root", "log_root", "figures_dir", "device", "threads", "download", "progress")
MAX_TAG_LENGTH = 120  # longer override lists are shortened and end with a hash
MISSING = object()
CHECKPOINT_REFUSAL = "a checkpoint is read from the file itself, never through a link or from a pipe or device"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as this project's (truncated, corrupted, foreign or crafted)."""


def parse_overrides(overrides: list[str], trained_config: dict) -> tuple[str, list[str]]:
    """(split, config overrides) from KEY=VALUE items; ConfigError for anything else, for keys that
    need retraining and for unknown keys."""
    allowed = ", ".join(("split", *MEASUREMENT_KEYS, *EXECUTION_OVERRIDES))
    split, config_overrides = "train", []
    for item in overrides:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ConfigError(f"{item}: not KEY=VALUE; allowed keys: {allowed}")
        if key == "split":
            if value not in SPLITS:
                raise ConfigError(f"split={value}: allowed: {', '.join(SPLITS)}")
            split = value
        elif key in MEASUREMENT_KEYS or key in EXECUTION_OVERRIDES:
            config_overrides.append(item)
        elif key.split(".")[0] in EXECUTION_KEYS:
            raise ConfigError(f"{item}: {key} does not apply to a reanalysis (it writes into "
                              f"RUN/reanalysis/ only); allowed keys: {allowed}")
        elif OmegaConf.select(OmegaConf.create(trained_config), key, default=MISSING) is not MISSING:
            raise ConfigError(f"{item}: {key} changes the trained network (retrain it instead); "
                              f"allowed keys: {allowed}")
        else:
            raise ConfigError(f"{item}: unknown key {key}; allowed keys: {allowed}")
    return split, config_overrides


def reanalysis_tag(overrides: list[str]) -> str:
    """The directory name under RUN_DIR/reanalysis/ for accepted overrides: the KEY=VALUE pairs that
    change the measurement (split included), in their order, with any character other than letters, digits and _.=,+-
    replaced; every part holds `=`, so the name is never `.` or `..` and has no `/`."""
    measured = [item for item in overrides if item.partition("=")[0] not in EXECUTION_OVERRIDES]
    tag = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", ",".join(measured)) or "same-settings"
    if len(tag) > MAX_TAG_LENGTH:
        tag = f"{tag[:MAX_TAG_LENGTH - 9]}-{hashlib.sha256(tag.encode()).hexdigest()[:8]}"
    return tag


def load_failure_reason(error: BaseException) -> str:
    """The line of a torch.load error that says what is wrong with the file (for weights-only
    refusals, the offending global or opcode rather than PyTorch's advice to load it unsafely)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, pickle.UnpicklingError):
        specific = [line for line in lines[1:]
                    if not line.startswith(("Please file an issue", "Check the documentation"))]
        lines = specific or lines
    return lines[0] if lines else type(error).__name__


def load_checkpoint(path: Path) -> dict:
    """The checkpoint at `path`, loaded with weights_only=True (tensors and plain containers only, so
    nothing in it can run code); CheckpointError in one line for anything that is not one of ours."""
    try:   # a regular file only, opened without following a link or blocking (a FIFO, /dev/zero: refused)
        descriptor = open_regular(path, os.O_RDONLY, CHECKPOINT_REFUSAL)
        with os.fdopen(descriptor, "rb") as handle:
            checkpoint = torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except NotRegularFile as error:
        raise CheckpointError(f"{path}: refused: {error.strerror}") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as error:
        raise CheckpointError(f"{path}: refused: not a checkpoint that loads as tensors and plain "
                              f"containers ({load_failure_reason(error)})") from None
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_state"), dict)
            and isinstance(checkpoint.get("config"), dict)):
        raise CheckpointError(f"{path}: not a checkpoint of this project (a dict with model_state and config)")
    if problem := config_text_problem(checkpoint["config"]):
        raise CheckpointError(f"{path}: refused: its config {problem}")
    return checkpoint


def config_text_problem(value, where: str = "", depth: int = 0) -> str | None:
    """Why a checkpoint's config (untrusted: anyone may have written it) is not plain resolved data, or
    None: only string keys and str/int/float/bool/null values in dicts and lists, nested at most 32
    deep, and no interpolation (`${...}`: this project saves configs resolved, and resolving a crafted
    one may take exponential time or read values from outside the file)."""
    if depth > 32:
        return f"nests deeper than 32 levels at {where or 'its root'}"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a key that is not a string at {where or 'its root'}"
            if problem := config_text_problem(item, f"{where}.{key}".lstrip("."), depth + 1):
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if problem := config_text_problem(item, f"{where}[{index}]", depth + 1):
                return problem
    elif isinstance(value, str):
        if "${" in value:
            return f"holds an interpolation at {where}: {value[:60]!r}"
    elif value is not None and not isinstance(value, (bool, int, float)):
        return f"holds a {type(value).__name__} at {where}"
    return None


def this_commands_execution(trained_config: dict) -> dict:
    """The trained config with the keys that say where files go and how this process runs (data_root,
    log_root, figures_dir, device, threads, download, progress) taken from this command's conf/, never
    from the checkpoint, which may send a cache anywhere."""
    defaults = OmegaConf.load(CONF_DIR / "config.yaml")
    return {**trained_config, **{key: OmegaConf.select(defaults, key) for key in EXECUTION_DEFAULTS}}


def reanalyze(source: Path, overrides: list[str]) -> Path:
    """Measure the checkpoint at `source` (a run directory or a checkpoint file) with `overrides`;
    returns the path of the new results.json."""
    checkpoint_path = source / "checkpoint.pt" if source.is_dir() else source
    checkpoint = load_checkpoint(checkpoint_path)
    split, config_overrides = parse_overrides(overrides, checkpoint["config"])
    cfg = OmegaConf.merge(OmegaConf.create(this_commands_execution(checkpoint["config"])),
                          OmegaConf.from_dotlist(config_overrides))
    validate_config(cfg, output_keys=())
    if split == "test" and int(cfg.analysis.test_subset_size) < 1:
        raise ConfigError(f"analysis.test_subset_size={cfg.analysis.test_subset_size}: split=test measures "
                          "that many test samples; allowed with split=test: an integer >= 1")
    tag = reanalysis_tag(overrides)  # every item is an accepted KEY=VALUE here
    reanalysis_dir = checkpoint_path.parent / "reanalysis"
    out_dir = reanalysis_dir / tag
    if not inside(checkpoint_path.parent, out_dir):  # e.g. reanalysis/ is a link to another folder
        raise ConfigError(f"{source}: {out_dir} leads outside the run's folder; allowed: reanalysis/ "
                          "as a folder of the run")
    if problem := folder_problem(out_dir):
        raise ConfigError(f"{source}: cannot write {out_dir}: {problem}")
    run = set_up(cfg)
    try:
        run.model.load_state_dict(checkpoint["model_state"])
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(f"{checkpoint_path}: its weights do not fit model {cfg.model.name} of its "
                              f"config ({str(error).strip().splitlines()[0]})") from None
    inputs, labels = run.dataset.train_x, run.dataset.train_y
    if split == "test":
        subset = measured_test_subset(cfg, run.dataset)
        inputs, labels = run.dataset.test_x[subset], run.dataset.test_y[subset]
    layers, fit = measure_split(cfg, run.model, inputs, labels, split, progress=bool(cfg.progress))
    title = profile_title(f"{checkpoint_path.parent.name} [{tag}]", cfg, split)
    save_profile_figure([(split_label(split, int(labels.numel())), layers, fit)], title, [out_dir / "profile.png"],
                        ylabel=MEASURE_LABELS[str(cfg.measure)])
    return atomic_write_json(out_dir / "results.json", {
        "source": str(checkpoint_path), "overrides": overrides, "split": split,
        "config": OmegaConf.to_container(cfg, resolve=True), "measure": str(cfg.measure),
        "layers": layers, "fit": fit, "num_samples": int(labels.numel())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a run directory or a checkpoint.pt")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides, and split=train|test")
    args = parser.parse_args()
    register_resolvers()
    try:
        path = reanalyze(args.source, args.overrides)
    except (ConfigError, DatasetUnavailableError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"results: {path}")


if __name__ == "__main__":
    main()
