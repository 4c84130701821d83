"""Flow matching on the linear (rectified-flow) path.

References:
    Lipman et al. (2023), "Flow Matching for Generative Modeling", arXiv:2210.02747.
    Liu et al. (2023), "Flow Straight and Fast: ... Rectified Flow", arXiv:2209.03003.
    Tong et al. (2024), "Improving and generalizing flow-based generative models with minibatch
    optimal transport", arXiv:2302.00482 (the OT coupling and the ``sigma`` path width).

Time convention (the same for every continuous family in genlab): data at t = 0, noise at t = 1,

    x_t = (1 - t) x_0 + t ε (+ σ_path · z),      u_t = dx_t/dt = ε - x_0,

which is the unified form ``x_t = s(t)(x_0 + σ(t) ε)`` with ``s = 1 - t`` and ``σ = t / (1 - t)``.
Sampling integrates ``dx/dt = v(x, t)`` from t = 1 down to t = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, LogProb, ModelSpec
from genlab.models.coupling import couple
from genlab.registry import MODELS, NETS
from genlab.sampling.ode import SampleResult, solve, time_grid


@dataclass
class FlowMatchingConfig:
    backbone: str = "mlp"
    hidden: int = 256  # width of the backbone's hidden layers
    depth: int = 4  # number of hidden layers
    time_dim: int = 32  # size of the sinusoidal time embedding
    coupling: Literal["independent", "ot"] = "independent"  # how noise is paired with data
    time_sampling: Literal["uniform", "logit-normal"] = "uniform"  # law of t during training
    sigma: float = 0.0  # std of the Gaussian path around the straight line (0: rectified flow)
    sampler: str = "dopri5"  # default sampler
    steps: int = 100  # default number of steps (fixed-step samplers) or output points (dopri5)


@MODELS.register("flow-matching", help="flow matching / rectified flow (linear path, OT coupling)")
class FlowMatching(GenerativeModel):
    """Conditional flow matching with the velocity loss ``E |v(x_t, t) - (ε - x_0)|²``."""

    family = "flow-matching"
    Config = FlowMatchingConfig

    def __init__(self, config: FlowMatchingConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        if len(spec.shape) != 1:
            raise ConfigError(
                f"model.backbone={config.backbone!r} takes points (N, d); data has examples of shape "
                f"{spec.shape}"
            )
        backbone = NETS.get(config.backbone)
        self.net: nn.Module = backbone(
            dim=spec.shape[0],
            hidden=config.hidden,
            depth=config.depth,
            time_dim=config.time_dim,
            num_classes=spec.num_classes,
        )

    # --- training -------------------------------------------------------------------------------
    @property
    def prepares_batches(self) -> bool:  # the OT assignment is worth running off the hot path
        return self.config.coupling != "independent"

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """All the randomness of the objective: the noise, paired with the data (independently or
        by minibatch OT), the times and, with ``sigma > 0``, the path noise."""
        x0 = batch.x  # (B, d)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        eps, x0 = couple(eps, x0, self.config.coupling)  # permutes the noise; data order kept
        t = self._sample_t(x0.shape[0], generator, x0)  # (B,)
        aux = {}
        if self.config.sigma > 0:
            aux["path_noise"] = torch.randn(
                x0.shape, generator=generator, dtype=x0.dtype, device=x0.device
            )
        return Batch(x0, batch.y, eps, t, aux)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        if batch.t is None:  # not prepared by the trainer
            batch = self.prepare(batch, generator)
        x0, eps, t = batch.x, batch.noise, batch.t  # (B, d) data, its paired noise, (B,) times
        xt = torch.lerp(x0, eps, t[:, None])  # (1 - t) x0 + t eps
        if "path_noise" in batch.aux:
            xt = xt + self.config.sigma * batch.aux["path_noise"]
        v = self.net(xt, t, batch.y)
        return torch.mean((v - (eps - x0)) ** 2)

    def _sample_t(self, n: int, generator, like: torch.Tensor) -> torch.Tensor:
        if self.config.time_sampling == "uniform":
            return torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)
        # logit-normal(0, 1) (Esser et al. 2024): more weight on intermediate times
        z = torch.randn(n, generator=generator, dtype=like.dtype, device=like.device)
        return torch.sigmoid(z)

    # --- sampling -------------------------------------------------------------------------------
    def velocity(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        """``dx/dt`` at ``x`` ``(B, d)`` and a scalar or ``(B,)`` time ``t``."""
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return self.net(x, t.to(x.dtype), y)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        y: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        trajectory: bool = False,
        dtype: torch.dtype | None = None,
        **options,
    ) -> SampleResult:
        """Draw ``n`` samples by integrating the learned ODE from noise (t = 1) to data (t = 0).

        ``noise`` (``(n, d)``) overrides the starting point (for round trips and reflow).
        """
        dev = self.device
        dtype = dtype or next(self.parameters()).dtype
        if noise is None:
            noise = torch.randn((n, *self.spec.shape), generator=generator, dtype=dtype)
        x = noise.to(device=dev, dtype=dtype)
        ts = time_grid(steps or self.config.steps, 1.0, 0.0, device=dev, dtype=dtype)
        return solve(
            sampler or self.config.sampler,
            lambda x, t: self.velocity(x, t, y),
            x,
            ts,
            trajectory=trajectory,
            **options,
        )

    # --- likelihood -----------------------------------------------------------------------------
    def log_prob(
        self,
        x: torch.Tensor,
        *,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        exact_divergence_max_dim: int = 16,
        probes: int = 4,
        generator: torch.Generator | None = None,
        batch_size: int = 4096,
    ) -> LogProb:
        """``log p_0(x)`` through the probability-flow ODE (Chen et al. 2018; Grathwohl et al. 2019):

        ``log p_0(x_0) = log N(x_1; 0, I) + ∫_0^1 div v(x_t, t) dt``, solved from t = 0 to t = 1 with
        dopri5. The divergence is exact (d backward passes) up to ``exact_divergence_max_dim``
        dimensions; above, the mean of ``probes`` Rademacher Hutchinson estimates integrated in the
        same solve, with its per-example standard error (kind ``ode-estimate``).
        """
        from torchdiffeq import odeint

        exact = self.spec.shape[0] <= exact_divergence_max_dim
        if not exact and probes < 2:
            raise ValueError("a Hutchinson estimate with a standard error needs probes >= 2")
        values, errors, nfe = [], [], 0
        for chunk in torch.split(x, batch_size):
            k = 1 if exact else probes
            probe = None
            if not exact:  # (k, B, d) Rademacher vectors
                signs = torch.randint(0, 2, (k, *chunk.shape), generator=generator)
                probe = (2 * signs - 1).to(device=chunk.device, dtype=chunk.dtype)

            def f(t, state, probe=probe):
                nonlocal nfe
                nfe += 1
                with torch.enable_grad():
                    xt = state[0].detach().requires_grad_(True)
                    v = self.velocity(xt, t)
                    div = _divergence(v, xt, probe)  # (k, B)
                return v.detach(), div.detach()

            z0 = torch.zeros((k, chunk.shape[0]), dtype=chunk.dtype, device=chunk.device)
            ts = torch.tensor([0.0, 1.0], dtype=torch.float64, device=chunk.device)
            xs, divs = odeint(f, (chunk, z0), ts, method="dopri5", rtol=rtol, atol=atol)
            x1, integral = xs[-1], divs[-1]  # (B, d), (k, B)
            log_p1 = -0.5 * (x1**2).sum(-1) - 0.5 * x1.shape[-1] * math.log(2 * math.pi)
            logp = log_p1 + integral  # (k, B)
            values.append(logp.mean(0))
            if not exact:
                errors.append(logp.std(0) / math.sqrt(k))
        note = f"probability-flow ODE, dopri5 rtol={rtol} atol={atol}"
        if exact:
            return LogProb(torch.cat(values), "exact", nfe=nfe, note=note + ", exact divergence")
        note += f", Hutchinson trace estimator ({probes} Rademacher probes)"
        return LogProb(torch.cat(values), "ode-estimate", nfe, torch.cat(errors), note)


def _divergence(v: torch.Tensor, x: torch.Tensor, probe: torch.Tensor | None) -> torch.Tensor:
    """``∇·v`` per example, ``(k, B)``: exact (one backward pass per dimension, k = 1) or
    ``εᵀ (∂v/∂x) ε`` for each of the k probes ``ε`` (one vector-Jacobian product each)."""
    if probe is not None:
        rows = []
        for i, eps in enumerate(probe):
            (g,) = torch.autograd.grad(v, x, eps, retain_graph=i < len(probe) - 1)
            rows.append((g * eps).sum(-1))
        return torch.stack(rows)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(x.shape[1]):
        (g,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=i < x.shape[1] - 1)
        div = div + g[:, i]
    return div[None]
