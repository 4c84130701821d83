"""PixelCNN: images pixel by pixel in raster order, channel by channel, with an exact likelihood.

``p(x | y) = Π_{i,j} Π_c p(x_{c,i,j} | x_{·, <(i,j)}, x_{<c, i, j}, y)``, every conditional computed
in one pass of the gated network of :mod:`genlab.nets.pixelcnn` (vertical and horizontal stacks,
no blind spot, class-conditional biases; van den Oord et al. 2016b).

**What a pixel is** (``model.output``):

- ``bernoulli``: binarized images. Training uses *dynamic binarization* (each pixel 1 with
  probability its intensity, drawn afresh every step in :meth:`prepare`); :meth:`log_prob`
  binarizes once from the generator it is given or torch's global RNG, which ``genlab eval``
  seeds, so the held-out split is scored on one fixed, seeded binarization — as the vector
  models of :mod:`.vector` do. Samples are in {-1, 1}.
- ``softmax``: ``levels`` intensity values (256: 8-bit), a categorical over all of them
  (van den Oord et al. 2016a).
- ``logistic``: the same levels, a mixture of ``components`` logistics discretized to the bins
  (Salimans et al. 2017, PixelCNN++): the mass of bin ``k`` is ``σ((x_k + δ − μ)/s) −
  σ((x_k − δ − μ)/s)`` with ``x_k = 2k/(levels − 1) − 1`` and ``δ = 1/(levels − 1)``, the edge
  bins taking the tails. It is computed in log space on whichever side of the logistic keeps it
  accurate, and from the density at the bin centre when the bin is narrower than 1e-3 scales.

Images in [-1, 1] are quantized to the nearest of ``levels`` values (data on that grid, as 8-bit
images are, passes unchanged). The likelihood is of the discrete pixels, in nats per image (bits
per dimension beside it): comparable with published figures on the same levels.

**Class conditioning**: with ``model.conditional`` (default) and labelled data, each gated layer
adds a per-class bias (van den Oord et al. 2016b, eq. 4) and ``genlab sample --label`` picks the
class. ``log_prob`` is then ``log p(x) = log Σ_y p(y) p(x | y)`` with a uniform ``p(y)``, exact
and ``K`` passes per image (``labels=`` gives ``log p(x | y)``, one pass).

**Sampling**: ``H·W`` steps (NFE), each drawing the ``C`` channels of one pixel from its
conditionals in float64; the vertical stack runs once per row and the horizontal stack only on the
columns in reach (see :mod:`genlab.nets.pixelcnn`), which draws exactly what full passes draw.

References:
    van den Oord, Kalchbrenner & Kavukcuoglu (2016a), "Pixel Recurrent Neural Networks", ICML.
    van den Oord et al. (2016b), "Conditional Image Generation with PixelCNN Decoders", NeurIPS.
    Salimans, Karpathy, Chen & Kingma (2017), "PixelCNN++", ICLR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, LogProb, ModelSpec, SampleResult
from genlab.models.shared import binarize, draw_categorical
from genlab.nets.pixelcnn import ChannelHead, GatedPixelCNN
from genlab.progress import chunks, step_range
from genlab.registry import MODELS

OUTPUTS = ("bernoulli", "softmax", "logistic")


@dataclass
class PixelCNNConfig:
    output: Literal["bernoulli", "softmax", "logistic"] = "bernoulli"  # what a pixel is
    levels: int = 256  # softmax / logistic: intensity values per channel (256: 8-bit)
    components: int = 5  # logistic: mixture components per channel
    channels: int = 64  # feature maps of both stacks
    layers: int = 7  # gated layers, the first with mask A
    kernel: int = 3  # odd kernel size of layers 2.. (vertical k/2+1 x k, horizontal 1 x k/2+1)
    first_kernel: int = 7  # odd kernel size of the first (mask A) layer
    head: int = 128  # hidden units per image channel of the per-pixel output head
    dropout: float = 0.0  # on the gated features of the horizontal stack
    conditional: bool = True  # class-conditional when the data has labels
    min_log_scale: float = -7.0  # logistic: floor of each component's log-scale


def to_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Values in [-1, 1] -> the nearest of ``levels`` integer levels ``[0, levels)`` (long)."""
    return torch.round(((x + 1) / 2).clamp(0, 1) * (levels - 1)).long()


def from_levels(k: torch.Tensor, levels: int, dtype: torch.dtype) -> torch.Tensor:
    """Integer levels -> their values in [-1, 1]."""
    return k.to(dtype) * (2.0 / (levels - 1)) - 1.0


def draw_discretized_logistic(
    mu: torch.Tensor, log_s: torch.Tensor, levels: int, generator: torch.Generator | None
) -> torch.Tensor:
    """One level per element from the logistic ``(mu, exp(log_s))`` discretized to ``levels``
    bins (the tails in the edge bins), by inversion in float64: a logistic draw rounded to the
    nearest bin centre has exactly the bins' masses."""
    u = torch.rand(mu.shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    x = mu.double().cpu() + log_s.double().cpu().exp() * (u.log() - (-u).log1p())
    return to_levels(x, levels).to(mu.device)


def discretized_logistic_log_prob(
    k: torch.Tensor, params: torch.Tensor, levels: int, min_log_scale: float = -7.0
) -> torch.Tensor:
    """``log P(k)`` for integer levels ``k`` ``(B, C, ·, ·)`` under the discretized logistic mixture
    with ``params`` ``(B, C, 3K, ·, ·)`` (logits, means, log-scales; means on the [-1, 1] scale)."""
    n = params.shape[2] // 3
    logits, mu, log_s = params[:, :, :n], params[:, :, n : 2 * n], params[:, :, 2 * n :]
    log_s = log_s.clamp(min=min_log_scale)
    inv_s = torch.exp(-log_s)
    delta = 1.0 / (levels - 1)
    x = (2.0 * delta * k.to(params.dtype) - 1.0)[:, :, None]  # the bin centre
    a = inv_s * (x + delta - mu)  # upper edge, standardized
    b = inv_s * (x - delta - mu)  # lower edge
    # interior bins: log(σ(a) − σ(b)), on the side where the logistic's tail is (σ(a) − σ(b) =
    # σ(−b) − σ(−a)); the inputs are swapped before computing, so no branch sees an inf
    flip = (a + b) > 0
    hi, lo = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = F.logsigmoid(hi), F.logsigmoid(lo)
    gap = (log_lo - log_hi).clamp(max=-1e-30)
    exact = log_hi + torch.log(-torch.expm1(gap))
    mid = 0.5 * (a + b)  # a narrow bin: density at the centre times the width
    narrow = F.logsigmoid(mid) + F.logsigmoid(-mid) + torch.log(2.0 * delta * inv_s)
    interior = torch.where(2.0 * delta * inv_s > 1e-3, exact, narrow)
    bottom = F.logsigmoid(a)  # k = 0: everything below the upper edge
    top = F.logsigmoid(-b)  # k = levels - 1: everything above the lower edge
    kk = k[:, :, None]
    comp = torch.where(kk == 0, bottom, torch.where(kk == levels - 1, top, interior))
    return torch.logsumexp(F.log_softmax(logits, dim=2) + comp, dim=2)


@MODELS.register(
    "pixelcnn", help="gated PixelCNN: raster-order pixels, no blind spot (van den Oord 2016)"
)
class PixelCNN(GenerativeModel):
    """Gated PixelCNN over binarized or ``levels``-valued images (see the module docstring)."""

    Config: ClassVar[type] = PixelCNNConfig
    conditional = True  # on the data's labels, when it has them and model.conditional
    data_kinds = ("images",)

    def __init__(self, config: PixelCNNConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        c = config
        if len(spec.shape) != 3:
            raise ConfigError(
                f"pixelcnn models images (C, H, W), got examples of shape {spec.shape}"
            )
        if c.output not in OUTPUTS:
            raise ConfigError(f"model.output must be one of {', '.join(OUTPUTS)}, got {c.output!r}")
        for name in ("kernel", "first_kernel"):
            k = getattr(c, name)
            if k < 3 or k % 2 == 0:
                raise ConfigError(f"model.{name} must be odd and at least 3, got {k}")
        if min(c.layers, c.channels, c.head, c.components) < 1:
            raise ConfigError("model.layers, channels, head and components must be at least 1")
        if c.output != "bernoulli" and not 2 <= c.levels <= 65536:
            raise ConfigError(f"model.levels must be in [2, 65536], got {c.levels}")
        self.classes = spec.num_classes if c.conditional else None
        self.n_params = {"bernoulli": 1, "softmax": c.levels, "logistic": 3 * c.components}[
            c.output
        ]
        chans = spec.shape[0]
        self.net = GatedPixelCNN(
            chans, c.channels, c.layers, c.kernel, c.first_kernel, self.classes, c.dropout
        )
        self.head = ChannelHead(c.channels, chans, c.head, self.n_params)

    def label_classes(self, options) -> int | None:
        return self.classes

    # --- data -----------------------------------------------------------------------------------
    @property
    def _levels(self) -> int:
        return 2 if self.config.output == "bernoulli" else self.config.levels

    def targets(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Images in [-1, 1] -> integer pixel values in ``[0, levels)`` (long): binarized with
        probability the intensity (Bernoulli), else quantized to the nearest level."""
        x01 = ((x + 1) / 2).clamp(0, 1)
        if self.config.output == "bernoulli":
            return binarize(x01, generator).long()
        return to_levels(x, self.config.levels)

    def _inputs(self, k: torch.Tensor) -> torch.Tensor:
        """Integer pixel values -> the network's inputs in [-1, 1]."""
        return from_levels(k, self._levels, next(self.parameters()).dtype)

    def observed(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Real images as the model sees them: binarized or quantized, in [-1, 1]."""
        k = self.targets(x.to(torch.float64), generator)
        return from_levels(k, self._levels, torch.float64).to(x.dtype)

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """Dynamic binarization (Bernoulli) or quantization of the batch, in ``aux["pixels"]``."""
        return Batch(batch.x, batch.y, batch.noise, batch.t,
                     {**batch.aux, "pixels": self.targets(batch.x, generator)})  # fmt: skip

    # --- likelihood -----------------------------------------------------------------------------
    def params(self, k: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Integer images ``(B, C, H, W)`` -> every conditional's parameters ``(B, C, P, H, W)``."""
        x = self._inputs(k)
        return self.head(self.net(x, y), x)

    def _log_conditionals(self, k: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``log p`` of each pixel value ``(B, C, ·, ·)`` given the parameters of its conditional."""
        out = self.config.output
        if out == "bernoulli":
            return -F.binary_cross_entropy_with_logits(
                params[:, :, 0], k.to(params.dtype), reduction="none"
            )
        if out == "softmax":
            return F.log_softmax(params, dim=2).gather(2, k[:, :, None]).squeeze(2)
        return discretized_logistic_log_prob(
            k, params, self.config.levels, self.config.min_log_scale
        )

    def log_prob_tensor(self, k: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``log p(k | y)`` ``(B,)`` in nats for integer images ``k``, differentiable."""
        return self._log_conditionals(k, self.params(k, y)).flatten(1).sum(1)

    def _check_labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if self.classes is None:
            return None
        if y is None:
            raise ConfigError(
                "this pixelcnn model is class-conditional and the batch has no labels (train "
                "with model.conditional=false on unlabelled data)"
            )
        return y

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats per image."""
        if "pixels" not in batch.aux:  # not prepared yet
            batch = self.prepare(batch, generator)
        y = self._check_labels(batch.y)
        return -self.log_prob_tensor(batch.aux["pixels"], y).mean()

    @torch.no_grad()
    def log_prob(
        self,
        x: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 256,
    ) -> LogProb:
        """Exact ``log p(x)`` in nats of the discrete (binarized or quantized) images; a
        class-conditional model gives ``log p(x | labels)``, or without labels the marginal over
        its classes under a uniform prior."""
        k = self.targets(x.to(next(self.parameters()).device), generator)
        parts = []
        for i, chunk in enumerate(chunks(k, batch_size)):
            if self.classes is None:
                parts.append(self.log_prob_tensor(chunk, None))
            elif labels is not None:
                y = torch.as_tensor(labels, device=chunk.device).long().expand(len(k))
                parts.append(
                    self.log_prob_tensor(chunk, y[i * batch_size : i * batch_size + len(chunk)])
                )
            else:
                per = [
                    self.log_prob_tensor(chunk, torch.full((len(chunk),), c, device=chunk.device))
                    for c in range(self.classes)
                ]
                parts.append(torch.logsumexp(torch.stack(per), 0) - math.log(self.classes))
        what = {"bernoulli": "binarized (each pixel 1 with probability its intensity, seeded)",
                "softmax": f"{self.config.levels} levels, categorical",
                "logistic": f"{self.config.levels} levels, discretized logistic mixture"}  # fmt: skip
        note = f"chain rule over pixels; {what[self.config.output]}"
        nfe = 1
        if self.classes is not None and labels is None:
            note += f"; marginal over {self.classes} classes, uniform prior"
            nfe = self.classes
        return LogProb(torch.cat(parts), "exact", nfe=nfe, note=note)

    # --- sampling -------------------------------------------------------------------------------
    def _draw(self, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One integer value per row from the conditional with ``params`` ``(n, P)``, in float64."""
        params = params.double().cpu()
        out = self.config.output
        if out == "bernoulli":
            u = torch.rand(len(params), generator=generator, dtype=torch.float64)
            return (u < torch.sigmoid(params[:, 0])).long()
        if out == "softmax":
            return draw_categorical(F.softmax(params, dim=1), generator)
        n = params.shape[1] // 3
        logits, mu = params[:, :n], params[:, n : 2 * n]
        log_s = params[:, 2 * n :].clamp(min=self.config.min_log_scale)
        comp = draw_categorical(F.softmax(logits, dim=1), generator)[:, None]
        return draw_discretized_logistic(
            mu.gather(1, comp)[:, 0], log_s.gather(1, comp)[:, 0], self.config.levels, generator
        )

    def _sample(
        self, n: int, *, labels: torch.Tensor | None, generator: torch.Generator | None
    ) -> SampleResult:
        """Pixels in raster order, channels in order: ``H·W`` steps. The vertical stack runs once
        per row on the rows in reach, the horizontal stack once per pixel on the columns in
        reach (exactly the conditionals of a full pass)."""
        chans, rows, cols = self.spec.shape
        dev = self.device
        k = torch.zeros((n, chans, rows, cols), dtype=torch.long, device=dev)
        x = self._inputs(k)
        reach = self.net.reach
        for i in step_range(rows):
            top = max(0, i - reach)
            links = [link[:, :, -1:] for link in self.net.links(x[:, :, top : i + 1], labels)]
            for j in range(cols):
                left = max(0, j - reach)
                h = self.net.horizontal(
                    x[:, :, i : i + 1, left : j + 1], [link[..., left : j + 1] for link in links]
                )[..., -1:]
                for c in range(chans):
                    params = self.head(h, x[:, :, i : i + 1, j : j + 1])[:, c, :, 0, 0]
                    k[:, c, i, j] = self._draw(params, generator).to(dev)
                    x[:, c, i, j] = self._inputs(k[:, c, i, j])
        return SampleResult(x, rows * cols)


__all__ = [
    "PixelCNN", "PixelCNNConfig", "discretized_logistic_log_prob", "draw_discretized_logistic",
    "from_levels", "to_levels",
]  # fmt: skip
