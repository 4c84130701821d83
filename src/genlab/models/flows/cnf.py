"""FFJORD: a continuous normalizing flow trained by maximum likelihood.

A neural ODE ``dx/dt = f(x, t)`` carries data (t = 0) to the base ``N(0, I)`` (t = 1), genlab's time
convention. The instantaneous change of variables (Chen et al. 2018, Theorem 1) gives

    log p_0(x_0) = log N(x_1; 0, I) + ∫_0^1 tr(∂f/∂x)(x_t, t) dt,

solved jointly with the state by torchdiffeq (dopri5, optionally with the adjoint method for
O(1) memory). The trace is exact (one backward pass per dimension) in low dimension, else the
Hutchinson estimator ``εᵀ (∂f/∂x) ε`` with a probe held fixed over the solve (Grathwohl et al.
2019), which makes the likelihood an unbiased estimate (kind ``ode-estimate``, with a standard
error from several probes). Optional regularisers of Finlay et al. (2020): kinetic energy
``∫ |f|² dt`` and Jacobian Frobenius norm ``∫ |εᵀ ∂f/∂x|² dt``, which straighten the paths and cut
the solver's number of function evaluations (NFE, always reported).

References:
    Chen, Rubanova, Bettencourt & Duvenaud (2018), "Neural Ordinary Differential Equations",
    arXiv:1806.07366.
    Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud (2019), "FFJORD: Free-form Continuous
    Dynamics for Scalable Reversible Generative Models", arXiv:1810.01367.
    Finlay, Jacobsen, Nurbekyan & Oberman (2020), "How to train your neural ODE", arXiv:2002.02798.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.base import (
    FROM_CONFIG,
    GenerativeModel,
    LogProb,
    ModelSpec,
    SampleOption,
    SampleResult,
)
from genlab.models.diffusion.likelihood import ode_log_prob, standard_normal_log_prob
from genlab.models.diffusion.process import make_process
from genlab.models.diffusion.samplers import (
    ode_samplers,
    run_sampler,
    sampler_options,
    sigma_schedule,
)
from genlab.registry import MODELS, SAMPLERS

LOG_2PI = math.log(2 * math.pi)


@dataclass
class FFJORDConfig:
    hidden: int = 64  # width of the dynamics network
    depth: int = 3  # hidden layers of the dynamics network
    activation: Literal["tanh", "softplus", "silu"] = "tanh"  # smooth, for a well-behaved ODE
    divergence: Literal["auto", "exact", "hutchinson"] = "auto"  # auto: exact up to exact_max_dim
    exact_max_dim: int = 8
    probe: Literal["rademacher", "gaussian"] = "rademacher"  # Hutchinson probe law
    adjoint: bool = False  # adjoint method for the backward pass (O(1) memory in the solver steps)
    rtol: float = 1e-4  # solver tolerances during training
    atol: float = 1e-4
    kinetic_energy: float = 0.0  # λ_K of the kinetic-energy regulariser (Finlay et al. 2020)
    jacobian_norm: float = 0.0  # λ_J of the Jacobian Frobenius regulariser
    temperature: float = 1.0  # default sampling temperature
    sampler: str = "dopri5"  # default sampler (any registered ODE sampler)
    steps: int = 20  # fixed-step samplers: steps; dopri5: output points of a trajectory


class ConcatSquashLinear(nn.Module):
    """``W x · σ(a t + b) + c t``: a linear layer gated and shifted by time (FFJORD's layer)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.gate = nn.Linear(1, dim_out)
        self.bias = nn.Linear(1, dim_out, bias=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(1, 1).to(x.dtype)  # the same time for the whole batch
        return self.linear(x) * torch.sigmoid(self.gate(tt)) + self.bias(tt)


class Dynamics(nn.Module):
    """``f(x, t)``: ``(B, d), scalar t -> (B, d)``, ConcatSquash layers with a smooth activation."""

    def __init__(self, dim: int, hidden: int, depth: int, activation: str) -> None:
        super().__init__()
        widths = [dim] + [hidden] * depth + [dim]
        self.layers = nn.ModuleList(
            ConcatSquashLinear(a, b) for a, b in zip(widths[:-1], widths[1:])
        )
        self.act = {"tanh": nn.Tanh(), "softplus": nn.Softplus(), "silu": nn.SiLU()}[activation]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, t)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


class _AugmentedODE(nn.Module):
    """The joint ODE of the state, the divergence integral and the regularisers.

    State: ``(x (B, d), div (B, P), ke (B,), jf (B,))``; ``probe`` ``(P, B, d)`` or None for the
    exact trace. An ``nn.Module`` so that ``odeint_adjoint`` finds the parameters.
    """

    def __init__(self, net: Dynamics) -> None:
        super().__init__()
        self.net = net
        self.probe: torch.Tensor | None = None
        self.create_graph = False
        self.nfe = 0

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.nfe += 1
        x = state[0]
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            v = self.net(x, t)  # (B, d)
            jf = torch.zeros_like(v[:, 0])
            if self.probe is None:
                div = _exact_divergence(v, x, self.create_graph)[:, None]  # (B, 1)
            else:
                divs = []
                for i, eps in enumerate(self.probe):  # (B, d) each
                    (g,) = torch.autograd.grad(
                        v, x, eps, create_graph=self.create_graph, retain_graph=True
                    )
                    divs.append((g * eps).sum(-1))
                    if i == 0:
                        jf = (g**2).sum(-1)
                div = torch.stack(divs, dim=-1)  # (B, P)
        ke = (v**2).sum(-1)
        if not self.create_graph:
            v, div, ke, jf = v.detach(), div.detach(), ke.detach(), jf.detach()
        return v, div, ke, jf


def _exact_divergence(v: torch.Tensor, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """``tr(∂v/∂x)`` per example with one backward pass per dimension."""
    div = torch.zeros_like(v[:, 0])
    for i in range(x.shape[1]):
        (g,) = torch.autograd.grad(v[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
        div = div + g[:, i]
    return div


@MODELS.register("ffjord", help="FFJORD continuous normalizing flow (Grathwohl et al. 2019)")
class FFJORD(GenerativeModel):
    """Continuous normalizing flow on points ``(B, d)`` (Grathwohl et al. 2019)."""

    Config = FFJORDConfig

    def __init__(self, config: FFJORDConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        if len(spec.shape) != 1:
            raise ConfigError(f"ffjord models points (d,); data has examples of shape {spec.shape}")
        for name in ("rtol", "atol"):
            if getattr(config, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(config, name)}")
        if config.kinetic_energy < 0 or config.jacobian_norm < 0:
            raise ConfigError("model.kinetic_energy and model.jacobian_norm must be non-negative")
        self.dim = spec.shape[0]
        # the dynamics live inside the augmented ODE only (one copy of each weight in checkpoints)
        self.ode = _AugmentedODE(Dynamics(self.dim, config.hidden, config.depth, config.activation))

    @property
    def net(self) -> Dynamics:
        """The dynamics network ``f(x, t)``."""
        return self.ode.net

    # --- the ODE --------------------------------------------------------------------------------
    def exact_divergence(self) -> bool:
        c = self.config
        return c.divergence == "exact" or (c.divergence == "auto" and self.dim <= c.exact_max_dim)

    def _probe(self, x: torch.Tensor, probes: int, generator: torch.Generator | None):
        shape = (probes, *x.shape)
        if self.config.probe == "gaussian":
            eps = torch.randn(shape, generator=generator, dtype=x.dtype)
        else:
            eps = torch.randint(0, 2, shape, generator=generator).to(x.dtype) * 2 - 1
        return eps.to(x.device)

    def _integrate(
        self,
        x: torch.Tensor,
        *,
        exact: bool,
        probes: int,
        generator: torch.Generator | None,
        rtol: float,
        atol: float,
        train: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Solve from t = 0 to 1; returns ``log p(x)`` ``(B, P)`` per probe, the kinetic energy
        and Jacobian norm integrals ``(B,)``, ``x_1`` and the NFE."""
        from torchdiffeq import odeint, odeint_adjoint

        from genlab.errors import ode_solver_errors

        self.ode.probe = None if exact else self._probe(x, probes, generator)
        self.ode.create_graph = train
        self.ode.nfe = 0
        b = x.shape[0]
        zeros = x.new_zeros(b)
        state = (x, x.new_zeros(b, 1 if exact else probes), zeros, zeros)
        ts = torch.tensor([0.0, 1.0], dtype=torch.float64, device=x.device)
        if train and self.config.adjoint:
            params = tuple(self.net.parameters())
            out = odeint_adjoint(
                self.ode, state, ts, method="dopri5", rtol=rtol, atol=atol, adjoint_params=params
            )
        else:
            with ode_solver_errors("FFJORD"):
                out = odeint(self.ode, state, ts, method="dopri5", rtol=rtol, atol=atol)
        x1, div, ke, jf = (o[-1] for o in out)
        log_p1 = -0.5 * (x1**2).sum(-1) - 0.5 * self.dim * LOG_2PI  # (B,)
        return log_p1[:, None] + div, ke, jf, x1, self.ode.nfe

    # --- training -------------------------------------------------------------------------------
    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean NLL (nats) plus ``λ_K ∫|f|² dt + λ_J ∫|εᵀ∂f/∂x|² dt`` (Finlay et al. 2020)."""
        c = self.config
        need_probe = not self.exact_divergence() or c.jacobian_norm > 0
        logp, ke, jf, _, _ = self._integrate(
            batch.x,
            exact=not need_probe,
            probes=1,
            generator=generator,
            rtol=c.rtol,
            atol=c.atol,
            train=torch.is_grad_enabled(),
        )
        loss = -logp.mean()
        if c.kinetic_energy > 0:
            loss = loss + c.kinetic_energy * ke.mean()
        if c.jacobian_norm > 0:
            loss = loss + c.jacobian_norm * jf.mean()
        return loss

    # --- likelihood -----------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(
        self,
        x: torch.Tensor,
        *,
        exact: bool | None = None,
        probes: int = 4,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        generator: torch.Generator | None = None,
        batch_size: int = 4096,
    ) -> LogProb:
        """``log p(x)`` through the ODE. Exact trace (kind ``exact``, up to the solver tolerance)
        when ``exact`` (default: ``config.divergence``), else the mean of ``probes`` Hutchinson
        estimates with its per-example standard error (kind ``ode-estimate``)."""
        exact = self.exact_divergence() if exact is None else exact
        lp = ode_log_prob(
            self.velocity, x, 0.0, 1.0,
            standard_normal_log_prob, exact=exact, probes=probes, generator=generator,
            rtol=rtol, atol=atol, batch_size=batch_size,
            note="instantaneous change of variables (FFJORD)",
        )  # fmt: skip
        return lp

    # --- sampling -------------------------------------------------------------------------------
    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t)

    sample_options = (
        SampleOption("sampler", "an ODE sampler: " + ", ".join(ode_samplers()), str, FROM_CONFIG),
        SampleOption("steps", "steps (dopri5: points of a recorded path)", int, FROM_CONFIG),
        SampleOption("temperature", "std of the base draws", float, FROM_CONFIG),
        SampleOption("noise", "standard-normal base draws (n, d)", None),
        SampleOption("trajectory", "keep the whole path (steps + 1, n, d)", None, False),
        SampleOption("dtype", "the sampling dtype (default: the weights')", None),
    )

    def options(self, chosen=None) -> dict[str, SampleOption]:
        """The declared options plus the chosen sampler's own, except those that add noise (an
        SDE step needs a score, which a CNF's velocity field does not give)."""
        out = super().options(chosen)
        name = (chosen or {}).get("sampler") or self.config.sampler
        entry = SAMPLERS.entry(name)
        if not entry.meta.get("ode"):
            raise ConfigError(
                f"ffjord samples by solving its ODE; {name!r} is a stochastic sampler "
                f"(use one of {', '.join(ode_samplers())})"
            )
        for key, default in sampler_options(name).items():
            if key not in entry.meta.get("noise_options", ()):
                out[key] = SampleOption(key, f"{name} option", type(default), default)
        return out

    def check_options(self, options) -> None:
        sigma_schedule("uniform", options["steps"], _PATH)  # steps >= 1

    def denoiser(self):
        """The flow as the common samplers see it. In the time convention ``s ≡ 1``, ``σ = t``
        (:data:`_PATH`) the probability-flow drift ``ṡ x̂ + s σ̇ ε̂`` is ``ε̂``, so ``ε̂ = v(x, t)``
        and ``D = x − t v`` (the Euler step to t = 0): every registered ODE sampler integrates
        exactly FFJORD's ODE, from the base at t = 1."""

        def den(x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
            v = self.net(x, torch.tensor(sigma, dtype=x.dtype, device=x.device))
            return x - sigma * v, v

        return den

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        sampler: str,
        steps: int,
        temperature: float,
        noise: torch.Tensor | None,
        trajectory: bool,
        dtype: torch.dtype | None,
        **options: Any,
    ) -> SampleResult:
        """Integrate the ODE from base draws (t = 1, std scaled by ``temperature``) to data (t = 0)
        with a registered ODE sampler; NFE is reported."""
        p = next(self.parameters())
        dtype = dtype or p.dtype
        if noise is None:
            noise = torch.randn((n, self.dim), generator=generator, dtype=dtype)
        if tuple(noise.shape) != (n, self.dim):
            raise ConfigError(f"noise must have shape {(n, self.dim)}, got {tuple(noise.shape)}")
        x = noise.to(device=p.device, dtype=dtype) * temperature
        grid = sigma_schedule("uniform", steps, _PATH)
        return run_sampler(
            sampler, self.denoiser(), _PATH, x, grid, generator=generator, trajectory=trajectory,
            **options,
        )  # fmt: skip


# FFJORD's time as the samplers step it: x = x̂ (s ≡ 1) and σ = t on [10⁻³, 1]; the last step,
# from t = 10⁻³ to 0, is the denoiser's Euler step
_PATH = make_process("edm", sigma_min=1e-3, sigma_max=1.0)
