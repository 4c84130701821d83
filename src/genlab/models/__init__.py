"""Model families, grouped by what a model is (``docs/index.md`` says why each group is one). Importing
this package registers every family in ``genlab.registry.MODELS``."""

import genlab.nets  # noqa: F401  (registers the backbones)
from genlab.models import (
    autoencoders,  # noqa: F401
    autoregressive,  # noqa: F401
    diffusion,  # noqa: F401
    discrete_diffusion,  # noqa: F401
    flows,  # noqa: F401
    gan,  # noqa: F401
    two_stage,  # noqa: F401
    vae,  # noqa: F401
)
from genlab.models.base import GenerativeModel, LogProb, ModelSpec

__all__ = ["GenerativeModel", "LogProb", "ModelSpec"]
