"""Second stages over a frozen stage-1 autoencoder run: a transformer prior over VQ codes
(``vqgan-prior``) and latent diffusion (``ldm``). How a second stage holds its first:
:mod:`genlab.models.two_stage.stage1`."""

from genlab.models.two_stage.latent import LatentDiffusion, LDMConfig
from genlab.models.two_stage.prior import PriorConfig, VQGANPrior

__all__ = ["LDMConfig", "LatentDiffusion", "PriorConfig", "VQGANPrior"]
