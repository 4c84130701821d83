"""What every metric shares: the :class:`Comparison` it reads, the :class:`Metric` record it is
registered as, input checks, blockwise pairwise sums, and the registry lookups that pick and check
an evaluation's metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genlab.errors import DataError, GenlabError
from genlab.registry import METRICS

ArrayLike = torch.Tensor | np.ndarray

# Kernel/distance blocks hold at most this many entries (float64: 32 MiB).
_BLOCK_ENTRIES = 1 << 22


@dataclass
class Comparison:
    """What every metric reads: samples against a reference set, for one evaluation seed.

    ``x`` ``(n, *shape)`` samples and ``y`` ``(m, *shape)`` reference (float64 points, or images);
    for images ``fx``/``fy`` are their features ``(n, F)`` from the feature network, ``px`` the
    network's class probabilities of the samples ``(n, K)`` (a classifier only) and ``labels_x``
    the classes the samples were drawn for (class-conditional models). ``modes``: the centres
    ``(K, d)`` and common std of the data's law when it is a Gaussian mixture
    (:meth:`~genlab.data.base.TrueDistribution.modes`). ``cache`` holds work that several metrics
    share (the k-NN radii of precision/recall/density/coverage, the nearest modes)."""

    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator | None = None
    fx: torch.Tensor | None = None
    fy: torch.Tensor | None = None
    px: torch.Tensor | None = None
    labels_x: torch.Tensor | None = None
    modes: tuple[torch.Tensor, float] | None = None
    score: Callable[[torch.Tensor], torch.Tensor] | None = None  # text: log p of each row (nats)
    cache: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per comparison and shared by the metrics that need it."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


#: what a metric may need besides samples and a reference
NEEDS = {
    "features": "image features (a feature network)",
    "classes": "a feature network that classifies (labelled data)",
    "labels": "samples drawn for given classes (a class-conditional model)",
    "modes": "a Gaussian-mixture law with known modes (e.g. the data sets ring, grid)",
    "scorer": "an autoregressive run on the same text that scores the samples (eval.scorer)",
}


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``fn(comparison) -> value`` (or ``(value, std)`` where the estimator
    reports its own spread, as KID over subsets) plus what a report prints beside the value.
    Calling the record calls the function."""

    name: str
    fn: Callable[[Comparison], float | tuple[float, float]]
    units: str
    help: str
    kinds: tuple[str, ...] = ("points",)  # the data kinds it applies to
    needs: tuple[str, ...] = ()  # keys of NEEDS
    lower_is_better: bool = True
    toward_floor: bool = False  # neither lower nor higher: the real-data floor is the target

    def __call__(self, c: Comparison) -> float | tuple[float, float]:
        return self.fn(c)

    @property
    def better(self) -> str:
        if self.toward_floor:
            return "closer to the floor"
        return "lower" if self.lower_is_better else "higher"

    @property
    def label(self) -> str:
        """``"w2 [data units, lower is better]"``: a column header for tables and logs."""
        return f"{self.name} [{self.units}, {self.better} is better]"


class OptimalTransportError(GenlabError):
    """The exact optimal-transport solver stopped before proving optimality."""


def as_points(x: ArrayLike, name: str = "x") -> torch.Tensor:
    """Return ``x`` as a float64 tensor ``(n, d)``; raise :class:`DataError` unless it is a
    non-empty, finite 2-D array."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise DataError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
        t = torch.from_numpy(np.array(x, dtype=np.float64))
    elif isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise DataError(f"{name}: expected a real numeric tensor, got dtype {x.dtype}")
        t = x.detach()
    else:
        raise DataError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if t.ndim != 2:
        hint = " (reshape a single set of 1-D values to (n, 1))" if t.ndim == 1 else ""
        raise DataError(f"{name}: expected a 2-D array (n, d), got shape {tuple(t.shape)}{hint}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise DataError(f"{name}: empty point set, shape {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise DataError(f"{name}: {bad} of {t.shape[0]} points contain NaN or inf")
    return t


def check_pair(
    x: ArrayLike, y: ArrayLike, min_n: int = 1, names: tuple[str, str] = ("x", "y")
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of point sets; returns both as float64 tensors on the device of ``x``.
    ``names`` are what error messages call the two sets."""
    nx, ny = names
    tx, ty = as_points(x, nx), as_points(y, ny)
    if tx.shape[1] != ty.shape[1]:
        raise DataError(
            f"{nx} and {ny} must have the same dimension d: {nx} is {tuple(tx.shape)}, "
            f"{ny} is {tuple(ty.shape)}"
        )
    for name, t in ((nx, tx), (ny, ty)):
        if t.shape[0] < min_n:
            raise DataError(
                f"{name}: this estimator needs at least {min_n} points, got {t.shape[0]}"
            )
    return tx, ty.to(tx.device)


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(len(a), len(b))``.

    For small ``d`` by explicit differences (exact: zero for equal points); for large ``d`` by the
    ``|a|^2 + |b|^2 - 2 a.b`` matrix product, which is much faster but only accurate to about
    ``sqrt(eps) * |a|`` for near-coincident points.
    """
    mode = "donot_use_mm_for_euclid_dist" if a.shape[1] <= 16 else "use_mm_for_euclid_dist"
    return torch.cdist(a, b, compute_mode=mode)


def _row_blocks(n: int, m: int) -> Iterator[slice]:
    """Row slices of an ``(n, m)`` matrix holding at most ``_BLOCK_ENTRIES`` entries each."""
    step = max(1, _BLOCK_ENTRIES // max(m, 1))
    for i in range(0, n, step):
        yield slice(i, min(i + step, n))


def _sum_pairwise(
    a: torch.Tensor, b: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]
) -> float:
    """``sum_{i,j} f(|a_i - b_j|)``, computed in row blocks so memory stays bounded.

    ``f`` receives a fresh block of distances and may overwrite it in place."""
    total = a.new_zeros(())
    for rows in _row_blocks(a.shape[0], b.shape[0]):
        total += f(_cdist(a[rows], b)).sum()
    return float(total)


def _sum_within(a: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``sum_{i,j} f(|a_i - a_j|)`` (diagonal included), using symmetry: each row block meets only
    itself and the rows after it, and the off-diagonal part counts twice."""
    total = a.new_zeros(())
    for rows in _row_blocks(a.shape[0], a.shape[0]):
        total += f(_cdist(a[rows], a[rows])).sum()
        if rows.stop < a.shape[0]:
            total += 2.0 * f(_cdist(a[rows], a[rows.stop :])).sum()
    return float(total)


# ---------------------------------------------------------------------------------------------
# Wasserstein distances
# ---------------------------------------------------------------------------------------------


def register(*records: Metric) -> None:
    for rec in records:
        METRICS.register(rec.name, rec, help=f"[{', '.join(rec.kinds)}] {rec.help}")


def get_metric(name: str) -> Metric:
    """The registered :class:`Metric` record for ``name`` (suggests close names on a typo)."""
    return METRICS.get(name)


def metrics_for(kind: str, available: Iterable[str] = ()) -> list[str]:
    """The registered metrics that apply to data of ``kind`` (``points``, ``images``,
    ``tokens``) and need nothing beyond ``available`` (keys of :data:`NEEDS`): the defaults of
    an evaluation."""
    have = set(available)
    return [e.name for e in METRICS.in_order() if kind in e.obj.kinds and set(e.obj.needs) <= have]


def check_metrics(names: Iterable[str], kind: str, available: Iterable[str]) -> list[Metric]:
    """The records of ``names``; a :class:`DataError` for one that does not apply to ``kind`` or
    needs what this evaluation lacks (unknown names suggest close ones)."""
    have, out = set(available), []
    for name in names:
        rec = get_metric(name)
        if kind not in rec.kinds:
            raise DataError(
                f"metric {name!r} applies to {', '.join(rec.kinds)}, not to {kind}; "
                f"for {kind}: {', '.join(metrics_for(kind, NEEDS)) or 'none'}"
            )
        missing = [NEEDS[k] for k in rec.needs if k not in have]
        if missing:
            raise DataError(f"metric {name!r} needs {' and '.join(missing)}, which is missing here")
        out.append(rec)
    return out
