"""The VAE against a linear-Gaussian model whose log p(x) is known in closed form (ELBO = log p(x)
with the exact posterior; ELBO ≤ IWAE-k ≤ log p(x), rising with k, with an approximate one), the
training objectives, free bits and warm-up, every decoder's likelihood, and the eval plumbing of
the bounds. Numerics in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.vae import VAE, VAEConfig

L, D, SIGMA = 2, 4, 0.5


def linear_gaussian(exact: bool) -> tuple[VAE, torch.distributions.MultivariateNormal]:
    """``z ~ N(0, I_2)``, ``x | z ~ N(W z + b, σ² I_4)`` with orthogonal columns of ``W``, so the
    exact posterior ``N(M (x − b), Σ)`` is diagonal and a linear encoder can represent it."""
    model = VAE.from_config(VAEConfig(latent=L, hidden=8, depth=1, decoder_std=SIGMA), (D,))
    model = model.double()
    q, _ = torch.linalg.qr(
        torch.randn(D, L, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    w = q * torch.tensor([1.5, 0.7], dtype=torch.float64)  # orthogonal columns
    b = torch.tensor([0.3, -0.2, 1.0, 0.5], dtype=torch.float64)
    post_cov = torch.linalg.inv(torch.eye(L, dtype=torch.float64) + w.T @ w / SIGMA**2)
    m = post_cov @ w.T / SIGMA**2
    dec = nn.Linear(L, D).double()
    enc = nn.Linear(D, 2 * L).double()
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
        enc.weight.zero_()
        enc.weight[:L] = m
        enc.bias[:L] = -m @ b
        logvar = torch.log(post_cov.diagonal())
        if not exact:  # a worse posterior: shifted mean, wider variance
            enc.bias[:L] += 0.4
            logvar = logvar + 0.8
        enc.bias[L:] = logvar
    model.encoder = enc
    model.decoder = nn.Sequential(dec, nn.Unflatten(1, (1, D)))
    law = torch.distributions.MultivariateNormal(
        b, w @ w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    )
    return model.eval(), law


def test_with_the_exact_posterior_the_elbo_is_log_p():
    model, law = linear_gaussian(exact=True)
    x = law.sample((20,))
    g = torch.Generator().manual_seed(1)
    elbo, iwae = model.likelihoods(x, iwae_k=16, generator=g)
    torch.testing.assert_close(elbo.value, law.log_prob(x), atol=1e-9, rtol=0)
    torch.testing.assert_close(iwae.value, law.log_prob(x), atol=1e-9, rtol=0)
    assert elbo.kind == "elbo" and iwae.kind == "iwae-16"


def test_elbo_below_iwae_below_log_p_and_iwae_rises_with_k():
    torch.manual_seed(0)
    model, law = linear_gaussian(exact=False)
    x = law.sample((300,))
    log_p = law.log_prob(x)
    means = {}
    for k in (10, 100, 5000):
        elbo, iwae = model.likelihoods(x, iwae_k=k, generator=torch.Generator().manual_seed(k))
        means[k] = float(iwae.value.mean())
        assert (elbo.value <= iwae.value + 1e-12).all()  # Jensen on the same draws
        assert (iwae.value <= log_p + 4 * iwae.stderr + 1e-9).all()
    elbo = float(elbo.value.mean())  # from 5,000 draws: the ELBO to about 0.01
    se = float(iwae.stderr.square().mean().sqrt() / math.sqrt(len(x)))  # of the mean, k = 5000
    assert elbo < means[10] < means[100] < means[5000] + 3 * se
    gap = float(log_p.mean()) - means[5000]
    assert abs(gap) < max(3 * se, 0.005)  # IWAE-5000 reaches log p(x) within its error
    assert float(log_p.mean()) - elbo > 0.2  # and the ELBO of this posterior does not


def test_the_closed_form_kl_is_the_monte_carlo_kl():
    model, law = linear_gaussian(exact=False)
    x = law.sample((3,))
    eps = torch.randn(
        3, 200_000, L, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    logw, rec, kl = model.log_weights(x, eps)
    mc_kl = (rec - logw).mean(1)  # E_q[log q − log p(z)]
    torch.testing.assert_close(mc_kl, kl.sum(1), atol=0.01, rtol=0)


def small(shape, **kw) -> VAE:
    cfg = VAEConfig(**{"latent": 3, "hidden": 16, "depth": 1, "channels": 4, **kw})
    return VAE.from_config(cfg, shape).double()


def test_training_objectives_free_bits_and_warmup():
    model = small((5,))
    x = torch.randn(64, 5, dtype=torch.float64)
    batch = model.prepare(Batch(x), torch.Generator().manual_seed(0))
    with torch.no_grad():
        logw, rec, kl = model.log_weights(batch.aux["target"], batch.aux["eps"])
    assert float(model.loss(batch).detach()) == pytest.approx(
        float(-(rec.mean() - kl.mean(0).sum()))
    )
    fb = small((5,), free_bits=2.0)
    fb.load_state_dict(model.state_dict())
    assert float(fb.loss(batch)) == pytest.approx(
        float(-(rec.mean() - kl.mean(0).clamp(min=2.0).sum()))
    )
    warm = small((5,), kl_warmup=10, beta=2.0)
    assert warm.kl_weight() == pytest.approx(0.2)
    for _ in range(4):
        warm.after_update("model")
    assert warm.kl_weight() == pytest.approx(1.0)
    iw = small((5,), train_k=7)
    iw.load_state_dict(model.state_dict())
    b7 = iw.prepare(Batch(x), torch.Generator().manual_seed(0))
    assert b7.aux["eps"].shape == (64, 7, 3)
    lw = iw.log_weights(b7.aux["target"], b7.aux["eps"])[0]
    assert float(iw.loss(b7)) == pytest.approx(
        float(-(torch.logsumexp(lw, 1) - math.log(7)).mean())
    )


@pytest.mark.parametrize("decoder,levels", [("bernoulli", 2), ("logistic", 4)])
def test_discrete_decoders_sum_to_one_over_every_image(decoder, levels):
    import itertools

    model = small((1, 1, 3), decoder=decoder, net="mlp", levels=levels)
    z = torch.randn(2, 1, 3, dtype=torch.float64)
    images = torch.tensor(list(itertools.product(range(levels), repeat=3))).view(-1, 1, 1, 3)
    if decoder == "bernoulli":
        images = images.double()
    lps = torch.stack([model.log_likelihood(img.expand(2, 1, 1, 3), z) for img in images])
    torch.testing.assert_close(torch.logsumexp(lps, 0), torch.zeros(2, 1, dtype=torch.float64))


@pytest.mark.parametrize("decoder", ["bernoulli", "logistic", "gaussian"])
@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 15, 7)])
def test_samples_and_bounds_for_every_decoder_net_and_image_size(decoder, net, shape):
    model = small(shape, decoder=decoder, net=net)
    for mean in (True, False):
        x = model.sample(4, generator=torch.Generator().manual_seed(0), sample_mean=mean).x
        assert x.shape == (4, *shape) and torch.isfinite(x).all()
        if decoder != "gaussian":
            assert x.min() >= -1 and x.max() <= 1
    data = torch.rand(3, *shape, dtype=torch.float64) * 2 - 1
    elbo, iwae = model.likelihoods(data, iwae_k=4, generator=torch.Generator().manual_seed(0))
    assert (elbo.value <= iwae.value + 1e-9).all() and iwae.kind == "iwae-4"


def test_the_bound_accumulated_over_chunks_of_draws_equals_one_pass_over_them():
    model = small((6,))
    x = torch.randn(1, 6, dtype=torch.float64)
    elbo, iwae = model.likelihoods(
        x, iwae_k=40, generator=torch.Generator().manual_seed(3), budget=7
    )
    g = torch.Generator().manual_seed(3)  # the same draws, 7 at a time
    eps = torch.cat([torch.randn((1, m, 3), generator=g) for m in (7, 7, 7, 7, 7, 5)], 1)
    with torch.no_grad():
        logw = model.log_weights(x, eps.double())[0]
    torch.testing.assert_close(iwae.value, torch.logsumexp(logw, 1) - math.log(40))
    torch.testing.assert_close(elbo.value, logw.mean(1))
    torch.testing.assert_close(elbo.stderr, logw.std(1) / math.sqrt(40))
    w = (logw - logw.max()).exp()
    torch.testing.assert_close(iwae.stderr, w.std(1, correction=0) / w.mean(1) / math.sqrt(40))


def test_active_units_and_bad_settings():
    model = small((5,))
    x = torch.randn(100, 5, dtype=torch.float64)
    assert 0 <= model.active_units(x) <= 3
    with torch.no_grad():  # an encoder whose mean ignores x: no active unit
        model.encoder.net[-1].weight.zero_()
    assert model.active_units(x) == 0
    with pytest.raises(ConfigError, match="images"):
        small((5,), decoder="bernoulli")
    with pytest.raises(ConfigError, match="conv"):
        small((5,), net="conv")
    with pytest.raises(ConfigError, match="likelihood option 'iwae'"):
        model.resolve_likelihood_options({"iwae": 3})
    assert model.resolve_likelihood_options({"iwae_k": "50"}) == {"iwae_k": 50}
