"""Plots: PNG files are written and readable, no figure stays open, bad shapes raise DataError."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from genlab.errors import DataError
from genlab.eval import plots
from genlab.eval.plots import (
    make_grid,
    plot_curves,
    plot_image_grid,
    plot_samples,
    plot_trajectories,
)


@pytest.fixture(autouse=True)
def no_open_figures() -> Iterator[None]:
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a plot function left a pyplot figure open"


def read_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4) and min(img.shape[:2]) > 50
    return img


def points(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# plot_samples
# ---------------------------------------------------------------------------------------------


def test_plot_samples_writes_png_in_new_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "samples.png"
    fig = plot_samples(points(500, 2), points(800, 2, 1).numpy(), path=path, title="moons")
    assert isinstance(fig, Figure)
    img = read_png(path)
    assert img[..., :3].std() > 0.01  # something was drawn
    ax = fig.axes[0]
    assert ax.get_title() == "moons"
    assert ax.get_aspect() == 1.0
    assert len(ax.collections) == 2  # reference behind, samples in front


def test_plot_samples_limits_cover_both_sets() -> None:
    ref = np.array([[0.0, 0.0], [1.0, 1.0]])
    fig = plot_samples(np.array([[5.0, -3.0], [0.5, 0.5]]), ref)
    (x0, x1), (y0, y1) = fig.axes[0].get_xlim(), fig.axes[0].get_ylim()
    assert x0 <= 0.0 and x1 >= 5.0 and y0 <= -3.0 and y1 >= 1.0


def test_plot_samples_high_dimension_says_so(tmp_path: Path) -> None:
    fig = plot_samples(points(100, 5), points(100, 5, 1), path=tmp_path / "s.png")
    assert "first 2 of 5 coordinates" in fig.axes[0].get_title()
    read_png(tmp_path / "s.png")


def test_plot_samples_one_dimension_histograms(tmp_path: Path) -> None:
    fig = plot_samples(points(300, 1), points(300, 1, 1), path=tmp_path / "h.png")
    assert fig.axes[0].get_ylabel() == "density"
    read_png(tmp_path / "h.png")


def test_plot_samples_drops_non_finite_rows() -> None:
    x = points(50, 2)
    x[3, 0] = float("nan")
    x[7, 1] = float("inf")
    fig = plot_samples(x)
    assert "2 non-finite samples dropped" in fig.axes[0].get_title()


def test_plot_samples_into_given_axes() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_samples(points(20, 2), ax=ax) is fig
    assert len(ax.collections) == 1


@pytest.mark.parametrize(
    ("samples", "reference", "match"),
    [
        (np.zeros(10), None, r"\(n, d\)"),
        (np.zeros((2, 3, 4)), None, r"\(n, d\)"),
        (np.zeros((0, 2)), None, r"\(n, d\)"),
        (np.zeros((10, 2)), np.zeros((10, 3)), "match samples"),
        ([[0.0, 1.0]], None, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_plot_samples_bad_shapes(samples, reference, match: str) -> None:
    with pytest.raises(DataError, match=match):
        plot_samples(samples, reference)


# ---------------------------------------------------------------------------------------------
# plot_trajectories
# ---------------------------------------------------------------------------------------------


def test_plot_trajectories(tmp_path: Path) -> None:
    t = torch.linspace(0, 1, 20)[:, None, None]  # (T, 1, 1)
    x0, x1 = points(500, 2), points(500, 2, 1) * 0.3 + 2.0
    traj = (1 - t) * x0 + t * x1  # (T, N, 2) straight paths
    fig = plot_trajectories(traj, path=tmp_path / "traj.png", n_show=100, reference=x1)
    read_png(tmp_path / "traj.png")
    ax = fig.axes[0]
    lines = ax.collections[1]  # after the reference scatter
    assert len(lines.get_segments()) == 100
    assert "100 of 500 paths, 20 states" in ax.get_title()


def test_plot_trajectories_more_requested_than_available() -> None:
    fig = plot_trajectories(np.random.default_rng(0).normal(size=(5, 7, 3)), n_show=200)
    assert "7 of 7 paths" in fig.axes[0].get_title()
    assert "first 2 of 3 coordinates" in fig.axes[0].get_title()


@pytest.mark.parametrize("shape", [(10, 2), (10, 5, 1), (0, 5, 2), (10, 0, 2), (2, 3, 4, 2)])
def test_plot_trajectories_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(DataError, match=r"\(T, N, 2\)"):
        plot_trajectories(np.zeros(shape))


# ---------------------------------------------------------------------------------------------
# plot_image_grid
# ---------------------------------------------------------------------------------------------


def test_make_grid_layout_and_range() -> None:
    images = torch.full((5, 3, 4, 6), -1.0)
    images[4] = 1.0
    grid = make_grid(images, nrow=3, padding=2)
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3)
    assert grid.min() == 0.0 and grid.max() == 1.0
    assert (grid[2:6, 2:8] == 0.0).all()  # first image: -1 -> 0
    assert (grid[8:12, 10:16] == 1.0).all()  # fifth image (row 1, col 1): 1 -> 1
    assert (grid[8:12, 18:24] == 1.0).all()  # empty sixth slot keeps the pad value


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_image_grid(tmp_path: Path, channels: int) -> None:
    images = torch.rand(10, channels, 8, 8) * 2 - 1
    path = tmp_path / "grid" / f"c{channels}.png"
    fig = plot_image_grid(images, path=path, nrow=4, title="samples")
    assert isinstance(fig, Figure)
    img = read_png(path)
    assert img.shape[1] > img.shape[0]  # 4 wide, 3 high


@pytest.mark.parametrize("shape", [(10, 2, 8, 8), (10, 8, 8), (0, 1, 8, 8), (10, 4, 8, 8)])
def test_plot_image_grid_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        plot_image_grid(np.zeros(shape))


# ---------------------------------------------------------------------------------------------
# plot_curves
# ---------------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


RECORDS = [{"step": s, "loss": 1.0 / (s + 1), "lr": 1e-3} for s in range(0, 100, 10)] + [
    {"step": 100, "w2": 0.2, "phase": "eval"}
]


def test_plot_curves_from_file(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "metrics.jsonl", RECORDS)
    fig = plot_curves(src, keys=("loss", "w2"), path=tmp_path / "out" / "curves.png", logy=True)
    read_png(tmp_path / "out" / "curves.png")
    loss_ax, w2_ax = fig.axes
    xs, ys = loss_ax.lines[0].get_data()
    assert list(xs) == list(range(0, 100, 10)) and ys[0] == 1.0
    assert list(w2_ax.lines[0].get_data()[0]) == [100]
    assert loss_ax.get_yscale() == "log"


def test_plot_curves_from_records_without_step() -> None:
    fig = plot_curves([{"loss": 3.0}, {"loss": 2.0}, {"loss": 1.0}], keys="loss")
    assert list(fig.axes[0].lines[0].get_data()[0]) == [0, 1, 2]


def test_plot_curves_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="numeric keys: \\['loss', 'lr', 'w2'\\]"):
        plot_curves(RECORDS, keys=("acc",))
    with pytest.raises(DataError, match="not found"):
        plot_curves(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss"\n')
    with pytest.raises(DataError, match="bad.jsonl:2: not valid JSON"):
        plot_curves(bad)
    with pytest.raises(DataError, match="no records"):
        plot_curves([])


def test_plot_module_never_uses_pyplot() -> None:
    source = Path(plots.__file__).read_text()
    assert "import matplotlib.pyplot" not in source and "import pyplot" not in source
