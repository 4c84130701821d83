"""A time-conditioned MLP for points of any dimension."""

from __future__ import annotations

import torch
from torch import nn

from genlab.nets.embeddings import SinusoidalEmbedding
from genlab.registry import NETS


@NETS.register("mlp", help="time-conditioned MLP for points (any dimension)")
class MLP(nn.Module):
    """``f(x, t[, y]) -> (B, out_dim)`` for ``x`` of shape ``(B, dim)`` and ``t`` of shape ``(B,)``.

    The time embedding (sinusoidal, then concatenated to ``x``) and an optional class embedding are
    the only conditioning; ``depth`` hidden layers of width ``hidden`` with SiLU activations. Kept
    deliberately plain: at the sizes used for 2-D data, anything fancier costs more time per step
    than it returns in sample quality.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        hidden: int = 256,
        depth: int = 4,
        time_dim: int = 32,
        num_classes: int | None = None,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.dim, self.out_dim = dim, out_dim or dim
        self.time_embed = SinusoidalEmbedding(time_dim, scale=time_scale)
        # class index num_classes is the "null" label used by classifier-free guidance
        self.class_embed = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, self.out_dim))
        self.net = nn.Sequential(*layers)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time_embed(t).to(x.dtype)  # (B, time_dim)
        if self.class_embed is not None and y is not None:
            emb = emb + self.class_embed(y)
        return self.net(torch.cat([x, emb], dim=-1))
