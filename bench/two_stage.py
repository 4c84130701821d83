"""Two-stage generation on MNIST at one CPU budget (issue: VQGAN + prior, latent diffusion).

    OMP_NUM_THREADS=2 .venv/bin/python bench/two_stage.py [--budget-minutes 10] [--work DIR]

Run it alone on the machine (another torch process on the same cores slows both 10-20x).

1. **Stage 1**, each at its recipe's 1,000 steps: the VQGAN and the KL autoencoder, and the latent
   issue's VQ-VAE for comparison (``vqvae-mnist`` with ``model.channels=16``, the VQGAN's width).
   Held-out reconstruction MSE (per pixel value on [-1, 1]) and codebook usage.
2. **Pipelines at one total budget, stage 1 counted.** Pixel-space diffusion (``ddpm-cfg-mnist``),
   latent diffusion (``ldm-mnist`` on the KL autoencoder) and the VQGAN prior
   (``vqgan-prior-mnist``) each get ``--budget-minutes`` of training in all: pixel diffusion
   trains for all of it, a second stage for what its stage 1 left (the budget less the stage-1
   training seconds measured in part 1). The text-conditioned latent diffusion
   (``ldm-caption-mnist``) gets ``--caption-minutes`` in all the same way (0: skipped). Steps are
   the step rate (probed through the trainer, as the leaderboard does) times the time, at most
   the recipe's; each recipe keeps its schedule over those steps.
3. **The same evaluation** for every pipeline (``genlab eval`` with ``eval.n``) on the **test
   split** of MNIST (``data.test_fraction`` of the recipes: 2,000 images no stage saw or was
   chosen on): Fréchet distance, precision and recall on genlab's MNIST feature network (trained
   on the train and validation parts), with the real-data floor (as many training images as
   samples), and the class accuracy of samples drawn for given labels (for the caption model:
   labels written as captions, guidance 3).
4. **Sampling time per image**: ``model.sample(n)`` timed after a warm-up, both diffusion models
   with DPM-Solver++(2M) at the same ``--steps`` (the decoder included for latent diffusion), the
   prior with its KV cache (one network call per code) and the decoder.

Writes ``bench/results/two_stage.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import ROOT, machine_info, write_results

import genlab
from genlab.leaderboard import probe_rate

QUIET = ["trainer.progress=false", "trainer.tensorboard=false"]


class _Entry:  # what genlab.leaderboard.probe_rate reads
    def __init__(self, config: str, overrides: list[str]) -> None:
        self.config, self.overrides = config, overrides
        self.family = genlab.load_config(config, overrides).family


def train(config: str, out: Path, overrides: list[str], *, steps: int | None = None,
          seconds: float | None = None) -> dict:  # fmt: skip
    """Train ``configs/<config>`` into ``out`` for ``steps``, or for as many steps as fit in
    ``seconds`` at the probed step rate (at most the recipe's). Returns steps and wall seconds."""
    path = str(ROOT / "configs" / config)
    overrides = [*overrides, *QUIET]
    recipe = genlab.load_config(path, overrides).trainer.steps
    rate = None
    if steps is None:
        rate = probe_rate(_Entry(path, overrides), "images")
        steps = max(1, min(recipe, math.floor(rate * seconds)))
    t0 = time.perf_counter()
    genlab.train(path, out, overrides=[*overrides, f"trainer.steps={steps}"], evaluate=False,
                 verbose=False)  # fmt: skip
    took = time.perf_counter() - t0
    print(f"  {config}: {steps} steps (recipe {recipe}) in {took / 60:.1f} min", flush=True)
    return {"config": config, "steps": steps, "recipe_steps": recipe, "seconds": took,
            "probed_steps_per_s": rate, "overrides": overrides}  # fmt: skip


def evaluate(out: Path, n: int, extra: list[str] = (), seeds: int = 1) -> dict:
    run = genlab.load_run(out)
    over = [f"eval.n={n}", f"eval.seeds={seeds}", "eval.nll=false", *extra]  # sample metrics
    cfg = genlab.load_config(str(out / "config.yaml"), over).eval
    t0 = time.perf_counter()
    report = genlab.api.evaluate_run(run, cfg=cfg, write=True)
    keep = ("fd", "precision", "recall", "class_accuracy", "reconstruction_mse", "codebook_usage",
            "perplexity")  # fmt: skip
    metrics = {k: {"value": v["value"], "floor": v.get("floor"), "std": v.get("std"),
                   "values": v.get("values"), "split": v.get("split")}
               for k, v in report["metrics"].items() if k in keep}  # fmt: skip
    return {"metrics": metrics, "eval_seconds": time.perf_counter() - t0, "n": n,
            "seeds": seeds, "split": report.get("split")}  # fmt: skip


def time_sampling(out: Path, n: int, **options) -> float:
    """Seconds per image of ``model.sample(n)`` (median of three, after a warm-up)."""
    model = genlab.load_run(out).model
    model.sample(min(n, 4), generator=torch.Generator().manual_seed(0), **options)
    times = []
    for seed in range(3):
        t0 = time.perf_counter()
        model.sample(n, generator=torch.Generator().manual_seed(seed), **options)
        times.append(time.perf_counter() - t0)
    return sorted(times)[1] / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--budget-minutes",
        type=float,
        default=10.0,
        help="training time of each pipeline in all, its stage 1 included",
    )
    ap.add_argument("--caption-minutes", type=float, default=12.0,
                    help="training time of the text-conditioned latent diffusion in all, its "
                         "stage 1 included (0: skip it)")  # fmt: skip
    ap.add_argument("--stage1-steps", type=int, default=1000)
    ap.add_argument("--eval-n", type=int, default=500)
    ap.add_argument("--eval-seeds", type=int, default=3, help="sampling seeds per pipeline")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps of both diffusions")
    ap.add_argument("--time-n", type=int, default=16, help="images per timed sampling call")
    ap.add_argument("--work", help="folder for the runs (default: a temporary one)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "two_stage.json"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="genlab-two-stage-"))
    budget = args.budget_minutes * 60
    s1 = [f"trainer.steps={args.stage1_steps}"]
    machine = {**machine_info(), "loadavg_before": list(os.getloadavg())}
    results: dict = {"machine": machine, "args": vars(args), "stage1": {}, "pipelines": {},
                     "budget_includes_stage1": True, "split": "test"}  # fmt: skip

    print("stage 1", flush=True)
    for name, config, extra in (("vqgan", "vqgan-mnist.yaml", []),
                                ("kl-autoencoder", "kl-autoencoder-mnist.yaml", []),
                                ("vqvae", "vqvae-mnist.yaml", ["model.channels=16"])):  # fmt: skip
        rec = train(config, work / name, [*extra, *s1], steps=args.stage1_steps)
        rec.update(evaluate(work / name, 500))
        results["stage1"][name] = rec

    print(f"pipelines: {args.budget_minutes:g} min each in all, stage 1 included", flush=True)
    dpm = {"sampler": "dpmpp-2m", "steps": args.steps}
    kl, vq = (f"model.autoencoder={work / k}" for k in ("kl-autoencoder", "vqgan"))
    pipelines = {  # name: config, overrides, seconds of training, timing options, its stage 1
        "pixel diffusion": ("ddpm-cfg-mnist.yaml", [], budget, dpm, None),
        "latent diffusion": ("ldm-mnist.yaml", [kl], budget, dpm, "kl-autoencoder"),
        "vqgan + prior": ("vqgan-prior-mnist.yaml", [vq], budget, {}, "vqgan"),
        "latent diffusion, captions": ("ldm-caption-mnist.yaml", [kl],
                                       args.caption_minutes * 60, dpm, "kl-autoencoder"),
    }  # fmt: skip
    if args.caption_minutes <= 0:
        del pipelines["latent diffusion, captions"]
    for name, (config, extra, total, timing, stage1) in pipelines.items():
        out = work / name.replace(" ", "-").replace(",", "").replace("+", "plus")
        before = results["stage1"][stage1]["seconds"] if stage1 else 0.0
        if total - before < 30:
            raise SystemExit(f"{name}: its stage 1 took {before:.0f} s of a {total:.0f} s budget")
        rec = train(config, out, extra, seconds=total - before)
        rec["stage1"] = stage1
        rec["stage1_seconds"] = before
        rec["budget_seconds"] = total
        rec["total_seconds"] = before + rec["seconds"]
        eval_extra = [f"eval.options.{k}={v}" for k, v in timing.items()]
        rec.update(evaluate(out, args.eval_n, eval_extra, args.eval_seeds))
        rec["seconds_per_image"] = time_sampling(out, args.time_n, **timing)
        rec["timing_options"] = timing
        results["pipelines"][name] = rec
        write_results(results, Path(args.out), t_start)

    rows = [("stage 1", "steps", "reconstruction MSE", "codebook usage")]
    for name, r in results["stage1"].items():
        m = r["metrics"]
        usage = m.get("codebook_usage", {}).get("value")
        rows.append((name, str(r["steps"]), f"{m['reconstruction_mse']['value']:.4f}",
                     "—" if usage is None else f"{usage:.1%}"))  # fmt: skip
    print("\n".join(" | ".join(r) for r in rows))
    print()
    head = ("pipeline", "steps", "train s (stage 1 + 2)", "FD ± sd (floor)", "precision",
            "recall", "class acc.", "s / image")  # fmt: skip
    lines = [" | ".join(head)]
    for name, r in results["pipelines"].items():
        m = r["metrics"]
        acc = m.get("class_accuracy", {}).get("value")
        lines.append(" | ".join((
            name, str(r["steps"]),
            f"{r['stage1_seconds']:.0f} + {r['seconds']:.0f} = {r['total_seconds']:.0f}",
            f"{m['fd']['value']:.1f} ± {m['fd']['std'] or 0:.1f} ({m['fd']['floor']:.1f})",
            f"{m['precision']['value']:.3f}", f"{m['recall']['value']:.3f}",
            "—" if acc is None else f"{acc:.1%}", f"{r['seconds_per_image'] * 1000:.1f} ms",
        )))  # fmt: skip
    print("\n".join(lines))
    write_results(results, Path(args.out), t_start)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
