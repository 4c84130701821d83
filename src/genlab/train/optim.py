"""The optimizer and what moves it: AdamW per player, the learning-rate schedule (linear warmup,
then cosine or constant), the EMA decay schedule, and swapping the EMA weights in and out."""

from __future__ import annotations

import math

import torch

from genlab.config import TrainerConfig
from genlab.models.base import Player


def lr_at(step: int, cfg: TrainerConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine or constant."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with the usual warmup ``min(decay, (1 + k) / (10 + k))`` so early averages track."""
    return min(decay, (1.0 + step) / (10.0 + step))


def make_optimizer(
    params: list[torch.nn.Parameter],
    cfg: TrainerConfig,
    device: torch.device,
    player: Player | None = None,
):
    """AdamW with the player's settings (``trainer.*`` where it sets none), fused where this torch
    build supports it for the device (same maths, fewer kernels)."""
    p = player or Player("model", torch.nn.Module())
    kwargs = dict(
        lr=cfg.lr if p.lr is None else p.lr,
        betas=cfg.betas if p.betas is None else p.betas,
        weight_decay=cfg.weight_decay if p.weight_decay is None else p.weight_decay,
    )
    groups: list[torch.nn.Parameter] | list[dict] = params
    if not p.decay_vectors:  # decay matrices and embeddings only (GPT-2, nanoGPT)
        groups = [
            {"params": [q for q in params if q.dim() >= 2]},
            {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0},
        ]
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


class swap_weights:
    def __init__(self, params: list[torch.nn.Parameter], other: list[torch.Tensor] | None) -> None:
        self.params, self.other = params, other

    def __enter__(self):
        if self.other is not None:
            self.saved = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                torch._foreach_copy_(self.params, self.other)
        return self

    def __exit__(self, *exc):
        if self.other is not None:
            with torch.no_grad():
                torch._foreach_copy_(self.params, self.saved)
        return False
