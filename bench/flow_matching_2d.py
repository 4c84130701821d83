"""Benchmark genlab's flow matching on two moons against a bare loop and against torchcfm.

Run (in the bench environment, see bench/README.md):

    .bench-venv/bin/python bench/flow_matching_2d.py            # full run, ~5-10 min on 2 cores
    .bench-venv/bin/python bench/flow_matching_2d.py --quick    # smoke test, < 1 min

Prints two tables and writes ``bench/results/flow_matching_2d.json`` (``--out``) with the machine
it ran on. Under the main ``.venv`` (no torchcfm) the torchcfm rows are skipped with a note.

(a) Seconds per training step, batch 256, the default ``FlowMatchingConfig`` MLP (hidden 256,
    depth 4, time_dim 32), the trainer's AdamW (``make_optimizer``: fused where supported, lr 2e-3)
    for every variant:

    * ``floor``: forward of the same MLP on fixed tensors, MSE to a fixed target, backward, AdamW
      step (``zero_grad(set_to_none=True)``). Nothing else.
    * ``genlab`` / ``genlab-ot``: ``Trainer.train_step()`` with the demo recipe's trainer settings
      (``configs/flow-matching-moons.yaml``: EMA updated every 4 steps; progress and TensorBoard off): data batch, noise, coupling, LR schedule, clipping, EMA.
    * ``torchcfm-cfm`` / ``torchcfm-exactot``: the same MLP class and initial weights, the same
      AdamW, a loop like torchcfm's examples (randperm slices of the preloaded training set, ``x0 =
      randn``, ``FM.sample_location_and_conditional_flow``, MSE, backward, step), sigma = 0. The
      loop also sets the LR from genlab's ``lr_at`` (it is the loop (b) trains with; ~1 us).

    Variants are interleaved round-robin (the order rotates every round); each round times a block
    of steps per variant. Reported: the median over rounds of ms/step, and the median over rounds
    of the ratio to the floor *of the same round*.

(b) W2 vs NFE: the four methods trained for ``--steps`` steps (batch 256, seed 0, same AdamW and
    LR schedule; genlab additionally has its EMA (used for sampling) and gradient clipping),
    sampled with Euler at 1, 2, 5, 10, 100 steps and with dopri5 (rtol = atol = 1e-5, NFE counted),
    2,000 samples for each of 3 sampling seeds (the same initial noise for every method), exact W2
    against 2,000 fresh draws of the true law (one reference set, seed ``REF_SEED``, shared by every
    method). "perfect model" is W2 between fresh true draws and the same references.

Time conventions: genlab goes from data (t = 0) to noise (t = 1) and samples from t = 1 to 0;
torchcfm goes from noise (t = 0) to data (t = 1). Each is trained and sampled in its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _machine
import numpy as np
import torch
from _machine import version

from genlab.config import DataConfig, TrainerConfig
from genlab.config import load as load_config
from genlab.data import load
from genlab.eval.metrics import w2
from genlab.models.diffusion.model import FlowMatching, FlowMatchingConfig
from genlab.train.optim import lr_at, make_optimizer
from genlab.train.trainer import Trainer

try:
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    TORCHCFM_ERROR = None
except ImportError as e:  # the main .venv: genlab rows only
    ConditionalFlowMatcher = ExactOptimalTransportConditionalFlowMatcher = None
    TORCHCFM_ERROR = str(e)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "flow_matching_2d.json"
BATCH = 256
DATA = DataConfig(name="moons", n=50_000, val_fraction=0.1, seed=0)
SEED = 0  # initial weights and training randomness of every method
SAMPLE_SEEDS = (0, 1, 2)  # initial noise of the samplers (the same for every method)
REF_SEED = 1_000_003  # the reference draws of the true law (distinct from every other seed)
PERFECT_SEEDS = (2_000_001, 2_000_002, 2_000_003)  # "perfect model": fresh true draws
EULER_STEPS = (1, 2, 5, 10, 100)
RTOL = ATOL = 1e-5  # dopri5, as genlab's sampler


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def load_moons():
    return load(DATA.name, n=DATA.n, val_fraction=DATA.val_fraction, seed=DATA.seed)


def fresh_net(seed: int = SEED) -> torch.nn.Module:
    """The default FlowMatchingConfig backbone, with the initial weights genlab's model gets."""
    torch.manual_seed(seed)
    return FlowMatching.from_config(FlowMatchingConfig(), (2,)).net


def optimizer_for(params, tc: TrainerConfig | None = None) -> torch.optim.Optimizer:
    """The trainer's own optimizer factory (AdamW, fused where supported), for every variant."""
    return make_optimizer(list(params), tc or TrainerConfig(), torch.device("cpu"))


RECIPE = Path(__file__).resolve().parents[1] / "configs" / "flow-matching-moons.yaml"


def genlab_trainer(coupling: str, steps: int, run_dir: Path) -> Trainer:
    """A trainer with the demo recipe's settings (``configs/flow-matching-moons.yaml``)."""
    cfg = load_config(
        RECIPE,
        [
            f"model.coupling={coupling}",
            f"trainer.steps={steps}",
            f"trainer.seed={SEED}",
            "trainer.progress=false",
            "trainer.tensorboard=false",
        ],
    )
    cfg.data = DataConfig(**vars(DATA))
    torch.manual_seed(SEED)  # the initial weights, as genlab.api.train does
    model = FlowMatching.from_config(cfg.model, (2,))
    return Trainer(model, load_moons(), cfg, run_dir)


def settle_trainer(trainer: Trainer) -> None:
    """Wait for the batches the trainer's prefetcher has already submitted (if it has one).

    Called at the end of every timed block, inside the timing: the background work a block starts
    is charged to that block instead of slowing down the next variant's block.
    """
    pending = getattr(getattr(trainer, "prefetcher", None), "pending", None) or ()
    for item in list(pending):
        fut = item[0] if isinstance(item, tuple) else item
        with contextlib.suppress(Exception):
            fut.result()


def close_trainer(trainer: Trainer) -> None:
    """Shut down whatever background work the trainer may have started (e.g. OT prefetching)."""
    close = getattr(trainer, "close", None)
    if callable(close):
        close()


class FloorLoop:
    """Forward, MSE to a fixed target, backward, AdamW step: nothing else."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(SEED)
        self.x = torch.randn(BATCH, 2, generator=g)
        self.t = torch.rand(BATCH, generator=g)
        self.target = torch.randn(BATCH, 2, generator=g)
        self.net = fresh_net()
        self.opt = optimizer_for(self.net.parameters())

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = torch.mean((self.net(self.x, self.t) - self.target) ** 2)
        loss.backward()
        self.opt.step()


class TorchCFMLoop:
    """A torchcfm-style training loop (torchcfm's convention: noise at t = 0, data at t = 1)."""

    def __init__(self, matcher, data: torch.Tensor, tc: TrainerConfig) -> None:
        self.fm, self.data, self.tc = matcher, data, tc
        self.net = fresh_net()
        self.opt = optimizer_for(self.net.parameters(), tc)
        torch.manual_seed(SEED)  # torch.rand / randn_like inside torchcfm use the global RNGs
        np.random.seed(SEED)  # the exact-OT matcher draws pairs from the plan with np.random
        self.perm_gen = torch.Generator().manual_seed(SEED)
        self.perm = torch.randperm(len(data), generator=self.perm_gen)
        self.pos = 0
        self.step_i = 0

    def step(self) -> torch.Tensor:
        if self.pos + BATCH > len(self.data):
            self.perm = torch.randperm(len(self.data), generator=self.perm_gen)
            self.pos = 0
        x1 = self.data[self.perm[self.pos : self.pos + BATCH]]
        self.pos += BATCH
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step_i, self.tc)
        x0 = torch.randn_like(x1)
        t, xt, ut = self.fm.sample_location_and_conditional_flow(x0, x1)
        self.opt.zero_grad(set_to_none=True)
        vt = self.net(xt, t)
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        self.opt.step()
        self.step_i += 1
        return loss.detach()


def torchcfm_matchers() -> dict[str, Callable[[], object]]:
    if ConditionalFlowMatcher is None:
        return {}
    return {
        "torchcfm-cfm": lambda: ConditionalFlowMatcher(sigma=0.0),
        "torchcfm-exactot": lambda: ExactOptimalTransportConditionalFlowMatcher(sigma=0.0),
    }


# ---------------------------------------------------------------------------------------------
# (a) seconds per training step
# ---------------------------------------------------------------------------------------------


def bench_steps(threads: int, rounds: int, round_steps: int, warmup: int) -> dict:
    torch.set_num_threads(threads)
    data = load_moons().train
    huge = TrainerConfig(steps=10**9, progress=False, tensorboard=False)
    steppers: dict[str, Callable[[], object]] = {}
    settle: dict[str, Callable[[], object]] = {}
    # torch threads per variant: the table's count, except where genlab's trainer picks its own
    # (with OT prefetch on a small CPU it leaves the solver thread a core; Trainer.threads)
    threads_for: dict[str, int] = {}
    trainers: list[Trainer] = []
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        try:
            floor = FloorLoop()
            steppers["floor"] = floor.step
            for name, coupling in (("genlab", "independent"), ("genlab-ot", "ot")):
                tr = genlab_trainer(coupling, huge.steps, Path(tmp) / name)
                trainers.append(tr)
                steppers[name] = tr.train_step
                settle[name] = lambda tr=tr: settle_trainer(tr)
                threads_for[name] = tr.threads or threads
            for name, make in torchcfm_matchers().items():
                steppers[name] = TorchCFMLoop(make(), data, huge).step
            names = list(steppers)
            for name in names:
                torch.set_num_threads(threads_for.get(name, threads))
                for _ in range(warmup):
                    steppers[name]()
                if name in settle:
                    settle[name]()
            ms: dict[str, list[float]] = {n: [] for n in names}
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    fn = steppers[name]
                    torch.set_num_threads(threads_for.get(name, threads))
                    t0 = time.perf_counter()
                    for _ in range(round_steps):
                        fn()
                    if name in settle:
                        settle[name]()
                    ms[name].append((time.perf_counter() - t0) * 1e3 / round_steps)
        finally:
            torch.set_num_threads(threads)
            for tr in trainers:
                close_trainer(tr)
    rows = []
    for name in names:
        ratios = [a / b for a, b in zip(ms[name], ms["floor"])]
        rows.append(
            {
                "variant": name,
                "torch_threads": threads_for.get(name, threads),
                "ms_per_step_median": statistics.median(ms[name]),
                "ms_per_step_min": min(ms[name]),
                "ratio_to_floor_median": statistics.median(ratios),
                "ratio_to_floor_min": min(ratios),
                "ratio_to_floor_max": max(ratios),
                "ms_per_step_rounds": ms[name],
            }
        )
    return {
        "threads": threads,
        "rounds": rounds,
        "steps_per_round": round_steps,
        "warmup_steps": warmup,
        "rows": rows,
    }


def print_step_table(res: dict) -> None:
    print(
        f"\n(a) ms per training step, batch {BATCH}, {res['threads']} torch thread(s); "
        f"{res['rounds']} interleaved rounds x {res['steps_per_round']} steps "
        f"(medians over rounds; ratio = per-round ratio to the floor, median [min-max])"
    )
    print(f"{'variant':<18}{'threads':>8}{'ms/step':>9}{'ratio to floor':>26}")
    for r in res["rows"]:
        spread = f"[{r['ratio_to_floor_min']:.2f}-{r['ratio_to_floor_max']:.2f}]"
        print(
            f"{r['variant']:<18}{r.get('torch_threads', res['threads']):>8}"
            f"{r['ms_per_step_median']:>9.3f}{r['ratio_to_floor_median']:>12.2f}x {spread:>13}"
        )


# ---------------------------------------------------------------------------------------------
# (b) W2 vs NFE
# ---------------------------------------------------------------------------------------------


def sample_noise(n: int, seed: int) -> torch.Tensor:
    """The noise genlab's ``FlowMatching.sample`` draws for ``generator=Generator().manual_seed(seed)``."""
    return torch.randn((n, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


@torch.no_grad()
def torchcfm_sample(net: torch.nn.Module, x0: torch.Tensor, sampler: str, steps: int):
    """Integrate torchcfm's ODE ``dx/dt = net(x, t)`` from noise (t = 0) to data (t = 1)."""
    n = x0.shape[0]

    def drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(x, t.to(x.dtype).expand(n))

    if sampler == "euler":
        ts = torch.linspace(0.0, 1.0, steps + 1)
        x = x0
        for i in range(steps):
            x = x + (ts[i + 1] - ts[i]) * drift(x, ts[i])
        return x, steps
    from torchdiffeq import odeint

    nfe = 0

    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return drift(x, t)

    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)  # float64 times, as genlab's dopri5
    out = odeint(f, x0, ts, method="dopri5", rtol=RTOL, atol=ATOL)
    return out[-1], nfe


def samplers() -> list[tuple[str, str, int]]:
    return [(f"euler-{k}", "euler", k) for k in EULER_STEPS] + [("dopri5", "dopri5", 0)]


def score(
    draw: Callable[[str, int, int], tuple[torch.Tensor, int]], ref, n: int, seeds: tuple
) -> dict:
    """W2 of ``draw(sampler, steps, seed)`` against ``ref`` for every sampler and seed."""
    out = {}
    for label, sampler, steps in samplers():
        vals, nfes = [], []
        for seed in seeds:
            x, nfe = draw(sampler, steps, seed)
            vals.append(w2(x[:n], ref))
            nfes.append(nfe)
        out[label] = {
            "w2": vals,
            "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "nfe": nfes,
        }
    return out


def bench_w2(steps: int, n: int, threads: int, seeds: tuple = SAMPLE_SEEDS) -> dict:
    torch.set_num_threads(threads)
    ds = load_moons()
    ref = ds.true.sample(n, torch.Generator().manual_seed(REF_SEED))
    methods: dict[str, dict] = {}

    perfect = [
        w2(ds.true.sample(n, torch.Generator().manual_seed(s)), ref)
        for s in PERFECT_SEEDS[: len(seeds)]
    ]
    methods["perfect model"] = {
        "note": "fresh true draws vs the same references (the finite-sample floor of W2)",
        "w2": perfect,
        "mean": statistics.fmean(perfect),
        "std": statistics.stdev(perfect) if len(perfect) > 1 else 0.0,
    }

    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        for name, coupling in (("genlab", "independent"), ("genlab-ot", "ot")):
            tr = genlab_trainer(coupling, steps, Path(tmp) / name)
            try:
                result = tr.fit()
            finally:
                close_trainer(tr)
            model = tr.model.eval()

            def draw(sampler, k, seed, model=model):
                g = torch.Generator().manual_seed(seed)
                res = model.sample(n, sampler=sampler, steps=k or None, generator=g)
                return res.x, res.nfe

            with tr.ema_weights():
                ema_scores = score(draw, ref, n, seeds)
            raw_scores = score(draw, ref, n, seeds)
            methods[name] = {
                "train_seconds": result.seconds,
                "final_loss": result.final_loss,
                "weights": "EMA (what genlab samples with)",
                "samplers": ema_scores,
            }
            methods[f"{name} (raw weights)"] = {
                "weights": "the optimizer's weights, no EMA",
                "samplers": raw_scores,
            }
            print(f"  trained {name}: {result.seconds:.1f} s, final loss {result.final_loss:.4f}")

        tc = TrainerConfig(steps=steps, seed=SEED)
        for name, make in torchcfm_matchers().items():
            loop = TorchCFMLoop(make(), ds.train, tc)
            losses = []
            t0 = time.perf_counter()
            for _ in range(steps):
                losses.append(loop.step())
            seconds = time.perf_counter() - t0
            final = float(torch.stack(losses[-100:]).mean())
            net = loop.net.eval()

            def draw(sampler, k, seed, net=net):
                return torchcfm_sample(net, sample_noise(n, seed), sampler, k)

            methods[name] = {
                "train_seconds": seconds,
                "final_loss": final,
                "weights": "the optimizer's weights (torchcfm's loop has no EMA)",
                "samplers": score(draw, ref, n, seeds),
            }
            print(f"  trained {name}: {seconds:.1f} s, final loss {final:.4f}")
    return {
        "steps": steps,
        "batch_size": BATCH,
        "n_samples": n,
        "sample_seeds": list(seeds),
        "reference_seed": REF_SEED,
        "perfect_seeds": list(PERFECT_SEEDS[: len(seeds)]),
        "dopri5": {"rtol": RTOL, "atol": ATOL},
        "threads": threads,
        "methods": methods,
    }


def print_w2_table(res: dict) -> None:
    labels = [s[0] for s in samplers()]
    print(
        f"\n(b) W2 to the true law (data units, lower is better), mean ± std over "
        f"{len(res['sample_seeds'])} sampling seeds; {res['n_samples']} samples vs {res['n_samples']} "
        f"reference draws; trained {res['steps']} steps, batch {BATCH}"
    )
    nfe_cols = []
    for label in labels:
        if label == "dopri5":
            nfes = [
                x
                for m in res["methods"].values()
                if "samplers" in m
                for x in m["samplers"]["dopri5"]["nfe"]
            ]
            rng = f"{min(nfes)}-{max(nfes)}" if nfes else "?"
            nfe_cols.append(f"dopri5 ({rng})")
        else:
            nfe_cols.append(f"NFE {label.split('-')[1]}")
    w, c = 30, 18
    print(f"{'method':<{w}}" + "".join(f"{h:>{c}}" for h in nfe_cols) + f"{'dopri5 NFE':>12}")
    for name, m in res["methods"].items():
        if "samplers" not in m:
            cell = f"{m['mean']:.4f} ± {m['std']:.4f}"
            print(f"{name:<{w}}" + "".join(f"{cell:>{c}}" for _ in labels) + f"{'-':>12}")
            continue
        s = m["samplers"]
        cells = [f"{s[lbl]['mean']:.4f} ± {s[lbl]['std']:.4f}" for lbl in labels]
        nfe = statistics.fmean(s["dopri5"]["nfe"])
        print(f"{name:<{w}}" + "".join(f"{x:>{c}}" for x in cells) + f"{nfe:>12.1f}")
    print("(perfect model: the same value in every column; it does not depend on the sampler)")
    paired = res.get("paired_differences") or paired_differences(res)
    if paired:
        print(
            "\npaired W2 differences, genlab minus torchcfm on the same initial noise, mean ± std "
            "over the sampling seeds (negative: genlab closer to the true law)"
        )
        print(f"{'pair':<{w}}" + "".join(f"{h:>{c}}" for h in nfe_cols))
        for name, d in paired.items():
            cells = [f"{d[lbl]['mean']:+.4f} ± {d[lbl]['std']:.4f}" for lbl in labels]
            print(f"{name:<{w}}" + "".join(f"{x:>{c}}" for x in cells))


PAIRS = (("genlab", "torchcfm-cfm"), ("genlab-ot", "torchcfm-exactot"))


def paired_differences(res: dict) -> dict:
    """Per-seed W2 differences between genlab and its torchcfm counterpart (same noise per seed).

    The seed-to-seed spread of W2 is mostly the shared initial noise (every method has the same
    high and low seeds), so these paired differences are much tighter than the per-method spreads.
    """
    methods, out = res["methods"], {}
    for a, b in PAIRS:
        if "samplers" not in methods.get(a, {}) or "samplers" not in methods.get(b, {}):
            continue
        row = {}
        for label in methods[a]["samplers"]:
            d = [
                x - y
                for x, y in zip(
                    methods[a]["samplers"][label]["w2"], methods[b]["samplers"][label]["w2"]
                )
            ]
            row[label] = {
                "diff": d,
                "mean": statistics.fmean(d),
                "std": statistics.stdev(d) if len(d) > 1 else 0.0,
            }
        out[f"{a} - {b}"] = row
    return out


# ---------------------------------------------------------------------------------------------
# Machine info and main
# ---------------------------------------------------------------------------------------------


def machine_info() -> dict:
    info = _machine.machine_info(
        torchcfm=version("torchcfm") if TORCHCFM_ERROR is None else None,
    )
    info["optimizer"] = repr(optimizer_for(fresh_net().parameters()).defaults)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test (< 1 min, not a measurement)")
    p.add_argument("--steps", type=int, default=None, help="training steps for W2 (default 6000)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 7)")
    p.add_argument("--round-steps", type=int, default=None, help="steps per variant per round")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)"
    )
    p.add_argument(
        "--no-one-thread",
        action="store_true",
        help="skip the 1-thread timing table (always skipped with --quick)",
    )
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-w2", action="store_true")
    p.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    p.add_argument(
        "--report", type=Path, default=None, help="print the tables of a results JSON; no run"
    )
    args = p.parse_args(argv)

    if args.report is not None:
        record = json.loads(args.report.read_text())
        for res in record.get("step_time", []):
            print_step_table(res)
        if "w2_vs_nfe" in record:
            print_w2_table(record["w2_vs_nfe"])
        m = record["machine"]
        print(
            f"\n{m['date']}, torch {m['torch']}, {m['cpu_count']} CPUs, load average (1/5/15 min) "
            f"before {'/'.join(f'{x:.2f}' for x in m['loadavg_before'])}, "
            f"after {'/'.join(f'{x:.2f}' for x in m['loadavg_after'])}"
        )
        return 0

    q = args.quick
    steps = args.steps or (200 if q else 6_000)
    rounds = args.rounds or (2 if q else 7)
    round_steps = args.round_steps or (10 if q else 200)
    warmup = 3 if q else 50
    n = 256 if q else 2_000
    threads = args.threads or (1 if q else 2)
    out = args.out or (
        Path(tempfile.gettempdir()) / "flow_matching_2d.quick.json" if q else RESULTS
    )

    if TORCHCFM_ERROR is not None:
        print(
            f"note: torchcfm is not importable here ({TORCHCFM_ERROR}); the torchcfm rows are "
            "skipped. Use the bench environment (bench/README.md) for them."
        )
    record: dict = {"machine": machine_info(), "quick": q}
    record["machine"]["loadavg_before"] = list(os.getloadavg())
    t_start = time.perf_counter()
    if not args.skip_timing:
        record["step_time"] = [bench_steps(threads, rounds, round_steps, warmup)]
        print_step_table(record["step_time"][0])
        if not (args.no_one_thread or q) and threads != 1:
            record["step_time"].append(bench_steps(1, rounds, round_steps, warmup))
            print_step_table(record["step_time"][1])
    if not args.skip_w2:
        print(f"\ntraining {steps} steps per method for W2 ...")
        record["w2_vs_nfe"] = bench_w2(steps, n, threads, SAMPLE_SEEDS[:2] if q else SAMPLE_SEEDS)
        record["w2_vs_nfe"]["paired_differences"] = paired_differences(record["w2_vs_nfe"])
        print_w2_table(record["w2_vs_nfe"])
    _machine.write_results(record, out, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
