"""Re-measure a finished run from its checkpoint, without retraining, e.g. with another measure,
BatchNorm mode, PCA dimension or split. The original run's files are never touched: the new profile
goes to RUN_DIR/reanalysis/<overrides>/ (results.json and profile.png).

    python reanalyze.py logs/<run name>                                  # same settings: same D
    python reanalyze.py logs/<run name> measure=nc1 analysis.bn_mode=train_batches
    python reanalyze.py logs/<run name> split=test analysis.test_subset_size=2000
    python reanalyze.py path/to/checkpoint.pt analysis.pca_dim=50        # a checkpoint and its config

Overrides are config keys (as on the entry script's command line) plus split=train|test. The last
stdout line is `results: <path to results.json>`.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from atomic_io import atomic_write_json
from config_utils import ConfigError, register_resolvers, validate_config
from data import DatasetUnavailableError, balanced_subset, prepare_dataset
from plotting import save_profile_figure
from representation_dynamics_terminal import measure, set_up_execution
from train_models import build_model

SPLITS = ("train", "test")


def reanalyze(source: Path, overrides: list[str]) -> Path:
    """Measure the checkpoint at `source` (a run directory or a checkpoint file) with `overrides`;
    returns the path of the new results.json."""
    checkpoint_path = source / "checkpoint.pt" if source.is_dir() else source
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    split_overrides = [item for item in overrides if item.startswith("split=")]
    split = split_overrides[-1].split("=", 1)[1] if split_overrides else "train"
    if split not in SPLITS:
        raise ConfigError(f"split={split}: allowed: {', '.join(SPLITS)}")
    config_overrides = [item for item in overrides if not item.startswith("split=")]
    cfg = OmegaConf.merge(OmegaConf.create(checkpoint["config"]), OmegaConf.from_dotlist(config_overrides))
    validate_config(cfg)
    device = set_up_execution(cfg)
    dataset = prepare_dataset(cfg.data, Path(cfg.data_root), int(cfg.seed), device, bool(cfg.download))
    model = build_model(cfg, dataset.input_shape, dataset.num_classes).to(device)
    model.load_state_dict(checkpoint["model_state"])
    inputs, labels = dataset.train_x, dataset.train_y
    if split == "test":
        subset = balanced_subset(dataset.test_y, int(cfg.analysis.test_subset_size), dataset.num_classes,
                                 int(cfg.seed)).to(device)
        inputs, labels = dataset.test_x[subset], dataset.test_y[subset]
    layers, fit = measure(model, inputs, labels, cfg, split=split)
    tag = re.sub(r"[^A-Za-z0-9_.=,-]", "_", ",".join(overrides)) or "same-settings"
    out_dir = checkpoint_path.parent / "reanalysis" / tag
    ylabel = "ln D" if cfg.measure == "within_variance" else f"ln {cfg.measure}"
    save_profile_figure([(split, layers, fit)], f"{checkpoint_path.parent.name} [{tag}]",
                        [out_dir / "profile.png"], ylabel=ylabel)
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
    except (ConfigError, DatasetUnavailableError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"results: {path}")


if __name__ == "__main__":
    main()
