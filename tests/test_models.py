"""The CNN, residual and shaped-MLP architectures: composed from their configs, with the declared
measured points, feature widths and fit segments, and hooks that capture what the network computes."""
import functools

import pytest
import torch
from conftest import compose_config

from config_utils import CONF_DIR, run_name
from models import ResidualBlock
from representation_analysis import measured_features
from train_models import ConfigError, build_model

GRAY, COLOR = (1, 32, 32), (3, 32, 32)

# (overrides, measured points) for every model and option of this file's configs
POINT_COUNTS = [
    (("model=VGG13", "layer_num=11"), 13),
    (("model=AlexNet", "layer_num=6"), 8),
    (("model=GResNet", "model.params.block_option=basicblock", "model.params.feature_option=block"), 5),
    (("model=GResNet", "model.params.block_option=bottleneck", "model.params.feature_option=block"), 5),
    (("model=GResNet", "model.params.block_option=basicblock", "model.params.feature_option=layer"), 9),
    (("model=GResNet", "model.params.block_option=bottleneck", "model.params.feature_option=layer"), 13),
    (("model=ResNetMixV2", "model.params.feature_option=layer"), 11),
    (("model=ResNetMixV2", "model.params.feature_option=block"), 5),
    (("model=FNNSW",), 8),
    (("model=FNNWS",), 8),
    (("model=FNNMIX",), 8),
]
CNN_OVERRIDES = {"VGG13": ("model=VGG13", "layer_num=11"), "AlexNet": ("model=AlexNet", "layer_num=6")}


@functools.lru_cache(maxsize=None)
def composed(*overrides):
    """The composed config of `overrides` (composing costs ~0.1 s; build_model never changes it)."""
    return compose_config("data=fashion_mnist", *overrides)


def build(*overrides, input_shape=GRAY):
    torch.manual_seed(0)
    return build_model(composed(*overrides), input_shape, 10)


def calibrated(model, input_shape, batches=2):
    """The model in eval mode with BatchNorm running statistics moved off their (0, 1) start."""
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(4, *input_shape) * 2 + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def captured():
    """captured(overrides, input_shape) -> (model, inputs, outputs): one eval-mode model per config and
    input shape for the whole module (VGG13 and AlexNet have 4096-wide FC layers, slow to build and
    run), and the measured features of 2 inputs with the classifier's logits (key "classifier")
    captured by the same single pass."""
    cache = {}

    def get(overrides, input_shape=GRAY):
        if (overrides, input_shape) not in cache:
            model = build(*overrides, input_shape=input_shape).eval()
            inputs = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(1))
            modules = model.measured_modules() + [("classifier", model.classifier)]
            cache[(overrides, input_shape)] = model, inputs, measured_features(model, inputs, "eval",
                                                                               modules=modules)
        return cache[(overrides, input_shape)]
    return get


@pytest.mark.parametrize("overrides,count", POINT_COUNTS,
                         ids=lambda v: "-".join(v) if isinstance(v, tuple) else str(v))
def test_measured_point_counts(overrides, count):
    model = build(*overrides)
    assert len(model.measured_points) == count
    assert len(model.measured_modules()) == count
    assert "classifier" not in model.measured_points


@pytest.mark.parametrize("input_shape", [GRAY, COLOR], ids=["1x32x32", "3x32x32"])
@pytest.mark.parametrize("overrides", [o for o, _ in POINT_COUNTS], ids=lambda o: "-".join(o))
def test_forward_output_and_one_feature_per_point(captured, overrides, input_shape):
    model, inputs, outputs = captured(overrides, input_shape)
    assert outputs["classifier"].shape == (2, 10)
    features = {name: feature for name, feature in outputs.items() if name != "classifier"}
    assert list(features) == model.measured_points
    assert all(feature.shape[0] == 2 and feature.dim() == 2 for feature in features.values())


def test_vgg13_feature_dims(captured):
    model, _, outputs = captured(CNN_OVERRIDES["VGG13"])
    assert [outputs[name].shape[1] for name in model.measured_points] == [
        16 * 32 * 32, 64 * 32 * 32, 64 * 32 * 32, 128 * 16 * 16, 128 * 16 * 16, 256 * 8 * 8,
        256 * 8 * 8, 512 * 4 * 4, 512 * 4 * 4, 512 * 2 * 2, 512 * 2 * 2, 4096, 4096]
    assert model.fc[0].linear.in_features == 512
    _, _, color = captured(CNN_OVERRIDES["VGG13"], COLOR)
    assert color["repeat"].shape[1] == 48 * 32 * 32  # 3 channels repeated 16 times


def test_alexnet_feature_dims_and_flatten_width(captured):
    model, _, outputs = captured(CNN_OVERRIDES["AlexNet"])
    assert [outputs[name].shape[1] for name in model.measured_points] == [
        32 * 32 * 32, 64 * 32 * 32, 192 * 16 * 16, 384 * 8 * 8, 256 * 8 * 8, 256 * 8 * 8, 4096, 4096]
    assert model.fc[0].linear.in_features == 256 * 4 * 4
    assert model.measured_points == ["repeat", "features.0", "features.2", "features.4", "features.5",
                                     "features.6", "fc.0", "fc.1"]


@pytest.mark.parametrize("name,repeats", [("VGG13", 16), ("AlexNet", 32)])
def test_cnn_points_are_the_repeated_input_then_post_relu_maps(captured, name, repeats):
    model, inputs, outputs = captured(CNN_OVERRIDES[name])
    assert torch.equal(outputs["repeat"], inputs.repeat(1, repeats, 1, 1).flatten(1))
    assert all((outputs[point] >= 0).all() for point in model.measured_points[1:])
    with torch.no_grad():  # the captured fc.1 features are what the classifier saw
        torch.testing.assert_close(model.classifier(outputs["fc.1"]), outputs["classifier"])


def test_gresnet_hooks_equal_running_the_blocks_by_hand():
    model = calibrated(build("model=GResNet", "model.params.block_option=bottleneck",
                             "model.params.feature_option=layer"), GRAY)
    inputs = torch.randn(3, *GRAY)
    features = measured_features(model, inputs, "eval")
    assert features["repeat"].shape[1] == 8 * 32 * 32
    expected = [inputs.repeat(1, 8, 1, 1)]
    with torch.no_grad():
        x = expected[0]
        for block in model.blocks:
            conv1 = torch.relu(block.convs[0].norm(block.convs[0].conv(x)))
            conv2 = torch.relu(block.convs[1].norm(block.convs[1].conv(conv1)))
            x = torch.relu(block.last.norm(block.last.conv(conv2)) + x)  # identity shortcut
            expected += [conv1, conv2, x]
        logits = model(inputs)
    assert len(expected) == len(features) == 13
    for (name, feature), want in zip(features.items(), expected):
        torch.testing.assert_close(feature, want.flatten(1), msg=name)
        assert feature.shape[1] == 8 * 32 * 32
    torch.testing.assert_close(logits, model.classifier(x.flatten(1)))


def test_resnetmix_layer_points_and_block_points_agree():
    layer_model = calibrated(build("model=ResNetMixV2", "model.params.feature_option=layer"), GRAY)
    block_model = build("model=ResNetMixV2", "model.params.feature_option=block")
    block_model.load_state_dict(layer_model.state_dict())
    block_model.eval()
    inputs = torch.randn(3, *GRAY)
    by_layer = list(measured_features(layer_model, inputs).values())
    by_block = list(measured_features(block_model, inputs).values())
    # block outputs are layer points 0 (input), 3, 6 (bottleneck blocks), 8, 10 (basic blocks)
    for layer_index, block_index in zip([0, 3, 6, 8, 10], range(5)):
        torch.testing.assert_close(by_layer[layer_index], by_block[block_index])
    assert [len(block.convs) + 1 for block in layer_model.blocks] == [3, 3, 2, 2]


def test_resnetmix_fit_segments_share_the_boundary_point():
    assert build("model=ResNetMixV2", "model.params.feature_option=layer").fit_segments == [(0, 6), (6, 10)]
    assert build("model=ResNetMixV2", "model.params.feature_option=block").fit_segments == [(0, 2), (2, 4)]
    six_blocks = build("model=ResNetMixV2", "model.params.feature_option=block", "model.params.block_num=6")
    assert six_blocks.fit_segments == [(0, 3), (3, 6)]
    two_blocks = build("model=ResNetMixV2", "model.params.feature_option=layer", "model.params.block_num=2")
    assert two_blocks.fit_segments == [(0, 3), (3, 5)]  # 1 + 3 + 2 points
    assert build("model=GResNet").fit_segments is None


@pytest.mark.parametrize("block_num", [3, 0])
def test_resnetmix_rejects_odd_or_too_few_blocks(block_num):
    message = (f"block_num={block_num}: ResNetMixV2 splits its blocks in two halves; "
               "allowed: an even number >= 2")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build("model=ResNetMixV2", f"model.params.block_num={block_num}")


def test_resnet_options_are_checked():
    with pytest.raises(ValueError, match="block_option=wide: allowed: basicblock, bottleneck"):
        build("model=GResNet", "model.params.block_option=wide")
    with pytest.raises(ValueError, match="feature_option=conv: allowed: block, layer"):
        build("model=GResNet", "model.params.feature_option=conv")
    with pytest.raises(ValueError, match="block_option=basicblock: .*allowed: MIX"):
        build("model=ResNetMixV2", "model.params.block_option=basicblock")


def test_gresnet_shortcuts_identity_on_gray_projection_on_color():
    gray = build("model=GResNet", "model.params.block_option=basicblock")
    assert all(isinstance(block.shortcut, torch.nn.Identity) for block in gray.blocks)
    assert gray.blocks[0].convs[0].conv.in_channels == 8 and gray.classifier.in_features == 8 * 32 * 32
    color = build("model=GResNet", "model.params.block_option=basicblock", input_shape=COLOR)
    assert color.blocks[0].convs[0].conv.in_channels == 24  # 3 channels repeated 8 times
    assert isinstance(color.blocks[0].shortcut, torch.nn.Sequential)
    assert all(isinstance(block.shortcut, torch.nn.Identity) for block in color.blocks[1:])
    bottleneck = build("model=GResNet", "model.params.block_option=bottleneck")
    kernels = [block.convs[0].conv.kernel_size for block in bottleneck.blocks]
    assert kernels == [(5, 5)] * 4 and isinstance(gray.blocks[0], ResidualBlock)
    first_conv = gray.blocks[0].convs[0].conv
    assert first_conv.kernel_size == (3, 3) and first_conv.bias is None


@pytest.mark.parametrize("name,widths", [("FNNSW", [100, 100, 100, 100, 1000, 1000, 1000]),
                                         ("FNNWS", [1000, 1000, 1000, 1000, 100, 100, 100]),
                                         ("FNNMIX", [100, 500, 500, 2500, 2500, 500, 500])])
def test_shaped_mlp_block_widths(name, widths):
    model = build(f"model={name}", "hidden_size=100", input_shape=(1, 10, 10))
    assert [block.linear.out_features for block in model.blocks] == widths
    assert model.blocks[0].linear.in_features == 100 and model.classifier.in_features == widths[-1]


@pytest.mark.parametrize("overrides,allowed", [(("model=VGG13", "layer_num=6"), 11),
                                               (("model=AlexNet", "layer_num=11"), 6),
                                               (("model=FNNSW", "layer_num=7"), 6)])
def test_fixed_depth_models_reject_another_layer_num(overrides, allowed):
    with pytest.raises(ConfigError, match=f"allowed: layer_num={allowed}"):
        build(*overrides)


def test_configs_name_runs_and_pca_dims(compose):
    cfg = compose("model=GResNet", "model.params.block_option=bottleneck",
                  "model.params.feature_option=layer", "data=fashion_mnist")
    params = cfg.model.params
    assert (params.block_option, params.block_num, params.feature_option) == ("bottleneck", 4, "layer")
    assert "block_option" not in cfg and cfg.analysis.pca_dim == 100
    assert run_name(cfg).startswith("fashion_mnist-GResNet-bottleneck4-layer-adam-")
    mix = compose("model=ResNetMixV2", "model.params.block_num=6", "data=fashion_mnist")
    assert mix.model.tag == "MIX6-block" and mix.analysis.pca_dim == 100
    for model_name in ("VGG13", "AlexNet", "FNNSW", "FNNWS", "FNNMIX"):
        assert compose(f"model={model_name}").analysis.pca_dim is None
    assert compose("model=VGG13", "layer_num=11").model.tag == "L11"


@pytest.mark.parametrize("name", ["VGG13", "AlexNet", "GResNet", "ResNetMixV2",
                                  "FNNSW", "FNNWS", "FNNMIX"])
def test_model_config_files_open_with_a_description(name):
    lines = (CONF_DIR / "model" / f"{name}.yaml").read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 40 and not lines[0].startswith("# @")
