"""Autoregressive models with exact likelihoods: FVSBN, NADE and MADE over vectors
(:mod:`.vector`). Importing this package registers them in :data:`genlab.registry.MODELS`."""

from genlab.models.autoregressive import vector
from genlab.models.autoregressive.vector import FVSBN, NADE, MADEModel, VectorAR

__all__ = ["FVSBN", "NADE", "MADEModel", "VectorAR", "vector"]
