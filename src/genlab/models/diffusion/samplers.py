"""Samplers written once against ``(s, σ, D)``: any sampler takes any trained continuous model.

Every sampler takes and returns the state ``x̂ = x / s`` along a grid of noise levels
``σ_0 > σ_1 > … > σ_N`` (the last one usually 0). In ``x̂`` every process is the same one,
``x̂ = x_0 + σ ε``, with the probability-flow ODE ``dx̂/dσ = ε̂(x̂; σ) = (x̂ − D(x̂; σ)) / σ``
(Karras et al. 2022, eq. 4 with s = 1): ``ddim``, ``ddpm``, ``euler-maruyama``, ``pc`` and
``dpmpp-2m`` step there (DDIM is the Euler step in σ; k-diffusion's samplers live there too).
``euler`` and ``heun`` follow EDM's Algorithm 1 instead: they step in the process's own time t on
``x = s x̂``, which for s ≡ 1, σ = t (EDM) is the same thing, and which stays accurate where σ
spans four decades in one step (the linear path, whose σ_max is 10⁴, and VP's first steps).

Signature (k-diffusion's shape, the grid passed in rather than held as state)::

    sampler(den, x, sigmas, *, generator=None, trajectory=False, process=None, **options)
        -> SampleResult(x, nfe, trajectory)

``den(x̂, σ) -> (D, ε̂)`` takes a Python float σ > 0 (see :mod:`.parameterization` for why ε̂ comes
with D). A step to σ = 0 returns ``D`` (the Euler step to zero). Grids may also increase (the
deterministic samplers then run the ODE towards noise: DDIM inversion). ``nfe`` counts calls of
``den``. Per-step coefficients are Python floats: no tensor work beyond the state update.

Step schedules (``sigma_schedule``): ``uniform`` in t, ``karras`` (ρ = 7), ``log-snr`` (uniform in
log σ).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from genlab.models.base import SampleResult
from genlab.progress import step_range
from genlab.registry import SAMPLERS

Denoiser = Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
SCHEDULES = ("uniform", "karras", "log-snr")


def sigma_schedule(
    name: str, steps: int, process, *, rho: float = 7.0, sigma_min=None, sigma_max=None
) -> list[float]:
    """``steps + 1`` noise levels from ``σ_max`` down to 0.

    - ``uniform``: ``t`` evenly spaced from ``t_hi`` towards ``t_lo`` (DDIM's "trailing" spacing:
      ``t_hi, t_hi − Δ, …, Δ`` on ``[t_lo, t_hi]``), then σ = 0;
    - ``karras``: ``(σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``, then 0;
    - ``log-snr``: log σ evenly spaced from ``σ_max`` to ``σ_min`` (DPM-Solver's choice), then 0.
    """
    if steps < 1:
        from genlab.errors import ConfigError

        raise ConfigError(f"steps must be at least 1, got {steps}")
    lo = process.sigma_min if sigma_min is None else sigma_min
    hi = process.sigma_max if sigma_max is None else sigma_max
    if name == "uniform":
        t_hi, t_lo = float(process.t_of_sigma(hi)), float(process.t_of_sigma(lo))
        ts = [t_hi + (t_lo - t_hi) * i / steps for i in range(steps)]
        sig = [float(process.sigma(t)) for t in ts]
    elif name == "karras":
        a, b = hi ** (1 / rho), lo ** (1 / rho)
        sig = [(a + i / max(steps - 1, 1) * (b - a)) ** rho for i in range(steps)]
    elif name == "log-snr":
        a, b = math.log(hi), math.log(lo)
        sig = [math.exp(a + i / max(steps - 1, 1) * (b - a)) for i in range(steps)]
    else:
        from genlab.errors import ConfigError

        raise ConfigError(f"unknown schedule {name!r}; one of {', '.join(SCHEDULES)}")
    return sig + [0.0]


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)


def _result(x, nfe, path):
    return SampleResult(x, nfe, torch.stack(path) if path is not None else None)


def _churn(x, sigma, i, n, generator, s_churn, s_tmin, s_tmax, s_noise):
    """EDM's stochastic "churn" (Algorithm 2): raise σ to σ̂ = σ (1 + γ) by adding fresh noise."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return x, sigma
    gamma = min(s_churn / n, math.sqrt(2) - 1)
    hat = sigma * (1 + gamma)
    return x + math.sqrt(hat**2 - sigma**2) * s_noise * _noise(x, generator), hat


_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")  # EDM's stochasticity options


class _Time:
    """The process at a noise level σ, as Python floats: ``t, s, ṡ, s σ̇`` (σ = 0 is the data end)."""

    __slots__ = ("sigma", "t", "s", "ds", "s_dsigma")

    def __init__(self, process, sigma: float) -> None:
        self.sigma = sigma
        if sigma == 0:
            return
        t = float(process.t_of_sigma(sigma))
        self.t, self.s, self.ds = t, float(process.s(t)), float(process.ds(t))
        self.s_dsigma = self.s * float(process.dsigma(t))

    def drift(self, xhat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``dx/dt = ṡ x̂ + s σ̇ ε̂`` (Karras et al. 2022, eq. 4)."""
        return self.ds * xhat + self.s_dsigma * eps


def _edm_ode(
    den: Denoiser,
    x,
    sigmas,
    *,
    second_order: bool,
    generator=None,
    trajectory=False,
    process=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
) -> SampleResult:
    """EDM Algorithms 1-2 for any ``s(t), σ(t)``: Euler (or Heun) steps on the probability-flow
    ODE in the process's own time ``t``, on the state ``x = s x̂``; the step to σ = 0 is ``D``."""
    if process is None:
        raise ValueError("this sampler needs the process (it steps in t)")
    path = [x] if trajectory else None
    n, nfe = len(sigmas) - 1, 0
    cur = _Time(process, sigmas[0])
    for i in step_range(n):
        x, sig = _churn(x, sigmas[i], i, n, generator, s_churn, s_tmin, s_tmax, s_noise)
        if sig != cur.sigma:
            cur = _Time(process, sig)
        nxt = _Time(process, sigmas[i + 1])
        d, eps = den(x, sig)
        nfe += 1
        if nxt.sigma == 0:
            x = d
        else:
            f = cur.drift(x, eps)
            dt = nxt.t - cur.t
            x1 = (cur.s * x + dt * f) / nxt.s
            if second_order:
                _, eps1 = den(x1, nxt.sigma)
                nfe += 1
                x1 = (cur.s * x + (0.5 * dt) * (f + nxt.drift(x1, eps1))) / nxt.s
            x = x1
        cur = nxt
        if path is not None:
            path.append(x)
    return _result(x, nfe, path)


@SAMPLERS.register(
    "euler",
    help="Euler on the probability-flow ODE in t (EDM Alg. 1, S_churn)",
    ode=True,
    noise_options=_CHURN,
)
def euler(
    den: Denoiser,
    x,
    sigmas,
    *,
    generator=None,
    trajectory=False,
    process=None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> SampleResult:
    """On the linear path this is flow matching's Euler step, and it equals DDIM; for s ≡ 1
    (VE, EDM) it is k-diffusion's Euler. NFE = N. ``s_churn``, ``s_tmin``, ``s_tmax``,
    ``s_noise``: EDM's stochasticity (Algorithm 2; off by default)."""
    return _edm_ode(
        den, x, sigmas, second_order=False, generator=generator, trajectory=trajectory,
        process=process, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
    )  # fmt: skip


@SAMPLERS.register(
    "heun",
    help="Heun (2nd order) on the probability-flow ODE in t, EDM Alg. 1-2",
    ode=True,
    noise_options=_CHURN,
)
def heun(
    den: Denoiser,
    x,
    sigmas,
    *,
    generator=None,
    trajectory=False,
    process=None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> SampleResult:
    """Euler step plus a trapezoidal correction, except on the last step to σ = 0 (EDM); with
    ``s_churn > 0`` it is EDM's stochastic sampler. NFE = 2 N − 1 for a grid ending at 0."""
    return _edm_ode(
        den, x, sigmas, second_order=True, generator=generator, trajectory=trajectory,
        process=process, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
    )  # fmt: skip


@SAMPLERS.register(
    "ddim",
    help="DDIM with η (0: deterministic, 1: DDPM ancestral); 1 NFE/step",
    ode=True,
    noise_options=("eta",),
)
def ddim(
    den: Denoiser, x, sigmas, *, generator=None, trajectory=False, process=None, eta: float = 0.0
) -> SampleResult:
    """Song et al. (2021a), eq. 12, in σ space: ``x̂' = D + √(σ'² − ŝ²) ε̂ + ŝ z`` with the
    ancestral std ``ŝ = η σ' √(σ² − σ'²) / σ`` (the VP factors cancel, so it holds for every
    process). η = 0 is exactly the Euler step; η = 1 is DDPM's posterior sample."""
    path = [x] if trajectory else None
    n = len(sigmas) - 1
    for i in step_range(n):
        sig, nxt = sigmas[i], sigmas[i + 1]
        d, eps = den(x, sig)
        if nxt == 0:
            x = d
        else:
            up = eta * nxt * math.sqrt(max(sig**2 - nxt**2, 0.0)) / sig
            x = d + math.sqrt(nxt**2 - up**2) * eps
            if up > 0:
                x = x + up * _noise(x, generator)
        if path is not None:
            path.append(x)
    return _result(x, n, path)


@SAMPLERS.register(
    "ddpm", help="DDPM ancestral sampling (posterior q(x_s | x_t, D)); 1 NFE/step", ode=False
)
def ddpm(
    den: Denoiser, x, sigmas, *, generator=None, trajectory=False, process=None
) -> SampleResult:
    """Ho et al. (2020), Algorithm 2 with the posterior variance β̃: the mean
    ``D + (σ'/σ)² (x̂ − D)`` and std ``σ' √(σ² − σ'²) / σ``, i.e. DDIM with η = 1."""
    return ddim(den, x, sigmas, generator=generator, trajectory=trajectory, eta=1.0)


@SAMPLERS.register(
    "euler-maruyama", help="Euler–Maruyama on the reverse SDE; 1 NFE/step", ode=False
)
def euler_maruyama(
    den: Denoiser, x, sigmas, *, generator=None, trajectory=False, process=None
) -> SampleResult:
    """The reverse SDE ``dx̂ = −2σ ∇log p dσ + √(2σ) dw̄`` (Song et al. 2021, eq. 6, in σ space):
    ``x̂' = x̂ + 2 (σ' − σ) ε̂ + √(2σ (σ − σ')) z``; the last step to 0 is the denoiser."""
    path = [x] if trajectory else None
    n = len(sigmas) - 1
    for i in step_range(n):
        sig, nxt = sigmas[i], sigmas[i + 1]
        d, eps = den(x, sig)
        if nxt == 0:
            x = d
        else:
            x = x + 2 * (nxt - sig) * eps + math.sqrt(2 * sig * (sig - nxt)) * _noise(x, generator)
        if path is not None:
            path.append(x)
    return _result(x, n, path)


@SAMPLERS.register(
    "pc",
    help="predictor-corrector: ancestral predictor + Langevin corrector (target SNR)",
    ode=False,
)
def predictor_corrector(
    den: Denoiser,
    x,
    sigmas,
    *,
    generator=None,
    trajectory=False,
    process=None,
    snr: float = 0.16,
    corrector_steps: int = 1,
) -> SampleResult:
    """Song et al. (2021), Algorithms 2-3: after each reverse-diffusion (ancestral) predictor step
    to σ', ``corrector_steps`` Langevin steps ``x̂ += δ ∇log p + √(2δ) z`` at σ' with the step
    ``δ = 2 (snr ‖z‖ / ‖∇log p‖)²`` (norms averaged over the batch, as in the paper's code:
    per-example norms make δ explode where the score happens to be small).
    NFE = (1 + corrector_steps) per step, but 1 on the last (the denoiser)."""
    path = [x] if trajectory else None
    n, nfe = len(sigmas) - 1, 0
    for i in step_range(n):
        sig, nxt = sigmas[i], sigmas[i + 1]
        d, eps = den(x, sig)
        nfe += 1
        if nxt == 0:
            x = d
        else:
            up = nxt * math.sqrt(sig**2 - nxt**2) / sig
            x = d + (nxt**2 / sig) * eps + up * _noise(x, generator)
            for _ in range(corrector_steps):
                _, eps = den(x, nxt)
                nfe += 1
                score = eps / -nxt  # ∇_x̂ log p = −ε̂/σ
                z = _noise(x, generator)
                g = score.reshape(len(x), -1).norm(dim=-1).mean()
                zn = z.reshape(len(x), -1).norm(dim=-1).mean()
                step = 2 * (snr * zn / g.clamp_min(1e-30)) ** 2
                x = x + step * score + torch.sqrt(2 * step) * z
        if path is not None:
            path.append(x)
    return _result(x, nfe, path)


@SAMPLERS.register(
    "dpmpp-2m", help="DPM-Solver++(2M), multistep 2nd order in log σ; 1 NFE/step", ode=True
)
def dpmpp_2m(
    den: Denoiser, x, sigmas, *, generator=None, trajectory=False, process=None
) -> SampleResult:
    """Lu et al. (2022b), Algorithm 2 (data prediction, multistep), in λ = −log σ:
    ``x̂' = (σ'/σ) x̂ − (e^{−h} − 1) D̃``, ``D̃ = (1 + 1/(2r)) D_i − 1/(2r) D_{i−1}``, ``r = h_{i−1}/h``;
    the first step uses ``D_i`` alone (DDIM) and the step to σ = 0 returns ``D``."""
    path = [x] if trajectory else None
    n = len(sigmas) - 1
    d_old, h_old = None, None
    for i in step_range(n):
        sig, nxt = sigmas[i], sigmas[i + 1]
        d, _ = den(x, sig)
        if nxt == 0:
            x = d
        else:
            h = math.log(sig) - math.log(nxt)
            if d_old is None:
                dd = d
            else:
                r = h_old / h
                dd = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_old
            x = (nxt / sig) * x - math.expm1(-h) * dd
            d_old, h_old = d, h
        if path is not None:
            path.append(x)
    return _result(x, n, path)


def probability_flow(den: Denoiser, process, lo: float, hi: float):
    """``f(x, t) = dx/dt = ṡ x̂ + s σ̇ ε̂``, the probability-flow ODE in the process's own time on
    ``x = s x̂`` (Karras et al. 2022, eq. 4), for ``dopri5`` and the likelihood. ``t`` is clamped
    to ``[lo, hi]``: torchdiffeq's first-step heuristic may probe outside the interval."""

    def drift(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = min(max(float(t), lo), hi)
        s = float(process.s(t))
        xh = x / s
        _, eps = den(xh, float(process.sigma(t)))
        return float(process.ds(t)) * xh + s * float(process.dsigma(t)) * eps

    return drift


@SAMPLERS.register(
    "dopri5",
    help="adaptive Dormand-Prince 5(4) on the probability-flow ODE in t (torchdiffeq)",
    ode=True,
)
def dopri5(
    den: Denoiser,
    x,
    sigmas,
    *,
    generator=None,
    trajectory=False,
    process=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> SampleResult:
    """Solves ``dx/dt = ṡ x̂ + s σ̇ ε̂`` in the process's own time from ``t(σ_0)`` down to ``t_lo``
    (σ_min) when the grid ends at 0, then applies the denoiser; otherwise to the grid's last σ.
    The grid's inner points only set where a trajectory is recorded. NFE is counted."""
    from torchdiffeq import odeint

    from genlab.errors import ode_solver_errors

    if process is None:
        raise ValueError("dopri5 needs the process (it integrates in t)")
    pos = [s for s in sigmas if s > 0]
    if sigmas[-1] == 0 and pos[-1] > process.sigma_min:
        pos.append(process.sigma_min)
    ts = torch.tensor([float(process.t_of_sigma(s)) for s in pos], dtype=torch.float64)
    flow = probability_flow(den, process, float(ts.min()), float(ts.max()))
    nfe = 0

    def drift(t: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return flow(xt, t)

    grid = ts if trajectory else ts[[0, -1]]
    s0, s1 = float(process.s(float(ts[0]))), float(process.s(float(ts[-1])))
    if len(ts) == 1:
        out = (x * s0)[None]
    else:
        with ode_solver_errors("dopri5 sampling"):
            out = odeint(drift, x * s0, grid.to(x.device), method="dopri5", rtol=rtol, atol=atol)
    xh = out[-1] / s1
    if sigmas[-1] == 0:
        xh, _ = den(xh, pos[-1])
        nfe += 1
    path = None
    if trajectory:
        path = [o / float(process.s(float(t))) for o, t in zip(out, grid)]
        if sigmas[-1] == 0:  # the grid's positive σ, then the denoised end
            path = path[: len(sigmas) - 1] + [xh]
    return _result(xh, nfe, path)


# --- the driver every continuous model samples through ----------------------------------------
_COMMON = ("generator", "trajectory", "process")


def sampler_options(name: str) -> dict[str, Any]:
    """The options sampler ``name`` takes beyond the common ones, with their defaults
    (``{"eta": 0.0}`` for ``ddim``): what ``sample(..., sampler=name, **options)`` accepts."""
    params = inspect.signature(SAMPLERS.get(name)).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON and p.default is not p.empty
    }


def ode_samplers() -> list[str]:
    """The registered samplers that solve the probability-flow ODE (no noise added by default;
    their ``noise_options`` add it)."""
    return [e.name for e in SAMPLERS if e.meta.get("ode")]


def run_sampler(
    name: str,
    den: Denoiser,
    process,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    generator: torch.Generator | None = None,
    trajectory: bool = False,
    **options: Any,
) -> SampleResult:
    """Sample with the registered sampler ``name`` from the state ``x = x̂`` at ``sigmas[0]``
    along the grid ``sigmas``; a recorded trajectory is returned in ``x = s x̂`` units."""
    fn = SAMPLERS.get(name)
    out = fn(den, x, sigmas, generator=generator, trajectory=trajectory, process=process, **options)
    if out.trajectory is not None and len(out.trajectory) == len(sigmas):
        scale = [float(process.s(process.t_of_sigma(s))) if s > 0 else 1.0 for s in sigmas]
        shape = (-1, *([1] * (out.trajectory.dim() - 1)))
        out.trajectory = out.trajectory * torch.tensor(
            scale, dtype=out.trajectory.dtype, device=out.trajectory.device
        ).reshape(shape)
    return out
