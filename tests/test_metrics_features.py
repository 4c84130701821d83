"""Feature-space image metrics (FID, KID, PRDC, Inception Score) checked against closed forms,
brute-force implementations and the properties that define them (float64 throughout)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from genlab.errors import DataError
from genlab.eval.metrics import base as metrics_base
from genlab.eval.metrics.features import (
    MeanStd,
    classifier_score,
    frechet_distance,
    kid,
    kth_neighbour_distances,
    prdc,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=gen(seed), dtype=torch.float64)


def gaussian(n: int, mu: np.ndarray, cov: np.ndarray, g: torch.Generator) -> torch.Tensor:
    chol = torch.from_numpy(np.linalg.cholesky(cov))
    z = torch.randn(n, len(mu), generator=g, dtype=torch.float64)
    return torch.from_numpy(mu) + z @ chol.T


def fd_closed_form(mu1, s1, mu2, s2) -> float:
    """Fréchet distance of two Gaussians by scipy's sqrtm, symmetric form (independent of the
    QR/nuclear-norm route of the implementation)."""
    r1 = scipy.linalg.sqrtm(s1).real
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * cross))


# ---------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "d"), [(300, 1), (500, 8), (40, 100), (2000, 64)])
def test_frechet_of_set_with_itself_is_zero(n: int, d: int) -> None:
    # anisotropic scales (cond ~ 1e6 for the covariance), including n < d (rank-deficient S)
    x = randn(n, d, 0) * torch.logspace(-2, 1, d, dtype=torch.float64) + 5.0
    tr_s = float(x.var(dim=0).sum())
    assert frechet_distance(x, x) <= 1e-12 * tr_s
    assert frechet_distance(x, x[torch.randperm(n, generator=gen(1))]) <= 1e-12 * tr_s


@pytest.mark.parametrize(("n", "d"), [(500, 8), (40, 100)])
def test_frechet_of_scaled_copy_is_exact_also_when_rank_deficient(n: int, d: int) -> None:
    # y = a x: S_y = a^2 S_x, so FD = (1 - a)^2 (|mu|^2 + tr S) exactly. At n < d the null space
    # of S makes eigvals(S_x S_y) or sqrtm lose ~sqrt(eps) (rel ~1e-7 here); the QR route does not
    x = randn(n, d, 70) * torch.logspace(-1, 1, d, dtype=torch.float64) + 0.3
    expected = 0.25 * float(x.mean(0).square().sum() + x.var(0).sum())
    assert frechet_distance(x, 1.5 * x) == pytest.approx(expected, rel=1e-12)


def test_frechet_of_pure_shift_is_squared_shift_and_grows() -> None:
    # same covariance: the trace term vanishes and FD(x, x + t c) = t^2 |c|^2, increasing in t
    x = randn(400, 6, 2) * torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    c = torch.linspace(-1.0, 2.0, 6, dtype=torch.float64)
    values = [frechet_distance(x, x + t * c) for t in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    for t, v in zip((0.0, 0.25, 0.5, 1.0, 2.0, 4.0), values):
        assert v == pytest.approx(t * t * float(c.square().sum()), rel=1e-10, abs=1e-12)
    assert all(a < b for a, b in zip(values, values[1:]))


def test_frechet_mean_shift_adds_exactly_the_mean_term() -> None:
    # different laws: only |mu_x - mu_y - t c|^2 depends on the shift, the trace term is constant
    x, y = randn(500, 5, 3), 1.7 * randn(300, 5, 4) + 0.2
    c = torch.tensor([1.0, -0.5, 0.0, 2.0, 0.3], dtype=torch.float64)
    base = frechet_distance(x, y)
    dmu = x.mean(0) - y.mean(0)
    for t in (0.5, 1.0, 3.0):
        expected = base + float((dmu - t * c).square().sum() - dmu.square().sum())
        assert frechet_distance(x, y + t * c) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(
    ("n", "m", "d", "seed"), [(500, 500, 4, 5), (300, 800, 16, 6), (50, 70, 30, 7)]
)
def test_frechet_matches_sqrtm_formula_on_the_sample(n: int, m: int, d: int, seed: int) -> None:
    # the same sample means and unbiased covariances (np.cov: divisor n - 1) through scipy's sqrtm
    x = randn(n, d, seed)
    y = randn(m, d, seed + 100) @ torch.eye(d, dtype=torch.float64).add(0.3) + 0.5
    xs, ys = x.numpy(), y.numpy()
    expected = fd_closed_form(xs.mean(0), np.cov(xs.T), ys.mean(0), np.cov(ys.T))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)


def test_frechet_converges_to_the_population_closed_form() -> None:
    # FD of N(mu1, S1), N(mu2, S2) by sqrtm vs the mean of R independent estimates at n = 20000.
    # The estimator's error is O_p(n^-1/2) (spread, estimated from the R repeats: tolerance 4
    # standard errors of the mean) plus an O(d/n) upward bias, of which the mean term alone is
    # exactly tr(S1)/n + tr(S2)/m; allow 3 times that.
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.5])
    a = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.5], [0.0, 0.5, 0.7]])
    s1, s2 = a @ a.T, np.diag([0.5, 1.5, 3.0])
    expected = fd_closed_form(mu1, s1, mu2, s2)
    n = m = 20_000
    g = gen(8)
    est = np.array(
        [frechet_distance(gaussian(n, mu1, s1, g), gaussian(m, mu2, s2, g)) for _ in range(40)]
    )
    se = est.std(ddof=1) / math.sqrt(len(est))
    bias_allowance = 3.0 * (np.trace(s1) / n + np.trace(s2) / m)
    assert abs(est.mean() - expected) <= 4.0 * se + bias_allowance
    assert 4.0 * se + bias_allowance < 0.02 * expected  # tight enough to mean something


def test_frechet_is_symmetric() -> None:
    x, y = randn(400, 7, 9), 2.0 * randn(250, 7, 10) - 1.0
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-12)


def test_frechet_blockwise_qr_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = randn(700, 4, 11), randn(650, 4, 12) * 0.5 + 1.0
    whole = frechet_distance(x, y)
    monkeypatch.setattr(metrics_base, "_BLOCK_ENTRIES", 1)  # blocks of 8 d = 32 rows: ~22 QR steps
    assert frechet_distance(x, y) == pytest.approx(whole, rel=1e-12)


def test_frechet_accepts_numpy_and_float32_as_float64() -> None:
    x, y = randn(200, 3, 13).float(), randn(150, 3, 14).float() + 1.0
    expected = frechet_distance(x.double(), y.double())
    assert frechet_distance(x.numpy(), y.numpy()) == expected
    assert frechet_distance(x, y) == expected


# ---------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------


def poly_mmd2_bruteforce(x: np.ndarray, y: np.ndarray, gamma: float, coef0: float, degree: int):
    """Unbiased MMD^2 from the full kernel matrices, diagonals dropped by masks."""
    kxx = (gamma * x @ x.T + coef0) ** degree
    kyy = (gamma * y @ y.T + coef0) ** degree
    kxy = (gamma * x @ y.T + coef0) ** degree
    n, m = len(x), len(y)
    off_x, off_y = ~np.eye(n, dtype=bool), ~np.eye(m, dtype=bool)
    return kxx[off_x].mean() + kyy[off_y].mean() - 2.0 * kxy.mean()


def test_kid_two_samples_of_one_law_have_mean_near_zero() -> None:
    x, y = randn(1000, 16, 15), randn(1000, 16, 16)
    same = kid(x, y, subsets=50, subset_size=200, generator=gen(0))
    assert isinstance(same, MeanStd)
    assert abs(same.mean) < 3.0 * same.std
    shifted = kid(x, y + 0.5, subsets=50, subset_size=200, generator=gen(0))
    assert shifted.mean > 5.0 * shifted.std  # and a different law is clearly separated


def test_kid_is_unbiased_for_equal_laws() -> None:
    # mean of R independent full-sample U-statistics (n = 20 each) is 0 within 4 standard errors;
    # the biased V-statistic (diagonals kept) on the same samples is rejected by the same test
    u, v = [], []
    g = gen(17)
    for r in range(300):
        x = torch.randn(20, 2, generator=g, dtype=torch.float64)
        y = torch.randn(20, 2, generator=g, dtype=torch.float64)
        u.append(kid(x, y, subsets=1, subset_size=20, gamma=0.5, generator=gen(r)).mean)
        kxx, kyy, kxy = ((0.5 * a @ b.T + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        v.append(float(kxx.mean() + kyy.mean() - 2.0 * kxy.mean()))
    u, v = np.array(u), np.array(v)
    assert abs(u.mean()) <= 4.0 * u.std(ddof=1) / math.sqrt(len(u))
    assert abs(v.mean()) > 4.0 * v.std(ddof=1) / math.sqrt(len(v))


def moment_tensors(mu: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, ...]:
    """E X, E X X^T and E X (x) X (x) X of N(mu, cov)."""
    m2 = cov + np.outer(mu, mu)
    m3 = (
        np.einsum("i,j,k->ijk", mu, mu, mu)
        + np.einsum("i,jk->ijk", mu, cov)
        + np.einsum("j,ik->ijk", mu, cov)
        + np.einsum("k,ij->ijk", mu, cov)
    )
    return mu, m2, m3


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_kid_matches_population_mmd2_from_moments(degree: int) -> None:
    # (gamma a.b + c)^p = sum_q binom(p, q) gamma^q c^(p-q) (a.b)^q and E (X.Y)^q = <M_q(X), M_q(Y)>
    # for independent X, Y, so MMD^2 = sum_q binom(p, q) gamma^q c^(p-q) |M_q(X) - M_q(Y)|^2 with
    # the q-th moment tensors M_q; for Gaussians these are closed-form. Degree 1: gamma |dmu|^2.
    gamma, coef0 = 0.5, 1.0
    mu1, mu2 = np.array([0.0, 0.5]), np.array([0.6, -0.2])
    s1, s2 = np.array([[1.0, 0.3], [0.3, 0.5]]), np.array([[0.6, 0.0], [0.0, 1.2]])
    mx, my = moment_tensors(mu1, s1), moment_tensors(mu2, s2)
    expected = sum(
        math.comb(degree, q)
        * gamma**q
        * coef0 ** (degree - q)
        * np.sum((mx[q - 1] - my[q - 1]) ** 2)
        for q in range(1, degree + 1)
    )
    if degree == 1:
        assert expected == pytest.approx(gamma * np.sum((mu1 - mu2) ** 2), rel=1e-14)
    g = gen(18 + degree)
    est = np.array(
        [
            kid(
                gaussian(40, mu1, s1, g),
                gaussian(40, mu2, s2, g),
                subsets=1,
                subset_size=40,
                degree=degree,
                gamma=gamma,
                coef0=coef0,
                generator=g,
            ).mean
            for _ in range(400)
        ]
    )
    se = est.std(ddof=1) / math.sqrt(len(est))
    assert abs(est.mean() - expected) <= 4.0 * se
    assert 4.0 * se < 0.3 * expected  # the population value is resolved


def test_kid_subsets_and_population_std_follow_torchmetrics_protocol() -> None:
    # per subset: randperm(n)[:s] of x, then randperm(m)[:s] of y, from the generator; mean and
    # population std (ddof=0) over subsets; s = min(subset_size, n, m)
    x, y = randn(60, 5, 21), randn(45, 5, 22) + 0.2
    for subset_size, s in ((30, 30), (1000, 45)):
        res = kid(x, y, subsets=7, subset_size=subset_size, degree=3, generator=gen(3))
        g = gen(3)
        vals = []
        for _ in range(7):
            ix = torch.randperm(60, generator=g)[:s]
            iy = torch.randperm(45, generator=g)[:s]
            vals.append(poly_mmd2_bruteforce(x[ix].numpy(), y[iy].numpy(), 1 / 5, 1.0, 3))
        assert res.mean == pytest.approx(np.mean(vals), rel=1e-10)
        assert res.std == pytest.approx(np.std(vals, ddof=0), rel=1e-9)


def test_kid_global_generator_when_none() -> None:
    # generator=None draws from torch's global generator, like torchmetrics
    x, y = randn(50, 3, 23), randn(50, 3, 24)
    torch.manual_seed(5)
    a = kid(x, y, subsets=4, subset_size=20)
    assert a == kid(x, y, subsets=4, subset_size=20, generator=gen(5))


def test_kid_blockwise_kernel_sums_equal_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = randn(90, 6, 25), randn(80, 6, 26) * 1.5
    whole = kid(x, y, subsets=3, subset_size=70, generator=gen(0))
    monkeypatch.setattr(
        metrics_base, "_BLOCK_ENTRIES", 7 * 70 + 3
    )  # 7-row blocks, ragged last block
    blocked = kid(x, y, subsets=3, subset_size=70, generator=gen(0))
    assert blocked.mean == pytest.approx(whole.mean, rel=1e-10)
    assert blocked.std == pytest.approx(whole.std, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Precision, recall, density, coverage
# ---------------------------------------------------------------------------------------------


def prdc_bruteforce(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The prdc package's definitions with explicit loops and exact differences."""
    n, m = len(real), len(fake)

    def dist(a, b):
        return math.sqrt(sum((ai - bi) ** 2 for ai, bi in zip(a, b)))

    def radii(pts):
        return [sorted(dist(p, q) for q in pts)[k] for p in pts]  # index k: self (0) included

    r_real, r_fake = radii(real), radii(fake)
    d = [[dist(real[i], fake[j]) for j in range(m)] for i in range(n)]
    precision = sum(any(d[i][j] < r_real[i] for i in range(n)) for j in range(m)) / m
    recall = sum(any(d[i][j] < r_fake[j] for j in range(m)) for i in range(n)) / n
    density = sum(d[i][j] < r_real[i] for i in range(n) for j in range(m)) / (k * m)
    coverage = sum(min(d[i]) < r_real[i] for i in range(n)) / n
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize(("n", "m", "d", "k"), [(60, 45, 3, 3), (40, 50, 2, 1), (30, 30, 8, 5)])
def test_prdc_matches_bruteforce_loops(n: int, m: int, d: int, k: int) -> None:
    real, fake = randn(n, d, 30 + k), 1.3 * randn(m, d, 40 + k) + 0.4
    got = prdc(real, fake, k=k)
    expected = prdc_bruteforce(real.tolist(), fake.tolist(), k)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.0 < got["precision"] < 1.0 and 0.0 < got["recall"] < 1.0  # a non-trivial case


def test_prdc_a_point_on_a_sphere_is_outside_the_ball() -> None:
    # integer points on a line (distances exact): real {0, 4, 8}, radii 4; fake {0, 1, 9, 10, 12},
    # radii 1, 1, 1, 1, 2. Ties |p - q| = r: fake 12 vs real 8 (precision), real 8 vs fake 9
    # (recall). Strict '<' as in the prdc package: precision 4/5 (not 1), recall 1/3 (not 2/3)
    real = np.array([[0.0, 0.0], [4.0, 0.0], [8.0, 0.0]])
    fake = np.array([[0.0, 0.0], [1.0, 0.0], [9.0, 0.0], [10.0, 0.0], [12.0, 0.0]])
    expected = {"precision": 0.8, "recall": 1 / 3, "density": 1.0, "coverage": 1.0}
    assert prdc(real, fake, k=1) == pytest.approx(expected, abs=1e-15)
    assert prdc_bruteforce(real.tolist(), fake.tolist(), 1) == pytest.approx(expected, abs=1e-15)


def test_kth_neighbour_distances_match_sorted_full_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    x = randn(57, 4, 50)
    full = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    for k in (1, 3, 56):
        expected = full.sort(dim=1).values[:, k]  # column 0 is the point itself
        torch.testing.assert_close(kth_neighbour_distances(x, k), expected, rtol=1e-10, atol=1e-10)
    monkeypatch.setattr(
        metrics_base, "_BLOCK_ENTRIES", 5 * 57 - 1
    )  # 4-row blocks: self entries cross blocks
    torch.testing.assert_close(
        kth_neighbour_distances(x, 3), full.sort(dim=1).values[:, 3], rtol=1e-10, atol=1e-10
    )


def test_kth_neighbour_counts_duplicates_as_neighbours() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    assert kth_neighbour_distances(x, 1).tolist() == [0.0, 0.0, 5.0]


def test_prdc_blockwise_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    real, fake = randn(120, 3, 51), randn(90, 3, 52) + 0.5
    whole = prdc(real, fake, k=4)
    monkeypatch.setattr(metrics_base, "_BLOCK_ENTRIES", 7 * 120 + 5)  # 7-row blocks
    assert prdc(real, fake, k=4) == whole


def test_prdc_is_translation_invariant_far_from_the_origin() -> None:
    # the product form |a|^2 + |b|^2 - 2 a.b loses ~eps |a|^2: at an offset of 1e6 that is ~1e-3
    # in squared distance, unless the sets are centred first (what prdc does)
    real, fake = randn(300, 4, 61), randn(250, 4, 62) + 0.3
    offset = torch.full((4,), 1e6, dtype=torch.float64)
    assert prdc(real + offset, fake + offset, k=5) == prdc(real, fake, k=5)
    torch.testing.assert_close(
        kth_neighbour_distances(real + offset, 5),
        kth_neighbour_distances(real, 5),
        rtol=1e-8,
        atol=0,
    )


def test_prdc_real_against_itself_is_perfect() -> None:
    # every point lies in its own ball (precision, recall, coverage = 1); each ball holds its centre
    # and k - 1 other points strictly inside, so density = (1/k) * k = 1 exactly (no ties)
    real = randn(500, 10, 53)
    res = prdc(real, real, k=5)
    assert res["precision"] == res["recall"] == res["coverage"] == 1.0
    assert res["density"] == pytest.approx(1.0, abs=1e-12)
    assert prdc(real, real.clone(), k=3) == {
        "precision": 1.0,
        "recall": 1.0,
        "density": pytest.approx(1.0, abs=1e-12),
        "coverage": 1.0,
    }


def test_prdc_far_away_noise_scores_zero() -> None:
    real, fake = randn(300, 8, 54), randn(200, 8, 55) + 100.0
    assert prdc(real, fake, k=5) == {
        "precision": 0.0,
        "recall": 0.0,
        "density": 0.0,
        "coverage": 0.0,
    }


def test_prdc_dropping_half_the_modes_halves_recall_and_coverage() -> None:
    # 10 unit Gaussians on a circle of radius 30 (neighbours ~18 sd apart); a model that only
    # produces 5 of them keeps its precision (~1) but covers half of the real data
    angles = torch.arange(10, dtype=torch.float64) * 2 * math.pi / 10
    centres = 30.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    real = centres.repeat_interleave(100, dim=0) + randn(1000, 2, 56)
    half = centres[:5].repeat_interleave(200, dim=0) + randn(1000, 2, 57)
    full = centres.repeat_interleave(100, dim=0) + randn(1000, 2, 58)
    dropped, kept = prdc(real, half, k=5), prdc(real, full, k=5)
    assert dropped["precision"] >= 0.95 and kept["precision"] >= 0.95
    assert 0.45 <= dropped["recall"] <= 0.5 and 0.45 <= dropped["coverage"] <= 0.5
    assert kept["recall"] >= 0.95 and kept["coverage"] >= 0.95
    assert 0.85 <= dropped["density"] <= 1.15  # the generated points sit where real ones are dense


# ---------------------------------------------------------------------------------------------
# Classifier (Inception) score
# ---------------------------------------------------------------------------------------------


def test_classifier_score_one_hot_balanced_is_number_of_classes() -> None:
    # confident (one-hot) and balanced within each split: KL = log K for every row -> score K
    k, splits = 7, 5
    labels = torch.arange(k * splits * 3) % k
    probs = torch.nn.functional.one_hot(labels, k).double()
    res = classifier_score(probs, splits=splits)
    assert isinstance(res, MeanStd)
    assert res.mean == pytest.approx(k, rel=1e-13)
    assert res.std == pytest.approx(0.0, abs=1e-12)


def test_classifier_score_constant_predictions_is_one() -> None:
    probs = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64).repeat(40, 1)
    assert classifier_score(probs, splits=4) == (pytest.approx(1.0, rel=1e-14), pytest.approx(0.0))
    uniform = np.full((50, 10), 0.1)
    assert classifier_score(uniform, splits=10).mean == pytest.approx(1.0, rel=1e-14)


def test_classifier_score_std_is_sample_std_over_splits() -> None:
    # split 1: balanced one-hot over 2 classes (score 2); split 2: over 4 classes (score 4)
    first = torch.nn.functional.one_hot(torch.arange(8) % 2, 4)
    second = torch.nn.functional.one_hot(torch.arange(8) % 4, 4)
    res = classifier_score(torch.cat([first, second]).double(), splits=2)
    assert res.mean == pytest.approx(3.0, rel=1e-13)
    assert res.std == pytest.approx(math.sqrt(2.0), rel=1e-13)  # not 1 (population std)
    assert math.isnan(classifier_score(first.double(), splits=1).std)


def test_classifier_score_matches_direct_formula() -> None:
    # the formula of Salimans et al. written out with numpy, splits at i n // splits (103 rows)
    rng = np.random.default_rng(60)
    p = rng.dirichlet(np.full(6, 0.3), size=103)
    scores = []
    for i in range(4):
        part = p[i * 103 // 4 : (i + 1) * 103 // 4]
        py = part.mean(axis=0)
        kl = np.mean(
            [sum(r[c] * math.log(r[c] / py[c]) for c in range(6) if r[c] > 0) for r in part]
        )
        scores.append(math.exp(kl))
    res = classifier_score(p, splits=4)
    assert res.mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert res.std == pytest.approx(np.std(scores, ddof=1), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

PAIR_METRICS = {
    "frechet_distance": lambda x, y: frechet_distance(x, y),
    "kid": lambda x, y: kid(x, y, subsets=2, subset_size=5, generator=gen(0)),
    "prdc": lambda x, y: prdc(x, y, k=2),
}
NAMES = {"frechet_distance": ("x", "y"), "kid": ("x", "y"), "prdc": ("real", "fake")}


@pytest.mark.parametrize("metric", list(PAIR_METRICS))
def test_pair_metrics_reject_bad_sets_naming_them(metric: str) -> None:
    f, (a, b) = PAIR_METRICS[metric], NAMES[metric]
    x, y = randn(20, 3, 0), randn(20, 3, 1)
    bad = y.clone()
    bad[4, 1] = float("nan")
    with pytest.raises(DataError, match=f"{b}: 1 of 20 points contain NaN or inf"):
        f(x, bad)
    inf = x.clone()
    inf[0, 0] = float("inf")
    with pytest.raises(DataError, match=f"{a}: 1 of 20 points contain NaN or inf"):
        f(inf, y)
    with pytest.raises(DataError, match=f"{a}: expected a 2-D array"):
        f(x[:, 0], y)
    with pytest.raises(DataError, match=f"{b}: expected a 2-D array"):
        f(x, y[None])
    with pytest.raises(DataError, match=f"{a} and {b} must have the same dimension d"):
        f(x, randn(20, 4, 2))
    with pytest.raises(DataError, match=f"{b}: this estimator needs at least"):
        f(x, y[:1])


def test_prdc_needs_k_plus_one_points_per_set() -> None:
    with pytest.raises(DataError, match="fake: this estimator needs at least 6 points, got 5"):
        prdc(randn(20, 2, 0), randn(5, 2, 1), k=5)
    with pytest.raises(DataError, match="x: k-th neighbour distances need at least k \\+ 1 = 4"):
        kth_neighbour_distances(randn(3, 2, 0), 3)


def test_bad_parameters_raise_value_error() -> None:
    x, y = randn(20, 3, 0), randn(20, 3, 1)
    for kwargs in (
        {"subsets": 0},
        {"subset_size": 1},
        {"degree": 0},
        {"gamma": -1.0},
        {"coef0": -1},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            kid(x, y, **kwargs)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        prdc(x, y, k=0)
    with pytest.raises(ValueError, match="splits must be an integer >= 1"):
        classifier_score(np.full((4, 2), 0.5), splits=0)


def test_classifier_score_rejects_bad_probabilities() -> None:
    good = np.full((10, 4), 0.25)
    with pytest.raises(DataError, match="probs: 1 of 10 rows have negative entries"):
        classifier_score(np.vstack([good[:9], [[-0.1, 0.5, 0.3, 0.3]]]), splits=2)
    with pytest.raises(DataError, match="probs: 10 of 10 rows do not sum to 1.*not logits"):
        classifier_score(good * 3.0, splits=2)
    with pytest.raises(DataError, match="probs: 11 splits need at least 11 rows, got 10"):
        classifier_score(good, splits=11)
    nan = good.copy()
    nan[2, 2] = np.nan
    with pytest.raises(DataError, match="probs: 1 of 10 points contain NaN or inf"):
        classifier_score(nan, splits=2)
    with pytest.raises(DataError, match="probs: expected a 2-D array"):
        classifier_score(good[0], splits=1)
