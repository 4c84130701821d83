"""A small time- and class-conditional U-Net for images (1x8x8 digits, 1x28x28 MNIST, ...).

The layout follows the DDPM U-Net (Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
itself after PixelCNN++) with the refinements of Dhariwal & Nichol 2021 ("Diffusion Models Beat
GANs on Image Synthesis", the ADM network): residual blocks with group normalisation, a
scale-shift ("adaptive group norm") injection of the time/class embedding, one skip per block and
per downsampling step, multi-head self-attention at the lowest resolution and a zero-initialised
output convolution, so that a freshly built net outputs exactly 0.

Sizes that do not halve evenly are fine: downsampling is a stride-2 3x3 convolution with padding 1
(``ceil(n / 2)``: 28 -> 14 -> 7, 7 -> 4), and upsampling is a nearest-neighbour resize to the exact
spatial size of the skip it is about to meet, followed by a 3x3 convolution. Non-square inputs work
the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nets.embeddings import SinusoidalEmbedding
from genlab.nets.transformer import Transformer
from genlab.registry import NETS


def _largest_divisor(n: int, at_most: int) -> int:
    """The largest ``d <= at_most`` that divides ``n`` (at least 1)."""
    for d in range(max(1, min(at_most, n)), 0, -1):
        if n % d == 0:
            return d
    return 1


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``min(groups, channels)`` groups, lowered until it divides ``channels``."""
    return nn.GroupNorm(_largest_divisor(channels, groups), channels)


class ResBlock(nn.Module):
    """GN -> SiLU -> Conv3x3 -> GN·(1 + scale) + shift -> SiLU -> dropout -> Conv3x3, plus skip.

    The embedding ``(B, emb_dim)`` is projected (SiLU, Linear) to a per-channel ``(scale, shift)``
    applied right after the second group norm (Dhariwal & Nichol's ``use_scale_shift_norm``); the
    skip is a 1x1 convolution when the channel count changes, the identity otherwise.
    """

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # 2 x (B, out, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))  # (B, out, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions, residual: ``x + proj(attn(GN(x)))``.

    ``heads`` is lowered to the largest divisor of ``channels`` not above it.
    """

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = _largest_divisor(channels, heads)
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = (z.transpose(-1, -2) for z in qkv.unbind(1))  # 3 x (B, heads, HW, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class CrossAttention(nn.Module):
    """Multi-head attention from the ``H*W`` positions to a token sequence, residual:
    ``x + proj(attn(q = GN(x), k, v = context))`` (the U-Net's cross-attention to a text encoder's
    tokens, Rombach et al. 2022, sec. 3.3). ``context`` is ``(B, L, context_dim)``. The output
    projection starts at zero, so a fresh block is the identity."""

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = _largest_divisor(channels, heads)
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        d = C // self.heads
        q = self.q(self.norm(x)).reshape(B, self.heads, d, H * W).transpose(-1, -2)
        k, v = self.kv(context).reshape(B, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: ``(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to ``size`` (the next skip's spatial size), then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Block(nn.Module):
    """A residual block, optionally followed by self-attention and by cross-attention to a token
    sequence (text conditioning)."""

    def __init__(
        self,
        res: ResBlock,
        attn: SelfAttention | None = None,
        xattn: CrossAttention | None = None,
    ) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.xattn = xattn

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.res(x, emb)
        h = self.attn(h) if self.attn is not None else h
        return self.xattn(h, context) if self.xattn is not None else h


@NETS.register(
    "unet",
    help="time/class-conditional U-Net for images (residual blocks, group norm, attention at the lowest resolution)",
)
class UNet(nn.Module):
    """``f(x, t[, y]) -> (B, out_channels, H, W)`` for ``x`` of shape ``(B, C, H, W)``.

    ``shape`` is ``(C, H, W)``; the spatial size is informative only (any ``H, W`` works, odd or
    non-square). ``t`` of shape ``(B,)`` (or a scalar, broadcast) is any real number -- a time in
    [0, 1] or a log noise level -- embedded sinusoidally (scaled by ``time_scale``) and passed
    through Linear-SiLU-Linear to ``time_dim``. With ``num_classes`` set, ``nn.Embedding(num_classes
    + 1, time_dim)`` is added to the time embedding; index ``num_classes`` is the "null" label of
    classifier-free guidance and ``y=None`` means the null label for the whole batch. Without
    ``num_classes``, ``y`` is ignored (as in :class:`genlab.nets.MLP`).

    Level ``i`` has ``channels * channel_mults[i]`` channels and ``num_res_blocks`` residual blocks
    (see :class:`ResBlock`: the embedding enters as a GroupNorm scale-shift); every level but the
    last ends in a downsampling. The middle is ResBlock -> attention -> ResBlock (attention only when
    ``attention``), and the decoder mirrors the encoder with ``num_res_blocks + 1`` blocks per
    level, each concatenating one skip. The final GN -> SiLU -> Conv3x3 is zero-initialised.

    Text conditioning (``text_tokens`` set; Rombach et al. 2022, sec. 3.3): ``y`` is then a token
    sequence ``(B, text_length)`` (id 0 is padding; all padding, or ``y=None``, is the null
    caption), read by a bidirectional :class:`~genlab.nets.transformer.Transformer` trained with
    the U-Net. Every block cross-attends to its hidden states (:class:`CrossAttention`), and their
    mean, projected, is added to the time embedding (a pooled text embedding, as in SDXL). No
    class embedding then.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        out_channels: int | None = None,
        channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        attention: bool = True,
        heads: int = 4,
        time_dim: int = 128,
        num_classes: int | None = None,
        dropout: float = 0.0,
        time_scale: float = 1000.0,
        groups: int = 8,
        text_tokens: int | None = None,
        text_length: int = 48,
        text_hidden: int = 64,
        text_depth: int = 2,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
        if len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {shape}")
        if not channel_mults or min(channel_mults) < 1:
            raise ValueError(f"channel_mults must be non-empty positive ints, got {channel_mults}")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        if channels < 1 or groups < 1 or heads < 1:
            raise ValueError("channels, groups and heads must be >= 1")
        if time_dim < 2 or time_dim % 2:
            raise ValueError(f"time_dim must be even and >= 2, got {time_dim}")
        self.shape = shape
        self.in_channels = shape[0]
        self.out_channels = out_channels or shape[0]
        self.num_classes = num_classes

        self.time_embed = SinusoidalEmbedding(time_dim, scale=time_scale)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        # class index num_classes is the "null" label used by classifier-free guidance
        text = text_tokens is not None
        self.class_embed = (
            nn.Embedding(num_classes + 1, time_dim) if num_classes and not text else None
        )
        self.text_length = text_length
        self.text = None
        if text:
            self.text = Transformer(
                text_tokens, text_tokens, text_length, hidden=text_hidden, depth=text_depth,
                heads=_largest_divisor(text_hidden, 4), causal=False,
            )  # fmt: skip
            self.text_pool = nn.Linear(text_hidden, time_dim)

        def block(cin: int, cout: int, attn: bool) -> Block:
            res = ResBlock(cin, cout, time_dim, groups, dropout)
            xattn = CrossAttention(cout, text_hidden, heads, groups) if text else None
            return Block(res, SelfAttention(cout, heads, groups) if attn else None, xattn)

        self.conv_in = nn.Conv2d(self.in_channels, channels, 3, padding=1)
        skip_chans = [channels]  # channels of each saved skip, in order
        ch, last = channels, len(channel_mults) - 1
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, channels * mult, False))
                ch = channels * mult
                skip_chans.append(ch)
            if level != last:
                self.down.append(Downsample(ch))
                skip_chans.append(ch)

        self.mid = nn.ModuleList([block(ch, ch, attention), block(ch, ch, False)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(ch + skip_chans.pop(), channels * mult, False))
                ch = channels * mult
            if level != 0:
                self.up.append(Upsample(ch))
        assert not skip_chans

        self.out = nn.Sequential(
            _norm(ch, groups), nn.SiLU(), nn.Conv2d(ch, self.out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def embed(self, t: torch.Tensor, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The conditioning vector ``(B, time_dim)`` from ``t`` and the optional labels ``y``."""
        if t.dim() == 0:
            t = t.expand(batch)
        emb = self.time_embed(t).to(self.time_mlp[0].weight.dtype)  # (B, time_dim)
        emb = self.time_mlp(emb)  # (B, time_dim)
        if self.class_embed is not None:
            if y is None:
                y = torch.full((batch,), self.num_classes, dtype=torch.long, device=emb.device)
            emb = emb + self.class_embed(y)
        return emb

    def encode_text(self, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The text encoder's hidden states ``(B, text_length, text_hidden)`` of tokens ``y``
        (``None``: the null caption, all padding)."""
        if y is None:
            y = torch.zeros(
                (batch, self.text_length), dtype=torch.long, device=self.conv_in.weight.device
            )
        if y.dim() != 2 or y.shape[1] != self.text_length:
            raise ValueError(
                f"a text-conditioned U-Net takes tokens (B, {self.text_length}), got {tuple(y.shape)}"
            )
        return self.text.features(y)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        B = x.shape[0]
        context = None
        if self.text is not None:
            context = self.encode_text(y, B).to(x.dtype)  # (B, L, text_hidden)
            emb = self.embed(t, None, B) + self.text_pool(context.mean(1))  # (B, time_dim)
        else:
            emb = self.embed(t, y, B)  # (B, time_dim)
        h = self.conv_in(x)  # (B, channels, H, W)
        skips = [h]
        for m in self.down:
            h = m(h) if isinstance(m, Downsample) else m(h, emb, context)
            skips.append(h)
        for m in self.mid:
            h = m(h, emb, context)  # (B, ch_lowest, h_lowest, w_lowest)
        for m in self.up:
            if isinstance(m, Upsample):
                h = m(h, size=tuple(skips[-1].shape[-2:]))
                continue
            s = skips.pop()
            if s.shape[-2:] != h.shape[-2:]:  # never with Upsample's exact resize; kept as a guard
                h = F.interpolate(h, size=tuple(s.shape[-2:]), mode="nearest")
            h = m(torch.cat([h, s], dim=1), emb, context)
        return self.out(h)  # (B, out_channels, H, W)
