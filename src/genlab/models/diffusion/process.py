"""Noise processes in the unified form ``x_t = s(t) · (x_0 + σ(t) · ε)`` (Karras et al. 2022, EDM).

A process is two scalar functions of time, the scale ``s(t)`` and the noise level ``σ(t)``, their
time derivatives (for the probability-flow ODE in ``t``), the inverse ``t(σ)``, the range of times
it is trained on and sampled over, and the law of the training times. Everything else (denoiser,
samplers, likelihood) is written once against ``(s, σ, D)``. Time runs from data (t ≈ 0) to noise
(t = t_hi) for every process.

| process       | s(t)        | σ(t)                       | reference                              |
|---------------|-------------|----------------------------|----------------------------------------|
| ``vp-linear`` | √ᾱ(t)       | √((1 − ᾱ)/ᾱ), linear β     | Ho et al. 2020; Song et al. 2021 (VP)  |
| ``vp-cosine`` | √ᾱ(t)       | √((1 − ᾱ)/ᾱ), cosine ᾱ     | Nichol & Dhariwal 2021                 |
| ``ve``        | 1           | σ_min (σ_max/σ_min)^t      | Song & Ermon 2019; Song et al. 2021    |
| ``edm``       | 1           | t                          | Karras et al. 2022                     |
| ``linear``    | 1 − t       | t / (1 − t)                | Lipman et al. 2023; Liu et al. 2023    |

All formulas accept a Python float (evaluated with :mod:`math`, so samplers can precompute their
per-step coefficients without tensor overhead) or a tensor (evaluated with :mod:`torch`).

A new process is one small subclass: ``s``, ``sigma``, ``t_of_sigma`` and, if the closed forms are
at hand, ``ds``/``dsigma`` (the base class differentiates ``s`` and ``σ`` numerically otherwise).
"""

from __future__ import annotations

import math

import torch

from genlab.errors import ConfigError
from genlab.registry import PROCESSES

Scalar = float | torch.Tensor


def _ops(t: Scalar):
    return torch if isinstance(t, torch.Tensor) else math


class Process:
    """Base class. ``t_min``/``t_max``: the training range of ``t``; ``t_lo``/``t_hi``: where
    samplers stop and start (``σ_min = σ(t_lo)``, ``σ_max = σ(t_hi)``) and the interval of the
    likelihood ODE. ``sigma_data`` is only used by EDM preconditioning/weighting."""

    name = ""
    t_min: float = 0.0
    t_max: float = 1.0
    t_lo: float = 1e-3
    t_hi: float = 1.0
    default_time_sampling = "uniform"

    def s(self, t: Scalar) -> Scalar:
        raise NotImplementedError

    def sigma(self, t: Scalar) -> Scalar:
        raise NotImplementedError

    def t_of_sigma(self, sigma: Scalar) -> Scalar:
        raise NotImplementedError

    def net_time(self, t: Scalar) -> Scalar:
        """What a network is told of the time: ``t`` itself for times on [0, 1]."""
        return t

    def ds(self, t: Scalar) -> Scalar:  # central difference unless overridden
        h = 1e-6
        return (self.s(t + h) - self.s(t - h)) / (2 * h)

    def dsigma(self, t: Scalar) -> Scalar:
        h = 1e-6
        return (self.sigma(t + h) - self.sigma(t - h)) / (2 * h)

    def s_sigma(self, t: Scalar) -> Scalar:
        """``s σ``, the coefficient of ε in ``x_t`` (overridden where ``s σ`` is 0·∞ at an end)."""
        return self.s(t) * self.sigma(t)

    def d_s_sigma(self, t: Scalar) -> Scalar:
        """``d(s σ)/dt``."""
        return self.ds(t) * self.sigma(t) + self.s(t) * self.dsigma(t)

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(self.t_lo))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(self.t_hi))

    def prior_std(self) -> float:
        """Std of the noise that sampling starts from, in ``x̂ = x / s`` units: ``√(1 + σ_max²)``
        (the marginal at ``t_hi`` of unit-variance data; exactly N(0, I) in ``x`` for VP)."""
        return math.sqrt(1.0 + self.sigma_max**2)

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; 0, s(t_hi)² (1 + σ_max²) I)`` per example, for ``x`` at ``t_hi``."""
        std = float(self.s(self.t_hi)) * self.prior_std()
        d = x[0].numel()
        sq = (x.reshape(len(x), -1) ** 2).sum(-1)
        return -0.5 * sq / std**2 - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)

    def sample_t(
        self, n: int, generator: torch.Generator | None, like: torch.Tensor, law: str = "default"
    ) -> torch.Tensor:
        """Training times ``(n,)``: ``uniform`` on ``[t_min, t_max]``, ``logit-normal`` (Esser
        et al. 2024, mapped into the range) or ``log-normal`` σ (EDM: ln σ ~ N(-1.2, 1.2²))."""
        law = self.default_time_sampling if law == "default" else law
        kw = {"generator": generator, "dtype": like.dtype, "device": like.device}
        if law == "uniform":
            u = torch.rand(n, **kw)
        elif law == "logit-normal":
            u = torch.sigmoid(torch.randn(n, **kw))
        elif law == "log-normal":
            sigma = torch.exp(-1.2 + 1.2 * torch.randn(n, **kw))
            return self.t_of_sigma(sigma).clamp(self.t_min, self.t_max)
        else:
            raise ValueError(f"unknown time law {law!r}")
        return self.t_min + (self.t_max - self.t_min) * u

    def __repr__(self) -> str:
        return f"{type(self).__name__}(σ ∈ [{self.sigma_min:.3g}, {self.sigma_max:.3g}])"


class _VP(Process):
    """Variance preserving: ``s = √ᾱ``, ``σ = √(1/ᾱ − 1)``; subclasses give ``log ᾱ(t)`` and its
    derivative, and the inverse of ``-log ᾱ``."""

    t_min = 1e-5
    t_lo = 1e-3

    def neg_log_alpha_bar(self, t: Scalar) -> Scalar:
        raise NotImplementedError

    def d_neg_log_alpha_bar(self, t: Scalar) -> Scalar:
        raise NotImplementedError

    def t_of_neg_log_alpha_bar(self, a: Scalar) -> Scalar:
        raise NotImplementedError

    def s(self, t):
        return _ops(t).exp(-0.5 * self.neg_log_alpha_bar(t))

    def sigma(self, t):
        return _ops(t).sqrt(_ops(t).expm1(self.neg_log_alpha_bar(t)))

    def t_of_sigma(self, sigma):
        return self.t_of_neg_log_alpha_bar(_ops(sigma).log1p(sigma**2))

    def ds(self, t):
        return -0.5 * self.d_neg_log_alpha_bar(t) * self.s(t)

    def dsigma(self, t):
        a = self.neg_log_alpha_bar(t)  # σ² = e^a − 1, so dσ/dt = e^a a' / (2σ)
        return 0.5 * _ops(t).exp(a) * self.d_neg_log_alpha_bar(t) / self.sigma(t)


@PROCESSES.register("vp-linear", help="DDPM / VP-SDE with a linear β(t) (β from 0.1 to 20)")
class VPLinear(_VP):
    """Continuous DDPM (Song et al. 2021): ``-log ᾱ(t) = β_min t + (β_max − β_min) t² / 2``, DDPM's
    1,000 linear β steps from 1e-4 to 0.02 at ``t = k / 1000`` to first order in β (the discrete
    product also has Σβ²/2: σ_max is 152 here, 157 for the discrete schedule)."""

    name = "vp-linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min, self.beta_max = beta_min, beta_max

    def neg_log_alpha_bar(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def d_neg_log_alpha_bar(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def t_of_neg_log_alpha_bar(self, a):
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return (_ops(a).sqrt(b0**2 + 2 * db * a) - b0) / db


@PROCESSES.register("vp-cosine", help="VP with the cosine ᾱ schedule of improved DDPM")
class VPCosine(_VP):
    """``ᾱ(t) = cos²(π/2 · (t + c)/(1 + c)) / cos²(π/2 · c/(1 + c))``, ``c = 0.008``; ``t_hi`` stops
    short of 1 where ᾱ reaches 0 (σ_max ≈ 160, like the linear schedule's)."""

    name = "vp-cosine"
    t_hi = 0.9946

    def __init__(self, offset: float = 0.008) -> None:
        self.c = offset
        self._log_f0 = 2 * math.log(math.cos(0.5 * math.pi * offset / (1 + offset)))

    def _angle(self, t):
        return 0.5 * math.pi * (t + self.c) / (1 + self.c)

    def neg_log_alpha_bar(self, t):
        return self._log_f0 - 2 * _ops(t).log(_ops(t).cos(self._angle(t)))

    def d_neg_log_alpha_bar(self, t):
        return math.pi / (1 + self.c) * _ops(t).tan(self._angle(t))

    def t_of_neg_log_alpha_bar(self, a):
        cos = _ops(a).exp(0.5 * (self._log_f0 - a))
        return _ops(a).acos(cos) * 2 * (1 + self.c) / math.pi - self.c


@PROCESSES.register("ve", help="variance exploding (SMLD / VE-SDE), geometric σ(t)")
class VE(Process):
    """``s = 1``, ``σ(t) = σ_min (σ_max/σ_min)^t`` on ``t ∈ [0, 1]`` (Song et al. 2021)."""

    name = "ve"
    t_lo = 0.0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.lo, self.log_ratio = sigma_min, math.log(sigma_max / sigma_min)

    def s(self, t):
        return t * 0 + 1.0

    def ds(self, t):
        return t * 0

    def sigma(self, t):
        return self.lo * _ops(t).exp(self.log_ratio * t)

    def dsigma(self, t):
        return self.log_ratio * self.sigma(t)

    def t_of_sigma(self, sigma):
        return _ops(sigma).log(sigma / self.lo) / self.log_ratio


@PROCESSES.register("edm", help="EDM: s = 1, σ = t, log-normal training σ (Karras et al. 2022)")
class EDM(Process):
    name = "edm"
    default_time_sampling = "log-normal"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        self.t_min = self.t_lo = sigma_min
        self.t_max = self.t_hi = sigma_max

    def s(self, t):
        return t * 0 + 1.0

    def ds(self, t):
        return t * 0

    def sigma(self, t):
        return t

    def dsigma(self, t):
        return t * 0 + 1.0

    def t_of_sigma(self, sigma):
        return sigma

    def net_time(self, t):
        """EDM's c_noise = ¼ ln σ: its time is σ, which spans [0.002, 80]."""
        return 0.25 * _ops(t).log(t)


@PROCESSES.register(
    "linear", help="linear path (flow matching / rectified flow): x_t = (1-t) x0 + t ε"
)
class Linear(Process):
    """``s = 1 − t``, ``σ = t/(1 − t)``: ``x_t = (1 − t) x_0 + t ε``. Trained on ``t ∈ [0, 1]``;
    sampling starts at ``t_hi = 1 − 10⁻⁴`` (σ ≈ 10⁴), where ``x`` is N(0, I) to 10⁻⁴."""

    name = "linear"
    t_hi = 1.0 - 1e-4

    def s(self, t):
        return 1.0 - t

    def ds(self, t):
        return t * 0 - 1.0

    def sigma(self, t):
        return t / (1.0 - t)

    def dsigma(self, t):
        return 1.0 / (1.0 - t) ** 2

    def t_of_sigma(self, sigma):
        return sigma / (1.0 + sigma)

    def s_sigma(self, t):
        return t

    def d_s_sigma(self, t):
        return t * 0 + 1.0


def make_process(name: str, sigma_min: float | None = None, sigma_max: float | None = None):
    """Build the registered process ``name``; ``sigma_min``/``sigma_max`` apply to VE and EDM.
    A bad combination is a :class:`ConfigError` naming the ``model.*`` keys."""
    cls = PROCESSES.get(name)
    kw = {k: v for k, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)) if v is not None}
    if kw and cls not in (VE, EDM):
        raise ConfigError(
            f"model: process {name!r} has a fixed σ range; sigma_min/sigma_max apply to ve, edm"
        )
    try:
        return cls(**kw)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
