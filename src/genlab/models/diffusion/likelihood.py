"""Log-likelihood through an ODE: the instantaneous change of variables, one function for every
continuous model (diffusion under any process, flow matching, FFJORD at evaluation).

For ``dx/dt = f(x, t)`` carrying data at ``t0`` to a known prior at ``t1``,

    log p_{t0}(x(t0)) = log p_{t1}(x(t1)) + ∫_{t0}^{t1} ∇·f(x(t), t) dt

(Chen et al. 2018; Grathwohl et al. 2019; Song et al. 2021, appendix D.2), solved with dopri5
(torchdiffeq) for the state and the integral together. The divergence is exact (one
vector-Jacobian product per dimension) up to ``exact_max_dim`` dimensions; above, the mean of
``probes`` Rademacher Hutchinson estimates ``zᵀ (∂f/∂x) z`` integrated in the same solve, with its
per-example standard error over the probes (kind ``ode-estimate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genlab.models.base import LogProb
from genlab.progress import chunks

Drift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def divergence(v: torch.Tensor, x: torch.Tensor, probe: torch.Tensor | None) -> torch.Tensor:
    """``∇·v`` per example, ``(k, B)``: exact (one backward pass per dimension, k = 1) or
    ``zᵀ (∂v/∂x) z`` for each of the k probes ``z`` ``(k, *x.shape)`` (one VJP each)."""
    if probe is not None:
        rows = []
        for i, z in enumerate(probe):
            (g,) = torch.autograd.grad(v, x, z, retain_graph=i < len(probe) - 1)
            rows.append((g * z).reshape(len(x), -1).sum(-1))
        return torch.stack(rows)
    flat_v = v.reshape(len(x), -1)
    n = flat_v.shape[1]
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(n):
        (g,) = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=i < n - 1)
        div = div + g.reshape(len(x), -1)[:, i]
    return div[None]


def ode_log_prob(
    drift: Drift,
    x: torch.Tensor,
    t0: float,
    t1: float,
    prior_log_prob: Callable[[torch.Tensor], torch.Tensor],
    *,
    exact: bool | None = None,
    exact_max_dim: int = 16,
    probes: int = 4,
    generator: torch.Generator | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    batch_size: int = 4096,
    note: str = "",
) -> LogProb:
    """``log p_{t0}(x)`` per example for ``x`` ``(B, *shape)``. ``exact``: None picks exact
    divergence when ``x[0].numel() <= exact_max_dim``."""
    from torchdiffeq import odeint

    from genlab.errors import ode_solver_errors

    exact = x[0].numel() <= exact_max_dim if exact is None else exact
    if not exact and probes < 2:
        raise ValueError("a Hutchinson estimate with a standard error needs probes >= 2")
    values, errors, nfe = [], [], 0
    ts = torch.tensor([t0, t1], dtype=torch.float64, device=x.device)
    for chunk in chunks(x, batch_size):
        k = 1 if exact else probes
        probe = None
        if not exact:  # (k, B, *shape) Rademacher vectors
            dev = generator.device if generator is not None else chunk.device
            signs = torch.randint(0, 2, (k, *chunk.shape), generator=generator, device=dev)
            probe = (2 * signs - 1).to(device=chunk.device, dtype=chunk.dtype)

        def f(t, state, probe=probe):
            nonlocal nfe
            nfe += 1
            with torch.enable_grad():
                xt = state[0].detach().requires_grad_(True)
                v = drift(xt, t)
                div = divergence(v, xt, probe)  # (k, B)
            return v.detach(), div.detach()

        z0 = torch.zeros((k, chunk.shape[0]), dtype=chunk.dtype, device=chunk.device)
        with ode_solver_errors("the ODE likelihood"):
            xs, divs = odeint(f, (chunk, z0), ts, method="dopri5", rtol=rtol, atol=atol)
        logp = prior_log_prob(xs[-1])[None] + divs[-1]  # (k, B)
        values.append(logp.mean(0))
        if not exact:
            errors.append(logp.std(0) / math.sqrt(k))
    note = (note + ", " if note else "") + f"probability-flow ODE, dopri5 rtol={rtol} atol={atol}"
    if exact:
        return LogProb(torch.cat(values), "exact", nfe=nfe, note=note + ", exact divergence")
    note += f", Hutchinson trace estimator ({probes} Rademacher probes)"
    return LogProb(torch.cat(values), "ode-estimate", nfe, torch.cat(errors), note)


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """``log N(x; 0, I)`` per example."""
    d = x[0].numel()
    return -0.5 * (x.reshape(len(x), -1) ** 2).sum(-1) - 0.5 * d * math.log(2 * math.pi)
