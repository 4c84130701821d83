"""Benchmark GANs on the standard mixture protocol (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al.
2018), and the cost of a training step against a bare PyTorch two-player loop.

Run:  OMP_NUM_THREADS=1 .venv/bin/python bench/gan_2d.py [--seeds 5] [--jobs 2] [--quick]

1. Ring (8 Gaussians on a circle of radius 1, std 0.01) and grid (25 Gaussians at {-4,...,4}^2,
   std 0.05): for each loss (configs/<loss>-ring.yaml, configs/<loss>-grid.yaml) and each seed,
   train, draw 2,500 samples from the generator's EMA and count the modes covered (nearest mode of
   at least one high-quality sample), the share of high-quality samples (within 3 std of their
   nearest mode) and the reverse KL of the high-quality samples' mode histogram to the uniform
   one (:mod:`genlab.eval.metrics.modes`). Mean ± standard error over seeds, beside PacGAN's
   published rows.
2. Seconds per training step: genlab's ``Trainer.train_step`` against a bare loop doing the same
   updates (the same networks, losses, fused AdamW, EMA of the generator, batch drawn by index
   from the same tensor), interleaved in rounds, median ratio (same process, same threads).

Prints tables and writes ``bench/results/gan_2d.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _machine import ROOT, machine_info, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "gan_2d.json"
LOSSES = ("gan", "wgan", "wgan-gp", "hinge")
PUBLISHED = {  # PacGAN (Lin et al. 2018), Tables 1 and 3: modes, high quality, reverse KL
    "grid": {"GAN": (17.3, 0.948, 0.70), "PacGAN4": (24.8, 0.936, 0.04)},
    "ring": {"GAN": (6.3, 0.987, 0.47), "PacGAN2": (7.9, 0.956, 0.07)},
}


def run_one(job: tuple[str, str, int, int | None]) -> dict:
    """Train one (loss, data, seed) and score 2,500 samples by the protocol."""
    loss, data, seed, steps = job
    torch.set_num_threads(1)
    import tempfile

    import genlab
    from genlab.eval.metrics.modes import mode_statistics

    cfg_path = ROOT / "configs" / f"{loss}-{data}.yaml"
    overrides = [f"trainer.seed={seed}", f"data.seed={seed}", "trainer.progress=false",
                 "trainer.tensorboard=false"]  # fmt: skip
    if steps:
        overrides.append(f"trainer.steps={steps}")
    cfg = genlab.load_config(cfg_path, overrides)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run = genlab.train(cfg, out=out, evaluate=False, verbose=False)
        seconds = time.perf_counter() - t0
        x = run.model.sample(2500, generator=torch.Generator().manual_seed(10_000 + seed)).x
        centers, std = run.dataset.true.modes()
        st = mode_statistics(x.double(), centers, std)
    return {
        "loss": loss, "data": data, "seed": seed, "modes": st.modes_covered,
        "high_quality": st.high_quality, "reverse_kl": st.reverse_kl, "train_seconds": seconds,
        "steps": cfg.trainer.steps,
    }  # fmt: skip


def mean_se(v: list[float]) -> tuple[float, float]:
    return statistics.mean(v), (statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0)


# --- the bare two-player loop (the floor) -----------------------------------------------------
def bare_stepper(model, data: torch.Tensor, tc, seed: int = 0):
    """The same updates as genlab's trainer, written plainly: n_critic critic updates and one
    generator update per step, each on a batch drawn by index, fused AdamW, the lazy R1 penalty
    and packing where the recipe has them, the generator's EMA."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    opt_d = torch.optim.AdamW(model.critic.parameters(), lr=c.lr_d or tc.lr, betas=c.betas,
                              weight_decay=0.0, fused=True)  # fmt: skip
    opt_g = torch.optim.AdamW(model.generator.parameters(), lr=c.lr_g or tc.lr, betas=c.betas,
                              weight_decay=0.0, fused=True)  # fmt: skip
    gparams = list(model.generator.parameters())
    ema = [p.detach().clone() for p in gparams]
    b = tc.batch_size

    m = c.pack  # PacGAN: the critic judges m samples side by side
    updates = [0]  # critic updates so far (the lazy R1 schedule)

    def critic_loss(x, z, eps):
        fake = model.generator(z).detach().reshape(b // m, -1)
        x = x.reshape(b // m, -1)
        r1_now = c.r1 > 0 and updates[0] % c.r1_every == 0
        updates[0] += 1
        if r1_now:
            x = x.requires_grad_(True)
        d_real, d_fake = model.critic(x), model.critic(fake)
        if c.loss == "gan":
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        elif c.loss == "hinge":
            loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        else:
            loss = d_fake.mean() - d_real.mean()
        if c.loss == "wgan-gp":
            e = eps[: len(x), None]
            mix = (e * x.detach() + (1 - e) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(model.critic(mix).sum(), mix, create_graph=True)
            loss = loss + c.gp_weight * ((grad.norm(dim=1) - 1) ** 2).mean()
        if r1_now:
            (grad,) = torch.autograd.grad(d_real.sum(), x, create_graph=True)
            loss = loss + c.r1 / 2 * c.r1_every * grad.square().sum(1).mean()
        return loss

    def step() -> None:
        for _ in range(c.n_critic):
            x = data[torch.randint(0, len(data), (b,), generator=g)]
            z = torch.randn(b, c.z_dim, generator=g)
            eps = torch.rand(b, generator=g)
            opt_d.zero_grad(set_to_none=True)
            critic_loss(x, z, eps).backward()
            opt_d.step()
            if c.loss == "wgan":
                with torch.no_grad():
                    for p in model.critic.parameters():
                        p.clamp_(-c.clip, c.clip)
        z = torch.randn(b, c.z_dim, generator=g)
        opt_g.zero_grad(set_to_none=True)
        d = model.critic(model.generator(z).reshape(b // m, -1))
        (F.softplus(-d).mean() if c.loss == "gan" else -d.mean()).backward(inputs=gparams)
        opt_g.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, gparams, 1 - tc.ema_decay)

    return step


def time_steps(loss: str, data: str, rounds: int, per_round: int, threads: int) -> dict:
    """Seconds per step of genlab's trainer and of the bare loop, interleaved in rounds."""
    import tempfile

    import genlab
    from genlab.train.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = genlab.load_config(
        ROOT / "configs" / f"{loss}-{data}.yaml",
        ["trainer.progress=false", "trainer.tensorboard=false"],
    )
    dataset = genlab.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.build_model(cfg, dataset)
    bare_model = copy.deepcopy(model)
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(model, dataset, cfg, out)
        steppers = {
            "genlab": tr.train_step,
            "bare": bare_stepper(bare_model, dataset.train, cfg.trainer),
        }
        times: dict[str, list[float]] = {k: [] for k in steppers}
        for fn in steppers.values():  # warm up
            for _ in range(20):
                fn()
        for _ in range(rounds):
            for name, fn in steppers.items():
                t0 = time.perf_counter()
                for _ in range(per_round):
                    fn()
                times[name].append((time.perf_counter() - t0) / per_round)
    ratios = [a / b for a, b in zip(times["genlab"], times["bare"])]
    return {
        "loss": loss, "data": data, "threads": threads,
        "genlab_ms": 1e3 * statistics.median(times["genlab"]),
        "bare_ms": 1e3 * statistics.median(times["bare"]),
        "ratio_median": statistics.median(ratios), "ratios": ratios,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--data", default="ring,grid")
    ap.add_argument("--jobs", type=int, default=2, help="trainings in parallel (1 thread each)")
    ap.add_argument("--steps", type=int, help="override the recipes' training steps")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-steps", type=int, default=50)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-modes", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, 300 steps")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the runs and timings of other losses/data from the results file already there",
    )
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.rounds, args.round_steps = 2, 300, 2, 5
    t_start = time.perf_counter()
    record = {"machine": {**machine_info(), "loadavg_before": list(os.getloadavg())}}
    losses, datas = args.losses.split(","), args.data.split(",")
    if not args.skip_modes:
        jobs = [(lo, d, s, args.steps) for d in datas for lo in losses for s in range(args.seeds)]
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            rows = pool.map(run_one, jobs)
        if args.merge and RESULTS.exists():
            old = json.loads(RESULTS.read_text()).get("runs", [])
            rows = [r for r in old if (r["loss"], r["data"]) not in
                    {(lo, d) for lo in losses for d in datas}] + rows  # fmt: skip
            losses = list(dict.fromkeys([r["loss"] for r in rows]))
            datas = list(dict.fromkeys([r["data"] for r in rows]))
        record["runs"] = rows
        print(f"\nmixture protocol, {args.seeds} seeds, 2,500 samples (mean ± standard error)")
        print(f"  {'data':<5} {'loss':<8} {'modes':>12} {'high quality':>16} {'reverse KL':>16}")
        summary = {}
        for d in datas:
            k = 8 if d == "ring" else 25
            for lo in losses:
                rs = [r for r in rows if r["data"] == d and r["loss"] == lo]
                if not rs:
                    continue
                m, hq, kl = (
                    mean_se([r[f] for r in rs]) for f in ("modes", "high_quality", "reverse_kl")
                )
                summary[f"{d}/{lo}"] = {"modes": m, "high_quality": hq, "reverse_kl": kl}
                print(
                    f"  {d:<5} {lo:<8} {m[0]:6.2f} ± {m[1]:.2f}/{k} {100 * hq[0]:8.1f} ± "
                    f"{100 * hq[1]:.1f}% {kl[0]:9.3f} ± {kl[1]:.3f}"
                )
            for name, (m, hq, kl) in PUBLISHED[d].items():
                print(
                    f"  {d:<5} {name:<8} {m:6.1f}      /{k} {100 * hq:8.1f}        % {kl:9.2f}  (PacGAN)"
                )
        record["summary"] = summary
    elif args.merge and RESULTS.exists():  # keep the protocol's runs and summary as they are
        old = json.loads(RESULTS.read_text())
        record.update({k: old[k] for k in ("runs", "summary") if k in old})
    if not args.skip_timing:
        print("\nseconds per training step, genlab trainer vs the bare two-player loop")
        record["timing"] = []
        if args.merge and RESULTS.exists():
            old = json.loads(RESULTS.read_text()).get("timing", [])
            record["timing"] = [t for t in old if t["loss"] not in args.losses.split(",")]
        for lo in args.losses.split(","):
            t = time_steps(lo, "grid", args.rounds, args.round_steps, threads=1)
            record["timing"].append(t)
            print(
                f"  {lo:<8} genlab {t['genlab_ms']:.2f} ms, bare {t['bare_ms']:.2f} ms, "
                f"ratio {t['ratio_median']:.3f}"
            )
    if args.skip_timing and args.merge and RESULTS.exists():  # keep the timings already there
        record["timing"] = json.loads(RESULTS.read_text()).get("timing", [])
    write_results(record, RESULTS, t_start)


if __name__ == "__main__":
    main()
