"""The unified diffusion family against closed forms.

For Gaussian data N(μ, Σ) the optimal denoiser is ``D(x̂; σ) = μ + Σ (Σ + σ² I)⁻¹ (x̂ − μ)``. Each
test below plugs it into the real model class (as an oracle network that returns what each
parameterization's network should return), so it checks the process, the parameterization, the
samplers and the likelihood together, for every combination.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.diffusion import (
    Diffusion,
    DiffusionConfig,
    FlowMatching,
    make_process,
    sigma_schedule,
)
from genlab.models.diffusion import parameterization as P
from genlab.registry import SAMPLERS

MU = torch.tensor([0.6, -0.4], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)
PROCESSES = ["vp-linear", "vp-cosine", "ve", "edm", "linear"]
PARAMS = ["eps", "x0", "v", "score", "velocity", "edm"]
# every registered sampler, by its metadata: a new one joins the oracle tests when it registers
DETERMINISTIC = [e.name for e in SAMPLERS.in_order() if e.meta["ode"]]
STOCHASTIC = [e.name for e in SAMPLERS.in_order() if not e.meta["ode"]]


def gaussian_denoiser(xhat: torch.Tensor, sigma):
    """Exact ``(D, ε̂)`` for N(MU, COV) data; ``sigma`` a float or ``(B, 1)``."""
    sig2 = torch.as_tensor(sigma, dtype=xhat.dtype).reshape(-1, 1, 1) ** 2
    inv = torch.linalg.inv(COV + sig2 * torch.eye(2, dtype=xhat.dtype))  # (B or 1, 2, 2)
    r = torch.einsum("bij,bj->bi", inv.expand(len(xhat), 2, 2), xhat - MU)
    return xhat - sig2[:, 0] * r, torch.as_tensor(sigma, dtype=xhat.dtype).reshape(-1, 1) * r


class OracleNet(nn.Module):
    """Returns, for the model's parameterization, the output whose denoiser is the exact one."""

    def __init__(self, model: Diffusion) -> None:
        super().__init__()
        self.model = model
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x_in, t_in, y=None):
        m = self.model
        pr, param, sd = m.process, m.config.parameterization, m.config.sigma_data
        if param == "edm" or pr.name == "edm":
            sigma = torch.exp(4 * t_in)[:, None]
            t = pr.t_of_sigma(sigma)
        else:
            t = t_in[:, None]
            sigma = pr.sigma(t)
        c = P.Coefs(pr, t)
        c.sigma = sigma
        xhat = x_in * torch.sqrt(sigma**2 + sd**2) if param == "edm" else x_in / c.s
        d, eps = gaussian_denoiser(xhat, sigma)
        return P.target(param, d, eps, c, sd)


def oracle(process: str, param: str = "eps", **kw) -> Diffusion:
    if process == "ve":
        kw.setdefault("sigma_max", 100.0)
    model = Diffusion.from_config(
        DiffusionConfig(process=process, parameterization=param, hidden=4, depth=1, **kw), (2,)
    ).double()
    model.net = OracleNet(model)
    return model


def affine_moments(model, sampler, steps, **opts):
    """Exact mean and covariance of a deterministic sampler's output: with an affine denoiser the
    whole sampler is an affine map of the starting noise, so probe it at 0 and the unit vectors."""
    z = torch.cat([torch.zeros(1, 2), torch.eye(2)]).double()
    out = model.sample(3, sampler=sampler, steps=steps, noise=z, **opts).x
    b, a = out[0], (out[1:] - out[0]).T
    return b, a @ a.T


def errors(mean, cov):
    return float((mean - MU).abs().max()), float((cov - COV).abs().max())


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_deterministic_samplers_reach_the_gaussian_under_every_process(process, sampler):
    model = oracle(process)
    if sampler == "dopri5":
        err = errors(*affine_moments(model, sampler, 2))
        assert max(err) < 5e-3, err
        return
    if sampler in ("euler", "ddim"):  # first order: 4x the steps, about 4x less error
        coarse = max(errors(*affine_moments(model, sampler, 128)))
        fine = max(errors(*affine_moments(model, sampler, 512)))
        assert fine < 0.05 and fine < coarse / 2.5 or fine < 5e-3, (coarse, fine)
    else:  # second order: down to the floor set by the N(0, (1 + σ_max²) I) prior
        coarse = max(errors(*affine_moments(model, sampler, 32)))
        fine = max(errors(*affine_moments(model, sampler, 128)))
        assert fine < 0.01 and (fine < coarse / 3 or fine < 4e-3), (coarse, fine)


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("sampler", STOCHASTIC)
def test_stochastic_samplers_reach_the_gaussian_under_every_process(process, sampler):
    model = oracle(process)
    g = torch.Generator().manual_seed(0)
    steps = 200 if sampler != "pc" else 100
    # SDE steps must be small relative to σ: a geometric (log-SNR) grid keeps σ'/σ fixed
    x = model.sample(20000, sampler=sampler, steps=steps, generator=g, schedule="log-snr").x
    em, ec = errors(x.mean(0), torch.cov(x.T))
    assert em < 0.03 and ec < 0.04, (em, ec)


@pytest.mark.parametrize("process", PROCESSES)
def test_heun_with_churn_reaches_the_gaussian(process):
    model = oracle(process)
    g = torch.Generator().manual_seed(1)
    x = model.sample(20000, sampler="heun", steps=32, generator=g, s_churn=10.0).x
    em, ec = errors(x.mean(0), torch.cov(x.T))
    assert em < 0.03 and ec < 0.04, (em, ec)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("process", PROCESSES)
def test_every_parameterization_samples_the_gaussian(process, param):
    err = errors(*affine_moments(oracle(process, param), "heun", 128))
    assert max(err) < 0.01, err


def exact_prior(model):
    """The true marginal at t_hi, N(s μ, s² (Σ + σ_max² I)), in place of the model's N(0, ...)."""
    pr = model.process
    s, sig = float(pr.s(pr.t_hi)), pr.sigma_max
    law = torch.distributions.MultivariateNormal(s * MU, s**2 * (COV + sig**2 * torch.eye(2)))
    return law.log_prob


def gaussian_points(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(COV).T


@pytest.mark.parametrize("process", PROCESSES)
def test_ode_likelihood_matches_the_analytic_one(process):
    model = oracle(process)
    x = gaussian_points(64)
    law = torch.distributions.MultivariateNormal(
        MU, COV + model.process.sigma_min**2 * torch.eye(2)
    )
    approx = model.log_prob(x, rtol=1e-7, atol=1e-7)  # the usual N(0, (1 + σ_max²) I) prior
    assert approx.kind == "exact"
    assert (approx.value - law.log_prob(x)).abs().max() < 0.03
    model.process.prior_log_prob = exact_prior(model)  # then the ODE itself is exact
    lp = model.log_prob(x, rtol=1e-7, atol=1e-7)
    assert (lp.value - law.log_prob(x)).abs().max() < 2e-4, (lp.value - law.log_prob(x)).abs().max()


@pytest.mark.parametrize("t_lo", [0.0, 0.3])
@pytest.mark.parametrize("param", ["velocity", "eps"])
def test_ode_likelihood_from_a_given_time_is_the_density_of_the_data_noised_to_it(param, t_lo):
    """The examples taken as ``x̂`` at ``σ(t_lo)``: the exact ODE gives N(μ, Σ + σ(t_lo)² I), which
    at ``t_lo = 0`` on the linear path (σ = 0) is the density of the data itself."""
    model = oracle("linear", param)
    model.process.prior_log_prob = exact_prior(model)
    x = gaussian_points(64)
    lp = model.log_prob(x, rtol=1e-7, atol=1e-7, t_lo=t_lo)
    sigma = t_lo / (1 - t_lo)
    law = torch.distributions.MultivariateNormal(MU, COV + sigma**2 * torch.eye(2))
    assert (lp.value - law.log_prob(x)).abs().max() < 2e-4
    assert f"t = {t_lo:g}" in lp.note


def test_ode_likelihood_outside_the_process_range_is_a_clear_error():
    model = oracle("vp-linear")
    with pytest.raises(ConfigError, match=r"t_lo=0 is outside the vp-linear process's range"):
        model.log_prob(gaussian_points(4), t_lo=0.0)
    with pytest.raises(ConfigError, match=r"t_lo=2 is outside"):  # as `genlab eval` checks it
        model.resolve_likelihood_options({"t_lo": "2"})


def test_hutchinson_likelihood_is_labelled_and_within_its_standard_error():
    model = oracle("vp-linear")
    g = torch.Generator().manual_seed(0)
    x = gaussian_points(256)
    est = model.log_prob(x, exact=False, probes=8, generator=g)
    exact = model.log_prob(x)
    assert est.kind == "ode-estimate" and est.stderr is not None
    z = (est.value - exact.value) / est.stderr.clamp_min(1e-9)
    assert z.abs().mean() < 1.5  # calibrated on average (|z| has mean 0.8 for a normal)
    assert (
        abs(float((est.value - exact.value).mean()))
        < 3 * float(est.stderr.mean()) / math.sqrt(256) + 0.02
    )


@pytest.mark.parametrize("process", ["edm", "linear"])
def test_ddim_eta0_is_euler_and_ddpm_is_ddim_eta1(process):
    """DDIM is the Euler step in σ (Karras et al. 2022, sec. 3), which is Euler in t when s ≡ 1
    and on the linear path; DDPM's ancestral step is DDIM with η = 1."""
    model = oracle(process)
    z = torch.randn(16, 2, dtype=torch.float64)
    a = model.sample(16, sampler="euler", steps=10, noise=z).x
    b = model.sample(16, sampler="ddim", steps=10, noise=z, eta=0.0).x
    assert torch.allclose(a, b, atol=1e-10)
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    c = model.sample(16, sampler="ddpm", steps=10, noise=z, generator=g[0]).x
    d = model.sample(16, sampler="ddim", steps=10, noise=z, generator=g[1], eta=1.0).x
    assert torch.allclose(c, d, atol=1e-12)


def test_flow_matching_euler_is_ddim():
    """On the linear path the Euler step in t on the velocity is the DDIM step in σ."""
    model = oracle("linear", "velocity")
    z = torch.randn(32, 2, dtype=torch.float64)
    ddim = model.sample(32, sampler="ddim", steps=7, noise=z).x
    x, ts = z * model.process.prior_std() * model.process.s(model.process.t_hi), None
    grid = sigma_schedule("uniform", 7, model.process)
    ts = [float(model.process.t_of_sigma(s)) for s in grid[:-1]] + [0.0]
    fm = FlowMatching.velocity  # the network's velocity, stepped in t
    for i in range(7):
        x = x + (ts[i + 1] - ts[i]) * fm(model, x, torch.tensor(ts[i], dtype=torch.float64))
    assert torch.allclose(ddim, x, atol=1e-6), (ddim - x).abs().max()


@pytest.mark.parametrize("sampler,steps,tol", [("ddim", 100, 0.05), ("heun", 25, 3e-3)])
@pytest.mark.parametrize("process", PROCESSES)
def test_ode_samplers_invert_to_the_starting_noise(process, sampler, steps, tol):
    """Sample from z down to σ_min, run the same grid back up (DDIM inversion): the error falls
    with the order of the method as steps grow."""
    model = oracle(process)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def round_trip(n):
        x = model.sample(64, sampler=sampler, noise=z, sigmas=model.ode_sigmas(n)).x
        return float((model.encode(x, sampler=sampler, steps=n).x - z).abs().max())

    coarse, fine = round_trip(steps), round_trip(4 * steps)
    assert fine < tol and fine < coarse / 3, (coarse, fine)


@pytest.mark.parametrize("process", PROCESSES)
def test_dopri5_inverts_to_solver_tolerance(process):
    model = oracle(process)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tol = {"rtol": 1e-8, "atol": 1e-8}
    x = model.sample(64, sampler="dopri5", noise=z, sigmas=model.ode_sigmas(10), **tol).x
    assert (model.encode(x, sampler="dopri5", steps=10, **tol).x - z).abs().max() < 1e-4


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("process", PROCESSES)
def test_parameterizations_convert_to_the_denoiser_and_back(process, param):
    pr = make_process(process)
    g = torch.Generator().manual_seed(0)
    t = pr.t_lo + (pr.t_hi - pr.t_lo) * torch.rand(500, 1, generator=g, dtype=torch.float64)
    x0 = torch.randn(500, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(500, 3, generator=g, dtype=torch.float64)
    c = P.Coefs(pr, t)
    xhat = x0 + c.sigma * eps
    f = P.target(param, x0, eps, c, 0.5)
    d, e = P.denoise(param, f, xhat, c, 0.5)
    assert torch.allclose(d, x0, atol=1e-8, rtol=1e-6) and torch.allclose(
        e, eps, atol=1e-8, rtol=1e-6
    )
    # the gain: D - x0 = b (F - F*)
    d2, _ = P.denoise(param, f + 0.01, xhat, c, 0.5)
    assert torch.allclose(d2 - x0, P.gain(param, c, 0.5) * 0.01, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("process", PROCESSES)
def test_processes_are_consistent(process):
    pr = make_process(process)
    t = torch.linspace(pr.t_lo + 1e-3, pr.t_hi - 1e-3, 50, dtype=torch.float64).requires_grad_(True)
    s, sig = pr.s(t), pr.sigma(t)
    (ds,) = torch.autograd.grad(s.sum(), t)
    (dsig,) = torch.autograd.grad(sig.sum(), t)
    t = t.detach()
    assert torch.allclose(pr.ds(t), ds, rtol=1e-6, atol=1e-9)
    assert torch.allclose(pr.dsigma(t), dsig, rtol=1e-6)
    assert torch.allclose(pr.t_of_sigma(pr.sigma(t)), t, atol=1e-9)
    assert torch.allclose(pr.s_sigma(t), pr.s(t) * pr.sigma(t))
    assert torch.allclose(pr.d_s_sigma(t), pr.ds(t) * pr.sigma(t) + pr.s(t) * pr.dsigma(t))
    assert (sig[1:] > sig[:-1]).all()  # noise grows with t
    # floats and tensors agree
    assert math.isclose(
        pr.sigma(0.3 * pr.t_hi),
        float(pr.sigma(torch.tensor(0.3 * pr.t_hi, dtype=torch.float64))),
        rel_tol=1e-9,
    )


def test_vp_linear_matches_ddpm_discrete_schedule():
    pr = make_process("vp-linear")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    # -log ᾱ: the continuous form drops DDPM's Σβ²/2 (0.07 at t = 1)
    assert torch.allclose(-2 * torch.log(pr.s(t)), -torch.log(abar), rtol=0.01, atol=0.08)


@pytest.mark.parametrize("schedule", ["uniform", "karras", "log-snr"])
@pytest.mark.parametrize("process", PROCESSES)
def test_schedules_decrease_from_sigma_max_to_zero(process, schedule):
    pr = make_process(process)
    for steps in (1, 2, 10):
        s = sigma_schedule(schedule, steps, pr)
        assert len(s) == steps + 1 and s[-1] == 0.0
        assert math.isclose(s[0], pr.sigma_max, rel_tol=1e-6)
        assert all(a > b for a, b in zip(s, s[1:]))
    if schedule != "uniform":
        assert math.isclose(sigma_schedule(schedule, 10, pr)[-2], pr.sigma_min, rel_tol=1e-6)


@pytest.mark.parametrize(
    "param,weighting",
    [("eps", "eps"), ("x0", "x0"), ("v", "v"), ("velocity", "velocity"), ("edm", "edm")],
)
def test_native_weighting_is_the_named_one(param, weighting):
    """Each parameterization's plain MSE is the denoiser loss under the matching weighting."""
    process = "linear" if param == "velocity" else "vp-linear"
    kw = dict(process=process, parameterization=param, hidden=16, depth=2, sigma_data=1.0)
    torch.manual_seed(0)
    a = Diffusion.from_config(DiffusionConfig(**kw), (3,)).double()
    b = Diffusion.from_config(DiffusionConfig(weighting=weighting, **kw), (3,)).double()
    b.load_state_dict(a.state_dict())
    batch = a.prepare(
        Batch(torch.randn(256, 3, dtype=torch.float64)), torch.Generator().manual_seed(0)
    )
    assert torch.allclose(a.loss(batch), b.loss(batch), rtol=1e-9)


def test_weightings_change_the_loss_not_the_minimizer():
    """Every weighting is minimized by the exact denoiser: moving the oracle's D off the
    posterior mean raises the loss under each of them (the loss is not that of a fixed target)."""
    for w in ["eps", "x0", "v", "edm", "min-snr"]:
        model = oracle("vp-linear", "x0", weighting=w)
        batch = model.prepare(Batch(gaussian_points(4096)), torch.Generator().manual_seed(0))
        exact = model.loss(batch)
        oracle_net = model.net
        for shift in (0.05, -0.05):
            model.net = ShiftedNet(oracle_net, shift)  # x0 parameterization: D + shift
            assert torch.isfinite(exact) and model.loss(batch) > exact, (w, shift)
        model.net = oracle_net


class ShiftedNet(nn.Module):
    def __init__(self, net: nn.Module, shift: float) -> None:
        super().__init__()
        self.net, self.shift = net, shift

    def forward(self, x, t, y=None):
        return self.net(x, t, y) + self.shift


def test_clip_denoised_keeps_the_denoiser_in_the_data_range():
    model = oracle("edm", clip_denoised=True)
    xhat = torch.tensor([[5.0, -7.0], [0.2, 0.1]], dtype=torch.float64)
    d, eps = model.denoiser()(xhat, 0.05)
    assert d.abs().max() <= 1.0 and torch.allclose(eps, (xhat - d) / 0.05)
    plain, _ = oracle("edm").denoiser()(xhat, 0.05)
    assert plain.abs().max() > 1.0 and torch.allclose(plain[1], d[1])  # in range: unchanged
