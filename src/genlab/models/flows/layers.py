"""Invertible layers for normalizing flows.

Every layer is a :class:`Transform`: ``forward(x) -> (z, logdet)`` maps data towards noise and
``inverse(z) -> (x, logdet)`` maps back; ``logdet`` is ``log|det ∂out/∂in|`` of that direction, one
value per example, shape ``(B,)`` (zuko's shape). Layers keep the shape of what they are given:
``(B, d)`` points or ``(B, C, H, W)`` images, so any stack of them is a flow for either.

References:
    Dinh, Krueger & Bengio (2015), "NICE: Non-linear Independent Components Estimation",
    arXiv:1410.8516 (additive coupling, diagonal scaling).
    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", arXiv:1605.08803
    (affine coupling, checkerboard and channel masks, squeeze, multi-scale, batch norm, logit).
    Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions",
    arXiv:1807.03039 (actnorm, LU 1x1 convolution, learned split prior).
    Durkan, Bekasov, Murray & Papamakarios (2019), "Neural Spline Flows", arXiv:1906.04032
    (rational-quadratic spline with linear tails).
    Papamakarios, Pavlakou & Murray (2017), "Masked Autoregressive Flow for Density Estimation",
    arXiv:1705.07057 (batch norm between layers, MADE, the MAF layer).
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved Variational
    Inference with Inverse Autoregressive Flow", arXiv:1606.04934 (the IAF direction).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.shared import global_moments
from genlab.nets.host_copy import HostCopy

Pair = tuple[torch.Tensor, torch.Tensor]


def _sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(-1)


def _spatial(x: torch.Tensor) -> int:
    """Positions per channel: 1 for points ``(B, d)``, ``H·W`` for images ``(B, C, H, W)``."""
    return math.prod(x.shape[2:])


def _per_channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(C,)`` parameter to broadcast against ``x`` along dim 1."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


class Transform(nn.Module):
    """An invertible map with a tractable log-determinant."""

    def forward(self, x: torch.Tensor) -> Pair:  # data -> noise
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> Pair:  # noise -> data
        raise NotImplementedError


class Sequential(Transform):
    """Composition: ``forward`` applies the layers in order, ``inverse`` in reverse order."""

    def __init__(self, *layers: Transform) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> Pair:
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            total = total + ld
        return x, total

    def inverse(self, z: torch.Tensor) -> Pair:
        return self.inverse_path(z)[0]

    def inverse_path(self, z: torch.Tensor, keep: bool = False) -> tuple[Pair, list[torch.Tensor]]:
        """The inverse, and (``keep``) the state after every layer, from noise to data."""
        total = z.new_zeros(z.shape[0])
        path = [z] if keep else []
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z)
            total = total + ld
            if keep:
                path.append(z)
        return (z, total), path


# --- element-wise and linear layers ------------------------------------------------------------
class ActNorm(Transform):
    """Per-channel affine ``z = (x + loc) · exp(log_scale)`` (Kingma & Dhariwal 2018, §3.1).

    Data-dependent initialisation: the first forward pass in training mode sets ``loc`` and
    ``log_scale`` so that that batch has zero mean and unit variance per channel. Under data
    parallelism the statistics are those of the global batch (summed over the processes), so every
    process starts from the same weights, as one process would.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        self.host = HostCopy(self)  # initialized, read every step without a device sync

    @torch.no_grad()
    def _init(self, x: torch.Tensor) -> None:
        mean, std = global_moments(x)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.host.set(self, "initialized", True)

    def forward(self, x: torch.Tensor) -> Pair:
        if self.training and x.shape[0] > 1 and not self.host.get(self, "initialized"):
            self._init(x)
        z = (x + _per_channel(self.loc, x)) * _per_channel(self.log_scale.exp(), x)
        return z, (self.log_scale.sum() * _spatial(x)).expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> Pair:
        x = z * _per_channel((-self.log_scale).exp(), z) - _per_channel(self.loc, z)
        return x, (-self.log_scale.sum() * _spatial(z)).expand(z.shape[0])


class BatchNorm(Transform):
    """Batch normalisation as a flow layer (Dinh et al. 2017, §3.7; Papamakarios et al. 2017).

    Training uses the batch statistics (treated as constants in the log-determinant, as in the
    papers) and updates running averages; evaluation and ``inverse`` use the running averages.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.log_gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.running_mean, self.running_var
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var

    def forward(self, x: torch.Tensor) -> Pair:
        mean, var = self._stats(x)
        log_s = self.log_gamma - 0.5 * torch.log(var + self.eps)  # (C,)
        z = (x - _per_channel(mean, x)) * _per_channel(log_s.exp(), x) + _per_channel(self.beta, x)
        return z, (log_s.sum() * _spatial(x)).expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> Pair:
        mean, var = self.running_mean, self.running_var
        log_s = self.log_gamma - 0.5 * torch.log(var + self.eps)
        x = (z - _per_channel(self.beta, z)) * _per_channel((-log_s).exp(), z)
        x = x + _per_channel(mean, z)
        return x, (-log_s.sum() * _spatial(z)).expand(z.shape[0])


class DiagonalScaling(Transform):
    """NICE's final layer ``z = x · exp(s)`` with one learned scale per dimension (Dinh et al.
    2015, §3.3): it lets a volume-preserving additive flow change volume."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> Pair:
        return x * self.log_scale.exp(), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> Pair:
        return z * (-self.log_scale).exp(), -self.log_scale.sum().expand(z.shape[0])


class Permutation(Transform):
    """A fixed permutation of the channels (dim 1): ``reverse`` or a seeded random one."""

    def __init__(self, channels: int, kind: str = "reverse", seed: int = 0) -> None:
        super().__init__()
        if kind == "reverse":
            perm = torch.arange(channels - 1, -1, -1)
        else:
            perm = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: torch.Tensor) -> Pair:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> Pair:
        return z[:, self.inv_perm], z.new_zeros(z.shape[0])


class InvConv1x1(Transform):
    """Invertible 1×1 convolution in LU form, ``W = P L (U + diag(sign · exp(log_s)))``
    (Kingma & Dhariwal 2018, §3.2): ``log|det| = H·W·Σ log_s`` in O(C). On points ``(B, d)`` it
    is an invertible linear layer (the "LU linear" of tabular flows).
    """

    def __init__(self, channels: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.linalg.qr(torch.randn(channels, channels, generator=g))[0]  # random rotation
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower * self.l_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.p @ lower @ upper  # (C, C)

    def _mix(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bj...->bi...", w, x)

    def forward(self, x: torch.Tensor) -> Pair:
        ld = self.log_s.sum() * _spatial(x)
        return self._mix(self.weight(), x), ld.expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> Pair:
        ld = -self.log_s.sum() * _spatial(z)
        return self._mix(torch.linalg.inv(self.weight()), z), ld.expand(z.shape[0])


class Logit(Transform):
    """``z = logit(α + (1 - 2α) x)`` from the unit cube to R^D (Dinh et al. 2017, §4.1): the
    pre-processing of dequantized images in [0, 1]."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> Pair:
        p = self.alpha + (1 - 2 * self.alpha) * x
        ld = math.log(1 - 2 * self.alpha) - torch.log(p) - torch.log1p(-p)
        return torch.log(p) - torch.log1p(-p), _sum_except_batch(ld)

    def inverse(self, z: torch.Tensor) -> Pair:
        p = torch.sigmoid(z)
        ld = torch.log(p) + torch.log1p(-p) - math.log(1 - 2 * self.alpha)
        return (p - self.alpha) / (1 - 2 * self.alpha), _sum_except_batch(ld)


class Shift(Transform):
    """``z = x - shift`` (Glow centres dequantized images in [0, 1] to [-½, ½])."""

    def __init__(self, shift: float = 0.5) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> Pair:
        return x - self.shift, x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> Pair:
        return z + self.shift, z.new_zeros(z.shape[0])


class Flatten(Transform):
    """``(B, *shape) <-> (B, prod(shape))``: lets the vector flows model images."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> Pair:
        return x.reshape(x.shape[0], -1), x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> Pair:
        return z.reshape(z.shape[0], *self.shape), z.new_zeros(z.shape[0])


# --- squeeze and multi-scale ------------------------------------------------------------------
def squeeze(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2×2 patch becomes 4 channels (Dinh et al. 2017)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


class Squeeze(Transform):
    """Space-to-channel reshaping (volume preserving)."""

    def forward(self, x: torch.Tensor) -> Pair:
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> Pair:
        return unsqueeze(z), z.new_zeros(z.shape[0])


class MultiScale(Transform):
    """One level of a multi-scale flow (Dinh et al. 2017, §3.6; Kingma & Dhariwal 2018):
    squeeze, the level's ``steps``, then factor out half the channels and pass the other half to
    ``inner`` (the next level, or None at the last one); finally unsqueeze, so the output keeps the
    input's shape ``(B, C, H, W)`` and the base density is over the same shape.

    With ``split_prior`` (Glow) the factored-out half ``z1`` is standardised by a Gaussian whose mean
    and log-scale a zero-initialised convolution reads from the kept half: a learned conditional
    prior ``N(z1; μ(h), σ(h)²)``, written as an affine transform towards ``N(0, I)``.
    """

    def __init__(
        self,
        steps: Transform,
        inner: Transform | None,
        channels: int | None = None,
        split_prior: bool = False,
    ) -> None:
        super().__init__()
        self.steps, self.inner = steps, inner
        self.prior: nn.Module | None = None
        if inner is not None and split_prior:
            if channels is None:
                raise ValueError("split_prior needs the number of channels after the squeeze")
            half = channels // 2
            self.prior = nn.Conv2d(channels - half, 2 * half, 3, padding=1)
            nn.init.zeros_(self.prior.weight)
            nn.init.zeros_(self.prior.bias)

    def _prior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_s = self.prior(h).chunk(2, dim=1)
        return mu, soft_clamp(log_s)

    def forward(self, x: torch.Tensor) -> Pair:
        h, ld = self.steps(squeeze(x))  # (B, 4C, H/2, W/2)
        if self.inner is not None:
            half = h.shape[1] // 2
            z1, h2 = h[:, :half], h[:, half:]
            if self.prior is not None:
                mu, log_s = self._prior(h2)
                z1 = (z1 - mu) * (-log_s).exp()
                ld = ld - _sum_except_batch(log_s)
            h2, ld2 = self.inner(h2)
            h, ld = torch.cat([z1, h2], dim=1), ld + ld2
        return unsqueeze(h), ld

    def inverse(self, z: torch.Tensor) -> Pair:
        h = squeeze(z)
        ld = z.new_zeros(z.shape[0])
        if self.inner is not None:
            half = h.shape[1] // 2
            z1, h2 = h[:, :half], h[:, half:]
            h2, ld = self.inner.inverse(h2)
            if self.prior is not None:
                mu, log_s = self._prior(h2)
                z1 = z1 * log_s.exp() + mu
                ld = ld + _sum_except_batch(log_s)
            h = torch.cat([z1, h2], dim=1)
        x, ld2 = self.steps.inverse(h)
        return unsqueeze(x), ld + ld2


# --- coupling layers --------------------------------------------------------------------------
def soft_clamp(s: torch.Tensor, bound: float = 3.0) -> torch.Tensor:
    """``bound · tanh(s / bound)``: a log-scale that cannot explode early in training."""
    return bound * torch.tanh(s / bound)


def alternating_mask(dim: int, parity: int) -> torch.Tensor:
    """``(d,)`` mask with ones on even (parity 0) or odd (parity 1) coordinates."""
    return (torch.arange(dim) % 2 == parity).float()


def half_mask(dim: int, parity: int) -> torch.Tensor:
    """``(d,)`` mask with ones on the first (parity 0) or second (parity 1) half."""
    m = (torch.arange(dim) < dim // 2).float()
    return m if parity == 0 else 1 - m


def checkerboard_mask(shape: tuple[int, int, int], parity: int) -> torch.Tensor:
    """``(C, H, W)`` checkerboard over pixels, the same for every channel (Dinh et al. 2017)."""
    c, h, w = shape
    ij = torch.arange(h)[:, None] + torch.arange(w)[None, :]
    return (ij % 2 == parity).float().expand(c, h, w).clone()


def channel_mask(shape: tuple[int, int, int], parity: int) -> torch.Tensor:
    """``(C, H, W)`` mask keeping the first (parity 0) or second (parity 1) half of the channels."""
    c, h, w = shape
    m = (torch.arange(c) < c // 2).float()[:, None, None].expand(c, h, w).clone()
    return m if parity == 0 else 1 - m


def _as_slice(idx: list[int]) -> slice | list[int]:
    """``idx`` as a slice when it is an arithmetic progression (alternating and half masks)."""
    if len(idx) == 1:
        return slice(idx[0], idx[0] + 1)
    step = idx[1] - idx[0]
    if step > 0 and all(b - a == step for a, b in zip(idx, idx[1:])):
        return slice(idx[0], idx[-1] + 1, step)
    return idx


class Coupling(Transform):
    """Masked coupling (Dinh et al. 2015, 2017): the coordinates where ``mask == 1`` pass through
    unchanged and condition an element-wise invertible map of the others.

    Points (``mask`` of shape ``(d,)``): the conditioner maps the kept coordinates ``(B, d_kept)``
    to ``(B, n_params, d_free)``, parameters for the free ones only. Images (``mask`` of shape
    ``(C, H, W)``, checkerboard or channel): it maps ``x · mask`` ``(B, C, H, W)`` to
    ``(B, n_params, C, H, W)`` and only the free positions are used. Subclasses say how many
    parameters each transformed coordinate needs and what map they define. The conditioner's last
    layer should be zero-initialised so the coupling starts as the identity.
    """

    n_params: int = 1

    def __init__(self, mask: torch.Tensor, conditioner: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.conditioner = conditioner
        self.vector = mask.dim() == 1
        if self.vector:  # index sets as strided slices (views, no gathers) when they are
            self.kept = _as_slice(torch.nonzero(mask > 0.5)[:, 0].tolist())
            self.free = _as_slice(torch.nonzero(mask < 0.5)[:, 0].tolist())

    def _map(self, x: torch.Tensor, params: torch.Tensor, inverse: bool) -> Pair:
        """Element-wise map ``x`` ``(B, *s)`` with ``params`` ``(B, n_params, *s)``; returns
        ``(y, log|dy/dx|)`` element-wise."""
        raise NotImplementedError

    def _couple(self, x: torch.Tensor, inverse: bool) -> Pair:
        if self.vector:  # points: transform only the free coordinates
            params = self.conditioner(x[:, self.kept])  # (B, n_params, d_free)
            y, ld = self._map(x[:, self.free], params, inverse)
            out = x.clone()
            out[:, self.free] = y
            return out, ld.sum(-1)
        params = self.conditioner(x * self.mask)  # (B, n_params, C, H, W)
        y, ld = self._map(x, params, inverse)
        free = 1 - self.mask
        return self.mask * x + free * y, _sum_except_batch(free * ld)

    def forward(self, x: torch.Tensor) -> Pair:
        return self._couple(x, inverse=False)

    def inverse(self, z: torch.Tensor) -> Pair:
        return self._couple(z, inverse=True)  # the kept part of z is that of x


class AdditiveCoupling(Coupling):
    """``z_b = x_b + t(x_a)``, volume preserving (NICE, Dinh et al. 2015, §3.2)."""

    n_params = 1

    def _map(self, x: torch.Tensor, params: torch.Tensor, inverse: bool) -> Pair:
        t = params[:, 0]
        return (x - t if inverse else x + t), torch.zeros_like(x)


class AffineCoupling(Coupling):
    """``z_b = x_b · exp(s(x_a)) + t(x_a)`` (Real NVP, Dinh et al. 2017, §3.3), with the
    log-scale soft-clamped to ``[-clamp, clamp]``."""

    n_params = 2

    def __init__(self, mask: torch.Tensor, conditioner: nn.Module, clamp: float = 3.0) -> None:
        super().__init__(mask, conditioner)
        self.clamp = clamp

    def _map(self, x: torch.Tensor, params: torch.Tensor, inverse: bool) -> Pair:
        s, t = soft_clamp(params[:, 0], self.clamp), params[:, 1]
        if inverse:
            return (x - t) * (-s).exp(), -s
        return x * s.exp() + t, s


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling with linear tails (Durkan et al. 2019, §3.1): a monotone
    spline of ``bins`` segments on ``[-bound, bound]``, the identity outside."""

    def __init__(
        self, mask: torch.Tensor, conditioner: nn.Module, bins: int = 8, bound: float = 5.0
    ) -> None:
        super().__init__(mask, conditioner)
        self.bins, self.bound = bins, bound
        self.n_params = 3 * bins - 1  # widths, heights, interior derivatives

    def _map(self, x: torch.Tensor, params: torch.Tensor, inverse: bool) -> Pair:
        k = self.bins
        p = params.movedim(1, -1)  # (B, *shape, 3K - 1)
        return rq_spline(x, p[..., :k], p[..., k : 2 * k], p[..., 2 * k :], self.bound, inverse)


def rq_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivs: torch.Tensor,
    bound: float,
    inverse: bool = False,
    min_bin: float = 1e-3,
    min_deriv: float = 1e-3,
) -> Pair:
    """Monotone rational-quadratic spline (Gregory & Delbourgo 1982; Durkan et al. 2019, eqs. 4-6).

    ``x`` ``(...)``; unnormalised ``widths``/``heights`` ``(..., K)`` and interior derivatives
    ``(..., K-1)``. Inside ``[-bound, bound]`` the spline, outside the identity (derivatives at the
    ends are 1, so the map is C¹). Returns ``(y, log|dy/dx|)`` element-wise for the direction asked.
    """
    k = widths.shape[-1]

    def knots(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = (2 * bound) * (min_bin + (1 - min_bin * k) * torch.softmax(u, dim=-1))  # (..., K)
        cum = F.pad(torch.cumsum(u, dim=-1), (1, 0)) - bound  # (..., K + 1), -bound .. +bound
        return cum, u

    cw, w = knots(widths)
    ch, h = knots(heights)
    # the derivative at an interior knot: softplus, shifted so the raw value 0 gives slope 1
    d = min_deriv + F.softplus(derivs + math.log(math.expm1(1 - min_deriv)))
    d = F.pad(d, (1, 1), value=1.0)  # (..., K + 1)

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    edges = ch if inverse else cw
    idx = (xc[..., None] >= edges[..., 1:-1]).sum(-1, keepdim=True)  # (..., 1) in [0, K-1]

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, idx)[..., 0]

    x_k, w_k, y_k, h_k = pick(cw), pick(w), pick(ch), pick(h)
    d_k, d_k1 = pick(d[..., :-1]), pick(d[..., 1:])
    s_k = h_k / w_k
    if inverse:
        dy = xc - y_k
        a = h_k * (s_k - d_k) + dy * (d_k1 + d_k - 2 * s_k)
        b = h_k * d_k - dy * (d_k1 + d_k - 2 * s_k)
        c = -s_k * dy
        disc = (b * b - 4 * a * c).clamp_min(0)
        xi = (2 * c) / (-b - torch.sqrt(disc))
        out = xi * w_k + x_k
    else:
        xi = (xc - x_k) / w_k
        out = y_k + h_k * (s_k * xi**2 + d_k * xi * (1 - xi)) / (
            s_k + (d_k1 + d_k - 2 * s_k) * xi * (1 - xi)
        )
    xi1 = xi * (1 - xi)
    den = s_k + (d_k1 + d_k - 2 * s_k) * xi1
    num = s_k**2 * (d_k1 * xi**2 + 2 * s_k * xi1 + d_k * (1 - xi) ** 2)
    logd = torch.log(num) - 2 * torch.log(den)  # log dy/dx of the forward spline
    if inverse:
        logd = -logd
    return torch.where(inside, out, x), torch.where(inside, logd, torch.zeros_like(logd))


# --- conditioners -----------------------------------------------------------------------------
# --- autoregressive layers (MAF, IAF) ---------------------------------------------------------
class MaskedAutoregressive(Transform):
    """The MAF layer (Papamakarios et al. 2017, eq. 3-5) on points ``(B, d)``:

        z_i = (x_i − μ_i(x_{<i})) · exp(−α_i(x_{<i})),   log|det ∂z/∂x| = −Σ_i α_i,

    with ``(α, μ)`` from one pass of a :class:`~genlab.nets.made.MADE` (``n_params = 2``, zero-
    initialised output, ``α`` soft-clamped to ``[−clamp, clamp]``). The density direction is one
    pass; the inverse (sampling) fills the coordinates one by one in the MADE's order, ``d``
    passes. :class:`Inverse` of this layer is IAF's layer (Kingma et al. 2016): sampling in one
    pass, density in ``d``."""

    def __init__(self, made: nn.Module, clamp: float = 3.0) -> None:
        super().__init__()
        if made.n_params != 2:
            raise ValueError("a MaskedAutoregressive layer needs a MADE with n_params = 2")
        self.made, self.clamp = made, clamp

    def _params(self, x: torch.Tensor) -> Pair:
        p = self.made(x)  # (B, 2, d)
        return soft_clamp(p[:, 0], self.clamp), p[:, 1]

    def forward(self, x: torch.Tensor) -> Pair:
        alpha, mu = self._params(x)
        return (x - mu) * (-alpha).exp(), -alpha.sum(-1)

    def inverse(self, z: torch.Tensor) -> Pair:
        x = torch.zeros_like(z)
        alpha = z
        for i in self.made.order_list():  # x_i needs only the coordinates generated before it
            alpha, mu = self._params(x)
            x = x.clone()
            x[:, i] = z[:, i] * alpha[:, i].exp() + mu[:, i]
        # the last pass saw every coordinate but the last, and no α_i depends on x_i or later
        return x, alpha.sum(-1)


class Inverse(Transform):
    """A layer run backwards: ``forward`` is the layer's ``inverse`` and vice versa."""

    def __init__(self, layer: Transform) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> Pair:
        return self.layer.inverse(x)

    def inverse(self, z: torch.Tensor) -> Pair:
        return self.layer(z)


class MLPConditioner(nn.Module):
    """``(B, d_in) -> (B, n_params, d_out)``: an MLP with ReLU, optional dropout and a
    zero-initialised output layer."""

    def __init__(
        self,
        d_in: int,
        n_params: int,
        d_out: int,
        hidden: int = 64,
        depth: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = d_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        out = nn.Linear(width, n_params * d_out)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)
        self.n_params, self.d_out = n_params, d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0], self.n_params, self.d_out)


def mlp_coupling(
    cls: type[Coupling],
    mask: torch.Tensor,
    n_params: int,
    hidden: int,
    depth: int,
    dropout: float = 0.0,
    **kw: float,
) -> Coupling:
    """A coupling on points with an MLP conditioner sized for ``mask`` (``(d,)``)."""
    kept = int(mask.sum())
    net = MLPConditioner(kept, n_params, len(mask) - kept, hidden, depth, dropout)
    return cls(mask, net, **kw)


class ConvConditioner(nn.Module):
    """``(B, C, H, W) -> (B, n_params, C, H, W)``: Glow's conditioner, conv 3×3 → ReLU → conv 1×1
    → ReLU → conv 3×3 (zero-initialised), with optional dropout."""

    def __init__(self, channels: int, n_params: int, hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        out = nn.Conv2d(hidden, n_params * channels, 3, padding=1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            *drop,
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            *drop,
            out,
        )
        self.n_params, self.channels = n_params, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.net(x).view(b, self.n_params, self.channels, h, w)
