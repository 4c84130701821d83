"""VQGAN (Esser, Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis",
sec. 3.1): the VQ-VAE (:mod:`genlab.models.autoencoders.vqvae`: the same encoder, decoder and
:class:`~genlab.nets.quantize.VectorQuantizer` with its EMA codebook, k-means initialization and
dead-code restarts) trained with an L1 + perceptual reconstruction loss and a patch discriminator
whose hinge loss is weighted adaptively (:mod:`genlab.models.autoencoders.adversarial`, shared with the KL
autoencoder).

Two players on genlab's trainer, in this order each step: ``"autoencoder"`` (encoder, decoder and,
without EMA, the codebook) minimises ``L_rec + quantizer loss + λ·L_adv``; ``"discriminator"``
minimises the hinge loss from step ``model.disc_start`` on. The VQGAN has no randomness of its own
in a step (the quantizer's k-means seeding and restarts come from its own seeded generator), so a
run resumes bit-identically and two processes train like one.

As the first stage of a two-stage model, :meth:`~VQVAE.encode` gives the codes ``(B, h, w)`` and
:meth:`~VQVAE.decode` images from codes (:meth:`latent`: ``LatentSpec("codes", (h, w), K)``).
:meth:`sample` draws each position's code independently from the codes' training frequencies, the
VQ-VAE's baseline: the samples show what the codebook holds; the transformer prior over the codes
is the real sampler. ``genlab eval`` reports the held-out reconstruction error, codebook usage and
perplexity; the log lines carry usage, perplexity and the adaptive weight λ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.data.base import Batch
from genlab.models.autoencoders.adversarial import AdversarialAutoencoder, AdversarialConfig
from genlab.models.autoencoders.vqvae import VQVAE, VQVAEConfig
from genlab.models.base import ModelSpec
from genlab.registry import MODELS


@dataclass
class VQGANConfig(AdversarialConfig, VQVAEConfig):
    """The VQ-VAE's settings plus :class:`~genlab.models.autoencoders.adversarial.AdversarialConfig`."""


@MODELS.register(
    "vqgan",
    help="VQGAN: VQ autoencoder + patch discriminator (hinge, adaptive weight) + perceptual "
    "loss (Esser 2021)",
)
class VQGAN(AdversarialAutoencoder, VQVAE):
    """See the module docstring."""

    Config = VQGANConfig

    def __init__(self, config: VQGANConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        self._build_adversary()

    def _autoencode(self, batch: Batch, update: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructions and the quantizer's loss; without ``update`` the quantizer runs in eval
        mode (no EMA step, no k-means, no restart) and no codes are counted."""
        if update:
            xhat, q = self.reconstruct(batch.x)
            self._count_codes(q.indices)
            return xhat, q.loss
        was = self.quantizer.training
        self.quantizer.eval()
        try:
            xhat, q = self.reconstruct(batch.x)
        finally:
            self.quantizer.train(was)
        return xhat, q.loss


__all__ = ["VQGAN", "VQGANConfig"]
