"""VQGAN and the KL autoencoder (the stage-1 models of issue 13): the adaptive adversarial weight
against the gradient-norm ratio computed by hand, the hinge losses against their formulas, the
discriminator and the adversarial term switched on at ``disc_start`` and not before, the KL term
against the closed form of torch.distributions, and a perceptual network that is not the
evaluation's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import genlab.feature_networks as feats
from genlab.config import Config, TrainerConfig
from genlab.data.base import Batch, Dataset
from genlab.errors import ConfigError
from genlab.models.autoencoders import adversarial
from genlab.models.autoencoders.adversarial import hinge_d_loss, hinge_g_loss, perceptual_recipe
from genlab.models.autoencoders.kl_autoencoder import KLAutoencoder, KLAutoencoderConfig
from genlab.models.autoencoders.vqgan import VQGAN, VQGANConfig
from genlab.train.trainer import Trainer

SHAPE = (1, 8, 8)
# a VQGAN whose forward pass changes no codebook (no EMA, k-means or restarts)
STATIC = {"vqgan": {"ema": False, "kmeans_init": False, "restart": False}}


def make(family: str, **kw):
    torch.manual_seed(0)
    small = {"channels": 4, "disc_channels": 4, "disc_start": 0, "perceptual": 0.0}
    if family == "vqgan":
        cfg = VQGANConfig(**{**small, "codes": 8, "code_dim": 3, "downsample": 1, **kw})
        return VQGAN.from_config(cfg, SHAPE).double()
    cfg = KLAutoencoderConfig(**{**small, "latent_channels": 2, "downsample": 1, **kw})
    return KLAutoencoder.from_config(cfg, SHAPE).double()


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g, dtype=torch.float64) * 2 - 1


def by_hand_reconstruction(model, batch: Batch) -> torch.Tensor:
    """x̂ through the public pieces, the quantizer without its training-time updates."""
    if model.family == "vqgan":
        model.quantizer.eval()
        xhat, _ = model.reconstruct(batch.x)
        model.quantizer.train()
        return xhat
    mean, logvar = model.posterior(batch.x)
    return model._decode(mean + torch.exp(0.5 * logvar) * batch.aux["eps"])


@pytest.mark.parametrize("family", ["vqgan", "kl-autoencoder"])
@pytest.mark.parametrize("max_adaptive", [1e4, 1e-3])  # the second one clamps
def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer(family, max_adaptive):
    model = make(family, disc_weight=0.7, max_adaptive=max_adaptive, **STATIC.get(family, {}))
    model.train()
    batch = model.prepare(Batch(images()), torch.Generator().manual_seed(1))
    last = model.dec_out.weight
    # by hand: two separate graphs, L1 reconstruction and the hinge generator loss
    xhat = by_hand_reconstruction(model, batch)
    (g_rec,) = torch.autograd.grad((batch.x - xhat).abs().mean(), last)
    xhat = by_hand_reconstruction(model, batch)
    (g_adv,) = torch.autograd.grad(-model.discriminator(xhat).mean(), last)
    ratio = float(g_rec.norm()) / (float(g_adv.norm()) + 1e-4)
    expected = 0.7 * min(max(ratio, 0.0), max_adaptive)
    assert (ratio > max_adaptive) == (max_adaptive < 1)  # the clamp case does clamp
    loss = model.player_loss("autoencoder", batch)
    assert float(model.last_adaptive) == pytest.approx(expected, rel=1e-9)
    # λ is a constant in the backward pass: the last layer's gradient is g_rec + λ g_adv (the
    # quantizer's and the KL terms do not reach the last layer)
    model.zero_grad()
    loss.backward()
    torch.testing.assert_close(last.grad, g_rec + expected * g_adv)


def test_hinge_losses_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(3, 1, 4, 5, generator=g, dtype=torch.float64) * 2
    fake = torch.randn(3, 1, 4, 5, generator=g, dtype=torch.float64) * 2
    r, f = real.flatten().tolist(), fake.flatten().tolist()
    want_d = 0.5 * (
        sum(max(0.0, 1 - v) for v in r) / len(r) + sum(max(0.0, 1 + v) for v in f) / len(f)
    )
    assert float(hinge_d_loss(real, fake)) == pytest.approx(want_d, rel=1e-12)
    assert float(hinge_g_loss(fake)) == pytest.approx(-sum(f) / len(f), rel=1e-12)
    # saturated: real logits above 1 and fake below -1 cost nothing
    assert float(hinge_d_loss(real.abs() + 1.5, -fake.abs() - 1.5)) == 0.0


def test_the_discriminator_loss_is_the_hinge_loss_on_reals_and_reconstructions():
    model = make("kl-autoencoder").train()
    batch = model.prepare(Batch(images()), torch.Generator().manual_seed(2))
    with torch.no_grad():
        xhat = by_hand_reconstruction(model, batch)
        d_real, d_fake = model.discriminator(batch.x), model.discriminator(xhat)
    want = 0.5 * (torch.relu(1 - d_real).mean() + torch.relu(1 + d_fake).mean())
    got = model.player_loss("discriminator", batch)
    torch.testing.assert_close(got, want)
    got.backward()  # reaches the discriminator only
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.discriminator.parameters())


def trainer(tmp_path, family: str, disc_start: int) -> Trainer:
    x = images(96, seed=3).float()
    ds = Dataset("tiny", "images", x[:64], x[64:])
    tc = TrainerConfig(steps=10, batch_size=16, progress=False, tensorboard=False, log_every=5,
                       checkpoint_every=100, warmup=0, lr=1e-2, ema_decay=0.0)  # fmt: skip
    model = make(family, disc_start=disc_start).float()
    cfg = Config(trainer=tc, model=model.config, family=family)
    return Trainer(model, ds, cfg, tmp_path / family)


@pytest.mark.parametrize("family", ["vqgan", "kl-autoencoder"])
def test_the_adversarial_term_is_absent_before_disc_start_and_present_after(family):
    model = make(family, disc_start=3, **STATIC.get(family, {})).train()
    batch = model.prepare(Batch(images()), torch.Generator().manual_seed(4))
    xhat = by_hand_reconstruction(model, batch)
    plain = model.reconstruction_loss(batch.x, xhat) + model._autoencode(batch, update=False)[1]
    adv = -model.discriminator(xhat).mean()
    model.ae_updates.fill_(2)  # the autoencoder's update at step 2
    torch.testing.assert_close(model.player_loss("autoencoder", batch), plain)
    assert float(model.last_adaptive) == 0.0
    assert int(model.ae_updates) == 3  # at step 3: on
    loss = model.player_loss("autoencoder", batch)
    lam = float(model.last_adaptive)
    assert lam > 0
    torch.testing.assert_close(loss, plain + lam * adv)


@pytest.mark.parametrize("family", ["vqgan", "kl-autoencoder"])
def test_the_discriminator_does_not_train_before_disc_start(tmp_path, family):
    tr = trainer(tmp_path, family, disc_start=3)
    params = list(tr.model.discriminator.parameters())
    for step in range(6):
        before = [p.detach().clone() for p in params]
        losses = tr.train_step()
        moved = any(not torch.equal(a, p) for a, p in zip(before, params))
        assert sorted(losses) == (
            ["autoencoder", "discriminator"] if step >= 3 else ["autoencoder"]
        )
        assert moved == (step >= 3), step


def test_kl_term_matches_the_closed_form_of_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    want = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(KLAutoencoder.kl(mean, logvar), want)
    # the regularizer of the loss: kl_weight · KL per example / pixel values
    model = make("kl-autoencoder", kl_weight=0.3)
    batch = model.prepare(Batch(images()), g)
    _, reg = model._autoencode(batch, update=True)
    mu, lv = model.posterior(batch.x)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * lv))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(reg, 0.3 * kl.flatten(1).sum(1).mean() / 64)


def test_kl_autoencoder_latent_interface_and_baseline_sampler():
    model = make("kl-autoencoder").eval()
    x = images()
    z = model.encode(x)
    torch.testing.assert_close(z, model.posterior(x)[0])  # the posterior mean, deterministic
    assert model.latent().kind == "continuous" and tuple(z.shape[1:]) == model.latent().shape
    out = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert out.x.shape == (4, *SHAPE) and float(out.x.abs().max()) <= 1
    with pytest.raises(ConfigError, match="latents of shape"):
        model.decode(torch.zeros(2, 3, 4, 4, dtype=torch.float64))


def quick(base=feats.RECIPE) -> feats.Recipe:
    return dataclasses.replace(base, min_steps=15, max_steps=15, batch_size=32)


def digits_subset() -> Dataset:
    from genlab.data import load

    ds = load("digits", val_fraction=0.2)
    return dataclasses.replace(
        ds, train=ds.train[:160], val=ds.val[:40], labels_train=ds.labels_train[:160],
        labels_val=ds.labels_val[:40],
    )  # fmt: skip


def test_the_perceptual_network_is_not_the_evaluations(tmp_path, monkeypatch):
    assert adversarial.PERCEPTUAL_RECIPE.hash != feats.RECIPE.hash  # another cache entry
    assert adversarial.PERCEPTUAL_RECIPE.seed != feats.RECIPE.seed
    ds = digits_subset()
    base = quick()
    monkeypatch.setattr(adversarial, "PERCEPTUAL_RECIPE", perceptual_recipe(base))
    model = VQGAN.from_config(
        VQGANConfig(codes=8, code_dim=3, channels=4, downsample=1, perceptual=1.0), SHAPE, 10
    )
    with pytest.raises(ConfigError, match="perceptual network was never trained"):
        model.loss(Batch(ds.train[:4]))
    model.initialize(ds)  # what genlab.build_model(cfg, dataset) does for a fresh run
    evaluation, _ = feats.feature_network(ds, recipe=base, cache_dir=tmp_path, verbose=False)
    perceptual, _ = feats.feature_network(
        ds, recipe=perceptual_recipe(base), cache_dir=tmp_path, verbose=False
    )
    ours = model.perceptual_net.net.state_dict()
    for k, v in perceptual.state_dict().items():
        torch.testing.assert_close(ours[k], v)  # it is the perceptual recipe's network ...
    differ = [not torch.allclose(ours[k], v) for k, v in evaluation.state_dict().items()]
    assert all(differ)  # ... and no tensor of it is the evaluation network's
    assert model.perceptual_net.net.embed.weight.requires_grad is False
    # the distance: zero on identical images, positive otherwise, a gradient for x̂ only
    x = ds.train[:4]
    xhat = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    assert float(model.perceptual_net(x, x).abs().max()) < 1e-10
    d = model.perceptual_net(x, xhat)
    assert d.shape == (4,) and bool((d > 0).all())
    d.sum().backward()
    assert xhat.grad is not None and all(p.grad is None for p in model.perceptual_net.parameters())


def test_bad_settings_are_explained():
    with pytest.raises(ConfigError, match="disc_layers=4 halves 8x8"):
        make("vqgan", disc_layers=4)
    with pytest.raises(ConfigError, match="kl_weight"):
        make("kl-autoencoder", kl_weight=-1.0)
    with pytest.raises(ConfigError, match="recon"):
        make("kl-autoencoder", recon="l2")
    with pytest.raises(ConfigError, match="disc_start"):
        make("vqgan", disc_start=-1)
    model = make("vqgan", disc_weight=0.0)  # no discriminator: one player
    assert [p.name for p in model.players()] == ["autoencoder"] and model.discriminator is None


@pytest.mark.parametrize("family", ["vqgan", "kl-autoencoder"])
@pytest.mark.parametrize("shape,down", [((3, 15, 9), 2), ((1, 28, 28), 2), ((2, 5, 6), 0)])
def test_any_image_size_and_channel_count(family, shape, down):
    torch.manual_seed(0)
    kw = {"channels": 4, "disc_channels": 4, "disc_start": 0, "downsample": down, "disc_layers": 1}
    model = (
        VQGAN.from_config(VQGANConfig(codes=8, code_dim=3, **kw), shape)
        if family == "vqgan"
        else KLAutoencoder.from_config(KLAutoencoderConfig(latent_channels=2, **kw), shape)
    ).double()
    x = torch.rand(4, *shape, dtype=torch.float64) * 2 - 1
    batch = model.prepare(Batch(x), torch.Generator().manual_seed(0))
    for p in model.players():
        assert torch.isfinite(model.player_loss(p.name, batch))
    z = model.encode(x)
    assert tuple(z.shape) == (4, *model.latent().shape)
    assert model.decode(z).shape == x.shape and model.sample(2).x.shape == (2, *shape)


def test_a_run_with_the_perceptual_term_resumes_bit_identically(tmp_path, monkeypatch):
    # the perceptual network is trained when a fresh run starts and then travels in checkpoints:
    # a run stopped at step 6 and resumed reaches the uninterrupted run's weights exactly
    import genlab
    from genlab import checkpoint as ckpt

    monkeypatch.setattr(adversarial, "PERCEPTUAL_RECIPE", perceptual_recipe(quick()))
    args = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.steps=12",
            "trainer.batch_size=32", "trainer.checkpoint_every=6", "trainer.log_every=3",
            "model.channels=8", "model.codes=16", "model.code_dim=4", "model.disc_channels=8",
            "model.disc_start=4", "model.perceptual=0.5"]  # fmt: skip
    config = str(Path(__file__).resolve().parents[1] / "configs" / "vqgan-digits.yaml")
    genlab.api.train(config, tmp_path / "full", overrides=args, evaluate=False, verbose=False)
    genlab.api.train(config, tmp_path / "part", overrides=args, evaluate=False, verbose=False,
                     stop_at=6)  # fmt: skip
    genlab.api.train(config, tmp_path / "part", overrides=args, evaluate=False, verbose=False,
                     resume=True)  # fmt: skip
    a, _ = ckpt.load_latest(tmp_path / "full" / "checkpoints")
    b, _ = ckpt.load_latest(tmp_path / "part" / "checkpoints")
    assert a.keys() == b.keys() and any("perceptual_net" in k for k in a)
    assert bool(a["model.perceptual_net.ready"])
    for k in a:
        if not k.startswith("rng."):
            assert torch.equal(a[k], b[k]), k
