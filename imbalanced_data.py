"""Build the cache of an imbalanced training subset (the rule is data.imbalanced_class_counts: a few
majority classes with many images, the rest with few; the paper's imbalanced cfm has 500 images in
classes 0-4 and 100 in classes 5-9).

    python imbalanced_data.py                      # build the imbalanced cfm cache (data=imbalanced_cfm)
    python imbalanced_data.py data.imbalance.majority_size=300      # another size of the majority classes
    python imbalanced_data.py data=cfm default_imbalance.minority_size=50   # cfm with the default's rule changed
"""
from __future__ import annotations


import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: F401  (first, before torch: the same CPU kernels on every x86-64 machine)

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from config_utils import CONF_DIR, ConfigError, register_resolvers
from override_check import refuse_override_typos
from data import DatasetUnavailableError, checked_load, class_counts_of


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="imbalanced_data")
def main(cfg: DictConfig) -> None:
    data_cfg = cfg.data
    if data_cfg.get("imbalance") is None:  # e.g. data=cfm: apply the default imbalance
        with open_dict(data_cfg):
            data_cfg.imbalance = OmegaConf.to_container(cfg.default_imbalance)
            data_cfg.name = f"imbalanced_{data_cfg.name}"
    try:
        content = checked_load(cfg)
    except (ConfigError, DatasetUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print(f"{data_cfg.name}: class counts {class_counts_of(data_cfg)}, "
          f"train {tuple(content['train_images'].shape)}, test {tuple(content['test_images'].shape)}")


if __name__ == "__main__":
    register_resolvers()
    refuse_override_typos(sys.argv[1:], "imbalanced_data", Path(__file__).name)   # not Hydra's advice to add +
    main()
