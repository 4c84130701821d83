"""Image-quality metrics computed on feature vectors (FID, KID, precision/recall/density/coverage,
Inception Score).

The usual image metrics compare two sets of feature vectors, one of real and one of generated
images; here the features come from whatever network the caller used (genlab trains its own small
ones), so every function takes plain arrays: ``x``/``real`` of shape ``(n, d)`` and ``y``/``fake``
of shape ``(m, d)`` (torch tensors or numpy arrays), or class probabilities ``(n, K)`` for
:func:`classifier_score`. Everything is computed in float64 on the device of the first input, and
pairwise distance or kernel matrices are processed in row blocks of at most ``base._BLOCK_ENTRIES``
entries (32 MiB), so memory stays bounded for any ``n, m`` (10,000 x 10,000 in d = 128 needs a few
tens of MB beyond the inputs).

====================  ============================================  ====================  ======
name                  what                                          units                 better
====================  ============================================  ====================  ======
``frechet_distance``  squared Fréchet distance of fitted Gaussians  squared feature       lower
                                                                    units
``kid``               unbiased MMD^2, cubic polynomial kernel       kernel values (not    lower
                      (mean, std over subsets)                      scale-free)
``prdc``              precision, recall, density, coverage of       fractions; density 1  higher
                      k-NN balls                                    = as dense as real
``classifier_score``  Inception Score on class probabilities        classes (1 to K)      higher
                      (mean, std over splits)
====================  ============================================  ====================  ======

Conventions follow the reference implementations, so that the same features give the same
numbers: torchmetrics' ``FrechetInceptionDistance``, ``KernelInceptionDistance`` and
``InceptionScore`` and the ``prdc`` package (``compute_prdc``); ``bench/eval_reference.py``
checks the agreement (relative differences below 1e-5). Where they differ from a paper, the
docstring says so.

References:
    Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter (2017), "GANs Trained by a Two Time-Scale
    Update Rule Converge to a Local Nash Equilibrium", NeurIPS (FID).
    Dowson & Landau (1982), "The Fréchet distance between multivariate normal distributions",
    J. Multivariate Anal. 12.
    Bińkowski, Sutherland, Arbel & Gretton (2018), "Demystifying MMD GANs", ICLR (KID).
    Gretton, Borgwardt, Rasch, Schölkopf & Smola (2012), "A Kernel Two-Sample Test", JMLR 13.
    Kynkäänniemi, Karras, Laine, Lehtinen & Aila (2019), "Improved Precision and Recall Metric for
    Assessing Generative Models", NeurIPS.
    Naeem, Oh, Uh, Choi & Yoo (2020), "Reliable Fidelity and Diversity Metrics for Generative
    Models", ICML (density and coverage).
    Salimans, Goodfellow, Zaremba, Cheung, Radford & Chen (2016), "Improved Techniques for
    Training GANs", NeurIPS (Inception Score).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from genlab.errors import DataError
from genlab.eval.metrics import base
from genlab.eval.metrics.base import (
    ArrayLike,
    Comparison,
    Metric,
    _row_blocks,
    as_points,
    check_pair,
    register,
)

__all__ = [
    "MeanStd",
    "classifier_score",
    "frechet_distance",
    "kid",
    "kth_neighbour_distances",
    "prdc",
]

# Rows of probabilities may miss a sum of 1 by this much (float32 softmax over many classes);
# they are renormalised exactly before use.
PROB_SUM_TOL = 1e-3


class MeanStd(NamedTuple):
    """Mean and standard deviation of a score over subsets or splits (plain Python floats)."""

    mean: float
    std: float


def _sqdist(
    a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor
) -> torch.Tensor:
    """Squared Euclidean distances ``(len(a), len(b))`` as ``|a|^2 + |b|^2 - 2 a.b`` (one matrix
    product, clamped at 0); ``a_sq``, ``b_sq`` are the squared row norms. Accurate to about
    ``eps * (|a|^2 + |b|^2)``, like the ``prdc`` package's (scikit-learn's) distances."""
    out = torch.addmm(b_sq.unsqueeze(0), a, b.T, alpha=-2.0)
    return out.add_(a_sq.unsqueeze(1)).clamp_min_(0.0)


def _kth_sqdist(t: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance of each row of ``t`` to its ``k``-th nearest other row, shape ``(n,)``.

    The distance of a point to itself is set to exactly 0 and the ``(k+1)``-th smallest entry of
    its row is taken: the same as the ``prdc`` package, and the same as the ``k``-th smallest
    distance to the other points (duplicates of a point count as neighbours at distance 0)."""
    n = t.shape[0]
    sq = t.square().sum(dim=1)
    out = t.new_empty(n)
    for rows in _row_blocks(n, n):
        block = _sqdist(t[rows], sq[rows], t, sq)
        idx = torch.arange(rows.start, rows.stop, device=t.device)
        block[idx - rows.start, idx] = 0.0  # exactly 0 (the product form leaves ~eps |t|^2)
        out[rows] = block.topk(k + 1, dim=1, largest=False, sorted=False).values.amax(dim=1)
    return out


def _positive_int(value: int, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def kth_neighbour_distances(x: ArrayLike, k: int = 5, *, name: str = "x") -> torch.Tensor:
    """Euclidean distance (data units) of each point of ``x`` (n, d) to its ``k``-th nearest
    neighbour among the other points of ``x``: a float64 tensor ``(n,)`` on the device of ``x``.

    This is the radius of the k-NN ball of Kynkäänniemi et al. (2019) and Naeem et al. (2020).
    A point is never its own neighbour, but an exact duplicate of it is (at distance 0). Row blocks
    of the ``(n, n)`` distance matrix, computed by matrix products, so memory stays bounded.
    ``name`` is what error messages call the set; needs ``n >= k + 1``.
    """
    k = _positive_int(k, "k", 1)
    t = as_points(x, name)
    t = t - t.mean(dim=0)  # distances are translation invariant; small norms keep them accurate
    if t.shape[0] < k + 1:
        raise DataError(
            f"{name}: k-th neighbour distances need at least k + 1 = {k + 1} points, got {t.shape[0]}"
        )
    return _kth_sqdist(t, k).sqrt_()


# ---------------------------------------------------------------------------------------------
# Fréchet distance (FID)
# ---------------------------------------------------------------------------------------------


def _mean_and_factor(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean ``mu`` of the rows of ``t`` and a triangular ``R`` with ``R^T R = (t - mu)^T (t -
    mu)``, by a blockwise (TSQR) QR decomposition of the centred rows: memory ``O(block * d)``."""
    n, d = t.shape
    mu = t.mean(dim=0)
    step = max(base._BLOCK_ENTRIES // d, 8 * d)
    r: torch.Tensor | None = None
    for i in range(0, n, step):
        block = t[i : i + step] - mu
        stacked = block if r is None else torch.cat([r, block])
        r = torch.linalg.qr(stacked, mode="r").R
    assert r is not None
    return mu, r


def frechet_distance(x: ArrayLike, y: ArrayLike) -> float:
    """Squared Fréchet (2-Wasserstein) distance between the Gaussians fitted to ``x`` (n, d) and
    ``y`` (m, d): the FID formula of Heusel et al. (2017), in squared feature units.

    ``FD = |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x^{1/2} S_y S_x^{1/2})^{1/2})``
    (Dowson & Landau 1982), with the sample means ``mu`` and the unbiased sample covariances ``S``
    (divisor ``n - 1``), as in torchmetrics' ``FrechetInceptionDistance`` and pytorch-fid.

    The trace of the matrix square root is computed without forming ``S_x S_y``: with ``R_x``
    from a QR decomposition of the centred ``x`` (``S_x = R_x^T R_x / (n - 1)``, same for ``y``),
    ``tr (S_x^{1/2} S_y S_x^{1/2})^{1/2} = ||R_x R_y^T||_* / sqrt((n - 1)(m - 1))``, the sum of
    singular values of a ``d x d`` matrix. This is backward stable: a set against itself gives
    ``~1e-15 * tr S``, also for rank-deficient covariances (``n <= d``), where ``sqrtm`` or the
    eigenvalues of ``S_x S_y`` (torchmetrics) lose about ``sqrt(eps)`` per null direction (e.g.
    -2.6e-6 at n = 50, d = 100, tr S = 105). The value is >= 0 in exact arithmetic; rounding below
    0 is clamped to 0. Needs n, m >= 2; symmetric in ``x`` and ``y``.
    """
    tx, ty = check_pair(x, y, min_n=2)
    n, m = tx.shape[0], ty.shape[0]
    mu_x, r_x = _mean_and_factor(tx)
    mu_y, r_y = _mean_and_factor(ty)
    mean_term = (mu_x - mu_y).square().sum()
    trace_term = r_x.square().sum() / (n - 1) + r_y.square().sum() / (m - 1)
    cross = torch.linalg.svdvals(r_x @ r_y.T).sum() / math.sqrt((n - 1) * (m - 1))
    return max(float(mean_term + trace_term - 2.0 * cross), 0.0)


# ---------------------------------------------------------------------------------------------
# Kernel Inception Distance
# ---------------------------------------------------------------------------------------------


def _poly_sum(
    a: torch.Tensor, b: torch.Tensor, gamma: float, coef0: float, degree: int
) -> torch.Tensor:
    """``sum_ij (gamma a_i.b_j + coef0)^degree`` in row blocks (a 0-d tensor)."""
    total = a.new_zeros(())
    for rows in _row_blocks(a.shape[0], b.shape[0]):
        total += (a[rows] @ b.T).mul_(gamma).add_(coef0).pow_(degree).sum()
    return total


def _poly_sum_offdiag(a: torch.Tensor, gamma: float, coef0: float, degree: int) -> torch.Tensor:
    """``sum_{i != j} (gamma a_i.a_j + coef0)^degree``: each row block meets itself and the rows
    after it (symmetry), and the diagonal is subtracted. At least 4 row blocks (of >= 128 rows),
    so that symmetry saves about 3/8 of the work even when the whole matrix would fit one block."""
    n = a.shape[0]
    total = a.new_zeros(())
    step = min(max(1, base._BLOCK_ENTRIES // n), max(128, -(-n // 4)))
    for rows in (slice(i, min(i + step, n)) for i in range(0, n, step)):
        total += _poly_sum(a[rows], a[rows], gamma, coef0, degree)
        if rows.stop < n:
            total += 2.0 * _poly_sum(a[rows], a[rows.stop :], gamma, coef0, degree)
    diag = a.square().sum(dim=1).mul_(gamma).add_(coef0).pow_(degree).sum()
    return total - diag


def _poly_mmd2(
    x: torch.Tensor, y: torch.Tensor, gamma: float, coef0: float, degree: int
) -> torch.Tensor:
    """Unbiased ``MMD^2_u`` of Gretton et al. (2012, eq. 3) with the polynomial kernel
    ``k(a, b) = (gamma a.b + coef0)^degree`` on float64 tensors (a 0-d tensor; no checks):
    ``1/(n(n-1)) sum_{i!=j} k(x_i,x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i,y_j) - 2/(nm) sum_ij k(x_i,y_j)``.
    """
    n, m = x.shape[0], y.shape[0]
    kxx = _poly_sum_offdiag(x, gamma, coef0, degree)
    kyy = _poly_sum_offdiag(y, gamma, coef0, degree)
    kxy = _poly_sum(x, y, gamma, coef0, degree)
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)


def kid(
    x: ArrayLike,
    y: ArrayLike,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    generator: torch.Generator | None = None,
) -> MeanStd:
    """Kernel Inception Distance of Bińkowski et al. (2018) between ``x`` (n, d) and ``y`` (m, d):
    ``(mean, std)`` of the unbiased squared MMD over random subsets, in kernel values (not
    scale-free: rescaling the features changes KID, roughly like ``scale^(2 degree)`` once
    ``gamma |a|^2 >> coef0``).

    Kernel: ``k(a, b) = (gamma a.b + coef0)^degree`` with ``gamma = 1/d`` by default (the cubic
    polynomial kernel of the paper). For each of ``subsets`` subsets, ``s = min(subset_size, n, m)``
    rows of ``x`` and ``s`` rows of ``y`` are drawn without replacement (``randperm(n)[:s]``, then
    ``randperm(m)[:s]``, from ``generator`` on its device, or torch's global generator if None),
    and the unbiased ``MMD^2_u`` (Gretton et al. 2012, eq. 3; within-set diagonals excluded, the
    cross term over all ``s^2`` pairs) is computed on them. Returns the mean over subsets and their
    *population* standard deviation (divisor ``subsets``), exactly like torchmetrics'
    ``KernelInceptionDistance`` (which draws the same permutations from the global generator: after
    ``torch.manual_seed(seed)`` it uses the same subsets as ``generator=Generator().manual_seed(seed)``
    here; it refuses ``subset_size > n`` or ``> m`` where this uses all points). The mean is unbiased for the population MMD^2 (0 for equal laws, so it can be slightly
    negative). Needs n, m >= 2; kernel sums in row blocks (bounded memory).
    """
    tx, ty = check_pair(x, y, min_n=2)
    subsets = _positive_int(subsets, "subsets", 1)
    subset_size = _positive_int(subset_size, "subset_size", 2)
    degree = _positive_int(degree, "degree", 1)
    n, m, d = tx.shape[0], ty.shape[0], tx.shape[1]
    g = 1.0 / d if gamma is None else float(gamma)
    if not (g > 0.0 and math.isfinite(g)):
        raise ValueError(f"gamma must be a positive finite number or None, got {gamma!r}")
    c = float(coef0)
    if not (c >= 0.0 and math.isfinite(c)):
        raise ValueError(f"coef0 must be a finite number >= 0, got {coef0!r}")
    s = min(subset_size, n, m)
    rng_device = generator.device if generator is not None else torch.device("cpu")
    values = []
    for _ in range(subsets):
        ix = torch.randperm(n, generator=generator, device=rng_device)[:s].to(tx.device)
        iy = torch.randperm(m, generator=generator, device=rng_device)[:s].to(tx.device)
        values.append(_poly_mmd2(tx[ix], ty[iy], g, c, degree))
    v = torch.stack(values)
    return MeanStd(float(v.mean()), float(v.std(correction=0)))


# ---------------------------------------------------------------------------------------------
# Precision, recall, density, coverage
# ---------------------------------------------------------------------------------------------


def prdc(real: ArrayLike, fake: ArrayLike, *, k: int = 5) -> dict[str, float]:
    """Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020)
    of ``fake`` (m, d) against ``real`` (n, d): ``{"precision", "recall", "density", "coverage"}``,
    Python floats; the first, second and fourth are fractions in [0, 1], density is in [0, n/k]
    (about 1 when ``fake`` is distributed like ``real``).

    With ``B(p, r)`` the open ball of radius ``r`` around ``p`` and ``r_i`` (``f_j``) the
    distance of ``real_i`` (``fake_j``) to its k-th nearest neighbour within its own set
    (:func:`kth_neighbour_distances`):

    * precision ``= 1/m sum_j 1[exists i: fake_j in B(real_i, r_i)]``
    * recall ``= 1/n sum_i 1[exists j: real_i in B(fake_j, f_j)]``
    * density ``= 1/(k m) sum_j sum_i 1[fake_j in B(real_i, r_i)]``
    * coverage ``= 1/n sum_i 1[exists j: fake_j in B(real_i, r_i)]``

    Exactly the conventions of the ``prdc`` package (``compute_prdc(real, fake, nearest_k=k)``),
    including the strict inequality ``|p - q| < r`` (the papers write ``<=``; for continuous data
    the two agree). Real against itself gives precision = recall = coverage = 1 and density = 1
    (up to ties). Distances come from matrix products in row blocks (bounded memory). Needs
    n, m >= k + 1.
    """
    k = _positive_int(k, "k", 1)
    tr, tf = check_pair(real, fake, min_n=k + 1, names=("real", "fake"))
    n, m = tr.shape[0], tf.shape[0]
    # Distances are translation invariant: centring both sets on the real mean keeps the norms in
    # |a|^2 + |b|^2 - 2 a.b small, so the rounding error is relative to the spread of the data,
    # not to its distance from the origin.
    shift = tr.mean(dim=0)
    tr, tf = tr - shift, tf - shift
    r_real = _kth_sqdist(tr, k)  # squared radii: comparing squares is comparing distances
    r_fake = _kth_sqdist(tf, k)
    sq_real, sq_fake = tr.square().sum(dim=1), tf.square().sum(dim=1)
    in_real_balls = torch.zeros(m, dtype=torch.float64, device=tr.device)  # per fake point (counts)
    recalled = torch.zeros(n, dtype=torch.bool, device=tr.device)  # per real point
    covered = torch.zeros(n, dtype=torch.bool, device=tr.device)
    for rows in _row_blocks(n, m):
        block = _sqdist(tr[rows], sq_real[rows], tf, sq_fake)  # (rows, m)
        recalled[rows] = (block < r_fake.unsqueeze(0)).any(dim=1)
        # in place, no second (rows, m) matrix: 1.0 where fake_j is in the ball of real_i
        # (a - b < 0 exactly when a < b, for finite IEEE doubles)
        inside = block.sub_(r_real[rows].unsqueeze(1)).lt_(0.0)
        in_real_balls += inside.sum(dim=0)
        covered[rows] = inside.amax(dim=1) > 0.0
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_real_balls.sum()) / (k * m),
        "coverage": float(covered.double().mean()),
    }


# ---------------------------------------------------------------------------------------------
# Inception Score on class probabilities
# ---------------------------------------------------------------------------------------------


def classifier_score(probs: ArrayLike, *, splits: int = 10) -> MeanStd:
    """Inception Score of Salimans et al. (2016) on class probabilities ``probs`` (n, K):
    ``(mean, std)`` over ``splits`` splits of ``exp(E_x KL(p(y|x) || p(y)))``, in "effective
    number of classes" (1 to K; higher is better).

    Each split ``P`` (consecutive rows, boundaries ``i n // splits``: equal sizes when ``splits``
    divides ``n``) scores ``exp(1/|P| sum_{x in P} sum_y p(y|x) (log p(y|x) - log p_P(y)))`` with
    the split's marginal ``p_P(y) = mean_{x in P} p(y|x)``; ``0 log 0 = 0``, no epsilon. The
    result is the mean over splits and their *sample* standard deviation (divisor
    ``splits - 1``; NaN for ``splits = 1``), like torchmetrics' ``InceptionScore``. torchmetrics
    shuffles the rows first (``randperm`` from the global generator) and splits with
    ``torch.chunk``; give it logits whose softmax is ``probs[perm]`` and, when ``splits`` divides
    ``n``, the numbers agree. Rows must be >= 0 and sum to 1 within ``PROB_SUM_TOL`` (they are
    renormalised); needs ``n >= splits``.
    """
    p = as_points(probs, "probs")
    splits = _positive_int(splits, "splits", 1)
    n = p.shape[0]
    if n < splits:
        raise DataError(f"probs: {splits} splits need at least {splits} rows, got {n}")
    if (p < 0).any():
        raise DataError(f"probs: {int((p < 0).any(dim=1).sum())} of {n} rows have negative entries")
    sums = p.sum(dim=1, keepdim=True)
    bad = int(((sums - 1.0).abs() > PROB_SUM_TOL).sum())
    if bad:
        raise DataError(
            f"probs: {bad} of {n} rows do not sum to 1 (within {PROB_SUM_TOL}); pass probabilities "
            "(e.g. softmax of the logits), not logits"
        )
    scores = []
    for i in range(splits):
        rows = slice(i * n // splits, (i + 1) * n // splits)
        part = p[rows] / sums[rows]  # renormalised split by split: no full copy of probs
        marginal = part.mean(dim=0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    std = float(s.std(correction=1)) if splits > 1 else math.nan
    return MeanStd(float(s.mean()), std)


def _prdc(c: Comparison) -> dict[str, float]:
    return c.once("prdc", lambda: prdc(c.fy, c.fx, k=5))


def _class_accuracy(c: Comparison) -> float:
    return float((c.px.argmax(dim=-1) == c.labels_x.to(c.px.device)).double().mean())


_IMG = ("images",)
register(
    Metric(
        "fd",
        lambda c: frechet_distance(c.fx, c.fy),
        "feature units²",
        "Fréchet distance of Gaussians fitted to the features (FID's formula)",
        _IMG,
        ("features",),
    ),
    Metric(
        "kid",
        lambda c: kid(c.fx, c.fy, generator=c.generator),
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
        lambda c: classifier_score(c.px),
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
