"""A noise-aware classifier ``p(y | x_t, t)`` for classifier guidance (Dhariwal & Nichol 2021).

It is trained on noisy data from any registered process (cross-entropy on ``x_t = s (x_0 + σ ε)``)
and used at sampling time through :meth:`NoiseClassifier.grad_log_prob_y`, which takes the EDM
state ``(x̂, σ)`` of whichever diffusion model it guides: the classifier maps σ to its own time, so
the two need not share a process.

    genlab train configs/classifier-digits.yaml --out runs/clf
    genlab sample runs/edm-digits --label 3 --classifier runs/clf --classifier-scale 2 --out 3.png
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, ModelSpec
from genlab.models.diffusion.model import build_backbone
from genlab.models.diffusion.process import make_process
from genlab.registry import MODELS


@dataclass
class NoiseClassifierConfig:
    process: Literal["vp-linear", "vp-cosine", "ve", "edm", "linear"] = "vp-linear"
    sigma_min: float | None = None
    sigma_max: float | None = None
    time_sampling: Literal["default", "uniform", "logit-normal", "log-normal"] = "default"
    backbone: Literal["mlp", "unet"] = "mlp"
    hidden: int = 256  # mlp
    depth: int = 3  # mlp
    time_dim: int = 32
    channels: int = 16  # unet (an encoder-decoder whose output is averaged per class channel)
    channel_mults: list[int] = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = 1
    attention: bool = False
    dropout: float = 0.0
    eval_sigmas: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0, 2.0])  # accuracy at


@MODELS.register(
    "noise-classifier", help="noise-aware classifier p(y | x_t) for classifier guidance"
)
class NoiseClassifier(GenerativeModel):
    Config = NoiseClassifierConfig

    def __init__(self, config: NoiseClassifierConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        if not spec.num_classes:
            raise ConfigError("a noise classifier needs labelled data (the dataset has no labels)")
        self.process = make_process(config.process, config.sigma_min, config.sigma_max)
        # K logits (the U-Net's K output channels are averaged over the image), no class input
        self.net: nn.Module = build_backbone(config, spec, out=spec.num_classes)

    def logits(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K)`` at ``x`` (x space) and times ``t`` ``(B,)``."""
        out = self.net(x, self.process.net_time(t).to(x.dtype), None)
        return out.mean(dim=(2, 3)) if out.dim() == 4 else out

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        x0 = batch.x
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        t = self.process.sample_t(len(x0), generator, x0, self.config.time_sampling)
        return Batch(x0, batch.y, eps, t.clamp(max=self.process.t_hi), batch.aux)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        if batch.y is None:
            raise ConfigError("a noise classifier trains on labelled data")
        if batch.t is None:
            batch = self.prepare(batch, generator)
        t = batch.t.reshape(-1, *([1] * (batch.x.dim() - 1)))
        x = self.process.s(t) * batch.x + self.process.s_sigma(t) * batch.noise
        return F.cross_entropy(self.logits(x, batch.t), batch.y)

    def grad_log_prob_y(self, xhat: torch.Tensor, sigma: float, y: torch.Tensor) -> torch.Tensor:
        """``∇_x̂ log p(y | x̂; σ)`` for the EDM state ``x̂ = x / s`` at noise level σ."""
        pr = self.process
        t = float(pr.t_of_sigma(min(max(sigma, pr.sigma_min), pr.sigma_max)))
        s = float(pr.s(t))
        with torch.enable_grad():
            xh = xhat.detach().requires_grad_(True)
            tt = torch.full((len(xh),), t, dtype=xh.dtype, device=xh.device)
            logp = F.log_softmax(self.logits(xh * s, tt), dim=-1)
            (grad,) = torch.autograd.grad(logp.gather(1, y[:, None]).sum(), xh)
        return grad

    @torch.no_grad()
    def accuracy(self, x0: torch.Tensor, y: torch.Tensor, sigma: float, generator=None) -> float:
        """Accuracy on ``x0`` noised to σ (through the process's own time)."""
        pr = self.process
        t = float(pr.t_of_sigma(min(max(sigma, pr.sigma_min), pr.sigma_max)))
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        x = float(pr.s(t)) * (x0 + float(pr.sigma(t)) * eps)
        tt = torch.full((len(x0),), t, dtype=x0.dtype, device=x0.device)
        return float((self.logits(x, tt).argmax(-1) == y).double().mean())

    can_sample = False  # it guides a diffusion model: genlab sample RUN --classifier THIS_RUN

    def report(self, x, labels=None) -> dict[str, dict[str, Any]]:
        """What ``genlab eval`` reports for a classifier: held-out accuracy at a few σ."""
        if labels is None or len(x) == 0:
            raise ConfigError("evaluating a classifier needs labelled held-out examples")
        x, y = x.to(self.device), labels.to(self.device)
        out = {}
        for sig in self.config.eval_sigmas:
            acc = self.accuracy(x, y, sig, torch.Generator().manual_seed(0))
            out[f"accuracy@σ={sig:g}"] = {
                "value": acc, "unit": "fraction", "better": "higher", "kind": "estimate",
                "n": len(x), "help": f"held-out accuracy on data noised to σ = {sig:g}",
            }  # fmt: skip
        return out
