"""Benchmark genlab's diffusion samplers against diffusers and k-diffusion on one trained network.

Run (in the bench environment, see bench/README.md), single-threaded:

    OMP_NUM_THREADS=1 .bench-venv/bin/python bench/diffusion_2d.py            # full run, ~15 min
    OMP_NUM_THREADS=1 .bench-venv/bin/python bench/diffusion_2d.py --quick    # smoke test, ~1 min

Prints three tables and writes ``bench/results/diffusion_2d.json`` (``--out``) with the machine it
ran on. Without diffusers or k-diffusion (the main ``.venv``) their rows are skipped with a note.

The model: ``configs/ddpm-moons.yaml`` (an ε-prediction MLP on the continuous DDPM process
``vp-linear``, 5,000 steps), trained once (or reused with ``--run``) and sampled with its EMA
weights. Every library calls the very same network object (``model.net``):

* genlab: ``model.sample(n, sampler=..., steps=K, schedule=...)`` for every registered sampler and
  the schedules ``uniform`` / ``karras`` / ``log-snr``.
* diffusers: ``DDPMScheduler``, ``DDIMScheduler``, ``DPMSolverMultistepScheduler`` (dpmsolver++,
  order 2), ``EulerDiscreteScheduler``, ``HeunDiscreteScheduler`` with DDPM's 1,000 linear β from
  1e-4 to 0.02, each with its default timestep spacing and a second one (``trailing`` for DDPM and
  DDIM, Karras σ for the others), in the standard loop (``set_timesteps``, ``scale_model_input``,
  ``step(...).prev_sample``, initial noise times ``init_noise_sigma``). The network is wrapped as a
  discrete ε-model: timestep k -> σ_k = √((1 − ᾱ_k)/ᾱ_k) from the scheduler's ``alphas_cumprod``
  (fractional k interpolated the way the scheduler itself interpolates σ), t = t(σ_k) of genlab's
  process, ε = ``model.net(x_vp, t)``. ``clip_sample=False`` for DDPM and DDIM: their default
  clips x̂_0 to [-1, 1], an image setting (two moons spans about [-3.3, 3.3]).
* k-diffusion: ``sample_euler``, ``sample_heun``, ``sample_dpmpp_2m`` on ``get_sigmas_karras(n,
  σ_min, σ_max, rho=7)`` with σ_min, σ_max of the discrete DDPM schedule (k = 0 and 999), driving
  genlab's denoiser through a scalar-σ wrapper, and the same three through k-diffusion's own
  ``external.DiscreteEpsDDPMDenoiser`` around the discrete ε-model above.

(a) W2 vs NFE budget (5, 10, 20, 50): steps chosen so that NFE <= budget (Heun and PC: 2K − 1
    calls for K steps); NFE is the number of calls of ``model.net``, counted by a hook. 2,000
    samples for each of 3 sampling seeds, the same initial noise for every method (the N(0, I)
    draw genlab's ``sample`` makes for ``Generator().manual_seed(seed)``, scaled as each library
    scales it), exact W2 against the references ``genlab eval`` uses (2,000 fresh draws of the true
    law, seed ``REFERENCE_SEED + seed``): the same three reference sets for every method, paired by
    seed. Reference rows: 1,000-step DDPM (genlab ``ddpm`` and diffusers ``DDPMScheduler``), genlab
    dopri5 (adaptive) and the "perfect model" (fresh true draws against the same references).
(b) Consistency: on one shared σ grid, genlab's ``ddim`` / ``dpmpp-2m`` / ``heun`` against the
    peer implementation of the same method (same start, same network): max |Δx|.
(c) Overhead per step, batch 2,000, 1 torch thread: one ``model.net`` call is timed (median of
    repeats), then every sampler at ~50 NFE; overhead = (time − NFE × net time) / NFE, as a fraction
    of one network call. Samplers and net are timed interleaved, in rounds (order rotated), and
    the per-round overhead is computed against the net time of the same round; medians over
    rounds. The same for genlab's U-Net (untrained, 8×8×1, channels 32, mults [1, 2]) at batch
    256 with euler / heun / ddim / dpmpp-2m.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import math
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _machine
import torch
from _machine import version

import genlab
from genlab.eval.evaluate import reference_draws
from genlab.eval.heldout import REFERENCE_SEED
from genlab.eval.metrics import w2
from genlab.models.diffusion.model import Diffusion, DiffusionConfig
from genlab.registry import SAMPLERS

try:  # before k-diffusion: its placeholder torchvision must not be seen by diffusers' checks
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
    )

    DIFFUSERS_ERROR = None
except ImportError as e:
    DIFFUSERS_ERROR = str(e)


def import_k_diffusion():
    """``(k_diffusion.sampling, k_diffusion.external)`` without running the package ``__init__``.

    ``k_diffusion/__init__.py`` imports its training code (kornia, CLIP, torchvision, ...). The
    samplers need none of it: the package is registered as an empty module with the right
    ``__path__`` and its submodules are imported from there. ``k_diffusion.utils`` does
    ``from torchvision.transforms import functional``: where torchvision is not installed a
    placeholder module stands in while it is imported, and is removed afterwards.
    """
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ImportError("No module named 'k_diffusion'")
    if "k_diffusion" not in sys.modules:
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["k_diffusion"] = pkg
    stubs = []
    if importlib.util.find_spec("torchvision") is None:
        names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
        for name in names:
            sys.modules[name] = types.ModuleType(name)
            stubs.append(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules[names[2]]
    try:
        from k_diffusion import external, sampling
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return sampling, external


try:
    KSAMPLING, KEXTERNAL = import_k_diffusion()
    KDIFF_ERROR = None
except ImportError as e:
    KSAMPLING = KEXTERNAL = None
    KDIFF_ERROR = str(e)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "diffusion_2d.json"
RECIPE = ROOT / "configs" / "ddpm-moons.yaml"
BUDGETS = (5, 10, 20, 50)
SAMPLE_SEEDS = (0, 1, 2)
PERFECT_SEEDS = (2_000_001, 2_000_002, 2_000_003)  # "perfect model": fresh true draws
N = 2_000
DDPM_LONG = 1_000  # the ancestral reference rows
DISCRETE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
}
GENLAB_SAMPLERS = ("euler", "heun", "ddim", "ddpm", "euler-maruyama", "pc", "dpmpp-2m")
TWO_CALLS = {"heun", "pc"}  # 2 K − 1 network calls for K steps
SCHEDULES = ("uniform", "karras", "log-snr")
UNET_SAMPLERS = ("euler", "heun", "ddim", "dpmpp-2m")


def steps_for(sampler: str, budget: int) -> int:
    """The most steps whose NFE fits the budget (Heun, PC: 2 K − 1 calls; others K)."""
    return (budget + 1) // 2 if sampler in TWO_CALLS else budget


def noise(n: int, seed: int, shape=(2,)) -> tuple[torch.Tensor, torch.Generator]:
    """The N(0, I) draw genlab's ``sample`` starts from for this seed, and the generator after it
    (stochastic peers continue from it, as genlab's samplers do)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g, dtype=torch.float32), g


@contextlib.contextmanager
def count_calls(net: torch.nn.Module):
    """Count the calls of ``net`` (a forward pre-hook): the NFE of any library's sampler."""
    box = [0]
    handle = net.register_forward_pre_hook(lambda mod, args: box.__setitem__(0, box[0] + 1))
    try:
        yield box
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------
# The network as each library wants it
# ---------------------------------------------------------------------------------------------


class DiscreteEps:
    """genlab's ε-network as a discrete-time DDPM ε-model ``eps(x_vp, k)``.

    ``k`` (a number or a tensor of equal values) indexes the scheduler's 1,000 steps: σ_k =
    √((1 − ᾱ_k)/ᾱ_k), t = t(σ_k) of genlab's process, and ``model.net(x_vp, t)``, where ``x_vp``
    is the VP-space state ``x̂ / √(1 + σ²)`` (what diffusers and k-diffusion give an ε-model).
    A fractional ``k`` is interpolated like the caller interpolates σ: ``linear`` in σ (diffusers'
    Euler/Heun with their default spacing) or ``log`` (k-diffusion, and diffusers with Karras σ).
    """

    def __init__(self, model: Diffusion, alphas_cumprod: torch.Tensor, interp: str = "linear"):
        ac = alphas_cumprod.double()
        self.sigmas = ((1 - ac) / ac).sqrt().tolist()
        self.log_sigmas = [math.log(s) for s in self.sigmas]
        self.process, self.net, self.interp = model.process, model.net, interp
        self.times = [float(self.process.t_of_sigma(s)) for s in self.sigmas]

    def sigma(self, k: float) -> float:
        lo = min(int(math.floor(k)), len(self.sigmas) - 2)
        w = k - lo
        if self.interp == "log":
            return math.exp((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1])
        return (1 - w) * self.sigmas[lo] + w * self.sigmas[lo + 1]

    def time(self, k: float) -> float:
        if k == int(k):
            return self.times[int(k)]
        return float(self.process.t_of_sigma(self.sigma(k)))

    def __call__(self, x: torch.Tensor, k, **kwargs) -> torch.Tensor:
        k = float(k.reshape(-1)[0]) if isinstance(k, torch.Tensor) else float(k)
        t = torch.full((x.shape[0],), self.time(k), dtype=x.dtype, device=x.device)
        return self.net(x, t)


# ---------------------------------------------------------------------------------------------
# Samplers: every one is ``draw(n, seed) -> x`` for one NFE budget
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    lib: str
    name: str
    schedule: str
    note: str = ""
    draws: dict[int, Callable[[int, int], torch.Tensor]] = field(default_factory=dict)
    steps: dict[int, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.lib}/{self.name}/{self.schedule}"


def genlab_draw(model: Diffusion, sampler: str, steps: int, schedule: str):
    def draw(n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.sample(n, sampler=sampler, steps=steps, schedule=schedule, generator=g).x

    return draw


def genlab_rows(model: Diffusion, budgets) -> list[Row]:
    rows = []
    for name in GENLAB_SAMPLERS:
        for schedule in SCHEDULES:
            row = Row("genlab", name, schedule)
            for b in budgets:
                k = steps_for(name, b)
                row.draws[b], row.steps[b] = genlab_draw(model, name, k, schedule), k
            rows.append(row)
    return rows


@dataclass
class DiffusersSpec:
    name: str
    cls: type
    schedule: str  # the row's label
    kwargs: dict
    interp: str  # how the scheduler maps fractional timesteps to σ (for DiscreteEps)

    def make(self):
        return self.cls(**DISCRETE, **self.kwargs)


def diffusers_specs() -> list[DiffusersSpec]:
    if DIFFUSERS_ERROR is not None:
        return []
    no_clip = {"clip_sample": False}
    return [
        DiffusersSpec("DDPM", DDPMScheduler, "leading (default)", no_clip, "linear"),
        DiffusersSpec(
            "DDPM", DDPMScheduler, "trailing", {**no_clip, "timestep_spacing": "trailing"}, "linear"
        ),
        DiffusersSpec("DDIM", DDIMScheduler, "leading (default)", no_clip, "linear"),
        DiffusersSpec(
            "DDIM", DDIMScheduler, "trailing", {**no_clip, "timestep_spacing": "trailing"}, "linear"
        ),
        DiffusersSpec(
            "DPMSolverMultistep", DPMSolverMultistepScheduler, "linspace (default)", {}, "linear"
        ),
        DiffusersSpec(
            "DPMSolverMultistep",
            DPMSolverMultistepScheduler,
            "karras",
            {"use_karras_sigmas": True},
            "log",
        ),
        DiffusersSpec("EulerDiscrete", EulerDiscreteScheduler, "linspace (default)", {}, "linear"),
        DiffusersSpec(
            "EulerDiscrete", EulerDiscreteScheduler, "karras", {"use_karras_sigmas": True}, "log"
        ),
        DiffusersSpec("HeunDiscrete", HeunDiscreteScheduler, "linspace (default)", {}, "linear"),
        DiffusersSpec(
            "HeunDiscrete", HeunDiscreteScheduler, "karras", {"use_karras_sigmas": True}, "log"
        ),
    ]


def diffusers_draw(model: Diffusion, spec: DiffusersSpec, steps: int, record=None):
    """The standard diffusers loop around the discrete ε-model. ``record``: a list that receives
    the σ of every network call (for the consistency check)."""
    sched = spec.make()
    eps_model = DiscreteEps(model, sched.alphas_cumprod, spec.interp)
    takes_generator = "generator" in inspect.signature(sched.step).parameters

    def draw(n: int, seed: int) -> torch.Tensor:
        z, g = noise(n, seed)
        sched.set_timesteps(steps)
        x = z * sched.init_noise_sigma
        kw = {"generator": g} if takes_generator else {}
        for t in sched.timesteps:
            x_in = sched.scale_model_input(x, t)
            if record is not None:
                record.append(eps_model.sigma(float(t)))
            eps = eps_model(x_in, t)
            x = sched.step(eps, t, x, **kw).prev_sample
        return x

    return draw


def diffusers_rows(model: Diffusion, budgets) -> list[Row]:
    rows = []
    for spec in diffusers_specs():
        row = Row("diffusers", spec.name, spec.schedule)
        for b in budgets:
            k = steps_for("heun" if spec.name == "HeunDiscrete" else spec.name, b)
            row.draws[b], row.steps[b] = diffusers_draw(model, spec, k), k
        rows.append(row)
    return rows


def discrete_sigma_range() -> tuple[float, float]:
    """σ at k = 0 and k = 999 of the discrete DDPM schedule (k-diffusion's σ_min, σ_max)."""
    betas = torch.linspace(DISCRETE["beta_start"], DISCRETE["beta_end"], 1000, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    sig = ((1 - ac) / ac).sqrt()
    return float(sig[0]), float(sig[-1])


K_SAMPLERS = {"euler": "sample_euler", "heun": "sample_heun", "dpmpp_2m": "sample_dpmpp_2m"}


def k_denoisers(model: Diffusion) -> dict[str, Callable]:
    """The two ways k-diffusion sees our network: genlab's denoiser behind a scalar-σ wrapper,
    and k-diffusion's own ``DiscreteEpsDDPMDenoiser`` around the discrete ε-model."""
    den = model.denoiser()

    def scalar(x, sigma, **kw):
        return den(x, float(sigma[0]))[0]

    ac = DDPMScheduler(**DISCRETE).alphas_cumprod if DIFFUSERS_ERROR is None else None
    if ac is None:
        betas = torch.linspace(DISCRETE["beta_start"], DISCRETE["beta_end"], 1000)
        ac = torch.cumprod(1 - betas, 0)
    discrete = KEXTERNAL.DiscreteEpsDDPMDenoiser(
        DiscreteEps(model, ac, "log"), ac.float(), quantize=False
    )
    return {"karras": scalar, "karras, DiscreteEpsDDPMDenoiser": discrete}


def k_draw(fn: Callable, sampler: str, n_sigmas: int):
    lo, hi = discrete_sigma_range()
    sample = getattr(KSAMPLING, K_SAMPLERS[sampler])

    def draw(n: int, seed: int) -> torch.Tensor:
        z, _ = noise(n, seed)
        sigmas = KSAMPLING.get_sigmas_karras(n_sigmas, lo, hi, rho=7.0)
        return sample(fn, z * sigmas[0], sigmas, disable=True)

    return draw


def k_rows(model: Diffusion, budgets) -> list[Row]:
    if KDIFF_ERROR is not None:
        return []
    rows = []
    for label, fn in k_denoisers(model).items():
        for sampler in K_SAMPLERS:
            row = Row("k-diffusion", sampler, label)
            for b in budgets:
                k = steps_for(sampler, b)
                row.draws[b], row.steps[b] = k_draw(fn, sampler, k), k
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# (a) W2 vs NFE
# ---------------------------------------------------------------------------------------------


def summary(vals: list[float]) -> dict:
    return {
        "w2": vals,
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
    }


def score(draw, model, refs, n, seeds) -> dict:
    vals, nfes, secs = [], [], []
    for seed, ref in zip(seeds, refs):
        with count_calls(model.net) as calls, torch.no_grad():
            t0 = time.perf_counter()
            x = draw(n, seed)
            secs.append(time.perf_counter() - t0)
        if not torch.isfinite(x).all():
            vals.append(float("nan"))
        else:
            vals.append(w2(x.detach().double(), ref))
        nfes.append(calls[0])
    return {**summary(vals), "nfe": nfes, "seconds": secs}


def bench_w2(model: Diffusion, dataset, n: int, seeds, budgets, long_steps: int) -> dict:
    refs = [reference_draws(dataset, n, s) for s in seeds]
    perfect = [
        w2(dataset.true.sample(n, generator=torch.Generator().manual_seed(s)).double(), ref)
        for s, ref in zip(PERFECT_SEEDS, refs)
    ]
    rows = genlab_rows(model, budgets) + diffusers_rows(model, budgets) + k_rows(model, budgets)
    out_rows = []
    t_start = time.perf_counter()
    for i, row in enumerate(rows):
        cells = {}
        for b in budgets:
            cells[str(b)] = {"steps": row.steps[b], **score(row.draws[b], model, refs, n, seeds)}
        out_rows.append(
            {"lib": row.lib, "sampler": row.name, "schedule": row.schedule, "budgets": cells}
        )
        means = " ".join(f"{cells[str(b)]['mean']:.3f}" for b in budgets)
        print(
            f"  [{i + 1}/{len(rows)}] {row.label:<58} {means}   ({time.perf_counter() - t_start:.0f} s)",
            flush=True,
        )
    refrows = {}
    refrows["genlab/dopri5 (rtol=atol=1e-5)"] = score(
        genlab_draw(model, "dopri5", 2, "uniform"), model, refs, n, seeds
    )
    refrows[f"genlab/ddpm/uniform, {long_steps} steps"] = score(
        genlab_draw(model, "ddpm", long_steps, "uniform"), model, refs, n, seeds
    )
    if DIFFUSERS_ERROR is None:
        spec = diffusers_specs()[0]
        refrows[f"diffusers/DDPM/leading, {long_steps} steps"] = score(
            diffusers_draw(model, spec, long_steps), model, refs, n, seeds
        )
    refrows["perfect model"] = {
        **summary(perfect),
        "note": "fresh true draws vs the same references: the finite-sample floor of W2",
    }
    return {
        "n_samples": n,
        "sample_seeds": list(seeds),
        "reference_seeds": [REFERENCE_SEED + s for s in seeds],
        "perfect_seeds": list(PERFECT_SEEDS[: len(seeds)]),
        "budgets": list(budgets),
        "rows": out_rows,
        "reference_rows": refrows,
        "best": best_per_budget(out_rows, budgets),
        "pairs": paired_equivalents(out_rows, budgets),
    }


# genlab row vs the peer row of the same method (or the nearest), paired by seed
PAIRS = (
    (("genlab", "ddim", "uniform"), ("diffusers", "DDIM", "trailing")),
    (("genlab", "ddpm", "uniform"), ("diffusers", "DDPM", "trailing")),
    (("genlab", "dpmpp-2m", "uniform"), ("diffusers", "DPMSolverMultistep", "linspace (default)")),
    (("genlab", "dpmpp-2m", "karras"), ("k-diffusion", "dpmpp_2m", "karras")),
    (("genlab", "dpmpp-2m", "karras"), ("diffusers", "DPMSolverMultistep", "karras")),
    (("genlab", "ddim", "karras"), ("k-diffusion", "euler", "karras")),
    (("genlab", "euler", "karras"), ("k-diffusion", "euler", "karras")),
    (("genlab", "heun", "karras"), ("k-diffusion", "heun", "karras")),
    (("genlab", "heun", "uniform"), ("diffusers", "HeunDiscrete", "linspace (default)")),
    (("genlab", "euler", "uniform"), ("diffusers", "EulerDiscrete", "linspace (default)")),
)


def paired_equivalents(rows: list[dict], budgets) -> dict:
    """Per-seed W2 differences genlab − peer for the pairs in ``PAIRS`` (same initial noise and
    references per seed, so the shared seed-to-seed spread cancels)."""
    index = {(r["lib"], r["sampler"], r["schedule"]): r for r in rows}
    out = {}
    for a, b in PAIRS:
        if a not in index or b not in index:
            continue
        row = {}
        for bud in budgets:
            ca, cb = index[a]["budgets"][str(bud)], index[b]["budgets"][str(bud)]
            row[str(bud)] = summary([x - y for x, y in zip(ca["w2"], cb["w2"])])
        out[f"{'/'.join(a)} - {'/'.join(b)}"] = row
    return out


def best_per_budget(rows: list[dict], budgets) -> dict:
    """Per budget: genlab's best row and the best peer row by mean W2, and their per-seed
    difference (same initial noise and references per seed)."""
    out = {}
    for b in budgets:
        key = str(b)

        def best(libs, key=key):
            cands = [
                r for r in rows if r["lib"] in libs and math.isfinite(r["budgets"][key]["mean"])
            ]
            return min(cands, key=lambda r: r["budgets"][key]["mean"]) if cands else None

        g, p = best({"genlab"}), best({"diffusers", "k-diffusion"})
        entry = {}
        for name, r in (("genlab", g), ("peer", p)):
            if r is not None:
                c = r["budgets"][key]
                entry[name] = {
                    "row": f"{r['lib']}/{r['sampler']}/{r['schedule']}",
                    "mean": c["mean"],
                    "std": c["std"],
                    "nfe": c["nfe"],
                }
        if g is not None and p is not None:
            d = [x - y for x, y in zip(g["budgets"][key]["w2"], p["budgets"][key]["w2"])]
            entry["genlab_minus_peer"] = summary(d)
        out[key] = entry
    return out


def fmt(c: dict, nfe: bool = True) -> str:
    if not math.isfinite(c["mean"]):
        return "diverged"
    s = f"{c['mean']:.3f} ± {c['std']:.3f}"
    if nfe and "nfe" in c:
        s += f" [{max(c['nfe'])}]"
    return s


def print_w2_table(res: dict) -> None:
    budgets = res["budgets"]
    print(
        f"\n(a) W2 to the true law (lower is better), mean ± sd over {len(res['sample_seeds'])} "
        f"sampling seeds, {res['n_samples']} samples vs {res['n_samples']} reference draws (the "
        "same references for every row); [NFE] = network calls, <= the budget"
    )
    w, c = 58, 22
    print(f"{'lib/sampler/schedule':<{w}}" + "".join(f"{'NFE <= ' + str(b):>{c}}" for b in budgets))
    last = None
    for r in res["rows"]:
        if last is not None and r["lib"] != last[0]:
            print()
        last = (r["lib"], r["sampler"])
        label = f"{r['lib']}/{r['sampler']}/{r['schedule']}"
        print(f"{label:<{w}}" + "".join(f"{fmt(r['budgets'][str(b)]):>{c}}" for b in budgets))
    print()
    for name, v in res["reference_rows"].items():
        nfe = f"NFE {statistics.fmean(v['nfe']):.0f}" if "nfe" in v else ""
        print(f"{name:<{w}}{fmt(v, nfe=False):>{c}}   {nfe}")
    print("\nbest genlab row vs best peer row per budget (paired per seed: genlab − peer)")
    for b, e in res["best"].items():
        parts = []
        for k in ("genlab", "peer"):
            if k in e:
                parts.append(f"{e[k]['row']} {e[k]['mean']:.3f} ± {e[k]['std']:.3f}")
        d = e.get("genlab_minus_peer")
        diff = f"; diff {d['mean']:+.3f} ± {d['std']:.3f}" if d else ""
        print(f"  NFE <= {b:>2}: " + "  vs  ".join(parts) + diff)
    if res.get("pairs"):
        print(
            "\npaired W2 differences genlab − peer (same noise and references per seed), mean ± sd"
        )
        w2_ = 86
        print(f"{'pair':<{w2_}}" + "".join(f"{'NFE <= ' + str(b):>18}" for b in budgets))
        for name, row in res["pairs"].items():
            cells = []
            for b in budgets:
                d = row[str(b)]
                cells.append(
                    f"{d['mean']:+.3f} ± {d['std']:.3f}" if math.isfinite(d["mean"]) else "n/a"
                )
            print(f"{name:<{w2_}}" + "".join(f"{x:>18}" for x in cells))


# ---------------------------------------------------------------------------------------------
# (b) consistency on a shared grid
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def bench_consistency(model: Diffusion, n: int) -> dict:
    """Same start, same σ grid, same network: genlab's sampler vs the peer's implementation of
    the same method. Max |Δx| over the batch (data units) and W2 between the two outputs."""
    out: dict[str, dict] = {}
    den = model.denoiser()
    pr = model.process
    z, _ = noise(n, 0)

    def gl(name, sig, x):
        return SAMPLERS.get(name)(den, x, list(sig), process=pr).x

    if KDIFF_ERROR is None:
        lo, hi = discrete_sigma_range()
        scalar = k_denoisers(model)["karras"]
        for gname, kname, k in (
            ("ddim", "euler", 10),
            ("dpmpp-2m", "dpmpp_2m", 10),
            ("heun", "heun", 5),
        ):
            sig = KSAMPLING.get_sigmas_karras(k, lo, hi, rho=7.0)
            x0 = z * sig[0]
            a = gl(gname, sig.tolist(), x0.clone())
            b = getattr(KSAMPLING, K_SAMPLERS[kname])(scalar, x0.clone(), sig, disable=True)
            out[f"genlab {gname} vs k-diffusion {kname} (karras, {k} σ)"] = {
                "max_abs_diff": float((a - b).abs().max()),
                "w2_between": w2(a.double(), b.double()),
            }
    if DIFFUSERS_ERROR is None:
        # DDIM leading and trailing, DPM-Solver++(2M) linspace (its first-order last step, to
        # σ = 0, is genlab's and k-diffusion's last step too: x = D)
        cases = (("ddim", 2, 10), ("ddim", 3, 5), ("dpmpp-2m", 4, 10))
        for gname, idx, k in cases:
            spec = diffusers_specs()[idx]
            record: list[float] = []
            b = diffusers_draw(model, spec, k, record)(n, 0)
            sig = record + [0.0]
            x0 = z * math.sqrt(1 + sig[0] ** 2)  # diffusers' VP start z, in x̂ = x_vp / √ᾱ
            a = gl(gname, sig, x0)
            out[f"genlab {gname} vs diffusers {spec.name}/{spec.schedule} ({k} steps)"] = {
                "max_abs_diff": float((a - b).abs().max()),
                "w2_between": w2(a.double(), b.double()),
            }
    return out


def print_consistency(res: dict) -> None:
    print(
        "\n(b) consistency: the same method on the same σ grid from the same start, genlab vs peer"
    )
    for name, v in res.items():
        print(f"  {name:<62} max|Δx| {v['max_abs_diff']:.2e}   W2 between {v['w2_between']:.4f}")


# ---------------------------------------------------------------------------------------------
# (c) overhead per step
# ---------------------------------------------------------------------------------------------


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@torch.no_grad()
def overhead(
    net: torch.nn.Module,
    net_call: Callable[[], object],
    runs: dict[str, tuple[Callable[[], object], int]],
    rounds: int,
    net_reps: int,
) -> dict:
    """Interleaved rounds (order rotated each round): before every sampler run, the network alone
    ``net_reps`` times (median), so each run is compared with a net time taken just before it."""
    names = list(runs)
    for name in names:  # warm up, and take the NFE from the counter
        with count_calls(net) as calls:
            runs[name][0]()
        runs[name] = (runs[name][0], calls[0])
    for _ in range(3):
        net_call()
    secs: dict[str, list[float]] = {nm: [] for nm in names}
    nets: dict[str, list[float]] = {nm: [] for nm in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn, nfe = runs[name]
            nets[name].append(statistics.median(_time(net_call) for _ in range(net_reps)))
            secs[name].append(_time(fn))
    rows = []
    for name in names:
        nfe = runs[name][1]
        per_step = [(s - nfe * tn) / nfe for s, tn in zip(secs[name], nets[name])]
        frac = [d / tn for d, tn in zip(per_step, nets[name])]
        rows.append(
            {
                "sampler": name,
                "nfe": nfe,
                "ms_median": 1e3 * statistics.median(secs[name]),
                "net_ms_median": 1e3 * statistics.median(nets[name]),
                "overhead_per_step_ms_median": 1e3 * statistics.median(per_step),
                "overhead_per_step_fraction_median": statistics.median(frac),
                "overhead_per_step_fraction_min": min(frac),
                "overhead_per_step_fraction_max": max(frac),
                "seconds_rounds": secs[name],
                "net_seconds_rounds": nets[name],
            }
        )
    all_nets = [t for v in nets.values() for t in v]
    return {
        "rounds": rounds,
        "net_ms_median": 1e3 * statistics.median(all_nets),
        "net_repeats_before_each_run": net_reps,
        "rows": rows,
    }


class NullNet(torch.nn.Module):
    """A network that costs next to nothing (``0.5 x``): with it, a sampler's time is its own."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # model.device / dtype look at params

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        return x * 0.5


@contextlib.contextmanager
def null_net(model: Diffusion):
    real = model.net
    model.net = NullNet()
    try:
        yield model.net
    finally:
        model.net = real


def with_null_net(model, real: dict, make_runs, x, t, reps: int) -> dict:
    """Add to ``real`` (an :func:`overhead` result) the sampler's own cost per step measured
    with :class:`NullNet` in place of the network (``reps`` interleaved rounds), as ms and as a
    fraction of the real network's call."""
    with null_net(model) as net:
        res = overhead(net, lambda: net(x, t), make_runs(), reps, reps)
    by_name = {r["sampler"]: r for r in res["rows"]}
    for row in real["rows"]:
        nr = by_name[row["sampler"]]
        row["null_net_nfe"] = nr["nfe"]
        row["null_net_overhead_per_step_ms"] = nr["overhead_per_step_ms_median"]
        row["null_net_overhead_per_step_fraction"] = (
            nr["overhead_per_step_ms_median"] / real["net_ms_median"]
        )
    real["null_net"] = {"rounds": reps, "net_ms_median": res["net_ms_median"]}
    return real


def mlp_runs(model: Diffusion, n: int, budget: int) -> dict:
    runs: dict[str, tuple[Callable[[], object], int]] = {}
    for name in (*GENLAB_SAMPLERS, "dopri5"):
        k = steps_for(name, budget) if name != "dopri5" else 2
        runs[f"genlab/{name}"] = (lambda d=genlab_draw(model, name, k, "uniform"): d(n, 0), 0)
    for spec in diffusers_specs():
        if "default" not in spec.schedule:
            continue
        k = steps_for("heun" if spec.name == "HeunDiscrete" else spec.name, budget)
        runs[f"diffusers/{spec.name}"] = (lambda d=diffusers_draw(model, spec, k): d(n, 0), 0)
    if KDIFF_ERROR is None:
        for label, fn in k_denoisers(model).items():
            tag = "" if label == "karras" else " (DiscreteEpsDDPMDenoiser)"
            for sampler in K_SAMPLERS:
                d = k_draw(fn, sampler, steps_for(sampler, budget))
                runs[f"k-diffusion/{sampler}{tag}"] = (lambda d=d: d(n, 0), 0)
    return runs


def bench_overhead_mlp(
    model: Diffusion, n: int, budget: int, rounds: int, net_reps: int, null_reps: int
) -> dict:
    x = torch.randn(n, 2)
    t = torch.full((n,), 0.5)
    res = overhead(model.net, lambda: model.net(x, t), mlp_runs(model, n, budget), rounds, net_reps)
    res = with_null_net(model, res, lambda: mlp_runs(model, n, budget), x, t, null_reps)
    return {"batch": n, "budget": budget, "network": "the DDPM MLP (hidden 256, depth 4)", **res}


def bench_overhead_unet(n: int, budget: int, rounds: int, net_reps: int, null_reps: int) -> dict:
    torch.manual_seed(0)
    cfg = DiffusionConfig(backbone="unet", channels=32, channel_mults=[1, 2])
    model = Diffusion.from_config(cfg, (1, 8, 8)).eval()
    params = sum(p.numel() for p in model.net.parameters())
    x = torch.randn(n, 1, 8, 8)
    t = torch.full((n,), 0.5)

    def runs():
        out = {}
        for name in UNET_SAMPLERS:
            g = genlab_draw(model, name, steps_for(name, budget), "uniform")
            out[f"genlab/{name}"] = (lambda g=g: g(n, 0), 0)
        return out

    res = overhead(model.net, lambda: model.net(x, t), runs(), rounds, net_reps)
    res = with_null_net(model, res, runs, x, t, null_reps)
    return {
        "batch": n,
        "budget": budget,
        "network": f"untrained genlab U-Net, shape (1, 8, 8), channels 32, mults [1, 2], "
        f"{params} parameters",
        **res,
    }


def print_overhead(res: dict, title: str) -> None:
    print(
        f"\n{title}: {res['network']}, batch {res['batch']}, 1 torch thread; one network call "
        f"{res['net_ms_median']:.3f} ms (median); {res['rounds']} interleaved rounds"
    )
    print(
        "  overhead per step = (sampler time - NFE x net time) / NFE (median over rounds [min, max]),"
        "\n  and the same with a null network in place of the net (the sampler's own cost, "
        f"{res['null_net']['rounds']} rounds); both also as a fraction of one net call"
    )
    w = 48
    print(
        f"{'sampler':<{w}}{'NFE':>5}{'ms/sample':>11}{'overhead/step, subtraction':>42}"
        f"{'overhead/step, null net':>28}"
    )
    for r in res["rows"]:
        lo, hi = r["overhead_per_step_fraction_min"], r["overhead_per_step_fraction_max"]
        print(
            f"{r['sampler']:<{w}}{r['nfe']:>5}{r['ms_median']:>11.1f}"
            f"{r['overhead_per_step_ms_median']:>10.3f} ms {r['overhead_per_step_fraction_median']:>+8.3f}x "
            f"[{lo:+.3f}, {hi:+.3f}]"
            f"{r['null_net_overhead_per_step_ms']:>13.4f} ms {r['null_net_overhead_per_step_fraction']:>+8.4f}x"
        )


# ---------------------------------------------------------------------------------------------
# Model, machine info and main
# ---------------------------------------------------------------------------------------------


def get_model(run_dir: Path | None, tmp: Path, train_steps: int | None) -> tuple[Diffusion, dict]:
    """The recipe's model: reused from ``run_dir`` when it holds a run, else trained (into
    ``run_dir`` when given, else a temporary directory)."""
    info: dict = {"recipe": str(RECIPE.relative_to(ROOT))}
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        info["run"] = str(run_dir)
        info["trained_here"] = False
    else:
        out = run_dir or tmp / "ddpm-moons"
        overrides = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.threads=1"]
        if train_steps:
            overrides.append(f"trainer.steps={train_steps}")
        t0 = time.perf_counter()
        genlab.train(RECIPE, out=out, overrides=overrides, evaluate=False, verbose=False)
        info.update(
            run=str(out) if run_dir else None,
            trained_here=True,
            train_seconds=time.perf_counter() - t0,
            overrides=overrides,
        )
        run_dir = out
    run = genlab.load_run(run_dir)
    info["step"] = run.step
    info["weights"] = "EMA"
    model = run.model.eval()
    if not isinstance(model, Diffusion):
        raise SystemExit(f"{run_dir} holds a {type(model).__name__}, not a diffusion model")
    return model, {**info, "dataset": run.dataset}


def machine_info() -> dict:
    info = _machine.machine_info(
        diffusers=version("diffusers") if DIFFUSERS_ERROR is None else None,
        **{"k-diffusion": version("k-diffusion") if KDIFF_ERROR is None else None},
    )
    return info


def print_report(record: dict) -> None:
    if "w2_vs_nfe" in record:
        print_w2_table(record["w2_vs_nfe"])
    if "consistency" in record:
        print_consistency(record["consistency"])
    if "overhead_mlp" in record:
        print_overhead(record["overhead_mlp"], "(c) overhead per step, MLP")
    if "overhead_unet" in record:
        print_overhead(record["overhead_unet"], "(c') overhead per step, U-Net")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test (~1 min, not a measurement)")
    p.add_argument("--run", type=Path, default=None, help="reuse (or train into) this run dir")
    p.add_argument("--skip-w2", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7)")
    p.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    p.add_argument(
        "--report", type=Path, default=None, help="print the tables of a results JSON; no run"
    )
    args = p.parse_args(argv)

    if args.report is not None:
        print_report(json.loads(args.report.read_text()))
        return 0

    torch.set_num_threads(1)
    q = args.quick
    n = 256 if q else N
    seeds = SAMPLE_SEEDS[:2] if q else SAMPLE_SEEDS
    budgets = BUDGETS[:2] if q else BUDGETS
    long_steps = 100 if q else DDPM_LONG
    rounds = args.rounds or (2 if q else 7)
    net_reps = 3 if q else 9
    out = args.out or (Path(tempfile.gettempdir()) / "diffusion_2d.quick.json" if q else RESULTS)
    for lib, err in (("diffusers", DIFFUSERS_ERROR), ("k-diffusion", KDIFF_ERROR)):
        if err is not None:
            print(f"note: {lib} is not importable here ({err}); its rows are skipped.")

    record: dict = {"machine": machine_info(), "quick": q}
    record["machine"]["loadavg_before"] = list(os.getloadavg())
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        model, info = get_model(args.run, Path(tmp), 300 if q and args.run is None else None)
    dataset = info.pop("dataset")
    lo, hi = discrete_sigma_range()
    record["config"] = {
        "model": info,
        "process": repr(model.process),
        "diffusers_discrete": DISCRETE,
        "discrete_sigma_min_max": [lo, hi],
        "k_diffusion_grid": "get_sigmas_karras(n, sigma_min, sigma_max, rho=7) of the discrete schedule",
        "genlab_samplers": list(GENLAB_SAMPLERS) + ["dopri5"],
        "schedules": list(SCHEDULES),
        "budgets": list(budgets),
        "n_samples": n,
        "sample_seeds": list(seeds),
        "torch_threads": torch.get_num_threads(),
    }
    print(f"model: {info}; {model.process}; discrete DDPM σ range [{lo:.4g}, {hi:.4g}]")

    if not args.skip_w2:
        print("\nW2 vs NFE ...")
        record["w2_vs_nfe"] = bench_w2(model, dataset, n, seeds, budgets, long_steps)
        print_w2_table(record["w2_vs_nfe"])
        record["consistency"] = bench_consistency(model, n)
        print_consistency(record["consistency"])
    if not args.skip_overhead:
        budget = 50
        record["overhead_mlp"] = bench_overhead_mlp(
            model, 2_000, budget, rounds, net_reps, 5 if q else 21
        )
        print_overhead(record["overhead_mlp"], "(c) overhead per step, MLP")
        record["overhead_unet"] = bench_overhead_unet(
            256, budget, 1 if q else max(5, rounds - 2), 1 if q else 3, 5 if q else 21
        )
        print_overhead(record["overhead_unet"], "(c') overhead per step, U-Net")
    _machine.write_results(record, out, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
