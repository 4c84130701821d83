"""A patch discriminator (PatchGAN; Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks", sec. 3.2.2): a fully convolutional net that gives a *map* of logits, one per
overlapping patch of the image, rather than one number per image. VQGAN and Stable Diffusion's
autoencoder judge their reconstructions with it (Esser et al. 2021, sec. 3.1), so the adversarial
term works on local texture and leaves global structure to the reconstruction loss.

Layout (that of taming-transformers' ``NLayerDiscriminator``, with the sizes adapted to small
images): ``layers`` 4×4 convolutions of stride 2 (padding 1; widths ``channels``, ``2·channels``,
... capped at ``8·channels``), LeakyReLU(0.2) after each, then a 3×3 convolution of stride 1 and a
3×3 convolution to one logit per position. The original ends with two 4×4 stride-1 convolutions,
which shrink a map by one pixel each and so need images of at least 32×32; 3×3 convolutions keep
the size, so 8×8 digits get a 2×2 map of logits with ``layers=2`` and 28×28 MNIST a 7×7 map, each
logit seeing a 26×26 patch (its receptive field).

No normalization layer: the original's batch normalization makes the output of one example depend
on the others in its batch, which differs between one process and two (genlab's data-parallel
training promises that they agree) and between the real and the reconstructed batch. Weights are
initialised N(0, 0.02) as in DCGAN and taming-transformers.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.errors import ConfigError


class PatchDiscriminator(nn.Module):
    """``D(x) -> (B, 1, h, w)`` logits for images ``(B, C, H, W)``; see the module docstring."""

    def __init__(self, shape: tuple[int, ...], channels: int = 32, layers: int = 2) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ConfigError(f"the patch discriminator takes images (C, H, W), got {shape}")
        if channels < 1 or layers < 0:
            raise ConfigError(
                f"model.disc_channels must be >= 1 and model.disc_layers >= 0, got {channels}, "
                f"{layers}"
            )
        c, h, w = shape
        if min(h, w) < 2**layers:
            raise ConfigError(
                f"model.disc_layers={layers} halves {h}x{w} images below 1x1: use at most "
                f"{max(0, min(h, w).bit_length() - 1)}"
            )
        mods: list[nn.Module] = []
        width_in = c
        for i in range(layers):
            width = channels * min(2**i, 8)
            mods += [nn.Conv2d(width_in, width, 4, 2, 1), nn.LeakyReLU(0.2)]
            width_in = width
        width = channels * min(2**layers, 8)
        mods += [
            nn.Conv2d(width_in, width, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 1, 3, 1, 1),
        ]
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


__all__ = ["PatchDiscriminator"]
