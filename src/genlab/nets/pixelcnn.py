"""The gated PixelCNN network: vertical and horizontal stacks with no blind spot (van den Oord et al.
2016b), and an output head autoregressive over the channels of a pixel.

**Masked convolutions by shifting.** A mask-A convolution sees only the pixels strictly before the
current one in raster order; mask B also sees the current position (of features that themselves
depend only on earlier pixels). Here both are plain convolutions on padded inputs, which computes
the same thing as a masked ``k × k`` kernel without multiplying by zeros:

- the **vertical stack** ``V`` sees whole rows above: in layer 1 (mask A) a ``(k/2) × k`` kernel
  over the rows ``i − k/2 … i − 1``; in later layers (mask B) a ``(k/2 + 1) × k`` kernel over the
  rows ``i − k/2 … i`` of the layer below, which hold only rows ``< i``. So ``V`` at row ``i`` never
  depends on row ``i`` or below.
- the **horizontal stack** ``H`` sees the current row to the left: in layer 1 a ``1 × (k/2)`` kernel
  over the columns ``j − k/2 … j − 1``, later a ``1 × (k/2 + 1)`` kernel over ``j − k/2 … j``; each
  layer adds a 1×1 convolution of ``V``'s pre-activation at the same position (a *link*: rows
  above, every column in reach) and, after the gate, a residual connection.

Together ``H`` at ``(i, j)`` depends on every earlier pixel in its reach, including those above
and to the right that the original PixelCNN's masked 3×3 stack cannot see (its "blind spot",
van den Oord et al. 2016b, fig. 1); a test checks the exact dependency set by autograd. Each
stack uses the gated activation ``tanh(W_f ∗ x + b_f(y)) ⊙ σ(W_g ∗ x + b_g(y))`` with a
class-dependent bias ``b(y)`` (class conditioning, eq. 4 of the paper).

**Channels** (an RGB image: R, then G given R, then B given R and G). The stacks see only earlier
*pixels*, all channels; the head — a per-pixel two-layer MLP, as PixelCNN's 1×1 output
convolutions — takes the stack's features and the current pixel's values, with MADE-style masks so
that the output for channel ``c`` sees the values of channels ``< c`` only.

**Sampling fast path.** ``V`` at row ``i`` depends only on rows ``< i``, which are fixed while row
``i`` is drawn: :meth:`GatedPixelCNN.links` computes every layer's link for row ``i`` once, on the
``reach`` rows above (exact: no feature in use sees the crop's zero padding), and each pixel then
runs only the horizontal stack on the ``reach`` columns to its left
(:meth:`GatedPixelCNN.horizontal`). A test checks that it draws the same images as full passes.

Reference:
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016b), "Conditional
    Image Generation with PixelCNN Decoders", NeurIPS (gated blocks, vertical/horizontal stacks,
    conditioning). van den Oord, Kalchbrenner & Kavukcuoglu (2016a), "Pixel Recurrent Neural
    Networks", ICML (masks A and B, channel ordering).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nets.made import MaskedLinear


def _gate(pre: torch.Tensor) -> torch.Tensor:
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer of both stacks (mask A when ``first``, mask B otherwise)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel: int,
        first: bool,
        classes: int | None,
        dropout: float,
    ) -> None:
        super().__init__()
        self.p, self.first = kernel // 2, first
        rows = self.p if first else self.p + 1
        self.v = nn.Conv2d(in_channels, 2 * channels, (rows, kernel))
        self.h = nn.Conv2d(in_channels, 2 * channels, (1, rows))
        self.v2h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.embed = None
        if classes is not None:  # per-class biases of both stacks' pre-activations, from zero
            self.embed = nn.Embedding(classes, 4 * channels)
            nn.init.zeros_(self.embed.weight)

    def _bias(self, y: torch.Tensor | None) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        if self.embed is None or y is None:
            return 0.0, 0.0
        bv, bh = self.embed(y)[:, :, None, None].chunk(2, dim=1)
        return bv, bh

    def vertical(
        self, v: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, ·, R, W)`` -> the gated vertical output and the link to the horizontal stack."""
        p, rows = self.p, v.shape[2]
        pre = self.v(F.pad(v, (p, p, p, 0)))[:, :, :rows]  # mask A: one row too many, cut
        bv, bh = self._bias(y)
        pre = pre + bv
        return _gate(pre), self.v2h(pre) + bh

    def horizontal(self, h: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        """``(B, ·, R, W)`` and the link -> the layer's horizontal output."""
        cols = h.shape[3]
        pre = self.h(F.pad(h, (self.p, 0, 0, 0)))[:, :, :, :cols] + link
        out = self.out(self.dropout(_gate(pre)))
        return out if self.first else h + out


class GatedPixelCNN(nn.Module):
    """``(B, C, H, W)`` inputs (and labels) -> ``(B, channels, H, W)`` features, the features at
    ``(i, j)`` depending only on the pixels before ``(i, j)`` in raster order."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        layers: int,
        kernel: int = 3,
        first_kernel: int = 7,
        classes: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GatedLayer(in_channels if i == 0 else channels, channels,
                       first_kernel if i == 0 else kernel, i == 0, classes, dropout)
            for i in range(layers)
        )  # fmt: skip
        #: rows above (and columns to the left) that a feature can depend on
        self.reach = first_kernel // 2 + (layers - 1) * (kernel // 2)

    def links(self, x: torch.Tensor, y: torch.Tensor | None) -> list[torch.Tensor]:
        """The vertical stack: each layer's link to the horizontal stack, ``(B, 2·channels, R, W)``."""
        out, v = [], x
        for layer in self.layers:
            v, link = layer.vertical(v, y)
            out.append(link)
        return out

    def horizontal(self, x: torch.Tensor, links: list[torch.Tensor]) -> torch.Tensor:
        h = x
        for layer, link in zip(self.layers, links, strict=True):
            h = layer.horizontal(h, link)
        return h

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.horizontal(x, self.links(x, y))


class ChannelHead(nn.Module):
    """Per pixel: features ``(B, F, ·, ·)`` and the pixel's own values ``(B, C, ·, ·)`` ->
    ``(B, C, P, ·, ·)`` parameters, those of channel ``c`` seeing the values of channels ``< c``
    only (a two-layer masked MLP; hidden units in ``C`` groups of ``hidden``)."""

    def __init__(self, features: int, channels: int, hidden: int, n_params: int) -> None:
        super().__init__()
        self.c, self.p = channels, n_params
        self.l1 = MaskedLinear(features + channels, channels * hidden)
        self.l2 = MaskedLinear(channels * hidden, channels * n_params)
        group_in = torch.arange(channels).repeat_interleave(hidden)  # hidden unit -> channel
        seen = torch.cat([torch.full((features,), -1), torch.arange(channels)])  # -1: features
        self.l1.mask.copy_((seen[None, :] < group_in[:, None]).float())
        group_out = torch.arange(channels).repeat_interleave(n_params)
        self.l2.mask.copy_((group_in[None, :] == group_out[:, None]).float())

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([F.relu(h), x], dim=1).movedim(1, -1)  # (B, ·, ·, F + C)
        out = self.l2(F.relu(self.l1(z)))  # (B, ·, ·, C·P)
        b, rows, cols = out.shape[:3]
        return out.view(b, rows, cols, self.c, self.p).permute(0, 3, 4, 1, 2)


__all__ = ["ChannelHead", "GatedLayer", "GatedPixelCNN"]
