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

import cpu_kernels  # noqa: F401  (first, before torch: the same CPU kernels on every x86-64 machine)

import argparse
import hashlib
import pickle
import re
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from atomic_io import atomic_write_json
from config_utils import ConfigError, folder_problem, register_resolvers
from data import DatasetUnavailableError
from experiment import measure_split, measured_test_subset, set_up, validate_config
from plotting import save_profile_figure
from variance_analysis import MEASURE_LABELS

SPLITS = ("train", "test")
MEASUREMENT_KEYS = ("measure", "analysis.bn_mode", "analysis.bn_batch_size", "analysis.pca_dim",
                    "analysis.eval_batch_size", "analysis.test_subset_size")
EXECUTION_OVERRIDES = ("device", "threads", "data_root", "download")
MAX_TAG_LENGTH = 120  # longer override lists are shortened and end with a hash
MISSING = object()


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
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as error:
        raise CheckpointError(f"{path}: refused: not a checkpoint that loads as tensors and plain "
                              f"containers ({load_failure_reason(error)})") from None
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_state"), dict)
            and isinstance(checkpoint.get("config"), dict)):
        raise CheckpointError(f"{path}: not a checkpoint of this project (a dict with model_state and config)")
    return checkpoint


def reanalyze(source: Path, overrides: list[str]) -> Path:
    """Measure the checkpoint at `source` (a run directory or a checkpoint file) with `overrides`;
    returns the path of the new results.json."""
    checkpoint_path = source / "checkpoint.pt" if source.is_dir() else source
    checkpoint = load_checkpoint(checkpoint_path)
    split, config_overrides = parse_overrides(overrides, checkpoint["config"])
    cfg = OmegaConf.merge(OmegaConf.create(checkpoint["config"]), OmegaConf.from_dotlist(config_overrides))
    validate_config(cfg, output_keys=())
    tag = reanalysis_tag(overrides)  # every item is an accepted KEY=VALUE here
    reanalysis_dir = checkpoint_path.parent / "reanalysis"
    out_dir = reanalysis_dir / tag
    if out_dir.resolve().parent != reanalysis_dir.resolve():  # cannot happen: reanalysis_tag's promise
        raise ConfigError(f"{tag}: not a directory name inside {reanalysis_dir}")
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
    layers, fit = measure_split(cfg, run.model, inputs, labels, split)
    save_profile_figure([(split, layers, fit)], f"{checkpoint_path.parent.name} [{tag}]",
                        [out_dir / "profile.png"], ylabel=MEASURE_LABELS[str(cfg.measure)])
    return atomic_write_json(out_dir / "results.json", {
        "source": str(checkpoint_path), "overrides": overrides, "split": split,
        "config": OmegaConf.to_container(cfg, resolve=True), "measure": str(cfg.measure),
        "layers": layers, "fit": fit, "num_samples": int(labels.numel())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
