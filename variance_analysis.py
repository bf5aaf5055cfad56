"""Pure math of the equi-separation law: class scatter, separation fuzziness D, and the line fit.

Everything here takes tensors and returns tensors or plain numbers: no I/O, no device choice and no
knowledge of models. Inputs are cast to float64 before any arithmetic.

Definitions (He & Su, "A Law of Data Separation in Deep Learning", PNAS 2023), for features
x_i in R^d with labels y_i in {0..K-1}, class sizes n_k, class means m_k and global mean m:

    SS_b = (1/n) sum_k n_k (m_k - m)(m_k - m)^T                      between-class scatter
    SS_w = (1/n) sum_k sum_{i in k} (x_i - m_k)(x_i - m_k)^T         within-class scatter
    D    = trace(SS_w @ pinv(SS_b))                                  separation fuzziness

The n_k weights make the same formulas serve balanced and imbalanced data. With balanced classes
D = K * NC1, the neural-collapse metric of Papyan, Han & Donoho (2020).

Implementation note: SS_b = B^T B with B = [sqrt(n_k/n) (m_k - m)]_k of shape [K, d], so
pinv(SS_b) = pinv(B) pinv(B)^T and D = trace(pinv(B)^T SS_w pinv(B)) -- a K x K trace that never forms
a d x d pseudo-inverse, which keeps wide layers (d = 65,536 for a conv map) cheap. SS_w enters only
through its projection onto the row space of B (the class-mean directions), so TwoPassClassStatistics
measures any width exactly in O(K d) memory: pass 1 the class means, pass 2 the within-class deviations
projected onto an orthonormal basis of that row space, summed as an r x r matrix (r = min(K, d)).

Run the self-check with:  python variance_analysis.py
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClassStatistics:
    """Sufficient statistics of labelled features for every scatter-based measure.

    counts:           [K]     n_k (float64), only classes that occur
    means:            [K, d]  m_k
    class_sq_dev:     [K]     sum_{i in k} ||x_i - m_k||^2
    within:           [d, d]  SS_w (streaming statistics), or None when another form is kept instead
    within_factor:    [N, d]  W = (X - M[y]) / sqrt(n), so SS_w = W^T W (in-memory statistics)
    within_basis:     [d, r]  orthonormal columns spanning the class-mean differences (two-pass statistics)
    within_projected: [r, r]  within_basis^T SS_w within_basis (two-pass statistics)
    """

    counts: torch.Tensor
    means: torch.Tensor
    class_sq_dev: torch.Tensor
    within: torch.Tensor | None = None
    within_factor: torch.Tensor | None = None
    within_basis: torch.Tensor | None = None
    within_projected: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return int(self.counts.numel())

    def between_factor(self, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """B of shape [K, d] with B^T B = sum_k w_k (m_k - c)(m_k - c)^T, c = sum_k w_k m_k.

        The default weights w_k = n_k / n give SS_b; uniform weights 1/K give Papyan's Sigma_B.
        """
        weights = self.counts / self.counts.sum() if class_weights is None else class_weights
        roots = weights.sqrt()  # [K], unit norm
        center = weights @ self.means  # [d]
        factor = roots[:, None] * (self.means - center)  # [K, d]
        # Exactly, roots @ factor = sum_k w_k (m_k - c) = 0, so B has rank <= K - 1. Rounding leaves a
        # residue along `roots` of order eps * |c|, which a pseudo-inverse would blow up; projecting it
        # out keeps the structural null space exact.
        return factor - roots[:, None] * (roots @ factor)[None, :]

    def project_within(self, directions: torch.Tensor) -> torch.Tensor:
        """directions^T SS_w directions for directions of shape [d, r] -> [r, r]. Two-pass statistics know
        SS_w only on the span of within_basis: exact for directions in it, as pinv(B) of any class weights."""
        if self.within_factor is not None:
            projected = self.within_factor @ directions  # [N, r]
            return projected.T @ projected
        if self.within_projected is not None:
            coordinates = self.within_basis.T @ directions  # [r_basis, r]
            return coordinates.T @ self.within_projected @ coordinates
        return directions.T @ self.within @ directions

    def within_trace(self) -> float:
        """trace(SS_w) = sum_k class_sq_dev_k / n."""
        return float(self.class_sq_dev.sum() / self.counts.sum())

    def between_trace(self) -> float:
        """trace(SS_b) = ||B||_F^2."""
        return float(self.between_factor().square().sum())


def class_statistics(features: torch.Tensor, labels: torch.Tensor) -> ClassStatistics:
    """In-memory statistics of features [N, ...] (flattened to [N, d]) with labels [N].

    Classes are the distinct label values present. Keeps the [N, d] within factor, so nothing of size
    d x d is formed: suited to wide features (conv maps).
    """
    features = features.reshape(features.shape[0], -1).to(torch.float64)  # [N, d]
    _, class_index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    counts = counts.to(torch.float64)  # [K]
    sums = torch.zeros(counts.numel(), features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, class_index, features)  # [K, d]
    means = sums / counts[:, None]  # [K, d]
    deviations = features - means[class_index]  # [N, d]
    class_sq_dev = torch.zeros_like(counts).index_add_(0, class_index, deviations.square().sum(dim=1))
    return ClassStatistics(counts, means, class_sq_dev,
                           within_factor=deviations / math.sqrt(features.shape[0]))


def check_class_indices(labels, num_classes: int | None = None) -> None:
    """TypeError unless `labels` is a torch tensor of an integer dtype (float labels would be truncated
    to class indices, bool ones are none); ValueError unless it is one-dimensional [N] and, with
    `num_classes`, every label is a class index 0..num_classes-1 (index_add_ would fail or misplace it).
    Checks only: never changes a label."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: of type {type(labels).__name__}; allowed: a torch tensor of integer class "
                        "indices (torch.as_tensor(labels))")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels: dtype {labels.dtype} (not truncated to class indices); allowed: an integer "
                        "dtype such as torch.long (labels.long() where every value is a whole number)")
    if labels.dim() != 1:
        raise ValueError(f"labels: shape {tuple(labels.shape)}; allowed: one dimension [N], a class index per sample")
    if num_classes is not None and labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise ValueError(f"labels: holds {low}; allowed: class indices 0..{num_classes - 1}")
        if high >= num_classes:
            raise ValueError(f"labels: holds {high} with num_classes={num_classes}; allowed: class indices "
                             f"0..{num_classes - 1} (or a larger num_classes)")


def checked_batch(features: torch.Tensor, labels: torch.Tensor,
                  num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features as float64 [B, d], labels as long on their device) of a batch to add to class sums;
    TypeError or ValueError for labels that are no class indices (check_class_indices) or not one per sample."""
    check_class_indices(labels, num_classes)
    if labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels: {labels.shape[0]} for {features.shape[0]} samples; allowed: one label "
                         "per sample")
    x = features.reshape(features.shape[0], -1).to(torch.float64)  # [B, d]
    return x, labels.to(x.device, torch.long)


class StreamingClassStatistics:
    """Class statistics accumulated batch by batch in O(K d + d^2) memory, independent of N.

    Sums are taken around a shift (the first batch's mean) so that the Gram-minus-means formula for SS_w
    does not cancel catastrophically when features sit far from the origin.

        stats = StreamingClassStatistics(num_classes=10)
        for x, y in batches: stats.update(x, y)
        D = fuzziness_from_statistics(stats.finalize())
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.shift = None  # [d]
        self.counts = self.sums = self.sq_norms = self.gram = None

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: features [B, ...] and labels [B] of class indices 0..num_classes-1
        (checked_batch: TypeError or ValueError otherwise)."""
        x, labels = checked_batch(features, labels, self.num_classes)
        if self.shift is None:
            dim, options = x.shape[1], {"dtype": torch.float64, "device": x.device}
            self.shift = x.mean(dim=0)
            self.counts = torch.zeros(self.num_classes, **options)
            self.sums = torch.zeros(self.num_classes, dim, **options)  # [K, d]
            self.sq_norms = torch.zeros(self.num_classes, **options)  # [K]
            self.gram = torch.zeros(dim, dim, **options)  # [d, d]
        add_to_sums(self.counts, self.sums, self.sq_norms, self.gram, x - self.shift, labels)

    def finalize(self) -> ClassStatistics:
        return statistics_from_sums(self.counts, self.sums, self.sq_norms, self.gram, self.shift)


def add_to_sums(counts, sums, sq_norms, gram, x: torch.Tensor, labels: torch.Tensor) -> None:
    """Add shifted float64 features x [B, d] with class indices labels [B] to the one-pass sums, in place:
    counts [K], sums [K, d], sq_norms [K] (of ||x||^2) and gram [d, d] (of x x^T)."""
    counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
    sums.index_add_(0, labels, x)
    sq_norms.index_add_(0, labels, x.square().sum(dim=1))
    gram += x.T @ x


def statistics_from_sums(counts, sums, sq_norms, gram, shift) -> ClassStatistics:
    """ClassStatistics of the classes that occur, from add_to_sums's sums of features minus `shift` [d]."""
    present = counts > 0
    counts, sums = counts[present], sums[present]
    means = sums / counts[:, None]  # [K, d], shifted coordinates
    within = (gram - (means * counts[:, None]).T @ means) / counts.sum()  # [d, d]
    class_sq_dev = sq_norms[present] - counts * means.square().sum(dim=1)
    return ClassStatistics(counts, means + shift, class_sq_dev, within=within)


class TwoPassClassStatistics:
    """Exact class statistics of any width in O(K d) memory, from two passes over the same samples.

    Pass 1 sums the class counts and features; pass 2 takes each sample's deviation from its class mean
    (x - m_y, float64, from the pass-1 means: no E[x^2] - m^2 cancellation) and sums its squared norm per
    class and the outer product of its coordinates in `basis` ([d, r], orthonormal, spanning the rows of
    the between factor B), an r x r matrix. SS_b = B^T B, so D, NC1 and every pinv(B) measure need SS_w
    only on that span (ClassStatistics.project_within); CDNV and the traces need only the norms.

        stats = TwoPassClassStatistics(num_classes=10)
        for x, y in batches: stats.add_to_means(x, y)
        stats.start_second_pass()
        for x, y in batches: stats.add_to_scatter(x, y)
        D = fuzziness_from_statistics(stats.finalize())

    Across processes, sum first_pass_sums() over them before start_second_pass and second_pass_sums()
    before finalize (and give every process the same basis): every sum is a plain sum over samples.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts = self.sums = None            # pass 1: [K], [K, d]; sums become the means
        self.basis = None                         # [d, r]
        self.scatter_counts = self.deviation_sums = self.sq_dev = self.projected = None  # pass 2

    def add_to_means(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Pass 1: features [B, ...] with class indices labels [B]."""
        x, labels = checked_batch(features, labels, self.num_classes)
        if self.counts is None:
            options = {"dtype": torch.float64, "device": x.device}
            self.counts = torch.zeros(self.num_classes, **options)
            self.sums = torch.zeros(self.num_classes, x.shape[1], **options)
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        self.sums.index_add_(0, labels, x)

    def first_pass_sums(self) -> list[torch.Tensor]:
        return [self.counts, self.sums]

    def start_second_pass(self) -> None:
        """Turn the sums into class means and choose the basis: the right singular vectors of B."""
        present = self.counts > 0
        self.sums /= self.counts.clamp(min=1.0)[:, None]  # [K, d] means, in place (0 for absent classes)
        means = self.sums[present]
        factor = ClassStatistics(self.counts[present], means, torch.zeros_like(self.counts[present])).between_factor()
        self.basis = torch.linalg.svd(factor, full_matrices=False)[2].T  # [d, r]
        options = {"dtype": torch.float64, "device": means.device}
        self.scatter_counts = torch.zeros_like(self.counts)
        self.deviation_sums = torch.zeros_like(self.sums)  # [K, d]: ~0 when pass 2 sees pass 1's samples
        self.sq_dev = torch.zeros_like(self.counts)
        self.projected = torch.zeros(self.basis.shape[1], self.basis.shape[1], **options)  # [r, r]

    def add_to_scatter(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Pass 2: the same samples as pass 1, in any order and batching."""
        x, labels = checked_batch(features, labels, self.num_classes)
        deviations = self.sums[labels].sub_(x).neg_()  # [B, d] x - m_y, in the gathered copy (x may be the caller's)
        del x
        coordinates = deviations @ self.basis  # [B, r]
        self.projected += coordinates.T @ coordinates
        self.scatter_counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        self.deviation_sums.index_add_(0, labels, deviations)
        self.sq_dev.index_add_(0, labels, deviations.square().sum(dim=1))

    def second_pass_sums(self) -> list[torch.Tensor]:
        return [self.scatter_counts, self.deviation_sums, self.sq_dev, self.projected]

    def finalize(self, tolerance: float = 1e-4) -> ClassStatistics:
        """ClassStatistics of the classes that occur. ValueError when pass 2 saw other samples than pass 1:
        other class counts, or class means moved by more than `tolerance` x (|m_k| + the class's spread)."""
        if not torch.equal(self.scatter_counts, self.counts):
            raise ValueError(f"data: the second pass gave {int(self.scatter_counts.sum())} samples with class counts "
                             f"{self.scatter_counts.long().tolist()}, the first {int(self.counts.sum())} with "
                             f"{self.counts.long().tolist()}; allowed: data that gives the same samples each time "
                             "it is iterated (a tensor, a list of batches, a DataLoader)")
        present = self.counts > 0
        counts, means = self.counts[present], self.sums[present]
        drift = self.deviation_sums[present].norm(dim=1) / counts  # [K]
        scale = means.norm(dim=1) + (self.sq_dev[present] / counts).sqrt()
        if bool((drift > tolerance * scale).any()):
            raise ValueError(f"data: the second pass moved the class means by up to {float((drift / scale).max()):.2g} "
                             "of their size: it gave other features than the first (random augmentation? a model "
                             "in train mode?); allowed: data that gives the same samples each time it is iterated")
        return ClassStatistics(counts, means, self.sq_dev[present], within_basis=self.basis,
                               within_projected=self.projected / counts.sum())


def _pinv_of_between_factor(factor: torch.Tensor) -> torch.Tensor | None:
    """pinv(B) of shape [d, K] for B [K, d], cutting singular values below max(K, d) * eps * s_max
    (numpy's matrix_rank rule). Returns None when B is exactly zero (all class means equal)."""
    left, singular, right_h = torch.linalg.svd(factor, full_matrices=False)  # [K,r], [r], [r,d]
    if singular.numel() == 0 or float(singular.max()) == 0.0:
        return None
    tolerance = max(factor.shape) * torch.finfo(factor.dtype).eps * singular.max()
    keep = singular > tolerance
    # pinv(B) = V S^-1 U^T; the trailing U^T is orthonormal and drops out of the traces below, but
    # is kept so the returned matrix is the real pseudo-inverse.
    return right_h[keep].T @ torch.diag(1.0 / singular[keep]) @ left[:, keep].T  # [d, K]


def _trace_within_pinv_between(stats: ClassStatistics, factor: torch.Tensor) -> float:
    """trace(SS_w pinv(B^T B)) = trace(pinv(B)^T SS_w pinv(B)); infinite (with a warning) if B = 0."""
    pinv_factor = _pinv_of_between_factor(factor)
    if pinv_factor is None:
        warnings.warn("SS_b is zero (all class means coincide): the separation measure is infinite",
                      RuntimeWarning, stacklevel=3)
        return math.inf
    return float(stats.project_within(pinv_factor).diagonal().sum())


def fuzziness_from_statistics(stats: ClassStatistics) -> float:
    """Separation fuzziness D = trace(SS_w pinv(SS_b)) (He & Su 2023), n_k-weighted SS_b."""
    return _trace_within_pinv_between(stats, stats.between_factor())


def nc1_from_statistics(stats: ClassStatistics) -> float:
    """NC1 = (1/K) trace(Sigma_W pinv(Sigma_B)) (Papyan, Han & Donoho, PNAS 2020), with
    Sigma_W = SS_w and Sigma_B = (1/K) sum_k (m_k - m_G)(m_k - m_G)^T over class means with equal
    weights, m_G their average. On balanced classes Sigma_B = SS_b, so NC1 = D / K."""
    uniform = torch.full_like(stats.counts, 1.0 / stats.num_classes)
    return _trace_within_pinv_between(stats, stats.between_factor(uniform)) / stats.num_classes


def cdnv_from_statistics(stats: ClassStatistics) -> float:
    """Class-distance normalized variance (Galanti, Gyorgy & Hutter, ICLR 2022), averaged over the
    ordered pairs i != j of classes:  V(i, j) = (Var_i + Var_j) / (2 ||m_i - m_j||^2), where
    Var_k = (1/n_k) sum_{i in k} ||x_i - m_k||^2. Infinite if two class means coincide."""
    variances = stats.class_sq_dev / stats.counts  # [K]
    distances = torch.cdist(stats.means, stats.means).square()  # [K, K]
    pairs = ~torch.eye(stats.num_classes, dtype=torch.bool, device=distances.device)
    if stats.num_classes < 2:
        return math.nan
    if bool((distances[pairs] == 0).any()):
        return math.inf
    ratios = (variances[:, None] + variances[None, :]) / (2 * distances)  # [K, K]
    return float(ratios[pairs].mean())


def separation_fuzziness(features: torch.Tensor, labels: torch.Tensor) -> float:
    """D = trace(SS_w pinv(SS_b)) of features [N, ...] (flattened to [N, d]) with labels [N]."""
    return fuzziness_from_statistics(class_statistics(features, labels))


def between_variance_from_statistics(stats: ClassStatistics) -> float:
    """trace(SS_b / ||SS_b||_F): the effective rank of the class-mean spread (measure=between_variance).

    ||SS_b||_F = ||B^T B||_F = ||B B^T||_F, computed on the K x K Gram matrix. NaN when SS_b = 0.
    """
    factor = stats.between_factor()
    gram = factor @ factor.T  # [K, K]
    norm = float(torch.linalg.matrix_norm(gram))
    if norm == 0.0:
        return math.nan
    return float(gram.diagonal().sum()) / norm


def between_variance(features: torch.Tensor, labels: torch.Tensor) -> float:
    """trace(SS_b / ||SS_b||_F) of features [N, ...] with labels [N]."""
    return between_variance_from_statistics(class_statistics(features, labels))


# measure= choices, as functions of ClassStatistics
MEASURES = {"within_variance": fuzziness_from_statistics,
            "between_variance": between_variance_from_statistics,
            "nc1": nc1_from_statistics,
            "cdnv": cdnv_from_statistics}
# y-axis label of a profile of each measure (figures plot the log of the value)
MEASURE_LABELS = {"within_variance": "ln D", "between_variance": "ln between_variance",
                  "nc1": "ln nc1", "cdnv": "ln cdnv"}


def pca_reduce(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Project centered features [N, d] onto their top `dim` principal components -> [N, min(dim, d)].

    With Xc = U S V^T the centered data, eigendecomposes the smaller Gram matrix: Xc Xc^T = U S^2 U^T
    when N <= d (returning U S), else Xc^T Xc = V S^2 V^T (returning Xc V). Both are the SVD's
    Xc V[:, :dim] up to column signs; for wide layers (N = 1,000, d = 8,192) an N x N eigh costs a
    tenth of the thin SVD. Non-finite features raise torch.linalg.LinAlgError, as the SVD did.
    """
    features = features.reshape(features.shape[0], -1).to(torch.float64)
    centered = features - features.mean(dim=0)  # [N, d]
    if centered.shape[1] <= dim:
        return centered
    wide = centered.shape[0] <= centered.shape[1]
    gram = centered @ centered.T if wide else centered.T @ centered  # [N, N] or [d, d]
    if not bool(gram.isfinite().all()):  # eigh would return NaNs without raising
        raise torch.linalg.LinAlgError("pca_reduce: the features contain non-finite values")
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    top = eigenvectors[:, -dim:].flip(1)  # descending eigenvalues
    if wide:
        return top * eigenvalues[-dim:].flip(0).clamp(min=0.0).sqrt()  # [N, dim]
    return centered @ top  # [N, dim]


def layer_ratios(values: list[float]) -> list[float | None]:
    """D_l / D_(l-1) for each point (None for the first)."""
    ratios: list[float | None] = [None]
    for previous, current in zip(values[:-1], values[1:]):
        usable = previous != 0.0 and math.isfinite(previous)
        ratios.append(current / previous if usable else None)
    return ratios


@dataclass(frozen=True)
class LineFit:
    """Least-squares fit ln D_l = intercept + slope * l, with rho = exp(slope) the per-layer decay."""

    slope: float
    intercept: float
    rho: float
    pearson_r: float
    r2: float
    num_points: int
    dropped: int

    def as_dict(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept, "rho": self.rho,
                "pearson_r": self.pearson_r, "r2": self.r2,
                "num_points": self.num_points, "dropped": self.dropped}


def fit_log_linear(layer_indices, values) -> LineFit:
    """Fit ln(values) = a + b * layer_indices by least squares over the finite, positive values.

    Pearson r is computed on the same points; R^2 of a one-variable least-squares line is r^2.
    Raises ValueError when fewer than two usable points remain.
    """
    x = torch.as_tensor(layer_indices, dtype=torch.float64)
    y_raw = torch.as_tensor(values, dtype=torch.float64)
    usable = torch.isfinite(y_raw) & (y_raw > 0)
    x, y = x[usable], y_raw[usable].log()
    if x.numel() < 2:
        raise ValueError(f"a line fit needs at least 2 finite positive values, got {x.numel()}")
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy, sxy = dx.square().sum(), dy.square().sum(), (dx * dy).sum()
    slope = float(sxy / sxx)
    intercept = float(y.mean() - slope * x.mean())
    pearson_r = float(sxy / (sxx * syy).sqrt()) if float(syy) > 0 else math.nan
    return LineFit(slope=slope, intercept=intercept, rho=math.exp(slope), pearson_r=pearson_r,
                   r2=pearson_r ** 2, num_points=int(x.numel()),
                   dropped=int(y_raw.numel() - x.numel()))



@dataclass(frozen=True)
class TwoSegmentFit:
    """A broken line through ln D_l: slope_before up to the breakpoint layer, slope_after from it on
    (continuous at the breakpoint); rho_before / rho_after = exp(slope), the per-layer decay ratios."""

    breakpoint: float
    slope_before: float
    slope_after: float
    rho_before: float
    rho_after: float
    intercept: float          # ln D at the breakpoint
    sse: float                # sum of squared residuals of ln D
    num_points: int


def fit_two_segments(layer_indices, values) -> TwoSegmentFit:
    """Fit ln(values) against layer_indices by two line segments joined at a breakpoint layer, over the
    finite, positive values: for every interior point b (each segment holds at least two points) the
    least-squares fit of ln D = c + s1 * min(l - b, 0) + s2 * max(l - b, 0), and the b of the least
    sum of squared residuals (ties: the earliest b). Plain Python floats (the normal equations, solved
    exactly as written), so the result is the same bit for bit on every CPU. Raises ValueError with fewer
    than three usable points.
    """
    points = sorted((float(x), math.log(float(v))) for x, v in zip(layer_indices, values)
                    if math.isfinite(float(v)) and float(v) > 0)
    if len(points) < 3:
        raise ValueError(f"a two-segment fit needs at least 3 finite positive values, got {len(points)}")
    best = None
    for position in range(1, len(points) - 1):
        b = points[position][0]
        basis = [(1.0, min(x - b, 0.0), max(x - b, 0.0)) for x, _ in points]       # [n, 3]
        gram = [[sum(u[i] * u[j] for u in basis) for j in range(3)] for i in range(3)]
        moment = [sum(u[i] * y for u, (_, y) in zip(basis, points)) for i in range(3)]
        coefficients = _solve3(gram, moment)
        sse = sum((sum(c * u_i for c, u_i in zip(coefficients, u)) - y) ** 2 for u, (_, y) in zip(basis, points))
        if best is None or sse < best[0] - 1e-12:
            best = (sse, b, coefficients)
    sse, b, (intercept, before, after) = best
    return TwoSegmentFit(breakpoint=b, slope_before=before, slope_after=after, rho_before=math.exp(before),
                         rho_after=math.exp(after), intercept=intercept, sse=sse, num_points=len(points))


def _solve3(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """x with matrix @ x = vector for a 3 x 3 matrix (Gaussian elimination with partial pivoting)."""
    rows = [list(row) + [value] for row, value in zip(matrix, vector)]
    for column in range(3):
        pivot = max(range(column, 3), key=lambda r: abs(rows[r][column]))
        rows[column], rows[pivot] = rows[pivot], rows[column]
        for r in range(column + 1, 3):
            factor = rows[r][column] / rows[column][column]
            rows[r] = [a - factor * c for a, c in zip(rows[r], rows[column])]
    solution = [0.0, 0.0, 0.0]
    for r in (2, 1, 0):
        solution[r] = (rows[r][3] - sum(rows[r][c] * solution[c] for c in range(r + 1, 3))) / rows[r][r]
    return solution

if __name__ == "__main__":
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(50)
    features = torch.randn(500, 20, generator=generator, dtype=torch.float64) + 3 * labels[:, None]
    print(f"D = {separation_fuzziness(features, labels):.6f}")
    print(fit_log_linear([0, 1, 2, 3], [8.0, 4.0, 2.0, 1.0]))
