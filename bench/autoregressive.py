"""Benchmark the character-level transformer (GPT) on Tiny Shakespeare: the cost of genlab's
training step against a bare PyTorch loop, the KV cache's sampling speed-up, nanoGPT's CPU recipe
against the loss nanoGPT reports, and a character 5-gram baseline on the same split.

Run:  OMP_NUM_THREADS=1 .venv/bin/python bench/autoregressive.py [--quick]

(a) Seconds per training step: genlab's ``Trainer.train_step`` against a bare loop with the same
    network object's copy, the same fused AdamW (betas, weight decay), the same gradient clipping
    and learning-rate schedule, and windows of the same text at random offsets (``torch.randint``
    in the loop; genlab draws shuffled offsets), recipe ``configs/char-gpt-shakespeare.yaml``.
    Interleaved rounds, the order alternating; the median over rounds of the ratio genlab / bare
    in the same round. Bar: <= 1.05.
(b) Sampling speed at 256 new characters from an empty prompt, with and without the KV cache
    (``cache=True/False``: the same characters, checked): characters per second for 1 and for 16
    sequences at once, on the recipe's network with a context of 257 so that no window slides
    (untrained weights: the cost does not depend on them). Bar: >= 3x.
(c) ``configs/nanogpt-cpu-shakespeare.yaml`` (nanoGPT's CPU configuration: 4 layers, 4 heads,
    128 wide, context 64, batch 12, 2,000 steps, lr 1e-3 cosine to 1e-4) trained from scratch;
    nanoGPT's split: the first 90% of the text trains, the last 10% is scored (genlab's test
    split, with no validation part: this recipe selects nothing), as nanoGPT reports its
    validation loss on the last 10%. Held-out nats per character: genlab eval's exact NLL of
    consecutive 64-character windows (every character scored, the first of a window from the
    start token alone) and, nearer nanoGPT's estimate (every target has at least one character of
    context), the mean over positions 1..63 of the same windows. nanoGPT's README: 1.88. Bar: <= 1.88.
(d) A character 5-gram with interpolated Witten-Bell smoothing (Witten & Bell 1991; as in Chen &
    Goodman 1998, sec. 2.5), down to a uniform distribution over the vocabulary, counted on the
    same first 90% and scored on the same last 10%: nats per character.

Prints a table and writes ``bench/results/autoregressive.json`` (``--quick``: a smoke test with
a few steps that measures nothing, written to $TMPDIR).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from _machine import ROOT, machine_info, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "autoregressive.json"
RECIPE = ROOT / "configs" / "char-gpt-shakespeare.yaml"
NANOGPT = ROOT / "configs" / "nanogpt-cpu-shakespeare.yaml"
QUIET = ["trainer.progress=false", "trainer.tensorboard=false"]


# --- (a) the training step against a bare loop ---------------------------------------------------
def bare_stepper(model, stream: torch.Tensor, tc, seed: int = 0):
    """The update genlab's trainer makes, written plainly: a batch of windows at random offsets,
    the start token shift, next-character cross-entropy, fused AdamW, global-norm clipping."""
    from genlab.train.optim import lr_at

    net, C, bos = model.net, model.config.context, model.bos
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2]},  # decay matrices only (nanoGPT)
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay,
                            fused=True)  # fmt: skip
    offsets = torch.arange(C)
    step = [0]

    def one() -> None:
        starts = torch.randint(0, len(stream) - C + 1, (tc.batch_size,), generator=g)
        x = stream[starts[:, None] + offsets].long()  # (B, C); token files hold uint8 / uint16
        inp = torch.cat([x.new_full((len(x), 1), bos), x[:, :-1]], dim=1)
        loss = F.cross_entropy(net(inp).reshape(-1, model.vocab_size), x.reshape(-1))
        for group in opt.param_groups:
            group["lr"] = lr_at(step[0], tc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)
        opt.step()
        step[0] += 1

    return one


def time_steps(rounds: int, per_round: int, overrides: list[str]) -> dict:
    import genlab
    from genlab.train.trainer import Trainer

    cfg = genlab.load_config(RECIPE, [*QUIET, "trainer.val_every=0", *overrides])
    data = genlab.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.build_model(cfg, data)
    bare_model = copy.deepcopy(model)
    times: dict[str, list[float]] = {"genlab": [], "bare": []}
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(model, data, cfg, out)
        tr.model.train()
        steppers = {"genlab": tr.train_step, "bare": bare_stepper(bare_model.train(), data.train,
                                                                  cfg.trainer)}  # fmt: skip
        for fn in steppers.values():  # warm up
            for _ in range(3):
                fn()
        for r in range(rounds):
            order = list(steppers) if r % 2 == 0 else list(steppers)[::-1]
            for name in order:
                t0 = time.perf_counter()
                for _ in range(per_round):
                    steppers[name]()
                times[name].append((time.perf_counter() - t0) / per_round)
    ratios = [a / b for a, b in zip(times["genlab"], times["bare"])]
    return {
        "config": str(RECIPE.relative_to(ROOT)), "overrides": overrides,
        "batch_size": cfg.trainer.batch_size, "context": cfg.model.context,
        "genlab_ms": 1e3 * statistics.median(times["genlab"]),
        "bare_ms": 1e3 * statistics.median(times["bare"]),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios), "ratios": ratios, "rounds": rounds, "steps_per_round": per_round,
    }  # fmt: skip


# --- (b) sampling with and without the KV cache ----------------------------------------------------
def time_sampling(length: int, batches: list[int], repeats: int) -> list[dict]:
    import genlab

    cfg = genlab.load_config(RECIPE, [*QUIET, f"model.context={length + 1}"])
    data = genlab.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.build_model(cfg, data).eval()
    rows = []
    for n in batches:
        secs: dict[bool, list[float]] = {True: [], False: []}
        xs = {}
        for _ in range(repeats):
            for cache in (True, False):
                t0 = time.perf_counter()
                out = model.sample(n, generator=torch.Generator().manual_seed(0), length=length,
                                   cache=cache)  # fmt: skip
                secs[cache].append(time.perf_counter() - t0)
                xs[cache] = out.x
        same = bool(torch.equal(xs[True], xs[False]))
        cached, full = statistics.median(secs[True]), statistics.median(secs[False])
        rows.append({
            "n": n, "length": length, "context": cfg.model.context,
            "chars_per_s_cache": n * length / cached, "chars_per_s_no_cache": n * length / full,
            "speedup": full / cached, "same_characters": same, "repeats": repeats,
        })  # fmt: skip
    return rows


# --- (c) nanoGPT's CPU recipe ----------------------------------------------------------------------
@torch.no_grad()
def per_position_nll(model, stream: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Nats of every character of consecutive ``context``-long windows of ``stream``, ``(W, C)``."""
    C = model.config.context
    windows = stream[: len(stream) // C * C].reshape(-1, C).long()
    out = []
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch]
        logits = model.net(model._inputs(x)).double()
        out.append(-logits.log_softmax(-1).gather(-1, x[..., None])[..., 0])
    return torch.cat(out)


#: nanoGPT's split for part (c) and (d): train on the first 90%, score the last 10% (no validation
#: part; the recipe neither validates nor stops early)
NANOGPT_SPLIT = ("data.val_fraction=0", "data.test_fraction=0.1")


def nanogpt_recipe(overrides: list[str]) -> dict:
    import genlab

    cfg = genlab.load_config(NANOGPT, [*QUIET, *overrides])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run = genlab.train(cfg, out, evaluate=False, verbose=False)
        seconds = time.perf_counter() - t0
        report = genlab.evaluate_run(run)
    model = run.model.eval()
    nll = per_position_nll(model, run.dataset.test)  # the test split, as genlab eval's figure
    return {
        "config": str(NANOGPT.relative_to(ROOT)), "overrides": overrides,
        "steps": cfg.trainer.steps, "train_seconds": seconds,
        "threads": torch.get_num_threads(),
        "nats_per_char": report["nll"]["nats_per_char"],
        "bits_per_char": report["nll"]["bits_per_char"],
        "nats_per_char_positions_1_on": float(nll[:, 1:].mean()),
        "nats_first_position": float(nll[:, 0].mean()),
        "val_characters": int(nll.numel()),
    }  # fmt: skip


# --- (d) the 5-gram baseline -----------------------------------------------------------------------
def witten_bell_ngram(train: str, val: str, vocab: str, order: int = 5) -> dict:
    """Nats per character of ``val`` under an interpolated Witten-Bell ``order``-gram of
    ``train``: ``p(w | h) = (c(h, w) + T(h) p(w | h')) / (c(h) + T(h))``, ``T(h)`` the number
    of distinct characters seen after ``h``, ``h'`` the history without its oldest character,
    ending at the uniform ``1 / V``; a history never seen gives ``p(w | h')``."""
    counts: list[dict[str, dict[str, int]]] = [defaultdict(dict) for _ in range(order)]
    for k in range(order):  # k: the history's length
        table = counts[k]
        for i in range(k, len(train)):
            nxt = table[train[i - k : i]]
            nxt[train[i]] = nxt.get(train[i], 0) + 1
    totals = [{h: (sum(d.values()), len(d)) for h, d in table.items()} for table in counts]
    uniform = 1.0 / len(vocab)
    nats = 0.0
    for i in range(len(val)):
        w, p = val[i], uniform
        for k in range(min(order - 1, i) + 1):  # from the empty history up to the longest
            h = val[i - k : i]
            seen = totals[k].get(h)
            if seen is None:
                break  # longer histories containing h are unseen too
            c, t = seen
            p = (counts[k][h].get(w, 0) + t * p) / (c + t)
        nats -= math.log(p)
    return {"order": order, "nats_per_char": nats / len(val), "val_characters": len(val),
            "train_characters": len(train)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: a few steps, measures nothing"
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-steps", type=int, default=10)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c,d")
    ap.add_argument("--out", type=Path, help=f"JSON output (default {RESULTS})")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="part (c)'s seeds")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    out = args.out or RESULTS
    step_over, length, batches, repeats = [], 256, [1, 16], 3
    nano_over = list(NANOGPT_SPLIT)
    if args.quick:
        args.rounds, args.round_steps = 2, 2
        step_over = ["model.context=32", "trainer.batch_size=8"]
        nano_over += ["trainer.steps=50", "trainer.warmup=5", "eval.nll_n=5000"]
        length, batches, repeats = 32, [1, 4], 1
        out = args.out or Path(tempfile.gettempdir()) / "autoregressive-quick.json"
    t_start = time.perf_counter()
    record: dict = {"machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
                    "quick": args.quick, "threads": torch.get_num_threads()}  # fmt: skip
    print(f"torch threads: {torch.get_num_threads()}")
    if "a" not in skip:
        t = time_steps(args.rounds, args.round_steps, step_over)
        record["train_step"] = t
        print(f"\n(a) seconds per training step ({t['config']}, batch {t['batch_size']} x "
              f"{t['context']}; {t['rounds']} rounds of {t['steps_per_round']} steps)")  # fmt: skip
        print(f"  genlab {t['genlab_ms']:.1f} ms, bare loop {t['bare_ms']:.1f} ms, ratio "
              f"{t['ratio_median']:.3f} (min {t['ratio_min']:.3f}, max {t['ratio_max']:.3f}; "
              "bar <= 1.05)")  # fmt: skip
    if "b" not in skip:
        rows = time_sampling(length, batches, repeats)
        record["sampling"] = rows
        print(f"\n(b) sampling {length} characters, context {length + 1}: characters per second")
        print(f"  {'n':>3} {'KV cache':>10} {'recompute':>10} {'speed-up':>9}  same characters")
        for r in rows:
            print(f"  {r['n']:>3} {r['chars_per_s_cache']:>10.0f} {r['chars_per_s_no_cache']:>10.0f}"
                  f" {r['speedup']:>8.1f}x  {r['same_characters']}  (bar >= 3x)")  # fmt: skip
    if "c" not in skip:
        runs = []
        for seed in args.seeds:
            c = nanogpt_recipe([*nano_over, f"trainer.seed={seed}"])
            c["seed"] = seed
            runs.append(c)
            print(f"\n(c) {c['config']}, seed {seed}: {c['steps']} steps in "
                  f"{c['train_seconds']:.0f} s")  # fmt: skip
            print(f"  held-out {c['nats_per_char']:.4f} nats/char ({c['bits_per_char']:.4f} "
                  f"bits/char, genlab eval, exact); positions 1-63: "
                  f"{c['nats_per_char_positions_1_on']:.4f}; nanoGPT README 1.88 (bar <= 1.88)")  # fmt: skip
        summary = {}
        for key in ("nats_per_char", "nats_per_char_positions_1_on", "train_seconds"):
            vals = [r[key] for r in runs]
            summary[key] = {"mean": statistics.fmean(vals),
                            "sd": statistics.stdev(vals) if len(vals) > 1 else None}  # fmt: skip
        record["nanogpt_cpu"] = {**runs[0], "seeds": runs, "summary": summary}
        print(f"  mean over seeds {args.seeds}: {summary['nats_per_char']['mean']:.4f} nats/char, "
              f"positions 1-63 {summary['nats_per_char_positions_1_on']['mean']:.4f}")  # fmt: skip
    if "d" not in skip:
        from genlab.data import decode, load

        ds = load("shakespeare", n=10**9, val_fraction=0.0, test_fraction=0.1)  # (as part c)
        vocab = ds.meta["vocab"]["chars"]  # the training block's characters (all 65)
        train = decode(ds.train, ds.meta["vocab"])
        val = decode(ds.test, ds.meta["vocab"])  # scored on the test split
        if args.quick:
            train, val = train[:100_000], val[:10_000]
        d = witten_bell_ngram(train, val, vocab)
        record["ngram"] = d
        print(
            f"\n(d) character {d['order']}-gram, interpolated Witten-Bell: "
            f"{d['nats_per_char']:.4f} nats/char on {d['val_characters']} held-out characters"
        )
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
