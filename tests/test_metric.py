"""separation_metric.SeparationFuzziness: update / compute / reset give the in-memory statistics' measures,
its states are sums (two processes' states summed give the whole data's value), and the profile figure."""
import pytest
import torch

from representation_analysis import measure_separation, profile_figure
from separation_metric import SeparationFuzziness
from tests.test_two_pass import labelled_features, values
from variance_analysis import class_statistics


@pytest.mark.parametrize("measure", ["within_variance", "nc1", "cdnv", "between_variance"])
def test_update_compute_reset_match_the_in_memory_measures(measure):
    features, labels = labelled_features(40, seed=2, offset=50.0)
    metric = SeparationFuzziness(num_classes=5, num_features=40, measure=measure, shift=features[:30].mean(dim=0))
    for start in range(0, labels.numel(), 33):
        metric.update(features[start:start + 33].float(), labels[start:start + 33])
    expected = values(class_statistics(features.float(), labels))[measure]
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)
    metric.reset()
    assert float(metric.counts.sum()) == 0.0 and float(metric.gram.abs().sum()) == 0.0
    metric.update(features[:100], labels[:100])
    assert float(metric.compute()) == pytest.approx(values(class_statistics(features[:100], labels[:100]))[measure],
                                                    rel=1e-9)


def test_states_are_sums_so_processes_combine_exactly():
    features, labels = labelled_features(24, seed=4)
    whole, first, second = (SeparationFuzziness(num_classes=5, num_features=24) for _ in range(3))
    whole.update(features, labels)
    first.update(features[:90], labels[:90])
    second.update(features[90:], labels[90:])
    first.merge_state(second)   # what TorchMetrics' sync does across processes: the sum of each state
    assert float(first.compute()) == pytest.approx(float(whole.compute()), rel=1e-12)


def test_the_metric_refuses_bad_input():
    metric = SeparationFuzziness(num_classes=3, num_features=4)
    for features, labels, error, start in (
            (torch.randn(5, 4), torch.arange(5) % 3 * 1.0, TypeError, "labels: dtype torch.float32"),
            (torch.randn(5, 4), torch.arange(4) % 3, ValueError, "labels: 4 for 5 samples"),
            (torch.randn(5, 6), torch.arange(5) % 3, ValueError, "features: 6 values per sample"),
            (torch.full((5, 4), float("nan")), torch.arange(5) % 3, ValueError, "features: NaN or infinite"),
            (torch.randn(5, 4), torch.arange(5), ValueError, "labels: holds 4 with num_classes=3")):
        with pytest.raises(error, match=f"^{start}"):
            metric.update(features, labels)
    metric.update(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="^labels: fewer than two classes seen"):
        metric.compute()
    with pytest.raises(ValueError, match="^measure='nc2': allowed"):
        SeparationFuzziness(num_classes=3, num_features=4, measure="nc2")


def test_a_profile_becomes_the_projects_profile_figure(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 3))
    x, y = torch.randn(90, 6), torch.arange(90) % 3
    profile = measure_separation(net, x, y, modules=torch.nn.ReLU)
    figure = profile_figure(profile, title="two ReLUs")
    (axes,) = figure.axes
    assert axes.get_ylabel() == "ln D" and axes.get_title() == "two ReLUs"
    assert axes.get_legend().get_texts()[0].get_text().startswith("data: r = ")
    assert profile_figure(profile, path=tmp_path / "profile.png") is None
    assert (tmp_path / "profile.png").read_bytes()[:4] == b"\x89PNG"
