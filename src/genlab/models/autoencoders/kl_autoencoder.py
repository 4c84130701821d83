"""The KL-regularized autoencoder of latent diffusion (Rombach et al. 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models", sec. 3 and appendix G; Stable Diffusion's first stage).

The encoder (the convolutional encoder shared with the VQ-VAE, :mod:`genlab.models.autoencoders.conv_autoencoder`)
maps an image ``(C, H, W)`` to the mean and log-variance of a diagonal Gaussian posterior
``q(z | x)`` over a *spatial* latent of ``latent_channels`` maps at ``H / 2^downsample ×
W / 2^downsample`` (floor at each halving); training decodes a draw ``z = μ + σ·ε`` (``ε`` drawn
in :meth:`prepare` from the step's generator). The loss is that of :mod:`genlab.models.autoencoders.adversarial`
(pixel L1 or MSE, optional perceptual term, optional patch discriminator with the adaptive
weight, all shared with VQGAN) with the regularizer

    R = kl_weight · KL(q(z | x) ‖ N(0, I)) / (C·H·W),
    KL = ½ Σ_{c,h,w} (μ² + σ² − 1 − log σ²)   (nats per example, closed form)

The division by the number of pixel values makes ``kl_weight`` mean what it means in Stable
Diffusion, whose reconstruction loss is *summed* over pixels (``kl_weight = 1e-6`` there, the
default here), while genlab's is a mean: the ratio of the two terms is the same. So weak a KL keeps
the latent close to deterministic (reconstructions nearly as good as a plain autoencoder's) while
stopping its scale from drifting; the latent is *not* standard normal, and a second stage rescales
it by a factor measured on the data.

As a first stage: :meth:`latent` is ``LatentSpec("continuous", (C, h, w))``, :meth:`encode` gives
the posterior mean (deterministic) and :meth:`decode` images from latents. :meth:`sample` decodes
standard-normal latents: a baseline that shows what the decoder makes of the prior the KL term
pulls towards (with a weight of 1e-6 the posterior is far from it, so expect blurs and blots, not
digits); latent diffusion is the real sampler. ``genlab eval`` reports the held-out reconstruction
error, the KL and the standard deviation of the posterior means (what a second stage rescales).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.autoencoders.adversarial import AdversarialAutoencoder, AdversarialConfig
from genlab.models.autoencoders.conv_autoencoder import ConvAutoencoder
from genlab.models.base import LatentSpec, ModelSpec, SampleResult
from genlab.registry import MODELS


@dataclass
class KLAutoencoderConfig(AdversarialConfig):
    latent_channels: int = 4  # C of the latent (SD: 4)
    channels: int = 32  # feature maps (2x after the first downsampling)
    downsample: int = 2  # stride-2 convolutions: the latent is H / 2^downsample
    kl_weight: float = 1e-6  # weight of the KL term, per pixel value (SD's 1e-6; see above)
    disc_weight: float = 0.5  # SD's first stage: 0.5


@MODELS.register(
    "kl-autoencoder",
    help="KL autoencoder: spatial Gaussian latent, small KL, optional patch GAN + perceptual "
    "(the Stable Diffusion first stage; Rombach 2022)",
)
class KLAutoencoder(AdversarialAutoencoder, ConvAutoencoder):
    """See the module docstring."""

    Config = KLAutoencoderConfig

    def __init__(self, config: KLAutoencoderConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        c = config
        if c.latent_channels < 1 or c.channels < 1:
            raise ConfigError("model.latent_channels and model.channels must be >= 1")
        if c.kl_weight < 0:
            raise ConfigError(f"model.kl_weight must be >= 0, got {c.kl_weight}")
        self._build_encoder(c.channels, c.downsample, 2 * c.latent_channels)
        self._build_decoder(c.channels, c.downsample, c.latent_channels)
        self._build_adversary()

    # --- the posterior --------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(B, C, h, w)`` each of ``q(z | x)`` (log-variance clamped to
        [−30, 20] as in Stable Diffusion)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``KL(N(mean, exp(logvar)) ‖ N(0, I))`` in nats per example ``(B,)`` (closed form)."""
        return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """The posterior noise ``ε`` ``(B, C, h, w)`` of the batch."""
        x = batch.x
        dev = generator.device if generator is not None else x.device
        eps = torch.randn(
            (len(x), self.config.latent_channels, *self.sizes[-1]),
            generator=generator, device=dev, dtype=x.dtype,
        )  # fmt: skip
        return Batch(x, batch.y, batch.noise, batch.t, {**batch.aux, "eps": eps.to(x.device)})

    def _prepared(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        return batch if "eps" in batch.aux else self.prepare(batch, generator)

    def _autoencode(self, batch: Batch, update: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructions of a posterior draw and the weighted KL per pixel value."""
        mean, logvar = self.posterior(batch.x)
        z = mean + (0.5 * logvar).exp() * batch.aux["eps"]
        reg = self.config.kl_weight * self.kl(mean, logvar).mean() / batch.x[0].numel()
        return self._decode(z), reg

    # --- the first-stage interface --------------------------------------------------------------
    def latent(self) -> LatentSpec:
        return LatentSpec("continuous", (self.config.latent_channels, *self.sizes[-1]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> posterior means ``(B, C, h, w)``."""
        with torch.no_grad():
            return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C, h, w)`` -> images ``(B, C_img, H, W)``."""
        want = (self.config.latent_channels, *self.sizes[-1])
        if z.dim() != 4 or tuple(z.shape[1:]) != want:
            raise ConfigError(f"decode takes latents of shape (B, {want}), got {tuple(z.shape)}")
        return self._decode(z)

    # --- sampling and reports -------------------------------------------------------------------
    def _sample(
        self, n: int, *, labels: torch.Tensor | None, generator: torch.Generator | None
    ) -> SampleResult:
        """Standard-normal latents, decoded (a baseline; see the module docstring)."""
        p = self.dec_out.weight
        dev = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn((n, *self.latent().shape), generator=generator, device=dev, dtype=p.dtype)
        return SampleResult(self.decode(z.to(p.device)).clamp(-1, 1), 1)

    @torch.no_grad()
    def report(self, x, labels=None) -> dict[str, dict]:
        x = x[:2000].to(self.device)
        if len(x) == 0:
            return {}
        self.eval()
        err, kl, means = 0.0, 0.0, []
        for chunk in torch.split(x, 256):
            mean, logvar = self.posterior(chunk)
            err += float(F.mse_loss(self._decode(mean), chunk, reduction="sum"))
            kl += float(self.kl(mean, logvar).sum())
            means.append(mean)
        std = float(torch.cat(means).double().std())
        return {
            "reconstruction_mse": {"value": err / x.numel(), "unit": "per element, [-1, 1] scale "
                                   "(posterior mean)", "better": "lower"},
            "kl": {"value": kl / len(x), "unit": "nats per example", "better": "n/a"},
            "latent_std": {"value": std, "unit": "std of the posterior means (all elements)",
                           "better": "n/a"},
        }  # fmt: skip


__all__ = ["KLAutoencoder", "KLAutoencoderConfig"]
