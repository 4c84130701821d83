"""Vector quantization for VQ-VAE: nearest-code assignment, straight-through gradients, an EMA
codebook, k-means initialization and dead-code restarts.

**Quantization** (van den Oord et al. 2017, §3.1, eq. 1-2). A codebook ``e ∈ R^{K×D}`` of ``K``
codes; each position of the encoder output ``z_e`` ``(B, D, *spatial)`` — a ``D``-vector ``z`` —
goes to its nearest code, ``k(z) = argmin_k ‖z − e_k‖²``, with the squared distance expanded as
``‖z‖² − 2 z·e_k + ‖e_k‖²`` (one matrix product, clamped at 0 against rounding, in float32 at least
even under autocast, by blocks of rows so that ``N × K`` distances need not fit in memory at once).

**Straight-through estimator** (§3.2; Bengio et al. 2013). ``z_q = z_e + sg[e_k − z_e]`` has the
value of the code and the identity as its Jacobian in ``z_e``: the decoder's gradient reaches the
encoder unchanged (``sg`` is the stop-gradient, ``detach``).

**Loss** (§3.2, eq. 3), means over all elements::

    loss = ‖sg[z_e] − e‖² + β ‖z_e − sg[e]‖²        (ema=False: codebook + commitment)
    loss = β ‖z_e − sg[e]‖²                          (ema=True: the codebook follows the EMA)

**EMA codebook** (appendix A.1 of the paper; Razavi et al. 2019). Online k-means: with ``n_k`` the
number of vectors of the batch assigned to code ``k`` and ``s_k`` their sum, in training mode::

    N_k ← γ N_k + (1 − γ) n_k,      m_k ← γ m_k + (1 − γ) s_k,      e_k = m_k / Ñ_k,

``γ = decay``, with the Laplace-smoothed count ``Ñ_k = (N_k + ε) / (n + K ε) · n``, ``n = Σ_k N_k``
(as in the authors' Sonnet implementation), so that an unused code is never divided by zero. The
buffers ``cluster_size`` (``N``) and ``embed_sum`` (``m``) hold the raw averages. They start at
``N_k = 1``, ``m_k = e_k`` (one pseudo-observation at each code, so that a code unused on the first
steps keeps its place instead of being divided by a count near zero).

**k-means initialization** (Zeghidour et al. 2021, SoundStream, §III-C). On the first training
forward, when ``kmeans_init``: k-means++ seeding (Arthur & Vassilvitskii 2007: each new centre is
an encoder output drawn with probability proportional to its squared distance to the centres so
far; uniformly with replacement when the batch has fewer vectors than codes), then ``kmeans_iters``
Lloyd iterations (Lloyd 1982: assign, then move each centre to its cluster's mean; a centre
with an empty cluster stays). ``N`` and ``m`` start from the final clusters (``N_k = |cluster|``,
``m_k = N_k e_k``), the EMA of the counts of a batch like this one.

**Dead-code restarts** (Dhariwal et al. 2020, Jukebox, §3.1; SoundStream, §III-C). In training
mode, after the EMA update, every code with ``N_k < restart_threshold`` is replaced by an encoder
output of the current batch drawn uniformly, and its averages restart there: ``N_k = 1``,
``m_k = e_k``. ``restarts_total`` counts the codes replaced so far. Without EMA (``ema=False``,
the codebook an ``nn.Parameter`` trained by the codebook loss), ``N`` is still tracked — the EMA
of the counts alone — and restarts write into the parameter.

**Determinism.** The random draws (k-means++ seeds, restart vectors) come from a
``torch.Generator`` seeded with ``seed + steps``, ``steps`` being a buffer that counts training
forwards, never from torch's global generator: a run resumed from a ``state_dict`` (which holds
``steps``, ``initialized``, ``cluster_size``, ``embed_sum``, ``restarts_total`` and the codebook)
makes the same choices as an uninterrupted one.

**Data parallelism** (``torch.distributed`` initialized; only in training mode, every process must
call ``forward`` together, as DDP training does). The counts ``n_k`` and sums ``s_k`` are
all-reduced before the EMA update, so every process applies the global batch's update and keeps
the same ``N``, ``m`` and codebook, as one process would (as ``global_moments`` does for ActNorm).
k-means runs on the *global* batch: the encoder outputs of all processes are all-gathered (padded
to the largest local batch), every process runs the same seeded k-means on them, and rank 0's
result is broadcast so that the codebooks agree bit for bit. Restarts: ``N`` is identical on all
processes, hence the set of dead codes too; rank 0 draws the replacements from its own batch and
broadcasts them. Perplexity and usage are those of the local batch (no communication in eval).

References:
    van den Oord, Vinyals & Kavukcuoglu (2017), "Neural Discrete Representation Learning",
    NeurIPS, arXiv:1711.00937 (§3.1-3.2 quantization, straight-through, loss; appendix A.1 EMA).
    Razavi, van den Oord & Vinyals (2019), "Generating Diverse High-Fidelity Images with
    VQ-VAE-2", NeurIPS, arXiv:1906.00446 (EMA codebook updates).
    Dhariwal, Jun, Payne, Kim, Radford & Sutskever (2020), "Jukebox: A Generative Model for
    Music", arXiv:2005.00341 (random restarts of dead codes).
    Zeghidour, Luebs, Omran, Skoglund & Tagliasacchi (2021), "SoundStream: An End-to-End Neural
    Audio Codec", arXiv:2107.03312 (k-means initialization on the first batch, code expiry).
    Arthur & Vassilvitskii (2007), "k-means++: The Advantages of Careful Seeding", SODA.
    Lloyd (1982), "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2).
    Bengio, Léonard & Courville (2013), "Estimating or Propagating Gradients Through Stochastic
    Neurons for Conditional Computation", arXiv:1308.3432 (straight-through estimator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.nets.host_copy import HostCopy

_BLOCK = 1 << 24  # distances computed per block of rows: about this many elements at a time


def code_statistics(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From how many times each code was chosen ``(K,)``: the fraction of the codes used at least
    once and the perplexity ``exp(H(p))`` of the codes' frequencies ``p`` (float32 scalars)."""
    p = counts.double() / counts.sum().clamp(min=1)
    entropy = -(p * p.clamp(min=1e-300).log()).sum()
    return (counts > 0).float().mean(), entropy.exp().float()


@dataclass
class QuantizeResult:
    """What :meth:`VectorQuantizer.forward` returns.

    ``z_q`` the quantized vectors, shape of ``z_e``, straight-through in ``z_e``; ``indices`` the
    codes ``(B, *spatial)`` (long); ``loss`` the scalar VQ loss (codebook + β·commitment, or
    β·commitment alone with EMA); ``perplexity`` ``exp(H(p))`` of the batch's code frequencies
    ``p``; ``usage`` the fraction of the codes used at least once in the batch."""

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def squared_distances(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``‖z_i − e_k‖²`` ``(N, K)`` for ``z`` ``(N, D)`` and ``e`` ``(K, D)``, as
    ``‖z‖² − 2 z·e + ‖e‖²`` clamped at 0, in float32 at least and outside autocast."""
    dtype = torch.promote_types(torch.promote_types(z.dtype, e.dtype), torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        z, e = z.to(dtype), e.to(dtype)
        z2, e2 = z.square().sum(1, keepdim=True), e.square().sum(1)
        return torch.addmm(z2 + e2, z, e.t(), alpha=-2.0).clamp_(min=0)


def nearest(z: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest code of every row of ``z`` ``(N, D)`` among ``e`` ``(K, D)`` (the first one on a
    tie) and its squared distance: ``(N,)`` long and ``(N,)``, by blocks of rows."""
    rows = max(1, _BLOCK // max(len(e), 1))
    idx, dist = [], []
    for block in z.split(rows):
        d, i = squared_distances(block, e).min(1)
        idx.append(i)
        dist.append(d)
    if not idx:  # no rows
        return z.new_zeros(0, dtype=torch.long), z.new_zeros(0)
    return torch.cat(idx), torch.cat(dist)


def kmeans(
    x: torch.Tensor, k: int, iters: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` centres ``(k, D)`` of the rows of ``x`` ``(N, D)`` and their cluster sizes ``(k,)``:
    k-means++ seeding drawn with ``generator`` (a CPU generator; uniform with replacement when
    ``N < k``), then ``iters`` Lloyd iterations (an empty cluster keeps its centre)."""
    n = len(x)
    if n < k:
        centres = x[torch.randint(n, (k,), generator=generator).to(x.device)].clone()
    else:
        uniforms = torch.rand(k, generator=generator, dtype=torch.float64).to(x.device)
        centres = x.new_empty(k, x.shape[1])
        first = int(torch.randint(n, (1,), generator=generator))
        centres[0] = x[first]
        best = squared_distances(x, centres[:1]).squeeze(1).double()
        for j in range(1, k):  # inverse CDF of p_i ∝ best_i (a chosen vector has weight 0)
            cum = best.cumsum(0)
            total = cum[-1]
            drawn = torch.searchsorted(cum, uniforms[j : j + 1] * total, right=True)
            spread = (uniforms[j : j + 1] * n).long()  # if every vector already is a centre
            i = torch.where(total > 0, drawn, spread).clamp_(max=n - 1)
            centres[j] = x[i[0]]
            d = squared_distances(x, centres[j : j + 1]).squeeze(1)
            best = torch.minimum(best, d.double())
    for it in range(iters + 1):
        assign, _ = nearest(x, centres)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        if it == iters:  # the last pass only counts the final clusters
            break
        sums = x.new_zeros(k, x.shape[1]).index_add_(0, assign, x)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    return centres, counts


class VectorQuantizer(nn.Module):
    """Quantize ``z_e`` ``(B, dim, *spatial)`` to the nearest of ``codes`` codebook vectors.

    ``beta`` weighs the commitment loss; ``ema`` updates the codebook by exponential moving
    averages with ``decay`` and Laplace smoothing ``eps`` (else it is a parameter trained by the
    codebook loss); ``kmeans_init`` sets the codebook by ``kmeans_iters`` Lloyd iterations on the
    first training batch; ``restart`` replaces codes whose EMA cluster size falls below
    ``restart_threshold`` by encoder outputs of the batch; ``seed`` seeds those random choices
    (with the ``steps`` buffer). See the module docstring for the formulas."""

    def __init__(
        self,
        codes: int,
        dim: int,
        *,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        restart: bool = True,
        restart_threshold: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if codes < 1 or dim < 1:
            raise ConfigError(f"VectorQuantizer needs codes >= 1 and dim >= 1, got {codes}, {dim}")
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"VectorQuantizer's decay must be in (0, 1), got {decay}")
        if beta < 0:
            raise ConfigError(
                f"VectorQuantizer's beta (commitment weight) must be >= 0, got {beta}"
            )
        if eps <= 0:
            raise ConfigError(f"VectorQuantizer's eps (Laplace smoothing) must be > 0, got {eps}")
        if kmeans_iters < 0:
            raise ConfigError(f"VectorQuantizer's kmeans_iters must be >= 0, got {kmeans_iters}")
        if restart_threshold < 0:
            raise ConfigError(
                f"VectorQuantizer's restart_threshold must be >= 0, got {restart_threshold}"
            )
        self.codes, self.dim, self.beta, self.ema = codes, dim, beta, ema
        self.decay, self.eps, self.seed = decay, eps, seed
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.restart, self.restart_threshold = restart, restart_threshold
        embed = torch.randn(codes, dim)
        if ema:
            self.register_buffer("embed", embed)
            self.register_buffer("embed_sum", embed.clone())  # m
        else:
            self.embed = nn.Parameter(embed)
        self.register_buffer("cluster_size", torch.ones(codes))  # N (raw, not smoothed)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.host = HostCopy(self)  # steps and initialized, read every step without a sync
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("restarts_total", torch.tensor(0, dtype=torch.long))

    @property
    def codebook(self) -> torch.Tensor:
        """The codebook ``(codes, dim)`` (a buffer with EMA, the parameter without)."""
        return self.embed

    def extra_repr(self) -> str:
        return f"codes={self.codes}, dim={self.dim}, beta={self.beta}, ema={self.ema}"

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The code vectors ``(B, dim, *spatial)`` of ``indices`` ``(B, *spatial)``."""
        return F.embedding(indices, self.embed).movedim(-1, 1)

    def indices_of(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest code of each vector of ``z`` ``(B, dim, *spatial)``: ``(B, *spatial)``."""
        idx, _ = nearest(self._flatten(z).detach().float(), self.embed.detach().float())
        return idx.view(z.shape[0], *z.shape[2:])

    def _flatten(self, z_e: torch.Tensor) -> torch.Tensor:
        if z_e.dim() < 2 or z_e.shape[1] != self.dim:
            raise ValueError(
                f"VectorQuantizer expects z_e of shape (B, {self.dim}, *spatial), "
                f"got {tuple(z_e.shape)}"
            )
        return z_e.movedim(1, -1).reshape(-1, self.dim)

    def forward(self, z_e: torch.Tensor) -> QuantizeResult:
        flat = self._flatten(z_e)
        generator = None
        if self.training:
            generator = torch.Generator().manual_seed(self.seed + self.host.get(self, "steps"))
            if not self.host.get(self, "initialized") and len(flat) > 0:
                self._kmeans_init(flat.detach(), generator)
        idx, _ = nearest(flat.detach(), self.embed.detach())
        e = F.embedding(idx, self.embed).to(z_e.dtype)  # (N, D), differentiable in the codebook
        loss = self.beta * F.mse_loss(flat, e.detach())  # commitment
        if not self.ema:
            loss = loss + F.mse_loss(e, flat.detach())  # codebook
        counts = torch.bincount(idx, minlength=self.codes)
        if self.training:
            with torch.no_grad():
                self._update(flat.detach(), idx, counts)
                if self.restart:
                    self._restart(flat.detach(), generator)
                self.host.add(self, "steps")
        shape = (z_e.shape[0], *z_e.shape[2:])
        z_q = e.view(*shape, self.dim).movedim(-1, 1)
        z_q = z_e + (z_q - z_e).detach()
        usage, perplexity = code_statistics(counts)
        return QuantizeResult(
            z_q=z_q, indices=idx.view(shape), loss=loss, perplexity=perplexity, usage=usage
        )

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor, generator: torch.Generator) -> None:
        x = flat.to(self.embed.dtype)
        if _distributed():  # the global batch, on every process
            x = _all_gather_rows(x)
        centres, counts = kmeans(x, self.codes, self.kmeans_iters, generator)
        if _distributed():  # rank 0's result, bit for bit
            packed = torch.cat([centres, counts[:, None]], 1)
            torch.distributed.broadcast(packed, src=0)
            centres, counts = packed[:, :-1], packed[:, -1]
        self.embed.copy_(centres)
        self.cluster_size.copy_(counts)
        if self.ema:
            self.embed_sum.copy_(centres * counts[:, None])
        self.host.set(self, "initialized", True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """The EMA of the cluster sizes, and with ``ema`` of the sums and the codebook."""
        n_k = counts.to(self.cluster_size.dtype)
        if not self.ema:
            if _distributed():
                torch.distributed.all_reduce(n_k)
            self.cluster_size.lerp_(n_k, 1 - self.decay)
            return
        x = flat.to(self.embed_sum.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, x)
        packed = torch.cat([sums, n_k[:, None]], 1)
        if _distributed():  # the global batch's counts and sums
            torch.distributed.all_reduce(packed)
        sums, n_k = packed[:, :-1], packed[:, -1]
        self.cluster_size.mul_(self.decay).add_(n_k, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codes * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _restart(self, flat: torch.Tensor, generator: torch.Generator) -> None:
        """Codes with ``N_k < restart_threshold`` move to encoder outputs of this batch."""
        dead = (self.cluster_size < self.restart_threshold).nonzero().squeeze(1)
        if len(dead) == 0 or len(flat) == 0:
            return
        pick = torch.randint(len(flat), (len(dead),), generator=generator).to(flat.device)
        new = flat[pick].to(self.embed.dtype)
        if _distributed():  # the same dead codes everywhere (N is); rank 0's replacements
            torch.distributed.broadcast(new, src=0)
        self.embed.data[dead] = new
        self.cluster_size[dead] = 1.0
        if self.ema:
            self.embed_sum[dead] = new
        self.restarts_total += len(dead)


def _all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` ``(n, D)`` of every process, in rank order (local ``n`` may differ)."""
    world = torch.distributed.get_world_size()
    n = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    torch.distributed.all_gather(sizes, n)
    sizes_ = [int(s) for s in sizes]
    padded = x.new_zeros(max(sizes_), x.shape[1])
    padded[: len(x)] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes_)])


__all__ = [
    "QuantizeResult", "VectorQuantizer", "code_statistics", "kmeans", "nearest", "squared_distances",
]  # fmt: skip
