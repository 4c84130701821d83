"""Evaluation: sample-based metrics (:mod:`genlab.eval.metrics`) and plots (:mod:`genlab.eval.plots`).

Importing this package registers the point metrics in :data:`genlab.registry.METRICS`. The plot
functions are loaded on first use, so that importing metrics does not import matplotlib.
"""

from __future__ import annotations

from typing import Any

from genlab.eval.metrics import (
    DEFAULT_POINT_METRICS,
    Metric,
    OptimalTransportError,
    energy,
    evaluate_points,
    get_metric,
    median_bandwidth,
    mmd,
    sliced_w2,
    w2,
)

_PLOTS = ("plot_samples", "plot_trajectories", "plot_image_grid", "plot_curves")

__all__ = [
    "DEFAULT_POINT_METRICS",
    "Metric",
    "OptimalTransportError",
    "energy",
    "evaluate_points",
    "get_metric",
    "median_bandwidth",
    "mmd",
    "sliced_w2",
    "w2",
    *_PLOTS,
]


def __getattr__(name: str) -> Any:  # PEP 562: lazy plot functions
    if name in _PLOTS:
        from genlab.eval import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
