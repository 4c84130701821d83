"""Block diffusion over characters: BD3-LM, autoregressive across blocks, masked diffusion within.

A window of ``L`` characters is cut into ``L / S`` blocks of ``S = model.block_size`` characters,
and ``log p(x) = Σ_j log p(x_j | x_{<j})`` over the blocks, each conditional a masked diffusion
(:mod:`.mdlm`: same schedules, SUBS parameterization, no time input) whose denoiser sees the noised
block ``z_j`` and the clean blocks before it. Its bound is the sum over blocks of the MDLM bound
of each block given the clean prefix (Arriola et al. 2025, eq. 4-5).

**Training in one pass** (Arriola et al. 2025, sec. 3.2 and fig. 2): the transformer reads
``[z, x]``, the noised window and the clean one side by side at the same positions, under one
attention mask: a noised character of block ``j`` attends to the noised characters of block ``j``
(block-diagonal) and to the clean characters of blocks ``< j``; a clean character of block ``j``
attends to the clean characters of blocks ``<= j`` (block-causal); nothing attends to a noised
character from outside its block. The logits of the noised copy give every block's denoiser at
once. One time per block (all stratified across the batch) and the masks are drawn in
``prepare``, as for MDLM.

**Limits, on the same weights.** ``S = 1``: each block is one character, masked at every time,
so the bound is exactly ``Σ_l log p(x_l | x_{<l})``, an autoregressive model (its probabilities
sum to one: a test). ``S = L``: one block, no clean prefix, the MDLM bound of the same network.
In between, the bound of each block is an average, over the orders in which its characters are
revealed, of the log-likelihood of an any-order autoregressive model; the larger the block, the
more orders other than left to right. For one network this is not monotone in ``S`` by any
theorem; for a model of text, where left to right is the easy order, it is expected to loosen as
``S`` grows, and it is measured (``genlab eval RUN --option block_size=16``: the same weights
scored with other blocks; bench/text.py, docs/text.md).

**Sampling** (Arriola et al. 2025, Algorithm 2): block after block, each by the MDLM ancestral
sampler with ``steps`` steps (reusing the network's output on steps where no character changes).
The keys and values of the clean blocks are kept in a
:class:`~genlab.nets.transformer.KVCache`, written once per block (block-causal within what is
written); a noised block reads them without being written (``cache=False`` recomputes the clean
prefix at every pass and reuses no output: the same tokens, a test). Any ``length``: once the context is full, the
window slides by whole blocks (the cache is rebuilt from the last ``context − S`` characters, as
the GPT does). A ``prompt`` is held fixed; an ``infill`` template's blanks are filled block by
block, each seeing the characters before it and its own block's given characters, not later
blocks. NFE counts every pass of the network (denoising passes and cache writes).

Reference:
    Arriola et al. (2025), "Block Diffusion: Interpolating Between Autoregressive and Diffusion
    Language Models", ICLR.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from genlab.errors import ConfigError, DataError
from genlab.models.base import FROM_CONFIG, ModelSpec, SampleOption, SampleResult
from genlab.models.discrete_diffusion.mdlm import MDLM, MDLMConfig
from genlab.nets.transformer import KVCache
from genlab.progress import step_range
from genlab.registry import MODELS


@dataclass
class BD3LMConfig(MDLMConfig):
    block_size: int = 4  # characters per block (1: autoregressive; context: MDLM)


def two_copy_mask(L: int, S: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The attention mask ``(2L, 2L)`` (True: may attend) of ``[noised, clean]`` windows of ``L``
    characters in blocks of ``S``; see the module docstring."""
    blk = torch.arange(L, device=device) // S
    q, k = blk[:, None], blk[None, :]
    top = torch.cat([q == k, k < q], dim=1)  # noised queries: own block noised, earlier clean
    bottom = torch.cat([torch.zeros_like(q == k), k <= q], dim=1)  # clean: block-causal
    return torch.cat([top, bottom], dim=0)


def block_causal_mask(start: int, T: int, S: int, device: torch.device | str) -> torch.Tensor:
    """``(T, start + T)``: positions ``start ..`` attend to positions in their block or before."""
    q = torch.arange(start, start + T, device=device)[:, None] // S
    k = torch.arange(start + T, device=device)[None, :] // S
    return k <= q


@MODELS.register(
    "bd3lm", help="block diffusion LM (Arriola 2025): AR over blocks, masked diffusion within"
)
class BD3LM(MDLM):
    """Block diffusion over windows of characters; see the module docstring."""

    Config: ClassVar[type] = BD3LMConfig

    likelihood_options = (
        *MDLM.likelihood_options,
        SampleOption("block_size", "blocks of the held-out bound (default: the model's; the "
                     "same weights with other blocks: 1 is autoregressive)", int, FROM_CONFIG),
    )  # fmt: skip

    def __init__(self, config: BD3LMConfig, spec: ModelSpec) -> None:
        if config.block_size < 1 or config.context % config.block_size:
            raise ConfigError(
                f"model.block_size must be a divisor of model.context={config.context}, got "
                f"{config.block_size}"
            )
        super().__init__(config, spec)

    def block(self, L: int, size: int | None = None) -> int:
        """``size`` (default ``model.block_size``), a divisor of ``L``."""
        S = size or self.config.block_size
        if S < 1 or L % S:
            raise DataError(f"windows of {L} characters do not split into blocks of {S}")
        return S

    def pair_logits(
        self, z: torch.Tensor, x: torch.Tensor, size: int | None = None
    ) -> torch.Tensor:
        """The noised copy's logits ``(B, L, V)`` from one pass over ``[z, x]`` under
        :func:`two_copy_mask` with blocks of ``size`` (default: the model's)."""
        L = z.shape[1]
        pos = torch.arange(L, device=z.device).repeat(2)
        mask = two_copy_mask(L, self.block(L, size), z.device)
        return self.net(torch.cat([z, x], dim=1), mask=mask, positions=pos)[:, :L]

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a bd3lm denoiser needs the clean prefix: use pair_logits")

    # --- sampling -------------------------------------------------------------------------------
    def _max_length(self) -> int:
        return 10**9  # any length: the window slides by blocks

    def _too_long(self, what: str, n: int) -> str:
        return f"{what} is {n} characters: too long"

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        steps: int,
        length: int,
        prompt: str,
        infill: str,
        cache: bool,
    ) -> SampleResult:
        seq = self.start({"prompt": prompt, "infill": infill, "length": length})
        seq = seq.to(self.device)[None].repeat(n, 1)  # (n, N): masks where to draw
        S, C = self.config.block_size, self.config.context
        kv = self.net.new_cache(n, blocks=True) if cache else None
        state = {"first": 0, "nfe": 0}  # the cache holds seq[:, first : first + kv.length]
        for j0 in step_range(0, seq.shape[1], S, unit="blocks"):
            j1 = min(j0 + S, seq.shape[1])
            if not bool((seq[:, j0:j1] == self.mask_id).any()):
                continue  # all given (a prompt): nothing to draw
            first = max(0, j0 - (C - S))  # the clean blocks the window still holds
            if kv is not None:
                self._fill_cache(kv, seq, first, j0, state)
                fn = self._cached_logits(kv)
            else:
                fn = self._recomputed_logits(seq[:, first:j0])
            seq[:, j0:j1], passes = self.denoise(seq[:, j0:j1], steps, generator, cache, fn)
            state["nfe"] += passes
        return SampleResult(seq, state["nfe"])

    def _fill_cache(
        self, kv: KVCache, seq: torch.Tensor, first: int, upto: int, state: dict
    ) -> None:
        """Make ``kv`` hold the clean ``seq[:, first:upto]`` (written block-causally), rebuilding
        it when the window has slid."""
        if state["first"] != first:
            kv.clear()
            state["first"] = first
        have = first + kv.length
        if have < upto:
            start, T = kv.length, upto - have
            mask = block_causal_mask(start, T, self.config.block_size, seq.device)
            self.net(seq[:, have:upto], cache=kv, mask=mask)
            state["nfe"] += 1

    def _cached_logits(self, kv: KVCache) -> Callable[[torch.Tensor], torch.Tensor]:
        """The denoiser of the next block: it reads the cached clean prefix, writes nothing."""
        return lambda zb: self.net(zb, cache=kv, commit=False)

    def _recomputed_logits(self, clean: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The denoiser of the next block with the clean prefix ``clean`` recomputed each pass."""
        S, P = self.config.block_size, clean.shape[1]

        def fn(zb: torch.Tensor) -> torch.Tensor:
            T = P + zb.shape[1]
            mask = block_causal_mask(0, T, S, zb.device)
            mask[P:, P:] = True  # the noised block sees all of itself (a last block may be short)
            return self.net(torch.cat([clean, zb], dim=1), mask=mask)[:, P:]

        return fn


__all__ = ["BD3LM", "BD3LMConfig", "block_causal_mask", "two_copy_mask"]
