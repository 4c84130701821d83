"""The mode-collapse protocol of VEEGAN and PacGAN (modes covered, high-quality fraction, reverse KL)
on the 2D-ring and 2D-grid: checked against closed forms (the chi-square law of the distance to a
mode, log(K/m) for m of K modes), a brute-force loop and the evaluation every family reports
through. Float64 throughout; every random set is seeded."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2, entropy

from genlab.config import EvalConfig
from genlab.data import TOY, load
from genlab.errors import DataError
from genlab.eval import metrics as M
from genlab.eval.evaluate import evaluate
from genlab.eval.metrics import base as metrics_base
from genlab.eval.metrics import check_metrics, get_metric, metrics_for
from genlab.eval.metrics.modes import mode_statistics, nearest_modes
from genlab.models.base import GenerativeModel, ModelSpec, SampleResult
from genlab.registry import DATASETS

MODE_METRICS = ["modes_covered", "high_quality", "reverse_kl"]
P_HQ = 1 - math.exp(-4.5)  # P(|z| < 3) for a 2-D standard Gaussian: |z|^2 ~ chi2_2 = Exp(1/2)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draws(name: str, n: int, seed: int, keep: list[int] | None = None) -> torch.Tensor:
    """``n`` draws of the law ``name``, or of its sub-mixture on the modes ``keep`` only."""
    centers, std = TOY[name]().modes()
    if keep is not None:
        centers = centers[keep]
    k = torch.randint(len(centers), (n,), generator=gen(seed))
    return centers[k] + std * torch.randn(n, 2, generator=gen(seed + 1), dtype=torch.float64)


def kl_bound(n_hq: int, modes: int) -> float:
    """Largest reverse KL an exact multinomial sample of ``n_hq`` points over ``modes`` equally
    likely modes shows, but for a 1e-6 chance: ``2 n KL`` (the G-statistic) is ~ chi2_{modes-1}."""
    return chi2.ppf(1 - 1e-6, modes - 1) / (2 * n_hq)


def binomial_tol(p: float, n: int) -> float:
    return 5 * math.sqrt(p * (1 - p) / n)


# --- the laws -------------------------------------------------------------------------------------
def test_ring_and_grid_load_with_the_protocols_parameters():
    ring, grid = load("ring", n=3000), load("grid", n=3000)
    assert ring.kind == grid.kind == "points" and ring.shape == grid.shape == (2,)
    assert len(ring.train) + len(ring.val) == 3000
    c, s = ring.true.modes()
    a = 2 * np.pi * np.arange(8) / 8  # PacGAN's 2DRing config: (cos, sin)(2 pi id / 8), std 0.01
    np.testing.assert_allclose(c.numpy(), np.stack([np.cos(a), np.sin(a)], 1), atol=1e-15)
    assert s == 0.01
    c, s = grid.true.modes()  # PacGAN's 2DGrid config: product(range(-4, 5, 2)) twice, std 0.05
    assert c.tolist() == [list(p) for p in itertools.product(range(-4, 5, 2), repeat=2)]
    assert s == 0.05
    for ds in (ring, grid):  # the data scatter about the modes with that std
        c, s = ds.true.modes()
        _, dist = nearest_modes(ds.train.double(), c)
        assert (dist.square().mean() / 2).sqrt().item() == pytest.approx(s, rel=0.05)
    assert "PacGAN" in DATASETS.entry("ring").help and "PacGAN" in DATASETS.entry("grid").help


def test_older_mixtures_keep_their_parameters_and_other_laws_have_no_modes():
    c, s = TOY["8gaussians"]().modes()
    assert c.norm(dim=1).tolist() == pytest.approx([2 * math.sqrt(2)] * 8)
    assert s == pytest.approx(0.5 / math.sqrt(2))
    c, s = TOY["25gaussians"]().modes()
    assert c.abs().max().item() == 2.0 and s == 0.05
    assert load("ring", n=10, std=0.02).true.modes()[1] == 0.02  # an option reaches the modes
    for name in ("moons", "checkerboard", "pinwheel"):
        assert TOY[name]().modes() is None


# --- the statistics against closed forms ----------------------------------------------------------
@pytest.mark.parametrize("name", ["ring", "grid"])
@pytest.mark.parametrize("radius", [1.0, 2.0, 3.0])
def test_exact_draws_cover_every_mode_at_the_chi_square_rate(name, radius):
    n = 2500  # the size of the published tables
    centers, std = TOY[name]().modes()
    st = mode_statistics(draws(name, n, 0), centers, std, radius=radius)
    p = 1 - math.exp(-(radius**2) / 2)  # P(|z| < radius), |z|^2 ~ chi2_2
    assert st.modes_covered == len(centers)
    assert abs(st.high_quality - p) < binomial_tol(p, n)
    assert 0 <= st.reverse_kl < kl_bound(int(st.counts.sum()), len(centers))
    assert st.n == n and int(st.counts.sum()) == round(st.high_quality * n)


@pytest.mark.parametrize(("name", "keep"), [("ring", [0, 2, 4, 6]), ("grid", [0, 1, 2, 3, 4])])
def test_a_law_on_m_of_k_modes_scores_m_modes_and_reverse_kl_log_k_over_m(name, keep):
    centers, std = TOY[name]().modes()
    st = mode_statistics(draws(name, 2500, 3, keep), centers, std)
    k, m = len(centers), len(keep)
    assert st.modes_covered == m and (st.counts[keep] > 0).all()
    assert abs(st.high_quality - P_HQ) < binomial_tol(P_HQ, 2500)
    # KL(q || U_K) = log(K / m) + KL(q || U_m) for q on m modes; the second term is sampling noise
    excess = st.reverse_kl - math.log(k / m)
    assert 0 <= excess < kl_bound(int(st.counts.sum()), m)


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_samples_far_from_every_mode_score_zero_and_the_worst_reverse_kl(name):
    centers, std = TOY[name]().modes()
    if name == "ring":  # between the modes on the circle (39 stds away), the centre, radius 0.5
        a = torch.arange(8, dtype=torch.float64) * math.pi / 4 + math.pi / 8
        far = torch.cat([torch.stack([a.cos(), a.sin()], 1), torch.zeros(1, 2), 0.5 * centers])
    else:  # the odd points of the lattice: sqrt(2) (28 stds) from the nearest mode
        odd = torch.tensor([-5.0, -3.0, -1.0, 1.0, 3.0, 5.0], dtype=torch.float64)
        far = torch.cartesian_prod(odd, odd)
    st = mode_statistics(far, centers, std)
    assert (st.modes_covered, st.high_quality) == (0, 0.0)
    assert st.reverse_kl == pytest.approx(math.log(len(centers)), rel=1e-15)  # not NaN, not inf
    one = mode_statistics(torch.cat([far, centers[3:4]]), centers, std)  # one sample: a point mass
    assert one.modes_covered == 1 and one.reverse_kl == pytest.approx(math.log(len(centers)))


def test_reverse_kl_of_a_known_histogram_skips_uncovered_modes():
    centers, std = TOY["grid"]().modes()
    hist = torch.zeros(25, dtype=torch.int64)
    hist[[0, 7, 12, 24]] = torch.tensor([5, 3, 2, 1])
    x = torch.cat([centers.repeat_interleave(hist, dim=0) + 2.9 * std, torch.full((4, 2), 1.0)])
    st = mode_statistics(x, centers, std)  # 2.9 std along a diagonal: 4.1 std away, not good
    assert st.modes_covered == 0
    x = torch.cat([centers.repeat_interleave(hist, dim=0) + 2.1 * std, torch.full((4, 2), 1.0)])
    st = mode_statistics(x, centers, std)  # 2.97 std away: good
    assert torch.equal(st.counts, hist) and st.modes_covered == 4
    assert st.high_quality == pytest.approx(11 / 15)
    uniform = np.full(25, 1 / 25)
    assert st.reverse_kl == pytest.approx(entropy(hist.numpy(), uniform), rel=1e-13)


def test_a_brute_force_loop_agrees_on_random_data_in_blocks(monkeypatch):
    """PacGAN's ``MetricLogger`` loop (std-scaled distance to every mode, strict ``< 3``) on a mix of
    near, middling and far points; row blocks of 7 points exercise the blockwise path."""
    centers, std = TOY["grid"]().modes()
    g = gen(11)
    near = centers[torch.randint(25, (300,), generator=g)]
    near = near + 2 * std * torch.randn(300, 2, generator=g, dtype=torch.float64)
    x = torch.cat([near, 10 * torch.rand(100, 2, generator=g, dtype=torch.float64) - 5])
    counts = [0] * 25
    for point in x.tolist():
        d = [math.dist(point, c) / std for c in centers.tolist()]
        j = min(range(25), key=d.__getitem__)
        counts[j] += d[j] < 3
    hq = sum(counts)
    q = [c / hq for c in counts]
    kl = sum(p * math.log(p * 25) for p in q if p > 0)
    monkeypatch.setattr(metrics_base, "_BLOCK_ENTRIES", 7 * 25)
    st = mode_statistics(x, centers, std)
    assert 0.3 < hq / len(x) < 0.9  # the data do test the threshold
    assert st.counts.tolist() == counts
    assert st.modes_covered == sum(c > 0 for c in counts) and st.high_quality == hq / len(x)
    assert st.reverse_kl == pytest.approx(kl, rel=1e-12)
    assert mode_statistics(x.float().numpy(), centers.float(), np.float32(std)).counts.equal(
        mode_statistics(x.float().double(), centers, std).counts
    )  # float32 and numpy inputs are computed in float64


def test_bad_inputs_are_refused():
    centers, std = TOY["ring"]().modes()
    x = draws("ring", 10, 0)
    with pytest.raises(DataError, match="samples: 1 of 10 points contain NaN"):
        mode_statistics(torch.where(torch.arange(10)[:, None] == 2, math.nan, x), centers, std)
    with pytest.raises(DataError, match="same dimension"):
        mode_statistics(x[:, :1], centers, std)
    with pytest.raises(DataError, match="expected a 2-D array"):
        mode_statistics(x[:, 0], centers, std)
    with pytest.raises(DataError, match="empty point set"):
        mode_statistics(x[:0], centers, std)
    for bad in (0.0, -1.0, math.inf, math.nan, "0.1"):
        with pytest.raises(DataError, match="std must be a positive finite number"):
            mode_statistics(x, centers, bad)
    with pytest.raises(ValueError, match="radius"):
        mode_statistics(x, centers, std, radius=0.0)


# --- the registry and the evaluation --------------------------------------------------------------
def test_the_metrics_are_registered_for_points_with_known_modes():
    assert metrics_for("points", ["modes"]) == metrics_for("points") + MODE_METRICS
    assert not set(MODE_METRICS) & set(metrics_for("points"))
    assert not set(MODE_METRICS) & set(metrics_for("images", M.NEEDS))
    units = {"modes_covered": "modes", "high_quality": "fraction", "reverse_kl": "nats"}
    for name in MODE_METRICS:
        rec = get_metric(name)
        assert rec.needs == ("modes",) and rec.units == units[name] and rec.help
        assert rec.better == ("lower" if name == "reverse_kl" else "higher")
    with pytest.raises(DataError, match="needs a Gaussian-mixture law with known modes"):
        check_metrics(["reverse_kl"], "points", [])
    with pytest.raises(DataError, match="applies to points, not to images"):
        check_metrics(["modes_covered"], "images", M.NEEDS)


class Replay(GenerativeModel):
    """A 'model' that returns given points (fresh draws of the law, or of part of it)."""

    family = "replay"

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__(None, ModelSpec("replay", (2,), None))
        self.x = x
        self.w = torch.nn.Parameter(torch.zeros(()))

    def _sample(self, n, *, labels, generator):
        return SampleResult(self.x[torch.randint(0, len(self.x), (n,), generator=generator)], 0)


def _cfg(**kw) -> EvalConfig:
    return dataclasses.replace(EvalConfig(n=1000, seeds=2, nll=False), **kw)


def test_evaluation_reports_the_protocol_with_floors_on_a_gaussian_mixture():
    data = load("grid", n=2000)
    report = evaluate(Replay(draws("grid", 20_000, 5).float()), data, _cfg())
    assert list(report["metrics"]) == metrics_for("points", ["modes"])
    m = report["metrics"]
    for key in ("value", "floor"):  # the model replays the law; the floor is fresh draws of it
        assert m["modes_covered"][key] == 25
        assert abs(m["high_quality"][key] - P_HQ) < binomial_tol(P_HQ, 2000)  # 2 seeds x 1000
        assert 0 <= m["reverse_kl"][key] < kl_bound(900, 25)
    assert (m["modes_covered"]["better"], m["reverse_kl"]["better"]) == ("higher", "lower")
    assert m["reverse_kl"]["unit"] == "nats" and len(m["high_quality"]["values"]) == 2
    # a model collapsed on one row of the grid: 5 modes against a floor of 25, KL ~ log 5
    collapsed = Replay(draws("grid", 20_000, 7, keep=[0, 1, 2, 3, 4]))
    m = evaluate(collapsed, data, _cfg(metrics=MODE_METRICS))["metrics"]
    assert (m["modes_covered"]["value"], m["modes_covered"]["floor"]) == (5, 25)
    assert 0 <= m["reverse_kl"]["value"] - math.log(5) < kl_bound(900, 5)


def test_evaluation_on_a_law_without_known_modes_leaves_them_out():
    data = load("moons", n=2000)
    report = evaluate(Replay(data.true.sample(2000, gen(1))), data, _cfg(n=300, seeds=1))
    assert list(report["metrics"]) == metrics_for("points")
    with pytest.raises(DataError, match="'reverse_kl' needs a Gaussian-mixture law"):
        evaluate(Replay(data.train), data, _cfg(metrics=["reverse_kl"]))
