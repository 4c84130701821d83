"""Exactness and API tests for genlab.models.diffusion.ot (float64, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from genlab.models.diffusion import ot as coupling
from genlab.models.diffusion.ot import couple, ot_permutation


def _sqdist(x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
    a = x0.reshape(len(x0), -1).double().numpy()
    b = x1.reshape(len(x1), -1).double().numpy()
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _cost(x0: torch.Tensor, x1: torch.Tensor, perm: torch.Tensor) -> float:
    return float(((x0[perm] - x1) ** 2).reshape(len(x1), -1).sum().item())


def _scipy_opt(x0: torch.Tensor, x1: torch.Tensor) -> float:
    c = _sqdist(x0, x1)
    r, k = linear_sum_assignment(c)
    return float(c[r, k].sum())


def _moons(n: int, g: torch.Generator) -> torch.Tensor:
    t = torch.rand(n, generator=g, dtype=torch.float64) * torch.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1.0 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x, y], 1) * 1.3 - torch.tensor([0.6, 0.3], dtype=torch.float64)
    return pts + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _assert_exact(x0: torch.Tensor, x1: torch.Tensor, **kw) -> torch.Tensor:
    perm = ot_permutation(x0, x1, **kw)
    assert perm.dtype == torch.long and perm.shape == (len(x0),)
    assert torch.equal(torch.sort(perm).values, torch.arange(len(x0)))
    opt = _scipy_opt(x0, x1)
    assert _cost(x0, x1, perm) == pytest.approx(opt, rel=1e-9, abs=1e-9)
    return perm


@pytest.mark.parametrize("n", [1, 2, 3, 7, 33, 256])
@pytest.mark.parametrize("d", [1, 2, 3, 10])
def test_matches_scipy_random(n: int, d: int) -> None:
    g = torch.Generator().manual_seed(1000 * n + d)
    for _ in range(3):
        x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
        x1 = 2.0 * torch.rand(n, d, generator=g, dtype=torch.float64) + 0.5
        _assert_exact(x0, x1)
        if d > 1:
            _assert_exact(x0, x1, warm_start=True)
            _assert_exact(x0, x1, warm_start=False)


@pytest.mark.parametrize("n", [7, 64, 256])
def test_moons_vs_normal(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    for _ in range(3):
        _assert_exact(torch.randn(n, 2, generator=g, dtype=torch.float64), _moons(n, g))


def test_ties_duplicates_and_degenerate() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x0 = base.repeat(4, 1)  # every point four times
    x1 = torch.randn(20, 3, generator=g, dtype=torch.float64)
    _assert_exact(x0, x1)
    _assert_exact(x1, x0)
    _assert_exact(x0, x0[torch.randperm(20, generator=g)])  # zero-cost optimum exists
    const = torch.ones(9, 4, dtype=torch.float64)
    _assert_exact(const, torch.randn(9, 4, generator=g, dtype=torch.float64))  # zero covariance
    _assert_exact(const, const.clone())
    grid = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    grid = grid.reshape(16, 2).double()
    _assert_exact(grid, grid + 0.5)  # many exact ties


def test_d_larger_than_batch_and_image_shapes() -> None:
    g = torch.Generator().manual_seed(1)
    _assert_exact(
        torch.randn(8, 50, generator=g, dtype=torch.float64),
        torch.randn(8, 50, generator=g, dtype=torch.float64) + 1.0,
    )
    _assert_exact(
        torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64),
        torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64),
    )


def test_identity_when_already_matched() -> None:
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(ot_permutation(x, x), torch.arange(50))


def test_one_dimensional_is_sorted_matching() -> None:
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(100, 1, generator=g, dtype=torch.float64)
    x1 = torch.rand(100, 1, generator=g, dtype=torch.float64) * 3
    paired = x0[ot_permutation(x0, x1)]
    # x0 sorted, matched to x1 sorted: paired is monotone in x1.
    order = torch.argsort(x1[:, 0])
    assert torch.equal(paired[order, 0], torch.sort(x0[:, 0]).values)


def test_fallback_plain_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(64, 2, generator=g, dtype=torch.float64)
    x1 = _moons(64, g)
    calls = []

    def broken(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.full(len(b), np.nan)

    monkeypatch.setattr(coupling, "_gaussian_column_potential", broken)
    _assert_exact(x0, x1)
    assert calls, "warm-start potential was not attempted"

    def raising(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise np.linalg.LinAlgError("forced")

    monkeypatch.setattr(coupling, "_gaussian_column_potential", raising)
    _assert_exact(x0, x1)
    _assert_exact(x0, x1, warm_start=False)


def test_float32_input_and_device_preserved() -> None:
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(40, 2, generator=g)
    x1 = _moons(40, g).float()
    perm = ot_permutation(x0, x1)
    assert perm.device == x0.device and perm.dtype == torch.long
    assert _cost(x0.double(), x1.double(), perm) == pytest.approx(_scipy_opt(x0, x1), rel=1e-6)


def test_couple_kinds() -> None:
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(30, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(30, 2, generator=g, dtype=torch.float64) + 3.0
    a, b = couple(x0, x1, "independent")
    assert a is x0 and b is x1
    a, b = couple(x0, x1, "ot")
    assert b is x1
    assert torch.equal(a, x0[ot_permutation(x0, x1)])
    assert ((a - b) ** 2).sum() <= ((x0 - x1) ** 2).sum()
    with pytest.raises(ValueError, match="unknown coupling"):
        couple(x0, x1, "sinkhorn")
    with pytest.raises(ValueError, match="same shape"):
        couple(x0, x1[:5], "ot")
