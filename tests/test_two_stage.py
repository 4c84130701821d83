"""Second stages (vqgan-prior, ldm) over a frozen stage-1 run: the refusal of a stage 1 that does
not fit, a run directory that stands alone once its stage 1 is deleted, an exact likelihood of
codes that sums to one and matches what sampling draws, latent diffusion that reduces to pixel
diffusion through an identity autoencoder, the measured latent scale, and decoded samples."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from families import TINY, stage1_run

import genlab
from genlab import checkpoint as ckpt
from genlab.api import Run, build_model, load_data
from genlab.data.base import Batch, Dataset
from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel, LatentSpec, ModelSpec
from genlab.models.diffusion.model import Diffusion, DiffusionConfig
from genlab.models.two_stage import LDMConfig, PriorConfig
from genlab.models.two_stage.stage1 import stage1_record
from genlab.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def config(family: str, *extra: str):
    tiny = TINY[family]
    return genlab.load_config(tiny.path, tiny.args(*extra))


# --- test-only stage-1 families ---------------------------------------------------------------
@dataclass
class _NoConfig:
    pass


class _Identity(GenerativeModel):
    """An autoencoder whose latent is the example itself."""

    family = "test-identity"
    Config = _NoConfig

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self.register_buffer("anchor", torch.zeros(()))  # a device for GenerativeModel.device

    def latent(self) -> LatentSpec:
        return LatentSpec("continuous", tuple(self.spec.shape))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.clone()


class _SignCodes(GenerativeModel):
    """Codes of images (1, h, w): 1 where a pixel is positive, else 0 (K = 2)."""

    family = "test-sign-codes"
    Config = _NoConfig

    def __init__(self, config, spec) -> None:
        super().__init__(config, spec)
        self.register_buffer("anchor", torch.zeros(()))

    def latent(self) -> LatentSpec:
        return LatentSpec("codes", tuple(self.spec.shape[1:]), 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] > 0).long()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z[:, None].float() * 2 - 1).to(self.anchor.dtype)


@pytest.fixture
def test_families(monkeypatch):
    from genlab.registry import Entry

    for cls in (_Identity, _SignCodes):
        monkeypatch.setitem(MODELS._entries, cls.family, Entry(cls.family, cls, "test stage 1"))


def in_memory(stage1_cls, data: Dataset, family: str, model_cfg):
    """A second stage over an in-memory stage-1 model (no run directory), built from its record."""
    cfg1 = genlab.config.Config(family=stage1_cls.family, model=_NoConfig())
    stage1 = stage1_cls(_NoConfig(), ModelSpec(stage1_cls.family, data.shape, data.num_classes))
    run = Run(Path("memory"), cfg1, stage1, 0, _dataset=data, sha256="0" * 64)
    model_cfg = dataclasses.replace(model_cfg, stage1=stage1_record(run, data))
    return MODELS.get(family).from_config(model_cfg, data.shape, data.num_classes)


def images(n: int, shape, classes: int | None, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g) * 2 - 1
    y = None if classes is None else torch.randint(0, classes, (n,), generator=g)
    kind = "images" if len(shape) == 3 else "points"
    return Dataset("test", kind, x[: n // 2], x[n // 2 :], y if y is None else y[: n // 2],
                   y if y is None else y[n // 2 :], num_classes=classes)  # fmt: skip


# --- a stage 1 that does not fit is refused --------------------------------------------------------
def test_a_stage_1_of_other_data_or_shape_or_latent_is_refused_with_a_clear_message(tmp_path):
    prior = config("vqgan-prior")
    # other content, same shape: the first 500 digits only
    other = dataclasses.replace(prior, data=dataclasses.replace(prior.data, n=500))
    with pytest.raises(DataError, match="trained on other data"):
        build_model(other, load_data(other))
    # other shape: mnist (28x28) against a stage 1 trained on digits (8x8)
    mnist = dataclasses.replace(prior, data=dataclasses.replace(prior.data, name="mnist"))
    with pytest.raises(DataError, match=r"shape \(1, 8, 8\).*shape \(1, 28, 28\)"):
        build_model(mnist, load_data(mnist))
    # a prior over a continuous stage 1, latent diffusion over codes
    vae, vq = stage1_run(TINY["ldm"].stage1), stage1_run(TINY["vqgan-prior"].stage1)
    with pytest.raises(ConfigError, match="discrete codes.*continuous latents.*ldm"):
        build_model(config("vqgan-prior", f"model.autoencoder={vae}"), load_data(prior))
    # latent diffusion over a VQ stage 1 models the vectors behind the codes, quantized to decode
    ldm_cfg = config("ldm", f"model.autoencoder={vq}")
    data = load_data(ldm_cfg)
    ldm = build_model(ldm_cfg, data)
    ae, x = ldm.autoencoder, data.train[:16]
    assert ldm.latent_spec.kind == "continuous" and ldm.latent_spec.shape == ae.latent().vectors
    z = ldm.encode_latents(x)
    assert z.shape == (16, *ae.latent().vectors) and z.dtype == torch.float32
    assert torch.equal(ldm.decode_latents(z), ae.decode(ae.encode(x)).clamp(-1, 1))
    # not an autoencoder, not a run, no run at all
    diffusion = tmp_path / "diffusion"
    tiny = TINY["diffusion"]
    genlab.train(genlab.load_config(tiny.path, tiny.args("trainer.steps=2")), diffusion,
                 evaluate=False, verbose=False)  # fmt: skip
    moons = genlab.load_config(tiny.path, tiny.args())
    with pytest.raises(ConfigError, match="not an autoencoder"):
        cfg = config("ldm", f"model.autoencoder={diffusion}", "data.name=moons", "data.n=2000")
        build_model(cfg, load_data(moons))
    with pytest.raises(ConfigError, match="not a genlab run"):
        build_model(config("ldm", f"model.autoencoder={tmp_path}"), load_data(prior))
    with pytest.raises(ConfigError, match="model.autoencoder=RUN_DIR"):
        build_model(config("ldm", "model.autoencoder=null"), load_data(prior))
    with pytest.raises(ConfigError, match="latents have no such range"):
        ldm = config("ldm", "model.clip_denoised=true")
        build_model(ldm, load_data(ldm))


# --- the run directory stands alone ------------------------------------------------------------------
@pytest.mark.parametrize("family", ["vqgan-prior", "ldm"])
def test_the_run_samples_evaluates_and_resumes_after_its_stage_1_is_deleted(tmp_path, family):
    stage1 = tmp_path / "stage1"
    shutil.copytree(stage1_run(TINY[family].stage1), stage1)
    out = tmp_path / "stage2"
    cfg = config(family, f"model.autoencoder={stage1}", "trainer.steps=4",
                 "trainer.checkpoint_every=2")  # fmt: skip
    genlab.train(cfg, out, evaluate=False, verbose=False)
    record = genlab.load_config(out / "config.yaml").model.stage1
    frozen = genlab.load_run(stage1).model.state_dict()
    assert record["path"] == str(stage1.resolve()) and record["step"] == TINY[family].stage1.steps
    ckpt_file = stage1 / "checkpoints" / record["checkpoint"]

    assert record["sha256"] == hashlib.sha256(ckpt_file.read_bytes()).hexdigest()
    shutil.rmtree(stage1)

    # the frozen stage-1 weights travel in the stage-2 checkpoint, unchanged by training
    tensors, _ = ckpt.load_latest(out / "checkpoints")
    for k, v in frozen.items():
        assert torch.equal(tensors[f"model.autoencoder.{k}"], v), k
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    png = tmp_path / "s.png"
    res = subprocess.run([sys.executable, "-m", "genlab", "sample", str(out), "--n", "4",
                          "--label", "3", "--out", str(png)], capture_output=True, text=True,
                         env={**env, **_pythonpath()})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert png.is_file()
    run = genlab.load_run(out)
    ev = dataclasses.replace(run.config.eval, n=8, seeds=1, metrics=[], nll_n=16)
    report = genlab.evaluate(run, cfg=ev)
    if family == "vqgan-prior":
        assert report["nll"]["of"] == "codes" and "bits_per_code" in report["nll"]
    with pytest.raises(ConfigError, match="names another"):
        genlab.train(out / "config.yaml", out, resume=True, evaluate=False, verbose=False,
                     overrides=["trainer.steps=6", f"model.autoencoder={tmp_path}"])  # fmt: skip
    genlab.train(out / "config.yaml", out, resume=True, overrides=["trainer.steps=6"],
                 evaluate=False, verbose=False)  # fmt: skip
    assert ckpt.load_latest(out / "checkpoints")[1]["step"] == 6


def _pythonpath() -> dict[str, str]:
    import os

    return {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


# --- the prior's likelihood is exact --------------------------------------------------------------
@pytest.mark.parametrize("classes", [None, 3])
def test_the_prior_is_a_distribution_over_all_code_maps_and_sampling_draws_from_it(
    test_families, classes
):
    data = images(40, (1, 2, 1), classes)
    torch.manual_seed(0)
    model = in_memory(_SignCodes, data, "vqgan-prior", PriorConfig(hidden=8, depth=1, heads=2))
    model = model.double()
    with torch.no_grad():  # a prior far from uniform, so a misplaced position would show
        for p in model.net.parameters():
            p.mul_(40)
    every = torch.tensor(list(itertools.product([0, 1], repeat=2)))  # all 4 maps of 2x1, K = 2
    marginal = model.code_log_prob(every)
    assert marginal.of == "codes" and marginal.kind == "exact" and marginal.dims == 2
    assert math.isclose(float(marginal.value.exp().sum()), 1.0, rel_tol=1e-12)
    for c in range(classes or 0):
        y = torch.full((4,), c)
        assert math.isclose(
            float(model.code_log_prob(every, labels=y).value.exp().sum()), 1.0, rel_tol=1e-12
        )
    # the codes sampling draws: valid ids, the same with and without the cache, at the rates of
    # the likelihood (chi-square test on 4000 draws, 3 degrees of freedom, p = 1e-4: 21.1)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    cached = model.sample_codes(4000, labels=None if not classes else model._labels(
        4000, None, g(), classes), generator=g())  # fmt: skip
    fresh = model.sample_codes(4000, labels=None if not classes else model._labels(
        4000, None, g(), classes), generator=g(), cache=False)  # fmt: skip
    assert torch.equal(cached, fresh)
    assert cached.shape == (4000, 2, 1) and set(cached.unique().tolist()) <= {0, 1}
    index = cached.reshape(4000, 2) @ torch.tensor([2, 1])
    counts = torch.bincount(index, minlength=4).double()
    expected = 4000 * marginal.value.exp()
    assert float(((counts - expected) ** 2 / expected).sum()) < 21.1
    # images: the likelihood of their codes; samples are the decoded codes
    x = every.reshape(4, 1, 2, 1).double() * 2 - 1
    assert torch.allclose(model.log_prob(x).value, marginal.value)
    out = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert out.x.shape == (5, 1, 2, 1) and set(out.x.unique().tolist()) <= {-1.0, 1.0}
    assert out.nfe == 2


# --- latent diffusion through an identity autoencoder is pixel diffusion ---------------------------
@pytest.mark.parametrize(
    "shape,net", [((2,), {"backbone": "mlp", "hidden": 16, "depth": 2}),
                  ((1, 8, 8), {"backbone": "unet", "channels": 8, "channel_mults": [1, 2]})],
)  # fmt: skip
def test_latent_diffusion_with_an_identity_autoencoder_is_pixel_diffusion(
    test_families, shape, net
):
    data = images(16, shape, 3)
    common = dict(label_dropout=0.1, time_dim=16, sampler="dpmpp-2m", steps=5, **net)
    torch.manual_seed(0)
    pixel = Diffusion.from_config(DiffusionConfig(**common), shape, 3).eval()
    ldm_cfg = LDMConfig(**{**common, "backbone": "auto"}, scale=1.0)
    ldm = in_memory(_Identity, data, "ldm", ldm_cfg).eval()
    assert type(ldm.diffusion.net) is type(pixel.net)  # auto: the backbone for the latent's shape
    ldm.diffusion.load_state_dict(pixel.state_dict())
    assert float(ldm.latent_scale) == 1.0
    for opts in ({}, {"guidance": 3.0, "sampler": "euler", "steps": 4}):
        a = pixel.sample(6, generator=torch.Generator().manual_seed(3), **opts)
        b = ldm.sample(6, generator=torch.Generator().manual_seed(3), **opts)
        assert torch.equal(a.labels, b.labels) and a.nfe == b.nfe
        want = a.x.clamp(-1, 1) if len(shape) == 3 else a.x  # images are clamped to [-1, 1]
        assert torch.equal(want, b.x)
    batch = Batch(data.train[:8], data.labels_train[:8])
    la = pixel.loss(pixel.prepare(batch, torch.Generator().manual_seed(5)))
    lb = ldm.loss(ldm.prepare(batch, torch.Generator().manual_seed(5)))
    assert torch.equal(la, lb)


# --- the latent scale is measured on the training data and kept in the checkpoint ----------------
def test_the_latent_scale_is_measured_on_the_training_data_and_saved(tmp_path):
    cfg = config("ldm", "trainer.steps=2", "model.scale_examples=100")
    run = genlab.train(cfg, tmp_path / "ldm", evaluate=False, verbose=False)
    data = load_data(cfg)
    vae = genlab.load_run(cfg.model.autoencoder).model
    z = vae.encode(data.train[:100]).double()
    assert math.isclose(float(run.model.latent_scale), 1 / float(z.std()), rel_tol=1e-5)
    assert float(run.model.latent_scale) != 1.0
    scaled = run.model.latents_of(data.train[:100]).double()
    assert math.isclose(float(scaled.std()), 1.0, rel_tol=1e-5)
    tensors, _ = ckpt.load_latest(tmp_path / "ldm" / "checkpoints")
    assert torch.equal(tensors["model.latent_scale"], run.model.latent_scale.cpu())
    assert run.model.report(*data.part("test"))["latent_scale"]["value"] == float(
        run.model.latent_scale
    )
    fixed = genlab.train(config("ldm", "trainer.steps=2", "model.scale=0.5"), tmp_path / "fixed",
                         evaluate=False, verbose=False)  # fmt: skip
    assert float(fixed.model.latent_scale) == 0.5


# --- samples and the frozen stage 1 -------------------------------------------------------------------
@pytest.mark.parametrize("family", ["vqgan-prior", "ldm"])
def test_samples_are_decoded_examples_and_the_stage_1_stays_frozen(tmp_path, family):
    cfg = config(family, "trainer.steps=3")
    data = load_data(cfg)
    model = build_model(cfg, data)
    before = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    assert not any(p.requires_grad for p in model.autoencoder.parameters())
    owned = {id(q) for p in model.players() for q in p.module.parameters()}
    assert not owned & {id(q) for q in model.autoencoder.parameters()}
    model.train()
    assert model.training and not model.autoencoder.training
    run = genlab.train(cfg, tmp_path / "run", evaluate=False, verbose=False)
    for k, v in run.model.autoencoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ConfigError, match=r"no sampling option 'nope'.*takes"):
        run.model.sample(2, nope=1)
    with pytest.raises(ConfigError, match=r"labels must be in \[0, 9\]"):
        run.model.sample(2, labels=10)
    g = torch.Generator().manual_seed(0)
    out = run.model.sample(5, labels=7, generator=g)
    assert out.x.shape == (5, *data.shape) and out.x.dtype == torch.float32
    assert float(out.x.min()) >= -1 and float(out.x.max()) <= 1 and torch.all(out.labels == 7)
    if family == "ldm":  # noise -> latent -> decoder, in one call
        noise = torch.randn(5, *run.model.latent_spec.shape, generator=g)
        opts = dict(labels=7, noise=noise, sampler="dpmpp-2m", steps=4, guidance=3)
        got = run.model.sample(5, generator=torch.Generator().manual_seed(1), **opts)
        # (the generator also picks the captions' wording: a caption model draws them from it)
        z = run.model.diffusion.sample(5, generator=torch.Generator().manual_seed(1), **opts).x
        want = run.model.autoencoder.decode(z / run.model.latent_scale).clamp(-1, 1)
        assert torch.equal(got.x, want)
        with pytest.raises(ConfigError, match="no sampling option 'classifier'"):
            run.model.sample(2, classifier=None)
    else:
        codes = run.model.sample_codes(5, labels=torch.full((5,), 7), generator=g, top_k=3)
        h, w = run.model.latent_spec.shape
        assert codes.shape == (5, h, w) and int(codes.max()) < run.model.latent_spec.codes
        with pytest.raises(ConfigError, match="top_p must be in"):
            run.model.sample(2, top_p=0.0)
