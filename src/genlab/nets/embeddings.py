"""Embeddings of a scalar time or noise level."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal features of a scalar (Vaswani et al. 2017; Ho et al. 2020).

    ``t`` of shape ``(B,)`` (any real values; genlab passes times in [0, 1] scaled by ``scale``)
    maps to ``(B, dim)``: ``[sin(scale·t·f_k), cos(scale·t·f_k)]`` with frequencies ``f_k``
    geometric from 1 to ``1 / max_period``. The frequencies are a buffer, so the module follows
    the device and dtype of the model.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10_000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", (scale * freqs).float(), persistent=False)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]  # (B, dim/2)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, dim)
