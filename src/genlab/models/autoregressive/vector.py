"""Autoregressive models of vectors: FVSBN, NADE and MADE, with exact likelihoods.

By the chain rule ``p(x) = Π_i p(x_{o_i} | x_{o_1}, …, x_{o_{i−1}})`` for an ordering ``o`` of the
``D`` coordinates. The three families differ only in the *conditioner* that maps ``x`` to the
parameters of every conditional in one pass (:meth:`VectorAR.conditioner`, output ``(B, P, D)``,
column ``i`` depending only on the coordinates before ``i``):

- ``fvsbn``, the fully visible sigmoid belief net (Frey et al. 1996; the logistic baseline of
  the chain rule): one linear map, strictly lower-triangular in the ordering;
- ``nade`` (Larochelle & Murray 2011; RNADE, Uria et al. 2013, for real values): a hidden layer
  ``h_i = σ(c + W_{·,<i} x_{<i})`` shared across positions through a running sum, then
  ``V_i h_i + b_i``;
- ``made`` (Germain et al. 2015): a masked MLP (:class:`~genlab.nets.made.MADE`); with
  ``model.masks > 1`` each training step draws one of that many orderings and connectivities in
  :meth:`prepare` (order- and connectivity-agnostic training) and :meth:`log_prob` averages the
  densities of ``model.ensemble`` of them (an ensemble, itself an exact density).

Each conditional is a Bernoulli (binary data: binarized images) or, for real values, a mixture of
``components`` Gaussians (``model.output``; ``auto`` picks Bernoulli for images, the mixture for
points). Sampling draws the coordinates one at a time in the ordering (``D`` conditioner passes).
Real values are modelled standardized, ``z = (x + loc) · exp(log_scale)`` per coordinate (a
diagonal affine map, so the chain rule and the exact density carry over with ``+ Σ log_scale``),
``loc`` and ``log_scale`` set from the first training batch, as ActNorm does, then learnt; the
mixtures' means start spread over [-1.5, 1.5]. Without both, a coordinate with no inputs (the
first in the ordering) starts with identical components that barely separate, and its marginal
stays close to one Gaussian.

Images are modelled as binary vectors of ``C·H·W`` pixels. Training uses *dynamic binarization*
(each pixel is 1 with probability its intensity, drawn afresh every step in :meth:`prepare`;
Salakhutdinov & Murray 2008); :meth:`log_prob` binarizes once from the generator it is given or
torch's global RNG, which ``genlab eval`` seeds with a fixed seed, so the held-out split is scored
on one fixed, seeded binarization. Data that is already binary (every value -1 or 1) is used as
it is. Samples come back as images in {-1, 1}.

References:
    Frey, Hinton & Dayan (1996) "Does the wake-sleep algorithm produce good density estimators?"
    (FVSBN). Larochelle & Murray (2011) "The Neural Autoregressive Distribution Estimator",
    AISTATS. Uria, Murray & Larochelle (2013) "RNADE", arXiv:1306.0186. Germain, Gregor, Murray &
    Larochelle (2015) "MADE", arXiv:1502.03509. Salakhutdinov & Murray (2008) "On the
    quantitative analysis of deep belief networks" (dynamic binarization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, LogProb, ModelSpec, SampleOption, SampleResult
from genlab.models.shared import binarize, global_moments
from genlab.nets.host_copy import HostCopy
from genlab.nets.made import MADE, MaskedLinear
from genlab.progress import chunks
from genlab.registry import MODELS

LOG_2PI = math.log(2 * math.pi)


@dataclass
class VectorARConfig:
    output: Literal["auto", "bernoulli", "mixture"] = "auto"  # per-coordinate conditional
    components: int = 5  # mixture: Gaussians per coordinate
    min_log_std: float = -7.0  # mixture: floor of each component's log-std (a density bound)


@dataclass
class FVSBNConfig(VectorARConfig):
    pass


@dataclass
class NADEConfig(VectorARConfig):
    hidden: int = 500  # units of the shared hidden layer (Larochelle & Murray: 500)


@dataclass
class MADEConfig(VectorARConfig):
    hidden: int = 500
    depth: int = 1  # hidden layers
    dropout: float = 0.0
    masks: int = 1  # orderings/connectivities drawn from during training (1: natural order)
    ensemble: int = 1  # masks whose densities log_prob averages (at most `masks`)


class VectorAR(GenerativeModel):
    """``p(x) = Π_i p(x_{o_i} | x_{o_{<i}})`` with per-coordinate Bernoulli or Gaussian-mixture
    conditionals; subclasses give the conditioner (see the module docstring)."""

    Config: ClassVar[type] = VectorARConfig
    sample_options = (
        SampleOption("mask", "made: the mask (ordering) to sample with (0: natural)", int, 0),
    )

    def __init__(self, config: VectorARConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        shape = tuple(spec.shape)
        if len(shape) not in (1, 3):
            raise ConfigError(
                f"{self.family} models vectors (d,) or images (C, H, W), got examples of shape "
                f"{shape}"
            )
        self.is_image = len(shape) == 3
        self.dim = math.prod(shape)
        output = config.output
        if output == "auto":
            output = "bernoulli" if self.is_image else "mixture"
        if output == "mixture" and config.components < 1:
            raise ConfigError(f"model.components must be at least 1, got {config.components}")
        self.output = output
        self.n_params = 1 if output == "bernoulli" else 3 * config.components
        if output == "mixture":
            # real values are modelled standardized, z = (x + loc) exp(log_scale), with loc and
            # log_scale set from the first training batch (as ActNorm) and then learnt; the
            # mixtures' means start spread over [-1.5, 1.5] so that their components separate
            k = config.components
            self.loc = nn.Parameter(torch.zeros(self.dim))
            self.log_scale = nn.Parameter(torch.zeros(self.dim))
            self.register_buffer("standardized", torch.tensor(False))
            self.host = HostCopy(self)  # the flag read on the host, without a sync per step
            spread = torch.linspace(-1.5, 1.5, k) if k > 1 else torch.zeros(1)
            init = torch.cat([torch.zeros(k), spread, torch.zeros(k)])
            self.mixture_bias = nn.Parameter(init[:, None].repeat(1, self.dim))  # (P, D)

    # --- the conditioner (subclasses) -----------------------------------------------------------
    def conditioner(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B, P, D)``: column ``i`` depends only on the coordinates before ``i`` in
        :meth:`order`."""
        raise NotImplementedError

    def order(self) -> torch.Tensor:
        """``order[k]``: the coordinate generated ``k``-th."""
        return torch.arange(self.dim)

    def use_mask(self, index: int | torch.Tensor) -> None:
        """Switch to mask ``index`` (MADE; an int, or a one-element tensor on the device); the
        other families have one ordering."""

    @property
    def n_masks(self) -> int:
        return 1

    # --- data -----------------------------------------------------------------------------------
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        """Examples -> ``(B, D)`` vectors; images in [-1, 1] -> intensities in [0, 1]."""
        x = x.reshape(len(x), self.dim)
        return (x + 1) / 2 if self.is_image else x

    def _binarize(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Intensities in [0, 1] -> {0, 1}: each pixel 1 with probability its intensity (already
        binary data passes unchanged)."""
        return binarize(x, generator) if self.output == "bernoulli" else x

    def observed(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Binarized images in {-1, 1} for a Bernoulli model (image metrics then compare binary
        samples with binary real images); anything else unchanged."""
        if not (self.is_image and self.output == "bernoulli"):
            return x
        v = self._binarize(self._flat(x.to(torch.float64)), generator)
        return (v * 2 - 1).to(x.dtype).reshape(x.shape)

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """Dynamic binarization of images, and MADE's mask for this step (one per batch)."""
        aux = dict(batch.aux)
        x = self._flat(batch.x)
        if self.output == "bernoulli":
            aux["binary"] = self._binarize(x, generator)
        if self.n_masks > 1:  # drawn where the generator lives, kept there: nothing is read back
            device = generator.device if generator is not None else "cpu"
            k = torch.randint(self.n_masks, (1,), generator=generator, device=device)
            aux["mask"] = k.to(x.device).expand(len(x)).clone()
        return Batch(batch.x, batch.y, batch.noise, batch.t, aux)

    # --- likelihood -----------------------------------------------------------------------------
    def _log_conditionals(self, v: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``log p(v_i | v_{<i})`` ``(B, D)`` from the conditioner's ``params`` ``(B, P, D)``."""
        if self.output == "bernoulli":
            return -F.binary_cross_entropy_with_logits(params[:, 0], v, reduction="none")
        logits, mu, log_std = self._mixture(params)
        z = (v[:, None] - mu) * (-log_std).exp()
        comp = -0.5 * z**2 - log_std - 0.5 * LOG_2PI
        return torch.logsumexp(F.log_softmax(logits, dim=1) + comp, dim=1)

    def _mixture(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k = self.config.components
        logits, mu, log_std = params[:, :k], params[:, k : 2 * k], params[:, 2 * k :]
        return logits, mu, log_std.clamp(min=self.config.min_log_std)

    def _vector(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        v = self._flat(x)
        return self._binarize(v, generator) if self.output == "bernoulli" else v

    def log_prob_tensor(self, v: torch.Tensor) -> torch.Tensor:
        """``log p(v)`` ``(B,)`` in nats for vectors ``v`` ``(B, D)`` (binary when Bernoulli)
        under the mask in use, differentiable."""
        if self.output == "bernoulli":
            return self._log_conditionals(v, self.conditioner(v)).sum(-1)
        z = (v + self.loc) * self.log_scale.exp()
        return self._log_conditionals(z, self._params(z)).sum(-1) + self.log_scale.sum()

    def _params(self, v: torch.Tensor) -> torch.Tensor:
        """The conditioner's output, plus the mixtures' own biases."""
        params = self.conditioner(v)
        return params if self.output == "bernoulli" else params + self.mixture_bias

    @torch.no_grad()
    def _standardize(self, x: torch.Tensor) -> None:
        """Set ``loc`` and ``log_scale`` from the first training batch (the global batch under
        data parallelism), so that it has zero mean and unit variance per coordinate."""
        mean, std = global_moments(x)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.host.set(self, "standardized", True)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats per example."""
        unbinarized = self.output == "bernoulli" and "binary" not in batch.aux
        if unbinarized or (self.n_masks > 1 and "mask" not in batch.aux):  # not prepared yet
            batch = self.prepare(batch, generator)
        if "mask" in batch.aux:
            self.use_mask(batch.aux["mask"][:1])
        v = batch.aux["binary"] if self.output == "bernoulli" else self._flat(batch.x)
        if self.output == "mixture" and self.training and not self.host.get(self, "standardized"):
            self._standardize(v)
        return -self.log_prob_tensor(v).mean()

    @torch.no_grad()
    def log_prob(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None, batch_size: int = 1024
    ) -> LogProb:
        """Exact ``log p(x)`` in nats (an average of the densities of ``ensemble`` masks for
        MADE). Images are binarized once, from ``generator`` or the global RNG."""
        v = self._vector(x, generator)
        masks = self.ensemble_masks()
        parts = []
        for chunk in chunks(v, batch_size):
            per_mask = []
            for k in masks:
                self.use_mask(k)
                per_mask.append(self.log_prob_tensor(chunk))
            lp = torch.logsumexp(torch.stack(per_mask), 0) - math.log(len(masks))
            parts.append(lp)
        self.use_mask(0)
        note = "chain rule"
        if len(masks) > 1:
            note += f", density averaged over {len(masks)} orderings"
        if self.is_image:
            note += "; images binarized (each pixel 1 with probability its intensity), seeded"
        return LogProb(torch.cat(parts), "exact", nfe=len(masks), note=note)

    def ensemble_masks(self) -> list[int]:
        return [0]

    # --- sampling -------------------------------------------------------------------------------
    def _sample(
        self, n: int, *, labels: torch.Tensor | None, generator: torch.Generator | None, mask: int
    ) -> SampleResult:
        """Coordinates one at a time in the ordering of ``mask``: ``D`` conditioner passes."""
        if not 0 <= mask < self.n_masks:
            raise ConfigError(f"mask must be in [0, {self.n_masks}), got {mask}")
        self.use_mask(mask)
        p = next(self.parameters())
        v = torch.zeros((n, self.dim), dtype=p.dtype, device=p.device)  # z for a mixture
        for i in self.order().tolist():
            params = self._params(v)[:, :, i]  # (n, P)
            v[:, i] = self._draw(params, generator)
        self.use_mask(0)
        if self.output == "mixture":
            v = v * (-self.log_scale).exp() - self.loc
        x = v * 2 - 1 if self.is_image else v
        return SampleResult(x.reshape(n, *self.spec.shape), self.dim)

    def _draw(self, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One draw per row from the conditional with ``params`` ``(n, P)``, in float64."""
        params = params.double().cpu()
        n = len(params)
        if self.output == "bernoulli":
            u = torch.rand(n, generator=generator, dtype=torch.float64)
            out = (u < torch.sigmoid(params[:, 0])).double()
        else:
            logits, mu, log_std = self._mixture(params[:, :, None])
            k = torch.multinomial(F.softmax(logits[..., 0], 1), 1, generator=generator)[:, 0]
            eps = torch.randn(n, generator=generator, dtype=torch.float64)
            rows = torch.arange(n)
            out = mu[rows, k, 0] + log_std[rows, k, 0].exp() * eps
        p = next(self.parameters())
        return out.to(device=p.device, dtype=p.dtype)


@MODELS.register("fvsbn", help="fully visible sigmoid belief net: logistic chain rule (Frey 1996)")
class FVSBN(VectorAR):
    """One linear map, strictly lower-triangular in the natural order: the logistic (or linear
    Gaussian-mixture) baseline of the chain rule."""

    Config = FVSBNConfig

    def __init__(self, config: FVSBNConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        self.linear = MaskedLinear(self.dim, self.n_params * self.dim)
        strict = torch.tril(torch.ones(self.dim, self.dim), diagonal=-1)  # [i, j]: j < i
        self.linear.mask.copy_(strict.repeat(self.n_params, 1))
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def conditioner(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(len(x), self.n_params, self.dim)


@MODELS.register("nade", help="NADE / RNADE: shared hidden layer by running sums (Larochelle 2011)")
class NADE(VectorAR):
    """``h_i = σ(c + Σ_{j<i} W_{·j} x_j)``, conditional ``i`` from ``V_i h_i + b_i``: the running
    sum makes all ``D`` hidden vectors cost one ``O(BDH)`` pass (Larochelle & Murray 2011, eq. 6)."""

    Config = NADEConfig

    def __init__(self, config: NADEConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        h, d, p = config.hidden, self.dim, self.n_params
        if h < 1:
            raise ConfigError(f"model.hidden must be at least 1, got {h}")
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn((d, h), generator=g) / math.sqrt(d))  # (D, H)
        self.c = nn.Parameter(torch.zeros(h))
        self.V = nn.Parameter(torch.randn((p, d, h), generator=g) / math.sqrt(h))  # (P, D, H)
        self.b = nn.Parameter(torch.zeros(p, d))

    def conditioner(self, x: torch.Tensor) -> torch.Tensor:
        """The running sums in blocks of ``T ≈ √D`` coordinates: ``a_i = c + Σ_{j<i} x_j W_{·j}``
        is the total of the earlier blocks (one matmul, then a cumulative sum over ``D/T``
        blocks) plus a strictly lower-triangular matmul within the block; the hidden units stay
        in ``(blocks, B, T, H)`` layout until ``V`` contracts them. The same sums as one running
        sum over ``D``, but ``torch.cumsum`` over a ``(B, D, H)`` tensor is memory-bound and
        flipped twice in its backward pass, which makes it the slower of the two."""
        b, d = x.shape
        h = self.W.shape[1]
        t = max(1, math.isqrt(d - 1) + 1)  # ≈ √D
        pad = (-d) % t
        xb = F.pad(x, (0, pad)).view(b, -1, t).transpose(0, 1)  # (n, B, T)
        wb = F.pad(self.W, (0, 0, 0, pad)).view(-1, t, h)  # (n, T, H)
        totals = torch.bmm(xb, wb)  # (n, B, H): each block's Σ x_j W_j
        before = torch.cumsum(totals, 0) - totals  # the blocks before
        strict = torch.tril(torch.ones(t, t, dtype=x.dtype, device=x.device), diagonal=-1)
        masked = (xb[:, :, None, :] * strict).reshape(xb.shape[0], b * t, t)  # (n, B·T, T)
        within = torch.bmm(masked, wb).view(-1, b, t, h)  # (n, B, T, H): j < i in the block
        hidden = torch.sigmoid(self.c + before[:, :, None, :] + within)
        vb = F.pad(self.V, (0, 0, 0, pad)).view(self.V.shape[0], -1, t, h)  # (P, n, T, H)
        out = torch.einsum("nbth,pnth->bpnt", hidden, vb).reshape(b, self.V.shape[0], -1)
        return out[:, :, :d] + self.b


@MODELS.register(
    "made", help="MADE: masked autoencoder, order/connectivity-agnostic (Germain 2015)"
)
class MADEModel(VectorAR):
    """A masked MLP (:class:`~genlab.nets.made.MADE`) giving every conditional in one pass."""

    Config = MADEConfig

    def __init__(self, config: MADEConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        c = config
        if c.masks < 1 or not 1 <= c.ensemble <= c.masks:
            raise ConfigError(
                f"model.masks must be at least 1 and model.ensemble in [1, masks], got masks="
                f"{c.masks}, ensemble={c.ensemble}"
            )
        if c.depth < 1 or c.hidden < 1:
            raise ConfigError("model.depth and model.hidden must be at least 1")
        self.net = MADE(self.dim, self.n_params, [c.hidden] * c.depth, dropout=c.dropout,
                        masks=c.masks)  # fmt: skip

    @property
    def n_masks(self) -> int:
        return self.config.masks

    def use_mask(self, index: int | torch.Tensor) -> None:
        self.net.use_mask(index)

    def order(self) -> torch.Tensor:
        return self.net.order

    def ensemble_masks(self) -> list[int]:
        return list(range(self.config.ensemble))

    def conditioner(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


__all__ = [
    "FVSBN",
    "NADE",
    "binarize",
    "FVSBNConfig",
    "MADEConfig",
    "MADEModel",
    "NADEConfig",
    "VectorAR",
]
