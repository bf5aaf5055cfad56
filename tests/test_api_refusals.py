"""Item 5 of issue 28: measure_separation refuses each kind of bad input with one clear exception (one line
naming the argument or the module, and what is allowed or how to fix it)."""
import pytest
import torch
from torch import nn

from representation_analysis import PickOutput, measure_separation


class TwoHeads(nn.Module):
    """A body whose block returns a tuple, a dict, or NaN from its third feature on."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 12)
        self.pair = nn.LSTM(12, 8, batch_first=True)
        self.broken = nn.Linear(12, 12)
        nn.init.constant_(self.broken.bias, float("nan"))

    def forward(self, x):
        hidden = self.stem(x)
        out, _ = self.pair(hidden[:, None, :])
        return self.broken(hidden) + out.sum()


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return torch.randn(60, 6), torch.arange(60) % 3


def refusal(call) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as raised:
        call()
    assert "\n" not in str(raised.value)
    return raised.type, str(raised.value)


def test_each_bad_input_is_one_clear_exception(data):
    x, y = data
    net, shared = TwoHeads(), nn.ReLU()
    cases = {
        "lengths": (lambda: measure_separation(net, x, y[:50], modules=["stem"]),
                    ValueError, "labels: 50 for 60 samples of data; allowed: one label per sample"),
        "one class": (lambda: measure_separation(net, x, y * 0, modules=["stem"]),
                      ValueError, "labels: only class 0; allowed: samples of at least two classes"),
        "one class in batches": (lambda: measure_separation(net, [(x, y * 0 + 2)], modules=["stem"], num_classes=3),
                                 ValueError, "labels: only class 2; allowed"),
        "out of range": (lambda: measure_separation(net, x, y, modules=["stem"], num_classes=2),
                         ValueError, "labels: holds 2 with num_classes=2"),
        "not integers": (lambda: measure_separation(net, x, y.double(), modules=["stem"]),
                         TypeError, "labels: dtype torch.float64 (not truncated to class indices)"),
        "non-finite": (lambda: measure_separation(net, x, y, modules=["stem", "broken"]),
                       ValueError, "module 'broken': its output holds NaN or infinite values"),
        "tuple output": (lambda: measure_separation(net, x, y, modules=["pair"]),
                         TypeError, "module 'pair' returns a tuple (2 parts), not a tensor; allowed"),
        "unknown name": (lambda: measure_separation(net, x, y, modules=["stme"]),
                         ValueError, "modules: the model has no submodule 'stme' (near matches: ['stem'])"),
        "twice": (lambda: measure_separation(nn.Sequential(nn.Linear(6, 6), shared, nn.Linear(6, 6), shared), x, y,
                                             modules=["1"]),
                  ValueError, "module '1' runs more than once per forward pass"),
        "empty loader": (lambda: measure_separation(net, [], modules=["stem"], num_classes=3),
                         ValueError, "data: no samples"),
    }
    for name, (call, error, start) in cases.items():
        raised, message = refusal(call)
        assert raised is error and message.startswith(start), (name, message)
    assert "PickOutput(0)" in refusal(cases["tuple output"][0])[1]


def test_a_dict_output_says_how_to_pick_and_pick_output_measures_it(data):
    x, y = data
    torch.manual_seed(1)

    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(6, 10)

        def forward(self, inputs):
            return {"features": self.linear(inputs), "scale": inputs.sum(dim=1)}

    model = nn.Sequential()
    model.add_module("block", Named())
    _, message = refusal(lambda: measure_separation(model, x, y, modules=["block"]))
    assert message.startswith("module 'block' returns a dict (keys ['features', 'scale']), not a tensor") and \
        "PickOutput('features')" in message
    model.block = nn.Sequential(model.block, PickOutput("features"))
    picked = measure_separation(model, x, y, modules=["block"])
    direct = measure_separation(nn.Sequential(model.block[0].linear), x, y, modules=["0"])
    assert picked["layers"][0]["D"] == direct["layers"][0]["D"]


def test_dotted_names_as_torchvision_names_submodules(data):
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models.feature_extraction import get_graph_node_names

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3)
    names = ["layer1.0.conv1", "layer2.1.bn2", "layer4.1.conv2"]
    assert set(names) <= set(get_graph_node_names(net)[1])
    profile = measure_separation(net, torch.randn(30, 3, 16, 16), torch.arange(30) % 3, modules=names)
    assert [r["name"] for r in profile["layers"]] == names
    _, message = refusal(lambda: measure_separation(net, torch.randn(30, 3, 16, 16), torch.arange(30) % 3,
                                                    modules=["layer1.0.conv"]))
    assert message.startswith("modules: the model has no submodule 'layer1.0.conv' (near matches: ['layer1.0.conv")
    assert "'layer1.0.conv1'" in message and "'layer1.0.conv2'" in message
