"""What VQGAN and Stable Diffusion's KL autoencoder add to a plain autoencoder, written once for
both (:class:`AdversarialAutoencoder`): a perceptual term, a patch discriminator with the hinge
loss, and the adaptive weight of the adversarial term.

**The autoencoder's loss** (one update of the player ``"autoencoder"``; Esser et al. 2021, eq. 4
and 7; Rombach et al. 2022, appendix G)::

    L_rec = |x − x̂| (or (x − x̂)², model.recon), mean over elements
            + perceptual · d(x, x̂)
    L_AE  = L_rec + R + λ · L_adv,      L_adv = −mean D(x̂)            (hinge generator loss)
    λ     = disc_weight · clamp(‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_adv‖ + 1e-4), 0, 1e4)

with ``R`` the family's regularizer (VQGAN: the quantizer's commitment/codebook loss; the KL
autoencoder: its KL term), ``G_L`` the weight of the decoder's last layer and λ treated as a
constant (no gradient through it). The ratio makes the adversarial gradient at the decoder's output
as large as the reconstruction's, whatever the scales of the two losses; ``disc_weight`` scales it
(0: no discriminator at all). Before training step ``disc_start`` the adversarial term is absent
(λ·L_adv is not computed) and the discriminator does not train (its player starts at that step),
as in taming-transformers, so the autoencoder first learns to reconstruct. With several processes
the two gradients are averaged over them before their norms are taken, so λ is that of the global
batch and two processes train like one.

**The discriminator's loss** (player ``"discriminator"``, each update on a batch of its own; the
reconstructions are made without gradient and without updating the codebook): the hinge loss
(Lim & Ye 2017) ``½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))`` over the
:class:`~genlab.nets.patch_discriminator.PatchDiscriminator`'s map of logits.

**The perceptual term** (``perceptual > 0``): an LPIPS-style distance (Zhang et al. 2018, "The
Unreasonable Effectiveness of Deep Features as a Perceptual Metric", eq. 1, the variant without
learned per-channel weights: ``w_l = 1``) on the ReLU feature maps of every convolution of a small
CNN that genlab trains on the data itself (nothing is downloaded)::

    d(x, x̂) = Σ_l mean_{h,w} ‖ f̂_l(x)_{hw} − f̂_l(x̂)_{hw} ‖²,   f̂ = f / (‖f‖₂ over channels + 1e-10)

The network is the evaluation's :class:`~genlab.nets.features.FeatureNet` architecture trained by
the evaluation's machinery (:func:`~genlab.feature_networks.feature_network`, cached by the data's
content hash) but with another recipe, :data:`PERCEPTUAL_RECIPE`: another seed (other initial
weights and batch order) and twice the random translation. It is a *different network* from the
one whose features the Fréchet distance, KID and precision/recall use, on purpose: a generator
trained to match the evaluation network's own features can lower those metrics without making
better images (Kynkäänniemi et al. 2023, "The Role of ImageNet Classes in Fréchet Inception
Distance"); an independently trained network shares the data but not the evaluation network's
particular features, so the metric stays an outside check (``tests/test_vqgan.py`` checks that the
two differ). The network is trained (or loaded from the cache) when the model is built for its
data (:meth:`initialize`, when a fresh run starts) and its weights are stored, frozen, in the run's checkpoints, so a run
resumes and samples from its directory alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.feature_networks import RECIPE, Recipe, feature_network
from genlab.models.base import Player
from genlab.nets.features import FeatureNet
from genlab.nets.host_copy import HostCopy
from genlab.nets.patch_discriminator import PatchDiscriminator


@dataclass
class AdversarialConfig:
    """The settings :class:`AdversarialAutoencoder` adds to a family's config."""

    recon: Literal["l1", "mse"] = "l1"  # pixel reconstruction loss (taming and SD: l1)
    perceptual: float = 0.0  # weight of the perceptual distance (0: off)
    disc_weight: float = 0.8  # factor of the adaptive adversarial weight (0: no discriminator)
    disc_start: int = 1000  # first training step of the discriminator and the adversarial term
    disc_channels: int = 32  # width of the patch discriminator's first layer
    disc_layers: int = 2  # its stride-2 convolutions
    max_adaptive: float = 1e4  # clamp of the gradient-norm ratio
    lr_d: float | None = None  # the discriminator's learning rate (None: trainer.lr)
    betas: tuple[float, float] = (0.5, 0.9)  # Adam's betas of both players (taming, SD)


# ---------------------------------------------------------------------------------------------
# The losses, as functions (tests check them against their formulas)
# ---------------------------------------------------------------------------------------------


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss ``½ (mean relu(1 − real) + mean relu(1 + fake))`` on logits
    (any shape: a patch discriminator's maps)."""
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """The generator's (here: the decoder's) hinge loss ``−mean D(x̂)``."""
    return -fake.mean()


def adaptive_weight(
    rec: torch.Tensor,
    adv: torch.Tensor,
    last: torch.Tensor,
    *,
    factor: float = 1.0,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """``factor · clamp(‖∇_last rec‖ / (‖∇_last adv‖ + eps), 0, max_weight)``, detached (Esser et
    al. 2021, eq. 7). ``last`` is the decoder's last-layer weight; the graphs of ``rec`` and ``adv``
    are kept for the backward pass that follows. Under ``torch.distributed`` both gradients are
    averaged over the processes first: the weight of the global batch."""
    (g_rec,) = torch.autograd.grad(rec, last, retain_graph=True)
    (g_adv,) = torch.autograd.grad(adv, last, retain_graph=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        both = torch.stack([g_rec, g_adv])
        torch.distributed.all_reduce(both)
        g_rec, g_adv = both / torch.distributed.get_world_size()
    ratio = torch.linalg.vector_norm(g_rec) / (torch.linalg.vector_norm(g_adv) + eps)
    return (ratio.clamp(0.0, max_weight) * factor).detach()


# ---------------------------------------------------------------------------------------------
# The perceptual distance
# ---------------------------------------------------------------------------------------------


def perceptual_recipe(base: Recipe = RECIPE) -> Recipe:
    """The recipe of the perceptual network derived from the evaluation's ``base``: another seed
    and twice the translation (``shift_divisor`` halved), so another network, cached apart."""
    return dataclasses.replace(
        base, seed=base.seed + 1, shift_divisor=max(1, base.shift_divisor // 2)
    )


PERCEPTUAL_RECIPE = perceptual_recipe(RECIPE)


def feature_classes(num_classes: int | None) -> int | None:
    """The classes of the feature network of data with ``num_classes`` (None: an autoencoder's
    encoder), as :func:`~genlab.feature_networks.feature_network` decides."""
    return num_classes if num_classes is not None and num_classes >= 2 else None


class PerceptualDistance(nn.Module):
    """``d(x, x̂)`` ``(B,)`` on the feature maps of a frozen :class:`FeatureNet` (see the module
    docstring). ``ready`` (a buffer, so checkpoints carry it) says whether trained weights were
    loaded (:meth:`load_network`)."""

    def __init__(self, shape: tuple[int, ...], num_classes: int | None) -> None:
        super().__init__()
        self.net = FeatureNet(shape, feature_classes(num_classes)).requires_grad_(False)
        self.register_buffer("ready", torch.tensor(False))

    @torch.no_grad()
    def load_network(self, net: FeatureNet) -> None:
        self.net.load_state_dict(net.state_dict())
        self.ready.fill_(True)

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ReLU output of every convolution, normalized over channels at each position."""
        out = []
        for conv, norm in zip(self.net.convs, self.net.norms):
            x = F.relu(norm(conv(x)))
            out.append(x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + 1e-10))
        return out

    def forward(self, x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
        if not bool(self.ready):
            raise ConfigError(
                "the perceptual network was never trained for this model: build it with "
                "genlab.build_model(cfg, dataset), which trains or loads it, or set "
                "model.perceptual=0"
            )
        both = self.maps(torch.cat([x, xhat]))
        return sum(
            (a - b).square().sum(1).flatten(1).mean(1) for a, b in (f.chunk(2) for f in both)
        )


# ---------------------------------------------------------------------------------------------
# The two-player autoencoder
# ---------------------------------------------------------------------------------------------


class AdversarialAutoencoder:
    """Mixin of an image autoencoder family (listed before its base class, e.g.
    ``class VQGAN(AdversarialAutoencoder, VQVAE)``) whose config includes
    :class:`AdversarialConfig`. The family provides:

    - ``_autoencode(batch, update) -> (x̂, R)``: reconstructions of ``batch.x`` and the
      regularizer ``R`` (a scalar); ``update=False`` must change no state (codebook, statistics),
    - ``last_layer()``: the decoder's last-layer weight,

    and gets the players, their losses, :meth:`loss` (the validation loss: ``L_rec + R``), the
    perceptual network's training (:meth:`initialize`) and the adaptive weight in the log."""

    def _build_adversary(self) -> None:
        """The discriminator (when ``disc_weight > 0``) and the perceptual network (when
        ``perceptual > 0``); call at the end of ``__init__``."""
        c = self.config
        for name in ("perceptual", "disc_weight", "disc_start", "max_adaptive"):
            if getattr(c, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(c, name)}")
        if c.recon not in ("l1", "mse"):
            raise ConfigError(f"model.recon must be 'l1' or 'mse', got {c.recon!r}")
        self.discriminator = (
            PatchDiscriminator(self.spec.shape, c.disc_channels, c.disc_layers)
            if c.disc_weight > 0
            else None
        )
        self.perceptual_net = (
            PerceptualDistance(self.spec.shape, self.spec.num_classes) if c.perceptual > 0 else None
        )
        # autoencoder updates so far: the adversarial term starts when it reaches disc_start
        self.register_buffer("ae_updates", torch.zeros((), dtype=torch.long))
        self.host = HostCopy(self)  # ae_updates, read every step without a device sync
        # the last adaptive weight (0 before disc_start), for the log line; not checkpointed
        self.register_buffer("last_adaptive", torch.zeros(()), persistent=False)
        self.register_buffer("last_rec", torch.zeros(()), persistent=False)  # L_rec, likewise

    # --- the data -------------------------------------------------------------------------------
    def initialize(self, dataset: Any) -> None:
        """Train (or load from the cache) the perceptual network for ``dataset``: when a fresh
        training run starts (:meth:`~genlab.models.base.GenerativeModel.initialize`; on resume
        and loading the checkpoint holds it)."""
        if self.perceptual_net is None:
            return
        net, _ = feature_network(dataset, recipe=PERCEPTUAL_RECIPE, verbose=True)
        if net.num_classes != self.perceptual_net.net.num_classes:
            raise ConfigError(
                f"the data has {dataset.num_classes} classes but the perceptual network "
                f"{net.num_classes}: rebuild the model for this data"
            )
        self.perceptual_net.load_network(net)

    # --- the players ----------------------------------------------------------------------------
    def players(self) -> list[Player]:
        c = self.config
        ours = nn.ModuleList(
            m for name, m in self.named_children() if name not in ("discriminator",)
        )  # fmt: skip
        players = [Player("autoencoder", ours, betas=c.betas)]
        if self.discriminator is not None:
            players.append(
                Player("discriminator", self.discriminator, lr=c.lr_d, betas=c.betas, ema=False,
                       start=c.disc_start)
            )  # fmt: skip
        return players

    def player_loss(
        self, player: str, batch: Batch, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        batch = self._prepared(batch, generator)
        if player == "autoencoder":
            return self.autoencoder_loss(batch)
        if player == "discriminator" and self.discriminator is not None:
            return self.discriminator_loss(batch)
        names = [p.name for p in self.players()]
        raise ConfigError(f"a {self.family} model has players {names}, not {player!r}")

    def _prepared(self, batch: Batch, generator: torch.Generator | None) -> Batch:
        """``batch`` with the randomness of :meth:`prepare` (drawn now if the trainer did not)."""
        return batch

    def reconstruction_loss(self, x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
        """``L_rec``: the pixel loss (mean over elements) plus the weighted perceptual distance."""
        if self.config.recon == "l1":
            rec = (x - xhat).abs().mean()
        else:
            rec = (x - xhat).square().mean()
        if self.perceptual_net is not None:
            rec = rec + self.config.perceptual * self.perceptual_net(x, xhat).mean()
        return rec

    def adversarial_active(self) -> bool:
        """Whether the next autoencoder update has the adversarial term (step >= disc_start)."""
        return (
            self.discriminator is not None
            and self.host.get(self, "ae_updates") >= self.config.disc_start
        )

    def autoencoder_loss(self, batch: Batch) -> torch.Tensor:
        """``L_rec + R + λ · L_adv`` (the last term from step ``disc_start`` on)."""
        xhat, reg = self._autoencode(batch, update=True)
        rec = self.reconstruction_loss(batch.x, xhat)
        self.last_rec.copy_(rec.detach())
        loss = rec + reg
        if self.adversarial_active():
            c = self.config
            adv = hinge_g_loss(self.discriminator(xhat))
            lam = adaptive_weight(
                rec, adv, self.last_layer(), factor=c.disc_weight, max_weight=c.max_adaptive
            )
            self.last_adaptive.copy_(lam)
            loss = loss + lam * adv
        self.host.add(self, "ae_updates")
        return loss

    def discriminator_loss(self, batch: Batch) -> torch.Tensor:
        """The hinge loss on real images and reconstructions (made without gradient or updates)."""
        with torch.no_grad():
            xhat, _ = self._autoencode(batch, update=False)
        return hinge_d_loss(self.discriminator(batch.x), self.discriminator(xhat))

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The validation loss ``L_rec + R`` (no adversarial term)."""
        batch = self._prepared(batch, generator)
        xhat, reg = self._autoencode(batch, update=self.training)
        return self.reconstruction_loss(batch.x, xhat) + reg

    def training_stats(self) -> dict[str, float]:
        """The family's figures, the last ``L_rec`` and, once the discriminator is on, the last
        adaptive weight."""
        out = super().training_stats()
        out["reconstruction"] = float(self.last_rec)
        if self.discriminator is not None and int(self.ae_updates) > self.config.disc_start:
            out["adaptive_weight"] = float(self.last_adaptive)
        return out


__all__ = [
    "PERCEPTUAL_RECIPE", "AdversarialAutoencoder", "AdversarialConfig", "PerceptualDistance",
    "adaptive_weight", "feature_classes", "hinge_d_loss", "hinge_g_loss", "perceptual_recipe",
]  # fmt: skip
