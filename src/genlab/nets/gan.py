"""Generator and discriminator backbones of GANs: MLPs for points, a DCGAN pair for images.

Every generator is ``G(z, labels=None) -> x`` with ``z`` of shape ``(B, z_dim)``; every
discriminator is ``D(x, labels=None) -> (B,)``, an unbounded score (a logit for the
non-saturating/hinge losses, a critic value for WGAN): the loss decides what it means. Labels are
int64 ``(B,)`` in ``[0, num_classes)``. A net built with ``num_classes`` needs them, one built
without refuses them, so a family can never silently drop its conditioning.

Conditioning. The generator concatenates a learned class embedding to ``z`` (Mirza & Osindero 2014,
"Conditional Generative Adversarial Nets"). The discriminator is a projection discriminator
(Miyato & Koyama 2018, "cGANs with Projection Discriminator", eq. 3)::

    D(x, y) = ψ(φ(x)) + <embed(y), φ(x)>

with ``φ`` the feature extractor (:meth:`features`), ``ψ`` a linear head and ``embed`` an
``nn.Embedding(num_classes, F)`` initialised Glorot-uniform as in the authors' code.

Spectral normalisation (Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
Networks"): with ``spectral_norm=True`` every ``Linear``, ``Conv2d`` and the projection
``Embedding`` of the discriminator (as the authors' ``SNEmbedID``) is wrapped in
:func:`torch.nn.utils.parametrizations.spectral_norm`: one power iteration per forward in train
mode, none in eval mode. For a convolution torch normalises the largest singular value of the
weight reshaped to ``(out, in·k·k)``, not the operator norm of the convolution itself (that one can
be larger by up to a factor ``k``; Sedghi et al. 2019), exactly as in Miyato et al. Spectral norm
and BatchNorm are not combined: the batch statistics rescale the features and undo the Lipschitz
bound, so an SN discriminator has no normalisation layer.

Image sizes (DCGAN pair). ``H`` and ``W`` are halved with ceiling, ``n -> ceil(n / 2)``, for as
long as both stay >= 4, giving a size chain from a small base map to the image (28: 4, 7, 14, 28;
8: 4, 8; 32: 4, 8, 16, 32; 12x20: 6x10, 12x20). The generator walks it upwards with
nearest-neighbour resizes to the *exact* next size followed by a 3x3 convolution ("resize-conv",
Odena et al. 2016, "Deconvolution and Checkerboard Artifacts", instead of DCGAN's transposed
convolutions); the discriminator walks it downwards with stride-2 3x3 convolutions of padding 1,
which map ``n`` to ``ceil(n / 2)`` for odd and even ``n`` alike. Both nets therefore see the same
feature-map sizes at every level and the generator's output is exactly ``(C, H, W)`` with no crop
and no final interpolation. The alternative -- build ``base · 2^k`` and crop -- computes pixels
that no one sees (32x32 for 28x28: 30% more work at full resolution) and has a crop offset to
choose. The price: when the target is odd (4 -> 7), the nearest resize repeats 3 of the 4 rows
once, an unevenness that the 3x3 convolution after it absorbs. Images smaller than 8 in either
axis have no halving step and are refused.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from genlab.errors import ConfigError
from genlab.registry import NETS

Activation = Literal["leaky_relu", "relu", "elu", "silu", "gelu", "softplus", "tanh"]
Norm = Literal["auto", "batch", "layer", "none"]

_ACTIVATIONS: dict[str, Any] = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # slope 0.2 as in DCGAN
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
}

MIN_IMAGE_SIDE = 8  # smallest H and W the DCGAN pair takes (one halving step to a map >= 4)


# --- shared helpers -------------------------------------------------------------------------------
def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r} (known: {', '.join(sorted(_ACTIVATIONS))})"
        ) from None


def _check_labels(
    labels: torch.Tensor | None, num_classes: int | None, batch: int, who: str
) -> None:
    """Refuse labels given to an unconditional net, missing labels, and a wrong shape or dtype."""
    if num_classes is None:
        if labels is not None:
            raise ValueError(
                f"{who} is unconditional (built with num_classes=None) but was given labels; "
                "build it with num_classes to condition on classes, or pass labels=None"
            )
        return
    if labels is None:
        raise ValueError(
            f"{who} is conditional (num_classes={num_classes}) and needs labels: an int64 "
            f"tensor of shape (B,) with values in [0, {num_classes})"
        )
    if labels.shape != (batch,) or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{who}: labels must be int64 of shape ({batch},), got {labels.dtype} of shape "
            f"{tuple(labels.shape)}"
        )


def _check_input(x: torch.Tensor, shape: tuple[int, ...], who: str, what: str) -> None:
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        want = ", ".join(map(str, shape))
        raise ValueError(f"{who} expects {what} of shape (B, {want}), got {tuple(x.shape)}")


def _class_embedding(num_classes: int | None, dim: int) -> nn.Embedding | None:
    if num_classes is None:
        return None
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1 or None, got {num_classes}")
    emb = nn.Embedding(num_classes, dim)
    nn.init.xavier_uniform_(emb.weight)  # Glorot uniform, as Miyato & Koyama's embeddings
    return emb


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap the weight of every ``Linear``, ``Conv2d`` and ``Embedding`` of ``module`` (in place)
    in :func:`torch.nn.utils.parametrizations.spectral_norm` (Miyato et al. 2018)."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
            _sn(m)
    return module


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016, sec. 4): conv and linear weights ~ N(0, 0.02),
    norm scales ~ N(1, 0.02), biases 0. The projection embedding keeps its Glorot init."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class _Generator(nn.Module):
    """What both generators share: ``z_dim``, ``num_classes`` and :meth:`sample_latent`."""

    z_dim: int
    num_classes: int | None

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latents ``z ~ N(0, I)`` of shape ``(n, z_dim)`` on the module's device and dtype,
        drawn with ``generator`` (on its own device) when given."""
        p = next(self.parameters())
        dev = generator.device if generator is not None else p.device
        z = torch.randn(n, self.z_dim, generator=generator, device=dev, dtype=p.dtype)
        return z.to(p.device)

    def _latent(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """``z`` with the class embedding concatenated, ``(B, z_dim [+ embed_dim])``."""
        who = type(self).__name__
        _check_input(z, (self.z_dim,), who, "latents z")
        _check_labels(labels, self.num_classes, z.shape[0], who)
        if self.class_embed is None:
            return z
        return torch.cat([z, self.class_embed(labels)], dim=-1)


class _Discriminator(nn.Module):
    """``D(x, y) = ψ(φ(x)) [+ <embed(y), φ(x)>]`` given ``features`` (φ), ``head`` (ψ) and
    ``class_embed``; subclasses build them."""

    num_classes: int | None
    shape: tuple[int, ...]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): ``(B, F)``, the input of the linear head and of the projection."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        who = type(self).__name__
        _check_input(x, self.shape, who, "x")
        _check_labels(labels, self.num_classes, x.shape[0], who)
        h = self.features(x)  # (B, F)
        out = self.head(h).squeeze(-1)  # (B,)
        if self.class_embed is not None:  # projection term (Miyato & Koyama 2018, eq. 3)
            out = out + (self.class_embed(labels) * h).sum(dim=-1)
        return out


# --- points ---------------------------------------------------------------------------------------
@NETS.register("mlp-generator", help="GAN generator for points: MLP z [+ class] -> (B, dim)")
class MLPGenerator(_Generator):
    """``G(z[, labels]) -> (B, dim)`` for ``z`` of shape ``(B, z_dim)``.

    ``depth`` hidden layers of width ``hidden`` (``activation``, ReLU by default, as the MLP
    generators of Goodfellow et al. 2014 and Metz et al. 2017) and a linear output: points are
    unbounded, so there is no output squashing. With ``num_classes``, a learned
    ``embed_dim``-dimensional class embedding is concatenated to ``z``.
    """

    def __init__(
        self,
        dim: int,
        z_dim: int = 64,
        hidden: int = 256,
        depth: int = 3,
        num_classes: int | None = None,
        activation: Activation = "relu",
        embed_dim: int = 32,
    ) -> None:
        super().__init__()
        if min(dim, z_dim, hidden, depth, embed_dim) < 1:
            raise ConfigError("dim, z_dim, hidden, depth and embed_dim must all be >= 1")
        self.dim, self.z_dim, self.num_classes = dim, z_dim, num_classes
        self.shape = (dim,)
        self.class_embed = _class_embedding(num_classes, embed_dim)
        layers: list[nn.Module] = []
        width = z_dim + (embed_dim if num_classes is not None else 0)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), _activation(activation)]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self._latent(z, labels))  # (B, dim)


@NETS.register(
    "mlp-discriminator", help="GAN discriminator for points: MLP (B, dim) -> (B,), projection"
)
class MLPDiscriminator(_Discriminator):
    """``D(x[, labels]) -> (B,)`` for points ``x`` of shape ``(B, dim)``.

    φ is ``depth`` layers ``Linear(·, hidden) -> activation`` (LeakyReLU(0.2) by default), ψ a
    ``Linear(hidden, 1)``; conditional nets add the projection ``<embed(y), φ(x)>``. No
    normalisation layers, so it suits every loss, WGAN-GP's per-example gradient penalty included.
    ``spectral_norm`` wraps every linear layer and the embedding.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        num_classes: int | None = None,
        spectral_norm: bool = False,
        activation: Activation = "leaky_relu",
    ) -> None:
        super().__init__()
        if min(dim, hidden, depth) < 1:
            raise ConfigError("dim, hidden and depth must all be >= 1")
        self.dim, self.num_classes, self.shape = dim, num_classes, (dim,)
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), _activation(activation)]
            width = hidden
        self.phi = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, 1)
        self.class_embed = _class_embedding(num_classes, hidden)
        if spectral_norm:
            apply_spectral_norm(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x)  # (B, hidden)


# --- images ---------------------------------------------------------------------------------------
def size_chain(height: int, width: int) -> list[tuple[int, int]]:
    """The spatial sizes of the DCGAN pair, from the base map up to ``(height, width)``: halve
    with ceiling while both sides stay >= 4: 28 -> [4, 7, 14, 28], (12, 20) -> [(6, 10), (12, 20)].
    """
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ConfigError(
            f"the DCGAN nets take images of at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}, got "
            f"{height}x{width}"
        )
    chain = [(height, width)]
    while min(math.ceil(chain[0][0] / 2), math.ceil(chain[0][1] / 2)) >= 4:
        h, w = chain[0]
        chain.insert(0, (math.ceil(h / 2), math.ceil(w / 2)))
    return chain


def _level_channels(channels: int, levels: int, max_mult: int) -> list[int]:
    """Channels per level, full resolution first: ``channels · 2^j`` capped at ``· max_mult``."""
    return [channels * min(2**j, max_mult) for j in range(levels + 1)]


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] < 1:
        raise ConfigError(f"shape must be (C, H, W) with C >= 1, got {shape}")
    return shape  # type: ignore[return-value]


class _Up(nn.Module):
    """Nearest resize to ``size``, then Conv3x3 -> BatchNorm -> ReLU (one generator level)."""

    def __init__(self, cin: int, cout: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)  # bias: BatchNorm's shift
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.size, mode="nearest")  # (B, cin, *size)
        return F.relu(self.norm(self.conv(x)))  # (B, cout, *size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


@NETS.register("dcgan-generator", help="DCGAN generator for images of any size >= 8x8")
class DCGANGenerator(_Generator):
    """``G(z[, labels]) -> (B, C, H, W)`` in ``[-1, 1]`` for ``z`` of shape ``(B, z_dim)``.

    After Radford et al. 2016 ("Unsupervised Representation Learning with Deep Convolutional
    GANs"): a bias-free linear projection of ``z`` (with the class embedding concatenated when
    conditional) reshaped to the base map of :func:`size_chain`, BatchNorm, ReLU; then one
    :class:`_Up` level per step of the chain (nearest resize to the exact next size, Conv3x3,
    BatchNorm, ReLU), halving the channels; a final Conv3x3 to ``C`` channels and tanh. Level ``j``
    (``j = 0`` at full resolution) has ``channels · min(2^j, max_mult)`` channels; weights are
    initialised N(0, 0.02) as in DCGAN. BatchNorm uses batch statistics in train mode and its
    running averages in eval mode.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        z_dim: int = 64,
        channels: int = 32,
        num_classes: int | None = None,
        embed_dim: int = 32,
        max_mult: int = 8,
    ) -> None:
        super().__init__()
        self.shape = _image_shape(shape)
        if min(z_dim, channels, embed_dim, max_mult) < 1:
            raise ConfigError("z_dim, channels, embed_dim and max_mult must all be >= 1")
        self.z_dim, self.num_classes = z_dim, num_classes
        chain = size_chain(*self.shape[1:])
        chans = _level_channels(channels, len(chain) - 1, max_mult)[::-1]  # base first
        self.base = (chans[0], *chain[0])  # (C_k, h_0, w_0)
        self.class_embed = _class_embedding(num_classes, embed_dim)
        width = z_dim + (embed_dim if num_classes is not None else 0)
        self.project = nn.Linear(width, math.prod(self.base), bias=False)
        self.project_norm = nn.BatchNorm2d(chans[0])
        self.ups = nn.Sequential(
            *(_Up(chans[i], chans[i + 1], chain[i + 1]) for i in range(len(chain) - 1))
        )
        self.out = nn.Conv2d(chans[-1], self.shape[0], 3, padding=1)
        _dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project(self._latent(z, labels)).view(-1, *self.base)  # (B, C_k, h_0, w_0)
        h = self.ups(F.relu(self.project_norm(h)))  # (B, channels, H, W)
        return torch.tanh(self.out(h))  # (B, C, H, W)


@NETS.register(
    "dcgan-discriminator", help="DCGAN discriminator for images of any size >= 8x8, projection"
)
class DCGANDiscriminator(_Discriminator):
    """``D(x[, labels]) -> (B,)`` for images ``x`` of shape ``(B, C, H, W)``.

    φ mirrors :class:`DCGANGenerator`: a Conv3x3 ``C -> channels`` at full resolution and
    LeakyReLU(0.2) (no normalisation on the input layer, as DCGAN), then one level per step of
    :func:`size_chain` downwards: stride-2 Conv3x3 (padding 1: ``n -> ceil(n / 2)``), normalisation,
    LeakyReLU(0.2), doubling the channels up to ``channels · max_mult``; the base map is flattened
    (keeping where things are, as DCGAN's final 4x4 convolution) to ``F = C_k·h_0·w_0`` features.
    ψ is a ``Linear(F, 1)``; conditional nets add the projection ``<embed(y), φ(x)>``.

    ``norm``: ``"batch"`` (DCGAN), ``"layer"`` (``GroupNorm(1, ·)``, per-example, the choice of
    Gulrajani et al. 2017 for WGAN-GP critics: a gradient penalty needs ``D(x_i)`` to depend on
    ``x_i`` alone), ``"none"``, or ``"auto"``: batch norm without spectral norm, none with it.
    Spectral norm with batch norm is refused (see the module docstring).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        channels: int = 32,
        num_classes: int | None = None,
        spectral_norm: bool = False,
        norm: Norm = "auto",
        max_mult: int = 8,
    ) -> None:
        super().__init__()
        self.shape = _image_shape(shape)
        if min(channels, max_mult) < 1:
            raise ConfigError("channels and max_mult must be >= 1")
        if norm == "auto":
            norm = "none" if spectral_norm else "batch"
        if norm not in ("batch", "layer", "none"):
            raise ConfigError(f"norm must be 'auto', 'batch', 'layer' or 'none', got {norm!r}")
        if spectral_norm and norm == "batch":
            raise ConfigError(
                "spectral norm and batch norm do not mix in a discriminator (batch statistics "
                "undo the Lipschitz bound): use norm='none' (or 'auto') with spectral_norm"
            )
        self.num_classes, self.norm = num_classes, norm
        chain = size_chain(*self.shape[1:])[::-1]  # full resolution first
        chans = _level_channels(channels, len(chain) - 1, max_mult)
        layers: list[nn.Module] = [
            nn.Conv2d(self.shape[0], chans[0], 3, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers.append(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, cout))
            layers.append(nn.LeakyReLU(0.2))
        self.phi = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = chans[-1] * chain[-1][0] * chain[-1][1]
        self.head = nn.Linear(self.feature_dim, 1)
        self.class_embed = _class_embedding(num_classes, self.feature_dim)
        _dcgan_init(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x)  # (B, C_k·h_0·w_0)


# --- the pair a GAN config names ------------------------------------------------------------------
@dataclass
class GANNetConfig:
    """Backbone fields of a GAN config. Defaults suit 2-D mixtures (points) and 8x8 digits."""

    z_dim: int = 64  # latent size of the generator
    hidden: int = 256  # points: MLP width (generator and discriminator)
    depth: int = 3  # points: MLP hidden layers (generator and discriminator)
    activation: Activation = "leaky_relu"  # points: discriminator activation (the generator: ReLU)
    channels: int = 32  # images: channels at full resolution, doubled per halving (up to 8x)
    spectral_norm: bool = False  # spectral norm on every discriminator weight (Miyato et al. 2018)
    d_norm: Norm = "auto"  # images: discriminator normalisation; auto: batch, none with SN


def _read(config: Any) -> GANNetConfig:
    """The :class:`GANNetConfig` fields of ``config`` (any object; missing fields: defaults)."""
    if isinstance(config, GANNetConfig):
        return config
    return GANNetConfig(
        **{
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(GANNetConfig)
            if hasattr(config, f.name)
        }
    )


def build_gan_nets(
    config: Any, shape: tuple[int, ...], num_classes: int | None = None
) -> tuple[nn.Module, nn.Module]:
    """``(generator, discriminator)`` for examples of shape ``shape``: the MLP pair for points
    ``(d,)``, the DCGAN pair for images ``(C, H, W)`` with ``H, W >= 8``; conditional on
    ``num_classes`` classes when set. ``config`` is a :class:`GANNetConfig` or any object with
    (some of) its fields, such as a family config; missing fields take the defaults.

    Raises :class:`~genlab.errors.ConfigError` for any other shape (tokens, sequences, small
    images) and for invalid field values.
    """
    c = _read(config)
    shape = tuple(int(s) for s in shape)
    for name in ("z_dim", "hidden", "depth", "channels"):
        if getattr(c, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(c, name)}")
    if c.activation not in _ACTIVATIONS:
        raise ConfigError(
            f"model.activation must be one of {', '.join(sorted(_ACTIVATIONS))}, got "
            f"{c.activation!r}"
        )
    if c.d_norm not in ("auto", "batch", "layer", "none"):
        raise ConfigError(f"model.d_norm must be auto, batch, layer or none, got {c.d_norm!r}")
    if c.spectral_norm and c.d_norm == "batch":
        raise ConfigError(
            "model.spectral_norm=true does not mix with model.d_norm=batch; use auto or none"
        )
    if len(shape) == 1:
        gen = MLPGenerator(shape[0], c.z_dim, c.hidden, c.depth, num_classes)
        disc = MLPDiscriminator(
            shape[0], c.hidden, c.depth, num_classes, c.spectral_norm, c.activation
        )
        return gen, disc
    if len(shape) == 3:
        if min(shape[1:]) < MIN_IMAGE_SIDE or shape[0] < 1:
            raise ConfigError(
                f"the GAN image backbones take images of at least {MIN_IMAGE_SIDE}x"
                f"{MIN_IMAGE_SIDE} with >= 1 channel; the data has shape {shape}"
            )
        gen = DCGANGenerator(shape, c.z_dim, c.channels, num_classes)
        disc = DCGANDiscriminator(shape, c.channels, num_classes, c.spectral_norm, c.d_norm)
        return gen, disc
    kind = "tokens" if len(shape) == 0 else f"{len(shape)}-D examples"
    raise ConfigError(
        f"the GAN backbones take points (d,) or images (C, H, W); the data has {kind} of shape "
        f"{shape}, which no GAN backbone takes"
    )


__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GANNetConfig",
    "MLPDiscriminator",
    "MLPGenerator",
    "apply_spectral_norm",
    "build_gan_nets",
    "size_chain",
]
