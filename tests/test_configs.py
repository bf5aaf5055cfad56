"""Every config composes, builds a model with the declared number of measured points, and names a run."""
import itertools

import pytest
import torch

from config_utils import CONF_DIR, ConfigError, run_identity, run_name
from train_models import build_model, learning_rate_at

DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
MLP_MODELS = ["GFNN", "GFNNNoBN", "GLNN", "GFNNOriginal"]
OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimization").glob("*.yaml"))
INPUT_SHAPES = {"cm": (1, 10, 10), "cfm": (1, 10, 10), "cc": (1, 10, 10), "imbalanced_cfm": (1, 10, 10),
                "fashion_mnist": (1, 32, 32), "cifar10": (3, 32, 32)}


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
    (("model=GLNN", "layer_num=18"), 18, "L18-w100"), (("model=GFNNOriginal", "hidden_size=1000"), 6, "L6-w1000"),
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
