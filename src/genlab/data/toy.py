"""Two-dimensional toy distributions whose law is known: samplers and log-densities.

Every law is a :class:`~genlab.data.base.TrueDistribution` subclass that draws i.i.d. float64
points from the ``torch.Generator`` it is given (nothing else), so a seed reproduces a data set
exactly. The definitions follow the toy sets of the literature (scikit-learn's ``make_moons`` /
``make_circles`` / ``make_swiss_roll``; the FFJORD toy set, Grathwohl et al. 2019,
``lib/toy_data.py``; the 25-Gaussian grid of Gulrajani et al. 2017; the 2D-ring and 2D-grid of the
mode-collapse protocol of VEEGAN and PacGAN), except that positions along an arc are drawn at
random instead of on an even grid, so the data are truly i.i.d. Every set lies roughly in
``[-4, 4]^2``.

Log-densities are in nats. ``log_prob_kind`` says how they are computed: ``"exact"`` (closed form),
``"quadrature"`` (a 1-D integral along the generating curve by composite Gauss-Legendre, accurate
to ~1e-7 in log space) or ``None`` (no density).

Each law is registered twice: in :data:`TOY` (name -> class, for metrics that need the law) and
in :data:`genlab.registry.DATASETS` (name -> loader, for :func:`genlab.data.load`). Constructor
fields (e.g. ``load("moons", noise=0.1)``) are the loader's options.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch

from genlab.data.base import Dataset, TrueDistribution, check_fractions, split
from genlab.errors import DataError
from genlab.registry import DATASETS

TOY: dict[str, type[TrueDistribution]] = {}
"""Name -> :class:`TrueDistribution` subclass (call it for the default law: ``TOY["moons"]()``)."""

DEFAULT_N = 50_000
_LOG_2PI = math.log(2 * math.pi)
_CHUNK = 2048  # points per block in the quadratures: (2048, ~1000 nodes) float64 = 16 MB


def _toy(name: str, help: str) -> Callable[[type[TrueDistribution]], type[TrueDistribution]]:
    """Class decorator: put the law in :data:`TOY` and its data-set loader in ``DATASETS``."""

    def add(cls: type[TrueDistribution]) -> type[TrueDistribution]:
        TOY[name] = cls
        DATASETS.register(name, _toy_loader(name, cls), help=help)
        return cls

    return add


def _toy_loader(name: str, cls: type[TrueDistribution]) -> Callable[..., Dataset]:
    def load_toy(
        *,
        n: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        **params: float,
    ) -> Dataset:
        true = cls(**_check_params(name, cls, params))
        n = DEFAULT_N if n is None else int(n)
        x = true.sample(n, torch.Generator().manual_seed(int(seed))).to(torch.float32)
        if not torch.isfinite(x).all():
            raise DataError(
                f"data set {name!r} with options {params} draws points beyond float32 range"
            )
        check_fractions(val_fraction, test_fraction)
        # a known law has no test part: its evaluation draws fresh samples of the law
        train, val, _ = split(n, val_fraction, seed)
        meta = {"source": f"toy:{name}", "log_prob_kind": true.log_prob_kind, "params": params}
        return Dataset(name, "points", x[train], x[val], true=true, meta=meta)

    # Expose the law's fields as keyword options, so `load` can name an unknown option.
    base = [p for p in inspect.signature(load_toy).parameters.values() if p.kind != p.VAR_KEYWORD]
    extra = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
        for f in fields(cls)  # type: ignore[arg-type]
    ]
    load_toy.__signature__ = inspect.Signature(base + extra)  # type: ignore[attr-defined]
    load_toy.__doc__ = cls.__doc__
    return load_toy


_POSITIVE = {"noise", "std", "radial_std", "tangential_std", "box", "arms"}  # scales and counts


def _check_params(name: str, cls: type[TrueDistribution], params: dict) -> dict:
    """The law's options, checked against its fields: finite numbers (integers where the field is
    an ``int``), positive for scales and counts; anything else is a :class:`DataError`."""
    types = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
    for key, v in params.items():
        integer = types[key] in ("int", int)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (not integer or v == int(v)) and (key not in _POSITIVE or v > 0)
        if not ok:
            what = "an integer" if integer else "a finite number"
            raise DataError(
                f"data set {name!r}: option {key}={v!r} must be {what}"
                + (" > 0" if key in _POSITIVE else "")
            )
        params[key] = int(v) if integer else float(v)
    return params


# ---------------------------------------------------------------------------------------------
# Laws given by noisy curves: x = gamma_k(t) + noise, k uniform over the components, t uniform.
# ---------------------------------------------------------------------------------------------


class _NoisyCurves(TrueDistribution):
    """Equal-weight mixture over ``components`` curves ``gamma_k(t)``, ``t ~ U[t0, t1]``, plus
    isotropic Gaussian noise of std :meth:`sigma`.

    The density ``p(x) = (1/K) sum_k int N(x; gamma_k(t), sigma^2 I) dt / (t1 - t0)`` is computed
    by composite Gauss-Legendre quadrature in ``t`` (``panels`` panels of ``nodes`` nodes each, a
    logsumexp over nodes), chunked over ``x``. Panels are chosen about one noise std long along the
    curve, where an 8-node rule is accurate to float64 round-off.
    """

    log_prob_kind: str | None = "quadrature"
    components: int = 1
    t_range: tuple[float, float] = (0.0, 1.0)
    panels: int = 64
    nodes: int = 8

    def curve(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Noise-free point of component ``k`` (int64) at parameter ``t``; ``(n,), (n,) -> (n, 2)``."""
        raise NotImplementedError

    def sigma(self) -> float:
        """Std of the isotropic Gaussian noise, in output units."""
        raise NotImplementedError

    def param(self, u: torch.Tensor) -> torch.Tensor:
        """Curve parameter from ``u ~ U[0, 1]`` (default: uniform on ``t_range``)."""
        t0, t1 = self.t_range
        return t0 + (t1 - t0) * u

    def log_param_density(self, t: torch.Tensor) -> torch.Tensor:
        """Log-density of the curve parameter (default: uniform on ``t_range``)."""
        t0, t1 = self.t_range
        return torch.full_like(t, -math.log(t1 - t0))

    def draw_noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` draws of the noise, ``(n, 2)``."""
        return self.sigma() * torch.randn(n, 2, generator=generator, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.randint(self.components, (n,), generator=generator)
        t = self.param(torch.rand(n, generator=generator, dtype=torch.float64))
        return self.curve(k, t) + self.draw_noise(n, generator)

    def quadrature_nodes(self, panels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Curve points of every component at the quadrature nodes ``(m, 2)`` and their log-weights
        ``(m,)`` (they sum to 1: mixture weight times parameter density times the node weight)."""
        panels = panels or self.panels
        xi, w = np.polynomial.legendre.leggauss(self.nodes)
        edges = torch.linspace(*self.t_range, panels + 1, dtype=torch.float64)
        half = (edges[1:] - edges[:-1])[:, None] / 2  # (P, 1)
        t = ((edges[:-1] + edges[1:])[:, None] / 2 + half * torch.from_numpy(xi)).reshape(-1)
        lw = (half * torch.from_numpy(w)).reshape(-1).log() + self.log_param_density(t)
        k = torch.arange(self.components).repeat_interleave(len(t))
        centers = self.curve(k, t.repeat(self.components))
        return centers, lw.repeat(self.components) - math.log(self.components)

    def log_prob(self, x: torch.Tensor, panels: int | None = None) -> torch.Tensor:
        """Log-density (nats) by quadrature along the curves, accurate to ~1e-7 where it is above
        -50 (relative accuracy degrades slowly further out); ``panels`` overrides the default."""
        x = torch.as_tensor(x, dtype=torch.float64)
        centers, lw = self.quadrature_nodes(panels)
        out = [self._log_prob_chunk(xc, centers, lw) for xc in x.split(_CHUNK)]
        return torch.cat(out) if out else x.new_zeros(0)

    def _log_prob_chunk(
        self, x: torch.Tensor, centers: torch.Tensor, lw: torch.Tensor
    ) -> torch.Tensor:
        # log sum_j w_j N(x; c_j, s^2 I), with -|x - c|^2 / 2s^2 expanded so the (n, m) block is
        # one addmm: (x . c_j) / s^2 + [lw_j - |c_j|^2 / 2s^2], then -|x|^2 / 2s^2 per row.
        s2 = self.sigma() ** 2
        logits = torch.addmm(lw - (centers * centers).sum(1) / (2 * s2), x, centers.T / s2)
        return torch.logsumexp(logits, 1) - (x * x).sum(1) / (2 * s2) - math.log(2 * math.pi * s2)


@_toy("moons", help="two interleaved half circles (sklearn make_moons, noise 0.05, x2 scale)")
@dataclass
class Moons(_NoisyCurves):
    """scikit-learn's ``make_moons(noise=0.05)`` with i.i.d. arc positions, mapped by
    ``x -> 2 (x - (0.5, 0.25))``.

    Moon ``k ~ Bernoulli(1/2)``, ``theta ~ U[0, pi]``; outer point ``(cos theta, sin theta)``,
    inner ``(1 - cos theta, 0.5 - sin theta)``; plus ``N(0, noise^2 I)``; then the map. After the
    map the arcs are half circles of radius 2 centred at (-1, -0.5) and (1, 0.5) and the noise
    std is ``2 * noise = 0.1``. The mean NLL of this law is ~1.679 nats.
    """

    noise: float = 0.05  # std in scikit-learn units (before the x2 map)

    components = 2
    t_range = (0.0, math.pi)
    panels = 40  # arc length 2 pi / 40 ~ 1.6 noise stds per 8-node panel

    def sigma(self) -> float:
        return 2 * self.noise

    def curve(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        outer = torch.stack([torch.cos(t) - 0.5, torch.sin(t) - 0.25], 1)
        return 2 * torch.where((k == 0)[:, None], outer, -outer)  # inner = -outer after the map


@_toy("circles", help="two concentric noisy rings of radii 2 and 1 (sklearn make_circles x2)")
@dataclass
class Circles(_NoisyCurves):
    """scikit-learn's ``make_circles(factor=0.5, noise=0.05)`` with i.i.d. angles, scaled by 2:
    rings of radius 2 and 1 (equal weight), noise std ``2 * noise = 0.1``.

    Exact density: a ring of radius ``r`` blurred by ``N(0, s^2 I)`` has density
    ``exp(-(|x|^2 + r^2) / (2 s^2)) I0(r |x| / s^2) / (2 pi s^2)``, evaluated with the
    exponentially scaled Bessel function ``i0e`` for stability.
    """

    noise: float = 0.05  # std in scikit-learn units (before the x2 scale)
    factor: float = 0.5  # inner radius / outer radius

    log_prob_kind = "exact"
    components = 2
    t_range = (0.0, 2 * math.pi)
    panels = 128  # used only by the quadrature cross-check in the tests

    def sigma(self) -> float:
        return 2 * self.noise

    def radii(self) -> tuple[float, float]:
        return 2.0, 2.0 * self.factor

    def curve(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r = torch.tensor(self.radii(), dtype=torch.float64)[k]
        return r[:, None] * torch.stack([torch.cos(t), torch.sin(t)], 1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = torch.as_tensor(x, dtype=torch.float64)
        s2 = self.sigma() ** 2
        rho = x.norm(dim=1, keepdim=True)  # (n, 1)
        r = torch.tensor(self.radii(), dtype=torch.float64)  # (2,)
        # log[exp(-(rho^2 + r^2)/2s^2) I0(r rho/s^2)] = -(rho - r)^2/2s^2 + log i0e(r rho/s^2)
        ring = -((rho - r) ** 2) / (2 * s2) + torch.special.i0e(r * rho / s2).log()
        return torch.logsumexp(ring, dim=1) - math.log(2) - math.log(2 * math.pi * s2)


@_toy("swissroll", help="2-D Swiss roll (sklearn make_swiss_roll (x, z) / 5, FFJORD)")
@dataclass
class SwissRoll(_NoisyCurves):
    """The 2-D Swiss roll of FFJORD: scikit-learn's ``make_swiss_roll(noise=1.0)``, columns
    ``(x, z)``, divided by 5. ``t ~ U[1.5 pi, 4.5 pi]``, point ``t (cos t, sin t) / 5`` plus
    ``N(0, (noise / 5)^2 I)`` (std 0.2); radius up to ~2.8. Density by quadrature in ``t``.
    """

    noise: float = 1.0  # std in scikit-learn units (before the /5)

    t_range = (1.5 * math.pi, 4.5 * math.pi)
    panels = 64  # arc length ~17.8 / 64 ~ 1.4 noise stds per 8-node panel

    def sigma(self) -> float:
        return self.noise / 5

    def curve(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return t[:, None] * torch.stack([torch.cos(t), torch.sin(t)], 1) / 5


@_toy("spirals", help="two interleaved spirals (FFJORD '2spirals')")
@dataclass
class TwoSpirals(_NoisyCurves):
    """FFJORD's ``2spirals`` with i.i.d. arms. Angle ``t = 3 pi u``, ``u = sqrt(U[0, 1])`` (density
    ``2u``); arm 0 is ``(-t cos t + 0.5 b1, t sin t + 0.5 b2) / 3`` with ``b ~ U[0, 1]^2``, arm 1
    its negation; plus ``N(0, 0.1^2 I)``. The noise is thus a box of side ``1/6`` convolved with a
    Gaussian, of density ``prod_i [Phi((d_i + w/2)/s) - Phi((d_i - w/2)/s)] / w`` about the box
    centre. Density by quadrature in ``u``; nodes farther than the box half-diagonal plus 8 noise
    stds from the nearest node are skipped (their share is below e^-32).
    """

    noise: float = 0.1  # Gaussian std (output units)
    box: float = 0.5 / 3  # side of the uniform box noise (output units)

    components = 2
    t_range = (0.0, 1.0)
    panels = 128

    def sigma(self) -> float:
        return self.noise

    def param(self, u: torch.Tensor) -> torch.Tensor:
        return u.sqrt()

    def log_param_density(self, u: torch.Tensor) -> torch.Tensor:
        return torch.log(2 * u)

    def curve(self, k: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        t = 3 * math.pi * u
        arm = torch.stack([-t * torch.cos(t), t * torch.sin(t)], 1) / 3 + self.box / 2
        return torch.where((k == 0)[:, None], arm, -arm)  # the box centre is negated with the arm

    def draw_noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        b = torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5
        return self.box * b + super().draw_noise(n, generator)

    def _log_prob_chunk(
        self, x: torch.Tensor, centers: torch.Tensor, lw: torch.Tensor
    ) -> torch.Tensor:
        d2 = (
            (x * x).sum(1, keepdim=True) - 2 * x @ centers.T + (centers * centers).sum(1)
        ).clamp_min(0)
        reach = d2.min(1, keepdim=True).values.sqrt() + self.box / math.sqrt(2) + 8 * self.noise
        row, col = (d2 <= reach**2).nonzero(as_tuple=True)
        # The kernel is even in each coordinate; with d = -|d| both Phi's are lower tails, where
        # log_ndtr is accurate: log(Phi(a) - Phi(b)) = log Phi(a) + log1p(-exp(log Phi(b) - log Phi(a))).
        d = -(x[row] - centers[col]).abs()  # (pairs, 2)
        la = torch.special.log_ndtr((d + self.box / 2) / self.noise)
        lb = torch.special.log_ndtr((d - self.box / 2) / self.noise)
        terms = (la + torch.log1p(-torch.exp(lb - la))).sum(1) - 2 * math.log(self.box) + lw[col]
        return _segment_logsumexp(terms, row, len(x))


# ---------------------------------------------------------------------------------------------
# Gaussian mixtures, the checkerboard and the pinwheel: exact densities.
# ---------------------------------------------------------------------------------------------


class _GaussianMixture(TrueDistribution):
    """Equal-weight mixture of isotropic Gaussians with :meth:`centers` ``(K, 2)`` and std ``std``."""

    log_prob_kind: str | None = "exact"
    std: float

    def centers(self) -> torch.Tensor:
        raise NotImplementedError

    def modes(self) -> tuple[torch.Tensor, float]:
        return self.centers(), float(self.std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.centers()
        k = torch.randint(len(c), (n,), generator=generator)
        return c[k] + self.std * torch.randn(n, 2, generator=generator, dtype=torch.float64)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        c = self.centers()
        d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)  # (n, K)
        s2 = self.std**2
        return torch.logsumexp(-d2 / (2 * s2), 1) - math.log(len(c)) - math.log(2 * math.pi * s2)


@_toy("8gaussians", help="8 Gaussians on a circle of radius 2.83, std 0.35 (FFJORD)")
@dataclass
class EightGaussians(_GaussianMixture):
    """FFJORD's ``8gaussians``: centres ``4 (cos, sin)(k pi / 4)``, std 0.5, all divided by
    ``sqrt(2)``: radius ``2 sqrt 2 ~ 2.83``, std ``1 / (2 sqrt 2) ~ 0.354`` (FFJORD divides by
    1.414)."""

    radius: float = 2 * math.sqrt(2)
    std: float = 0.5 / math.sqrt(2)

    def centers(self) -> torch.Tensor:
        a = torch.arange(8, dtype=torch.float64) * math.pi / 4
        return self.radius * torch.stack([torch.cos(a), torch.sin(a)], 1)


@_toy("25gaussians", help="5x5 grid of Gaussians at {-2,...,2}^2, std 0.05")
@dataclass
class TwentyFiveGaussians(_GaussianMixture):
    """The 25-Gaussian grid (Gulrajani et al. 2017; Srivastava et al. 2017): centres at
    ``spacing * {-2, -1, 0, 1, 2}^2`` with unit spacing, std 0.05 (the literature uses spacing 2 and
    std 0.05 before rescaling, i.e. a 40:1 spacing/std ratio; here 20:1, easier to fit)."""

    spacing: float = 1.0
    std: float = 0.05

    def centers(self) -> torch.Tensor:
        g = self.spacing * torch.arange(-2, 3, dtype=torch.float64)
        return torch.cartesian_prod(g, g)


# The two data sets of the mode-collapse protocol (VEEGAN, Srivastava et al. 2017, sec. 5.1;
# PacGAN, Lin et al. 2018, sec. 5, Tables 1-2; parameters as in PacGAN's released configs), scored
# by the metrics of genlab.eval.metrics.modes, which read the centres and std from `modes()`.


@_toy("ring", help="8 Gaussians on the unit circle, std 0.01 (VEEGAN/PacGAN 2D-ring protocol)")
@dataclass
class Ring(EightGaussians):
    """The 2D-ring of VEEGAN and PacGAN: 8 equal-weight Gaussians centred at
    ``(cos, sin)(k pi / 4)``, ``k = 0..7`` (radius 1), std 0.01."""

    radius: float = 1.0
    std: float = 0.01


@_toy("grid", help="5x5 Gaussians at {-4,-2,0,2,4}^2, std 0.05 (VEEGAN/PacGAN 2D-grid protocol)")
@dataclass
class Grid(TwentyFiveGaussians):
    """The 2D-grid of VEEGAN and PacGAN: 25 equal-weight Gaussians centred at
    ``{-4, -2, 0, 2, 4}^2``, std 0.05."""

    spacing: float = 2.0
    std: float = 0.05


@_toy("checkerboard", help="uniform on the 8 black squares of a 4x4 board on [-4,4]^2 (FFJORD)")
@dataclass
class Checkerboard(TrueDistribution):
    """FFJORD's ``checkerboard``: uniform on the squares ``[2i, 2i+2) x [2j, 2j+2)``,
    ``i, j in {-2, ..., 1}`` with ``i + j`` even (8 of the 16 squares of side 2 tiling
    ``[-4, 4)^2``). Density ``1/32`` there, 0 elsewhere (log-density ``-inf``)."""

    log_prob_kind = "exact"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        col = torch.randint(-2, 2, (n,), generator=generator)  # i
        row = 2 * torch.randint(-1, 1, (n,), generator=generator) + col.remainder(2)  # i + j even
        return 2 * (torch.stack([col, row], 1).to(torch.float64) + u)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        ij = torch.floor(x / 2)
        inside = ((ij >= -2) & (ij <= 1)).all(1) & (ij.sum(1).remainder(2) == 0)
        return torch.where(inside, x.new_full(inside.shape, -math.log(32.0)), -math.inf)


@_toy("pinwheel", help="5 Gaussian arms, each bent by a rotation growing along the arm (FFJORD)")
@dataclass
class Pinwheel(TrueDistribution):
    """FFJORD's ``pinwheel`` (from Johnson et al. 2016), i.i.d. over arms.

    Arm ``k ~ U{0..4}``; ``f = (f0, f1) ~ N((1, 0), diag(0.3^2, 0.1^2))``; ``x = 2 R(-a) f`` with
    ``a = 2 pi k / 5 + 0.25 exp(f0)`` (``R`` a rotation). The angle depends on ``f0``, not on the
    radius ``|f|``, so the map is not volume-preserving. In polar coordinates ``f = rho (cos phi,
    sin phi)`` it keeps ``rho = |x| / 2`` and sends ``phi`` to ``psi = phi - a(rho cos phi)``, so

        p(x) = 1/5 sum_k sum_{phi: psi(phi) = arg x} N(f(phi)) / (4 |d psi / d phi|),
        d psi / d phi = 1 + rate exp(rho cos phi) rho sin phi.

    The roots ``phi`` are bracketed on a grid fine enough that ``psi`` moves less than ``pi / 4``
    per cell (from the bound ``|d psi / d phi| <= 1 + rate e^rho rho``, at most :attr:`max_grid`
    cells, which covers ``|x| <~ 12``), then refined by bisection. Beyond, where the density is
    below ``e^-100``, roots may be missed (log-density ``-inf``).
    """

    radial_std: float = 0.3
    tangential_std: float = 0.1
    rate: float = 0.25
    arms: int = 5
    scale: float = 2.0

    log_prob_kind = "exact"
    max_grid = 8192  # phi cells per point and arm
    bisections = 48

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.randint(self.arms, (n,), generator=generator)
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        f0 = 1 + self.radial_std * eps[:, 0]
        f1 = self.tangential_std * eps[:, 1]
        a = 2 * math.pi * k / self.arms + self.rate * torch.exp(f0)
        c, s = torch.cos(a), torch.sin(a)
        return self.scale * torch.stack([c * f0 + s * f1, -s * f0 + c * f1], 1)

    def _offset(self, phi: torch.Tensor, rho: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``psi(phi) - target`` wrapped to ``[-pi, pi)``."""
        v = phi - self.rate * torch.exp(rho * torch.cos(phi)) - target
        return torch.remainder(v + math.pi, 2 * math.pi) - math.pi

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        order = x.norm(dim=1).argsort()  # chunks of similar radius share a grid size
        out = torch.empty(len(x), dtype=torch.float64)
        for idx in order.split(1024):
            out[idx] = self._log_prob(x[idx])
        return out

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        rho = x.norm(dim=1) / self.scale
        r = rho.max().item()
        cells = min(self.max_grid, max(64, math.ceil(8 * (1 + self.rate * math.exp(r) * r))))
        arm_angle = 2 * math.pi * torch.arange(self.arms, dtype=torch.float64) / self.arms
        target = (torch.atan2(x[:, 1], x[:, 0])[:, None] + arm_angle).reshape(-1)  # (n * arms,)
        rho_k = rho.repeat_interleave(self.arms)
        # 1. bracket: sign changes of the wrapped offset that are not wrap-around jumps.
        phi = torch.linspace(-math.pi, math.pi, cells + 1, dtype=torch.float64)
        v = self._offset(phi, rho_k[:, None], target[:, None])  # (n * arms, cells + 1)
        lo_v, hi_v = v[:, :-1], v[:, 1:]
        bracket = ((lo_v <= 0) & (hi_v > 0) | (lo_v > 0) & (hi_v <= 0)) & (
            (hi_v - lo_v).abs() < math.pi
        )
        row, cell = bracket.nonzero(as_tuple=True)
        # 2. bisection on every bracketed cell at once.
        lo, hi = phi[cell], phi[cell + 1]
        r, tg = rho_k[row], target[row]
        lo_sign = self._offset(lo, r, tg) <= 0
        for _ in range(self.bisections):
            mid = (lo + hi) / 2
            same = (self._offset(mid, r, tg) <= 0) == lo_sign
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
        root = (lo + hi) / 2
        # 3. change of variables at each root, summed per point.
        f0, f1 = r * torch.cos(root), r * torch.sin(root)
        dpsi = 1 + self.rate * torch.exp(f0) * f1
        log_nf = (
            -0.5 * ((f0 - 1) / self.radial_std) ** 2
            - 0.5 * (f1 / self.tangential_std) ** 2
            - _LOG_2PI
            - math.log(self.radial_std * self.tangential_std)
        )
        terms = log_nf - torch.log(self.scale**2 * dpsi.abs())
        point = torch.div(row, self.arms, rounding_mode="floor")
        return _segment_logsumexp(terms, point, n) - math.log(self.arms)


def _segment_logsumexp(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """``out[i] = log sum_{j: index[j] = i} exp(values[j])``, ``-inf`` for empty segments."""
    m = torch.full((n,), -math.inf, dtype=values.dtype).scatter_reduce(0, index, values, "amax")
    safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    total = torch.zeros(n, dtype=values.dtype).index_add(0, index, torch.exp(values - safe[index]))
    return safe + total.log()
