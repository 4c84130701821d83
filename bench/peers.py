"""genlab beside the libraries people use, on images, at equal CPU time, scored by `genlab score`.

    .bench-venv/bin/python bench/peers.py --pair ddpm --minutes 10 --seeds 1
    .bench-venv/bin/python bench/peers.py --pair fm --minutes 5 --seeds 2
    .bench-venv/bin/python bench/peers.py --pair vae --minutes 3 --seeds 2
    .bench-venv/bin/python bench/peers.py --pair ddpm --quick        # a 5-minute smoke

Each pair is a list of arms; an arm is an adapter of a few dozen lines (build, train for a number
of steps, sample at a number of NFE or score test images). The pairs: ``ddpm`` (genlab's recipe
against a diffusers ``UNet2DModel`` + ``DDPMScheduler`` loop), ``fm`` (flow matching on genlab's
U-Net: genlab against Meta's ``flow_matching`` and torchcfm, FD against NFE from 1 to 50, and the
bits/dim of genlab's ODE likelihood against ``flow_matching``'s ``compute_likelihood`` on the same
model) and ``vae`` (genlab's VAE and IWAE recipes against pythae's ``VAE`` and ``IWAE`` trained by
its ``TrainingPipeline`` on the same networks: test ELBO and IWAE-5000, each library selecting its
best checkpoint on the validation split as it does for its users). The harness gives every arm of
a pair:

- the same data and split: the recipe's split of the bundled MNIST (train 70%, validation 10%,
  test 20%, seed 0), the training images as unlabelled uint8 (every arm is unconditional; in
  ``vae`` every arm binarizes them afresh at each visit and selects on the validation split);
- parameters within 10% (printed, and the run stops otherwise);
- the same thread count, and the same CPU time of training: a probe of a few steps measures each
  arm's step time (for the small networks of ``vae``, whose loop costs as much as their network,
  the slope between a short and a long run of the arm's own loop), the arm then trains for as
  many steps as fit its share (``--minutes``), with the same batch, learning rate, warmup and
  cosine schedule (the tuning is the recipe's, shared);
- the same number of samples at the same NFE, all scored by ``genlab.score`` against the test
  split on genlab's MNIST feature network (FD, precision, recall, each beside its real-data floor);
- each arm in its own process, run one after another alone (its peak resident memory is its own);
  step times are measured afterwards in interleaved rounds (A, B, A, B, ...), so that a change of
  machine load hits every arm alike.

Results go to ``bench/results/peers-<pair>.json`` (a table in ``docs/peers.md`` is generated from
it). Peers are installed in ``.bench-venv`` only; genlab never imports them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, version, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "ddpm-cfg-mnist.yaml"
SPLIT = {"val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}  # the recipe's
BATCH, LR, WARMUP = 64, 5e-4, 500  # the recipe's trainer (shared by every arm)


# --- the data every arm trains on ---------------------------------------------------------------
def mnist():
    from genlab.data import load

    return load("mnist", **SPLIT)


def training_file(folder: Path) -> Path:
    """The recipe's training split of MNIST as unlabelled uint8 (N, 28, 28), for every arm."""
    x = mnist().train
    path = folder / "mnist-train.npy"
    np.save(path, ((x[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy())
    return path


def train_images(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(path).astype(np.float32))[:, None] / 127.5 - 1


def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss``: every arm's loop ends its step with this."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def schedule(steps: int) -> int:
    """The warmup of a run of ``steps``: the recipe's 500, at most a tenth of the run."""
    return min(WARMUP, max(steps // 10, 1))


# --- arms -----------------------------------------------------------------------------------------
class GenlabDDPM:
    """genlab's ``ddpm-cfg-mnist`` recipe, unconditional (no labels): ε-prediction, VP linear β,
    U-Net 32-64-64 with attention at 7x7, EMA; DPM-Solver++(2M) to sample."""

    name = "genlab"

    def __init__(self, data: Path, seed: int) -> None:
        import genlab

        self.data, self.seed = data, seed
        self.overrides = [
            "data.name=null", f"data.path={data}", "data.val_fraction=0.0",
            "data.test_fraction=0.0", f"trainer.seed={seed}", "trainer.progress=false",
            "trainer.tensorboard=false", "trainer.val_every=0", "model.guidance=1.0",
            "model.label_dropout=0.0",
        ]  # fmt: skip
        cfg = genlab.load_config(RECIPE, self.overrides)
        torch.manual_seed(seed)
        self.model = genlab.build_model(cfg, genlab.load_data(cfg))

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def step_fn(self):
        from genlab.data.base import Batch

        opt = torch.optim.AdamW(self.model.parameters(), lr=LR)
        x = train_images(self.data)[:BATCH]
        g = torch.Generator().manual_seed(0)

        def step() -> None:
            batch = self.model.prepare(Batch(x), g)
            loss = self.model.loss(batch, g)
            update(opt, loss)

        return step

    def train(self, steps: int, out: Path) -> None:
        import genlab

        over = [*self.overrides, f"trainer.steps={steps}", f"trainer.warmup={schedule(steps)}",
                f"trainer.checkpoint_every={steps}"]  # fmt: skip
        self.run = genlab.train(RECIPE, out=out, overrides=over, evaluate=False, verbose=False)

    def sample(self, n: int, point: str, seed: int) -> tuple[torch.Tensor, float]:
        nfe = int(point)
        g = torch.Generator().manual_seed(seed)
        xs, nfes = [], []
        for k in range(0, n, 250):
            out = self.run.model.sample(min(250, n - k), sampler="dpmpp-2m", steps=nfe, generator=g)
            xs.append(out.x.detach())
            nfes.append(out.nfe)
        return torch.cat(xs).clamp(-1, 1), statistics.mean(nfes)


class DiffusersDDPM:
    """diffusers' usual DDPM loop: ``UNet2DModel`` (32-64-64, attention at 7x7, as genlab's), the
    ``DDPMScheduler`` (linear β, 1,000 steps, ε-MSE), AdamW with its cosine schedule and warmup,
    ``EMAModel``; sampled with ``DPMSolverMultistepScheduler`` (DPM-Solver++ 2M)."""

    name = "diffusers"

    def __init__(self, data: Path, seed: int) -> None:
        from diffusers import DDPMScheduler, UNet2DModel

        self.data, self.seed = data, seed
        torch.manual_seed(seed)
        self.unet = UNet2DModel(
            sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
            block_out_channels=(32, 64, 64),
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            attention_head_dim=None, norm_num_groups=8,
        )  # fmt: skip
        self.sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")

    def params(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def _loop(self, opt, x: torch.Tensor, g: torch.Generator):
        def step() -> None:
            idx = torch.randint(0, len(x), (BATCH,), generator=g)
            clean = x[idx]
            noise = torch.randn(clean.shape, generator=g)
            t = torch.randint(0, 1000, (BATCH,), generator=g)
            pred = self.unet(self.sched.add_noise(clean, noise, t), t).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            update(opt, loss)

        return step

    def step_fn(self):
        opt = torch.optim.AdamW(self.unet.parameters(), lr=LR)
        return self._loop(opt, train_images(self.data)[:BATCH], torch.Generator().manual_seed(0))

    def train(self, steps: int, out: Path) -> None:
        from diffusers.optimization import get_cosine_schedule_with_warmup
        from diffusers.training_utils import EMAModel

        x = train_images(self.data)
        opt = torch.optim.AdamW(self.unet.parameters(), lr=LR, weight_decay=0.0)
        lr = get_cosine_schedule_with_warmup(opt, schedule(steps), steps)
        ema = EMAModel(self.unet.parameters(), decay=0.999)
        step = self._loop(opt, x, torch.Generator().manual_seed(self.seed))
        self.unet.train()
        for _ in range(steps):
            step()
            lr.step()
            ema.step(self.unet.parameters())
        ema.copy_to(self.unet.parameters())
        self.unet.eval()

    @torch.no_grad()
    def sample(self, n: int, point: str, seed: int) -> tuple[torch.Tensor, float]:
        from diffusers import DPMSolverMultistepScheduler

        nfe = int(point)
        solver = DPMSolverMultistepScheduler.from_config(self.sched.config)
        g = torch.Generator().manual_seed(seed)
        xs = []
        for k in range(0, n, 250):
            x = torch.randn((min(250, n - k), 1, 28, 28), generator=g)
            solver.set_timesteps(nfe)
            for t in solver.timesteps:
                x = solver.step(self.unet(x, t).sample, t, x).prev_sample
            xs.append(x)
        return torch.cat(xs).clamp(-1, 1), float(nfe)


# --- the flow-matching pair: one U-Net, each library's path, loss and solver ------------------------
FM_OVERRIDES = [  # genlab's flow matching on the recipe's U-Net: the linear path, velocity loss
    "model.family=flow-matching", "model.process=linear", "model.parameterization=velocity",
    "model.time_sampling=uniform", "model.schedule=uniform", "model.clip_denoised=false",
    "model.sampler=euler", "model.steps=20",
]  # fmt: skip


def fm_point(point: str) -> tuple[int, int]:
    """A sampling point of the flow-matching pair, ``"N"`` (Euler, N NFE) or ``"2nd:N"`` (each
    library's second-order fixed-step solver at about N NFE): ``(order, N)``."""
    order, _, nfe = point.rpartition(":")
    return (2 if order else 1), int(nfe)


class GenlabFM(GenlabDDPM):
    """genlab's flow matching (the linear path ``x_t = (1 − t) x_0 + t ε``, velocity loss,
    uniform t) on the recipe's U-Net, trained by ``genlab.train`` (EMA, cosine schedule); Euler
    or Heun to sample."""

    name = "genlab"

    def __init__(self, data: Path, seed: int) -> None:
        import genlab

        self.data, self.seed = data, seed
        self.overrides = [
            *FM_OVERRIDES, "data.name=null", f"data.path={data}", "data.val_fraction=0.0",
            "data.test_fraction=0.0", f"trainer.seed={seed}", "trainer.progress=false",
            "trainer.tensorboard=false", "trainer.val_every=0", "model.guidance=1.0",
            "model.label_dropout=0.0",
        ]  # fmt: skip
        cfg = genlab.load_config(RECIPE, self.overrides)
        torch.manual_seed(seed)
        self.model = genlab.build_model(cfg, genlab.load_data(cfg))

    def sample(self, n: int, point: str, seed: int) -> tuple[torch.Tensor, float]:
        order, nfe = fm_point(point)
        sampler, steps = ("euler", nfe) if order == 1 else ("heun", (nfe + 1) // 2)  # 2N − 1
        g = torch.Generator().manual_seed(seed)
        xs, nfes = [], []
        for k in range(0, n, 250):
            out = self.run.model.sample(min(250, n - k), sampler=sampler, steps=steps, generator=g)
            xs.append(out.x.detach())
            nfes.append(out.nfe)
        return torch.cat(xs).clamp(-1, 1), statistics.mean(nfes)

    def likelihood(self, images: torch.Tensor, seed: int, repeats: int = 4) -> dict:
        """Bits/dim of ``images`` (test images on the 256-level grid) by genlab's ODE likelihood
        and by ``flow_matching``'s ``compute_likelihood`` on this same trained model, on the same
        dequantized points; genlab's both from its default ``t_lo`` (10⁻³, the image taken as the
        state at σ_min) and from ``t_lo = 0``, flow_matching's interval (the image itself): all
        dopri5 at rtol = atol = 1e-5 with Rademacher Hutchinson traces
        (genlab 4 probes in one solve; flow_matching 1 probe per solve, ``repeats`` solves), both
        converted as log P(bin) = log p(y) + D log(bin width). Per-image values with their
        standard errors over probes, so the difference is paired.

        flow_matching draws its probe from torch's global generator. It must not be seeded with
        the seed of the dequantization draw: ``torch.rand`` and ``torch.randn`` from one seed read
        the same uniforms, the probe's signs then depend on the dequantization offsets, and the
        trace estimate is biased (by +0.3 bits/dim on this model, all images one way)."""
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper

        model = self.run.model
        levels, dim = model.config.levels, images[0].numel()
        width = 2.0 / (levels - 1)
        t0 = time.perf_counter()
        lp = model.log_prob(images, generator=torch.Generator().manual_seed(seed), levels=levels)
        genlab_s = time.perf_counter() - t0
        g = torch.Generator().manual_seed(seed)  # the same points and probes, from t = 0
        lp0 = model.log_prob(images, generator=g, levels=levels, t_lo=0.0)
        u = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
        y = images + (u - 0.5) * width  # genlab's first draw from that generator: the same points

        class Velocity(ModelWrapper):  # flow_matching's time s runs noise (0) -> data (1)
            def forward(self, x, t, **extras):
                return -model.velocity(x, 1.0 - t)

        normal = torch.distributions.Normal(0.0, 1.0)
        solver = ODESolver(velocity_model=Velocity(model.net))
        t0 = time.perf_counter()
        draws = []
        for r in range(repeats):
            torch.manual_seed(PEER_SEED + 100 * seed + r)  # flow_matching's probe
            _, ll = solver.compute_likelihood(
                x_1=y, log_p0=lambda z: normal.log_prob(z).flatten(1).sum(1), step_size=None,
                method="dopri5", atol=1e-5, rtol=1e-5, time_grid=torch.tensor([1.0, 0.0]))  # fmt: skip
            draws.append(ll + dim * math.log(width))
        fm_s = time.perf_counter() - t0
        fm = torch.stack(draws)  # (repeats, n)
        to_bpd = -1.0 / (dim * math.log(2))
        return {"n": len(images), "genlab": (lp.value * to_bpd).tolist(),
                "genlab_se": (lp.stderr * -to_bpd).tolist(), "genlab_probes": 4,
                "genlab_seconds": genlab_s, "genlab_nfe": lp.nfe,
                "genlab_t0": (lp0.value * to_bpd).tolist(), "genlab_t0_se": (lp0.stderr * -to_bpd).tolist(),
                "flow_matching": (fm.mean(0) * to_bpd).tolist(),
                "flow_matching_se": (fm.std(0) / math.sqrt(repeats) * -to_bpd).tolist(),
                "flow_matching_probes": repeats, "flow_matching_seconds": fm_s}  # fmt: skip


#: what peers draw from torch's global generator (flow_matching's probes, pythae's get_nll) is
#: seeded from here, far from the harness's own seeds (1000 + seed, 2000 + seed, 3000): one seed
#: for two draws makes them the same numbers
PEER_SEED = 7_000_000


def ema_with_warmup(average: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """The EMA update of genlab's trainer and diffusers' ``EMAModel``: decay 0.999 with the usual
    warmup ``min(0.999, (1 + k) / (10 + k))`` after ``k`` updates (without it, 500 steps of 0.999
    would leave 60% of the initial weights in the average)."""
    decay = min(0.999, (1 + float(n)) / (10 + float(n)))
    return average * decay + current * (1 - decay)


class PeerFM:
    """A peer's flow matching on genlab's U-Net: noise ``x_0``, data ``x_1``, the straight path and
    its velocity ``x_1 − x_0``, in a plain PyTorch loop with the recipe's tuning (AdamW, warmup +
    cosine, EMA 0.999 with warmup, as genlab's trainer); subclasses give the library's path and
    solver."""

    def __init__(self, data: Path, seed: int) -> None:
        self.data, self.seed = data, seed
        self.net = GenlabFM(data, seed).model.net  # the same U-Net (32-64-64, attention at 7x7)

    def params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1).expand(len(x))
        return self.net(x, t, None)

    def _loop(self, opt, x: torch.Tensor, g: torch.Generator):
        def step() -> None:
            x1 = x[torch.randint(0, len(x), (BATCH,), generator=g)]
            x0 = torch.randn(x1.shape, generator=g)
            xt, t, target = self.path(x0, x1, g)
            loss = torch.nn.functional.mse_loss(self.velocity(xt, t), target)
            update(opt, loss)

        return step

    def step_fn(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=LR)
        return self._loop(opt, train_images(self.data)[:BATCH], torch.Generator().manual_seed(0))

    def train(self, steps: int, out: Path) -> None:
        from torch.optim.swa_utils import AveragedModel

        warm = schedule(steps)
        x = train_images(self.data)
        opt = torch.optim.AdamW(self.net.parameters(), lr=LR, weight_decay=0.0)
        lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (i + 1) / warm if i < warm else (
            0.5 * (1 + math.cos(math.pi * (i - warm) / max(steps - warm, 1)))))  # fmt: skip
        ema = AveragedModel(self.net, avg_fn=ema_with_warmup)
        torch.manual_seed(self.seed)  # a peer's own draws (torchcfm's t) come from the global RNG
        step = self._loop(opt, x, torch.Generator().manual_seed(self.seed))
        self.net.train()
        for _ in range(steps):
            step()
            lr.step()
            ema.update_parameters(self.net)
        self.net = ema.module.eval()

    @torch.no_grad()
    def sample(self, n: int, point: str, seed: int) -> tuple[torch.Tensor, float]:
        order, nfe = fm_point(point)
        g = torch.Generator().manual_seed(seed)
        xs, calls = [], [0]

        def v(t, x):
            calls[0] += 1
            return self.velocity(x, t)

        for k in range(0, n, 250):
            x0 = torch.randn((min(250, n - k), 1, 28, 28), generator=g)
            xs.append(self.solve(v, x0, order, nfe))
        return torch.cat(xs).clamp(-1, 1), calls[0] / len(xs)


class FlowMatchingFM(PeerFM):
    """Meta's ``flow_matching``: ``AffineProbPath(CondOTScheduler())`` for the path and its
    velocity, ``ODESolver`` (Euler, or midpoint: 2 NFE per step) on a uniform grid to sample."""

    name = "flow_matching"

    def path(self, x0, x1, g):
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        t = torch.rand(len(x1), generator=g)
        s = AffineProbPath(scheduler=CondOTScheduler()).sample(x_0=x0, x_1=x1, t=t)
        return s.x_t, s.t, s.dx_t

    def solve(self, v, x0, order: int, nfe: int) -> torch.Tensor:
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper

        class Velocity(ModelWrapper):
            def forward(self, x, t, **extras):
                return v(t, x)

        steps = nfe if order == 1 else nfe // 2
        grid = torch.linspace(0.0, 1.0, steps + 1)
        return ODESolver(velocity_model=Velocity(self.net)).sample(
            x_init=x0, step_size=None, method="euler" if order == 1 else "midpoint", time_grid=grid
        )


class TorchCFM(PeerFM):
    """torchcfm: ``ConditionalFlowMatcher(sigma=0)`` for the path and its velocity (t drawn by
    torchcfm from the global RNG), sampled as its examples do, with torchdiffeq's ``odeint`` (Euler,
    or midpoint) on a uniform grid."""

    name = "torchcfm"

    def path(self, x0, x1, g):
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

        t, xt, ut = ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(x0, x1)
        return xt, t, ut

    def solve(self, v, x0, order: int, nfe: int) -> torch.Tensor:
        from torchdiffeq import odeint

        steps = nfe if order == 1 else nfe // 2
        grid = torch.linspace(0.0, 1.0, steps + 1)
        return odeint(v, x0, grid, method="euler" if order == 1 else "midpoint")[-1]


# --- VAE / IWAE: genlab's recipes against pythae's TrainingPipeline --------------------------------
VAE_RECIPES = {1: "vae-mnist.yaml", 5: "iwae-mnist.yaml"}  # train_k -> recipe
VAE_BATCH, VAE_LR, VAE_WARMUP = 100, 1e-3, 100  # the recipes' trainer (shared by every arm)
IWAE_K = 5000  # importance samples of the test bound (Burda et al. 2016)
CHECK_N = 100  # test images on which pythae's own get_nll checks the shared estimator
TEST_BINARIZATION = 3000  # the seed of the one binarization of the test images every arm scores


def binarized(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Images in [-1, 1] -> {0, 1}: each pixel 1 with probability its intensity, seeded."""
    p = ((x + 1) / 2).clamp(0, 1)
    return (torch.rand(p.shape, generator=torch.Generator().manual_seed(seed)) < p).float()


class GenlabVAE:
    """genlab's ``vae-mnist`` recipe (``iwae-mnist`` for ``k = 5``): MLPs of 2 x 200 units, 50
    latent dimensions, a Bernoulli decoder, dynamic binarization, AdamW 1e-3 with warmup and
    cosine, the best validation checkpoint (validation every 1,000 steps, early stopping)."""

    name, k = "genlab-vae", 1

    def __init__(self, data: Path, seed: int) -> None:
        import genlab

        self.data, self.seed = data, seed
        self.recipe = ROOT / "configs" / VAE_RECIPES[self.k]
        self.overrides = [f"trainer.seed={seed}", "trainer.progress=false",
                          "trainer.tensorboard=false"]  # fmt: skip
        cfg = genlab.load_config(self.recipe, self.overrides)
        self.dataset = genlab.load_data(cfg)  # the recipe's split is SPLIT
        torch.manual_seed(seed)
        self.model = genlab.build_model(cfg, self.dataset)

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def step_fn(self):
        from genlab.data.base import Batch

        opt = torch.optim.AdamW(self.model.parameters(), lr=VAE_LR, weight_decay=0.0)
        x, g = self.dataset.train, torch.Generator().manual_seed(0)

        def step() -> None:
            batch = Batch(x[torch.randint(len(x), (VAE_BATCH,), generator=g)])
            update(opt, self.model.loss(self.model.prepare(batch, g), g))

        return step

    def train(self, steps: int, out: Path) -> None:
        import genlab

        over = [*self.overrides, f"trainer.steps={steps}", f"trainer.checkpoint_every={steps}",
                f"trainer.warmup={min(VAE_WARMUP, max(steps // 10, 1))}"]  # fmt: skip
        self.run = genlab.train(self.recipe, out=out, overrides=over, evaluate=False, verbose=False)
        self.model = self.run.model  # the best validation checkpoint

    def likelihood(self, images: torch.Tensor, seed: int) -> dict:
        return vae_bounds(self.model, binarized(images, TEST_BINARIZATION), seed)

    def seconds_per_step(self, tmp: Path) -> float:
        return loop_probe(type(self), self.data, self.seed, 200, 3000, tmp)


def vae_bounds(model, x01: torch.Tensor, seed: int) -> dict:
    """ELBO and IWAE-5000 (nats) of binarized test images, per image with standard errors, by
    genlab's estimator (``VAE.likelihoods``) with the same draws for every arm."""
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    elbo, iwae = model.likelihoods(x01 * 2 - 1, iwae_k=IWAE_K, generator=g)
    return {"n": len(x01), "k": IWAE_K, "elbo": elbo.value.tolist(), "iwae": iwae.value.tolist(),
            "iwae_se": iwae.stderr.tolist(), "seconds": time.perf_counter() - t0}  # fmt: skip


def loop_probe(cls, data: Path, seed: int, short: int, long: int, tmp: Path) -> float:
    """Seconds per step of an arm's own training loop (data, logging, validation and all): the
    slope between a run of ``short`` and one of ``long`` steps, each from a fresh arm, after a
    first short run that pays the one-time costs (imports, first calls); never below the bare
    step's time. For small networks, whose steps cost little beside their loop's."""
    times = []
    for i, steps in enumerate((short, short, long)):
        arm = cls(data, seed)
        t0 = time.perf_counter()
        arm.train(steps, tmp / f"probe-{i}")
        times.append(time.perf_counter() - t0)
    return max((times[2] - times[1]) / (long - short), probe(cls(data, seed)))


class GenlabIWAE(GenlabVAE):
    name, k = "genlab-iwae", 5


class PythaeVAE:
    """pythae's ``VAE`` (``IWAE`` with 5 samples for ``k = 5``) trained by its own
    ``TrainingPipeline``, on the same networks as genlab's recipe (its MLPs and their
    initialization, wrapped as pythae's ``BaseEncoder``/``BaseDecoder``; pythae's benchmark MNIST
    convnets have 25x the parameters), the same dynamically binarized training images (a torch
    ``Dataset``, pythae's path for custom data), batch, learning rate and a cosine schedule, and
    pythae's selection of the best epoch on the validation split. Scored by the same estimator
    as genlab's arm, on genlab's shell of the trained networks, and checked against pythae's own
    ``get_nll`` on the first test images."""

    name, k, genlab_arm = "pythae-vae", 1, GenlabVAE

    def __init__(self, data: Path, seed: int) -> None:
        from latent import pythae_model  # the wrappers bench/latent.py uses

        self.data, self.seed = data, seed
        shell = self.genlab_arm(data, seed)
        self.shell, self.dataset = shell.model, shell.dataset  # genlab's networks, same init
        self.model = pythae_model(self.shell, "iwae" if self.k > 1 else "vae", self.k)

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def train_set(self):
        from pythae.data.datasets import DatasetOutput

        x01 = (self.dataset.train + 1) / 2

        class DynamicallyBinarized(torch.utils.data.Dataset):  # a new draw at every visit
            def __init__(self, seed: int) -> None:
                self.g = torch.Generator().manual_seed(seed)

            def __len__(self) -> int:
                return len(x01)

            def __getitem__(self, i: int):
                return DatasetOutput(
                    data=(torch.rand(x01[i].shape, generator=self.g) < x01[i]).float()
                )

        return DynamicallyBinarized(self.seed)

    def step_fn(self):
        from pythae.data.datasets import collate_dataset_output

        opt = torch.optim.Adam(self.model.parameters(), lr=VAE_LR)
        loader = torch.utils.data.DataLoader(self.train_set(), batch_size=VAE_BATCH, shuffle=True,
                                             collate_fn=collate_dataset_output)  # fmt: skip
        batches = iter(())

        def step() -> None:
            nonlocal batches
            inputs = next(batches, None)
            if inputs is None:
                batches = iter(loader)
                inputs = next(batches)
            out = self.model(inputs, epoch=1, dataset_size=len(loader.dataset), uses_ddp=False)
            update(opt, out.loss)

        return step

    def train(self, steps: int, out: Path) -> None:
        import logging

        from pythae.pipelines import TrainingPipeline
        from pythae.trainers import BaseTrainerConfig

        for name in [n for n in logging.root.manager.loggerDict if n.startswith("pythae")]:
            logging.getLogger(name).setLevel(logging.WARNING)  # its per-epoch console lines
        epochs = max(1, round(steps * VAE_BATCH / len(self.dataset.train)))
        config = BaseTrainerConfig(
            output_dir=str(out), num_epochs=epochs, learning_rate=VAE_LR,
            per_device_train_batch_size=VAE_BATCH, per_device_eval_batch_size=VAE_BATCH,
            scheduler_cls="CosineAnnealingLR", scheduler_params={"T_max": epochs},
            seed=self.seed, no_cuda=True,
        )  # fmt: skip
        pipeline = TrainingPipeline(model=self.model, training_config=config)
        pipeline(train_data=self.train_set(), eval_data=binarized(self.dataset.val, 1))
        best = pipeline.trainer._best_model  # pythae's choice: the best validation epoch
        self.shell.encoder.load_state_dict(best.encoder.net.state_dict())
        self.shell.decoder.load_state_dict(best.decoder.net.state_dict())
        self.best = best

    def likelihood(self, images: torch.Tensor, seed: int) -> dict:
        x01 = binarized(images, TEST_BINARIZATION)
        result = vae_bounds(self.shell, x01, seed)  # genlab's estimator on the trained networks
        self.best.eval()
        torch.manual_seed(PEER_SEED + seed)  # draws of its own, not genlab's
        t0 = time.perf_counter()
        with torch.no_grad():
            own = self.best.get_nll(x01[:CHECK_N], n_samples=IWAE_K, batch_size=IWAE_K)
        result["pythae_get_nll"] = {"n": CHECK_N, "mean_log_p": float(own),
                                    "seconds": time.perf_counter() - t0}  # fmt: skip
        return result

    def seconds_per_step(self, tmp: Path) -> float:
        per_epoch = len(self.dataset.train) // VAE_BATCH
        return loop_probe(type(self), self.data, self.seed, per_epoch, 15 * per_epoch, tmp)


class PythaeIWAE(PythaeVAE):
    name, k, genlab_arm = "pythae-iwae", 5, GenlabIWAE


PAIRS = {
    "ddpm": [GenlabDDPM, DiffusersDDPM],
    "fm": [GenlabFM, FlowMatchingFM, TorchCFM],
    "vae": [GenlabVAE, PythaeVAE, GenlabIWAE, PythaeIWAE],
}
PEER_VERSIONS = {
    "ddpm": ("diffusers",),
    "fm": ("flow_matching", "torchcfm", "torchdiffeq"),
    "vae": ("pythae",),
}
POINTS = {  # where each pair samples: NFE (the arm's solver), or "2nd:N" (second order, ~N NFE)
    "ddpm": ["20", "50"],
    "fm": ["1", "2", "5", "10", "20", "50", "2nd:20"],
    "vae": [],  # scored by the likelihood bound of the test images
}
NLL_N = {"ddpm": 0, "fm": 16, "vae": 1000}  # test images whose likelihood each arm estimates


# --- one arm in its own process -------------------------------------------------------------------
def probe(arm, reps: int = 4) -> float:
    """Seconds per training step (after two warm-up steps)."""
    step = arm.step_fn()
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps


def worker(args: argparse.Namespace) -> None:
    import genlab

    torch.set_num_threads(args.threads)
    arm_cls = {a.name: a for a in PAIRS[args.pair]}[args.worker]
    data = Path(args.data)
    arm = arm_cls(data, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if hasattr(arm, "seconds_per_step"):  # its own loop, timed
            seconds_per_step = arm.seconds_per_step(Path(tmp))
        else:
            seconds_per_step = probe(arm_cls(data, args.seed))
        steps = max(int(args.minutes * 60 / seconds_per_step), 10)
        t0 = time.perf_counter()
        arm.train(steps, Path(tmp) / "run")
        train_s = time.perf_counter() - t0
    dataset = mnist()
    results = {}
    for point in args.nfe or []:
        t0 = time.perf_counter()
        x, used = arm.sample(args.n, point, seed=1000 + args.seed)
        sample_s = time.perf_counter() - t0
        rep = genlab.score(x, dataset, metrics=["fd", "precision", "recall"])
        results[point] = {
            "nfe": used,
            "images_per_s": args.n / sample_s,
            **{m: {"value": e["value"], "floor": e["floor"]} for m, e in rep["metrics"].items()},
            "n": rep["n"],
            "features": rep["features"]["hash"],
        }
    likelihood = None
    if hasattr(arm, "likelihood") and args.nll_n > 0:  # the same test images for every arm
        likelihood = arm.likelihood(dataset.test[: args.nll_n], seed=2000 + args.seed)
    record = {
        "arm": arm.name, "seed": args.seed, "params": arm.params(), "steps": steps,
        "probe_s_per_step": seconds_per_step, "train_seconds": train_s, "samples": results,
        **({"likelihood": likelihood} if likelihood else {}),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip
    Path(args.result).write_text(json.dumps(record))


# --- the harness ----------------------------------------------------------------------------------
def interleaved(classes: list, data: Path, rounds: int, reps: int) -> dict[str, float]:
    """Median ms per training step of each arm, timed in alternating rounds."""
    arms = [cls(data, 0) for cls in classes]
    steps = [a.step_fn() for a in arms]
    for s in steps:
        s()
        s()
    times: dict[str, list[float]] = {a.name: [] for a in arms}
    for _ in range(rounds):
        for a, s in zip(arms, steps):
            t0 = time.perf_counter()
            for _ in range(reps):
                s()
            times[a.name].append((time.perf_counter() - t0) / reps * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", choices=sorted(PAIRS), default="ddpm")
    p.add_argument("--minutes", type=float, default=10.0, help="training time of each arm")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--n", type=int, default=500, help="samples per arm and NFE")
    p.add_argument("--nfe", nargs="+", help="sampling points (default: the pair's, see POINTS)")
    p.add_argument(
        "--nll-n",
        type=int,
        help="test images whose likelihood every arm estimates (default: the pair's, see NLL_N)",
    )
    p.add_argument("--arms", nargs="+", help="run only these arms of the pair (by name)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    p.add_argument("--quick", action="store_true", help="a 5-minute smoke (1 min per arm)")
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    args.nfe = args.nfe or POINTS[args.pair]
    args.nll_n = NLL_N[args.pair] if args.nll_n is None else args.nll_n
    if args.quick:
        quick = [p for p in POINTS[args.pair] if p.endswith("20")]
        args.minutes, args.n, args.nfe, args.seeds = 1.0, 100, quick, 1
        args.nll_n = min(args.nll_n, 4 if args.pair == "fm" else 100)
    out = args.out or (
        Path(tempfile.gettempdir()) / f"peers-{args.pair}-quick.json"
        if args.quick
        else ROOT / "bench" / "results" / f"peers-{args.pair}.json"
    )
    classes = [c for c in PAIRS[args.pair] if not args.arms or c.name in args.arms]
    unknown = set(args.arms or ()) - {c.name for c in classes}
    if unknown:
        names = ", ".join(c.name for c in PAIRS[args.pair])
        sys.exit(f"the {args.pair} pair has no arm {', '.join(sorted(unknown))} (it has {names})")
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    peers = {v: version(v) for v in PEER_VERSIONS[args.pair]}
    machine = {**machine_info(**peers), "loadavg_before": list(os.getloadavg())}
    record = {"machine": machine, "pair": args.pair, "command": " ".join(sys.argv),
              "minutes": args.minutes, "seeds": args.seeds, "n": args.n, "nfe": args.nfe, "nll_n": args.nll_n,
              "threads": args.threads, "batch": VAE_BATCH if args.pair == "vae" else BATCH,
              "lr": VAE_LR if args.pair == "vae" else LR, "runs": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data = training_file(Path(tmp))
        counts = {cls.name: cls(data, 0).params() for cls in classes}
        print("parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        if max(counts.values()) > 1.1 * min(counts.values()):
            sys.exit(f"parameter counts differ by more than 10%: {counts}")
        record["params"] = counts
        for seed in range(args.seeds):
            for cls in classes:
                result = Path(tmp) / f"{cls.name}-{seed}.json"
                print(f"[seed {seed}] {cls.name}: training {args.minutes:g} min ...", flush=True)
                cmd = [sys.executable, __file__, "--pair", args.pair, "--worker", cls.name,
                       "--data", str(data), "--seed", str(seed), "--result", str(result),
                       "--minutes", str(args.minutes), "--n", str(args.n),
                       "--threads", str(args.threads), "--nll-n", str(args.nll_n),
                       *(["--nfe", *map(str, args.nfe)] if args.nfe else [])]  # fmt: skip
                quiet = {"TQDM_DISABLE": "1"} if args.pair == "vae" else {}  # pythae's bars
                subprocess.run(cmd, check=True, env={**os.environ, **quiet})
                run = json.loads(result.read_text())
                record["runs"].append(run)
                for nfe, r in run["samples"].items():
                    print(f"  {cls.name} seed {seed}: {run['steps']} steps in "
                          f"{run['train_seconds']:.0f} s; NFE {nfe}: FD {r['fd']['value']:.1f} "
                          f"(floor {r['fd']['floor']:.2f}), precision {r['precision']['value']:.3f}, "
                          f"recall {r['recall']['value']:.3f}, {r['images_per_s']:.1f} images/s; "
                          f"peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
                lk = run.get("likelihood", {})
                if "iwae" in lk:
                    print(f"  {cls.name} seed {seed}: {run['steps']} steps in "
                          f"{run['train_seconds']:.0f} s; test ({lk['n']} images) ELBO "
                          f"{statistics.fmean(lk['elbo']):.2f}, IWAE-{lk['k']} "
                          f"{statistics.fmean(lk['iwae']):.2f} nats; peak RSS "
                          f"{run['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
        record["ms_per_step"] = interleaved(classes, data, rounds=3 if args.quick else 6, reps=3)
    print("ms per step (interleaved rounds): " +
          ", ".join(f"{k} {v:.0f}" for k, v in record["ms_per_step"].items()))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
