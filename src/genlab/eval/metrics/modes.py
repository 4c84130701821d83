"""Mode collapse on a mixture of isotropic Gaussians whose modes are known: the protocol of VEEGAN
(Srivastava et al. 2017, sec. 5.1) and PacGAN (Lin et al. 2018, sec. 5, Tables 1-2).

Each sample goes to its nearest mode (Euclidean distance to the ``K`` centres, which is the
std-scaled distance PacGAN uses, since every component has the same std ``s``). It is *high
quality* when that distance is below ``radius * s`` (``radius = 3``; strictly below, as in PacGAN's
code). Then, in float64:

- ``modes_covered``: the modes that are the nearest mode of at least one high-quality sample
  (a count in ``0..K``; higher is better);
- ``high_quality``: the fraction of all samples that are high quality (higher is better);
- ``reverse_kl``: ``KL(q || p)`` in nats between the histogram ``q`` of the nearest modes of the
  high-quality samples and the uniform law ``p = 1/K`` over the modes,
  ``sum_k q_k log(K q_k)``, with ``0 log 0 = 0`` (a mode no sample covers adds nothing; the
  convention of PacGAN's ``KLD``, which sums over ``q_k != 0`` only). It lies in ``[0, log K]``
  (lower is better): ``log(K / m)`` for samples spread evenly over ``m`` of the modes.
  **No high-quality sample** leaves ``q`` undefined (``0 / 0``: PacGAN's code gets NaN); here the
  value is ``log K``, the largest ``KL(q || p)`` over all ``q``, reached by a point mass on one
  mode: a model with no sample near any mode scores no better than one collapsed on a single mode,
  and a report keeps a finite number that sorts the right way.

What a perfect model scores (fresh draws of the law, the evaluation's floor): all modes once
``n`` is large enough (``K (1 - 1/K)^n`` is the expected number missed), a high-quality fraction of
``P(chi2_d < radius^2)``, i.e. ``1 - exp(-radius^2 / 2) = 0.98889`` in 2-D, and a reverse KL
of about ``(K - 1) / (2 n_hq)`` (``2 n_hq KL`` is the G-statistic, nearly ``chi2_{K-1}``): 0.0014
for the ring and 0.0049 for the grid at 2,500 samples, the size of the published tables.

References:
    Srivastava, Valkov, Russell, Gutmann & Sutton (2017), "VEEGAN: Reducing Mode Collapse in GANs
    using Implicit Variational Learning", NeurIPS.
    Lin, Khetan, Fanti & Oh (2018), "PacGAN: The power of two samples in generative adversarial
    networks", NeurIPS; code github.com/fjxmlzn/PacGAN (``pacgan/extensions.py``,
    ``MetricLogger``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from genlab.errors import DataError
from genlab.eval.metrics.base import (
    ArrayLike,
    Comparison,
    Metric,
    _cdist,
    _row_blocks,
    check_pair,
    register,
)

RADIUS = 3.0  # component stds: the protocol's "within three standard deviations"


@dataclass(frozen=True)
class ModeStatistics:
    """The protocol's three numbers and the histogram they come from.

    ``counts`` ``(K,)`` int64: high-quality samples per mode; ``n``: all samples."""

    modes_covered: int
    high_quality: float
    reverse_kl: float
    counts: torch.Tensor
    n: int


def nearest_modes(samples: ArrayLike, centers: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``(n,)`` int64 of each sample's nearest centre and the distance ``(n,)`` to it (data
    units, float64), in row blocks of at most ``base._BLOCK_ENTRIES`` distances; ties go to the
    lower index."""
    x, c = check_pair(samples, centers, names=("samples", "mode centres"))
    index = torch.empty(len(x), dtype=torch.int64, device=x.device)
    dist = torch.empty(len(x), dtype=torch.float64, device=x.device)
    for rows in _row_blocks(len(x), len(c)):
        dist[rows], index[rows] = _cdist(x[rows], c).min(dim=1)  # (rows, K) -> (rows,)
    return index, dist


def mode_statistics(
    samples: ArrayLike, centers: ArrayLike, std: float, *, radius: float = RADIUS
) -> ModeStatistics:
    """Modes covered, high-quality fraction and reverse KL (nats) of ``samples`` ``(n, d)`` against
    a mixture of isotropic Gaussians with ``centers`` ``(K, d)`` and common std ``std`` (data
    units); a sample is high quality within ``radius`` stds of its nearest centre. See the module
    docstring for the definitions and the conventions of the reverse KL.

    Raises :class:`DataError` on a bad shape, non-finite values or a std that is not a positive
    finite number; ``ValueError`` on a bad ``radius``."""
    real = isinstance(std, numbers.Real) and not isinstance(std, bool)  # numpy floats are Real
    s = float(std) if real else math.nan
    if not (math.isfinite(s) and s > 0):
        raise DataError(f"the mixture's component std must be a positive finite number, got {std}")
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive finite number of stds, got {radius}")
    index, dist = nearest_modes(samples, centers)
    k = len(centers)
    good = dist < radius * s
    counts = torch.bincount(index[good], minlength=k).cpu()  # (K,)
    hq = int(counts.sum())
    if hq == 0:  # q undefined: the worst value, that of a point mass (module docstring)
        kl = math.log(k)
    else:
        q = counts.double() / hq
        kl = max(0.0, float(torch.xlogy(q, k * q).sum()))  # 0 log 0 = 0; >= 0 up to round-off
    return ModeStatistics(int((counts > 0).sum()), hq / len(index), kl, counts, len(index))


__all__ = ["RADIUS", "ModeStatistics", "mode_statistics", "nearest_modes"]


def _modes(c: Comparison):  # the samples' nearest modes, shared by the three metrics below
    return c.once("mode_statistics", lambda: mode_statistics(c.x, *c.modes))


_MODES = ("modes",)
register(
    Metric(
        "modes_covered",
        lambda c: float(_modes(c).modes_covered),
        "modes",
        "modes that are the nearest mode of a sample within 3 stds (VEEGAN/PacGAN protocol)",
        needs=_MODES,
        lower_is_better=False,
    ),
    Metric(
        "high_quality",
        lambda c: _modes(c).high_quality,
        "fraction",
        "samples within 3 stds of their nearest mode (VEEGAN/PacGAN; ~0.989 for the law in 2-D)",
        needs=_MODES,
        lower_is_better=False,
    ),
    Metric(
        "reverse_kl",
        lambda c: _modes(c).reverse_kl,
        "nats",
        "KL(high-quality samples' mode histogram || uniform) (PacGAN; log K if none)",
        needs=_MODES,
    ),
)
