"""Model families. Importing this package registers every family in ``genlab.registry.MODELS``."""

import genlab.nets  # noqa: F401  (registers the backbones)
from genlab.models import (
    autoregressive,  # noqa: F401
    diffusion,  # noqa: F401
    flows,  # noqa: F401
    gan,  # noqa: F401
    kl_autoencoder,  # noqa: F401
    text,  # noqa: F401
    two_stage,  # noqa: F401
    vae,  # noqa: F401
    vqgan,  # noqa: F401
    vqvae,  # noqa: F401
)
from genlab.models.base import GenerativeModel, LogProb, ModelSpec

__all__ = ["GenerativeModel", "LogProb", "ModelSpec"]
