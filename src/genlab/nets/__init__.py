"""Backbones: networks that know shapes, not losses. Any family can use any backbone that fits."""

from genlab.nets.embeddings import SinusoidalEmbedding
from genlab.nets.mlp import MLP
from genlab.nets.unet import UNet

__all__ = ["MLP", "SinusoidalEmbedding", "UNet"]
