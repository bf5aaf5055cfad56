"""Shared fixtures: the repository on sys.path, composed configs and small on-disk datasets."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import cpu_kernels  # noqa: E402,F401  (before torch: the CPU kernels of the entry scripts)

from config_utils import CONF_DIR, register_resolvers  # noqa: E402

register_resolvers()


def compose_config(*overrides: str, config_name: str = "config"):
    """The resolved-on-access Hydra config for `overrides`, as the entry script would see it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture
def compose():
    return compose_config
