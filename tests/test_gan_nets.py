"""GAN backbones (genlab.nets.gan): shapes for points and images of odd and non-square sizes,
generator range, gradients to every parameter, spectral norm (largest singular value ~1), the
projection term against an independent computation, conditional/unconditional misuse,
``build_gan_nets`` dispatch and refusals, float64."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from genlab.errors import ConfigError
from genlab.nets.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    GANNetConfig,
    MLPDiscriminator,
    MLPGenerator,
    build_gan_nets,
    size_chain,
)
from genlab.registry import NETS

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 12, 20), (3, 64, 64)]
SMALL = GANNetConfig(z_dim=8, hidden=16, depth=2, channels=4)  # fast nets for the tests


def _pair(shape, num_classes=None, **kw):
    cfg = GANNetConfig(**{**SMALL.__dict__, **kw})
    return build_gan_nets(cfg, shape, num_classes)


def _sn_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if parametrize.is_parametrized(m, "weight")]


def test_registered() -> None:
    assert NETS.get("mlp-generator") is MLPGenerator
    assert NETS.get("mlp-discriminator") is MLPDiscriminator
    assert NETS.get("dcgan-generator") is DCGANGenerator
    assert NETS.get("dcgan-discriminator") is DCGANDiscriminator


@pytest.mark.parametrize("dim", [1, 2, 7])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_point_shapes(dim: int, num_classes: int | None) -> None:
    torch.manual_seed(0)
    gen, disc = _pair((dim,), num_classes)
    assert isinstance(gen, MLPGenerator) and isinstance(disc, MLPDiscriminator)
    z = torch.randn(5, 8)
    y = torch.arange(5) % 3 if num_classes else None
    x = gen(z, y)
    assert x.shape == (5, dim)
    out = disc(x, y)
    assert out.shape == (5,) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_size_chain() -> None:
    assert size_chain(28, 28) == [(4, 4), (7, 7), (14, 14), (28, 28)]
    assert size_chain(8, 8) == [(4, 4), (8, 8)]
    assert size_chain(12, 20) == [(6, 10), (12, 20)]
    assert size_chain(64, 64)[0] == (4, 4) and len(size_chain(64, 64)) == 5


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("num_classes", [None, 4])
def test_image_shapes_and_range(shape: tuple[int, int, int], num_classes: int | None) -> None:
    torch.manual_seed(0)
    gen, disc = _pair(shape, num_classes)
    assert isinstance(gen, DCGANGenerator) and isinstance(disc, DCGANDiscriminator)
    z = 3 * torch.randn(4, 8)
    y = torch.arange(4) if num_classes else None
    x = gen(z, y)
    assert x.shape == (4, *shape)
    out = disc(x, y)
    assert out.shape == (4,) and torch.isfinite(out).all()
    # the output is squashed into [-1, 1] even when the last conv is pushed far out of range
    with torch.no_grad():
        gen.out.weight.mul_(1e3)
    x = gen(z, y)
    assert x.min() >= -1 and x.max() <= 1 and x.abs().max() > 0.99
    assert x.std() > 0.1  # not constant


@pytest.mark.parametrize("shape", [(2,), (1, 12, 20)])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_gradients_reach_every_parameter(shape, spectral_norm: bool) -> None:
    torch.manual_seed(0)
    gen, disc = _pair(shape, num_classes=3, spectral_norm=spectral_norm)
    y = torch.arange(6) % 3  # every class, so every embedding row gets a gradient
    x = gen(torch.randn(6, 8), y)
    w = torch.randn(6)  # a random weighting: a plain sum after BatchNorm has zero gradient
    (disc(x, y) * w).sum().backward()
    for net in (gen, disc):
        for name, p in net.named_parameters():
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shape", [(3,), (1, 8, 8), (1, 12, 20), (3, 32, 32)])
def test_spectral_norm_unit_singular_value(shape) -> None:
    """Each wrapped weight, reshaped to (out, in·k·k) for convs -- the matrix torch normalises,
    not the convolution's operator norm -- has largest singular value ~1 after some forwards."""
    torch.manual_seed(0)
    _, disc = _pair(shape, num_classes=3, spectral_norm=True)
    mods = _sn_modules(disc)
    linears = [m for m in disc.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding))]
    assert mods and len(mods) == len(linears)  # every conv/linear/embedding is wrapped
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())
    with torch.no_grad():  # rescale the raw weights to sigma = 5: without SN the test fails
        for m in mods:
            raw = m.parametrizations.weight.original
            raw.mul_(5.0 / torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2))
    disc.train()
    x, y = torch.randn(8, *shape), torch.arange(8) % 3
    with torch.no_grad():
        for _ in range(25):  # one power iteration per forward in train mode
            disc(x, y)
    disc.eval()  # reading .weight in eval mode does not iterate again
    with torch.no_grad():
        for m in mods:
            w = m.weight
            sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
            raw = m.parametrizations.weight.original
            raw_sigma = torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2)
            assert abs(sigma.item() - 1) < 2e-2, (m, sigma)
            assert raw_sigma > 4.9  # the normalisation is doing the work


def test_spectral_norm_refuses_batch_norm() -> None:
    with pytest.raises(ConfigError, match="spectral"):
        DCGANDiscriminator((1, 8, 8), channels=4, spectral_norm=True, norm="batch")
    with pytest.raises(ConfigError, match="spectral_norm"):
        _pair((1, 8, 8), spectral_norm=True, d_norm="batch")
    disc = DCGANDiscriminator((1, 8, 8), channels=4, norm="layer")
    assert any(isinstance(m, nn.GroupNorm) for m in disc.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())


def _mlp_phi(disc: MLPDiscriminator, x: torch.Tensor) -> torch.Tensor:
    """φ(x) recomputed from the weights alone (LeakyReLU(0.2) after every layer)."""
    h = x
    for m in disc.phi:
        if isinstance(m, nn.Linear):
            h = F.leaky_relu(h @ m.weight.T + m.bias, 0.2)
    return h


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_projection_term_points(spectral_norm: bool) -> None:
    torch.manual_seed(0)
    disc = MLPDiscriminator(3, hidden=16, depth=2, num_classes=4, spectral_norm=spectral_norm)
    disc = disc.double().eval()  # eval: the spectral-norm weights stay fixed between calls
    x = torch.randn(6, 3, dtype=torch.float64)
    y, y2 = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([3, 2, 1, 0, 2, 2])
    with torch.no_grad():
        phi = _mlp_phi(disc, x)  # (B, hidden), independent of disc.forward
        emb = disc.class_embed.weight  # (num_classes, hidden)
        torch.testing.assert_close(disc.features(x), phi)
        expected = ((emb[y] - emb[y2]) * phi).sum(-1)
        torch.testing.assert_close(disc(x, y) - disc(x, y2), expected)
        # what is left is the label-free head ψ(φ(x))
        psi = phi @ disc.head.weight[0] + disc.head.bias[0]
        torch.testing.assert_close(disc(x, y) - (emb[y] * phi).sum(-1), psi)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_projection_term_images(spectral_norm: bool) -> None:
    torch.manual_seed(0)
    disc = DCGANDiscriminator((1, 12, 20), channels=4, num_classes=5, spectral_norm=spectral_norm)
    disc = disc.double().eval()
    x = torch.randn(5, 1, 12, 20, dtype=torch.float64)
    y, y2 = torch.arange(5), torch.tensor([4, 4, 0, 1, 2])
    with torch.no_grad():
        phi = disc.features(x)
        assert phi.shape == (5, 8 * 6 * 10)  # 2x channels on the flattened 6x10 base map
        emb = disc.class_embed.weight
        expected = ((emb[y] - emb[y2]) * phi).sum(-1)
        assert expected.abs().max() > 1e-3  # the labels matter
        torch.testing.assert_close(disc(x, y) - disc(x, y2), expected)


def test_conditional_generator_uses_labels() -> None:
    torch.manual_seed(0)
    gen = DCGANGenerator((1, 8, 8), z_dim=8, channels=4, num_classes=3).eval()
    z = torch.randn(1, 8).expand(3, -1)
    x = gen(z, torch.arange(3))
    assert not torch.allclose(x[0], x[1]) and not torch.allclose(x[1], x[2])


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8)])
def test_misuse_of_labels(shape) -> None:
    cond_g, cond_d = _pair(shape, num_classes=3)
    unc_g, unc_d = _pair(shape)
    z, x, y = torch.randn(2, 8), torch.randn(2, *shape), torch.tensor([0, 2])
    for net, inp in ((cond_g, z), (cond_d, x)):
        with pytest.raises(ValueError, match="conditional .* needs labels"):
            net(inp)
        with pytest.raises(ValueError, match="int64"):
            net(inp, y.float())
        with pytest.raises(ValueError, match="int64"):
            net(inp, torch.tensor([0, 1, 2]))  # wrong batch size
    for net, inp in ((unc_g, z), (unc_d, x)):
        with pytest.raises(ValueError, match="unconditional"):
            net(inp, y)
    with pytest.raises(ValueError, match="expects x of shape"):
        unc_d(torch.randn(2, 5))
    with pytest.raises(ValueError, match="latents z"):
        unc_g(torch.randn(2, 9))


def test_build_picks_the_pair() -> None:
    g, d = build_gan_nets(GANNetConfig(), (2,), None)
    assert isinstance(g, MLPGenerator) and isinstance(d, MLPDiscriminator)
    assert g.z_dim == 64 and g.num_classes is None and d.num_classes is None
    g, d = build_gan_nets(GANNetConfig(spectral_norm=True), (1, 28, 28), 10)
    assert isinstance(g, DCGANGenerator) and isinstance(d, DCGANDiscriminator)
    assert g.num_classes == d.num_classes == 10 and _sn_modules(d) and d.norm == "none"
    # any object with (some of) the fields works, as a family config would
    g, d = build_gan_nets(SimpleNamespace(z_dim=5, hidden=12, lr=1e-3), (3,), None)
    assert g.z_dim == 5 and g.net[0].out_features == 12


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((), "tokens"),
        ((1, 7, 28), "at least 8x8"),
        ((3, 28, 4), "at least 8x8"),
        ((28, 28), "2-D"),
        ((1, 1, 8, 8), "4-D"),
    ],
)
def test_build_refuses_bad_shapes(shape, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_gan_nets(GANNetConfig(), shape, None)


def test_build_refuses_bad_fields() -> None:
    with pytest.raises(ConfigError, match="model.z_dim"):
        build_gan_nets(GANNetConfig(z_dim=0), (2,), None)
    with pytest.raises(ConfigError, match="model.activation"):
        build_gan_nets(GANNetConfig(activation="swish"), (2,), None)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(2,), (1, 12, 20)])
def test_float64(shape) -> None:
    torch.manual_seed(0)
    gen, disc = _pair(shape, num_classes=2, spectral_norm=True)
    gen, disc = gen.double(), disc.double()
    z = gen.sample_latent(4, generator=torch.Generator().manual_seed(1))
    assert z.dtype == torch.float64 and z.shape == (4, 8)
    torch.testing.assert_close(z, gen.sample_latent(4, generator=torch.Generator().manual_seed(1)))
    y = torch.tensor([0, 1, 1, 0])
    x = gen(z, y)
    out = disc(x, y)
    assert x.dtype == out.dtype == torch.float64
    out.sum().backward()
    assert all(p.grad.dtype == torch.float64 for p in gen.parameters())
