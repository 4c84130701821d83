"""Generative adversarial networks: a generator ``G(z)`` and a critic ``D(x)`` trained as two players
of the one trainer (:meth:`GAN.players`), each with its own optimizer and loss.

Losses (``model.loss``), with ``D`` the critic's raw output and ``G(z)`` a generated sample:

- ``gan``: the non-saturating GAN (Goodfellow et al. 2014, sec. 3): the critic minimises
  ``softplus(−D(x)) + softplus(D(G(z)))`` (binary cross-entropy on logits), the generator
  ``softplus(−D(G(z)))``;
- ``wgan``: the Wasserstein GAN (Arjovsky et al. 2017, Algorithm 1): the critic minimises
  ``D(G(z)) − D(x)``, its weights clipped to ``[−c, c]`` after every update (``model.clip``), the
  generator ``−D(G(z))``;
- ``wgan-gp``: WGAN with the gradient penalty (Gulrajani et al. 2017, Algorithm 1)
  ``λ E (‖∇D(x̂)‖₂ − 1)²`` on interpolates ``x̂ = ε x + (1 − ε) G(z)``, ``ε ~ U[0, 1]``;
- ``hinge``: the hinge loss (Lim & Ye 2017; Miyato et al. 2018): the critic minimises
  ``relu(1 − D(x)) + relu(1 + D(G(z)))``, the generator ``−D(G(z))``.

Options for any of them: the R1 penalty ``γ/2 E ‖∇D(x)‖²`` on real data (Mescheder et al. 2018),
applied lazily every ``r1_every`` critic updates with its weight scaled by the interval (Karras et
al. 2020, "lazy regularization"); spectral norm on the critic (``model.spectral_norm``); several
critic updates per generator update (``model.n_critic``); an EMA of the generator (``trainer.
ema_decay``: the critic keeps none) used for sampling; class-conditional generation with a
projection critic (:mod:`genlab.nets.gan`) whenever the data has labels.

All randomness of an update is drawn in :meth:`GAN.prepare` from the trainer's per-draw generator
(``z``, the interpolation weights ``ε``), so a run resumes bit-identically and two processes train
like one (image backbones with batch normalization excepted: their statistics are per process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.base import (
    FROM_CONFIG,
    GenerativeModel,
    ModelSpec,
    Player,
    SampleOption,
    SampleResult,
)
from genlab.nets.gan import GANNetConfig, build_gan_nets
from genlab.registry import MODELS

LossName = Literal["gan", "wgan", "wgan-gp", "hinge"]


@dataclass
class GANConfig(GANNetConfig):
    loss: LossName = "gan"
    n_critic: int = 1  # critic updates per generator update (WGAN: 5)
    lr_g: float | None = None  # generator learning rate (None: trainer.lr)
    lr_d: float | None = None  # critic learning rate (None: trainer.lr)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam's betas for both players (DCGAN's 0.5)
    gp_weight: float = 10.0  # wgan-gp: λ of the gradient penalty
    clip: float = 0.01  # wgan: the critic's weights are clipped to [-clip, clip]
    r1: float = 0.0  # γ of the R1 penalty on real data (0: off)
    r1_every: int = 16  # lazy R1: every this many critic updates, weighted by the interval
    critic_start: int = 0  # the first step the critic updates (0: from the start)
    pack: int = 1  # PacGAN: the critic judges this many samples at once (Lin et al. 2018)
    temperature: float = 1.0  # sampling: std of the latent z
    max_critic: float = 1e4  # the run stops when |D| on real data passes this (runaway critic)


@MODELS.register("gan", help="GAN / WGAN / WGAN-GP / hinge, R1, spectral norm (two players)")
class GAN(GenerativeModel):
    """A generator and a critic; see the module docstring."""

    Config = GANConfig
    conditional = True  # on the data's labels, when it has them

    sample_options = (
        SampleOption(
            "temperature", "std of the latent z (< 1: typical samples)", float, FROM_CONFIG
        ),
        SampleOption("noise", "standard-normal latents (n, z_dim)", None),
        SampleOption(
            "rejection",
            "discriminator rejection sampling (loss=gan): keep G(z) with probability "
            "exp(D(x) - max D), D's logit estimating log p_data/p_g",
            bool,
            False,
        ),
        SampleOption(
            "rejection_shift",
            "rejection: gamma of Azadi et al.'s acceptance sigmoid(F - gamma); 0 is exact "
            "rejection sampling, < 0 keeps more",
            float,
            0.0,
        ),
        SampleOption("rejection_burn_in", "rejection: draws that estimate max D", int, 10_000),
    )

    def __init__(self, config: GANConfig, spec: ModelSpec) -> None:
        super().__init__(config, spec)
        c = config
        for name in ("n_critic", "r1_every", "pack"):
            if getattr(c, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(c, name)}")
        for name in ("gp_weight", "clip", "r1", "critic_start"):
            if getattr(c, name) < 0:
                raise ConfigError(f"model.{name} must be non-negative, got {getattr(c, name)}")
        if c.loss == "wgan" and c.clip <= 0:
            raise ConfigError("model.loss=wgan needs model.clip > 0 (the critic's weight clip)")
        norm = c.d_norm
        if norm == "auto":  # the gradient penalty is per example: no batch statistics in the critic
            norm = "none" if c.spectral_norm else ("layer" if c.loss == "wgan-gp" else "batch")
        elif norm == "batch" and c.loss == "wgan-gp":
            raise ConfigError(
                "model.loss=wgan-gp penalises per-example gradients: use model.d_norm=layer or "
                "none, not batch (Gulrajani et al. 2017, sec. 4)"
            )
        nets = GANNetConfig(
            z_dim=c.z_dim, hidden=c.hidden, depth=c.depth, activation=c.activation,
            channels=c.channels, spectral_norm=c.spectral_norm, d_norm=norm,
        )  # fmt: skip
        if c.pack > 1 and spec.num_classes is not None:
            raise ConfigError(
                "model.pack > 1 packs unconditional samples, and this data has labels: set "
                "model.pack=1, or train on the data without labels"
            )
        self.generator, _ = build_gan_nets(nets, spec.shape, spec.num_classes)
        # the critic sees `pack` examples at once: points side by side, images stacked in channels
        packed = (spec.shape[0] * c.pack, *spec.shape[1:])
        _, self.critic = build_gan_nets(nets, packed, spec.num_classes)
        # critic updates so far (lazy R1 schedule; a buffer, so checkpoints carry it)
        self.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))
        # the largest |D(x)| on real data since the last check (runaway critic), no host sync
        self.register_buffer("critic_peak", torch.zeros(()), persistent=False)

    # --- the two players ------------------------------------------------------------------------
    def players(self) -> list[Player]:
        c = self.config
        return [
            Player("critic", self.critic, lr=c.lr_d, betas=c.betas, updates=c.n_critic,
                   ema=False, start=c.critic_start),
            Player("generator", self.generator, lr=c.lr_g, betas=c.betas),
        ]  # fmt: skip

    def prepare(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """The latents ``z`` and, for WGAN-GP, the interpolation weights ``ε`` of one update."""
        x = batch.x
        kw = {"generator": generator, "dtype": x.dtype, "device": x.device}
        aux = {**batch.aux, "z": torch.randn((len(x), self.config.z_dim), **kw)}
        if self.config.loss == "wgan-gp":
            aux["eps"] = torch.rand((len(x),), **kw)
        return Batch(x, batch.y, batch.noise, batch.t, aux)

    def player_loss(
        self, player: str, batch: Batch, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if "z" not in batch.aux:  # not prepared by the trainer
            batch = self.prepare(batch, generator)
        if player == "critic":
            return self.critic_loss(batch)
        if player == "generator":
            return self.generator_loss(batch)
        raise ConfigError(f"a GAN has players 'critic' and 'generator', not {player!r}")

    def _packed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, ...) -> (B / pack, pack C, ...)``: groups of ``pack`` consecutive examples."""
        m = self.config.pack
        if m == 1:
            return x
        if len(x) % m:
            raise ConfigError(f"model.pack={m} must divide the batch of {len(x)} (per process)")
        return x.reshape(len(x) // m, m * x.shape[1], *x.shape[2:])

    def critic_loss(self, batch: Batch) -> torch.Tensor:
        c = self.config
        y = batch.y
        with torch.no_grad():
            fake = self._packed(self.generator(batch.aux["z"], y))
        x = self._packed(batch.x)
        r1_now = c.r1 > 0 and int(self.critic_updates) % c.r1_every == 0
        if r1_now:
            x = x.detach().requires_grad_(True)
        d_real, d_fake = self.critic(x, y), self.critic(fake, y)
        with torch.no_grad():
            self.critic_peak.copy_(torch.maximum(self.critic_peak, d_real.abs().max().float()))
        if c.loss == "gan":
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        elif c.loss == "hinge":
            loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        else:  # wgan, wgan-gp
            loss = d_fake.mean() - d_real.mean()
        if c.loss == "wgan-gp":
            eps = batch.aux["eps"][: len(x)].reshape(-1, *([1] * (x.dim() - 1)))
            mix = (eps * x.detach() + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.critic(mix, y).sum(), mix, create_graph=True)
            loss = loss + c.gp_weight * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        if r1_now:
            (grad,) = torch.autograd.grad(d_real.sum(), x, create_graph=True)
            loss = loss + (c.r1 / 2 * c.r1_every) * grad.flatten(1).square().sum(1).mean()
        self.critic_updates += 1
        return loss

    def generator_loss(self, batch: Batch) -> torch.Tensor:
        d_fake = self.critic(self._packed(self.generator(batch.aux["z"], batch.y)), batch.y)
        if self.config.loss == "gan":
            return F.softplus(-d_fake).mean()  # non-saturating: maximise log D(G(z))
        return -d_fake.mean()

    def after_update(self, player: str) -> None:
        """WGAN: clip the critic's weights to ``[−clip, clip]`` after each of its updates."""
        if player == "critic" and self.config.loss == "wgan":
            with torch.no_grad():
                for p in self.critic.parameters():
                    p.clamp_(-self.config.clip, self.config.clip)

    def divergence(self) -> str | None:
        """A critic whose outputs on real data ran past ``max_critic`` since the last check."""
        peak = float(self.critic_peak)
        self.critic_peak.zero_()
        if not math.isfinite(peak) or peak > self.config.max_critic:
            return (
                f"the critic's outputs ran away (|D(x)| reached {peak:.3g} > model.max_critic = "
                f"{self.config.max_critic:g}); lower the learning rates, raise model.n_critic "
                "or add model.r1 / model.spectral_norm"
            )
        return None

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        raise ConfigError(
            "a GAN has no single loss (two players, no validation loss): set trainer.val_every=0"
        )

    # --- sampling -------------------------------------------------------------------------------
    def check_options(self, options) -> None:
        if not options["rejection"]:
            return
        if self.config.loss != "gan":
            raise ConfigError(
                f"rejection sampling needs a critic whose logit estimates log p_data/p_g, which "
                f"the loss 'gan' trains; this model was trained with {self.config.loss!r}"
            )
        if self.config.pack > 1:
            raise ConfigError("rejection sampling scores single samples: this critic judges packs")
        if options["noise"] is not None:
            raise ConfigError("rejection sampling draws its own latents: drop the noise option")
        if options["rejection_burn_in"] < 1:
            raise ConfigError("rejection_burn_in must be at least 1")

    def _sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        temperature: float,
        noise: torch.Tensor | None,
        rejection: bool = False,
        rejection_shift: float = 0.0,
        rejection_burn_in: int = 10_000,
    ) -> SampleResult:
        """``G(z)`` with ``z ~ N(0, temperature² I)``: one network pass (NFE 1); with
        ``rejection``, :meth:`_rejection_sample`."""
        p = next(self.generator.parameters())
        if rejection:
            return self._rejection_sample(
                n, labels, generator, temperature, rejection_shift, rejection_burn_in
            )
        if noise is None:
            noise = torch.randn((n, self.config.z_dim), generator=generator, dtype=p.dtype)
        if tuple(noise.shape) != (n, self.config.z_dim):
            raise ConfigError(
                f"noise must have shape {(n, self.config.z_dim)}, got {tuple(noise.shape)}"
            )
        z = noise.to(device=p.device, dtype=p.dtype) * temperature
        return SampleResult(self.generator(z, labels), 1, labels=labels)

    @torch.no_grad()
    def _rejection_sample(
        self,
        n: int,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        temperature: float,
        shift: float,
        burn_in: int,
        max_rounds: int = 200,
    ) -> SampleResult:
        """Discriminator rejection sampling (Azadi et al. 2019, "Discriminator Rejection Sampling").

        The optimal critic of the loss ``gan`` has ``D*(x) = log p_data(x) / p_g(x)`` (its logit), so
        keeping a draw ``x = G(z)`` with probability ``exp(D(x) − M)``, ``M = max D``, turns ``p_g``
        into ``p_data`` wherever ``p_g > 0`` (plain rejection sampling). ``M`` is the largest logit
        of ``burn_in`` draws, raised whenever a later draw exceeds it. The acceptance probability is
        written as Azadi et al.'s ``sigmoid(F − γ)``, ``F = D − M − log(1 − exp(D − M))``, which is
        ``exp(D − M)`` at ``γ = 0`` (``rejection_shift``); ``γ < 0`` keeps more draws (faster,
        closer to ``p_g``). Each slot keeps its label. NFE: generator and critic passes per kept
        sample, burn-in included."""
        p = next(self.generator.parameters())
        z_dim = self.config.z_dim
        kw = {"generator": generator, "dtype": p.dtype}

        def draw(m: int, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            z = (torch.randn((m, z_dim), **kw) * temperature).to(p.device)
            y = None if y is None else y.to(p.device)
            x = self.generator(z, y)
            return x, self.critic(x, y).reshape(m).double()

        def cycle(y: torch.Tensor | None, m: int) -> torch.Tensor | None:
            return None if y is None else y.repeat((m + len(y) - 1) // len(y))[:m]

        _, d = draw(burn_in, cycle(labels, burn_in))
        top = float(d.max())
        passes = 2 * burn_in
        groups = [(None, torch.arange(n))] if labels is None else [
            (c, torch.nonzero(labels == c).flatten()) for c in labels.unique().tolist()
        ]  # fmt: skip
        out: torch.Tensor | None = None
        for c, slots in groups:  # each class on its own: a kept draw fills a slot of its label
            done, rate = 0, 0.5
            for _ in range(max_rounds):
                m = min(math.ceil(1.1 * (len(slots) - done) / rate) + 16, 100_000)
                x, d = draw(m, None if c is None else torch.full((m,), c))
                passes += 2 * m
                top = max(top, float(d.max()))
                gap = (d - top).clamp(max=-1e-12)
                accept = torch.sigmoid(gap - torch.log(-torch.expm1(gap)) - shift)
                u = torch.rand(m, generator=generator, dtype=torch.float64)
                kept = x[(u < accept.cpu()).to(x.device)][: len(slots) - done]
                if out is None:
                    out = torch.empty((n, *x.shape[1:]), dtype=x.dtype, device=x.device)
                out[slots[done : done + len(kept)].to(x.device)] = kept
                done += len(kept)
                rate = max(float(accept.mean()), 1e-4)
                if done == len(slots):
                    break
            else:
                raise ConfigError(
                    f"rejection sampling kept too few draws ({done} of {len(slots)} after "
                    f"{max_rounds} rounds): the critic rejects nearly everything; set a negative "
                    "rejection_shift"
                )
        return SampleResult(out, math.ceil(passes / n), labels=labels)


__all__ = ["GAN", "GANConfig"]
