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

Each metric, these and the image metrics on learned features (:mod:`genlab.eval.metrics.features`:
Fréchet distance, KID, precision/recall, density/coverage, classifier score, class accuracy) and
the mode-collapse metrics of a Gaussian mixture with known modes (:mod:`genlab.eval.metrics.modes`:
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
from collections.abc import Iterable

import numpy as np
import torch

from genlab.errors import DataError
from genlab.eval.metrics.base import (
    ArrayLike,
    Comparison,
    Metric,
    OptimalTransportError,
    _cdist,
    _sum_pairwise,
    _sum_within,
    check_metrics,
    check_pair,
    register,
)

DEFAULT_POINT_METRICS = ("w2", "sliced_w2", "mmd", "energy")
# Largest n * m the exact W2 accepts: the float64 cost matrix alone is 8 * n * m bytes
# (25e6 -> 200 MB, 5,000 x 5,000), and the network simplex grows roughly like n^2..n^3.
W2_MAX_PAIRS = 25_000_000
# Pooled points used for the median heuristic (all pairs among them: ~2e6 distances).
MEDIAN_MAX_POINTS = 2_000


def w2(x: ArrayLike, y: ArrayLike, *, num_itermax: int = 10_000_000) -> float:
    """Exact 2-Wasserstein distance between the empirical laws of ``x`` and ``y`` (data units).

    ``W2 = sqrt(min_P sum_ij P_ij |x_i - y_j|^2)`` over couplings ``P`` of the uniform weights
    ``1/n`` and ``1/m``, solved exactly by the network simplex of POT (``ot.emd2``) in float64.
    Note the square root: this is a distance, not its square. The network simplex grows faster
    than quadratically in the set size; sets with more than ``W2_MAX_PAIRS`` pairs are refused
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
    Kernel sums are taken in row blocks, so memory stays at a few tens of MB for any n, m.
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


register(
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
