"""PixelCNN: the exact receptive field by autograd (no blind spot, channels in order), probabilities
over every small image summing to one for each output, the discretized logistic against a direct
float64 computation, the fast sampler against full passes, and the sampler's law against
``log_prob``. Numerics in float64."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.autoregressive.pixelcnn import (
    OUTPUTS,
    PixelCNN,
    PixelCNNConfig,
    discretized_logistic_log_prob,
)


def make(shape, classes=None, seed=0, **kw) -> PixelCNN:
    small = {"channels": 6, "layers": 3, "head": 5, "kernel": 3, "first_kernel": 3}
    cfg = PixelCNNConfig(**{**small, **kw})
    with torch.random.fork_rng():  # the same weights whatever ran before (xdist orders vary)
        torch.manual_seed(seed)
        model = PixelCNN.from_config(cfg, shape, num_classes=classes).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # away from the initialisation (class biases start at zero)
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def dependencies(model: PixelCNN, x: torch.Tensor) -> torch.Tensor:
    """``dep[c, i, j, c', i', j']``: some parameter of the conditional of ``x[c, i, j]`` depends on
    the input ``x[c', i', j']`` for some example of ``x`` (by autograd; several examples, since a
    ReLU can hide a dependency on one)."""
    y = torch.zeros(len(x), dtype=torch.long) if model.classes else None

    def f(v):
        return model.head(model.net(v, y), v).sum(0)  # (C, P, H, W)

    jac = torch.autograd.functional.jacobian(f, x)  # (C, P, H, W, B, C, H, W)
    return jac.abs().sum(1).sum(3) > 0  # (C, H, W, C, H, W)


@pytest.mark.parametrize(
    "shape,kw",
    [
        ((1, 5, 5), {"layers": 5}),
        ((3, 4, 4), {"layers": 4}),
        ((1, 6, 7), {"layers": 4, "first_kernel": 5, "kernel": 5}),
    ],
    ids=["gray-5x5", "rgb-4x4", "k5"],
)
def test_each_pixel_sees_exactly_the_pixels_before_it(shape, kw):
    """With enough layers the receptive field is every earlier pixel (raster order; within a
    pixel, the earlier channels): nothing later, and no blind spot above and to the right."""
    model = make(shape, **kw)
    C, H, W = shape
    g = torch.Generator().manual_seed(0)  # seeded: a ReLU of the head can hide a path on an input
    dep = dependencies(model, torch.randn(64, *shape, dtype=torch.float64, generator=g))
    for c, i, j in itertools.product(range(C), range(H), range(W)):
        expect = torch.zeros(C, H, W, dtype=torch.bool)
        expect[:, :i] = True
        expect[:, i, :j] = True
        expect[:c, i, j] = True
        assert torch.equal(dep[c, i, j], expect), (c, i, j)


def test_the_receptive_field_grows_with_the_layers_and_never_reaches_forward():
    """Shallow: only pixels within reach (rows above and columns to either side); never later."""
    model = make((1, 8, 8), layers=2)  # reach 1 + 1 = 2 rows up, 2 columns either side
    x = torch.randn(64, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dep = dependencies(model, x)[0, 5, 4, 0]
    assert model.net.reach == 2
    rows, cols = torch.nonzero(dep, as_tuple=True)
    assert rows.min() == 3 and (rows <= 5).all()
    assert int(cols[rows < 5].min()) == 2 and int(cols[rows < 5].max()) == 6  # up-right: seen
    assert not dep[5, 4:].any() and not dep[6:].any()


def all_images(shape, levels):
    n = math.prod(shape)
    grid = torch.tensor(list(itertools.product(range(levels), repeat=n)))
    return grid.reshape(-1, *shape)


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("classes", [None, 3])
def test_probabilities_of_every_image_sum_to_one(output, classes):
    shape, levels = ((2, 2, 2), 2) if output == "bernoulli" else ((2, 1, 2), 4)
    model = make(shape, classes, output=output, levels=levels, components=2)
    k = all_images(shape, levels)
    x = k.double() * (2.0 / (levels - 1)) - 1.0  # exactly on the grid: no binarization noise
    lp = model.log_prob(x).value
    assert len(lp) == levels ** math.prod(shape)
    assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-9)
    if classes:  # and each class's conditional law, and the marginal is their uniform mixture
        per = torch.stack([model.log_prob(x, labels=c).value for c in range(classes)])
        assert torch.logsumexp(per, 1).abs().max() < 1e-9
        assert torch.allclose(lp, torch.logsumexp(per, 0) - math.log(classes))


def test_discretized_logistic_matches_a_direct_computation_and_sums_to_one():
    levels = 16
    g = torch.Generator().manual_seed(1)
    # (1 example, 1 channel, 3 components x 3, 4 x 5 "pixels") of very different scales
    params = torch.randn(1, 1, 9, 4, 5, generator=g, dtype=torch.float64)
    params[:, :, 3:6] *= 1.5  # means, some outside [-1, 1]
    params[:, :, 6:9] = (
        torch.linspace(-9, 6, 20, dtype=torch.float64).view(1, 4, 5).expand(3, 4, 5)[None, :] * 1.0
    )
    ks = torch.arange(levels)
    logp = torch.stack([
        discretized_logistic_log_prob(torch.full((1, 1, 4, 5), int(k)), params, levels) for k in ks
    ])  # fmt: skip
    assert torch.allclose(
        torch.logsumexp(logp, 0), torch.zeros(1, 1, 4, 5, dtype=torch.float64), atol=1e-9
    )
    # direct: mixture of CDF differences with infinite outer edges
    logits, mu, log_s = params[0, 0, :3], params[0, 0, 3:6], params[0, 0, 6:].clamp(min=-7)
    w = torch.softmax(logits, 0)
    delta = 1.0 / (levels - 1)
    for k in range(levels):
        xk = 2 * delta * k - 1
        hi = (
            torch.sigmoid((xk + delta - mu) / log_s.exp())
            if k < levels - 1
            else torch.ones_like(mu)
        )
        lo = torch.sigmoid((xk - delta - mu) / log_s.exp()) if k > 0 else torch.zeros_like(mu)
        p = (w * (hi - lo)).sum(0)
        ok = p > 1e-12  # where the direct difference is still accurate
        assert torch.allclose(logp[k, 0, 0][ok], p[ok].log(), rtol=1e-6, atol=1e-9)


def test_a_tiny_scale_puts_all_mass_on_one_bin_and_gradients_stay_finite():
    levels = 256
    params = torch.zeros(1, 1, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        params[0, 0, 1] = 2 * 100 / 255 - 1  # mean on the centre of bin 100
        params[0, 0, 2] = -30.0  # clamped to min_log_scale = -12: s = 6e-6, bin half-width 4e-3
    lp = discretized_logistic_log_prob(torch.full((1, 1, 1, 1), 100), params, levels, -12.0)
    assert float(lp.detach()) == pytest.approx(0.0, abs=1e-6)
    far = discretized_logistic_log_prob(torch.full((1, 1, 1, 1), 3), params, levels, -12.0)
    (lp + far).sum().backward()
    assert torch.isfinite(params.grad).all() and float(far.detach()) < -50


@pytest.mark.parametrize("output", OUTPUTS)
def test_the_fast_sampler_draws_what_full_passes_draw(output):
    """Row-wise vertical links and column-cropped horizontal passes (reach 3 < the 6x7 image):
    the same images, draw for draw, as running the whole network for every pixel."""
    shape = (2, 6, 7)
    model = make(shape, 4, output=output, levels=8, components=2, layers=3)
    assert model.net.reach < 6
    labels = torch.tensor([0, 3, 1])
    fast = model.sample(3, labels=labels, generator=torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)
    k = torch.zeros((3, *shape), dtype=torch.long)
    with torch.no_grad():
        for i, j, c in itertools.product(range(6), range(7), range(2)):
            params = model.params(k, labels)[:, c, :, i, j]
            k[:, c, i, j] = model._draw(params, g)
    slow = model._inputs(k)
    assert torch.equal(fast.x, slow)
    assert fast.nfe == 42 and torch.equal(fast.labels, labels)


@pytest.mark.parametrize("output", ["softmax", "logistic"])
def test_samples_follow_the_likelihood(output):
    """One pixel of two channels (G given R through the head): the frequencies of 20,000 draws
    against ``exp(log_prob)`` of every value pair."""
    levels = 5
    model = make((2, 1, 1), output=output, levels=levels, components=2, seed=3)
    k = all_images((2, 1, 1), levels)
    p = model.log_prob(k.double() * (2.0 / (levels - 1)) - 1.0).value.exp()
    x = model.sample(20_000, generator=torch.Generator().manual_seed(0)).x
    drawn = torch.round((x + 1) / 2 * (levels - 1)).long().reshape(-1, 2)
    freq = torch.bincount(drawn[:, 0] * levels + drawn[:, 1], minlength=levels**2).double()
    tv = 0.5 * (freq / len(drawn) - p).abs().sum()
    assert float(tv) < 0.03
    assert p.max() < 0.6  # a law with some spread, so the check means something


def test_binarization_is_drawn_in_prepare_and_held_out_scoring_is_seeded():
    model = make((1, 4, 4), output="bernoulli")
    x = torch.rand(8, 1, 4, 4, dtype=torch.float64) * 2 - 1
    b1 = model.prepare(Batch(x), torch.Generator().manual_seed(1)).aux["pixels"]
    b2 = model.prepare(Batch(x), torch.Generator().manual_seed(1)).aux["pixels"]
    b3 = model.prepare(Batch(x), torch.Generator().manual_seed(2)).aux["pixels"]
    assert torch.equal(b1, b2) and not torch.equal(b1, b3)
    assert set(b1.unique().tolist()) <= {0, 1}
    lp1 = model.log_prob(x, generator=torch.Generator().manual_seed(7)).value
    lp2 = model.log_prob(x, generator=torch.Generator().manual_seed(7)).value
    assert torch.equal(lp1, lp2)
    # the loss of a prepared batch is the mean NLL of its binarization
    loss = model.loss(model.prepare(Batch(x), torch.Generator().manual_seed(1)))
    with torch.no_grad():
        nll = float(-model.log_prob_tensor(b1, None).mean())
    assert float(loss.detach()) == pytest.approx(nll)


def test_quantized_outputs_take_data_on_the_grid_as_it_is():
    model = make((1, 3, 3), output="softmax", levels=256)
    k = torch.randint(256, (4, 1, 3, 3))
    x = k.double() / 255 * 2 - 1
    assert torch.equal(model.targets(x, None), k)
    assert torch.allclose(model.observed(x, None), x)


def test_training_lowers_the_nll():
    torch.manual_seed(0)
    model = PixelCNN.from_config(
        PixelCNNConfig(channels=8, layers=2, head=8, first_kernel=3), (1, 6, 6)
    )
    x = torch.zeros(64, 1, 6, 6) - 1
    x[:, :, :, 2:4] = 1  # a vertical bar
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for step in range(60):
        loss = model.loss(model.prepare(Batch(x), torch.Generator().manual_seed(step)))
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.2 * first  # 36 pixels, nearly deterministic: ~25 nats -> < 5


def test_labels_and_bad_settings_are_explained():
    plain = make((1, 4, 4))
    with pytest.raises(ConfigError, match="not class-conditional"):
        plain.sample(2, labels=1)
    cond = make((1, 4, 4), classes=3)
    with pytest.raises(ConfigError, match=r"labels must be in \[0, 2\]"):
        cond.sample(2, labels=5)
    with pytest.raises(ConfigError, match="no labels"):
        cond.loss(Batch(torch.zeros(2, 1, 4, 4, dtype=torch.float64)))
    unconditional = PixelCNN.from_config(PixelCNNConfig(conditional=False), (1, 4, 4), 3)
    assert unconditional.classes is None and unconditional.label_classes({}) is None
    with pytest.raises(ConfigError, match="images"):
        PixelCNN.from_config(PixelCNNConfig(), (5,))
    with pytest.raises(ConfigError, match="odd"):
        PixelCNN.from_config(PixelCNNConfig(kernel=4), (1, 4, 4))
    with pytest.raises(ConfigError, match="output"):
        PixelCNN.from_config(PixelCNNConfig(output="gauss"), (1, 4, 4))
