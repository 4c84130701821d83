"""The variational autoencoder (Kingma & Welling 2014) with ELBO and importance-weighted (IWAE,
Burda et al. 2016) objectives and bounds.

A latent ``z ~ N(0, I)`` of ``model.latent`` dimensions, a decoder ``p(x | z)`` and a Gaussian
encoder ``q(z | x) = N(μ(x), diag σ²(x))``. With ``k`` draws ``z_i = μ + σ ε_i`` (the
reparameterization trick; the noise ``ε`` is drawn in :meth:`VAE.prepare`, so training resumes
exactly and is the same on any number of processes) and weights
``log w_i = log p(x | z_i) + log p(z_i) − log q(z_i | x)``:

- the **ELBO** ``E_q[log p(x | z)] − KL(q ‖ p) ≤ log p(x)``, with the KL in closed form for
  training (``k = 1``), β-weighted (``model.beta``, β-VAE), warmed up linearly from 0 over
  ``model.kl_warmup`` updates, and with **free bits** (``model.free_bits`` nats per latent
  dimension, Kingma et al. 2016: each dimension's batch-mean KL counts at least that much, so
  the optimizer gains nothing by collapsing it below);
- the **IWAE-k bound** ``log (1/k) Σ_i w_i``, which rises with ``k`` to ``log p(x)``; training on
  it is ``model.train_k = k > 1``.

:meth:`VAE.log_prob` is the IWAE-``k`` bound (kind ``iwae-<k>``; ``elbo`` for ``k = 1``) with the
per-example standard error of the estimate (delta method), in memory-bounded chunks of samples, so
``k = 5000`` over a held-out split fits in a fixed budget; :meth:`VAE.likelihoods` gives the ELBO
estimated from the same draws beside it (never above it: Jensen on the same weights).

Decoders (``model.decoder``): ``bernoulli`` for binarized images (dynamic binarization in
``prepare``, as the autoregressive models; a seeded binarization for the held-out bound),
``gaussian`` with a learned per-dimension variance or a fixed one (``model.decoder_std > 0``),
and ``logistic``, a discretized logistic over ``model.levels`` intensity values. ``auto``:
Bernoulli for images, Gaussian for points. Samples are the decoder's means by default
(``sample_mean``; for a Bernoulli decoder trained on dynamically binarized images the mean is
the intensity), or draws from ``p(x | z)``.

``genlab eval`` reports the **active units** (Burda et al. 2016, sec. 5.2: latent dimensions
whose posterior mean varies across held-out examples, ``Cov_x E_q[z_d] > 0.01``): the measure of
posterior collapse.

References:
    Kingma & Welling (2014), "Auto-Encoding Variational Bayes", ICLR. Burda, Grosse &
    Salakhutdinov (2016), "Importance Weighted Autoencoders", ICLR. Higgins et al. (2017),
    "β-VAE", ICLR. Bowman et al. (2016), "Generating sentences from a continuous space" (KL
    warm-up). Kingma et al. (2016), "Improved variational inference with inverse autoregressive
    flow", NeurIPS (free bits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.autoregressive.pixelcnn import (
    discretized_logistic_log_prob,
    draw_discretized_logistic,
    from_levels,
    to_levels,
)
from genlab.models.base import (
    FROM_CONFIG,
    GenerativeModel,
    LatentSpec,
    LogProb,
    ModelSpec,
    SampleOption,
    SampleResult,
)
from genlab.models.shared import binarize
from genlab.nets.autoencoder import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genlab.progress import chunks
from genlab.registry import MODELS

LOG_2PI = math.log(2 * math.pi)
DECODERS = ("auto", "bernoulli", "gaussian", "logistic")


@dataclass
class VAEConfig:
    latent: int = 16  # dimensions of z
    net: Literal["auto", "mlp", "conv"] = "auto"  # auto: conv for images, mlp for points
    hidden: int = 512  # mlp: units per hidden layer
    depth: int = 2  # mlp: hidden layers of the encoder and of the decoder
    channels: int = 32  # conv: feature maps (then 2x after the second downsampling)
    decoder: Literal["auto", "bernoulli", "gaussian", "logistic"] = "auto"
    decoder_std: float = 0.0  # gaussian: a fixed standard deviation (0: learned per dimension)
    levels: int = 256  # logistic: intensity values per channel
    beta: float = 1.0  # weight of the KL term (beta-VAE)
    kl_warmup: int = 0  # updates over which the KL weight rises linearly from 0 to beta
    free_bits: float = 0.0  # nats per latent dimension below which the KL is not penalized
    train_k: int = 1  # training: importance samples (1: the ELBO; k > 1: the IWAE-k bound)
    iwae_k: int = 1000  # the held-out bound's importance samples (genlab eval --option iwae_k=N)
    sample_mean: bool = True  # sampling: the decoder's mean (False: a draw from p(x | z))


@MODELS.register(
    "vae", help="variational autoencoder: ELBO / IWAE-k, beta, free bits (Kingma 2014)"
)
class VAE(GenerativeModel):
    """A Gaussian-encoder VAE (see the module docstring)."""

    Config: ClassVar[type] = VAEConfig
    sample_options = (
        SampleOption("sample_mean", "the decoder's mean (false: a draw from p(x|z))", bool,
                     FROM_CONFIG),
    )  # fmt: skip
    likelihood_options = (
        SampleOption("iwae_k", "importance samples of the held-out IWAE bound (1: the ELBO)", int,
                     FROM_CONFIG),
    )  # fmt: skip

    def __init__(self, config: VAEConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        c, shape = config, tuple(spec.shape)
        self.is_image = len(shape) == 3
        self.dim = math.prod(shape)
        if c.decoder not in DECODERS:
            raise ConfigError(
                f"model.decoder must be one of {', '.join(DECODERS)}, got {c.decoder!r}"
            )
        decoder = (
            c.decoder if c.decoder != "auto" else ("bernoulli" if self.is_image else "gaussian")
        )
        if decoder in ("bernoulli", "logistic") and not self.is_image:
            raise ConfigError(
                f"a {decoder} decoder models images; these examples have shape {shape}"
            )
        if min(c.latent, c.hidden, c.depth, c.channels, c.train_k, c.iwae_k) < 1:
            raise ConfigError(
                "model.latent, hidden, depth, channels, train_k and iwae_k must be >= 1"
            )
        if c.beta < 0 or c.free_bits < 0 or c.kl_warmup < 0 or c.decoder_std < 0:
            raise ConfigError("model.beta, free_bits, kl_warmup and decoder_std must be >= 0")
        self.decoder_kind = decoder
        params = 2 if decoder == "logistic" else 1  # logistic: mean and log-scale
        net = c.net if c.net != "auto" else ("conv" if self.is_image else "mlp")
        if net == "conv" and not self.is_image:
            raise ConfigError(f"model.net=conv needs images, got examples of shape {shape}")
        if net == "conv":
            self.encoder = ConvEncoder(shape, 2 * c.latent, c.channels)
            self.decoder = ConvDecoder(c.latent, shape, params, c.channels)
        elif net == "mlp":
            self.encoder = MLPEncoder(shape, 2 * c.latent, c.hidden, c.depth)
            self.decoder = MLPDecoder(c.latent, shape, params, c.hidden, c.depth)
        else:
            raise ConfigError(f"model.net must be auto, mlp or conv, got {net!r}")
        if decoder == "gaussian" and c.decoder_std == 0:
            self.log_std = nn.Parameter(torch.zeros(shape))  # learned, per data dimension
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # for the KL warm-up

    # --- data -----------------------------------------------------------------------------------
    def targets(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """What the decoder scores: binarized pixels in {0, 1}, integer levels, or ``x``."""
        if self.decoder_kind == "bernoulli":
            return binarize(((x + 1) / 2).clamp(0, 1), generator)
        if self.decoder_kind == "logistic":
            return to_levels(x, self.config.levels)
        return x

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """Dynamic binarization (Bernoulli decoder) and the reparameterization noise ``ε``
        ``(B, k, latent)``, from the step's generator."""
        k, n = self.config.train_k, len(batch.x)
        eps = torch.randn((n, k, self.config.latent), generator=generator, device="cpu")
        aux = {**batch.aux, "target": self.targets(batch.x, generator), "eps": eps.to(batch.x)}
        return Batch(batch.x, batch.y, batch.noise, batch.t, aux)

    def _encoder_input(self, target: torch.Tensor) -> torch.Tensor:
        dtype = next(self.parameters()).dtype
        if self.decoder_kind == "bernoulli":
            return target.to(dtype) * 2 - 1
        if self.decoder_kind == "logistic":
            return from_levels(target, self.config.levels, dtype)
        return target

    # --- the model ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Examples -> the posterior means ``(B, latent)`` (binarized or quantized as in training,
        with a fixed seed): the latents ``genlab encode`` writes."""
        g = torch.Generator().manual_seed(0)
        return self.posterior(self._encoder_input(self.targets(x.to(self.device), g)))[0]

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | x)`` of encoder inputs: mean and log-variance ``(B, latent)`` each."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def log_likelihood(self, target: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` for ``z`` ``(B, k, latent)`` and targets ``(B, *shape)``: ``(B, k)``."""
        b, k = z.shape[:2]
        out = self.decoder(z.reshape(b * k, -1))  # (B·k, P, *shape)
        t = target.unsqueeze(1).expand(b, k, *target.shape[1:]).reshape(b * k, *target.shape[1:])
        kind = self.decoder_kind
        if kind == "bernoulli":
            lp = -F.binary_cross_entropy_with_logits(out[:, 0], t.to(out.dtype), reduction="none")
        elif kind == "gaussian":
            log_std = self._log_std(out)
            lp = -0.5 * ((t - out[:, 0]) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * LOG_2PI
        else:  # logistic: one component, per pixel
            logit = torch.zeros_like(out[:, :1])
            params = torch.cat([logit, out[:, :1], out[:, 1:2]], 1).transpose(
                1, 2
            )  # (B·k, C, 3, H, W)
            lp = discretized_logistic_log_prob(t, params, self.config.levels)
        return lp.reshape(b, k, -1).sum(-1)

    def _log_std(self, out: torch.Tensor) -> torch.Tensor:
        if self.config.decoder_std > 0:
            return torch.full(
                (), math.log(self.config.decoder_std), dtype=out.dtype, device=out.device
            )
        return self.log_std.clamp(min=-7.0)

    def log_weights(self, target: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``log w = log p(x|z) + log p(z) − log q(z|x)`` ``(B, k)`` for ``z = μ + σ ε``, with
        ``log p(x|z)`` ``(B, k)`` and the closed-form ``KL(q ‖ p)`` per dimension ``(B, latent)``."""
        mu, logvar = self.posterior(self._encoder_input(target))
        std = torch.exp(0.5 * logvar)
        z = mu[:, None] + std[:, None] * eps  # (B, k, L)
        rec = self.log_likelihood(target, z)
        log_pz = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
        log_qz = (-0.5 * eps**2 - 0.5 * LOG_2PI - 0.5 * logvar[:, None]).sum(-1)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)
        return rec + log_pz - log_qz, rec, kl

    def kl_weight(self) -> float:
        """β, scaled by the warm-up: ``β · min(1, (updates + 1) / kl_warmup)``."""
        c = self.config
        if c.kl_warmup <= 0:
            return c.beta
        return c.beta * min(1.0, (int(self.updates) + 1) / c.kl_warmup)

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The negative training objective in nats per example: ``−ELBO`` (β-weighted, warmed up,
        free bits) for ``train_k = 1``, ``−IWAE-k`` otherwise."""
        if "eps" not in batch.aux:  # not prepared yet
            batch = self.prepare(batch, generator)
        logw, rec, kl = self.log_weights(batch.aux["target"], batch.aux["eps"])
        if self.config.train_k > 1:
            k = logw.shape[1]
            return -(torch.logsumexp(logw, 1) - math.log(k)).mean()
        kl_dims = kl.mean(0)  # (L,): each dimension's KL over the batch
        if self.config.free_bits > 0:
            kl_dims = kl_dims.clamp(min=self.config.free_bits)
        return -(rec.mean() - self.kl_weight() * kl_dims.sum())

    def after_update(self, player: str) -> None:
        self.updates += 1

    # --- likelihood -----------------------------------------------------------------------------
    @torch.no_grad()
    def likelihoods(
        self,
        x: torch.Tensor,
        *,
        iwae_k: int | None = None,
        generator: torch.Generator | None = None,
        budget: int = 2**14,
    ) -> list[LogProb]:
        """The ELBO and the IWAE-``k`` bound of each example from the same ``k`` draws, with
        per-example standard errors; ``budget`` bounds the examples × draws decoded at once."""
        k = int(iwae_k or self.config.iwae_k)
        if k < 1:
            raise ConfigError(f"the number of importance samples must be >= 1, got {k}")
        target = self.targets(x.to(self.device), generator)
        rows = max(1, budget // min(k, budget))
        per = max(1, budget // rows)  # draws per chunk
        elbo, elbo_se, iwae, iwae_se = [], [], [], []
        for t in chunks(target, rows):
            n = len(t)
            s1 = torch.zeros(n, dtype=torch.float64, device=t.device)  # Σ log w
            s2 = torch.zeros_like(s1)  # Σ (log w)²
            lse1 = torch.full_like(s1, -math.inf)  # log Σ w
            lse2 = torch.full_like(s1, -math.inf)  # log Σ w²
            done = 0
            while done < k:
                m = min(per, k - done)
                eps = torch.randn((n, m, self.config.latent), generator=generator, device="cpu")
                logw = self.log_weights(t, eps.to(device=t.device, dtype=self._dtype))[0].double()
                s1 += logw.sum(1)
                s2 += (logw**2).sum(1)
                lse1 = torch.logaddexp(lse1, torch.logsumexp(logw, 1))
                lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * logw, 1))
                done += m
            mean = s1 / k
            elbo.append(mean)
            var = (s2 / k - mean**2).clamp(min=0) * k / max(k - 1, 1)
            elbo_se.append((var / k).sqrt())
            iwae.append(lse1 - math.log(k))
            ratio = (torch.exp(lse2 - 2 * lse1 + math.log(k)) - 1).clamp(min=0)  # Var(w)/E[w]²
            iwae_se.append((ratio / k).sqrt())
        kind = f"iwae-{k}" if k > 1 else "elbo"
        note = f"{self._what()}; {k} draws from q(z|x)"
        lp_elbo = LogProb(torch.cat(elbo), "elbo", nfe=k, stderr=torch.cat(elbo_se),
                          note=f"{note}, the ELBO estimated from them")  # fmt: skip
        lp_iwae = LogProb(torch.cat(iwae), kind, nfe=k, stderr=torch.cat(iwae_se),
                          note=f"{note}, importance-weighted (Burda et al. 2016)")  # fmt: skip
        return [lp_elbo, lp_iwae] if k > 1 else [lp_elbo]

    def log_prob(
        self,
        x: torch.Tensor,
        *,
        iwae_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> LogProb:
        """The IWAE-``k`` lower bound on ``log p(x)`` (``k`` = ``model.iwae_k`` by default; the
        ELBO for ``k = 1``), in nats, with its standard error per example."""
        return self.likelihoods(x, iwae_k=iwae_k, generator=generator)[-1]

    def _what(self) -> str:
        return {"bernoulli": "images binarized (each pixel 1 with probability its intensity), seeded",
                "gaussian": "Gaussian decoder (a density of continuous values)",
                "logistic": f"discretized logistic decoder over {self.config.levels} levels"}[
            self.decoder_kind
        ]  # fmt: skip

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # --- sampling and reports -------------------------------------------------------------------
    def latent(self) -> LatentSpec:
        return LatentSpec("continuous", (self.config.latent,))

    def decode(self, z: torch.Tensor, generator: torch.Generator | None = None, mean: bool = True):
        """Latents ``(B, latent)`` -> examples: the decoder's mean, or a draw from ``p(x | z)``."""
        out = self.decoder(z)[:, 0] if self.decoder_kind != "logistic" else self.decoder(z)
        kind = self.decoder_kind
        if kind == "bernoulli":
            p = torch.sigmoid(out)
            if not mean:
                u = torch.rand(p.shape, generator=generator, dtype=torch.float64).to(p)
                p = (u < p).to(p.dtype)
            return p * 2 - 1
        if kind == "gaussian":
            if mean:
                return out
            noise = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out)
            return out + torch.exp(self._log_std(out)) * noise
        mu, log_s, levels = out[:, 0], out[:, 1].clamp(min=-7.0), self.config.levels
        k = (
            to_levels(mu, levels)
            if mean
            else draw_discretized_logistic(mu, log_s, levels, generator)
        )
        return from_levels(k, levels, mu.dtype)

    def _sample(
        self, n: int, *, labels: torch.Tensor | None, generator: torch.Generator | None,
        sample_mean: bool,
    ) -> SampleResult:  # fmt: skip
        z = torch.randn((n, self.config.latent), generator=generator, dtype=torch.float64)
        x = self.decode(z.to(device=self.device, dtype=self._dtype), generator, sample_mean)
        return SampleResult(x, 1)

    @torch.no_grad()
    def active_units(self, x: torch.Tensor, threshold: float = 0.01) -> int:
        """Latent dimensions with ``Cov_x E_q[z_d | x] > threshold`` (Burda et al. 2016)."""
        mu = torch.cat([self.encode(c) for c in torch.split(x, 1024)])
        return int((mu.double().var(0) > threshold).sum())

    def report(self, x, labels=None) -> dict[str, dict]:
        if len(x) < 2:
            return {}
        au = self.active_units(x[:2000])
        return {"active_units": {"value": au, "unit": f"of {self.config.latent} latent dims",
                                 "better": "higher"}}  # fmt: skip


__all__ = ["VAE", "VAEConfig"]
