"""The common shape of every data source.

A :class:`Dataset` holds tensors already split into train and validation parts, knows its kind
("points", "images" or "tokens"), the shape of one example and, for synthetic data, the true law
(:class:`TrueDistribution`) so metrics can compare against fresh samples and exact log-densities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from genlab.errors import DataError

KINDS = ("points", "images", "tokens")


class TrueDistribution:
    """The known law of a synthetic dataset.

    Subclasses implement :meth:`sample`; :meth:`log_prob` where the density is known in closed form
    (or by a quadrature accurate to float64 precision; ``log_prob_kind`` says which).
    """

    dim: int = 2
    log_prob_kind: str | None = None  # "exact" | "quadrature" | None when unknown

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` i.i.d. points, shape ``(n, dim)``, float64."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density in nats at ``x`` of shape ``(n, dim)``; returns ``(n,)``."""
        raise NotImplementedError(f"{type(self).__name__} has no known density")

    @property
    def has_log_prob(self) -> bool:
        return self.log_prob_kind is not None


@dataclass
class Dataset:
    """Train/validation tensors plus what metrics and models need to know about them.

    ``train``/``val``: float32 tensors ``(N, *shape)`` for points and images (images in [-1, 1],
    channels first), int64 ``(N,)`` token streams for text. ``labels_*`` are int64 ``(N,)`` or None.
    """

    name: str
    kind: str
    train: torch.Tensor
    val: torch.Tensor
    labels_train: torch.Tensor | None = None
    labels_val: torch.Tensor | None = None
    true: TrueDistribution | None = None
    num_classes: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"dataset kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.train) == 0:
            raise DataError(f"dataset {self.name!r} has no training examples")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example (points: ``(d,)``, images: ``(C, H, W)``, tokens: ``()``)."""
        return tuple(self.train.shape[1:])

    @property
    def dim(self) -> int:
        """Number of scalars in one example (for bits/dim)."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, kind={self.kind}, shape={self.shape}, "
            f"train={len(self.train)}, val={len(self.val)}, true={'yes' if self.true else 'no'})"
        )


def split(
    n: int, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic train/validation index split: the same ``(n, val_fraction, seed)`` always gives
    the same indices, on every platform (a CPU ``torch.Generator`` permutation)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_val = int(round(n * val_fraction))
    if n_val == 0 and val_fraction > 0 and n > 1:
        n_val = 1
    return perm[n_val:], perm[:n_val]


@dataclass
class Batch:
    """One training batch: examples ``x`` ``(B, *shape)`` and optional labels ``y`` ``(B,)``."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.x.to(device), None if self.y is None else self.y.to(device))
