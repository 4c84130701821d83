"""Autoregressive models with exact likelihoods, products of conditionals sampled one element at a
time: FVSBN, NADE and MADE over vectors (:mod:`.vector`) and the character-level transformer
(:mod:`.gpt`). Importing this package registers them in :data:`genlab.registry.MODELS`."""

from genlab.models.autoregressive import gpt, vector
from genlab.models.autoregressive.gpt import GPT, GPTConfig
from genlab.models.autoregressive.vector import FVSBN, NADE, MADEModel, VectorAR

__all__ = ["FVSBN", "GPT", "NADE", "GPTConfig", "MADEModel", "VectorAR", "gpt", "vector"]
