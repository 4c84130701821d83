"""Autoregressive models with exact likelihoods, products of conditionals sampled one element at a
time: FVSBN, NADE and MADE over vectors (:mod:`.vector`), PixelCNN over images (:mod:`.pixelcnn`)
and the character-level transformer (:mod:`.gpt`). Importing this package registers them in :data:`genlab.registry.MODELS`."""

from genlab.models.autoregressive import gpt, pixelcnn, vector
from genlab.models.autoregressive.gpt import GPT, GPTConfig
from genlab.models.autoregressive.pixelcnn import PixelCNN, PixelCNNConfig
from genlab.models.autoregressive.vector import FVSBN, NADE, MADEModel, VectorAR

__all__ = [
    "FVSBN", "GPT", "NADE", "GPTConfig", "MADEModel", "PixelCNN", "PixelCNNConfig", "VectorAR",
    "gpt", "pixelcnn", "vector",
]  # fmt: skip
