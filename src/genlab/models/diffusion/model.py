"""The continuous diffusion family: one model class for DDPM, DDIM, score SDEs (VE/VP), EDM, flow
matching and rectified flow.

A model is a process (:mod:`.process`), a parameterization of the network's output
(:mod:`.parameterization`), a weighting of the denoising loss, and a backbone. Sampling and
likelihood go through the denoiser ``D(x̂; σ)`` only, so every sampler (:mod:`.samplers`) and the
probability-flow-ODE likelihood (:mod:`genlab.models.diffusion.likelihood`) work with every model.

The loss is ``E_{t, x_0, ε} λ(σ) ‖D(x̂; σ) − x_0‖²``, computed on the network output as
``λ b² ‖F − F*‖²`` (``b = ∂D/∂F``); ``weighting="native"`` is each parameterization's own MSE
(DDPM's simple ε loss, EDM's loss, flow matching's velocity loss).

Classifier-free guidance (Ho & Salimans 2022): with ``label_dropout > 0`` labels are replaced by a
null label during training; sampling with ``guidance = w`` uses ``D_u + w (D_c − D_u)``.
Classifier guidance (Dhariwal & Nichol 2021) adds ``scale · σ² ∇_x̂ log p(y | x̂, σ)`` to ``D``
from a :class:`~genlab.models.diffusion.classifier.NoiseClassifier`.

Text conditioning (``conditioning: caption``, the U-Net only): the condition is a caption's token
sequence instead of a label. Captions are written from the labels and the images in
:meth:`Diffusion.prepare` (:mod:`.captions`: "a thin seven", "the digit 3, bold"); the U-Net
cross-attends to a text encoder trained with it; dropped captions are all padding, the null
condition of classifier-free guidance. Sampling takes ``prompt`` (any caption), or labels, which
become captions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.base import (
    FROM_CONFIG,
    GenerativeModel,
    LogProb,
    ModelSpec,
    SampleOption,
    SampleResult,
)
from genlab.models.diffusion import captions as C
from genlab.models.diffusion import parameterization as P
from genlab.models.diffusion.likelihood import ode_log_prob
from genlab.models.diffusion.ot import couple
from genlab.models.diffusion.process import make_process
from genlab.models.diffusion.samplers import (
    probability_flow,
    run_sampler,
    sampler_options,
    sigma_schedule,
)
from genlab.registry import MODELS, NETS, SAMPLERS

ProcessName = Literal["vp-linear", "vp-cosine", "ve", "edm", "linear"]
ParamName = Literal["eps", "x0", "v", "score", "velocity", "edm"]
WeightName = Literal["native", "eps", "x0", "v", "velocity", "edm", "min-snr", "likelihood"]


@dataclass
class DiffusionConfig:
    process: ProcessName = "vp-linear"  # noise process x_t = s(t)(x0 + σ(t) ε)
    parameterization: ParamName = "eps"  # what the network predicts
    weighting: WeightName = "native"  # λ(σ) of the denoising loss ("native": the param's MSE)
    time_sampling: Literal["default", "uniform", "logit-normal", "log-normal"] = "default"
    sigma_min: float | None = None  # VE / EDM σ range (process defaults when unset)
    sigma_max: float | None = None
    sigma_data: float = 0.5  # data std assumed by EDM preconditioning / weighting
    coupling: Literal["independent", "ot", "pairs"] = "independent"  # noise-data pairing
    label_dropout: float = 0.0  # classifier-free guidance: P(label -> null) in training
    guidance: float = 1.0  # default CFG scale at sampling (1: plain conditional)
    conditioning: Literal["label", "caption"] = "label"  # caption: text from the labels (unet)
    text_hidden: int = 64  # caption: the text encoder's width
    text_depth: int = 2  # caption: the text encoder's blocks
    backbone: Literal["mlp", "unet"] = "mlp"
    hidden: int = 256  # mlp: hidden width
    depth: int = 4  # mlp: hidden layers
    time_dim: int = 32  # size of the time (and class) embedding
    channels: int = 32  # unet: base channels
    channel_mults: list[int] = field(default_factory=lambda: [1, 2])  # unet: per resolution
    num_res_blocks: int = 1  # unet
    attention: bool = True  # unet: self-attention at the lowest resolution
    dropout: float = 0.0  # unet
    levels: int = 256  # images: intensity levels, for the dequantized likelihood (17 for digits)
    clip_denoised: bool = False  # sampling: clamp D to the data range [-1, 1] (images; diffusers'
    # clip_sample), with ε̂ recomputed from it
    sampler: str = "heun"  # default sampler (any registered sampler)
    steps: int = 18  # default number of steps
    schedule: Literal["default", "uniform", "karras", "log-snr"] = "default"  # σ grid


DEFAULT_SCHEDULE = {"edm": "karras", "ve": "log-snr"}  # others: uniform in t


def build_backbone(
    c,
    spec: ModelSpec,
    *,
    out: int | None = None,
    num_classes: int | None = None,
    text: bool = False,
) -> nn.Module:
    """The network a diffusion-family config names (``backbone``: ``mlp`` for points, ``unet`` for
    images) with ``out`` outputs per example (channels for the U-Net; default: the data's) and a
    class embedding when ``num_classes`` is set, or (``text``) a text encoder over captions."""
    if text and c.backbone != "unet":
        raise ConfigError(
            "model.conditioning=caption cross-attends from the U-Net to the captions' tokens: it "
            f"needs model.backbone=unet (images), not {c.backbone}"
        )
    if c.backbone == "mlp":
        if len(spec.shape) != 1:
            raise ConfigError(
                f"model.backbone=mlp takes points (N, d); data has examples of shape "
                f"{spec.shape} (use model.backbone=unet for images)"
            )
        return NETS.get("mlp")(
            dim=spec.shape[0], out_dim=out, hidden=c.hidden, depth=c.depth, time_dim=c.time_dim,
            num_classes=num_classes,
        )  # fmt: skip
    if len(spec.shape) != 3:
        raise ConfigError(f"model.backbone=unet takes images (N, C, H, W), got {spec.shape}")
    return NETS.get("unet")(
        shape=tuple(spec.shape), out_channels=out, channels=c.channels,
        channel_mults=tuple(c.channel_mults), num_res_blocks=c.num_res_blocks,
        attention=c.attention, time_dim=c.time_dim, num_classes=num_classes, dropout=c.dropout,
        **({"text_tokens": C.VOCAB, "text_length": C.LENGTH, "text_hidden": c.text_hidden,
            "text_depth": c.text_depth} if text else {}),
    )  # fmt: skip


@MODELS.register(
    "diffusion", help="continuous diffusion: DDPM/DDIM, VE/VP SDEs, EDM, flow matching"
)
class Diffusion(GenerativeModel):
    """One continuous diffusion model; see the module docstring."""

    Config = DiffusionConfig
    conditional = True  # on the data's labels, when it has them

    def __init__(self, config: DiffusionConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        c = config
        self.process = make_process(c.process, c.sigma_min, c.sigma_max)
        if not 0 <= c.label_dropout < 1:
            raise ConfigError(f"model.label_dropout must be in [0, 1), got {c.label_dropout}")
        if not c.sigma_data > 0:
            raise ConfigError(f"model.sigma_data must be positive, got {c.sigma_data}")
        if c.coupling == "ot" and len(spec.shape) != 1:
            raise ConfigError("model.coupling=ot needs points (N, d)")
        text = c.conditioning == "caption"
        if text and spec.num_classes is None:
            raise ConfigError(
                "model.conditioning=caption writes captions from the data's labels; this data "
                "has none (use labelled images, or model.conditioning=label)"
            )
        self.captioner = C.Captioner(spec.num_classes) if text else None
        self.net: nn.Module = build_backbone(c, spec, num_classes=spec.num_classes, text=text)

    def initialize(self, dataset) -> None:
        """A caption model measures its captions' stroke-weight terciles on the training images
        and keeps the class names."""
        if self.captioner is not None:
            self.captioner.fit(dataset.train, dataset.labels_train, dataset.meta.get("classes"))

    # --- the network as a denoiser -------------------------------------------------------------
    def forward_net(self, x: torch.Tensor, c: P.Coefs, y: torch.Tensor | None) -> torch.Tensor:
        """The raw network output ``F`` at ``x`` (x space) and the coefficients ``c``."""
        param, sd = self.config.parameterization, self.config.sigma_data
        x_in, t_in = P.net_input(param, x, c, self.process, sd)
        if not isinstance(t_in, torch.Tensor):
            t_in = torch.full((x.shape[0],), t_in, dtype=x.dtype, device=x.device)
        return self.net(x_in, t_in.reshape(-1).to(x.dtype), y)

    def denoiser(
        self,
        y: torch.Tensor | None = None,
        guidance: float | None = None,
        classifier: Any = None,
        classifier_scale: float = 1.0,
    ) -> Denoiser:
        """The callable ``(x̂, σ) -> (D, ε̂)`` that samplers use (with guidance applied). A
        ``classifier`` that is not a noise classifier of this model's examples is a
        :class:`ConfigError`, before any sampling."""
        if classifier is not None:
            if not hasattr(classifier, "grad_log_prob_y"):
                raise ConfigError(
                    "classifier guidance needs a noise-classifier run "
                    "(configs/classifier-digits.yaml trains one); got a "
                    f"{getattr(classifier, 'family', None) or type(classifier).__name__} model"
                )
            theirs = tuple(classifier.spec.shape)
            if theirs != tuple(self.spec.shape):
                raise ConfigError(
                    f"the classifier was trained on examples of shape {theirs}; this model's "
                    f"are {tuple(self.spec.shape)}"
                )
        g = self.config.guidance if guidance is None else guidance
        return Denoiser(self, y, g, classifier, classifier_scale)

    # --- training -------------------------------------------------------------------------------
    @property
    def null_label(self) -> int | None:
        """The null condition of classifier-free guidance: label ``num_classes``, or (captions)
        token 0 everywhere, the empty caption."""
        return C.PAD if self.captioner is not None else self.spec.num_classes

    def condition(
        self,
        labels: torch.Tensor | None,
        x: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | None:
        """What the network is conditioned on: the labels, or for a caption model the tokens of
        captions written from them (with stroke words from images ``x`` when given)."""
        if self.captioner is None or labels is None:
            return labels
        return self.captioner.tokens(labels, x, generator)

    @property
    def prepares_batches(self) -> bool:  # the OT assignment is worth running off the hot path
        return self.config.coupling == "ot"

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """All the randomness of the objective: the noise (paired with the data independently, by
        minibatch OT, or given by the data for reflow), the times and the label dropout."""
        x0, c = batch.x, self.config
        kw = {"generator": generator, "dtype": x0.dtype, "device": x0.device}
        y = batch.y
        if y is not None and y.dim() == 1 and self.captioner is not None:  # labels -> captions
            y = self.condition(y, x0, generator)  # first: latent diffusion draws them first too
        if c.coupling == "pairs":
            if batch.noise is None:
                raise ConfigError(
                    "model.coupling=pairs needs (noise, sample) pairs: data.name=pairs with a "
                    "file written by `genlab reflow`"
                )
            eps = batch.noise
        else:
            eps = torch.randn(x0.shape, **kw)
            eps, x0 = couple(eps, x0, c.coupling)
        t = self.process.sample_t(x0.shape[0], generator, x0, c.time_sampling)
        if c.parameterization == "edm" or (
            self.process.name == "linear" and c.parameterization != "velocity"
        ):
            t = t.clamp(max=self.process.t_hi)  # keep σ finite where the network sees x̂ or σ
        aux = dict(batch.aux)
        if getattr(c, "sigma", 0.0) > 0:  # flow matching's Gaussian path width (torchcfm's σ)
            aux["path_noise"] = torch.randn(x0.shape, **kw)
        if y is not None and c.label_dropout > 0:
            drop = torch.rand(y.shape[:1], **{**kw, "dtype": torch.float32}) < c.label_dropout
            drop = drop.to(y.device).reshape(-1, *([1] * (y.dim() - 1)))
            y = torch.where(drop, torch.full_like(y, self.null_label), y)
        return Batch(x0, y, eps, t, aux)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        if batch.t is None:  # not prepared by the trainer
            batch = self.prepare(batch, generator)
        cfg, pr = self.config, self.process
        x0, eps = batch.x, batch.noise
        t = batch.t.reshape(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ...) to broadcast
        c = P.Coefs(pr, t)
        x = c.s * x0 + pr.s_sigma(t) * eps
        if "path_noise" in batch.aux:
            x = x + self.config.sigma * batch.aux["path_noise"]
        f = self.forward_net(x, c, batch.y)
        tgt = P.target(cfg.parameterization, x0, eps, c, cfg.sigma_data)
        err = (f - tgt) ** 2
        if cfg.weighting != "native":
            b = P.gain(cfg.parameterization, c, cfg.sigma_data)
            err = err * (P.weight(cfg.weighting, c, cfg.sigma_data) * b**2)
        return err.mean()

    # --- sampling -------------------------------------------------------------------------------
    def sigmas(self, steps: int | None = None, schedule: str | None = None, **kw) -> list[float]:
        """The default σ grid of ``steps`` steps (ending at 0)."""
        name = schedule or self.config.schedule
        if name == "default":
            name = DEFAULT_SCHEDULE.get(self.process.name, "uniform")
        return sigma_schedule(
            name, self.config.steps if steps is None else steps, self.process, **kw
        )

    def ode_sigmas(self, steps: int | None = None, schedule: str | None = None) -> list[float]:
        """The grid's positive σ from σ_max down to σ_min (appended if the grid stops above it):
        the interval of the ODE between noise and (barely noisy) data, without the final
        denoising step. :meth:`encode` runs it backwards."""
        grid = self.sigmas(steps, schedule)[:-1]
        if grid[-1] > self.process.sigma_min * (1 + 1e-9):
            grid.append(self.process.sigma_min)
        return grid

    sample_options = (
        SampleOption("sampler", "a registered sampler (`genlab list`)", str, FROM_CONFIG),
        SampleOption("steps", "sampling steps (NFE depends on the sampler)", int, FROM_CONFIG),
        SampleOption("schedule", "σ grid: default, uniform, karras, log-snr", str, FROM_CONFIG),
        SampleOption("guidance", "classifier-free guidance scale w (1: none)", float, FROM_CONFIG),
        SampleOption("classifier", "a NoiseClassifier for classifier guidance", None),
        SampleOption("classifier_scale", "classifier guidance scale", float, 1.0),
        SampleOption("noise", "standard-normal starting noise (n, *shape)", None),
        SampleOption("sigmas", "an explicit σ grid (overrides steps and schedule)", None),
        SampleOption("trajectory", "keep the whole path (steps + 1, n, *shape)", None, False),
        SampleOption("dtype", "the sampling dtype (default: the weights')", None),
        SampleOption("prompt", "a caption to draw (models with model.conditioning=caption)", str),
    )

    def options(self, chosen=None) -> dict[str, SampleOption]:
        """The declared options plus those of the sampler chosen (``eta`` for ``ddim``, ...). The
        config's guidance is the default only for a class-conditional model (a recipe with
        guidance trained on unlabelled data samples without it)."""
        out = super().options(chosen)
        if self.spec.num_classes is None:
            out["guidance"] = dataclasses.replace(out["guidance"], default=1.0)
        name = (chosen or {}).get("sampler") or self.config.sampler
        for key, default in sampler_options(name).items():
            out[key] = SampleOption(key, f"{name} option", type(default), default)
        return out

    def check_options(self, options) -> None:
        if options["sigmas"] is None:  # builds the grid: checks steps and the schedule's name
            self.sigmas(options["steps"], options["schedule"])
        if options["prompt"] is not None:
            if self.captioner is None:
                raise ConfigError(
                    "prompt: this model is not text-conditioned (train it with "
                    "model.conditioning=caption); give labels instead"
                )
            C.tokenize(options["prompt"])  # refuses unknown characters, too long
        if options["classifier"] is not None and self.captioner is not None:
            raise ConfigError("classifier guidance reads labels; this model reads captions")
        if options["guidance"] != 1.0 and self.spec.num_classes is None:
            raise ConfigError(
                "classifier-free guidance needs a class-conditional model trained with "
                "model.label_dropout > 0; this one has no classes"
            )

    def label_classes(self, options) -> int | None:
        """The model's classes, or those of the classifier guiding an unconditional model."""
        clf = options.get("classifier")
        if options.get("prompt") is not None:
            return None  # the prompt is the condition
        return clf.spec.num_classes if clf is not None else self.spec.num_classes

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        sampler: str,
        steps: int,
        schedule: str,
        guidance: float,
        classifier: Any,
        classifier_scale: float,
        noise: torch.Tensor | None,
        sigmas: list[float] | None,
        trajectory: bool,
        dtype: torch.dtype | None,
        prompt: str | None = None,
        **options: Any,
    ) -> SampleResult:
        """Any registered sampler on this model's denoiser (:func:`~.samplers.run_sampler`).
        ``noise`` ``(n, *shape)``: standard-normal starting noise (round trips, reflow);
        ``sigmas`` overrides ``steps``/``schedule``; ``options`` go to the sampler."""
        dtype = dtype or next(self.parameters()).dtype
        grid = sigmas if sigmas is not None else self.sigmas(steps, schedule)
        if noise is None:
            noise = torch.randn((n, *self.spec.shape), generator=generator, dtype=dtype)
        if tuple(noise.shape) != (n, *self.spec.shape):
            raise ConfigError(
                f"noise must have shape {(n, *self.spec.shape)}, got {tuple(noise.shape)}"
            )
        if prompt is not None:
            y = C.tokenize(prompt).to(self.device).expand(n, -1)
        else:
            y = self.condition(labels, None, generator)
        den = self.denoiser(y, guidance, classifier, classifier_scale)
        # standard-normal noise scaled to the grid's first level (√(1 + σ_0²) in x̂ units)
        x = noise.to(device=self.device, dtype=dtype) * math.sqrt(1.0 + grid[0] ** 2)
        return run_sampler(
            sampler, den, self.process, x, grid, generator=generator, trajectory=trajectory,
            **options,
        )  # fmt: skip

    @torch.no_grad()
    def encode(
        self,
        x: torch.Tensor,
        *,
        sampler: str = "heun",
        steps: int | None = None,
        schedule: str | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> SampleResult:
        """Run a deterministic sampler's ODE from data (taken as ``x̂`` at σ_min) up to σ_max:
        the standard-normal noise that :meth:`sample` maps back to ``x`` (DDIM inversion)."""
        grid = self.ode_sigmas(steps, schedule)[::-1]  # σ_min ... σ_max
        k = self.spec.num_classes
        y = None if labels is None else self._labels(len(x), labels, None, k)
        den = self.denoiser(y, 1.0)
        if not SAMPLERS.entry(sampler).meta.get("ode"):
            raise ConfigError(f"encoding needs a deterministic (ODE) sampler; {sampler!r} is not")
        fn = SAMPLERS.get(sampler)
        out = fn(den, x.to(self.device), grid, process=self.process, **options)
        out.x = out.x / math.sqrt(1.0 + grid[-1] ** 2)
        return out

    @torch.no_grad()
    def straightness(
        self, n: int = 2000, *, steps: int = 100, generator: torch.Generator | None = None
    ) -> float:
        """Liu et al. (2023)'s straightness ``∫ E ‖(x_T − x_0)/(t_hi − t_lo) − dx/dt‖² dt``,
        normalized by the time span, on ``n`` Euler paths of ``steps`` steps from t_hi to t_lo
        (0 for straight paths; rectified flow's reflow lowers it)."""
        pr = self.process
        grid = [
            float(pr.sigma(pr.t_hi + (pr.t_lo - pr.t_hi) * i / steps)) for i in range(steps + 1)
        ]
        out = self.sample(n, sampler="euler", sigmas=grid, generator=generator, trajectory=True)
        path = out.trajectory.double()  # (steps + 1, n, *shape) in x space
        ts = torch.tensor([float(pr.t_of_sigma(s)) for s in grid], dtype=torch.float64)
        dt = (ts[1:] - ts[:-1]).reshape(-1, *([1] * (path.dim() - 1)))
        v = (path[1:] - path[:-1]) / dt  # the Euler velocities
        chord = (path[-1] - path[0]) / (ts[-1] - ts[0])
        sq = ((v - chord) ** 2).reshape(steps, n, -1).sum(-1)  # (steps, n)
        return float((sq * (dt.reshape(-1, 1)).abs()).sum(0).mean() / (ts[0] - ts[-1]).abs())

    # --- likelihood -----------------------------------------------------------------------------
    likelihood_options = (
        SampleOption(
            "rtol", "relative tolerance of the probability-flow ODE (dopri5)", float, 1e-5
        ),
        SampleOption("atol", "absolute tolerance of the probability-flow ODE", float, 1e-5),
        SampleOption("probes", "Hutchinson probes of the divergence (above 16 dimensions)", int, 4),
        SampleOption(
            "t_lo",
            "the time the examples are taken at (default: the process's t_lo, where samplers "
            "stop; 0 on the linear path gives the density of the data itself)",
            float,
            None,
        ),
    )

    def resolve_likelihood_options(self, options):
        """The declared options with their defaults; a ``t_lo`` outside the process's range is a
        :class:`ConfigError` here, before any sampling."""
        out = super().resolve_likelihood_options(options)
        self._likelihood_t_lo(out.get("t_lo"))
        return out

    def _likelihood_t_lo(self, t_lo: float | None) -> float:
        """``t_lo`` of the likelihood ODE: the process's by default, else checked against its
        range ``[t_min, t_hi)``."""
        pr = self.process
        t_lo = pr.t_lo if t_lo is None else float(t_lo)
        if not pr.t_min <= t_lo < pr.t_hi:
            raise ConfigError(
                f"t_lo={t_lo:g} is outside the {pr.name} process's range for the likelihood: "
                f"[{pr.t_min:g}, {pr.t_hi:g})"
            )
        return t_lo

    def log_prob(
        self,
        x: torch.Tensor,
        *,
        exact: bool | None = None,
        exact_divergence_max_dim: int = 16,
        probes: int = 4,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        generator: torch.Generator | None = None,
        batch_size: int = 4096,
        levels: int | None = None,
        t_lo: float | None = None,
    ) -> LogProb:
        """``log p(x)`` in nats through the probability-flow ODE from ``t_lo`` to ``t_hi``
        (:func:`genlab.models.diffusion.likelihood.ode_log_prob`; ``x`` is taken as ``x̂`` at
        ``σ(t_lo)``). ``t_lo`` defaults to the process's, where samplers stop (the density of the
        data convolved with N(0, σ_min²), as Song et al. 2021 evaluate); any time of the training
        range below ``t_hi`` may be given, e.g. 0 on the linear path, where ``σ = 0``.

        Images on a grid of ``levels`` values in [-1, 1] are dequantized: ``x + U`` over the bin
        of width ``2/(levels − 1)`` around each value, and ``log P(x) ≥ E log p(x + U) + D log(bin)``
        is a bound on the discrete likelihood (one-sample estimate, noted in the result)."""
        pr, den = self.process, self.denoiser(None, 1.0)
        den.clip = False  # the likelihood is the ODE of the network itself
        t_lo = self._likelihood_t_lo(t_lo)
        s_lo = float(pr.s(t_lo))
        offset, note = 0.0, ""
        if len(self.spec.shape) == 3:
            levels = levels or self.config.levels
            width = 2.0 / (levels - 1)
            dev = generator.device if generator is not None else x.device
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)
            x = x + (u - 0.5) * width
            offset = x[0].numel() * math.log(width)
            note = f"uniform dequantization over {levels} levels (a bound on the discrete NLL)"

        if t_lo != pr.t_lo:
            note = (note + ", " if note else "") + f"the examples taken at t = {t_lo:g}"
        lp = ode_log_prob(
            probability_flow(den, pr, t_lo, pr.t_hi), x.to(self.device) * s_lo, t_lo, pr.t_hi, pr.prior_log_prob, exact=exact,
            exact_max_dim=exact_divergence_max_dim, probes=probes, generator=generator, rtol=rtol, atol=atol,
            batch_size=batch_size, note=note,
        )  # fmt: skip
        lp.value = lp.value + x[0].numel() * math.log(s_lo) + offset
        return lp


class Denoiser:
    """``(x̂, σ) -> (D, ε̂)`` for a trained model, with classifier-free and classifier guidance.

    With ``guidance != 1`` and labels, the conditional and null-label outputs come from one network
    call on a doubled batch and are mixed as ``F_u + w (F_c − F_u)`` (D and ε̂ are affine in F, so
    this is ``D_u + w (D_c − D_u)``)."""

    def __init__(self, model: Diffusion, y, guidance: float, classifier=None, scale: float = 1.0):
        self.model, self.process = model, model.process
        self.param, self.sigma_data = model.config.parameterization, model.config.sigma_data
        self.y, self.guidance = y, guidance
        self.classifier, self.scale = classifier, scale
        self.conditional = model.spec.num_classes is not None  # else y only feeds a classifier
        self.clip = model.config.clip_denoised
        self.cfg = self.conditional and y is not None and guidance != 1.0
        if self.cfg:
            self.y2 = torch.cat([y, torch.full_like(y, model.null_label)])

    def __call__(self, xhat: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        pr = self.process
        c = P.Coefs(pr, float(pr.t_of_sigma(sigma)))
        c.sigma = sigma  # exact, not through t
        x = xhat * c.s if c.s != 1.0 else xhat
        if self.cfg:
            f_c, f_u = self.model.forward_net(torch.cat([x, x]), c, self.y2).chunk(2)
            f = torch.lerp(f_u, f_c, self.guidance)
        else:
            f = self.model.forward_net(x, c, self.y if self.conditional else None)
        d, eps = P.denoise(self.param, f, xhat, c, self.sigma_data)
        if self.clip:
            d = d.clamp(-1.0, 1.0)
            eps = (xhat - d) / sigma
        if self.classifier is not None and self.y is not None:
            grad = self.classifier.grad_log_prob_y(xhat, sigma, self.y)  # ∇_x̂ log p(y | x̂, σ)
            d = d + (self.scale * sigma**2) * grad
            eps = eps - (self.scale * sigma) * grad
        return d, eps


@dataclass
class FlowMatchingConfig(DiffusionConfig):
    """Flow matching / rectified flow: the linear path with the velocity loss."""

    process: ProcessName = "linear"
    parameterization: ParamName = "velocity"
    time_sampling: Literal["default", "uniform", "logit-normal", "log-normal"] = "uniform"
    sampler: str = "dopri5"
    steps: int = 100
    schedule: Literal["default", "uniform", "karras", "log-snr"] = "uniform"
    sigma: float = 0.0  # width of a Gaussian path around the straight line (torchcfm's sigma;
    # with sigma > 0 the marginals are no longer exactly those of the linear process)


@MODELS.register("flow-matching", help="flow matching / rectified flow (linear path, OT coupling)")
class FlowMatching(Diffusion):
    """Conditional flow matching (Lipman et al. 2023; Liu et al. 2023; Tong et al. 2024): the
    diffusion family with the linear path ``x_t = (1 − t) x_0 + t ε`` and the velocity loss
    ``E ‖v(x_t, t) − (ε − x_0)‖²``, as defaults of :class:`Diffusion`; nothing else differs."""

    Config = FlowMatchingConfig

    def velocity(self, x: torch.Tensor, t: torch.Tensor | float, y=None) -> torch.Tensor:
        """``dx/dt`` at ``x`` and a time ``t`` (scalar or ``(B,)``) in the network's own terms."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        c = P.Coefs(self.process, t[:, None])
        f = self.forward_net(x, c, y)
        if self.config.parameterization == "velocity":
            return f
        d, eps = P.denoise(self.config.parameterization, f, x / c.s, c, self.config.sigma_data)
        return c.ds * (x / c.s) + c.s * c.dsigma * eps
