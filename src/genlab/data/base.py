"""The common shape of every data source.

A :class:`Dataset` holds tensors already split into train, validation and test parts, knows its kind
("points", "images" or "tokens"), the shape of one example and, for synthetic data, the true law
(:class:`TrueDistribution`) so metrics can compare against fresh samples and exact log-densities.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.data.store import Uint8Images
from genlab.errors import DataError

KINDS = ("points", "images", "tokens")
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1  # the defaults of data.val_fraction and data.test_fraction (docs/data.md)
TEST_FRACTION = 0.1


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

    def modes(self) -> tuple[torch.Tensor, float] | None:
        """For an equal-weight mixture of isotropic Gaussians with a common std: its centres
        ``(K, dim)`` (float64) and that std, in data units, as the mode-collapse metrics need
        (:mod:`genlab.eval.metrics.modes`); None for any other law."""
        return None


@dataclass
class Dataset:
    """Train/validation/test tensors plus what metrics and models need to know about them.

    ``train``/``val``/``test``: float32 tensors ``(N, *shape)`` for points and images (images in
    [-1, 1], channels first), int64 ``(N,)`` token streams for text. Training and checkpoint
    selection see ``train`` and ``val`` only; ``test`` is what ``genlab eval`` reports on (empty for
    a known law, whose evaluation draws fresh samples instead). ``labels_*`` are int64 ``(N,)`` or
    None. ``noise_*``: noise paired with each example (``(N, *shape)``, for rectified-flow reflow),
    or None.
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
    noise_train: torch.Tensor | None = None
    noise_val: torch.Tensor | None = None
    test: torch.Tensor | None = None  # (None: no test part, stored as an empty tensor)
    labels_test: torch.Tensor | None = None
    noise_test: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"dataset kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.train) == 0:
            raise DataError(f"dataset {self.name!r} has no training examples")
        if self.test is None:
            self.test = _take(self.train, slice(0, 0))
            if self.labels_train is not None and self.labels_test is None:
                self.labels_test = self.labels_train[:0]

    def part(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The examples and labels of one split: ``"train"``, ``"val"`` or ``"test"``."""
        if split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, got {split!r}")
        return getattr(self, split), getattr(self, f"labels_{split}")

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

    def modes(self) -> tuple[torch.Tensor, float] | None:
        """The centres and common std of the true law when it is a Gaussian mixture with known
        modes (:meth:`TrueDistribution.modes`), else None."""
        return None if self.true is None else self.true.modes()

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, kind={self.kind}, shape={self.shape}, "
            f"train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
            f"true={'yes' if self.true else 'no'})"
        )


def split(
    n: int, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic train/validation/test index split: the same ``(n, fractions, seed)`` always
    gives the same indices, on every platform (a CPU ``torch.Generator`` permutation).

    Validation takes the first ``round(n * val_fraction)`` indices of the permutation and test the
    last ``round(n * test_fraction)`` (at least one each when its fraction is positive and there
    is room), so the test rows depend on ``test_fraction`` and ``seed`` only: changing
    ``val_fraction`` never moves a test row into training, and ``test_fraction=0`` gives the
    two-way split of earlier versions."""
    check_fractions(val_fraction, test_fraction)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_val = _count(n, val_fraction)
    n_test = _count(n - n_val, test_fraction, of=n)
    return perm[n_val : n - n_test], perm[:n_val], perm[n - n_test :]


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """The two held-out shares must each be in [0, 1) and leave room for training."""
    for what, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= v < 1.0:
            raise DataError(f"data.{what} must be in [0, 1), got {v}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"data.val_fraction + data.test_fraction must be below 1 (nothing would be left to "
            f"train on), got {val_fraction} + {test_fraction}"
        )


def _count(room: int, fraction: float, of: int | None = None) -> int:
    """``round(of * fraction)`` examples (``of`` defaults to ``room``), at least 1 when the
    fraction is positive and more than one example is in ``room``, and never all of it."""
    k = int(round((room if of is None else of) * fraction))
    if k == 0 and fraction > 0 and room > 1:
        k = 1
    return min(k, max(room - 1, 0))


@dataclass
class Batch:
    """One training batch: examples ``x`` ``(B, *shape)`` and optional labels ``y`` ``(B,)``.

    A model's ``prepare`` step fills in the randomness of its objective, drawn per step from a
    seeded generator: ``noise`` ``(B, *shape)`` (e.g. paired with ``x`` by optimal transport), times
    or noise levels ``t`` ``(B,)`` and any family-specific per-example tensors in ``aux``. Every
    field is indexed by example, so a batch can be split across data-parallel ranks.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    t: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)

    def shard(self, rank: int, world: int) -> Batch:
        """The ``rank``-th of ``world`` equal contiguous slices (the batch size must divide)."""
        n = self.x.shape[0]
        if n % world:
            raise DataError(f"a batch of {n} cannot be split evenly across {world} processes")
        k = n // world
        sl = slice(rank * k, (rank + 1) * k)

        def cut(v: torch.Tensor | None) -> torch.Tensor | None:
            return None if v is None else v[sl]

        return Batch(
            self.x[sl], cut(self.y), cut(self.noise), cut(self.t),
            {k_: v[sl] for k_, v in self.aux.items()},
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Helpers shared by the loaders (genlab.data.arrays / images / text).
# ---------------------------------------------------------------------------------------------


def from_examples(
    name: str,
    kind: str,
    x: torch.Tensor,
    *,
    n: int | None,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Dataset:
    """Keep the first ``n`` examples (all when ``n`` is None), then split them at random into
    train/validation/test with :func:`split`; ``labels`` follow their examples (``num_classes``
    defaults to the largest label + 1)."""
    if labels is not None and num_classes is None and len(labels):
        num_classes = int(labels.max()) + 1
    if n is not None:
        x = _take(x, slice(0, int(n)))
        labels = None if labels is None else labels[: int(n)]
    train, val, test = split(len(x), val_fraction, seed, test_fraction)
    return Dataset(
        name,
        kind,
        _take(x, train),
        _take(x, val),
        labels_train=None if labels is None else labels[train],
        labels_val=None if labels is None else labels[val],
        num_classes=num_classes,
        meta=dict(meta or {}),
        test=_take(x, test),
        labels_test=None if labels is None else labels[test],
    )


def _take(x: torch.Tensor | Uint8Images, which: slice | torch.Tensor) -> torch.Tensor | Uint8Images:
    """The examples at ``which``: uint8 images stay lazy (row numbers, no copy)."""
    return x.subset(which) if isinstance(x, Uint8Images) else x[which]


def require_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a :class:`Path` if it exists; else a :class:`DataError` that names it and, when a
    sibling has a close name, suggests it."""
    path = Path(path).expanduser()
    if path.exists():
        return path
    parent = path.parent
    if not parent.is_dir():
        raise DataError(f"{what} {str(path)!r} not found (folder {str(parent)!r} does not exist)")
    close = difflib.get_close_matches(path.name, sorted(os.listdir(parent)), n=3, cutoff=0.6)
    hint = (
        "; did you mean " + " or ".join(repr(str(parent / c)) for c in close) + "?" if close else ""
    )
    raise DataError(f"{what} {str(path)!r} not found{hint}")


def asset(relpath: str, sha256: str) -> Path:
    """Path of a file shipped in ``genlab/assets/`` after checking its SHA-256 (a mismatch or a
    missing file is a :class:`DataError`: the installed copy is corrupt)."""
    ref = importlib.resources.files("genlab") / "assets"
    for part in relpath.split("/"):
        ref = ref / part
    path = Path(str(ref))  # an editable or wheel install keeps assets as plain files
    if not path.is_file():
        raise DataError(f"bundled data file {relpath!r} is missing from {path}: reinstall genlab")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise DataError(
            f"bundled data file {str(path)!r} is corrupt: sha256 {digest} != expected {sha256}; "
            "reinstall genlab"
        )
    return path


MAX_CLASSES = 100_000  # a class embedding of this many rows is still small


def check_labels(labels: np.ndarray, n: int, source: str) -> np.ndarray:
    """Labels as int64 ``(N,)``: class indices ``0..K-1``, one per example. ``K = max + 1`` may
    not exceed the number of examples nor :data:`MAX_CLASSES`: sparse ids such as 10⁹ are refused
    with a hint to renumber them, rather than sizing a class embedding by them (up to 1,000
    classes are always accepted)."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu" or (n and labels.min() < 0):
        raise DataError(
            f"{source}: labels must be {n} non-negative integers, got dtype {labels.dtype} and "
            f"shape {tuple(labels.shape)}"
        )
    if n:
        k = int(labels.max()) + 1
        if k > MAX_CLASSES or (k > 1000 and k > n):
            distinct = len(np.unique(labels))
            raise DataError(
                f"{source}: labels must be class indices 0..K-1; the largest is {k - 1:,}, which "
                f"would make {k:,} classes for {n:,} examples ({distinct} distinct labels); "
                "renumber them, e.g. np.unique(labels, return_inverse=True)[1]"
            )
    return labels.astype(np.int64)
