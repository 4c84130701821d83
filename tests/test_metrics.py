"""Point metrics checked against independently derived values (float64 throughout)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment, linprog
from scipy.spatial.distance import pdist
from scipy.stats import norm

from genlab.errors import DataError, UnknownNameError
from genlab.eval import metrics as M
from genlab.eval.metrics import (
    Metric,
    OptimalTransportError,
    energy,
    evaluate_points,
    median_bandwidth,
    mmd,
    points,
    sliced_w2,
    w2,
)
from genlab.eval.metrics import base as metrics_base
from genlab.registry import METRICS

NAMES = ("w2", "sliced_w2", "mmd", "energy")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=gen(seed), dtype=torch.float64)


def call(name: str, x, y) -> float:
    """Each metric's function with a fixed seed where it is randomised."""
    return M.sliced_w2(x, y, generator=gen(0)) if name == "sliced_w2" else getattr(M, name)(x, y)


# ---------------------------------------------------------------------------------------------
# Exact W2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5])
def test_w2_of_translation_is_shift_norm(d: int) -> None:
    # W2^2(mu, mu + c) = |c|^2 (the identity coupling is optimal for a pure translation)
    x = randn(60, d, 0)
    c = torch.linspace(-1.0, 2.0, d, dtype=torch.float64)
    assert w2(x, x + c) == pytest.approx(float(c.norm()), rel=1e-10)


def test_w2_between_dirac_sets_of_different_sizes() -> None:
    a, b = np.array([1.0, -2.0, 0.5]), np.array([4.0, 2.0, 0.5])
    x, y = np.tile(a, (7, 1)), np.tile(b, (4, 1))
    assert w2(x, y) == pytest.approx(float(np.linalg.norm(a - b)), rel=1e-12)


def test_w2_of_set_with_itself_is_zero() -> None:
    x = randn(200, 3, 1)
    assert w2(x, x) == 0.0
    assert w2(x, x[torch.randperm(200, generator=gen(2))]) == 0.0


def test_w2_1d_equals_sorted_matching() -> None:
    x, y = randn(300, 1, 3), 2.0 * randn(300, 1, 4) + 0.5
    expected = math.sqrt(float((x.sort(0).values - y.sort(0).values).square().mean()))
    assert w2(x, y) == pytest.approx(expected, rel=1e-10)


def test_w2_1d_unequal_sizes_by_hand() -> None:
    # quantile functions of {0, 1, 2} and {0, 3} differ by 0, 1, 3, 1 on [0,1/3), [1/3,1/2),
    # [1/2,2/3), [2/3,1): W2^2 = 1/6 * 1 + 1/6 * 9 ... = 0 + 1/6 + 4/6 + 1/3 = 7/6
    x, y = np.array([[0.0], [1.0], [2.0]]), np.array([[0.0], [3.0]])
    assert w2(x, y) == pytest.approx(math.sqrt(7 / 6), rel=1e-12)
    assert sliced_w2(x, y, n_projections=3) == pytest.approx(math.sqrt(7 / 6), rel=1e-12)


def test_w2_equals_assignment_problem() -> None:
    # equal sizes, uniform weights: an optimal plan is a permutation (Birkhoff) -> Hungarian method
    x, y = randn(150, 4, 5), randn(150, 4, 6) + 0.3
    cost = torch.cdist(x, y).square().numpy()
    rows, cols = linear_sum_assignment(cost)
    assert w2(x, y) == pytest.approx(math.sqrt(cost[rows, cols].mean()), rel=1e-9)


def test_w2_unequal_sizes_equals_linear_program() -> None:
    n, m = 7, 5
    x, y = randn(n, 2, 7).numpy(), randn(m, 2, 8).numpy()
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    # equality constraints: row sums 1/n, column sums 1/m over the flattened plan P (n*m,)
    a_eq = np.vstack([np.kron(np.eye(n), np.ones(m)), np.kron(np.ones(n), np.eye(m))])
    b_eq = np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)])
    lp = linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert lp.success
    assert w2(x, y) == pytest.approx(math.sqrt(lp.fun), rel=1e-7)


def test_w2_raises_when_solver_stops_early() -> None:
    with pytest.raises(OptimalTransportError, match="did not converge"):
        w2(randn(300, 2, 9), randn(300, 2, 10), num_itermax=10)


def test_w2_refuses_huge_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(points, "W2_MAX_PAIRS", 100)
    with pytest.raises(DataError, match="sliced_w2"):
        w2(randn(11, 2, 0), randn(10, 2, 1))


# ---------------------------------------------------------------------------------------------
# Sliced W2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m", "d", "seed"), [(80, 80, 2, 0), (90, 61, 3, 1), (40, 55, 8, 2)])
def test_sliced_w2_at_most_w2(n: int, m: int, d: int, seed: int) -> None:
    # each projection of an optimal coupling couples the projections at no greater cost
    x, y = randn(n, d, seed), 1.5 * randn(m, d, seed + 100) + 0.2
    assert sliced_w2(x, y, n_projections=64, generator=gen(seed)) <= w2(x, y) + 1e-12


@pytest.mark.parametrize(("n", "m"), [(100, 100), (100, 37)])
def test_sliced_w2_in_1d_equals_w2(n: int, m: int) -> None:
    x, y = randn(n, 1, 11), 0.5 * randn(m, 1, 12) - 1.0
    assert sliced_w2(x, y, n_projections=5, generator=gen(0)) == pytest.approx(w2(x, y), rel=1e-10)


def test_sliced_w2_unequal_sizes_equals_replicated_sorting() -> None:
    # repeating every x point m times and every y point n times gives equal-size sets with the same
    # laws, where 1-D W2 is plain sorted matching
    x, y = randn(13, 1, 13), randn(8, 1, 14) + 0.7
    xr, yr = x.repeat_interleave(8, 0), y.repeat_interleave(13, 0)
    expected = math.sqrt(float((xr.sort(0).values - yr.sort(0).values).square().mean()))
    assert sliced_w2(x, y, n_projections=2) == pytest.approx(expected, rel=1e-12)


def test_sliced_w2_of_translation() -> None:
    # y = x + c: every slice is a 1-D translation by <c, theta>, so SW2^2 = mean <c, theta>^2,
    # whose expectation over the sphere is |c|^2 / d
    x = randn(50, 3, 15)
    c = torch.tensor([1.0, -2.0, 2.0], dtype=torch.float64)
    value = sliced_w2(x, x + c, n_projections=4096, generator=gen(16))
    assert value == pytest.approx(3.0 / math.sqrt(3), rel=0.03)
    assert sliced_w2(x[:, :1], x[:, :1] + 2.5) == pytest.approx(2.5, rel=1e-12)
    assert sliced_w2(x, x) == 0.0


def test_sliced_w2_is_reproducible_with_generator() -> None:
    x, y = randn(100, 4, 17), randn(120, 4, 18)
    a = sliced_w2(x, y, n_projections=16, generator=gen(3))
    assert sliced_w2(x, y, n_projections=16, generator=gen(3)) == a
    assert sliced_w2(x, y, n_projections=16, generator=gen(4)) != a


# ---------------------------------------------------------------------------------------------
# MMD
# ---------------------------------------------------------------------------------------------


def test_mmd_unbiased_under_the_null() -> None:
    # equal laws: the U-statistic has mean exactly 0; its average over 30 draws is within 4 SE
    vals = np.array(
        [mmd(randn(150, 2, 2 * s), randn(150, 2, 2 * s + 1), bandwidth=1.0) for s in range(30)]
    )
    se = vals.std(ddof=1) / math.sqrt(len(vals))
    assert abs(vals.mean()) < 4 * se
    shifted = np.array(
        [mmd(randn(150, 2, 2 * s), randn(150, 2, 2 * s + 1) + 1.0, bandwidth=1.0) for s in range(5)]
    )
    assert shifted.min() > vals.mean() + 20 * vals.std(ddof=1)


def test_mmd_matches_gaussian_closed_form() -> None:
    # X ~ N(0, s^2 I_d), Y ~ N(mu, s^2 I_d), k = exp(-|a-b|^2 / (2 sig^2)). For Z ~ N(m, t^2 I_d):
    # E k = (sig^2 / (sig^2 + t^2))^(d/2) exp(-|m|^2 / (2 (sig^2 + t^2))); differences have t^2 = 2 s^2,
    # so MMD^2 = 2 (sig^2 / (sig^2 + 2 s^2))^(d/2) (1 - exp(-|mu|^2 / (2 (sig^2 + 2 s^2)))).
    s, sig, d = 0.8, 1.5, 2
    mu = torch.tensor([1.0, 0.5], dtype=torch.float64)
    v = sig**2 + 2 * s**2
    exact = 2 * (sig**2 / v) ** (d / 2) * (1 - math.exp(-float(mu.square().sum()) / (2 * v)))
    x, y = s * randn(5000, d, 20), s * randn(5000, d, 21) + mu
    est = mmd(x, y, bandwidth=sig)
    assert est == pytest.approx(exact, abs=0.012)  # ~4 standard deviations at n = 5000
    biased = mmd(x, y, bandwidth=sig, unbiased=False)
    assert biased > est and biased - est < 5.0 / 5000


def test_mmd_median_heuristic() -> None:
    x, y = randn(40, 3, 22), randn(30, 3, 23) + 1.0
    dists = np.sort(pdist(torch.cat([x, y]).numpy()))
    lower_median = dists[(len(dists) - 1) // 2]
    assert median_bandwidth(x, y) == pytest.approx(lower_median, rel=1e-10)
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=float(lower_median)), rel=1e-10)


def test_mmd_and_energy_blocks_do_not_change_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = randn(97, 3, 24), randn(61, 3, 25) + 0.5
    whole = (mmd(x, y), energy(x, y))
    monkeypatch.setattr(metrics_base, "_BLOCK_ENTRIES", 50)  # one row per block
    assert mmd(x, y) == pytest.approx(whole[0], rel=1e-10, abs=1e-14)
    assert energy(x, y) == pytest.approx(whole[1], rel=1e-10)


# ---------------------------------------------------------------------------------------------
# Energy distance
# ---------------------------------------------------------------------------------------------


def test_energy_matches_gaussian_closed_form() -> None:
    # 1-D, X ~ N(0,1), Y ~ N(mu,1): X - Y ~ N(-mu, 2), X - X' ~ N(0, 2), and for Z ~ N(m, t^2),
    # E|Z| = t sqrt(2/pi) exp(-m^2 / (2 t^2)) + m (1 - 2 Phi(-m/t)).
    def mean_abs(m: float, t: float) -> float:
        return t * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * t**2)) + m * (
            1 - 2 * norm.cdf(-m / t)
        )

    mu = 1.0
    exact = 2 * mean_abs(mu, math.sqrt(2)) - 2 * mean_abs(0.0, math.sqrt(2))
    est = energy(randn(10_000, 1, 26), randn(10_000, 1, 27) + mu)
    assert est == pytest.approx(exact, abs=0.05)  # ~4 standard deviations at n = 10,000


def test_energy_of_equal_laws_is_near_zero_and_of_shift_positive() -> None:
    x, y = randn(2000, 2, 28), randn(2000, 2, 29)
    assert abs(energy(x, y)) < 0.01
    assert energy(x, y + 0.5) > 0.1


# ---------------------------------------------------------------------------------------------
# Properties of every metric
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_symmetric(name: str) -> None:
    x, y = randn(70, 3, 30), 1.3 * randn(50, 3, 31) + 0.4
    assert call(name, x, y) == pytest.approx(call(name, y, x), rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_invariant_to_permutation(name: str) -> None:
    x, y = randn(70, 3, 32), randn(50, 3, 33) + 0.4
    px, py = torch.randperm(70, generator=gen(0)), torch.randperm(50, generator=gen(1))
    assert call(name, x[px], y[py]) == pytest.approx(call(name, x, y), rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_accepts_numpy_and_float32(name: str) -> None:
    x, y = randn(40, 2, 34).float(), randn(30, 2, 35).float()
    ref = call(name, x.double(), y.double())
    assert call(name, x.numpy(), y.numpy()) == pytest.approx(ref, rel=1e-9)
    assert isinstance(call(name, x, y), float)


# ---------------------------------------------------------------------------------------------
# Input checks, registry, evaluate_points
# ---------------------------------------------------------------------------------------------

GOOD = np.zeros((5, 2)) + np.arange(5)[:, None]
BAD_INPUTS = {
    "1-D": (np.arange(5.0), "2-D"),
    "3-D": (np.zeros((2, 5, 2)), "2-D"),
    "empty": (np.zeros((0, 2)), "empty"),
    "no columns": (np.zeros((5, 0)), "empty"),
    "nan": (np.array([[0.0, 1.0], [np.nan, 2.0]]), "NaN or inf"),
    "inf": (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), "NaN or inf"),
    "other d": (np.zeros((5, 3)), "same dimension"),
    "list": ([[0.0, 1.0]], "torch.Tensor or numpy.ndarray"),
    "strings": (np.array([["a", "b"]]), "numeric"),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_data_error(name: str, case: str) -> None:
    bad, message = BAD_INPUTS[case]
    with pytest.raises(DataError, match=message):
        call(name, GOOD, bad)


@pytest.mark.parametrize("name", ["mmd", "energy"])
def test_unbiased_estimators_need_two_points(name: str) -> None:
    with pytest.raises(DataError, match="at least 2"):
        call(name, GOOD[:1], GOOD)
    if name == "mmd":
        assert mmd(GOOD[:1], GOOD, unbiased=False) > 0


def test_registry_records() -> None:
    for name in NAMES:
        rec = METRICS.get(name)
        assert isinstance(rec, Metric) and rec.name == name and rec.lower_is_better
        assert rec.units and rec.help
        assert name in rec.label and "lower is better" in rec.label
    assert METRICS.get("w2").units == "data units"
    with pytest.raises(UnknownNameError, match="did you mean 'w2'"):
        METRICS.get("w3")


def test_evaluate_points() -> None:
    x, y = randn(200, 2, 36), randn(150, 2, 37) + 0.25
    out = evaluate_points(x, y, generator=gen(5))
    assert list(out) == list(NAMES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert out["w2"] == pytest.approx(w2(x, y), rel=1e-12)
    assert out["sliced_w2"] == sliced_w2(x, y, generator=gen(5))
    assert out["sliced_w2"] <= out["w2"]
    assert evaluate_points(x, y, metrics=["energy"]) == {"energy": energy(x, y)}
    with pytest.raises(UnknownNameError, match="did you mean"):
        evaluate_points(x, y, metrics=["w2", "mdm"])
    with pytest.raises(DataError, match="samples and reference must have the same dimension"):
        evaluate_points(x, y[:, :1])
    with pytest.raises(DataError, match="reference: 1 of 150 points contain NaN"):
        evaluate_points(x, torch.where(torch.arange(150)[:, None] == 3, float("nan"), y))
