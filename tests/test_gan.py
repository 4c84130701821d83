"""GANs against what theory says the critic converges to: the optimal discriminator of the
non-saturating GAN, the Kantorovich–Rubinstein dual of WGAN-GP, the gradient penalty's unit norm;
plus the losses' bookkeeping (WGAN clipping, lazy R1, the runaway-critic check, sampling)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.gan import GAN, GANConfig


class Shift(nn.Module):
    """A frozen 'generator' of N(m e₁, s² I) in ``dim`` dimensions: G(z) = m e₁ + s z[:dim]."""

    def __init__(self, m: float, s: float = 1.0, dim: int = 1) -> None:
        super().__init__()
        self.m, self.s, self.dim = m, s, dim
        self.dummy = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, z, labels=None):
        shift = torch.zeros(self.dim, dtype=z.dtype)
        shift[0] = self.m
        return shift + self.s * z[:, : self.dim]


def train_critic(model: GAN, data: torch.distributions.Distribution, steps: int, lr=2e-3):
    """Only the critic learns: a fresh real batch and fresh latents per update."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.critic.parameters(), lr=lr, betas=(0.5, 0.999))
    for _ in range(steps):
        x = data.sample((512,))
        x = x[:, None] if x.dim() == 1 else x  # (512, d)
        loss = model.player_loss("critic", model.prepare(Batch(x), g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_update("critic")
    return model


def gan_1d(loss: str, dim: int = 1, **kw) -> GAN:
    torch.manual_seed(0)
    return GAN.from_config(GANConfig(loss=loss, z_dim=2, hidden=64, depth=2, **kw), (dim,))


def test_the_gan_critic_approaches_the_optimal_discriminator():
    # Goodfellow et al. (2014), Prop. 1: D*(x) = p_data / (p_data + p_g)
    model = gan_1d("gan")
    model.generator = Shift(1.0, 1.5)
    torch.manual_seed(1)
    train_critic(model, torch.distributions.Normal(0.0, 1.0), 1500)
    x = torch.linspace(-1.5, 2.0, 50)[:, None]  # (50, 1); the critic gives (50,)
    p_data = torch.distributions.Normal(0.0, 1.0).log_prob(x).exp()
    p_g = torch.distributions.Normal(1.0, 1.5).log_prob(x).exp()
    with torch.no_grad():
        d = torch.sigmoid(model.critic(x))
    assert float((d - (p_data / (p_data + p_g))[:, 0]).abs().max()) < 0.06


@pytest.fixture(scope="module")
def wgan_gp_critic():
    # In 2-D, not 1-D: on a line the penalty walls off the critic's sign (turning f(x) = x into
    # -x passes through slope 0, penalised λ), so a critic that starts with the wrong slope stays
    # in that local optimum; in the plane its gradient can turn round through e₂ at unit norm.
    model = gan_1d("wgan-gp", dim=2, d_norm="none")
    model.generator = Shift(2.0, dim=2)
    torch.manual_seed(2)
    return train_critic(
        model, torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)), 1500
    )


def interpolate_slope(critic: nn.Module, m: float = 2.0) -> torch.Tensor:
    """‖∇D‖ on WGAN-GP's interpolates between N(0, I) and N(m e₁, I) in 2-D, ``(4000,)``."""
    g = torch.Generator().manual_seed(4)
    real = torch.randn(4000, 2, generator=g)
    fake = torch.tensor([m, 0.0]) + torch.randn(4000, 2, generator=g)
    eps = torch.rand(4000, 1, generator=g)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix)
    return grad.norm(dim=1)


def test_the_wgan_gp_critic_estimates_w1(wgan_gp_critic):
    # Kantorovich–Rubinstein: sup over 1-Lipschitz f of E f(real) − E f(fake) = W1 = |m| = 2
    # (a translation by m e₁).
    # The penalty is soft: maximising 2a − λ (a − 1)² over the slope a gives a = 1 + 1/λ, so the
    # raw estimate runs ~1/λ high; divided by the critic's slope on the interpolates (its
    # Lipschitz constant where the mass is) it is W1.
    real = torch.randn(20000, 2, generator=torch.Generator().manual_seed(3))
    fake = real + torch.tensor([2.0, 0.0])
    with torch.no_grad():
        estimate = wgan_gp_critic.critic(real).mean() - wgan_gp_critic.critic(fake).mean()
    slope = interpolate_slope(wgan_gp_critic.critic).mean()
    assert float(estimate) == pytest.approx(2.0 * (1 + 1 / 10), rel=0.05)
    assert float(estimate / slope) == pytest.approx(2.0, rel=0.05)


def test_the_penalty_drives_gradient_norms_on_interpolates_to_one(wgan_gp_critic):
    # the soft penalty's optimum is 1 + 1/λ (see above), 1.1 at λ = 10: within 0.1 of 1 up to the
    # training noise, which the tighter tolerance around 1 + 1/λ checks
    slope = float(interpolate_slope(wgan_gp_critic.critic).mean())
    assert slope == pytest.approx(1.0 + 1.0 / 10, abs=0.05)


def test_wgan_clips_the_critic_after_each_update():
    model = train_critic(gan_1d("wgan", clip=0.05), torch.distributions.Normal(0.0, 1.0), 3)
    assert all(bool((p.abs() <= torch.tensor(0.05)).all()) for p in model.critic.parameters())


def test_lazy_r1_runs_every_k_critic_updates_with_the_interval_as_weight():
    model = gan_1d("gan", r1=10.0, r1_every=4)
    batch = model.prepare(Batch(torch.randn(64, 1)), torch.Generator().manual_seed(0))
    losses = [float(model.player_loss("critic", batch).detach()) for _ in range(8)]
    assert int(model.critic_updates) == 8
    plain = gan_1d("gan")
    base = float(plain.player_loss("critic", batch).detach())
    # updates 0 and 4 carry the penalty (γ/2 · k · E‖∇D‖² > 0); the others are the plain loss
    assert losses[0] > base and losses[4] > base
    assert losses[1] == pytest.approx(base) and losses[5] == pytest.approx(base)


def test_a_runaway_critic_is_reported_once_then_cleared():
    model = gan_1d("wgan", max_critic=5.0)
    with torch.no_grad():
        model.critic_peak.fill_(1e3)
    assert "ran away" in model.divergence()
    assert model.divergence() is None  # the peak is per check


def test_sampling_is_conditional_on_labels_and_deterministic():
    model = GAN.from_config(GANConfig(z_dim=8, hidden=32, depth=1), (2,), num_classes=3)
    a = model.sample(6, labels=2, generator=torch.Generator().manual_seed(0))
    b = model.sample(6, labels=2, generator=torch.Generator().manual_seed(0))
    assert a.x.shape == (6, 2) and a.nfe == 1 and torch.equal(a.x, b.x)
    assert torch.equal(a.labels, torch.full((6,), 2))
    with pytest.raises(ConfigError, match="no sampling option 'steps'"):
        model.sample(2, steps=3)
    cold = model.sample(2000, temperature=0.0, labels=1).x
    assert float(cold.std(0).max()) < 1e-6  # z = 0 for every sample


class LogRatio(nn.Module):
    """A critic whose logit is exactly log N(x; m, s²) / N(x; 0, 1) (label-blind)."""

    def __init__(self, m: float, s: float) -> None:
        super().__init__()
        self.data = torch.distributions.Normal(m, s)
        self.g = torch.distributions.Normal(0.0, 1.0)

    def forward(self, x, labels=None):
        return (self.data.log_prob(x) - self.g.log_prob(x))[:, 0]


def test_rejection_sampling_with_the_optimal_critic_draws_the_data_law():
    # Azadi et al. (2019): keeping G(z) with probability exp(D - max D) turns p_g into p_data
    model = gan_1d("gan")
    model.generator, model.critic = Shift(0.0, 1.0), LogRatio(1.0, 0.5)
    g = torch.Generator().manual_seed(0)
    plain = model.sample(4000, generator=g).x[:, 0]
    out = model.sample(4000, generator=g, rejection=True)
    x = out.x[:, 0]
    assert abs(float(plain.mean())) < 0.06 and abs(float(plain.std()) - 1.0) < 0.05
    assert abs(float(x.mean()) - 1.0) < 0.03 and abs(float(x.std()) - 0.5) < 0.03
    # a Kolmogorov-Smirnov distance to N(1, 0.25) of the size sampling noise allows (n = 4000)
    cdf = torch.distributions.Normal(1.0, 0.5).cdf(x.sort().values)
    ks = float((cdf - torch.arange(1, 4001) / 4000).abs().max())
    assert ks < 0.03
    # max p_data/p_g = 2 e^(2/3) ~ 3.9 draws per kept sample, burn-in on top: NFE counts both nets
    assert 2 * (3.9 + 2.5) <= out.nfe <= 2 * (1.2 * 3.9 + 2.5 + 1)
    again = model.sample(4000, generator=torch.Generator().manual_seed(0), rejection=True).x
    torch.manual_seed(0)
    assert torch.equal(
        again, model.sample(4000, generator=torch.Generator().manual_seed(0), rejection=True).x
    )
    # a shift below 0 keeps more draws: the samples move back towards p_g = N(0, 1)
    loose = model.sample(4000, generator=g, rejection=True, rejection_shift=-3.0)
    assert loose.nfe < out.nfe and float(loose.x.mean()) < float(x.mean()) - 0.2


def test_rejection_sampling_keeps_each_label_and_refuses_other_critics():
    model = GAN.from_config(GANConfig(z_dim=4, hidden=16, depth=1), (2,), num_classes=3)
    y = torch.tensor([0, 1, 2, 2, 1])
    out = model.sample(5, labels=y, rejection=True, rejection_burn_in=50)
    assert out.x.shape == (5, 2) and torch.equal(out.labels, y)
    assert torch.isfinite(out.x).all()
    with pytest.raises(ConfigError, match="log p_data/p_g"):
        gan_1d("hinge").sample(3, rejection=True)
    with pytest.raises(ConfigError, match="judges packs"):
        gan_1d("gan", pack=2).sample(3, rejection=True)


def test_bad_configs_are_explained():
    with pytest.raises(ConfigError, match="d_norm=layer or none"):
        GAN.from_config(GANConfig(loss="wgan-gp", d_norm="batch"), (1, 8, 8))
    with pytest.raises(ConfigError, match="n_critic must be at least 1"):
        GAN.from_config(GANConfig(n_critic=0), (2,))
    with pytest.raises(ConfigError, match="no single loss"):
        GAN.from_config(GANConfig(), (2,)).loss(Batch(torch.zeros(2, 2)))
    assert math.isfinite(GANConfig().max_critic)
