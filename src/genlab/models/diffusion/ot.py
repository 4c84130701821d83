"""Couplings of noise and data minibatches for flow matching.

Minibatch optimal-transport flow matching (Tong et al. 2023, "Improving and generalizing flow-based
generative models with minibatch optimal transport", arXiv:2302.00482; Pooladian et al. 2023,
"Multisample flow matching: straightening flows with minibatch couplings", arXiv:2304.14772) pairs
a batch of noise ``x0`` (B, d) with a batch of data ``x1`` (B, d) by the permutation ``perm`` that
minimises ``sum_i |x0[perm[i]] - x1[i]|^2``. This module computes that permutation *exactly*.

Algorithm (:func:`ot_permutation`)
----------------------------------
* ``B <= 1``: trivial.
* ``d == 1``: sorting. For a convex cost on the line the monotone (sorted-to-sorted) matching is
  optimal, so ``perm[argsort(x1)] = argsort(x0)``; O(B log B).
* otherwise: the shortest-augmenting-path solver of :func:`scipy.optimize.linear_sum_assignment`
  (Crouse 2016, a Jonker-Volgenant variant; C++, releases the GIL) on the equivalent cost

      C'_ij = -2 <x0_i, x1_j> - v_j,

  where ``v_j = -2 phi*(x1_j)`` is a *warm-start column potential*: ``phi`` is the Brenier potential
  of the Gaussian approximation (the affine Monge map between N(mean0, cov0) and N(mean1, cov1)) and
  ``phi*`` its convex conjugate. The solver starts from zero column duals, so subtracting a
  potential close to the optimal dual shortens its augmenting paths. It helps in low dimension,
  where the Gaussian approximation's duals are close to the batch's, and stops helping as the
  dimension grows and the batch duals are dominated by sampling noise; so by default it is used
  for d <= 8 only, and for d > 8 the solver runs on ``-2 <x0_i, x1_j>`` alone (the crossover and
  the timings: ``bench/ot_coupling.py``). If the potential cannot be formed
  (non-finite values) the solver runs on the plain cost (the *fallback* path).

Exactness (the whole argument): for any permutation ``pi``,
``sum_i |x0_pi(i) - x1_i|^2 = sum_i |x0_i|^2 + sum_j |x1_j|^2 - 2 sum_i <x0_pi(i), x1_i>`` and
``sum_i v_i`` does not depend on ``pi`` either, so ``C'`` and the squared-distance cost differ by the
same constant on *every* permutation and share their minimisers. The solver is exact on ``C'``, so
the result is exact for the squared Euclidean cost, up to float64 rounding of ``C'`` (relative
~1e-16 per entry: it can only choose between permutations whose costs tie to that precision).

Speed (timings: ``bench/ot_coupling.py``): the exact solve stays the dominant cost. What was tried
and did *not* beat it in pure numpy/scipy: a vectorised Jacobi auction with epsilon-scaling
(hundreds to thousands of bidding rounds), log-domain Sinkhorn to estimate duals, sparse
k-nearest-neighbour candidate graphs solved with
``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (fast only once near-exact duals are
known; with cheap duals the candidate graphs miss the optimal edges by a wide margin), and
multiscale warm starts from a subsample (dual sampling noise too large). Even with the *exact*
duals the dense solver keeps most of its cost, which is the floor of this approach.

The trainer hides most of the solve: a model's ``prepare`` step (for flow matching: draw noise,
couple it) runs in worker threads a few batches ahead of the training step (the solver releases the
GIL), with per-step generators so the pairs do not depend on thread timing
(``genlab.train.batching.Prefetcher``).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["COUPLINGS", "couple", "ot_permutation"]

COUPLINGS = ("independent", "ot")
_WARM_START_MAX_DIM = 8  # the crossover, see the module docstring


def _check_pair(x0: torch.Tensor, x1: torch.Tensor) -> None:
    if not (isinstance(x0, torch.Tensor) and isinstance(x1, torch.Tensor)):
        raise TypeError("x0 and x1 must be torch tensors")
    if x0.ndim < 1 or x0.shape != x1.shape:
        raise ValueError(
            f"x0 and x1 must have the same shape (B, ...), got {tuple(x0.shape)} and "
            f"{tuple(x1.shape)}"
        )


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clamped)."""
    w, q = np.linalg.eigh(s)
    return (q * np.sqrt(np.clip(w, 0.0, None))) @ q.T


def _gaussian_column_potential(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Warm-start column potential ``v_j = -2 phi*(b_j)`` for the cost ``-2 <a_i, b_j>``.

    ``phi(x) = x'Ax/2 + c'x`` is the Brenier potential of the affine Monge map between the Gaussians
    fitted to ``a`` and ``b`` (A = S0^-1/2 (S0^1/2 S1 S0^1/2)^1/2 S0^-1/2, c = m1 - A m0) and
    ``phi*(y) = (y - c)' A^-1 (y - c) / 2`` its conjugate. Any finite vector is a valid warm start;
    this one is close to the optimal dual when the two batches are roughly Gaussian.
    """
    n, d = a.shape
    m0, m1 = a.mean(0), b.mean(0)
    a_c, b_c = a - m0, b - m1
    # Ridge keeps A invertible for degenerate batches (e.g. d > B, duplicated points).
    ridge = 1e-6 * (np.mean(a_c * a_c) + np.mean(b_c * b_c) + 1e-300) * np.eye(d)
    s0 = a_c.T @ a_c / n + ridge
    s1 = b_c.T @ b_c / n + ridge
    r0 = _sym_sqrt(s0)
    r0_inv = np.linalg.inv(r0)
    mat = r0_inv @ _sym_sqrt(r0 @ s1 @ r0) @ r0_inv
    mat = 0.5 * (mat + mat.T)
    y = b - (m1 - mat @ m0)
    return -np.einsum("ij,ij->i", y, np.linalg.solve(mat, y.T).T)


def _solve_dense(a: np.ndarray, b: np.ndarray, warm_start: bool) -> np.ndarray:
    """Exact assignment for float64 (B, d) arrays; returns ``perm`` with a[perm] paired to b."""
    from scipy.optimize import linear_sum_assignment  # here: scipy costs every CLI start ~0.5 s

    cost = -2.0 * (a @ b.T)  # squared distance minus row and column constants
    if warm_start:
        with np.errstate(all="ignore"):
            try:
                v = _gaussian_column_potential(a, b)
            except np.linalg.LinAlgError:
                v = None
        if v is not None and np.all(np.isfinite(v)):
            reduced = cost - v[None, :]
            if np.all(np.isfinite(reduced)):
                cost = reduced
        # otherwise: fallback, solve on the plain cost (still exact).
    # Noise rows, data columns (faster than the transpose on normal-vs-moons):
    # x0[k] is paired with x1[cols[k]], so perm is the inverse permutation of cols.
    _, cols = linear_sum_assignment(cost)
    perm = np.empty_like(cols)
    perm[cols] = np.arange(cols.size)
    return perm


def ot_permutation(
    x0: torch.Tensor, x1: torch.Tensor, *, warm_start: bool | None = None
) -> torch.Tensor:
    """Exact minibatch OT permutation for the squared Euclidean cost.

    Returns a LongTensor ``perm`` (on ``x0.device``) such that ``x0[perm]`` is paired with ``x1`` row
    by row and ``sum_i |x0[perm[i]] - x1[i]|^2`` is minimal over all permutations. Trailing
    dimensions are flattened. The solve runs on the CPU in float64 whatever the input device and
    dtype. ``warm_start`` forces the Gaussian warm-start potential on or off (default: on for
    feature dimension d <= 8, see the module docstring); the result is optimal either way.
    """
    _check_pair(x0, x1)
    n = x0.shape[0]
    device = x0.device
    if n <= 1:
        return torch.zeros(n, dtype=torch.long, device=device)
    a = x0.detach().reshape(n, -1).to("cpu", torch.float64).numpy()
    b = x1.detach().reshape(n, -1).to("cpu", torch.float64).numpy()
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x0 and x1 must be finite")
    if a.shape[1] == 1:
        perm = np.empty(n, dtype=np.int64)
        perm[np.argsort(b[:, 0], kind="stable")] = np.argsort(a[:, 0], kind="stable")
    else:
        if warm_start is None:
            warm_start = a.shape[1] <= _WARM_START_MAX_DIM
        perm = _solve_dense(a, b, warm_start)
    return torch.from_numpy(np.ascontiguousarray(perm, dtype=np.int64)).to(device)


def couple(
    x0: torch.Tensor, x1: torch.Tensor, kind: str = "ot"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair noise ``x0`` with data ``x1``; returns ``(x0_paired, x1)``.

    ``kind="independent"`` returns the inputs unchanged (the independent coupling, since the two
    batches are drawn independently); ``kind="ot"`` reorders ``x0`` by :func:`ot_permutation`.
    """
    if kind == "independent":
        _check_pair(x0, x1)
        return x0, x1
    if kind == "ot":
        return x0[ot_permutation(x0, x1)], x1
    raise ValueError(f"unknown coupling {kind!r}; expected one of {COUPLINGS}")
