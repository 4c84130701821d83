"""Backbones: networks that know shapes, not losses. Any family can use any backbone that fits."""

from genlab.nets import gan  # noqa: F401  (registers the GAN backbones)
from genlab.nets.embeddings import SinusoidalEmbedding
from genlab.nets.mlp import MLP
from genlab.nets.transformer import KVCache, Transformer
from genlab.nets.unet import UNet

__all__ = ["MLP", "KVCache", "SinusoidalEmbedding", "Transformer", "UNet"]
