"""The convolutional encoder and decoder that genlab's image autoencoders share (VQ-VAE, VQGAN, the
KL autoencoder), so that they differ only in what sits between the two: a quantizer or a Gaussian
posterior.

Encoder: a 3×3 convolution to ``channels`` maps, ``downsample`` stride-2 4×4 convolutions (the
second and later ones double the width: ``channels``, ``2·channels``, ...; a single one doubles it
too), a residual block and a 1×1 convolution to the latent's channels. A side ``n`` becomes
``floor(n / 2)`` per halving (28 → 14 → 7, 15 → 7 → 3), and the sizes are stored
(:attr:`ConvAutoencoder.sizes`, from the image to the latent map).

Decoder: a 3×3 convolution from the latent's channels and a residual block, then per halving a
nearest-neighbour resize to the *exact* stored size of the level above and a 3×3 convolution, and
a last 3×3 convolution (:attr:`dec_out`) to the image's channels, so odd sizes come back exactly.
``dec_out.weight`` is the decoder's last layer, where the adversarial weight of VQGAN and the KL
autoencoder compares gradient norms (:func:`genlab.models.autoencoders.adversarial.adaptive_weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel


class Residual(nn.Module):
    """``x + conv1x1(SiLU(conv3x3(SiLU(x))))`` at ``c`` channels."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, c, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def halved_sizes(h: int, w: int, downsample: int) -> list[tuple[int, int]]:
    """``[(H, W), ...]`` after each of ``downsample`` stride-2 4×4 convolutions (padding 1); a
    :class:`ConfigError` when a side would fall below 1."""
    sizes = [(h, w)]
    for _ in range(downsample):
        hh, ww = sizes[-1]
        if min(hh, ww) < 2:
            raise ConfigError(f"model.downsample={downsample} halves {h}x{w} images below 1x1")
        sizes.append(((hh + 2 - 4) // 2 + 1, (ww + 2 - 4) // 2 + 1))
    return sizes


class ConvAutoencoder(GenerativeModel):
    """Base of the convolutional image autoencoders: builds :attr:`encoder` and the decoder
    (:attr:`dec_in`, :attr:`ups`, :attr:`dec_out`) and runs the decoder (:meth:`_decode`).
    Subclasses call :meth:`_build_encoder` and :meth:`_build_decoder` in ``__init__`` (in that
    order; what they build in between keeps its place in the random initialization)."""

    data_kinds = ("images",)

    def _build_encoder(self, channels: int, downsample: int, out_channels: int) -> None:
        """The encoder ``(B, C, H, W) -> (B, out_channels, h, w)`` and :attr:`sizes`."""
        if len(self.spec.shape) != 3:
            raise ConfigError(
                f"{self.family} models images (C, H, W), got examples of shape {self.spec.shape}"
            )
        if downsample < 0 or min(channels, out_channels) < 1:
            raise ConfigError("model.downsample must be >= 0 and model.channels >= 1")
        chans, h, w = self.spec.shape
        self.sizes = halved_sizes(h, w, downsample)
        enc: list[nn.Module] = [nn.Conv2d(chans, channels, 3, padding=1)]
        width = channels
        for i in range(downsample):
            nxt = channels * (2 if i > 0 or downsample == 1 else 1)
            enc += [nn.SiLU(), nn.Conv2d(width, nxt, 4, 2, 1)]
            width = nxt
        enc += [Residual(width), nn.SiLU(), nn.Conv2d(width, out_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        self._width = width

    def _build_decoder(self, channels: int, downsample: int, in_channels: int) -> None:
        """The decoder ``(B, in_channels, h, w) -> (B, C, H, W)`` (after :meth:`_build_encoder`)."""
        width = self._width
        self.dec_in = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), Residual(width))
        self.ups = nn.ModuleList(
            nn.Conv2d(width, width if i < downsample - 1 else channels, 3, padding=1)
            for i in range(downsample)
        )  # fmt: skip
        self.dec_out = nn.Conv2d(
            channels if downsample else width, self.spec.shape[0], 3, padding=1
        )

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent maps ``(B, in_channels, h, w)`` -> images ``(B, C, H, W)``."""
        x = self.dec_in(z)
        for i, conv in enumerate(self.ups):
            x = conv(F.interpolate(F.silu(x), size=self.sizes[-2 - i], mode="nearest"))
        return self.dec_out(F.silu(x))

    def last_layer(self) -> torch.Tensor:
        """The weight of the decoder's last layer (``G_L`` of the adaptive adversarial weight)."""
        return self.dec_out.weight


__all__ = ["ConvAutoencoder", "Residual", "halved_sizes"]
