"""MADE: a masked autoencoder whose outputs are autoregressive in its inputs (Germain et al. 2015).

Every unit gets a *degree*. Input ``i`` has degree ``m₀(i) ∈ {1, …, D}``, its position in the
ordering; a hidden unit of layer ``l`` gets a degree in ``[min m_{l−1}, D − 1]`` and sees the units
of the layer below whose degree is at most its own (``M_l[k, k'] = m_l(k) ≥ m_{l−1}(k')``); output
``i`` sees the last hidden units of degree strictly below ``m₀(i)``. So output ``i`` depends only on
the inputs that come before ``i`` in the ordering (Germain et al. 2015, eq. 12-13), and ``n_params``
numbers per input (a Bernoulli logit, the weights, means and scales of a mixture, a shift and a
log-scale) come out of one pass.

*Order- and connectivity-agnostic training* (sec. 4-5 of the paper): :meth:`MADE.use_mask`
rebuilds the masks from a seed (a random ordering, random hidden degrees), so a training step can
pick one of ``n_masks`` masks; at test time an ensemble averages the densities over those masks.
Mask ``0`` is the natural ordering with deterministic hidden degrees (cycling through
``1 … D − 1``, as nflows and zuko do), the one a single-mask MADE always uses.

References:
    Germain, Gregor, Murray & Larochelle (2015), "MADE: Masked Autoencoder for Distribution
    Estimation", arXiv:1502.03509.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError


class MaskedLinear(nn.Linear):
    """``y = x (W ⊙ M)ᵀ + b`` with a fixed 0/1 ``mask`` ``M`` ``(out, in)`` (a buffer)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__(d_in, d_out)
        self.register_buffer("mask", torch.ones(d_out, d_in), persistent=False)  # from a seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_degrees(
    dim: int, hidden: list[int], seed: int, order: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The input degrees ``(dim,)`` (1-based positions in the ordering) and those of each hidden
    layer. ``seed`` 0: ``order`` (``order[k]`` is the input generated k-th; natural by default),
    hidden degrees cycling through ``1 … dim − 1``; otherwise a random ordering and hidden degrees
    drawn uniformly in ``[min of the layer below, dim − 1]``."""
    if seed == 0:
        inputs = torch.empty(dim, dtype=torch.long)
        inputs[torch.arange(dim) if order is None else order] = torch.arange(1, dim + 1)
        layers = [torch.arange(h) % max(dim - 1, 1) + 1 for h in hidden]
        return inputs, layers
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randperm(dim, generator=g) + 1
    layers, low = [], 1
    for h in hidden:
        m = torch.randint(low, max(dim - 1, low) + 1, (h,), generator=g)
        layers.append(m)
        low = int(m.min())
    return inputs, layers


class MADE(nn.Module):
    """``(B, D) -> (B, n_params, D)``: parameters for each input, autoregressive in the ordering of
    the current mask; ``context`` ``(B, c)`` (a class embedding, say) reaches every hidden unit.
    ``order`` (a permutation of ``range(D)``, natural by default) is the ordering of mask 0.

    ``hidden`` widths of the hidden layers (ReLU, optional dropout); the output layer is
    zero-initialised when ``zero_init`` (flows start at the identity)."""

    def __init__(
        self,
        dim: int,
        n_params: int,
        hidden: list[int],
        *,
        context: int = 0,
        dropout: float = 0.0,
        zero_init: bool = False,
        order: torch.Tensor | None = None,
        masks: int = 1,
    ) -> None:
        super().__init__()
        if dim < 1 or n_params < 1 or not hidden or min(hidden) < 1:
            raise ConfigError(f"MADE needs dim, n_params and hidden widths >= 1, got {hidden}")
        self.dim, self.n_params, self.hidden = dim, n_params, list(hidden)
        widths = [dim, *hidden]
        self.layers = nn.ModuleList(MaskedLinear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = MaskedLinear(hidden[-1], n_params * dim)
        self.context = nn.Linear(context, hidden[0], bias=False) if context else None
        self.dropout = dropout
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        # order[k]: the input generated k-th; masks and order are rebuilt from the seed in use
        self.register_buffer("order", torch.arange(dim), persistent=False)
        if order is not None and sorted(order.tolist()) != list(range(dim)):
            raise ConfigError(f"a MADE ordering must be a permutation of range({dim})")
        self.base_order = None if order is None else order.clone()
        if masks < 1:
            raise ConfigError(f"a MADE needs at least one mask, got {masks}")
        # the masks of seeds 0 … masks − 1, built once (0/1 as bool, with their orderings): a
        # training step picks one by a device index and reads nothing back to the host
        built = [self._masks_of(seed) for seed in range(masks)]
        for i, layer in enumerate([*self.layers, self.out]):
            stack = torch.stack([b[0][i] for b in built]).bool()
            layer.register_buffer("masks", stack, persistent=False)
        self.register_buffer("orders", torch.stack([b[1] for b in built]), persistent=False)
        self.mask_seed: int | None = None
        self.use_mask(0)

    def _masks_of(self, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The mask of every layer (the output layer's last) and the ordering, for ``seed`` (see
        :func:`made_degrees`)."""
        d_in, d_hidden = made_degrees(self.dim, self.hidden, seed, self.base_order)
        prev, masks = d_in, []
        for m in d_hidden:
            masks.append(m[:, None] >= prev[None, :])
            prev = m
        out = d_in[:, None] > prev[None, :]  # (D, H_last)
        masks.append(out.repeat(self.n_params, 1))  # rows: parameter-major, (P·D, H)
        return masks, torch.argsort(d_in)

    @property
    def n_masks(self) -> int:
        return len(self.orders)

    def use_mask(self, seed: int | torch.Tensor) -> None:
        """Use the masks of ``seed`` (see :func:`made_degrees`): a Python int, or a one-element
        long tensor on the module's device (a training step's draw, selected there without
        reading it back); a no-op if the int in use. ``seed`` is one of the ``masks`` built."""
        if isinstance(seed, int) and seed == self.mask_seed:
            return
        index = seed.reshape(1) if isinstance(seed, torch.Tensor) else torch.tensor([seed])
        index = index.to(self.orders.device)
        for layer in [*self.layers, self.out]:
            layer.mask.copy_(layer.masks.index_select(0, index)[0])
        self.order.copy_(self.orders.index_select(0, index)[0])
        self.mask_seed = seed if isinstance(seed, int) else None  # a tensor's is not read back
        self._order_list: list[int] | None = None  # read again by order_list() when asked

    def order_list(self) -> list[int]:
        """``order`` as a Python list, read from the device once per mask (a sequential sampler
        or inverse loops over it every call)."""
        if self._order_list is None:
            self._order_list = self.order.tolist()
        return self._order_list

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i == 0 and self.context is not None and context is not None:
                h = h + self.context(context)
            h = F.relu(h)
            if self.dropout > 0:
                h = F.dropout(h, self.dropout, self.training)
        return self.out(h).view(len(x), self.n_params, self.dim)


__all__ = ["MADE", "MaskedLinear", "made_degrees"]
