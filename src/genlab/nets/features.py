"""The feature network's architecture (:class:`FeatureNet`), the small CNN behind the image metrics
and the perceptual loss, chosen from the image shape ``(C, H, W)`` alone: 3x3 convolutions with
ReLU, each halving the height and width (an axis already at 4 or less keeps its size) until the
map is at most 4x4, with at least three convolutions in all; widths 24, 48, 96, then 128. The map
is flattened and a linear layer gives the 128-d embedding (the features); a classifier adds ReLU and
a linear head over the classes. Batch normalization is folded into the convolutions after training.
How it is trained and cached: :mod:`genlab.feature_networks`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import DataError

FEATURE_DIM = 128
_WIDTHS = (24, 48, 96, 128)


def conv_plan(shape: tuple[int, ...]) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
    """The convolutions for images of shape ``(C, H, W)``: ``(width, (stride_h, stride_w),
    (h_out, w_out))`` per layer. Each layer halves an axis longer than 4; then stride-1 layers are
    added until there are three."""
    _check_shape(shape)
    _, h, w = shape
    plan = []
    while max(h, w) > 4 or len(plan) < 3:
        sh, sw = (2 if h > 4 else 1), (2 if w > 4 else 1)
        h, w = (h - 1) // sh + 1, (w - 1) // sw + 1  # 3x3, padding 1
        width = _WIDTHS[min(len(plan), len(_WIDTHS) - 1)]
        plan.append((width, (sh, sw), (h, w)))
    return plan


def _check_shape(shape: tuple[int, ...]) -> None:
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"feature networks take images of shape (C, H, W), got {tuple(shape)}")


class FeatureNet(nn.Module):
    """Small CNN for images of shape ``(C, H, W)`` in ``[-1, 1]``: ``features(x) -> (n, 128)``.

    With ``num_classes`` it is a classifier (``logits``, ``probs``); without, the encoder of an
    autoencoder (``kind == "autoencoder"``). ``norm=True`` puts batch normalization after each
    convolution (for training; :meth:`folded` returns the plain-convolution equivalent that is
    stored and used for features). Computes on the device and dtype of its parameters; inputs are
    moved there batch by batch and results come back on the input's device.
    """

    def __init__(
        self, shape: tuple[int, ...], num_classes: int | None = None, *, norm: bool = False
    ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.plan = conv_plan(self.shape)
        self.num_classes = int(num_classes) if num_classes else None
        self.norm = norm
        convs, norms, cin = [], [], self.shape[0]
        for width, stride, _ in self.plan:
            convs.append(nn.Conv2d(cin, width, 3, stride, 1, bias=not norm))
            norms.append(nn.BatchNorm2d(width) if norm else nn.Identity())
            cin = width
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        h, w = self.plan[-1][2]
        self.embed = nn.Linear(cin * h * w, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, self.num_classes) if self.num_classes else None

    @property
    def kind(self) -> str:
        """``"classifier"`` or ``"autoencoder"`` (the encoder of one)."""
        return "classifier" if self.head is not None else "autoencoder"

    @property
    def has_classes(self) -> bool:
        """Whether ``logits``/``probs`` (and so a classifier score) are available."""
        return self.head is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding ``(B, 128)`` of ``x`` ``(B, C, H, W)``, with autograd (training)."""
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return self.embed(x.flatten(1))

    def classify(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` from embeddings ``(B, 128)``."""
        self._require_classes()
        return self.head(F.relu(emb))

    def _require_classes(self) -> None:
        if self.head is None:
            raise DataError(
                "this feature network is an autoencoder (its data has no class labels): "
                "it has no logits, so no classifier score"
            )

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Features ``(n, 128)`` (the embedding before the head) of images ``x`` ``(n, C, H, W)``
        in ``[-1, 1]``; float, on ``x``'s device."""
        return self._batched(x, batch_size, lambda e: e)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Class logits ``(n, K)`` of images ``x`` ``(n, C, H, W)`` (classifiers only)."""
        self._require_classes()
        return self._batched(x, batch_size, self.classify)

    @torch.no_grad()
    def probs(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Class probabilities ``(n, K)``: softmax of :meth:`logits` (classifiers only)."""
        return self.logits(x, batch_size).softmax(dim=1)

    def folded(self) -> FeatureNet:
        """The same function without batch normalization (its statistics folded into the
        convolutions); the network that is stored and used for features."""
        if not self.norm:
            return self
        out = FeatureNet(self.shape, self.num_classes, norm=False).to(self._param())
        with torch.no_grad():
            for conv, bn, dst in zip(self.convs, self.norms, out.convs):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                dst.weight.copy_(conv.weight * scale[:, None, None, None])
                dst.bias.copy_(bn.bias - bn.running_mean * scale)
            out.embed.load_state_dict(self.embed.state_dict())
            if self.head is not None:
                out.head.load_state_dict(self.head.state_dict())
        return out.eval()

    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    def _batched(
        self, x: torch.Tensor, batch_size: int, then: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            want = ", ".join(map(str, self.shape))
            raise DataError(
                f"the feature network takes images of shape (n, {want}), got {tuple(x.shape)}"
            )
        p = self._param()
        was_training = self.training
        self.eval()
        try:
            if len(x) == 0:  # run one blank image for the output width, keep none
                return then(self(torch.zeros(1, *self.shape).to(p)))[:0].to(x.device)
            out = [  # channels-last batches: about 20% faster on CPU
                then(self(_channels_last(x[i : i + batch_size].to(p.device, p.dtype)))).to(x.device)
                for i in range(0, len(x), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(out)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class _Decoder(nn.Module):
    """The encoder mirrored, for training the autoencoder: ``(B, 128) -> (B, C, H, W)``.

    A linear layer back to the encoder's last map, then per encoder layer (last first) a 3x3
    transposed convolution with that layer's stride back to its input size and width (BN and ReLU
    except at the output; the same cost as the encoder). The output is added to ``mean``
    ``(1, C, H, W)``, the mean training image, and the last layer starts at zero, so the untrained
    decoder predicts the mean image and learns the rest."""

    def __init__(self, shape: tuple[int, ...], mean: torch.Tensor) -> None:
        super().__init__()
        plan = conv_plan(shape)
        widths = [width for width, _, _ in plan]
        h, w = plan[-1][2]
        self.start = (widths[-1], h, w)
        self.fc = nn.Linear(FEATURE_DIM, widths[-1] * h * w)
        ins = [shape[0]] + widths[:-1]  # input width of each encoder layer
        sizes = [tuple(shape[1:])] + [size for _, _, size in plan[:-1]]  # and its input size
        self.sizes = sizes[::-1]
        layers = [
            nn.ConvTranspose2d(cout, cin, 3, stride, 1, bias=i == 0)
            for i, (cin, cout, (_, stride, _)) in enumerate(zip(ins, widths, plan))
        ]
        self.convs = nn.ModuleList(layers[::-1])
        self.norms = nn.ModuleList([nn.BatchNorm2d(c) for c in ins[:0:-1]] + [nn.Identity()])
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)
        self.register_buffer("mean", mean.reshape(1, *shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(z)).view(len(z), *self.start)
        last = len(self.convs) - 1
        for i, (conv, norm, size) in enumerate(zip(self.convs, self.norms, self.sizes)):
            x = norm(conv(x, output_size=size))
            if i < last:
                x = F.relu(x)
        return self.mean + x
