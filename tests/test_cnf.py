"""FFJORD: the ODE likelihood against the discrete change of variables through the solved flow map,
the Hutchinson estimate against the exact trace, invertibility, gradients (direct and adjoint) and
the kinetic-energy regulariser. Float64 with tight tolerances."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.diffusion.samplers import ode_samplers
from genlab.models.flows.cnf import FFJORD, FFJORDConfig

TOL = {"rtol": 1e-8, "atol": 1e-8}


def _model(dim: int = 2, **kw) -> FFJORD:
    torch.manual_seed(0)
    model = FFJORD.from_config(FFJORDConfig(hidden=16, depth=2, **kw), (dim,)).double()
    with torch.no_grad():  # a non-trivial field: larger weights than the default init
        for p in model.parameters():
            p.mul_(2.0)
    return model.eval()


def _x(n: int, dim: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _flow_map(model: FFJORD, x: torch.Tensor) -> torch.Tensor:
    from torchdiffeq import odeint

    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return odeint(lambda t, y: model.net(y, t), x, ts, method="dopri5", **TOL)[-1]


def test_ode_log_prob_equals_the_change_of_variables_of_the_flow_map():
    model = _model()
    x = _x(4)
    lp = model.log_prob(x, exact=True, **TOL)
    assert lp.kind == "exact" and lp.nfe > 0
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: _flow_map(model, v[None])[0], x[i])
        z = _flow_map(model, x[i : i + 1])[0]
        expected = (
            torch.distributions.Normal(0.0, 1.0).log_prob(z).sum() + torch.linalg.slogdet(jac)[1]
        )
        assert float(lp.value[i]) == pytest.approx(float(expected.detach()), abs=1e-5)


def test_hutchinson_matches_the_exact_divergence_within_its_standard_error():
    model = _model(dim=3)
    x = _x(300, dim=3, seed=1)
    exact = model.log_prob(x, exact=True, rtol=1e-6, atol=1e-6)
    est = model.log_prob(
        x, exact=False, probes=8, rtol=1e-6, atol=1e-6, generator=torch.Generator().manual_seed(2)
    )
    assert est.kind == "ode-estimate" and est.stderr.shape == (300,)
    assert (est.stderr > 0).all()
    diff = est.value - exact.value
    se_mean = float(torch.sqrt((est.stderr**2).sum())) / len(x)
    assert abs(float(diff.mean())) < 4 * se_mean + 1e-4
    # per example, |z| < 3 for nearly all points (t-like tails with 7 degrees of freedom)
    assert float(((diff / est.stderr).abs() < 3).double().mean()) > 0.9


def test_sampling_inverts_the_likelihood_ode():
    model = _model()
    x = _x(16, seed=3)
    z = _flow_map(model, x)
    out = model.sample(16, noise=z, sampler="dopri5", rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.x, x, atol=1e-5, rtol=0)
    assert out.nfe > 0
    euler = model.sample(5, sampler="euler", steps=7, generator=torch.Generator().manual_seed(0))
    assert euler.nfe == 7 and euler.x.shape == (5, 2)


class _LinearField(torch.nn.Module):
    """``dx/dt = a x``: from the base at t = 1 to t = 0, ``x(0) = e^{-a} x(1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, x, t):
        return self.a * x


@pytest.mark.parametrize("sampler", ode_samplers())
def test_every_ode_sampler_integrates_the_flow(sampler):
    # one registry of samplers for every continuous model: FFJORD's ODE through each ODE sampler
    model = _model()
    model.ode.net = _LinearField()
    z = _x(8, seed=4)
    steps = {"euler": 400, "ddim": 400}.get(sampler, 40)
    out = model.sample(8, noise=z, sampler=sampler, steps=steps)
    torch.testing.assert_close(out.x, z * math.exp(-0.7), rtol=3e-3, atol=0)


def test_stochastic_samplers_and_their_noise_options_are_refused():
    model = _model()
    with pytest.raises(ConfigError, match="stochastic sampler.*dopri5"):
        model.sample(4, sampler="euler-maruyama")
    with pytest.raises(ConfigError, match="no sampling option 'eta'"):
        model.sample(4, sampler="ddim", eta=1.0)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_gradients_reach_every_parameter(divergence):
    model = _model(divergence=divergence).train()
    loss = model.loss(Batch(_x(32)), torch.Generator().manual_seed(0))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_adjoint_gradients_match_direct_backpropagation():
    x = _x(16, seed=4)
    grads = []
    for adjoint in (False, True):
        model = _model(adjoint=adjoint, rtol=1e-8, atol=1e-8).train()
        model.loss(Batch(x)).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_kinetic_energy_regulariser_adds_lambda_times_the_path_energy():
    x = _x(64, seed=5)
    plain = _model(rtol=1e-8, atol=1e-8)
    reg = _model(rtol=1e-8, atol=1e-8, kinetic_energy=0.1)
    with torch.no_grad():
        base = plain.loss(Batch(x))
        total = reg.loss(Batch(x))
        _, ke, _, _, _ = plain._integrate(
            x, exact=True, probes=1, generator=None, rtol=1e-8, atol=1e-8, train=False
        )
    assert float(total - base) == pytest.approx(0.1 * float(ke.mean()), rel=1e-6)
    assert float(ke.mean()) > 0
    # ∫|f|² dt ≥ |x_1 - x_0|² (Cauchy-Schwarz on a unit time interval)
    disp = ((_flow_map(plain, x) - x) ** 2).sum(-1)
    assert (ke >= disp - 1e-6).all()


def test_log_prob_reports_bits_per_dim_and_nfe():
    model = _model()
    lp = model.log_prob(_x(10), exact=True)
    assert lp.bits_per_dim(2) == pytest.approx(lp.nll() / (2 * math.log(2)))
    with pytest.raises(ValueError, match="probes"):
        model.log_prob(_x(3), exact=False, probes=1)


def test_trains_and_round_trips_through_the_trainer(tmp_path):
    from pathlib import Path

    import genlab

    root = Path(__file__).resolve().parents[1]
    overrides = ["trainer.steps=3", "trainer.progress=false", "trainer.tensorboard=false",
                 "data.n=500", "model.hidden=16", "model.depth=2"]  # fmt: skip
    cfg = genlab.load_config(root / "configs" / "ffjord-moons.yaml", overrides)
    run = genlab.train(cfg, out=tmp_path / "run", evaluate=False, verbose=False)
    again = genlab.load_run(tmp_path / "run")
    x = run.dataset.val[:32]
    torch.testing.assert_close(run.model.log_prob(x).value, again.model.log_prob(x).value)
