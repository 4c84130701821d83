"""The metrics of an evaluation, one module per kind of comparison, each registering its own in
:data:`genlab.registry.METRICS` on import (in the order a report lists them):

- :mod:`~genlab.eval.metrics.points`: distances between point sets (W2, sliced W2, MMD, energy);
- :mod:`~genlab.eval.metrics.modes`: mode collapse on a Gaussian mixture with known modes;
- :mod:`~genlab.eval.metrics.features`: image metrics on learned features (Fréchet distance, KID,
  precision/recall, density/coverage, classifier score, class accuracy);
- :mod:`~genlab.eval.metrics.text`: generative perplexity and unigram entropy of text samples;

on :mod:`~genlab.eval.metrics.base`: the :class:`Comparison` every metric reads and the
:class:`Metric` record it is registered as. Adding a metric is one registered function."""

from __future__ import annotations

# Each module registers its metrics on import; this order is the order a report lists them in.
from genlab.eval.metrics import points  # noqa: F401

# isort: split
from genlab.eval.metrics import modes  # noqa: F401

# isort: split
from genlab.eval.metrics import features  # noqa: F401

# isort: split
from genlab.eval.metrics import text  # noqa: F401

# isort: split
from genlab.eval.metrics.base import (
    NEEDS,
    ArrayLike,
    Comparison,
    Metric,
    OptimalTransportError,
    as_points,
    check_metrics,
    check_pair,
    get_metric,
    metrics_for,
)
from genlab.eval.metrics.points import (
    DEFAULT_POINT_METRICS,
    energy,
    evaluate_points,
    median_bandwidth,
    mmd,
    sliced_w2,
    w2,
)
from genlab.eval.metrics.text import generative_perplexity, unigram_entropy

__all__ = [
    "DEFAULT_POINT_METRICS",
    "NEEDS",
    "ArrayLike",
    "Comparison",
    "Metric",
    "OptimalTransportError",
    "as_points",
    "check_metrics",
    "check_pair",
    "energy",
    "evaluate_points",
    "generative_perplexity",
    "get_metric",
    "median_bandwidth",
    "metrics_for",
    "mmd",
    "sliced_w2",
    "unigram_entropy",
    "w2",
]
