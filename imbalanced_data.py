"""Imbalanced training subsets: a few majority classes with many images, the rest with few.

The paper's imbalanced cfm gives classes 0-4 500 images and classes 5-9 100 (ratio R = 5); the split
and the test set are otherwise those of data.py. Separation fuzziness on imbalanced data uses the
n_k-weighted SS_b and SS_w of variance_analysis.py (the same formulas as the balanced case).

    python imbalanced_data.py                      # build the imbalanced cfm cache (data=imbalanced_cfm)
    python imbalanced_data.py data=cfm data.imbalance.majority_size=300
"""
from __future__ import annotations


def imbalanced_class_counts(num_classes: int, majority_classes, majority_size: int,
                            minority_size: int) -> list[int]:
    """Training images per class: majority_size for the majority classes, minority_size otherwise."""
    majority = {int(k) for k in majority_classes}
    unknown = sorted(k for k in majority if not 0 <= k < num_classes)
    if unknown:
        raise ValueError(f"data.imbalance.majority_classes={sorted(majority)}: classes {unknown} do not "
                         f"exist; allowed: 0..{num_classes - 1}")
    return [int(majority_size) if k in majority else int(minority_size) for k in range(num_classes)]


if __name__ == "__main__":
    from pathlib import Path

    import hydra
    from omegaconf import DictConfig, OmegaConf, open_dict

    from config_utils import CONF_DIR, register_resolvers
    from data import class_counts_of, load_or_build_cache

    register_resolvers()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="imbalanced_data")
    def main(cfg: DictConfig) -> None:
        data_cfg = cfg.data
        if data_cfg.get("imbalance") is None:  # e.g. data=cfm: apply the default imbalance
            with open_dict(data_cfg):
                data_cfg.imbalance = OmegaConf.to_container(cfg.default_imbalance)
                data_cfg.name = f"imbalanced_{data_cfg.name}"
        content = load_or_build_cache(data_cfg, Path(cfg.data_root), int(cfg.seed), bool(cfg.download))
        print(f"{data_cfg.name}: class counts {class_counts_of(data_cfg)}, "
              f"train {tuple(content['train_images'].shape)}, test {tuple(content['test_images'].shape)}")

    main()
