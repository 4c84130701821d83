"""Plots of samples, ODE trajectories, image grids and training curves.

Every function builds a :class:`matplotlib.figure.Figure` directly with an Agg canvas, never
through ``pyplot``: no window opens whatever the backend, no global matplotlib state changes, and
nothing is left registered in ``pyplot`` (``plt.get_fignums()`` stays empty), so there is no figure
to leak. With ``path`` the figure is saved as PNG (parent directories created). The Figure is
returned for further drawing or display; a function given ``ax=`` draws into the caller's axes and
returns that axes' figure. Bad shapes raise :class:`~genlab.errors.DataError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from genlab.errors import DataError

SAMPLE_COLOR = "tab:blue"
START_COLOR = "tab:blue"  # the noise end of a trajectory (where sampling starts)
END_COLOR = "tab:red"  # the data end of a trajectory (where sampling ends)
REFERENCE_COLOR = "0.75"  # light grey


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _to_numpy(a: Any, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor or array (detached, on the CPU)."""
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    if isinstance(a, np.ndarray):
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise DataError(f"{name}: expected a real numeric array, got dtype {a.dtype}")
        return a.astype(np.float64)
    raise DataError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(a).__name__}")


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas; no pyplot, no window
    return fig


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", bbox_inches="tight")


def _start(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = _new_figure(figsize)
    return fig, fig.add_subplot()


def _limits(
    *sets: np.ndarray, pad: float = 0.05
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Common x/y limits of 2-D point sets, padded by ``pad`` of the larger range (equal aspect)."""
    parts = [s.reshape(-1, 2) for s in sets if s.size]
    if not parts:
        return (-1.0, 1.0), (-1.0, 1.0)
    pts = np.concatenate(parts)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    half = max(float((hi - lo).max()) / 2.0, 1e-12) * (1.0 + pad)
    mid = (lo + hi) / 2.0
    return (mid[0] - half, mid[0] + half), (mid[1] - half, mid[1] + half)


def _finite_rows(a: np.ndarray) -> tuple[np.ndarray, int]:
    keep = np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
    return a[keep], int((~keep).sum())


# ---------------------------------------------------------------------------------------------
# Point sets
# ---------------------------------------------------------------------------------------------


def plot_samples(
    samples: Any,
    reference: Any | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Scatter generated ``samples`` (n, d) in colour over ``reference`` data (m, d) in light grey.

    Both share equal-aspect limits that cover both sets. For d > 2 the first two coordinates are
    drawn and the title says so; for d = 1 the two sets are drawn as density histograms. Rows with
    NaN/inf are dropped and counted in the title (a diverged sampler still gets a picture).
    """
    x = _to_numpy(samples, "samples")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"samples: expected a non-empty (n, d) array, got shape {x.shape}")
    d = x.shape[1]
    r = None
    if reference is not None:
        r = _to_numpy(reference, "reference")
        if r.ndim != 2 or r.shape[1] != d:
            raise DataError(
                f"reference: expected shape (m, {d}) to match samples {x.shape}, got {r.shape}"
            )
    x, n_bad = _finite_rows(x)
    if r is not None:
        r, _ = _finite_rows(r)

    notes = []
    if d > 2:
        notes.append(f"first 2 of {d} coordinates")
    if n_bad:
        notes.append(f"{n_bad} non-finite samples dropped")
    full_title = (title or "samples") + (f" ({'; '.join(notes)})" if notes else "")

    fig, ax = _start(ax, (5.0, 5.0) if d >= 2 else (6.0, 4.0))
    if d == 1:
        both = [v for v in (x, r) if v is not None and v.size]
        bins = np.histogram_bin_edges(np.concatenate(both).ravel(), bins=60) if both else 60
        if r is not None and r.size:
            ax.hist(
                r[:, 0], bins=bins, density=True, color=REFERENCE_COLOR, label=f"data ({len(r)})"
            )
        if x.size:
            ax.hist(
                x[:, 0],
                bins=bins,
                density=True,
                histtype="step",
                color=SAMPLE_COLOR,
                label=f"samples ({len(x)})",
            )
        ax.set_ylabel("density")
    else:
        size = 6.0 if max(len(x), 0 if r is None else len(r)) <= 2000 else 2.0
        if r is not None:
            ax.scatter(
                r[:, 0],
                r[:, 1],
                s=size,
                c=REFERENCE_COLOR,
                lw=0,
                label=f"data ({len(r)})",
                rasterized=True,
            )
        ax.scatter(
            x[:, 0],
            x[:, 1],
            s=size,
            c=SAMPLE_COLOR,
            lw=0,
            alpha=0.8,
            label=f"samples ({len(x)})",
            rasterized=True,
        )
        xlim, ylim = _limits(x[:, :2], *([] if r is None else [r[:, :2]]))
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper right", fontsize="small", markerscale=3)
    ax.set_title(full_title)
    _save(fig, path)
    return fig


def plot_trajectories(
    traj: Any,
    path: str | Path | None = None,
    n_show: int = 200,
    title: str | None = None,
    ax: Axes | None = None,
    reference: Any | None = None,
) -> Figure:
    """Paths of an ODE sampler: ``traj`` is (T, N, 2) states in sampling order, from noise to data
    (in genlab's time convention that is t = 1 down to t = 0).

    Draws ``n_show`` evenly chosen paths as thin grey lines, their start points (noise) in blue and
    their end points (data) in red, optionally over ``reference`` data (m, 2) in light grey. For
    a state dimension above 2 the first two coordinates are drawn (the title says so).
    """
    t = _to_numpy(traj, "traj")
    if t.ndim != 3 or t.shape[0] < 1 or t.shape[1] == 0 or t.shape[2] < 2:
        raise DataError(f"traj: expected a (T, N, 2) array of ODE states, got shape {t.shape}")
    if n_show < 1:
        raise ValueError(f"n_show must be >= 1, got {n_show}")
    T, N, D = t.shape
    idx = np.unique(np.linspace(0, N - 1, min(n_show, N)).round().astype(int))
    paths = np.ascontiguousarray(t[:, idx, :2].transpose(1, 0, 2))  # (n_show, T, 2)
    paths, n_bad = _finite_rows(paths)
    r = None
    if reference is not None:
        r = _to_numpy(reference, "reference")
        if r.ndim != 2 or r.shape[1] < 2:
            raise DataError(f"reference: expected shape (m, 2), got {r.shape}")
        r, _ = _finite_rows(r[:, :2])

    notes = [f"{len(paths)} of {N} paths, {T} states"]
    if D > 2:
        notes.append(f"first 2 of {D} coordinates")
    if n_bad:
        notes.append(f"{n_bad} non-finite paths dropped")

    fig, ax = _start(ax, (5.0, 5.0))
    if r is not None:
        ax.scatter(r[:, 0], r[:, 1], s=2.0, c=REFERENCE_COLOR, lw=0, label="data", rasterized=True)
    ax.add_collection(LineCollection(list(paths), colors="0.4", linewidths=0.5, alpha=0.5))
    ax.scatter(
        paths[:, 0, 0], paths[:, 0, 1], s=6.0, c=START_COLOR, lw=0, label="start (noise)", zorder=3
    )
    ax.scatter(
        paths[:, -1, 0], paths[:, -1, 1], s=6.0, c=END_COLOR, lw=0, label="end (data)", zorder=3
    )
    xlim, ylim = _limits(paths, *([] if r is None else [r]))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper right", fontsize="small", markerscale=2)
    ax.set_title(f"{title or 'trajectories'} ({'; '.join(notes)})")
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def make_grid(images: Any, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (H', W', C) array in [0, 1].

    ``nrow`` images per row (the torchvision convention), ``padding`` pixels of ``pad_value``
    between and around them. Values outside [-1, 1] are clipped.
    """
    a = _to_numpy(images, "images")
    if a.ndim != 4 or a.shape[0] == 0 or a.shape[1] not in (1, 3) or min(a.shape[2:]) < 1:
        raise DataError(
            f"images: expected a non-empty (N, C, H, W) array with C = 1 or 3, got shape {a.shape}"
        )
    if nrow < 1 or padding < 0:
        raise ValueError(f"nrow must be >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    n, c, h, w = a.shape
    cols = min(n, nrow)
    rows = math.ceil(n / cols)
    a = (np.clip(a, -1.0, 1.0) + 1.0) / 2.0
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value)
    for k in range(n):
        i, j = divmod(k, cols)
        top, left = padding + i * (h + padding), padding + j * (w + padding)
        grid[top : top + h, left : left + w] = a[k].transpose(1, 2, 0)
    return grid


def plot_image_grid(
    images: Any,
    path: str | Path | None = None,
    nrow: int = 8,
    title: str | None = None,
    padding: int = 2,
) -> Figure:
    """Show (N, C, H, W) images with values in [-1, 1] (C = 1 grey, C = 3 RGB) as a grid with
    ``nrow`` images per row; see :func:`make_grid`. The figure is at least ~5 inches on its long
    side, nearest-neighbour interpolated so pixels stay sharp."""
    grid = make_grid(images, nrow=nrow, padding=padding)
    gh, gw = grid.shape[:2]
    scale = max(1.0, 500.0 / max(gh, gw))  # screen pixels per image pixel
    fig = _new_figure((gw * scale / 100.0, gh * scale / 100.0 + (0.4 if title else 0.0)))
    ax = fig.add_axes((0.0, 0.0, 1.0, gh * scale / 100.0 / fig.get_figheight()))
    if grid.shape[2] == 1:
        ax.imshow(grid[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------


def read_metrics_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` file: one JSON object per line, blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metrics file not found: {path}")
    records = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}"
                )
            records.append(rec)
    return records


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_curves(
    source: str | Path | Sequence[Mapping[str, Any]],
    keys: Iterable[str] = ("loss",),
    path: str | Path | None = None,
    title: str | None = None,
    logy: bool = False,
) -> Figure:
    """Training curves from a ``metrics.jsonl`` file (or a list of dicts): one panel per key,
    value against ``"step"`` (the record's index where a record has no step).

    Records without a key, or with a non-numeric value for it, are skipped for that key, so
    training and evaluation records may share one file. A key found in no record raises
    :class:`DataError` listing the numeric keys that exist. ``logy`` puts each panel on a log scale.
    """
    if isinstance(source, (str, Path)):
        records = read_metrics_jsonl(source)
        origin = str(source)
    else:
        records = list(source)
        origin = "records"
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise DataError(f"record {i}: expected a dict, got {type(rec).__name__}")
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise DataError("plot_curves: no keys to plot")
    if not records:
        raise DataError(f"{origin}: no records to plot")
    series = {}
    for key in keys:
        pts = [
            (rec["step"] if _is_number(rec.get("step")) else i, rec[key])
            for i, rec in enumerate(records)
            if _is_number(rec.get(key))
        ]
        if not pts:
            known = sorted(
                {k for rec in records for k, v in rec.items() if _is_number(v)} - {"step"}
            )
            raise DataError(f"{origin}: no numeric values for {key!r}; numeric keys: {known}")
        series[key] = np.asarray(pts, dtype=np.float64)  # (k, 2): step, value

    fig = _new_figure((6.0, 2.2 * len(keys) + 0.6))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        s = series[key]
        ax.plot(s[:, 0], s[:, 1], lw=1.0, marker="." if len(s) < 50 else None)
        ax.set_ylabel(key)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    _save(fig, path)
    return fig
