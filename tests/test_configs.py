"""Every config composes, builds a model with the declared number of measured points, and names a run."""
import itertools
import shutil

import pytest
import torch

from config_utils import CONF_DIR, ConfigError, run_identity, run_name
from train_models import build_model, learning_rate_at

DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
MLP_MODELS = ["GFNN", "GFNNNoBN", "GLNN", "GFNNOriginal"]
OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimization").glob("*.yaml"))
INPUT_SHAPES = {"cm": (1, 10, 10), "cm5k": (1, 10, 10), "cfm": (1, 10, 10), "cc": (1, 10, 10),
                "imbalanced_cfm": (1, 10, 10), "fashion_mnist": (1, 32, 32), "cifar10": (3, 32, 32)}


@pytest.mark.parametrize("data_name,optimizer", list(itertools.product(DATA, OPTIMIZERS)))
def test_every_data_and_optimizer_config_composes(compose, data_name, optimizer):
    cfg = compose(f"data={data_name}", f"optimization={optimizer}")
    assert cfg.data.name == data_name
    assert cfg.optimization.name == optimizer
    assert len(cfg.data.mean) == len(cfg.data.std)
    assert run_name(cfg).startswith(f"{cfg.data.name}-GFNN-L6-w100-{optimizer}-")


@pytest.mark.parametrize("model_name", MLP_MODELS)
@pytest.mark.parametrize("layer_num", [0, 2, 6, 18])
def test_mlp_measured_point_count_is_layer_num_plus_two(compose, model_name, layer_num):
    cfg = compose(f"model={model_name}", f"layer_num={layer_num}", "hidden_size=16")
    model = build_model(cfg, (1, 10, 10), 10)
    assert len(model.measured_modules()) == layer_num + 2
    assert model(torch.zeros(4, 1, 10, 10)).shape == (4, 10)
    has_bn = any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    has_relu = all(block.relu for block in model.blocks)
    assert has_bn == (model_name != "GFNNNoBN") and has_relu == (model_name != "GLNN")


def test_run_name_is_deterministic_and_ignores_execution_keys(compose):
    base = compose("lr=0.001")
    assert run_name(base) == run_name(compose("lr=0.001"))
    assert run_name(base) == run_name(compose("lr=0.001", "device=cpu", "threads=1", "progress=false"))
    assert run_name(base) != run_name(compose("lr=0.001", "weight_decay=0"))
    assert "device" not in run_identity(base) and "epochs" in run_identity(base)


# (overrides, model.depth, model.tag) of every model config
MODEL_LABELS = [
    (("model=GFNN", "layer_num=2"), 2, "L2-w100"), (("model=GFNNNoBN",), 6, "L6-w100"),
    (("model=GLNN", "layer_num=18"), 18, "L18-w100"),
    (("model=GFNNOriginal", "hidden_size=1000"), 6, "L6-w1000"),
    (("model=FNNSW",), 6, "L6-w100"), (("model=FNNWS",), 6, "L6-w100"), (("model=FNNMIX",), 6, "L6-w100"),
    (("model=VGG13", "layer_num=11"), 11, "L11"), (("model=AlexNet",), 6, "L6"),
    (("model=GResNet", "model.params.block_num=3"), 3, "basicblock3-block"),
    (("model=ResNetMixV2", "model.params.feature_option=layer"), 4, "MIX4-layer"),
]


def test_every_model_config_declares_its_depth_and_tag(compose):
    assert len(MODEL_LABELS) == len(list((CONF_DIR / "model").glob("*.yaml")))
    for overrides, depth, tag in MODEL_LABELS:
        cfg = compose(*overrides)
        assert (cfg.model.depth, cfg.model.tag) == (depth, tag), overrides
        assert "depth" not in run_identity(cfg)["model"]  # a label derived from the identity's keys


# MLP runs and their run directory names (logs/, docs/reproduction/runs.csv): a name that changed would
# make finished runs run again. All but GFNNOriginal's are directories of finished runs; that one was
# computed before layer_num and hidden_size left the identity of the models that ignore them.
MLP_RUN_NAMES = [
    ((), "cfm-GFNN-L6-w100-adam-lr0.001-e600-s666-306a91a2"),
    (("+experiment=fig1", "optimization=sgd", "layer_num=2"),
     "cfm-GFNN-L2-w100-sgd-lr0.3-e600-s666-864446b9"),
    (("+experiment=lr", "lr=1.0"), "cfm-GFNN-L7-w100-sgd-lr1.0-e600-s666-eebfca43"),
    (("+experiment=width", "hidden_size=20"), "cfm-GFNN-L6-w20-adam-lr0.001-e600-s666-1016850d"),
    (("+experiment=imbalanced", "layer_num=18", "lr=3e-4"),
     "imbalanced_cfm-GFNN-L18-w100-adam-lr0.0003-e600-s666-94d0aaa3"),
    (("+experiment=shape", "model=FNNSW"), "cfm-FNNSW-L6-w100-adam-lr0.001-e600-s666-89f024bb"),
    (("+experiment=shape", "model=FNNWS"), "cfm-FNNWS-L6-w100-adam-lr0.001-e600-s666-26fb6725"),
    (("+experiment=shape", "model=FNNMIX"), "cfm-FNNMIX-L6-w100-adam-lr0.001-e600-s666-689f6ceb"),
    (("+experiment=linearized", "lr=3e-4"), "cfm-GLNN-L18-w100-adam-lr0.0003-e600-s666-d33063b0"),
    (("+experiment=nobn",), "cfm-GFNNNoBN-L18-w100-adam-lr0.001-e600-s666-e290277e"),
    (("+experiment=original", "layer_num=6"),
     "fashion_mnist-GFNNOriginal-L6-w1000-adam-lr0.001-e600-s666-e7d122d2"),
]


@pytest.mark.parametrize("overrides,name", MLP_RUN_NAMES)
def test_mlp_run_names_never_change(compose, overrides, name):
    assert run_name(compose(*overrides)) == name


def test_shape_keys_are_part_of_the_identity_only_where_the_model_uses_them(compose):
    for model in (("model=GResNet",), ("model=ResNetMixV2",), ("model=VGG13", "layer_num=11"),
                  ("model=AlexNet",)):
        identity = run_identity(compose(*model))
        assert "layer_num" not in identity and "hidden_size" not in identity
        assert run_name(compose(*model, "hidden_size=7")) == run_name(compose(*model))
    assert run_name(compose("model=GResNet", "layer_num=3")) == run_name(compose("model=GResNet"))
    for mlp in ("GFNN", "FNNSW"):
        assert {"layer_num", "hidden_size"} <= run_identity(compose(f"model={mlp}")).keys()
        assert run_name(compose(f"model={mlp}", "hidden_size=7")) != run_name(compose(f"model={mlp}"))


def test_learning_rate_schedule_divides_by_10_then_100():
    fractions = [1 / 3, 2 / 3]
    assert learning_rate_at(199, 1.0, 600, fractions, 0.1) == 1.0
    assert learning_rate_at(200, 1.0, 600, fractions, 0.1) == pytest.approx(0.1)
    assert learning_rate_at(399, 1.0, 600, fractions, 0.1) == pytest.approx(0.1)
    assert learning_rate_at(400, 1.0, 600, fractions, 0.1) == pytest.approx(0.01)
    assert learning_rate_at(3, 1.0, 10, fractions, 0.1) == pytest.approx(0.1)  # int(10/3) = 3
    assert learning_rate_at(6, 1.0, 10, fractions, 0.1) == pytest.approx(0.01)  # int(20/3) = 6


def test_unknown_architecture_is_rejected(compose):
    cfg = compose()
    cfg.model.architecture = "transformer"
    with pytest.raises(ConfigError, match="model.architecture=transformer: allowed: .*MLP"):
        build_model(cfg, (1, 10, 10), 10)


def test_hydra_reads_the_run_mode_without_composing_only_where_nothing_sets_it(tmp_path, monkeypatch):
    """Hydra's get_mode composes the whole config to read hydra.mode; the entry answers None (what that
    composition gives: conf/ sets no hydra.mode) without it, and leaves Hydra's own read where the command
    line or a config file sets the mode, or another config is named."""
    from hydra._internal.hydra import Hydra

    import representation_dynamics_terminal as entry

    own = Hydra.get_mode

    def mode_inside(argv):
        with entry.mode_without_composing(argv):
            return Hydra.get_mode
    assert mode_inside(["data=cfm", "model=GFNN", "layer_num=6"])(None, "config", []) is None
    assert Hydra.get_mode is own                                  # put back after the run
    for argv in (["hydra.mode=MULTIRUN"], ["+hydra.mode=RUN"], ["--config-dir", "other"], ["-cn", "x"]):
        assert mode_inside(argv) is own, argv
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "many.yaml").write_text("# @package _global_\nhydra:\n  mode: MULTIRUN\n")
    monkeypatch.setattr(entry, "CONF_DIR", conf)
    assert mode_inside(["+experiment=fig1"]) is own
    (conf / "experiment" / "many.yaml").write_text("# @package _global_\nanalysis:\n  bn_mode: eval\n")
    assert mode_inside(["+experiment=fig1"]) is not own
