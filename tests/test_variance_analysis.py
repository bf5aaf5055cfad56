"""The math of variance_analysis.py against independent formulas and data with known answers."""
import math

import numpy as np
import pytest
import torch

from variance_analysis import (between_variance, class_statistics,
                               fit_log_linear, fuzziness_from_statistics, layer_ratios, pca_reduce,
                               separation_fuzziness)


def between_class_scatter(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SS_b as an explicit [d, d] matrix, from the factor class_statistics keeps (D never forms it)."""
    factor = class_statistics(features, labels).between_factor()
    return factor.T @ factor


def within_class_scatter(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SS_w as an explicit [d, d] matrix."""
    stats = class_statistics(features, labels)
    return stats.within_factor.T @ stats.within_factor


def direct_fuzziness(features: np.ndarray, labels: np.ndarray) -> float:
    """D = trace(SS_w pinv(SS_b)) written out with explicit loops and numpy's pinv."""
    n, d = features.shape
    global_mean = features.mean(axis=0)
    ss_b = np.zeros((d, d))
    ss_w = np.zeros((d, d))
    for k in np.unique(labels):
        members = features[labels == k]
        mean_k = members.mean(axis=0)
        ss_b += len(members) * np.outer(mean_k - global_mean, mean_k - global_mean)
        for x in members:
            ss_w += np.outer(x - mean_k, x - mean_k)
    ss_b /= n
    ss_w /= n
    return float(np.trace(ss_w @ np.linalg.pinv(ss_b)))


def random_problem(seed=0, n_per_class=(30, 50, 20, 40, 60), d=12):
    generator = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(n_per_class)])
    centers = generator.normal(scale=2.0, size=(len(n_per_class), d))
    features = centers[labels] + generator.normal(size=(labels.size, d))
    return features, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuzziness_matches_direct_formula_on_random_imbalanced_data(seed):
    features, labels = random_problem(seed)
    expected = direct_fuzziness(features, labels)
    got = separation_fuzziness(torch.from_numpy(features), torch.from_numpy(labels))
    assert got == pytest.approx(expected, rel=1e-10)
    assert 0 < got < 100


def test_fuzziness_when_dimension_exceeds_samples():
    # d = 300 > N = 60: SS_w is rank deficient, SS_b has rank K - 1 = 3.
    features, labels = random_problem(3, n_per_class=(15, 15, 15, 15), d=300)
    expected = direct_fuzziness(features, labels)
    got = separation_fuzziness(torch.from_numpy(features), torch.from_numpy(labels))
    assert got == pytest.approx(expected, rel=1e-9)


def test_known_answer_two_classes_in_one_dimension():
    # class means -1 and +1, every point at distance s from its mean: SS_b = 1, SS_w = s^2, D = s^2.
    s = 0.3
    features = torch.tensor([[-1 - s], [-1 + s], [1 - s], [1 + s]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    assert separation_fuzziness(features, labels) == pytest.approx(s ** 2, rel=1e-12)
    assert between_class_scatter(features, labels).item() == pytest.approx(1.0, rel=1e-12)
    assert within_class_scatter(features, labels).item() == pytest.approx(s ** 2, rel=1e-12)


def test_fuzziness_is_zero_when_points_equal_class_means():
    features, labels = random_problem(4)
    means = np.stack([features[labels == k].mean(axis=0) for k in np.unique(labels)])
    collapsed = torch.from_numpy(means[labels])
    assert separation_fuzziness(collapsed, torch.from_numpy(labels)) == pytest.approx(0.0, abs=1e-20)


def test_fuzziness_invariant_under_rotation_and_scaling():
    features, labels = random_problem(5)
    x = torch.from_numpy(features)
    y = torch.from_numpy(labels)
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64))
    reference = separation_fuzziness(x, y)
    assert separation_fuzziness(x @ rotation, y) == pytest.approx(reference, rel=1e-10)
    assert separation_fuzziness(37.5 * x, y) == pytest.approx(reference, rel=1e-10)
    assert separation_fuzziness(x + 100.0, y) == pytest.approx(reference, rel=1e-9)


def test_float32_features_are_computed_in_float64():
    features, labels = random_problem(6)
    as32 = torch.from_numpy(features).float()
    expected = direct_fuzziness(as32.double().numpy(), labels)
    assert separation_fuzziness(as32, torch.from_numpy(labels)) == pytest.approx(expected, rel=1e-10)


def test_zero_between_scatter_gives_infinite_fuzziness_with_warning():
    features = torch.tensor([[0.0], [2.0], [0.0], [2.0]], dtype=torch.float64)  # both class means 1
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.warns(RuntimeWarning, match="SS_b is zero"):
        assert separation_fuzziness(features, labels) == math.inf
    assert math.isnan(between_variance(features, labels))


def test_between_variance_of_rank_one_scatter_is_one():
    features, labels = random_problem(7, n_per_class=(40, 40), d=5)
    assert between_variance(torch.from_numpy(features), torch.from_numpy(labels)) == pytest.approx(1.0)


def test_between_variance_matches_direct_formula():
    features, labels = random_problem(8)
    ss_b = between_class_scatter(torch.from_numpy(features), torch.from_numpy(labels)).numpy()
    expected = np.trace(ss_b) / np.linalg.norm(ss_b, "fro")
    got = between_variance(torch.from_numpy(features), torch.from_numpy(labels))
    assert got == pytest.approx(expected, rel=1e-12)


def test_statistics_traces():
    features, labels = random_problem(9)
    stats = class_statistics(torch.from_numpy(features), torch.from_numpy(labels))
    ss_w = within_class_scatter(torch.from_numpy(features), torch.from_numpy(labels))
    ss_b = between_class_scatter(torch.from_numpy(features), torch.from_numpy(labels))
    assert stats.within_trace() == pytest.approx(float(ss_w.trace()), rel=1e-12)
    assert stats.between_trace() == pytest.approx(float(ss_b.trace()), rel=1e-12)
    assert fuzziness_from_statistics(stats) == pytest.approx(
        float(torch.trace(ss_w @ torch.linalg.pinv(ss_b, hermitian=True))), rel=1e-8)


def test_fit_recovers_a_geometric_sequence_exactly():
    layers = list(range(8))
    values = [40.0 * 0.6 ** l for l in layers]
    fit = fit_log_linear(layers, values)
    assert fit.slope == pytest.approx(math.log(0.6), rel=1e-12)
    assert fit.intercept == pytest.approx(math.log(40.0), rel=1e-12)
    assert fit.rho == pytest.approx(0.6, rel=1e-12)
    assert fit.pearson_r == pytest.approx(-1.0, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert (fit.num_points, fit.dropped) == (8, 0)


def test_fit_against_numpy_and_drops_non_finite_points():
    values = [10.0, 7.0, math.inf, 2.5, 2.0, 0.4]
    fit = fit_log_linear(range(6), values)
    x = np.array([0, 1, 3, 4, 5])
    y = np.log([10.0, 7.0, 2.5, 2.0, 0.4])
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope, rel=1e-12)
    assert fit.intercept == pytest.approx(intercept, rel=1e-12)
    assert fit.pearson_r == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert fit.dropped == 1


def test_fit_needs_two_points():
    with pytest.raises(ValueError, match="at least 2"):
        fit_log_linear([0, 1], [1.0, math.inf])


def test_layer_ratios():
    assert layer_ratios([8.0, 4.0, 1.0]) == [None, 0.5, 0.25]


def test_pca_reduction_keeps_fuzziness_when_it_keeps_the_span():
    # Embed 30-dim features isometrically into 70 dims: PCA back to 30 dims loses nothing.
    features, labels = random_problem(10, d=30)
    x = torch.from_numpy(features)
    embedding, _ = torch.linalg.qr(torch.randn(70, 70, generator=torch.Generator().manual_seed(1),
                                               dtype=torch.float64))
    wide = torch.cat([x, torch.zeros(x.shape[0], 40, dtype=torch.float64)], dim=1) @ embedding
    reduced = pca_reduce(wide, 30)
    assert reduced.shape == (x.shape[0], 30)
    y = torch.from_numpy(labels)
    assert separation_fuzziness(reduced, y) == pytest.approx(separation_fuzziness(x, y), rel=1e-8)
    assert pca_reduce(x, 100).shape == (x.shape[0], 30)  # narrower than the target: only centered


def svd_reduce(features: torch.Tensor, dim: int) -> torch.Tensor:
    """The former pca_reduce: U S[:dim] of the thin SVD of the centered float64 features."""
    centered = features.to(torch.float64) - features.to(torch.float64).mean(dim=0)
    left, singular, _ = torch.linalg.svd(centered, full_matrices=False)
    return left[:, :dim] * singular[:dim]


def clustered_features(n: int, d: int, rank: int | None = None, seed: int = 0):
    """Features [n, d] of 10 classes (centers plus noise): float32 like a network's, or float64 of
    exactly the given rank (float32 rounding would lift the rank to full)."""
    generator = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if rank is None else torch.float64
    labels = torch.arange(10).repeat_interleave(n // 10)
    width = rank or d
    latent = (2.0 * torch.randn(10, width, generator=generator, dtype=dtype)[labels]
              + torch.randn(n, width, generator=generator, dtype=dtype))
    if rank is not None:
        latent = latent @ torch.randn(rank, d, generator=generator, dtype=dtype)
    return latent, labels


def relative_gap(observed: torch.Tensor, expected: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(observed - expected) / torch.linalg.matrix_norm(expected))


@pytest.mark.parametrize("n, d, dim", [(300, 2000, 100),  # N < d: the N x N Gram route
                                       (500, 60, 40)])    # N > d: the d x d covariance route
def test_pca_reduce_matches_the_svd_projection(n, d, dim):
    features, labels = clustered_features(n, d)
    reduced, reference = pca_reduce(features, dim), svd_reduce(features, dim)
    assert reduced.dtype == torch.float64 and reduced.shape == reference.shape == (n, dim)
    # Columns may differ in sign: the Gram matrix P P^T and D do not see it.
    assert relative_gap(reduced @ reduced.T, reference @ reference.T) < 1e-8
    expected = separation_fuzziness(reference, labels)
    assert 0.005 < expected < 1.0
    assert separation_fuzziness(reduced, labels) == pytest.approx(expected, rel=1e-8)
    variances = reduced.square().sum(dim=0)
    assert bool((variances[:-1] >= variances[1:]).all())  # components in descending order


@pytest.mark.parametrize("n, d, dim", [(200, 300, 50),    # N x N route
                                       (500, 120, 50),    # d x d route
                                       (100, 300, 100)])  # N x N route keeping every eigenvalue
def test_pca_reduce_of_rank_deficient_features(n, d, dim):
    # Rank 30 < dim: the first 30 components span the data, so D equals the unreduced features' D. The
    # others are rounding noise in arbitrary directions (the SVD's of size eps^2, eigh's up to eps times
    # the top variance; eigenvalues rounded below 0 are clamped): P P^T and D agree all the same.
    features, labels = clustered_features(n, d, rank=30)
    reduced, reference = pca_reduce(features, dim), svd_reduce(features, dim)
    assert reduced.shape == (n, dim)
    assert relative_gap(reduced @ reduced.T, reference @ reference.T) < 1e-8
    expected = separation_fuzziness(features, labels)
    assert 0.5 < expected < 5.0
    assert separation_fuzziness(reference, labels) == pytest.approx(expected, rel=1e-8)
    assert separation_fuzziness(reduced, labels) == pytest.approx(expected, rel=1e-8)
    variances = reduced.square().sum(dim=0)
    assert float(variances[:30].min()) > 1e-3 * float(variances[0])
    assert float(variances[30:].max()) < 1e-13 * float(variances[0])


def test_pca_reduce_returns_narrow_features_only_centered():
    features, _ = clustered_features(200, 40)
    centered = features.double() - features.double().mean(dim=0)
    assert torch.equal(pca_reduce(features, 40), centered)
    assert torch.equal(pca_reduce(features, 100), centered)


@pytest.mark.parametrize("n, d", [(50, 300), (400, 120)])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_pca_reduce_raises_linalg_error_on_non_finite_features(n, d, bad):
    # eigh returns NaNs for a non-finite matrix where the SVD raised: callers rely on the error
    # (representation_analysis.not_finite_on_failure).
    features, _ = clustered_features(n, d)
    features[3, 7] = bad
    with pytest.raises(torch.linalg.LinAlgError, match="non-finite"):
        pca_reduce(features, 20)
