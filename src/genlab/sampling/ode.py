"""Fixed-grid ODE solvers for a velocity field ``dx/dt = f(x, t)`` (used by FFJORD).

Diffusion-family models sample through the registered samplers of
:mod:`genlab.models.diffusion.samplers`, which work on the denoiser rather than on a drift. Every
solver here is a stateless function with one signature (k-diffusion's shape)::

    sampler(drift, x, ts, *, trajectory=False, **options) -> SampleResult

``drift(x, t)`` returns ``dx/dt`` for a batch ``x`` at a scalar time ``t`` (a 0-dim tensor);
``ts`` is the time grid, a 1-D tensor from the start time to the end time, passed in rather than held
as hidden state. In genlab time runs from noise (t = 1) to data (t = 0) for every continuous family,
so grids decrease; the samplers themselves do not care about the direction. Each call reports its
number of function evaluations (NFE).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from genlab.errors import ConfigError

Drift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SampleResult:
    """What a sampler returns: final states, the NFE spent and, on request, the whole path."""

    x: torch.Tensor  # (B, *shape)
    nfe: int
    trajectory: torch.Tensor | None = None  # (len(ts), B, *shape) for fixed-step samplers
    y: torch.Tensor | None = None  # the class labels of conditional samples


def time_grid(
    steps: int, t_start: float = 1.0, t_end: float = 0.0, *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """``steps + 1`` uniformly spaced times from ``t_start`` to ``t_end`` (inclusive)."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t_start, t_end, steps + 1, device=device, dtype=dtype)


def euler(
    drift: Drift, x: torch.Tensor, ts: torch.Tensor, *, trajectory: bool = False
) -> SampleResult:
    path = [x] if trajectory else None
    for i in range(len(ts) - 1):
        x = x + (ts[i + 1] - ts[i]) * drift(x, ts[i])
        if path is not None:
            path.append(x)
    return SampleResult(x, len(ts) - 1, torch.stack(path) if path is not None else None)


def midpoint(
    drift: Drift, x: torch.Tensor, ts: torch.Tensor, *, trajectory: bool = False
) -> SampleResult:
    path = [x] if trajectory else None
    for i in range(len(ts) - 1):
        h = ts[i + 1] - ts[i]
        x_mid = x + 0.5 * h * drift(x, ts[i])
        x = x + h * drift(x_mid, ts[i] + 0.5 * h)
        if path is not None:
            path.append(x)
    return SampleResult(x, 2 * (len(ts) - 1), torch.stack(path) if path is not None else None)


def dopri5(
    drift: Drift,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    trajectory: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> SampleResult:
    """Adaptive solve between ``ts[0]`` and ``ts[-1]``; the intermediate grid only sets where the
    trajectory is recorded (the step size is the solver's own). NFE is counted, not estimated."""
    from torchdiffeq import odeint

    nfe = 0

    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return drift(x, t)

    grid = ts if trajectory else ts[[0, -1]]
    # torchdiffeq integrates in the dtype of the time grid; keep float64 times for accuracy.
    out = odeint(f, x, grid.to(torch.float64), method="dopri5", rtol=rtol, atol=atol)
    return SampleResult(out[-1], nfe, out if trajectory else None)


def solve(
    name: str,
    drift: Drift,
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    trajectory: bool = False,
    **options,
) -> SampleResult:
    """Run the ODE solver ``name`` (``euler``, ``midpoint`` or ``dopri5``)."""
    if name not in ODE_SOLVERS:
        from difflib import get_close_matches

        close = get_close_matches(name, ODE_SOLVERS, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown ODE solver {name!r}{hint} (one of {', '.join(ODE_SOLVERS)})")
    sampler = ODE_SOLVERS[name]
    try:
        return sampler(drift, x, ts, trajectory=trajectory, **options)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise ConfigError(f"sampler {name!r}: {e}") from None
        raise


ODE_SOLVERS = {"euler": euler, "midpoint": midpoint, "dopri5": dopri5}
