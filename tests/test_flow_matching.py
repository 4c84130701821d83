"""Flow matching checked against the closed-form velocity of Gaussian data."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from genlab.data.base import Batch
from genlab.models.diffusion.model import FlowMatching, FlowMatchingConfig

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
S = 0.5  # data ~ N(MU, S² I)


class GaussianVelocity(nn.Module):
    """The exact flow-matching velocity E[ε - x0 | x_t = x] for x0 ~ N(μ, s²I) on the linear path.

    With x_t = (1-t) x0 + t ε: Var(x_t) = (1-t)² s² + t², Cov(x_t, ε) = t, Cov(x_t, x0) = (1-t) s²,
    so E[ε - x0 | x] = (t - (1-t) s²) (x - (1-t) μ) / Var(x_t) - μ.
    """

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, t, y=None):
        t = t.to(x.dtype)[:, None]
        var = (1 - t) ** 2 * S**2 + t**2
        return (t - (1 - t) * S**2) * (x - (1 - t) * MU) / var - MU + 0 * self.dummy


def exact_model(**kw) -> FlowMatching:
    model = FlowMatching.from_config(FlowMatchingConfig(hidden=8, depth=1, **kw), (2,)).double()
    model.net = GaussianVelocity()
    return model


@pytest.mark.parametrize(
    "sampler,steps,tol", [("euler", 200, 0.03), ("heun", 20, 0.02), ("dopri5", 2, 0.02)]
)
def test_samplers_reach_the_gaussian_target(sampler, steps, tol):
    model = exact_model()
    g = torch.Generator().manual_seed(0)
    out = model.sample(20_000, sampler=sampler, steps=steps, generator=g)
    x = out.x
    assert out.nfe > 0
    assert torch.allclose(x.mean(0), MU, atol=tol)
    assert torch.allclose(x.std(0), torch.full((2,), S, dtype=torch.float64), atol=tol)


def test_euler_error_shrinks_with_steps():
    # deterministic check: the same noise pushed through the exact flow; the ODE maps ε to μ + s ε
    model = exact_model()
    noise = torch.randn(512, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = MU + S * noise
    errs = [
        (model.sample(512, sampler="euler", steps=k, noise=noise).x - target).abs().max().item()
        for k in (5, 20, 80)
    ]
    assert errs[0] > errs[1] > errs[2]
    assert errs[1] / errs[2] == pytest.approx(4.0, rel=0.25)  # first order: error ∝ 1 / steps
    mid = (model.sample(512, sampler="heun", steps=20, noise=noise).x - target).abs().max()
    assert mid < errs[1]  # second order beats first order at the same steps


def test_ode_log_prob_matches_the_analytic_gaussian():
    model = exact_model()
    x = MU + S * torch.randn(
        256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    lp = model.log_prob(x, rtol=1e-7, atol=1e-7)
    analytic = torch.distributions.Normal(MU, S).log_prob(x).sum(-1)
    assert lp.kind == "exact"
    # (the prior N(0, I) at t = 1 - 1e-4 is off by the data mean times 1e-4: ~2e-4 nats)
    assert torch.allclose(lp.value, analytic, atol=1e-3)
    assert lp.bits_per_dim(2) == pytest.approx(lp.nll() / (2 * math.log(2)))


class CorrelatedGaussianVelocity(nn.Module):
    """The exact velocity for x0 ~ N(μ, Σ) with a full Σ: with Var_t = (1-t)² Σ + t² I,
    E[ε - x0 | x_t = x] = (t I - (1-t) Σ) Var_t⁻¹ (x - (1-t) μ) - μ. Its Jacobian is not diagonal,
    so Rademacher probes have a non-zero variance (for a diagonal one they are exact)."""

    SIGMA = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, t, y=None):
        t = t.to(x.dtype)[:, None, None]  # (B, 1, 1)
        eye = torch.eye(2, dtype=x.dtype)
        var = (1 - t) ** 2 * self.SIGMA + t**2 * eye
        a = (t * eye - (1 - t) * self.SIGMA) @ torch.linalg.inv(var)  # (B, 2, 2)
        return (a @ (x - (1 - t[:, 0]) * MU)[..., None])[..., 0] - MU + 0 * self.dummy


def test_hutchinson_estimate_is_unbiased_and_labelled_with_its_standard_error():
    model = exact_model()
    model.net = CorrelatedGaussianVelocity()
    law = torch.distributions.MultivariateNormal(MU, CorrelatedGaussianVelocity.SIGMA)
    torch.manual_seed(0)
    x = law.sample((2000,))
    est = model.log_prob(x, exact_divergence_max_dim=1, generator=torch.Generator().manual_seed(4))
    exact = model.log_prob(x, rtol=1e-7, atol=1e-7)
    assert torch.allclose(exact.value, law.log_prob(x), atol=1e-3)
    assert est.kind == "ode-estimate" and est.stderr is not None
    diff = est.value - exact.value
    se = diff.std() / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se
    # the per-example standard errors are calibrated: |error| / stderr behaves like a |t_3| variable
    z = (diff / est.stderr).abs()
    assert 0.5 < float((z < 1).double().mean()) < 0.8
    with pytest.raises(ValueError, match="probes >= 2"):
        model.log_prob(x[:4], exact_divergence_max_dim=1, probes=1)


def test_round_trip_through_the_ode_recovers_the_noise():
    model = exact_model()
    noise = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    grid = model.ode_sigmas(1)  # from σ_max to σ_min, without the final denoising step
    x0 = model.sample(64, sampler="dopri5", noise=noise, sigmas=grid, rtol=1e-8, atol=1e-8).x
    assert torch.allclose(x0, MU + S * noise, atol=2e-3)  # the exact flow maps ε to μ + s ε
    back = model.encode(x0, sampler="dopri5", steps=1, rtol=1e-8, atol=1e-8).x
    assert torch.allclose(back, noise, atol=1e-5)


def test_loss_is_minimised_by_the_exact_velocity():
    # the conditional FM loss of the exact marginal velocity is below that of a perturbed one
    model = exact_model()
    x0 = MU + S * torch.randn(
        200_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6)
    )
    base = model.loss(Batch(x0), torch.Generator().manual_seed(7))
    shifted = exact_model()
    shifted.net.forward = lambda x, t, y=None: GaussianVelocity()(x, t) + 0.1
    worse = shifted.loss(Batch(x0), torch.Generator().manual_seed(7))
    assert worse > base
    # per coordinate E(Δ + v - u)² - E(v - u)² = Δ² since E[v - u] = 0 for the exact v
    assert float(worse - base) == pytest.approx(0.01, abs=0.002)


def test_sampler_grid_and_trajectory_shapes():
    model = exact_model()
    out = model.sample(10, sampler="euler", steps=7, trajectory=True)
    assert out.trajectory.shape == (8, 10, 2)
    assert out.nfe == 7
    assert torch.equal(out.trajectory[-1], out.x)


def test_ot_coupling_trains_and_pairs_within_the_batch():
    model = FlowMatching.from_config(FlowMatchingConfig(hidden=16, depth=2, coupling="ot"), (2,))
    x = torch.randn(64, 2)
    loss = model.loss(Batch(x), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_ot_coupling_permutes_the_batch_noise_to_the_cheapest_pairing():
    """The noise of an OT-coupled batch is the independent batch's own noise, reordered within the
    batch so that the total squared distance to the data is the least of all n! pairings."""
    import itertools

    cfg = FlowMatchingConfig(hidden=8, depth=1)
    ot = FlowMatching.from_config(dataclasses.replace(cfg, coupling="ot"), (2,))
    independent = FlowMatching.from_config(cfg, (2,))
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1)) * 3
    paired = ot.prepare(Batch(x), torch.Generator().manual_seed(0))
    drawn = independent.prepare(Batch(x), torch.Generator().manual_seed(0))
    assert torch.equal(paired.x, x)  # the data rows keep their order
    rows = {tuple(r.tolist()) for r in drawn.noise}
    assert {tuple(r.tolist()) for r in paired.noise} == rows and len(rows) == 7

    def cost(noise: torch.Tensor) -> float:
        return float(((noise.double() - x.double()) ** 2).sum())

    best = min(cost(drawn.noise[list(p)]) for p in itertools.permutations(range(7)))
    assert cost(paired.noise) == pytest.approx(best, rel=1e-9)
    assert cost(drawn.noise) > best  # the independent pairing is not already the cheapest


def test_time_sampling_logit_normal_is_in_the_unit_interval():
    model = FlowMatching.from_config(FlowMatchingConfig(time_sampling="logit-normal"), (3,))
    t = model.process.sample_t(
        10_000, torch.Generator().manual_seed(0), torch.zeros(1), model.config.time_sampling
    )
    assert t.min() > 0 and t.max() < 1
    assert abs(t.mean() - 0.5) < 0.02
