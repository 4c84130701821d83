"""Encoder and decoder networks of the latent-variable models: MLPs for data of any shape, and a
small convolutional pair for images of any size (at least 4 × 4).

``encoder(x) -> (B, out)`` (a VAE's ``out = 2·latent``: mean and log-variance; a VQ-VAE's feature
map), ``decoder(z) -> (B, C·P, H, W)`` or ``(B, D·P)`` with ``P`` numbers per data dimension (the
parameters of the decoder's distribution). The convolutional pair halves the image twice with
stride-2 convolutions and mirrors that with nearest-neighbour upsampling to the exact stored
sizes, so odd sizes (28 → 14 → 7, 15 → 7 → 3) come back to the input's size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """``(B, *shape) -> (B, out)``: flatten, ``depth`` hidden layers of ``hidden`` (SiLU)."""

    def __init__(self, shape: tuple[int, ...], out: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.net = _mlp([math.prod(shape), *[hidden] * depth, out])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """``(B, latent) -> (B, P, *shape)``."""

    def __init__(
        self, latent: int, shape: tuple[int, ...], params: int, hidden: int, depth: int
    ) -> None:
        super().__init__()
        self.shape, self.params = tuple(shape), params
        self.net = _mlp([latent, *[hidden] * depth, params * math.prod(shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(len(z), self.params, *self.shape)


def _down(size: int) -> int:
    return (size + 2 - 4) // 2 + 1  # a 4x4 convolution, stride 2, padding 1


class ConvEncoder(nn.Module):
    """``(B, C, H, W) -> (B, out)``: conv 3×3, then two stride-2 4×4 convolutions (``channels``,
    ``2·channels``), flatten, linear."""

    def __init__(self, shape: tuple[int, ...], out: int, channels: int) -> None:
        super().__init__()
        c, h, w = shape
        if min(h, w) < 4:
            raise ConfigError(
                f"the convolutional autoencoder needs images of at least 4x4, got {h}x{w}"
            )
        self.sizes = [(h, w), (_down(h), _down(w)), (_down(_down(h)), _down(_down(w)))]
        h4, w4 = self.sizes[2]
        self.convs = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.SiLU(),
        )  # fmt: skip
        self.linear = nn.Linear(2 * channels * h4 * w4, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


class ConvDecoder(nn.Module):
    """``(B, latent) -> (B, P, C, H, W)``: linear to ``2·channels`` maps at a quarter of the size,
    then upsample + conv 3×3 twice, and a 3×3 convolution to ``C·P`` outputs."""

    def __init__(self, latent: int, shape: tuple[int, ...], params: int, channels: int) -> None:
        super().__init__()
        c, h, w = shape
        self.shape, self.params, self.channels = tuple(shape), params, channels
        self.sizes = ConvEncoder(shape, 1, 1).sizes
        h4, w4 = self.sizes[2]
        self.linear = nn.Linear(latent, 2 * channels * h4 * w4)
        self.conv1 = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, c * params, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h4, w4 = self.sizes[2]
        x = F.silu(self.linear(z)).view(len(z), 2 * self.channels, h4, w4)
        x = F.silu(self.conv1(F.interpolate(x, size=self.sizes[1], mode="nearest")))
        x = F.silu(self.conv2(F.interpolate(x, size=self.sizes[0], mode="nearest")))
        c, h, w = self.shape
        return self.out(x).view(len(z), c, self.params, h, w).transpose(1, 2)


__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]
