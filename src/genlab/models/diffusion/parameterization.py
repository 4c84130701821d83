"""What the network predicts, and how each prediction becomes the denoiser ``D(x̂; σ) ≈ E[x_0 | x]``.

Write ``x̂ = x / s = x_0 + σ ε``. Every parameterization is an affine map of the network output
``F``: ``D = a · x̂ + b · F``, so it converts to ``D`` (and back) without loss. Each also gives
``ε̂ = (x̂ − D) / σ`` in a form that does not cancel at small σ (samplers step with ``ε̂``), its
regression target ``F*`` from ``(x_0, ε)`` (the training loss is computed on ``F`` against
``F*``, again without cancellation), and the gain ``b = ∂D/∂F`` that turns a weighting of the
denoiser error into a weighting of ``F``'s: ``‖D − x_0‖² = b² ‖F − F*‖²``.

| name       | network predicts                                   | D                                     |
|------------|----------------------------------------------------|---------------------------------------|
| ``eps``    | ε (DDPM)                                           | x̂ − σ F                               |
| ``x0``     | x_0                                                | F                                     |
| ``v``      | (ε − σ x_0)/√(1+σ²) (Salimans & Ho 2022)           | x̂/(1+σ²) − σ F/√(1+σ²)                |
| ``score``  | ∇ₓ log p_t(x) in x (Song et al. 2021)              | x̂ + s σ² F                            |
| ``velocity``| dx/dt along the path (flow matching)              | x̂ − σ (F − ṡ x̂)/(s σ̇)                 |
| ``edm``    | EDM preconditioning (Karras et al. 2022, Table 1)  | c_skip x̂ + c_out F(c_in x̂; c_noise)  |

For all but ``edm`` the network sees ``(x, t)``; with ``edm`` it sees ``(c_in x̂, ¼ ln σ)``, so EDM
preconditioning works under any process.

Coefficients may be Python floats (the samplers' per-step scalars) or tensors shaped to broadcast
against a batch (training).
"""

from __future__ import annotations

import math

import torch

PARAMETERIZATIONS = ("eps", "x0", "v", "score", "velocity", "edm")
WEIGHTINGS = ("native", "eps", "x0", "v", "velocity", "edm", "min-snr", "likelihood")


def _sqrt(v):
    return torch.sqrt(v) if isinstance(v, torch.Tensor) else math.sqrt(v)


def _log(v):
    return torch.log(v.clamp_min(1e-20)) if isinstance(v, torch.Tensor) else math.log(max(v, 1e-20))


class Coefs:
    """The process at one time (or a batch of times): ``t, s, σ, ṡ, σ̇`` and ``d(sσ)/dt``."""

    __slots__ = ("t", "s", "sigma", "ds", "dsigma", "d_s_sigma")

    def __init__(self, process, t):
        self.t = t
        self.s, self.sigma = process.s(t), process.sigma(t)
        self.ds, self.dsigma = process.ds(t), process.dsigma(t)
        self.d_s_sigma = process.d_s_sigma(t)


def net_input(param: str, x: torch.Tensor, c: Coefs, process, sigma_data: float):
    """``(x_in, t_in)`` for the network, from ``x`` (the state in x space, ``= s x̂``): with EDM
    preconditioning ``(c_in x̂, c_noise = ¼ ln σ)``, else ``(x, the process's network time)``."""
    if param == "edm":
        c_in = 1.0 / (c.s * _sqrt(c.sigma**2 + sigma_data**2))  # x / s = x̂
        return x * c_in, 0.25 * _log(c.sigma)
    return x, process.net_time(c.t)


def denoise(param: str, f: torch.Tensor, xhat: torch.Tensor, c: Coefs, sigma_data: float):
    """``(D, ε̂)`` from the network output ``f`` at ``x̂`` (both stable as σ → 0 where the
    parameterization allows it)."""
    sig = c.sigma
    if param == "eps":
        return xhat - sig * f, f
    if param == "x0":
        return f, (xhat - f) / sig
    if param == "v":
        r = _sqrt(1.0 + sig**2)
        eps = (sig * xhat) / r**2 + f / r
        return xhat / r**2 - (sig / r) * f, eps
    if param == "score":
        eps = -(c.s * sig) * f
        return xhat - sig * eps, eps
    if param == "velocity":
        eps = (f - c.ds * xhat) / (c.s * c.dsigma)
        return xhat - sig * eps, eps
    if param == "edm":
        r = _sqrt(sig**2 + sigma_data**2)
        skip, out = sigma_data**2 / r**2, sig * sigma_data / r
        eps = (sig / r**2) * xhat - (sigma_data / r) * f
        return skip * xhat + out * f, eps
    raise ValueError(f"unknown parameterization {param!r}")


def target(param: str, x0: torch.Tensor, eps: torch.Tensor, c: Coefs, sigma_data: float):
    """The regression target ``F*`` for the network at ``x = s (x_0 + σ ε)``."""
    sig = c.sigma
    if param == "eps":
        return eps
    if param == "x0":
        return x0
    if param == "v":
        return (eps - sig * x0) / _sqrt(1.0 + sig**2)
    if param == "score":
        return -eps / (c.s * sig)
    if param == "velocity":  # d/dt [s x0 + (s σ) ε]
        return c.ds * x0 + c.d_s_sigma * eps
    if param == "edm":
        return (sig * x0 - sigma_data**2 * eps) / (sigma_data * _sqrt(sig**2 + sigma_data**2))
    raise ValueError(f"unknown parameterization {param!r}")


def gain(param: str, c: Coefs, sigma_data: float):
    """``b = ∂D/∂F``: ``D − x_0 = b (F − F*)``."""
    sig = c.sigma
    if param == "eps":
        return -sig
    if param == "x0":
        return 1.0 + 0 * sig
    if param == "v":
        return -sig / _sqrt(1.0 + sig**2)
    if param == "score":
        return c.s * sig**2
    if param == "velocity":
        return -sig / (c.s * c.dsigma)
    if param == "edm":
        return sig * sigma_data / _sqrt(sig**2 + sigma_data**2)
    raise ValueError(f"unknown parameterization {param!r}")


def weight(name: str, c: Coefs, sigma_data: float, min_snr_gamma: float = 5.0):
    """``λ(σ)`` of the denoiser loss ``λ ‖D − x_0‖²`` for a named weighting:

    - ``eps``: 1/σ² (DDPM's simple loss; equal to denoising score matching with λ = σ²),
    - ``x0``: 1,  ``v``: (1 + σ²)/σ²,  ``edm``: (σ² + σ_d²)/(σ σ_d)²,
    - ``velocity``: (s σ̇/σ)² (flow matching's velocity loss),
    - ``min-snr``: min(1/σ², γ) (Hang et al. 2023, γ = 5),
    - ``likelihood``: g²/σ⁴ with g² = dσ²/dt = 2σσ̇ (Song et al. 2021, "Maximum likelihood
      training of score-based diffusion models"; an upper bound on the NLL up to a constant).
    """
    sig = c.sigma
    if name == "eps":
        return 1.0 / sig**2
    if name == "x0":
        return 1.0 + 0 * sig
    if name == "v":
        return (1.0 + sig**2) / sig**2
    if name == "edm":
        return (sig**2 + sigma_data**2) / (sig * sigma_data) ** 2
    if name == "velocity":
        return (c.s * c.dsigma / sig) ** 2
    if name == "min-snr":
        snr = 1.0 / sig**2
        return (
            torch.clamp(snr, max=min_snr_gamma)
            if isinstance(snr, torch.Tensor)
            else min(snr, min_snr_gamma)
        )
    if name == "likelihood":
        return 2 * c.dsigma / sig**3
    raise ValueError(f"unknown weighting {name!r}")
