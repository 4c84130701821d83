"""Latent diffusion (Rombach et al. 2022, "High-resolution image synthesis with latent diffusion
models"): the diffusion family trained on the latents of a frozen stage-1 autoencoder.

The model is composed, not derived: ``self.diffusion`` is a plain
:class:`~genlab.models.diffusion.model.Diffusion` over the latent shape (any process,
parameterization, weighting, sampler, classifier-free guidance), built from the diffusion fields
of this family's config; ``self.autoencoder`` is the frozen stage 1
(:mod:`genlab.models.two_stage.stage1`). The backbone follows the latent's shape
(``backbone: auto``): the U-Net for latent maps ``(C, h, w)``, the MLP for vectors ``(D,)``.

**Scale.** The diffusion model sees ``z · scale``, with ``scale = 1 / std(z)`` measured when a
fresh run starts, over every entry of the latents of the first ``scale_examples`` training
examples (Rombach et al. 2022, sec. 4.3.2 and appendix G: the "scale factor" of Stable
Diffusion, 0.18215 there), so the latents have unit variance as the processes assume (and EDM's
``sigma_data``). ``model.scale > 0`` fixes it instead. It is a buffer, ``latent_scale``, saved in
every checkpoint, so sampling never measures anything.

**Sampling** runs the diffusion sampler from noise to a latent, divides by the scale and decodes
it with the stage-1 decoder, in one call; it takes the diffusion model's options (``sampler``,
``steps``, ``schedule``, ``guidance``, the sampler's own) and labels. NFE counts the diffusion
network's evaluations. Classifier guidance is not offered: its classifier would have to see
latents.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from genlab.data.base import Batch, Dataset
from genlab.errors import ConfigError
from genlab.models.base import ModelSpec, Player, SampleOption, SampleResult
from genlab.models.diffusion.model import Diffusion, DiffusionConfig
from genlab.models.two_stage.stage1 import TwoStage
from genlab.registry import MODELS

#: options of the diffusion model that make no sense in latent space (its classifier sees x̂ of
#: the data; a trajectory would be of latents)
_NOT_OFFERED = ("classifier", "classifier_scale", "trajectory")


@dataclass
class LDMConfig(DiffusionConfig):
    """The diffusion model's fields (process, parameterization, backbone, sampler, ...) plus the
    stage 1 and the latent scale."""

    backbone: Literal["auto", "mlp", "unet"] = "auto"  # auto: unet for (C, h, w), mlp for (D,)
    autoencoder: str | None = None  # the stage-1 run (same data): continuous latents, or VQ codes
    # (then the vectors behind them)
    stage1: dict | None = None  # written when training starts: what the stage-1 run was
    scale: float = 0.0  # latents are multiplied by this (0: 1/std measured on the training data)
    scale_examples: int = 4096  # training examples the std is measured on (the first ones)


@MODELS.register(
    "ldm", help="latent diffusion: the diffusion model on a frozen autoencoder's latents"
)
class LatentDiffusion(TwoStage):
    """Diffusion in the latent space of a frozen stage 1; see the module docstring."""

    Config = LDMConfig
    latent_kind = "continuous"
    other_family = "vqgan-prior"

    def __init__(self, config: LDMConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        if config.scale < 0:
            raise ConfigError(f"model.scale must be >= 0 (0: measured), got {config.scale}")
        if config.scale_examples < 1:
            raise ConfigError(f"model.scale_examples must be >= 1, got {config.scale_examples}")
        if config.clip_denoised:
            raise ConfigError(
                "model.clip_denoised clamps to the image range [-1, 1]; latents have no such "
                "range (set it false for ldm)"
            )
        if config.coupling == "pairs":
            raise ConfigError("model.coupling=pairs pairs noise with data examples, not latents")
        shape = tuple(self.latent_spec.shape)
        backbone = config.backbone
        if backbone == "auto":
            backbone = "unet" if len(shape) == 3 else "mlp"
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(DiffusionConfig)}
        inner = DiffusionConfig(**{**fields, "backbone": backbone})
        self.diffusion = Diffusion(inner, ModelSpec("diffusion", shape, spec.num_classes))
        self.register_buffer("latent_scale", torch.tensor(config.scale or 1.0))

    def players(self) -> list[Player]:
        """The diffusion model alone (the stage 1 is frozen)."""
        return [Player("model", self.diffusion)]

    def initialize(self, dataset: Dataset) -> None:
        """The stage-1 weights, then the latent scale (measured unless ``model.scale`` is set)."""
        super().initialize(dataset)
        self.diffusion.initialize(dataset)  # a caption model measures its captions on the images
        if self.config.scale == 0:
            self.latent_scale.fill_(self.measure_scale(dataset.train[: self.config.scale_examples]))

    @torch.no_grad()
    def measure_scale(self, x: torch.Tensor, chunk: int = 512) -> float:
        """``1 / std`` of every entry of the latents of examples ``x`` (float64)."""
        z = torch.cat([self.encode_latents(part).double().cpu() for part in x.split(chunk)])
        std = float(z.std())
        if not std > 0:
            raise ConfigError(
                f"the stage-1 latents of {len(x)} training examples have std {std}: the latent "
                "scale cannot be measured (set model.scale)"
            )
        return 1.0 / std

    # --- training ---------------------------------------------------------------------------------
    def latents_of(self, x: torch.Tensor) -> torch.Tensor:
        """Examples -> scaled stage-1 latents ``(B, *latent shape)``, in ``x``'s dtype."""
        return (self.encode_latents(x) * self.latent_scale).to(x.dtype)

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """The batch's scaled latents and its condition (labels, or captions written from the
        labels and the images), then the diffusion model's own draws on them (noise, times, label
        dropout) from ``generator``."""
        y = self.diffusion.condition(batch.y, batch.x, generator)
        z = Batch(self.latents_of(batch.x), y, None, None, dict(batch.aux))
        return self.diffusion.prepare(z, generator)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The diffusion model's denoising loss on the latents."""
        if batch.t is None:  # not prepared by the trainer: batch.x are examples, not latents
            batch = self.prepare(batch, generator)
        return self.diffusion.loss(batch, generator)

    # --- sampling ---------------------------------------------------------------------------------
    def options(self, chosen=None) -> dict[str, SampleOption]:
        """The diffusion model's options (with the sampler chosen), less those of data space."""
        out = self.diffusion.options(chosen)
        return {k: v for k, v in out.items() if k not in _NOT_OFFERED}

    def check_options(self, options) -> None:
        self.diffusion.check_options({**options, "classifier": None, "classifier_scale": 1.0})

    def label_classes(self, options) -> int | None:
        return self.diffusion.label_classes(options)

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        **options: Any,
    ) -> SampleResult:
        """Noise -> latent (the diffusion sampler) -> data (the stage-1 decoder)."""
        out = self.diffusion.sample(n, labels=labels, generator=generator, **options)
        z = out.x / self.latent_scale.to(out.x.dtype)
        return SampleResult(self.decode_latents(z), out.nfe)

    def report(self, x: Any, labels: Any = None) -> dict[str, dict]:
        return {"latent_scale": {"value": float(self.latent_scale), "unit": "1/std of the latents",
                                 "better": "-"}}  # fmt: skip


__all__ = ["LDMConfig", "LatentDiffusion"]
