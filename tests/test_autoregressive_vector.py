"""FVSBN, NADE and MADE: the autoregressive property by autograd, probabilities over every binary
vector summing to one, a closed-form Gaussian, the MADE ensemble, seeded binarization.

The families come from the registry (every subclass of VectorAR), so a new one is tested here the
moment it is registered. Numerics in float64."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.autoregressive.vector import FVSBN, MADEModel, VectorAR
from genlab.registry import MODELS

FAMILIES = [name for name in MODELS.names() if issubclass(MODELS.get(name), VectorAR)]
# (family, config) variants: every family, MADE with several masks and depths, both outputs
VARIANTS = [(f, {}) for f in FAMILIES] + [
    ("made", {"masks": 4, "ensemble": 4, "depth": 2}),
    ("made", {"masks": 3, "ensemble": 2, "hidden": 3}),  # fewer hidden units than inputs
]


def make(family: str, shape: tuple[int, ...], seed: int = 0, **kw) -> VectorAR:
    cls = MODELS.get(family)
    small = {} if family == "fvsbn" else {"hidden": 9}
    model = cls.from_config(cls.Config(**{**small, **kw}), shape).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # away from the zero initialisation
        for p in model.parameters():
            p.add_(0.7 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def test_the_families_are_registered():
    assert set(FAMILIES) == {"fvsbn", "nade", "made"}


@pytest.mark.parametrize("family,kw", VARIANTS, ids=[f"{f}-{len(k)}" for f, k in VARIANTS])
@pytest.mark.parametrize("output", ["bernoulli", "mixture"])
def test_each_conditional_sees_only_earlier_coordinates(family, kw, output):
    model = make(family, (5,), output=output, components=2, **kw)
    # seeded, and enough points that no hidden unit is inactive on all of them (a ReLU unit off
    # for every point hides a real dependency; with 3 unseeded points this failed once in CI)
    x = torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for mask in range(model.n_masks):
        model.use_mask(mask)
        order = model.order().tolist()
        rank = {coord: k for k, coord in enumerate(order)}
        jac = torch.autograd.functional.jacobian(lambda v: model.conditioner(v).sum(0), x)
        # jac: (P, D, B, D_in); dep[i, j]: some parameter of conditional i depends on x_j
        dep = (jac.abs().sum(2) > 0).any(0)
        for i in range(5):
            for j in range(5):
                if rank[j] >= rank[i]:
                    assert not dep[i, j], (mask, i, j)
        # and it is not trivially independent: the last coordinate sees something
        assert dep[order[-1]].any()


@pytest.mark.parametrize("family,kw", VARIANTS, ids=[f"{f}-{len(k)}" for f, k in VARIANTS])
def test_probabilities_of_every_binary_vector_sum_to_one(family, kw):
    model = make(family, (1, 2, 3), **kw)  # a 2x3 binary image: 64 vectors
    every = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=6)), dtype=torch.float64)
    lp = model.log_prob(every.reshape(64, 1, 2, 3))
    assert lp.kind == "exact"
    assert float(lp.value.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    for mask in range(model.n_masks):  # every single ordering is a distribution too
        model.use_mask(mask)
        total = model.log_prob_tensor((every + 1) / 2).detach().exp().sum()
        assert float(total) == pytest.approx(1.0)


def test_fvsbn_with_one_gaussian_is_the_full_covariance_gaussian():
    # x1 ~ N(b1, s1²), x2 | x1 ~ N(b2 + w x1, s2²): a closed-form bivariate normal
    model = FVSBN.from_config(FVSBN.Config(output="mixture", components=1), (2,)).double()
    b1, b2, w, ls1, ls2 = 0.3, -1.0, 0.8, math.log(0.5), math.log(1.5)
    with torch.no_grad():
        bias = model.linear.bias.view(3, 2)  # (P, D): logit, mean, log-std
        bias[1] = torch.tensor([b1, b2])
        bias[2] = torch.tensor([ls1, ls2])
        model.linear.weight.view(3, 2, 2)[1, 1, 0] = w  # the mean of x2 depends on x1
    s1, s2 = math.exp(ls1), math.exp(ls2)
    mean = torch.tensor([b1, b2 + w * b1], dtype=torch.float64)
    cov = torch.tensor([[s1**2, w * s1**2], [w * s1**2, w**2 * s1**2 + s2**2]], dtype=torch.float64)
    law = torch.distributions.MultivariateNormal(mean, cov)
    x = torch.randn(50, 2, dtype=torch.float64) * 2
    torch.testing.assert_close(model.log_prob(x).value, law.log_prob(x))
    xs = model.sample(20000, generator=torch.Generator().manual_seed(0)).x
    torch.testing.assert_close(xs.mean(0), mean, atol=0.04, rtol=0)
    torch.testing.assert_close(torch.cov(xs.T), cov, atol=0.08, rtol=0)


def test_the_made_ensemble_averages_the_densities_of_its_masks():
    model = make("made", (4,), masks=5, ensemble=3, output="mixture", components=2)
    x = torch.randn(7, 4, dtype=torch.float64)
    per_mask = []
    for k in range(3):
        model.use_mask(k)
        per_mask.append(model.log_prob_tensor(x).exp())
    expected = torch.stack(per_mask).mean(0).log()
    torch.testing.assert_close(model.log_prob(x).value, expected)
    assert model.log_prob(x).nfe == 3


def test_made_draws_one_mask_per_step_in_prepare_and_trains_on_it():
    model = make("made", (1, 2, 2), masks=4)
    x = torch.rand(6, 1, 2, 2, dtype=torch.float64) * 2 - 1
    a = model.prepare(Batch(x), torch.Generator().manual_seed(3))
    b = model.prepare(Batch(x), torch.Generator().manual_seed(3))
    assert torch.equal(a.aux["binary"], b.aux["binary"]) and torch.equal(
        a.aux["mask"], b.aux["mask"]
    )
    assert set(a.aux["binary"].unique().tolist()) <= {0.0, 1.0}
    seen = {int(model.prepare(Batch(x), torch.Generator().manual_seed(s)).aux["mask"][0])
            for s in range(40)}  # fmt: skip
    assert seen == {0, 1, 2, 3}
    model.loss(a)  # selects the drawn mask by its tensor index: the masks and order built for it
    masks, order = model.net._masks_of(int(a.aux["mask"][0]))
    assert torch.equal(model.net.order, order)
    for layer, mask in zip([*model.net.layers, model.net.out], masks, strict=True):
        assert torch.equal(layer.mask, mask.to(layer.mask.dtype))


def test_binary_data_is_not_rebinarized_and_held_out_scoring_is_seeded():
    model = make("nade", (1, 2, 2))
    binary = torch.tensor([[1.0, -1.0, -1.0, 1.0]], dtype=torch.float64).reshape(1, 1, 2, 2)
    a = model.log_prob(binary, generator=torch.Generator().manual_seed(0)).value
    b = model.log_prob(binary, generator=torch.Generator().manual_seed(1)).value
    assert torch.equal(a, b)
    grey = torch.rand(20, 1, 2, 2, dtype=torch.float64) * 2 - 1
    torch.manual_seed(5)
    c = model.log_prob(grey).value
    torch.manual_seed(5)
    assert torch.equal(c, model.log_prob(grey).value)


def test_samples_are_binary_images_or_real_vectors():
    img = make("made", (1, 3, 3), masks=2).sample(4, generator=torch.Generator().manual_seed(0))
    assert img.x.shape == (4, 1, 3, 3) and set(img.x.unique().tolist()) <= {-1.0, 1.0}
    assert img.nfe == 9
    pts = make("nade", (3,)).sample(4, generator=torch.Generator().manual_seed(0), mask=0)
    assert pts.x.shape == (4, 3) and torch.isfinite(pts.x).all()


def test_bad_settings_are_explained():
    with pytest.raises(ConfigError, match="ensemble in"):
        MADEModel.from_config(MADEModel.Config(masks=2, ensemble=3), (4,))
    with pytest.raises(ConfigError, match="vectors"):
        FVSBN.from_config(FVSBN.Config(), (2, 3))
    with pytest.raises(ConfigError, match="mask must be in"):
        make("made", (3,), masks=2).sample(2, mask=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_real_values_are_standardized_on_the_first_batch_and_the_density_stays_normalized(family):
    """The first training batch sets the per-coordinate affine map (zero mean, unit variance);
    the density, a change of variables, still integrates to one (a 2-D grid)."""
    cls = MODELS.get(family)
    kw = {} if family == "fvsbn" else {"hidden": 9}
    model = cls.from_config(cls.Config(output="mixture", components=3, **kw), (2,)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 0.2]) + 5.0
    model.train()
    model.loss(Batch(x))
    assert bool(model.standardized)
    z = (x + model.loc) * model.log_scale.exp()
    torch.testing.assert_close(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    loc = model.loc.detach().clone()
    model.loss(Batch(x * 2))  # later batches do not reset it
    assert torch.equal(model.loc.detach(), loc)
    fresh = cls.from_config(cls.Config(output="mixture", components=3, **kw), (2,)).double()
    fresh.load_state_dict(model.state_dict())  # nor the first batch after a resume
    fresh.train()
    fresh.loss(Batch(x * 2))
    assert torch.equal(fresh.loc.detach(), loc)
    model.eval()
    u = torch.linspace(-55, 65, 801, dtype=torch.float64)  # 20 standard deviations each way
    w = torch.linspace(1.0, 9.0, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(u, w, indexing="ij"), -1).reshape(-1, 2)
    mass = model.log_prob(grid).value.exp().sum() * (u[1] - u[0]) * (w[1] - w[0])
    assert float(mass) == pytest.approx(1.0, abs=2e-3)
    xs = model.sample(2000, generator=torch.Generator().manual_seed(1)).x  # in data units
    assert abs(float(xs[:, 0].mean()) - 5.0) < 1.0 and abs(float(xs[:, 1].mean()) - 5.0) < 0.1


def test_a_bimodal_first_coordinate_is_learnt():
    """The first coordinate has no inputs: its mixture must separate its components on its own
    (it did not, before the means were spread and the data standardized)."""
    torch.manual_seed(0)
    model = MADEModel.from_config(MADEModel.Config(output="mixture", components=4, hidden=16), (1,))
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [torch.randn(500, 1, generator=g) * 0.1 - 2, torch.randn(500, 1, generator=g) * 0.1 + 2]
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model.loss(Batch(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the two-mode law's entropy: log 2 + 0.5 log(2 pi e 0.01) = -0.19; one Gaussian: 1.42
    assert float(loss) < 0.0


@pytest.mark.parametrize("dim", [1, 2, 5, 16, 17])
def test_nade_block_sums_equal_the_running_sum(dim):
    """NADE's blocked computation against the plain running sum ``c + Σ_{j<i} x_j W_j``."""
    model = make("nade", (dim,), output="mixture", components=2)
    x = torch.randn(6, dim, dtype=torch.float64)
    xw = x[:, :, None] * model.W
    a = model.c + torch.cumsum(xw, dim=1) - xw
    plain = torch.einsum("bdh,pdh->bpd", torch.sigmoid(a), model.V) + model.b
    torch.testing.assert_close(model.conditioner(x), plain)
