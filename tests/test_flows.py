"""Normalizing flows: one contract test over every layer and every flow (invertibility, the
log-determinant against autograd, gradients), the dequantization arithmetic, save/load through the
trainer, a trained density that integrates to one, and the command line.

Numerics in float64 (zuko's tests/test_flows.py is the model of this file)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.models.flows import layers as L
from genlab.models.flows.flows import NICE, NSF, Flow, Glow, RealNVP
from genlab.nets.made import MADE
from genlab.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
# every registered discrete flow, so a new one joins the tests the moment it exists
DISCRETE = [name for name in MODELS.names() if issubclass(MODELS.get(name), Flow)]


def _perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Move every parameter away from its (often identity) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _mlp(mask: torch.Tensor, n: int) -> L.MLPConditioner:
    kept = int(mask.sum())
    return L.MLPConditioner(kept, n, len(mask) - kept, hidden=8, depth=2)


def _conv(ch: int, n: int) -> L.ConvConditioner:
    return L.ConvConditioner(ch, n, hidden=8)


# name -> (factory, example shape, input law): "normal" or "unit" (in (0, 1), for Logit)
LAYERS: dict[str, tuple[Callable[[], L.Transform], tuple[int, ...], str]] = {
    "actnorm-points": (lambda: L.ActNorm(3), (3,), "normal"),
    "actnorm-images": (lambda: L.ActNorm(2), (2, 2, 2), "normal"),
    "batchnorm-points": (lambda: L.BatchNorm(3), (3,), "normal"),
    "batchnorm-images": (lambda: L.BatchNorm(2), (2, 2, 2), "normal"),
    "diagonal-scaling": (lambda: L.DiagonalScaling((3,)), (3,), "normal"),
    "permutation-reverse": (lambda: L.Permutation(4, "reverse"), (4,), "normal"),
    "permutation-shuffle": (lambda: L.Permutation(4, "shuffle", seed=3), (4,), "normal"),
    "invconv1x1-points": (lambda: L.InvConv1x1(3), (3,), "normal"),
    "invconv1x1-images": (lambda: L.InvConv1x1(4), (4, 2, 2), "normal"),
    "logit": (lambda: L.Logit(0.05), (3,), "unit"),
    "shift": (lambda: L.Shift(0.5), (3,), "normal"),
    "squeeze": (lambda: L.Squeeze(), (1, 4, 4), "normal"),
    "additive-coupling": (
        lambda: L.AdditiveCoupling(L.alternating_mask(3, 0), _mlp(L.alternating_mask(3, 0), 1)),
        (3,),
        "normal",
    ),
    "affine-coupling-half": (
        lambda: L.AffineCoupling(L.half_mask(4, 1), _mlp(L.half_mask(4, 1), 2)),
        (4,),
        "normal",
    ),
    "affine-coupling-checkerboard": (
        lambda: L.AffineCoupling(L.checkerboard_mask((1, 4, 4), 1), _conv(1, 2)),
        (1, 4, 4),
        "normal",
    ),
    "affine-coupling-channel": (
        lambda: L.AffineCoupling(L.channel_mask((4, 2, 2), 0), _conv(4, 2)),
        (4, 2, 2),
        "normal",
    ),
    "spline-coupling": (
        # bound 2 with N(0, 2²) inputs: both the spline and its linear tails are exercised
        lambda: L.SplineCoupling(
            L.alternating_mask(3, 1), _mlp(L.alternating_mask(3, 1), 14), bins=5, bound=2.0
        ),
        (3,),
        "wide",
    ),
    "maf-layer": (
        lambda: L.MaskedAutoregressive(MADE(4, 2, [8, 8], zero_init=True)),
        (4,),
        "normal",
    ),
    "iaf-layer": (
        lambda: L.Inverse(
            L.MaskedAutoregressive(MADE(3, 2, [8], order=torch.tensor([2, 0, 1]), zero_init=True))
        ),
        (3,),
        "normal",
    ),
    "multiscale-split-prior": (
        lambda: L.MultiScale(
            L.Sequential(L.ActNorm(4), L.AffineCoupling(L.channel_mask((4, 2, 2), 0), _conv(4, 2))),
            L.Sequential(L.InvConv1x1(2), L.ActNorm(2)),
            channels=4,
            split_prior=True,
        ),
        (1, 4, 4),
        "normal",
    ),
}


def _inputs(shape: tuple[int, ...], law: str, n: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if law == "unit":
        return torch.rand((n, *shape), generator=g, dtype=torch.float64) * 0.9 + 0.05
    x = torch.randn((n, *shape), generator=g, dtype=torch.float64)
    return 2 * x if law == "wide" else x


def _ready_layer(name: str) -> tuple[L.Transform, torch.Tensor]:
    factory, shape, law = LAYERS[name]
    torch.manual_seed(0)
    layer = factory().double()
    x = _inputs(shape, law)
    layer.train()
    layer(_inputs(shape, law, n=16, seed=9))  # data-dependent init / running statistics
    _perturb(layer)
    layer.eval()
    return layer, x


def _flow(family: str, shape: tuple[int, ...], **kw) -> torch.nn.Module:
    cls = MODELS.get(family)
    small = {"layers": 2, "hidden": 8}
    if family != "ffjord":
        small["depth"] = 1
    if family in ("nsf",):
        small["bins"] = 4
    if len(shape) == 3:
        small["levels"] = 17
    model = cls.from_config(cls.Config(**{**small, **kw}), shape).double()
    model.train()
    x = torch.rand((16, *shape), dtype=torch.float64) * 2 - 1
    model.loss(Batch(x))  # data-dependent init
    _perturb(model, 0.1)
    model.eval()
    return model


FLOWS = [
    ("nice", (3,), {}),
    ("realnvp", (3,), {"norm": "batchnorm"}),
    ("realnvp", (4,), {"mask": "half", "norm": "actnorm"}),
    ("glow", (3,), {}),
    ("glow", (4,), {"permutation": "shuffle", "coupling": "additive"}),
    ("nsf", (3,), {"permutation": "lu", "norm": "actnorm"}),
    ("realnvp", (1, 4, 4), {"norm": "actnorm"}),
    ("glow", (1, 4, 4), {}),
    ("glow", (2, 4, 4), {"preprocess": "logit", "split_prior": False}),
    ("nice", (1, 2, 2), {}),
    ("nsf", (1, 2, 2), {}),
    ("maf", (3,), {}),
    ("maf", (4,), {"order": "random", "norm": "batchnorm"}),
    ("iaf", (3,), {"norm": "actnorm"}),
    ("maf", (1, 2, 2), {}),
]


def test_every_registered_flow_is_in_the_contract():
    assert set(DISCRETE) >= {"nice", "realnvp", "glow", "nsf", "maf", "iaf"}
    assert set(DISCRETE) <= {family for family, _, _ in FLOWS}


def _flow_input(model, shape: tuple[int, ...]) -> torch.Tensor:
    """An input to ``model.transform``: points, or dequantized images in (0, 1)."""
    law = "unit" if len(shape) == 3 else "normal"
    return _inputs(shape, law, n=4)


def _check_transform(t: L.Transform, x: torch.Tensor) -> None:
    """The contract: shapes, inverse(forward(x)) = x, inverse logdet = -forward logdet, and the
    forward logdet equals log|det J| of autograd's Jacobian, example by example."""
    z, ld = t(x)
    assert ld.shape == (x.shape[0],)
    assert torch.isfinite(z).all() and torch.isfinite(ld).all()
    x_back, ld_inv = t.inverse(z)
    assert x_back.shape == x.shape
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ld_inv, -ld, atol=1e-6, rtol=1e-6)
    for i in range(x.shape[0]):
        xi = x[i : i + 1]

        def f(v: torch.Tensor, xi: torch.Tensor = xi) -> torch.Tensor:
            return t(v.reshape(xi.shape))[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(f, xi.reshape(-1))
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(ld[i], logabs, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_contract(name):
    layer, x = _ready_layer(name)
    _check_transform(layer, x)


@pytest.mark.parametrize(
    "family,shape,kw", FLOWS, ids=[f"{f}-{'x'.join(map(str, s))}" for f, s, _ in FLOWS]
)
def test_flow_contract(family, shape, kw):
    model = _flow(family, shape, **kw)
    _check_transform(model.transform, _flow_input(model, shape))


@pytest.mark.parametrize(
    "family,shape,kw", FLOWS, ids=[f"{f}-{'x'.join(map(str, s))}" for f, s, _ in FLOWS]
)
def test_gradients_reach_every_parameter(family, shape, kw):
    model = _flow(family, shape, **kw)
    model.train()
    x = torch.rand((8, *shape), dtype=torch.float64) * 2 - 1
    model.loss(Batch(x), torch.Generator().manual_seed(0)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_every_family_is_registered_with_its_config():
    for family in [*DISCRETE, "ffjord"]:
        cls = MODELS.get(family)
        assert cls.family == family
        cls.Config()  # defaults build


def test_dequantized_image_nll_is_in_nats_of_the_discrete_data():
    # RealNVP without norms starts as the identity (zero-initialised conditioners), so with the
    # "shift" pre-processing z = u - 1/2 and log P = Σ log N(u - 1/2) - D log L exactly.
    levels, shape = 17, (1, 4, 4)
    model = RealNVP.from_config(
        RealNVP.Config(layers=2, hidden=8, levels=levels, preprocess="shift"), shape
    ).double()
    model.eval()
    k = torch.randint(0, levels, (6, *shape), generator=torch.Generator().manual_seed(0))
    x = (k / (levels - 1) * 2 - 1).double()
    lp = model.log_prob(x, generator=torch.Generator().manual_seed(1))
    u = (
        k + torch.rand(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    ) / levels
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(u - 0.5).sum(
        (1, 2, 3)
    ) - 16 * math.log(levels)
    assert lp.kind == "elbo"
    torch.testing.assert_close(lp.value, expected)
    assert lp.bits_per_dim(16) == pytest.approx(lp.nll() / (16 * math.log(2)))
    # quantize inverts dequantize on the grid
    assert torch.equal(model.quantize(model.dequantize(x, None)), x)


def test_samples_are_on_the_data_grid_and_temperature_scales_the_base():
    model = Glow.from_config(Glow.Config(layers=1, hidden=8, levels=17), (1, 4, 4))
    x = model.sample(5, generator=torch.Generator().manual_seed(0)).x
    k = (x + 1) / 2 * 16
    assert x.shape == (5, 1, 4, 4) and torch.allclose(k, k.round(), atol=1e-5)
    flow = RealNVP.from_config(RealNVP.Config(layers=2, hidden=8), (2,))  # identity at init
    for t in (0.5, 1.0):
        out = flow.sample(20_000, temperature=t, generator=torch.Generator().manual_seed(1))
        assert out.nfe == 0
        assert float(out.x.std()) == pytest.approx(t, rel=0.03)
    out = flow.sample(7, trajectory=True)
    assert out.trajectory.shape == (3, 7, 2) and torch.equal(out.trajectory[-1], out.x)
    with pytest.raises(ConfigError, match="no sampling option 'steps'.*temperature"):
        flow.sample(7, steps=3)  # one way to sample a discrete flow: no steps to choose


def test_bad_configs_are_explained():
    with pytest.raises(ConfigError, match="divisible"):
        Glow.from_config(Glow.Config(scales=3), (1, 28, 28))
    with pytest.raises(ConfigError, match="d >= 2"):
        NICE.from_config(NICE.Config(), (1,))
    with pytest.raises(ConfigError, match="bins"):
        NSF.from_config(NSF.Config(bins=1), (2,))


# --- through the trainer --------------------------------------------------------------------------
FAST = [
    "trainer.steps=5",
    "trainer.warmup=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.checkpoint_every=5",
    "data.n=2000",
]


@pytest.mark.parametrize(
    "config,extra",
    [
        ("realnvp-moons", []),
        ("glow-moons", ["trainer.ema_decay=0.9"]),  # actnorm buffers + EMA weights
        ("glow-digits", ["model.layers=1", "model.hidden=8", "trainer.batch_size=16"]),
    ],
)
def test_save_load_round_trip_through_the_trainer(tmp_path, config, extra):
    cfg = genlab.load_config(ROOT / "configs" / f"{config}.yaml", FAST + extra)
    run = genlab.train(cfg, out=tmp_path / "run", evaluate=False, verbose=False)
    again = genlab.load_run(tmp_path / "run")
    run.model.eval()
    x = run.dataset.val[:64]
    a = run.model.log_prob(x, generator=torch.Generator().manual_seed(0))
    b = again.model.log_prob(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.value, b.value)
    assert torch.isfinite(a.value).all()


def _trained_2d(steps: int = 400) -> torch.nn.Module:
    from genlab.data import TOY

    law = TOY["moons"]()
    torch.manual_seed(0)
    model = NSF.from_config(NSF.Config(layers=3, hidden=32), (2,))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = model.loss(Batch(law.sample(256, g).float()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.double().eval()


def test_trained_2d_density_integrates_to_one_and_matches_its_samples():
    model = _trained_2d()
    h = 0.02
    xs = torch.arange(-8, 8, h, dtype=torch.float64) + h / 2
    grid = torch.cartesian_prod(xs, xs)  # (640_000, 2) cell centres over [-8, 8]²
    dens = model.log_prob(grid, batch_size=65_536).value.exp()
    assert float(dens.sum() * h * h) == pytest.approx(1.0, abs=0.02)
    # samples and density agree: the mass of {x0 > 0.5} by quadrature and by sampling
    mass = float(dens[grid[:, 0] > 0.5].sum() * h * h)
    x = model.sample(20_000, generator=torch.Generator().manual_seed(3)).x
    frac = float((x[:, 0] > 0.5).double().mean())
    assert abs(mass - frac) < 4 * math.sqrt(frac * (1 - frac) / 20_000) + 0.005


# --- the command line -------------------------------------------------------------------------
def test_cli_trains_and_evaluates_a_flow_with_an_exact_nll(tmp_path, capsys):
    out = tmp_path / "nvp"
    args = [
        "train",
        str(ROOT / "configs" / "realnvp-moons.yaml"),
        "trainer.steps=50",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        "data.n=3000",
        "eval.n=300",
        "eval.seeds=1",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert (out / "trajectories.png").is_file()
    capsys.readouterr()
    assert main(["eval", str(out), "--json", "--n", "200", "--seeds", "1"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["nll"]["kind"] == "exact" and rep["nfe"] == 0
    assert rep["nll"]["nats"] < 3.5  # the standard normal it starts from scores ~ 4.6 on moons
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in [*DISCRETE, "ffjord"]:
        assert f"  {name} " in listing


def test_every_flow_config_is_valid():
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    families = {genlab.load_config(p).family for p in paths}
    assert set(DISCRETE) | {"ffjord"} <= families
    for p in paths:
        cfg = genlab.load_config(p)
        if cfg.family in [*DISCRETE, "ffjord"]:
            shape = (1, 8, 8) if cfg.data.name == "digits" else (1, 28, 28)
            shape = (2,) if cfg.data.name not in ("digits", "mnist") else shape
            MODELS.get(cfg.family).from_config(cfg.model, shape)  # builds
