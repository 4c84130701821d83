"""Trained diffusion models: any sampler on any model, guidance, reflow, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data import load
from genlab.data.base import Batch
from genlab.errors import ConfigError
from genlab.eval.metrics import w2
from genlab.models.diffusion import Diffusion, DiffusionConfig
from genlab.models.diffusion.classifier import NoiseClassifier, NoiseClassifierConfig

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "trainer.steps=2000",
    "trainer.warmup=50",
    "trainer.lr=0.004",
    "trainer.ema_decay=0.99",
    "trainer.ema_every=1",
    "trainer.progress=false",
    "trainer.checkpoint_every=2000",
    "model.hidden=128",
    "model.depth=3",
    "data.n=20000",
    "eval.n=500",
    "eval.seeds=1",
]


def moons_w2(x: torch.Tensor, seed: int = 0) -> float:
    ref = load("moons", n=1000, val_fraction=0.0, seed=100 + seed).train
    return float(w2(x.double(), ref.double()))


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ddpm"
    genlab.train(str(ROOT / "configs/ddpm-moons.yaml"), out, overrides=FAST, evaluate=False)
    return genlab.load_run(out)


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fm"
    genlab.train(
        str(ROOT / "configs/rectified-flow-moons.yaml"), out, overrides=FAST, evaluate=False
    )
    return out


def test_ddpm_model_samples_with_heun_and_dpm_solver(ddpm_run):
    """An ε-prediction DDPM, sampled by ODE solvers it was not trained with, beats a standard
    normal by a wide margin."""
    g = torch.Generator().manual_seed(0)
    baseline = moons_w2(torch.randn(1000, 2, generator=g))
    for sampler, steps in [("heun", 10), ("dpmpp-2m", 20), ("ddpm", 100), ("pc", 50)]:
        x = ddpm_run.model.sample(1000, sampler=sampler, steps=steps, generator=g).x
        assert moons_w2(x) < 0.4 * baseline, (sampler, moons_w2(x), baseline)


def test_flow_matching_model_samples_with_ddim_and_ancestral(fm_run):
    model = genlab.load_run(fm_run).model
    g = torch.Generator().manual_seed(0)
    baseline = moons_w2(torch.randn(1000, 2, generator=g))
    for sampler, steps in [("ddim", 20), ("ddpm", 100), ("dpmpp-2m", 20)]:
        x = model.sample(1000, sampler=sampler, steps=steps, generator=g).x
        assert moons_w2(x) < 0.4 * baseline, (sampler, moons_w2(x), baseline)


def test_reflow_straightens_the_paths(fm_run, tmp_path):
    teacher = genlab.load_run(fm_run).model
    out = tmp_path / "reflow"
    run = genlab.reflow(
        fm_run, out, pairs=4000, sampler="dopri5", overrides=["trainer.steps=600"],
        evaluate=False, verbose=False,
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    before = teacher.straightness(1000, generator=g)
    after = run.model.straightness(1000, generator=torch.Generator().manual_seed(1))
    assert after < 0.5 * before, (before, after)
    pairs = np.load(out / "pairs.npz")
    assert pairs["x"].shape == pairs["noise"].shape == (4000, 2)
    # one Euler step of the reflowed model is much closer to the data than the teacher's
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(2))
    one = run.model.sample(1000, sampler="euler", steps=1, noise=z).x
    one_teacher = teacher.sample(1000, sampler="euler", steps=1, noise=z).x
    assert moons_w2(one) < 0.6 * moons_w2(one_teacher)


def test_straightness_is_zero_for_straight_paths():
    """A velocity that does not depend on x_t (the exact field when data is one point) is
    constant along every path, so the paths are straight."""
    model = Diffusion.from_config(
        DiffusionConfig(process="linear", parameterization="velocity", hidden=8, depth=1), (2,)
    )

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, y=None):
            return torch.full_like(x, 0.5)

    model.net = Constant()
    assert model.straightness(100, steps=20) < 1e-6  # float32 rounding


def two_blobs(n: int, g: torch.Generator):
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) * 0.3 + (2.0 * y[:, None] - 1.0) * torch.tensor([2.0, 0.0])
    return x, y


def fit(model, steps: int, lr: float = 3e-3):
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        x, y = two_blobs(256, g)
        loss = model.loss(Batch(x, y), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_classifier_free_guidance_sharpens_the_class():
    torch.manual_seed(0)
    cfg = DiffusionConfig(process="edm", parameterization="edm", sigma_data=1.0, hidden=64,
                          depth=3, label_dropout=0.2)  # fmt: skip
    model = fit(Diffusion.from_config(cfg, (2,), num_classes=2), 1500)
    g = torch.Generator().manual_seed(1)
    kw = {"sampler": "dpmpp-2m", "steps": 20, "generator": g}
    cond = model.sample(2000, labels=1, guidance=1.0, **kw).x
    uncond = model.sample(2000, labels=1, guidance=0.0, **kw).x  # w = 0: the null-label model
    strong = model.sample(2000, labels=1, guidance=3.0, **kw).x
    right = [float((x[:, 0] > 0).double().mean()) for x in (uncond, cond, strong)]
    assert 0.3 < right[0] < 0.7  # unconditional: both blobs
    assert right[1] > 0.95 and right[2] >= right[1]
    assert strong[:, 0].std() < cond[:, 0].std() * 1.05  # guidance concentrates
    out = model.sample(10, labels=None, **kw)  # uniform labels, returned
    assert out.labels is not None and out.labels.shape == (10,)


def test_classifier_guidance_steers_an_unconditional_model():
    torch.manual_seed(0)
    base = fit(
        Diffusion.from_config(DiffusionConfig(process="vp-linear", hidden=64, depth=3), (2,)), 1500
    )
    clf = NoiseClassifier.from_config(
        NoiseClassifierConfig(hidden=64, depth=2), (2,), num_classes=2
    )
    fit(clf, 800)
    g = torch.Generator().manual_seed(0)
    x0, y = two_blobs(1000, g)
    assert clf.accuracy(x0, y, 0.5, g) > 0.95  # noise-aware: still right at σ = 0.5
    kw = {"sampler": "dpmpp-2m", "steps": 20}
    plain = base.sample(2000, generator=torch.Generator().manual_seed(1), **kw).x
    steered = base.sample(2000, labels=1, classifier=clf, classifier_scale=3.0,
                          generator=torch.Generator().manual_seed(1), **kw).x  # fmt: skip
    assert float((plain[:, 0] > 0).double().mean()) < 0.7
    assert float((steered[:, 0] > 0).double().mean()) > 0.9
    with pytest.raises(ConfigError, match="not class-conditional"):
        base.sample(10, labels=1)
    with pytest.raises(ConfigError, match="classifier-free guidance"):
        base.sample(10, guidance=2.0)
    with pytest.raises(ConfigError, match="at least 1"):
        base.sample(10, steps=0)


def test_cli_sample_takes_any_sampler_schedule_and_options(ddpm_run, tmp_path, capsys):
    for args, nfe in [
        (["--sampler", "heun", "--steps", "18"], 35),
        (["--sampler", "ddim", "--steps", "10", "--option", "eta=0.5"], 10),
        (["--sampler", "dpmpp-2m", "--steps", "8", "--schedule", "karras"], 8),
    ]:
        out = tmp_path / f"{args[1]}.npy"
        assert main(["sample", str(ddpm_run.dir), "--n", "50", *args, "--out", str(out)]) == 0
        assert f"NFE {nfe}" in capsys.readouterr().out
        assert np.load(out).shape == (50, 2)
    bad = [
        (["--option", "eta"], "KEY=VALUE"),
        (["--option", "bogus=1"], "bogus"),
        (["--schedule", "karas"], "karras"),
        (["--sampler", "hune"], "heun"),
        (["--label", "3"], "not class-conditional"),
    ]
    out = tmp_path / "refused.npy"
    for args, message in bad:
        assert main(["sample", str(ddpm_run.dir), "--n", "5", *args, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err


def test_cli_reflow_and_its_errors(fm_run, ddpm_run, tmp_path, capsys):
    code = main(["reflow", str(ddpm_run.dir), "--out", str(tmp_path / "r")])
    assert code == 2 and "linear-path" in capsys.readouterr().err
    out = tmp_path / "rf"
    args = ["reflow", str(fm_run), "trainer.steps=50", "--out", str(out), "--pairs", "500",
            "--sampler", "heun", "--steps", "8", "--no-eval"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "straightness" in text and (out / "reflow.json").is_file()
    # a second reflow into the same folder, or one with a bad override, is refused before it
    # writes anything: the run (pairs, configs, checkpoints) stays byte-identical
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    fresh = tmp_path / "rf2"
    assert main(["reflow", str(fm_run), "--out", str(fresh), "trainer.stpes=5"]) == 2
    assert "did you mean 'trainer.steps'" in capsys.readouterr().err and not fresh.exists()
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_image_diffusion_with_the_unet_trains_samples_and_has_a_likelihood():
    torch.manual_seed(0)
    cfg = DiffusionConfig(process="edm", parameterization="edm", backbone="unet", channels=8,
                          channel_mults=[1, 2], levels=17, label_dropout=0.1)  # fmt: skip
    model = Diffusion.from_config(cfg, (1, 8, 8), num_classes=10)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    batch = model.prepare(Batch(x, torch.arange(16) % 10), torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):  # one fixed batch, the same noise and times: its loss must fall
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.7 * losses[0], losses
    out = model.sample(
        4, sampler="heun", steps=3, guidance=2.0, generator=torch.Generator().manual_seed(0)
    )
    assert out.x.shape == (4, 1, 8, 8) and out.nfe == 5
    lp = model.log_prob(x[:2], generator=torch.Generator().manual_seed(0), rtol=1e-3, atol=1e-3)
    assert lp.kind == "ode-estimate" and lp.stderr is not None and "dequantization" in lp.note
    assert torch.isfinite(lp.value).all()


@pytest.mark.parametrize(
    "config",
    ["ddpm-moons", "ddim-moons", "ve-pc-moons", "edm-moons", "rectified-flow-moons",
     "flow-matching-moons", "flow-matching-ot-moons"],
)  # fmt: skip
def test_heun_18_samples_a_run_of_any_process(config, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", str(ROOT / f"configs/{config}.yaml"), "trainer.steps=30",
            "trainer.checkpoint_every=30", "trainer.progress=false", "model.hidden=32",
            "--out", str(out), "--no-eval"]  # fmt: skip
    assert main(args) == 0
    samples = tmp_path / "s.npy"
    code = main(["sample", str(out), "--sampler", "heun", "--steps", "18", "--n", "20",
                 "--out", str(samples)])  # fmt: skip
    assert code == 0 and "NFE 35" in capsys.readouterr().out
    assert np.isfinite(np.load(samples)).all()


@pytest.mark.parametrize("config", ["edm-cfg-digits", "ddpm-cfg-mnist", "classifier-digits"])
def test_image_configs_build_train_a_step_and_sample(config):
    cfg = genlab.load_config(ROOT / f"configs/{config}.yaml")
    data = genlab.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.build_model(cfg, data)
    batch = Batch(data.train[:8], data.labels_train[:8])
    loss = model.loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    if config == "classifier-digits":
        report = model.report(*data.part("test"))
        assert report and all(0 <= v["value"] <= 1 for v in report.values())
        with pytest.raises(ConfigError, match="does not generate samples"):
            model.sample(2)
    else:
        out = model.sample(2, steps=2, generator=torch.Generator().manual_seed(0))
        assert out.x.shape == (2, *data.shape) and out.labels is not None


def test_cli_eval_takes_a_schedule(ddpm_run, capsys):
    args = ["eval", str(ddpm_run.dir), "--sampler", "dpmpp-2m", "--steps", "5", "--n", "200",
            "--seeds", "1", "--json"]  # fmt: skip
    assert main([*args, "--schedule", "karras"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["options"]["schedule"] == "karras" and report["nfe"] == 5
    assert main([*args, "--schedule", "karas"]) == 2
    assert "karras" in capsys.readouterr().err
