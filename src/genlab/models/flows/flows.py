"""Discrete normalizing flows: NICE, RealNVP, Glow and neural spline flows, for points and images.

A flow is an invertible map ``f`` from data ``x`` to a base variable ``z = f(x)`` with a simple
density, so the change of variables gives the exact log-likelihood

    log p(x) = log p_Z(f(x)) + log|det ∂f/∂x|,

the training loss is its negative mean (nats), and sampling runs ``f⁻¹`` on base draws (scaled by a
temperature). Points ``(B, d)`` of any ``d`` use coupling layers with MLP conditioners; images
``(B, C, H, W)`` use the multi-scale architectures of RealNVP and Glow (NICE and NSF flatten them).

Images are dequantized (Theis et al. 2016; Dinh et al. 2017; Ho et al. 2019): a value on the
dataset's grid of ``levels`` intensities is mapped to its integer ``k``, uniform noise is added and
the result scaled to ``u = (k + U[0,1)) / levels`` in ``[0, 1)^D``; then

    log P(k) ≥ E_u[log p(u)] - D log(levels),

so ``log_prob`` of an image is a one-sample estimate of that lower bound in nats of the *discrete*
data (kind ``elbo``), and bits/dim = NLL / (D ln 2), the convention of the papers.

References:
    Dinh et al. (2015) NICE, arXiv:1410.8516. Dinh et al. (2017) Real NVP, arXiv:1605.08803.
    Kingma & Dhariwal (2018) Glow, arXiv:1807.03039. Durkan et al. (2019) Neural Spline Flows,
    arXiv:1906.04032. Papamakarios et al. (2021) "Normalizing Flows for Probabilistic Modeling and
    Inference", arXiv:1912.02762 (notation). Ho et al. (2019) Flow++, arXiv:1902.00275.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
from genlab.models.flows import layers as L
from genlab.nets.made import MADE
from genlab.progress import chunks
from genlab.registry import MODELS

LOG_2PI = math.log(2 * math.pi)


# --- configs ----------------------------------------------------------------------------------
@dataclass
class FlowConfig:
    """What every discrete flow shares. Fields that only images use are marked so."""

    layers: int = 8  # coupling layers (points); steps per scale (images)
    hidden: int = 64  # conditioner width (MLP units for points, conv channels for images)
    depth: int = 2  # hidden layers of the conditioner MLP (points)
    dropout: float = 0.0  # dropout inside the conditioners (regularises small data)
    norm: Literal["actnorm", "batchnorm", "none"] = "none"  # before every coupling
    base: Literal["normal", "learned"] = "normal"  # standard normal or learned diagonal Gaussian
    temperature: float = 1.0  # default sampling temperature (scales the base std)
    scales: int = 2  # images: levels of the multi-scale architecture
    levels: int = 256  # images: intensity levels for dequantization (17 for 8x8 digits)
    preprocess: Literal["logit", "shift"] = "logit"  # images: logit(α + (1-2α)u) or u - 1/2


@dataclass
class NICEConfig(FlowConfig):
    layers: int = 4
    hidden: int = 128
    depth: int = 3
    mask: Literal["alternate", "half"] = "alternate"  # which coordinates each coupling keeps


@dataclass
class RealNVPConfig(FlowConfig):
    mask: Literal["alternate", "half"] = "alternate"  # points; images use checkerboard + channel
    clamp: float = 3.0  # bound on the coupling log-scale (soft clamp)


@dataclass
class GlowConfig(FlowConfig):
    layers: int = 4
    norm: Literal["actnorm", "batchnorm", "none"] = "actnorm"
    permutation: Literal["conv1x1", "shuffle", "reverse"] = "conv1x1"  # LU 1x1 conv or fixed
    coupling: Literal["affine", "additive"] = "affine"
    split_prior: bool = True  # images: learned conditional prior on factored-out channels
    clamp: float = 3.0
    preprocess: Literal["logit", "shift"] = "shift"


@dataclass
class MAFConfig(FlowConfig):
    layers: int = 5
    depth: int = 2  # hidden layers of each MADE
    clamp: float = 3.0  # bound on the log-scale α (soft clamp)
    order: Literal["reverse", "random"] = "reverse"  # ordering of each layer after the first


@dataclass
class NSFConfig(FlowConfig):
    layers: int = 4
    bins: int = 8  # spline segments
    bound: float = 5.0  # the spline acts on [-bound, bound], the identity outside
    mask: Literal["alternate", "half"] = "alternate"
    permutation: Literal["lu", "none"] = "none"  # an LU linear layer between couplings


# --- base distribution ------------------------------------------------------------------------
class Base(nn.Module):
    """Diagonal Gaussian over the example shape: standard (``normal``) or with learned mean and
    log-std (``learned``, zero-initialised)."""

    def __init__(self, shape: tuple[int, ...], learned: bool) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.loc = nn.Parameter(torch.zeros(shape)) if learned else None
        self.log_scale = nn.Parameter(torch.zeros(shape)) if learned else None

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:  # (B, *shape) -> (B,)
        if self.loc is not None:
            z = (z - self.loc) * (-self.log_scale).exp()
            ld = -self.log_scale.sum()
        else:
            ld = 0.0
        return -0.5 * (z**2).reshape(len(z), -1).sum(-1) - 0.5 * z[0].numel() * LOG_2PI + ld

    def sample(
        self, n: int, generator: torch.Generator | None, temperature: float, like: torch.Tensor
    ) -> torch.Tensor:
        eps = torch.randn((n, *self.shape), generator=generator, dtype=like.dtype)
        eps = eps.to(like.device) * temperature
        if self.loc is not None:
            eps = self.loc + eps * self.log_scale.exp()
        return eps


# --- the model --------------------------------------------------------------------------------
class Flow(GenerativeModel):
    """A discrete normalizing flow: ``transform`` (data -> noise) and a base density.

    Subclasses build the transform for points (:meth:`build_points`, ``(d,)``) and, where they
    have a convolutional architecture, for images (:meth:`build_images`, ``(C, H, W)``); without
    one, images are flattened and modelled as points.
    """

    Config: ClassVar[type] = FlowConfig

    def __init__(self, config: FlowConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        shape = tuple(spec.shape)
        self.is_image = len(shape) == 3
        if len(shape) not in (1, 3):
            raise ConfigError(f"{self.family} models points (d,) or images (C, H, W), got {shape}")
        _check_positive(config, ("layers", "scales"))
        if self.is_image and config.levels < 2:
            raise ConfigError(f"model.levels must be at least 2, got {config.levels}")
        if not 0 <= config.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {config.dropout}")
        if config.temperature <= 0:
            raise ConfigError(f"model.temperature must be positive, got {config.temperature}")
        if self.is_image and type(self).build_images is not Flow.build_images:
            body = self.build_images(config, shape)
        else:
            dim = math.prod(shape)
            if dim < 2:
                raise ConfigError(f"{self.family} couples halves of the data: needs d >= 2")
            body = self.build_points(config, dim)
            if self.is_image:
                body = L.Sequential(L.Flatten(shape), body, _Unflatten(shape))
        if self.is_image:
            pre = L.Logit(0.05) if config.preprocess == "logit" else L.Shift(0.5)
            body = L.Sequential(pre, body)
        self.transform: L.Transform = body
        self.base = Base(shape, config.base == "learned")

    # --- architecture (subclasses) ----------------------------------------------------------------
    def build_points(self, config: Any, dim: int) -> L.Sequential:
        raise NotImplementedError

    def build_images(self, config: Any, shape: tuple[int, int, int]) -> L.Transform:
        raise NotImplementedError

    # --- likelihood -------------------------------------------------------------------------------
    def dequantize(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1] on a grid of ``levels`` values -> ``(k + U[0,1)) / levels`` in [0, 1)
        (``noise``: the U[0,1) draw, when the trainer's ``prepare`` step made it)."""
        levels = self.config.levels
        k = torch.round((x + 1) / 2 * (levels - 1)).clamp(0, levels - 1)
        if noise is None:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return (k + noise) / levels

    def quantize(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`dequantize`: [0, 1) -> the data grid in [-1, 1]."""
        levels = self.config.levels
        k = torch.floor(u * levels).clamp(0, levels - 1)
        return k / (levels - 1) * 2 - 1

    def log_prob_tensor(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log p(x)`` ``(B,)`` in nats, differentiable (images: one dequantization draw)."""
        offset = 0.0
        if self.is_image:
            x = self.dequantize(x, generator, noise)
            offset = -x[0].numel() * math.log(self.config.levels)
        z, logdet = self.transform(x)
        return self.base.log_prob(z) + logdet + offset

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """Images: draw the dequantization noise here (per-step seeded by the trainer), so that
        multi-process runs see the same noise for the same example as one process."""
        if not self.is_image:
            return batch
        x = batch.x
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return Batch(x, batch.y, noise, batch.t, {**batch.aux})

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats."""
        return -self.log_prob_tensor(batch.x, generator, batch.noise).mean()

    @torch.no_grad()
    def log_prob(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        batch_size: int = 4096,
    ) -> LogProb:
        """Exact ``log p(x)`` for points (kind ``exact``); for images the uniform-dequantization
        lower bound on the discrete log-likelihood (kind ``elbo``), see the module docstring."""
        values = torch.cat([self.log_prob_tensor(c, generator) for c in chunks(x, batch_size)])
        if self.is_image:
            note = (
                f"uniform dequantization over {self.config.levels} levels: one-sample estimate of "
                "a lower bound on the discrete log-likelihood (nats of the discrete data)"
            )
            return LogProb(values, "elbo", nfe=0, note=note)
        return LogProb(values, "exact", nfe=0, note="change of variables")

    # --- sampling -------------------------------------------------------------------------------
    sample_options = (
        SampleOption(
            "temperature", "std of the base draws (< 1: typical samples)", float, FROM_CONFIG
        ),
        SampleOption("trajectory", "points: keep the state after every layer", None, False),
        SampleOption("dtype", "the sampling dtype (default: the weights')", None),
    )

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        temperature: float,
        trajectory: bool,
        dtype: torch.dtype | None,
    ) -> SampleResult:
        """``n`` samples ``f⁻¹(z)``, ``z`` from the base with its std scaled by ``temperature``
        (one network pass; NFE 0). ``trajectory`` (points) keeps the state after every layer,
        from noise to data, ``(layers + 1, n, d)``."""
        like = next(self.parameters())
        if dtype is not None:
            like = like.to(dtype)
        z = self.base.sample(n, generator, temperature, like)
        path = None
        if trajectory and not self.is_image and isinstance(self.transform, L.Sequential):
            (x, _), states = self.transform.inverse_path(z, keep=True)
            path = torch.stack(states)
        else:
            x, _ = self.transform.inverse(z)
        if self.is_image:
            x = self.quantize(x)
        return SampleResult(x, 0, path)


class _Unflatten(L.Transform):
    """``(B, D) -> (B, *shape)`` (the inverse of :class:`~layers.Flatten`)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.flat = L.Flatten(shape)

    def forward(self, x: torch.Tensor) -> L.Pair:
        return self.flat.inverse(x)

    def inverse(self, z: torch.Tensor) -> L.Pair:
        return self.flat(z)


def _check_positive(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(config, name, None)
        if v is not None and v < 1:
            raise ConfigError(f"model.{name} must be at least 1, got {v}")


def _norm(kind: str, channels: int) -> list[L.Transform]:
    if kind == "actnorm":
        return [L.ActNorm(channels)]
    if kind == "batchnorm":
        return [L.BatchNorm(channels)]
    return []


def _vector_mask(kind: str, dim: int, parity: int) -> torch.Tensor:
    return L.alternating_mask(dim, parity) if kind == "alternate" else L.half_mask(dim, parity)


def _check_even(shape: tuple[int, int, int], squeezes: int, family: str) -> None:
    _, h, w = shape
    f = 2**squeezes
    if h % f or w % f:
        raise ConfigError(
            f"{family}: model.scales needs the image size divisible by {f}, got {h}x{w}; "
            "lower model.scales"
        )


# --- families -----------------------------------------------------------------------------------
@MODELS.register("nice", help="NICE: additive coupling + diagonal scaling (Dinh et al. 2015)")
class NICE(Flow):
    """Volume-preserving additive couplings followed by a diagonal scaling (Dinh et al. 2015)."""

    Config = NICEConfig

    def build_points(self, c: NICEConfig, dim: int) -> L.Sequential:
        layers: list[L.Transform] = []
        for i in range(c.layers):
            layers += _norm(c.norm, dim)
            mask = _vector_mask(c.mask, dim, i % 2)
            layers.append(L.mlp_coupling(L.AdditiveCoupling, mask, 1, c.hidden, c.depth, c.dropout))
        layers.append(L.DiagonalScaling((dim,)))
        return L.Sequential(*layers)


@MODELS.register("realnvp", help="RealNVP: affine coupling, multi-scale on images (Dinh 2017)")
class RealNVP(Flow):
    """Affine couplings with alternating masks (points) or the multi-scale checkerboard / channel
    architecture of Dinh et al. (2017, §3.6) on images."""

    Config = RealNVPConfig

    def build_points(self, c: RealNVPConfig, dim: int) -> L.Sequential:
        layers: list[L.Transform] = []
        for i in range(c.layers):
            layers += _norm(c.norm, dim)
            mask = _vector_mask(c.mask, dim, i % 2)
            layers.append(
                L.mlp_coupling(
                    L.AffineCoupling, mask, 2, c.hidden, c.depth, c.dropout, clamp=c.clamp
                )
            )
        return L.Sequential(*layers)

    def build_images(self, c: RealNVPConfig, shape: tuple[int, int, int]) -> L.Transform:
        _check_even(shape, c.scales - 1, self.family)

        def coupling(mask: torch.Tensor, channels: int) -> list[L.Transform]:
            net = L.ConvConditioner(channels, 2, c.hidden, c.dropout)
            return [*_norm(c.norm, channels), L.AffineCoupling(mask, net, c.clamp)]

        def stack(n: int, masks, s: tuple[int, int, int]) -> list[L.Transform]:
            return [t for j in range(n) for t in coupling(masks(s, j % 2), s[0])]

        def level(s: tuple[int, int, int], i: int) -> L.Transform:
            ch, h, w = s
            if i == c.scales - 1:  # the last scale: checkerboard couplings only
                return L.Sequential(*stack(c.layers + 1, L.checkerboard_mask, s))
            pre = stack(c.layers, L.checkerboard_mask, s)  # on (C, H, W)
            sq = (4 * ch, h // 2, w // 2)
            steps = stack(c.layers, L.channel_mask, sq)  # on the squeezed (4C, H/2, W/2)
            inner = level((2 * ch, h // 2, w // 2), i + 1)
            return L.Sequential(*pre, L.MultiScale(L.Sequential(*steps), inner))

        return level(shape, 0)


@MODELS.register("glow", help="Glow: actnorm, LU 1x1 conv, affine coupling (Kingma 2018)")
class Glow(Flow):
    """Steps of actnorm → invertible 1×1 convolution → coupling (Kingma & Dhariwal 2018); on
    images in a multi-scale architecture with a learned prior on the factored-out channels."""

    Config = GlowConfig

    def _step(self, c: GlowConfig, channels: int, mask: torch.Tensor, net: nn.Module, i: int):
        mix: L.Transform
        if c.permutation == "conv1x1":
            mix = L.InvConv1x1(channels, seed=i)
        else:
            mix = L.Permutation(channels, c.permutation, seed=i)
        if c.coupling == "affine":
            coupling: L.Transform = L.AffineCoupling(mask, net, c.clamp)
        else:
            coupling = L.AdditiveCoupling(mask, net)
        return [*_norm(c.norm, channels), mix, coupling]

    def build_points(self, c: GlowConfig, dim: int) -> L.Sequential:
        n_params = 2 if c.coupling == "affine" else 1
        layers: list[L.Transform] = []
        for i in range(c.layers):
            mask = L.half_mask(dim, 0)
            kept = int(mask.sum())
            net = L.MLPConditioner(kept, n_params, dim - kept, c.hidden, c.depth, c.dropout)
            layers += self._step(c, dim, mask, net, i)
        return L.Sequential(*layers)

    def build_images(self, c: GlowConfig, shape: tuple[int, int, int]) -> L.Transform:
        _check_even(shape, c.scales, self.family)
        n_params = 2 if c.coupling == "affine" else 1

        def level(s: tuple[int, int, int], i: int) -> L.Transform:
            ch, h, w = s
            sq = (4 * ch, h // 2, w // 2)
            steps: list[L.Transform] = []
            for j in range(c.layers):
                net = L.ConvConditioner(4 * ch, n_params, c.hidden, c.dropout)
                steps += self._step(c, 4 * ch, L.channel_mask(sq, 0), net, 100 * i + j)
            inner = level((2 * ch, h // 2, w // 2), i + 1) if i < c.scales - 1 else None
            return L.MultiScale(L.Sequential(*steps), inner, 4 * ch, c.split_prior)

        return level(shape, 0)


@MODELS.register("nsf", help="neural spline flow: rational-quadratic spline coupling (Durkan 2019)")
class NSF(Flow):
    """Rational-quadratic spline couplings with linear tails (Durkan et al. 2019), optionally with
    an LU linear layer between them; images are flattened."""

    Config = NSFConfig

    def build_points(self, c: NSFConfig, dim: int) -> L.Sequential:
        if c.bins < 2:
            raise ConfigError(f"model.bins must be at least 2, got {c.bins}")
        if c.bound <= 0:
            raise ConfigError(f"model.bound must be positive, got {c.bound}")
        layers: list[L.Transform] = []
        n_params = 3 * c.bins - 1
        for i in range(c.layers):
            layers += _norm(c.norm, dim)
            if c.permutation == "lu" and i > 0:
                layers.append(L.InvConv1x1(dim, seed=i))
            mask = _vector_mask(c.mask, dim, i % 2)
            layers.append(
                L.mlp_coupling(
                    L.SplineCoupling,
                    mask,
                    n_params,
                    c.hidden,
                    c.depth,
                    c.dropout,
                    bins=c.bins,
                    bound=c.bound,
                )
            )
        return L.Sequential(*layers)


@MODELS.register(
    "maf", help="masked autoregressive flow: MADE layers, fast density (Papamakarios 2017)"
)
class MAF(Flow):
    """Masked autoregressive flow (Papamakarios et al. 2017): ``layers`` MAF layers, each a
    :class:`~genlab.nets.made.MADE` giving a shift and a log-scale per coordinate, the ordering
    reversed (or shuffled) between layers, optional batch norm between them (the paper's
    MAF-with-BN). Density in one pass per layer; sampling in ``d`` passes per layer. Images are
    flattened."""

    Config = MAFConfig
    invert = False  # IAF: the same layers run backwards

    def build_points(self, c: MAFConfig, dim: int) -> L.Sequential:
        layers: list[L.Transform] = []
        for i in range(c.layers):
            layers += _norm(c.norm, dim)
            order = _layer_order(c.order, dim, i)
            made = MADE(
                dim, 2, [c.hidden] * c.depth, dropout=c.dropout, zero_init=True, order=order
            )
            layer: L.Transform = L.MaskedAutoregressive(made, c.clamp)
            layers.append(L.Inverse(layer) if self.invert else layer)
        return L.Sequential(*layers)


@MODELS.register(
    "iaf", help="inverse autoregressive flow: MAF run backwards, fast sampling (Kingma 2016)"
)
class IAF(MAF):
    """Inverse autoregressive flow (Kingma et al. 2016) as a density model: each layer maps noise
    to data in one pass (``x_i = z_i · exp(α_i(z_{<i})) + μ_i(z_{<i})``), so sampling is fast and
    the density (data to noise) takes ``d`` passes per layer; the same contract as MAF."""

    invert = True


def _layer_order(kind: str, dim: int, i: int) -> torch.Tensor:
    """The ordering of MAF layer ``i``: natural, then reversed on odd layers (``reverse``), or a
    permutation seeded by the layer index (``random``; the first layer natural)."""
    if i == 0:
        return torch.arange(dim)
    if kind == "reverse":
        return torch.arange(dim) if i % 2 == 0 else torch.arange(dim - 1, -1, -1)
    return torch.randperm(dim, generator=torch.Generator().manual_seed(1_000 + i))
