"""A transformer over token sequences that knows nothing about losses.

Token embedding + learned positional embedding, ``depth`` pre-LayerNorm blocks (multi-head
self-attention through :func:`torch.nn.functional.scaled_dot_product_attention`, then an MLP of
width ``4 · hidden`` with GELU), dropout, a final LayerNorm and an output head tied to the token
embedding (Vaswani et al. 2017, "Attention is all you need"; the pre-LN arrangement and the scaled
initialisation of the residual projections of GPT-2, Radford et al. 2019, "Language models are
unsupervised multitask learners", sec. 2.3; weight tying: Press & Wolf 2017).

``causal=True`` lets position ``i`` attend to positions ``<= i`` only (autoregressive models);
``causal=False`` attends everywhere (masked / discrete diffusion over text).

The embedding has ``tokens`` rows (a vocabulary plus any special tokens: a start token, a mask);
the head gives logits over the first ``outputs`` of them, sharing their weights.

Incremental decoding: :meth:`Transformer.new_cache` makes a :class:`KVCache` that holds every
layer's keys and values of the positions fed so far; ``net(idx, cache=cache)`` feeds new tokens
at the next positions (``cache.length`` onwards) and attends to the cached ones, so a sampler
pays for one position per new token instead of the whole context (causal models only: with
bidirectional attention, earlier keys change when later tokens arrive). Learned absolute positions
cannot be shifted: a caller that slides its window past ``context`` clears the cache and feeds the
cropped window again.

Block diffusion (BD3-LM) uses two more things: ``mask``, a boolean attention mask ``(T, S)`` (True:
may attend) instead of the causal rule, with ``positions`` given explicitly (its two copies of a
window share positions); and, on a bidirectional transformer, a cache of clean blocks
(``new_cache(batch, blocks=True)``) that a noised block reads without being written into it
(``commit=False``).

``rope=True`` replaces the learned positional embedding with rotary position embeddings (Su et
al. 2021, "RoFormer"): queries and keys are rotated by angles proportional to their positions, so
attention scores depend on relative positions only. A masked position then finds its neighbours
with one attention pattern for every offset, which a bidirectional denoiser needs (its query
holds only a mask token); MDLM's backbone uses it too (Sahoo et al. 2024, appendix).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.registry import NETS


class KVCache:
    """Keys and values of the first ``length`` positions, for each layer: buffers of shape
    ``(B, heads, context, hidden / heads)`` allocated once, filled as positions are fed."""

    def __init__(
        self, depth: int, batch: int, heads: int, context: int, head_dim: int, like: torch.Tensor
    ) -> None:
        shape = (batch, heads, context, head_dim)
        kw = {"dtype": like.dtype, "device": like.device}
        self.layers = [(torch.zeros(shape, **kw), torch.zeros(shape, **kw)) for _ in range(depth)]
        self.context = context
        self.length = 0  # positions cached so far

    def clear(self) -> None:
        """Forget every position (the buffers are reused)."""
        self.length = 0


def rotary(positions: torch.Tensor, dim: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``cos, sin`` ``(T, dim / 2)`` of the rotary angles ``position · 10000^(−2i/dim)``."""
    i = torch.arange(dim // 2, device=like.device, dtype=torch.float64)
    angles = positions.to(torch.float64)[:, None] * 10000.0 ** (-2.0 * i / dim)
    return angles.cos().to(like.dtype), angles.sin().to(like.dtype)


def rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``x`` ``(B, H, T, D)`` with each pair ``(x_i, x_{i + D/2})`` rotated by its angle."""
    cos, sin = rope
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017, sec. 3.2)."""

    def __init__(self, hidden: int, heads: int, dropout: float, bias: bool, causal: bool) -> None:
        super().__init__()
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=bias)
        self.proj = nn.Linear(hidden, hidden, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
        commit: bool = True,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``x`` ``(B, T, C)`` at positions ``start .. start + T - 1`` (``rope``: their rotary
        ``cos, sin``, applied to the new queries and keys before caching); with ``kv`` (a layer of a
        :class:`KVCache`), the new keys and values are written at those positions (``commit``;
        otherwise only read beside the cached ones) and the queries attend to positions
        ``0 .. start + T - 1``. ``mask`` ``(T, start + T)``, True where a query may attend,
        replaces the causal rule."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = rotate(q, rope), rotate(k, rope)
        if kv is not None and commit:  # (B, H, T, D) into the cache; attend to everything cached
            kv[0][:, :, start : start + T] = k
            kv[1][:, :, start : start + T] = v
            k, v = kv[0][:, :, : start + T], kv[1][:, :, : start + T]  # (B, H, start + T, D)
        elif kv is not None:  # read the cache, leave it as it was
            k = torch.cat([kv[0][:, :, :start], k], dim=2)
            v = torch.cat([kv[1][:, :, :start], v], dim=2)
        is_causal = False
        if mask is None and self.causal and T > 1:
            if start == 0:
                is_causal = True
            else:  # query i (position start + i) sees keys 0 .. start + i
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal
        )
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): the heads side by side
        return self.drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, hidden: int, heads: int, dropout: float, bias: bool, causal: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden, bias=bias)
        self.attn = SelfAttention(hidden, heads, dropout, bias, causal)
        self.ln2 = nn.LayerNorm(hidden, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 4 * hidden, bias=bias),
            nn.GELU(),
            nn.Linear(4 * hidden, hidden, bias=bias),
            nn.Dropout(dropout),
        )

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
        commit: bool = True,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv, start, mask, commit, rope)
        return x + self.mlp(self.ln2(x))


@NETS.register(
    "transformer",
    help="token transformer: pre-LN blocks, learned positions, tied head, causal or not, KV cache",
)
class Transformer(nn.Module):
    """Logits ``(B, T, outputs)`` of token ids ``(B, T)``; see the module docstring."""

    def __init__(
        self,
        tokens: int,
        outputs: int,
        context: int,
        hidden: int = 128,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        causal: bool = True,
        rope: bool = False,
    ) -> None:
        super().__init__()
        for name, v in (("tokens", tokens), ("context", context), ("hidden", hidden),
                        ("depth", depth), ("heads", heads)):  # fmt: skip
            if v < 1:
                raise ConfigError(f"transformer {name} must be at least 1, got {v}")
        if not 1 <= outputs <= tokens:
            raise ConfigError(f"transformer outputs must be in [1, tokens={tokens}], got {outputs}")
        if hidden % heads:
            raise ConfigError(f"model.hidden={hidden} must be a multiple of model.heads={heads}")
        if rope and (hidden // heads) % 2:
            raise ConfigError(f"rotary positions need an even head width, got {hidden // heads}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
        self.tokens, self.outputs, self.context = tokens, outputs, context
        self.hidden, self.depth, self.heads, self.causal = hidden, depth, heads, causal
        self.tok = nn.Embedding(tokens, hidden)
        self.rope = rope
        self.pos = None if rope else nn.Embedding(context, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(hidden, heads, dropout, bias, causal) for _ in range(depth)
        )
        self.ln = nn.LayerNorm(hidden, bias=bias)
        self._init_weights()

    def _init_weights(self) -> None:
        """N(0, 0.02) weights, zero biases; the projections into the residual stream scaled by
        1/√(2 · depth) (Radford et al. 2019, sec. 2.3), so the stream's variance does not grow
        with depth."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for b in self.blocks:
            for proj in (b.attn.proj, b.mlp[2]):
                nn.init.normal_(proj.weight, 0.0, 0.02 / math.sqrt(2 * self.depth))

    def new_cache(self, batch: int, blocks: bool = False) -> KVCache:
        """An empty :class:`KVCache` for ``batch`` sequences, in the weights' dtype and device.
        Causal models only: with bidirectional attention the keys of earlier positions change
        when later tokens arrive; unless (``blocks``) the caller feeds whole clean blocks that
        later positions never change (block diffusion)."""
        if not self.causal and not blocks:
            raise ValueError(
                "a KV cache needs causal attention (this transformer is bidirectional)"
            )
        like = self.tok.weight
        return KVCache(self.depth, batch, self.heads, self.context, self.hidden // self.heads, like)

    def forward(
        self,
        idx: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        embeddings: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        commit: bool = True,
    ) -> torch.Tensor:
        """Logits ``(B, T, outputs)``: the head (tied to the token embedding) on
        :meth:`features`, which takes the same arguments."""
        x = self.features(idx, cache=cache, embeddings=embeddings, mask=mask,
                          positions=positions, commit=commit)  # fmt: skip
        return F.linear(x, self.tok.weight[: self.outputs])  # (B, T, outputs), tied to the input

    def features(
        self,
        idx: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        embeddings: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        commit: bool = True,
    ) -> torch.Tensor:
        """The final hidden states ``(B, T, hidden)`` (after the last LayerNorm) for token ids
        ``idx`` ``(B, T)`` at positions ``start .. start + T - 1``, ``start`` being ``cache.length`` (0 without a cache). ``embeddings``
        ``(B, T, hidden)``: token embeddings given directly instead of ``idx`` (positions are
        still added). With a cache, the positions are appended to it (``commit=False``: read
        only). ``mask`` ``(T, start + T)`` bool: who attends to whom (True: may), instead of the
        causal rule; ``positions`` ``(T,)``: the positions' ids, instead of ``start ..``."""
        if (idx is None) == (embeddings is None):
            raise ValueError("give token ids or embeddings, not both")
        x = self.tok(idx) if embeddings is None else embeddings  # (B, T, C)
        T = x.shape[1]
        start = 0 if cache is None else cache.length
        if (positions is None or cache is not None) and start + T > self.context:
            raise ValueError(
                f"positions {start}..{start + T - 1} run past the context of {self.context}"
            )
        if positions is None:
            positions = torch.arange(start, start + T, device=x.device)
        else:  # checked on the device, without waiting for it (a RuntimeError when it fails)
            torch._assert_async(
                positions.max() < self.context, f"a position is past the context of {self.context}"
            )
        rope = None
        if self.rope:
            rope = rotary(positions, self.hidden // self.heads, x)
        else:
            x = x + self.pos(positions)
        x = self.drop(x)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache.layers[i], start, mask, commit, rope)
        if cache is not None and commit:
            cache.length = start + T
        return self.ln(x)


__all__ = ["Block", "KVCache", "SelfAttention", "Transformer"]
