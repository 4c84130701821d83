"""Sample-based distances between two point sets.

Every metric takes ``x`` of shape ``(n, d)`` and ``y`` of shape ``(m, d)`` (torch tensors or numpy
arrays, any ``d >= 1``), computes in float64 on the device of ``x`` and returns a Python float.
Lower is better for all of them; each is 0 (or, for the unbiased estimators, 0 in expectation)
when the two laws are equal.

=============  ====================================================  ==========================
name           what                                                  units
=============  ====================================================  ==========================
``w2``         exact 2-Wasserstein distance (network simplex, POT)   data units
``sliced_w2``  sliced 2-Wasserstein distance (random 1-D slices)     data units
``mmd``        squared maximum mean discrepancy, RBF kernel          none (kernel values)
``energy``     energy distance, squared form                         data units
=============  ====================================================  ==========================

Each metric, these and the image metrics on learned features (:mod:`genlab.eval.feature_metrics`:
Fréchet distance, KID, precision/recall, density/coverage, classifier score, class accuracy) and
the mode-collapse metrics of a Gaussian mixture with known modes (:mod:`genlab.eval.mode_metrics`:
modes covered, high-quality fraction, reverse KL), is registered in
:data:`genlab.registry.METRICS` as a :class:`Metric` record: a function of one :class:`Comparison`
(samples against a reference set), its unit, the data kinds it applies to, what it needs
(features, a classifier, labelled samples, known modes) and which way is better.
:func:`metrics_for` picks the defaults for a data kind; :func:`evaluate_points` computes several
point metrics at once. Adding a metric is one registered function.

References:
    Peyré & Cuturi (2019), "Computational Optimal Transport", Foundations and Trends in ML.
    Bonneel, Rabin, Peyré & Pfister (2015), "Sliced and Radon Wasserstein Barycenters of
    Measures", J. Math. Imaging Vis. 51.
    Gretton, Borgwardt, Rasch, Schölkopf & Smola (2012), "A Kernel Two-Sample Test", JMLR 13.
    Székely & Rizzo (2013), "Energy statistics: A class of statistics based on distances",
    J. Stat. Plan. Inference 143.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genlab.errors import DataError, GenlabError
from genlab.registry import METRICS

ArrayLike = torch.Tensor | np.ndarray

# Largest n * m the exact W2 accepts: the float64 cost matrix alone is 8 * n * m bytes
# (25e6 -> 200 MB, 5,000 x 5,000), and the network simplex grows roughly like n^2..n^3.
W2_MAX_PAIRS = 25_000_000
# Pooled points used for the median heuristic (all pairs among them: ~2e6 distances).
MEDIAN_MAX_POINTS = 2_000
# Kernel/distance blocks hold at most this many entries (float64: 32 MiB).
_BLOCK_ENTRIES = 1 << 22


@dataclass
class Comparison:
    """What every metric reads: samples against a reference set, for one evaluation seed.

    ``x`` ``(n, *shape)`` samples and ``y`` ``(m, *shape)`` reference (float64 points, or images);
    for images ``fx``/``fy`` are their features ``(n, F)`` from the feature network, ``px`` the
    network's class probabilities of the samples ``(n, K)`` (a classifier only) and ``labels_x``
    the classes the samples were drawn for (class-conditional models). ``modes``: the centres
    ``(K, d)`` and common std of the data's law when it is a Gaussian mixture
    (:meth:`~genlab.data.base.TrueDistribution.modes`). ``cache`` holds work that several metrics
    share (the k-NN radii of precision/recall/density/coverage, the nearest modes)."""

    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator | None = None
    fx: torch.Tensor | None = None
    fy: torch.Tensor | None = None
    px: torch.Tensor | None = None
    labels_x: torch.Tensor | None = None
    modes: tuple[torch.Tensor, float] | None = None
    score: Callable[[torch.Tensor], torch.Tensor] | None = None  # text: log p of each row (nats)
    cache: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per comparison and shared by the metrics that need it."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


#: what a metric may need besides samples and a reference
NEEDS = {
    "features": "image features (a feature network)",
    "classes": "a feature network that classifies (labelled data)",
    "labels": "samples drawn for given classes (a class-conditional model)",
    "modes": "a Gaussian-mixture law with known modes (e.g. the data sets ring, grid)",
    "scorer": "an autoregressive run on the same text that scores the samples (eval.scorer)",
}


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``fn(comparison) -> value`` (or ``(value, std)`` where the estimator
    reports its own spread, as KID over subsets) plus what a report prints beside the value.
    Calling the record calls the function."""

    name: str
    fn: Callable[[Comparison], float | tuple[float, float]]
    units: str
    help: str
    kinds: tuple[str, ...] = ("points",)  # the data kinds it applies to
    needs: tuple[str, ...] = ()  # keys of NEEDS
    lower_is_better: bool = True

    def __call__(self, c: Comparison) -> float | tuple[float, float]:
        return self.fn(c)

    @property
    def better(self) -> str:
        return "lower" if self.lower_is_better else "higher"

    @property
    def label(self) -> str:
        """``"w2 [data units, lower is better]"``: a column header for tables and logs."""
        return f"{self.name} [{self.units}, {self.better} is better]"


class OptimalTransportError(GenlabError):
    """The exact optimal-transport solver stopped before proving optimality."""


# ---------------------------------------------------------------------------------------------
# Input checks and shared helpers
# ---------------------------------------------------------------------------------------------


def as_points(x: ArrayLike, name: str = "x") -> torch.Tensor:
    """Return ``x`` as a float64 tensor ``(n, d)``; raise :class:`DataError` unless it is a
    non-empty, finite 2-D array."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise DataError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
        t = torch.from_numpy(np.array(x, dtype=np.float64))
    elif isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise DataError(f"{name}: expected a real numeric tensor, got dtype {x.dtype}")
        t = x.detach()
    else:
        raise DataError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if t.ndim != 2:
        hint = " (reshape a single set of 1-D values to (n, 1))" if t.ndim == 1 else ""
        raise DataError(f"{name}: expected a 2-D array (n, d), got shape {tuple(t.shape)}{hint}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise DataError(f"{name}: empty point set, shape {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise DataError(f"{name}: {bad} of {t.shape[0]} points contain NaN or inf")
    return t


def check_pair(
    x: ArrayLike, y: ArrayLike, min_n: int = 1, names: tuple[str, str] = ("x", "y")
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of point sets; returns both as float64 tensors on the device of ``x``.
    ``names`` are what error messages call the two sets."""
    nx, ny = names
    tx, ty = as_points(x, nx), as_points(y, ny)
    if tx.shape[1] != ty.shape[1]:
        raise DataError(
            f"{nx} and {ny} must have the same dimension d: {nx} is {tuple(tx.shape)}, "
            f"{ny} is {tuple(ty.shape)}"
        )
    for name, t in ((nx, tx), (ny, ty)):
        if t.shape[0] < min_n:
            raise DataError(
                f"{name}: this estimator needs at least {min_n} points, got {t.shape[0]}"
            )
    return tx, ty.to(tx.device)


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(len(a), len(b))``.

    For small ``d`` by explicit differences (exact: zero for equal points); for large ``d`` by the
    ``|a|^2 + |b|^2 - 2 a.b`` matrix product, which is much faster but only accurate to about
    ``sqrt(eps) * |a|`` for near-coincident points.
    """
    mode = "donot_use_mm_for_euclid_dist" if a.shape[1] <= 16 else "use_mm_for_euclid_dist"
    return torch.cdist(a, b, compute_mode=mode)


def _row_blocks(n: int, m: int) -> Iterator[slice]:
    """Row slices of an ``(n, m)`` matrix holding at most ``_BLOCK_ENTRIES`` entries each."""
    step = max(1, _BLOCK_ENTRIES // max(m, 1))
    for i in range(0, n, step):
        yield slice(i, min(i + step, n))


def _sum_pairwise(
    a: torch.Tensor, b: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]
) -> float:
    """``sum_{i,j} f(|a_i - b_j|)``, computed in row blocks so memory stays bounded.

    ``f`` receives a fresh block of distances and may overwrite it in place."""
    total = a.new_zeros(())
    for rows in _row_blocks(a.shape[0], b.shape[0]):
        total += f(_cdist(a[rows], b)).sum()
    return float(total)


def _sum_within(a: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``sum_{i,j} f(|a_i - a_j|)`` (diagonal included), using symmetry: each row block meets only
    itself and the rows after it, and the off-diagonal part counts twice."""
    total = a.new_zeros(())
    for rows in _row_blocks(a.shape[0], a.shape[0]):
        total += f(_cdist(a[rows], a[rows])).sum()
        if rows.stop < a.shape[0]:
            total += 2.0 * f(_cdist(a[rows], a[rows.stop :])).sum()
    return float(total)


# ---------------------------------------------------------------------------------------------
# Wasserstein distances
# ---------------------------------------------------------------------------------------------


def w2(x: ArrayLike, y: ArrayLike, *, num_itermax: int = 10_000_000) -> float:
    """Exact 2-Wasserstein distance between the empirical laws of ``x`` and ``y`` (data units).

    ``W2 = sqrt(min_P sum_ij P_ij |x_i - y_j|^2)`` over couplings ``P`` of the uniform weights
    ``1/n`` and ``1/m``, solved exactly by the network simplex of POT (``ot.emd2``) in float64.
    Note the square root: this is a distance, not its square. Cost: about 1 s at 2,000 x 2,000 and
    5 s at 5,000 x 5,000 on two CPU cores; sets with more than ``W2_MAX_PAIRS`` pairs are refused
    (subsample them, or use :func:`sliced_w2`).

    Raises :class:`OptimalTransportError` if the solver stops (``num_itermax`` reached, or any
    other non-optimal exit) instead of returning a value that is only an upper bound.

    Reference: Peyré & Cuturi (2019), Computational Optimal Transport, ch. 2-3.
    """
    tx, ty = check_pair(x, y)
    n, m = tx.shape[0], ty.shape[0]
    if n * m > W2_MAX_PAIRS:
        raise DataError(
            f"exact w2 on {n} x {m} points needs a {n * m * 8 / 2**30:.1f} GiB cost matrix and a "
            f"very slow solve (limit n*m <= {W2_MAX_PAIRS:,}); subsample both sets "
            "(e.g. to 5,000 points) or use 'sliced_w2'"
        )
    import ot  # POT: imported here because it takes ~1 s to import

    cost = _cdist(tx, ty).square_().cpu().numpy()  # (n, m) squared Euclidean
    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    with warnings.catch_warnings():
        # POT warns on non-optimal exits; we turn that into an error below instead.
        warnings.simplefilter("ignore", UserWarning)
        value, log = ot.emd2(a, b, cost, numItermax=int(num_itermax), log=True)
    if log.get("result_code") != 1 or log.get("warning") is not None:
        raise OptimalTransportError(
            f"exact w2 did not converge on {n} x {m} points "
            f"(POT result_code={log.get('result_code')}, warning={log.get('warning')!r}); "
            f"raise num_itermax (now {int(num_itermax):,}), subsample, or use 'sliced_w2'"
        )
    return math.sqrt(max(float(value), 0.0))


def _quantile_matching(n: int, m: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Exact pairing of the quantile functions of two uniform empirical laws on the line.

    The quantile functions of ``n`` and ``m`` sorted points are step functions with breaks at
    ``i/n`` and ``j/m``. On the merged breaks both are constant, so
    ``W2^2 = sum_k w_k (xs[ix_k] - ys[iy_k])^2`` exactly. Breaks are kept as integers over the
    common denominator ``n*m`` so ties are exact. Returns ``(ix, iy, w)``, each of length <= n+m-1.
    """
    breaks = torch.cat(
        [torch.arange(1, n + 1, device=device) * m, torch.arange(1, m + 1, device=device) * n]
    ).unique()  # sorted, ends at n*m
    lo = torch.cat([breaks.new_zeros(1), breaks[:-1]])
    w = (breaks - lo).to(torch.float64) / (n * m)
    return lo // m, lo // n, w


def sliced_w2(
    x: ArrayLike,
    y: ArrayLike,
    *,
    n_projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced 2-Wasserstein distance (data units), Bonneel et al. (2015).

    ``SW2 = sqrt(mean_l W2^2(<x, theta_l>, <y, theta_l>))`` over ``n_projections`` directions
    ``theta_l`` drawn uniformly on the unit sphere (normalised Gaussians from ``generator``, on
    its device; a seeded CPU generator gives the same value for data on any device). Each 1-D W2
    is exact: sorting, and for ``n != m`` matching the two quantile step functions on their merged
    breaks. Properties: ``SW2 <= W2`` for any set of directions, with equality when ``d = 1``.
    For ``y = x + c``, ``SW2 = sqrt(mean_l <c, theta_l>^2) ~ |c| / sqrt(d)``, since
    ``E <c, theta>^2 = |c|^2 / d``: no rescaling by ``sqrt(d)`` is applied.
    """
    tx, ty = check_pair(x, y)
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    n, m, d = tx.shape[0], ty.shape[0], tx.shape[1]
    rng_device = generator.device if generator is not None else torch.device("cpu")
    theta = torch.randn(
        d, n_projections, generator=generator, dtype=torch.float64, device=rng_device
    )
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(tx.device)  # (d, L) unit columns
    xs = (tx @ theta).sort(dim=0).values  # (n, L)
    ys = (ty @ theta).sort(dim=0).values  # (m, L)
    if n == m:
        sq = (xs - ys).square().mean(dim=0)  # (L,)
    else:
        ix, iy, w = _quantile_matching(n, m, tx.device)
        sq = (w[:, None] * (xs[ix] - ys[iy]).square()).sum(dim=0)  # (L,)
    return math.sqrt(float(sq.mean()))


# ---------------------------------------------------------------------------------------------
# Kernel and energy statistics
# ---------------------------------------------------------------------------------------------


def median_bandwidth(x: ArrayLike, y: ArrayLike, max_points: int = MEDIAN_MAX_POINTS) -> float:
    """Median heuristic of Gretton et al. (2012, sec. 8): the RBF bandwidth ``sigma`` (data units)
    is the median Euclidean distance between distinct points of the pooled sample ``x ∪ y``.

    With ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))`` this means ``sigma^2 = median_{i<j}
    |z_i - z_j|^2``. Pooled samples larger than ``max_points`` are thinned to ``max_points`` evenly
    spaced points (deterministic). Falls back to the root-mean squared distance when more than half
    the pairs coincide, and to 1 when all points are equal.
    """
    tx, ty = check_pair(x, y)
    z = torch.cat([tx, ty])
    if z.shape[0] > max_points:
        idx = torch.linspace(0, z.shape[0] - 1, max_points, device=z.device).round().long()
        z = z[idx]
    if z.shape[0] < 2:
        return 1.0
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    sq = _cdist(z, z).square_()[iu[0], iu[1]]  # (N(N-1)/2,) squared distances
    med = float(sq.median())  # the lower median for an even count
    if med <= 0.0:
        med = float(sq.mean())
    return math.sqrt(med) if med > 0.0 else 1.0


def mmd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    bandwidth: float | None = None,
    unbiased: bool = True,
) -> float:
    """Squared maximum mean discrepancy with a Gaussian (RBF) kernel (unitless), Gretton et al. 2012.

    ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``, with ``sigma = bandwidth`` (data units) or, if None,
    the median heuristic :func:`median_bandwidth` on the pooled sample.

    ``unbiased=True`` (default): the U-statistic ``MMD^2_u`` (their eq. 3),
    ``1/(n(n-1)) sum_{i!=j} k(x_i,x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i,y_j) - 2/(nm) sum_ij k(x_i,y_j)``,
    unbiased for the population MMD^2, hence it can be slightly negative; needs n, m >= 2.
    ``unbiased=False``: the V-statistic ``MMD^2_b`` (their eq. 5, diagonal terms included), >= 0.
    Kernel sums are taken in row blocks, so memory stays at a few tens of MB for any n, m
    (20,000 x 20,000 in d = 2 takes about 3 s on two cores).
    """
    tx, ty = check_pair(x, y, min_n=2 if unbiased else 1)
    sigma = median_bandwidth(tx, ty) if bandwidth is None else float(bandwidth)
    if not (sigma > 0.0 and math.isfinite(sigma)):
        raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth}")
    gamma = 1.0 / (2.0 * sigma * sigma)

    def kernel(dist: torch.Tensor) -> torch.Tensor:  # in place: allocation dominates otherwise
        return dist.square_().mul_(-gamma).exp_()

    n, m = tx.shape[0], ty.shape[0]
    kxx = _sum_within(tx, kernel)
    kyy = _sum_within(ty, kernel)
    kxy = _sum_pairwise(tx, ty, kernel)
    if unbiased:  # drop the diagonal, where k(a, a) = 1
        return (kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2.0 * kxy / (n * m)
    return kxx / n**2 + kyy / m**2 - 2.0 * kxy / (n * m)


def energy(x: ArrayLike, y: ArrayLike) -> float:
    """Energy distance of Székely & Rizzo, in its squared form (data units, Euclidean norm):

    ``E = 2 E|X - Y| - E|X - X'| - E|Y - Y'|``, which is >= 0 with equality iff the laws are equal
    (it is ``2 pi^{(d-1)/2} / Gamma(d/2)`` times an L2 distance of characteristic functions; its
    square root is a metric). The cross term is the mean over all ``n m`` pairs; the within-sample
    terms are unbiased means over distinct pairs ``i != j``, so the estimate is unbiased and may
    be slightly negative. Needs n, m >= 2; computed in row blocks (bounded memory).
    """
    tx, ty = check_pair(x, y, min_n=2)
    n, m = tx.shape[0], ty.shape[0]
    dxx = _sum_within(tx, lambda t: t)  # diagonal is exactly 0 for d <= 16
    dyy = _sum_within(ty, lambda t: t)
    dxy = _sum_pairwise(tx, ty, lambda t: t)
    return 2.0 * dxy / (n * m) - dxx / (n * (n - 1)) - dyy / (m * (m - 1))


# ---------------------------------------------------------------------------------------------
# Registry and the all-at-once entry point
# ---------------------------------------------------------------------------------------------


def _register(*records: Metric) -> None:
    for rec in records:
        METRICS.register(rec.name, rec, help=f"[{', '.join(rec.kinds)}] {rec.help}")


_register(
    Metric("w2", lambda c: w2(c.x, c.y), "data units", "exact 2-Wasserstein distance (POT)"),
    Metric(
        "sliced_w2",
        lambda c: sliced_w2(c.x, c.y, generator=c.generator),
        "data units",
        "sliced 2-Wasserstein distance over random unit directions",
    ),
    Metric("mmd", lambda c: mmd(c.x, c.y), "unitless", "squared MMD, RBF kernel, median bandwidth"),
    Metric("energy", lambda c: energy(c.x, c.y), "data units", "energy distance (squared form)"),
)


def _modes(c: Comparison):  # the samples' nearest modes, shared by the three metrics below
    from genlab.eval.mode_metrics import mode_statistics

    return c.once("mode_statistics", lambda: mode_statistics(c.x, *c.modes))


_MODES = ("modes",)
_register(
    Metric(
        "modes_covered",
        lambda c: float(_modes(c).modes_covered),
        "modes",
        "modes that are the nearest mode of a sample within 3 stds (VEEGAN/PacGAN protocol)",
        needs=_MODES,
        lower_is_better=False,
    ),
    Metric(
        "high_quality",
        lambda c: _modes(c).high_quality,
        "fraction",
        "samples within 3 stds of their nearest mode (VEEGAN/PacGAN; ~0.989 for the law in 2-D)",
        needs=_MODES,
        lower_is_better=False,
    ),
    Metric(
        "reverse_kl",
        lambda c: _modes(c).reverse_kl,
        "nats",
        "KL(high-quality samples' mode histogram || uniform) (PacGAN; log K if none)",
        needs=_MODES,
    ),
)


def _fm():  # the feature metrics, imported on first use
    from genlab.eval import feature_metrics

    return feature_metrics


def _prdc(c: Comparison) -> dict[str, float]:
    return c.once("prdc", lambda: _fm().prdc(c.fy, c.fx, k=5))


def _class_accuracy(c: Comparison) -> float:
    return float((c.px.argmax(dim=-1) == c.labels_x.to(c.px.device)).double().mean())


_IMG = ("images",)
_register(
    Metric(
        "fd",
        lambda c: _fm().frechet_distance(c.fx, c.fy),
        "feature units²",
        "Fréchet distance of Gaussians fitted to the features (FID's formula)",
        _IMG,
        ("features",),
    ),
    Metric(
        "kid",
        lambda c: _fm().kid(c.fx, c.fy, generator=c.generator),
        "feature units²",
        "kernel distance: unbiased MMD², cubic polynomial kernel, mean over subsets",
        _IMG,
        ("features",),
    ),
    Metric(
        "precision",
        lambda c: _prdc(c)["precision"],
        "fraction",
        "samples inside the real k-NN manifold (Kynkäänniemi et al. 2019, k = 5)",
        _IMG,
        ("features",),
        lower_is_better=False,
    ),
    Metric(
        "recall",
        lambda c: _prdc(c)["recall"],
        "fraction",
        "real examples inside the samples' k-NN manifold (Kynkäänniemi et al. 2019, k = 5)",
        _IMG,
        ("features",),
        lower_is_better=False,
    ),
    Metric(
        "density",
        lambda c: _prdc(c)["density"],
        "ratio",
        "real k-NN balls holding each sample, over k (Naeem et al. 2020; ~1 for real data)",
        _IMG,
        ("features",),
        lower_is_better=False,
    ),
    Metric(
        "coverage",
        lambda c: _prdc(c)["coverage"],
        "fraction",
        "real examples whose k-NN ball holds a sample (Naeem et al. 2020, k = 5)",
        _IMG,
        ("features",),
        lower_is_better=False,
    ),
    Metric(
        "classifier_score",
        lambda c: _fm().classifier_score(c.px),
        "classes",
        "exp E KL(p(y|x) || p(y)) on the feature classifier (Inception-Score style)",
        _IMG,
        ("features", "classes"),
        lower_is_better=False,
    ),
    Metric(
        "class_accuracy",
        _class_accuracy,
        "fraction",
        "the feature classifier's accuracy on samples drawn for given classes",
        _IMG,
        ("features", "classes", "labels"),
        lower_is_better=False,
    ),
)


def generative_perplexity(x: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``exp`` of the scorer's mean negative log-likelihood per character of the rows of ``x``
    ``(n, L)`` (token ids): how likely an autoregressive model of the same text finds them."""
    return math.exp(-float(score(x).double().sum()) / x.numel())


def unigram_entropy(x: torch.Tensor) -> float:
    """The mean over rows of ``x`` ``(n, L)`` of the entropy, in bits, of the row's character
    frequencies. A sampler that repeats itself scores a deceptively good generative perplexity and
    a low entropy; real text of the same length sets the floor."""
    out = []
    for row in x.long():
        p = torch.bincount(row).double()
        p = p[p > 0] / len(row)
        out.append(float(-(p * p.log2()).sum()))
    return sum(out) / len(out)


_TEXT = ("tokens",)
_register(
    Metric(
        "gen_ppl",
        lambda c: generative_perplexity(c.x, c.score),
        "perplexity per character",
        "generative perplexity: exp of an autoregressive scorer's nats per character of the samples",
        _TEXT,
        ("scorer",),
    ),
    Metric(
        "unigram_entropy",
        lambda c: unigram_entropy(c.x),
        "bits",
        "entropy of each sample's character frequencies (read beside gen_ppl; the floor is real text)",
        _TEXT,
        ("scorer",),  # drawn with gen_ppl: text is sampled only when there is a scorer
        lower_is_better=False,
    ),
)

DEFAULT_POINT_METRICS = ("w2", "sliced_w2", "mmd", "energy")


def get_metric(name: str) -> Metric:
    """The registered :class:`Metric` record for ``name`` (suggests close names on a typo)."""
    return METRICS.get(name)


def metrics_for(kind: str, available: Iterable[str] = ()) -> list[str]:
    """The registered metrics that apply to data of ``kind`` (``points``, ``images``,
    ``tokens``) and need nothing beyond ``available`` (keys of :data:`NEEDS`): the defaults of
    an evaluation."""
    have = set(available)
    return [e.name for e in METRICS.in_order() if kind in e.obj.kinds and set(e.obj.needs) <= have]


def check_metrics(names: Iterable[str], kind: str, available: Iterable[str]) -> list[Metric]:
    """The records of ``names``; a :class:`DataError` for one that does not apply to ``kind`` or
    needs what this evaluation lacks (unknown names suggest close ones)."""
    have, out = set(available), []
    for name in names:
        rec = get_metric(name)
        if kind not in rec.kinds:
            raise DataError(
                f"metric {name!r} applies to {', '.join(rec.kinds)}, not to {kind}; "
                f"for {kind}: {', '.join(metrics_for(kind, NEEDS)) or 'none'}"
            )
        missing = [NEEDS[k] for k in rec.needs if k not in have]
        if missing:
            raise DataError(f"metric {name!r} needs {' and '.join(missing)}, which is missing here")
        out.append(rec)
    return out


def evaluate_points(
    samples: ArrayLike,
    reference: ArrayLike,
    *,
    metrics: Iterable[str] = DEFAULT_POINT_METRICS,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Compute several point metrics between ``samples`` (n, d) and ``reference`` (m, d).

    Inputs are checked once (:class:`DataError` on a bad shape or non-finite values) and every
    name is resolved before any work starts. ``generator`` goes to the randomised metrics
    (``sliced_w2``). Returns ``{name: value}`` in the order asked; see :func:`get_metric` for units.
    """
    names = list(metrics)
    records = check_metrics(names, "points", ())
    x, y = check_pair(samples, reference, names=("samples", "reference"))
    c = Comparison(x, y, generator)
    return {name: float(rec(c)) for name, rec in zip(names, records)}
