"""Benchmark discrete diffusion for text on Tiny Shakespeare against the autoregressive transformer:
the held-out bits per character (bounds for the diffusion models), the bound of one block-diffusion
model at several block sizes, sampling speed against the number of steps (with and without the
reuse of the network's output / the KV cache), and the generative perplexity of the samples with
their unigram entropy.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/text.py [--quick] [--steps N]

(a) One backbone for all (the recipes' 4 blocks of width 128, 4 heads, no biases) and one budget
    in characters: ``--steps`` updates of 4,096 characters (GPT: 32 windows of 128 with the start
    token; MDLM and BD3-LM: 16 windows of 256), learning-rate schedule of the recipes. Trained:
    ``gpt`` (configs/char-gpt-shakespeare.yaml, learned positions), ``gpt-rope`` (the same with
    rotary positions, as the diffusion models), ``mdlm`` (configs/mdlm-shakespeare.yaml),
    ``bd3lm`` with blocks of 4, 8 and 16 (configs/bd3lm-shakespeare.yaml), ``sedd`` with the
    absorbing and the uniform transition (configs/sedd-shakespeare.yaml); these train on the whole
    range of masking rates, the ``-clip`` entries on a clipped one (``model.mask_rates``; the
    MDLM and BD3-LM recipes' default, measured better). Training seconds are
    recorded too: a BD3-LM step runs the transformer over two copies of its window, about twice
    an MDLM step. Held-out: the first ``--nll-chars`` characters of the **test** split (the last
    10% of the text; validation, the 10% before it, only picks the best weights) in
    consecutive windows of each model's context; the GPT's NLL is exact, the diffusion models'
    figure is the continuous-time ELBO with ``--elbo-samples`` mask draws per window and its
    standard error. The gap to AR is ``(NLL − NLL_AR) / NLL_AR`` in nats, against the better of
    the two GPTs (the issue's published
    gaps: text8 SEDD-absorb +13%, MD4 +11%; OpenWebText MDLM +9.4%, BD3-LM(4) +5.8%; LM1B
    MDLM +10.6%, BD3-LM(4) +6.8%). Bars: MDLM, SEDD-absorb and BD3-LM(4) within +12%;
    AR <= BD3-LM(4) <= MDLM.
(b) The BD3-LM(4) weights scored with blocks of 1 (an exact autoregressive likelihood), 4, 8, 16
    and the whole window (the MDLM bound of the same network): the bound loosens with the block.
(c) Samples per second against the number of steps: MDLM, ``length`` = its context, n = 1, with and
    without reusing the network's output on steps where nothing changed (the same samples,
    checked); BD3-LM(4) with and without its KV cache (the same samples, checked). Bar: MDLM at
    1,000 steps >= 2x faster with the reuse.
(d) Generative perplexity: ``--samples`` samples of 256 characters of each model (MDLM and SEDD
    with ``--sample-steps`` steps, SEDD with its Tweedie and its Euler sampler, BD3-LM 16 steps
    per block, the GPT at temperature 1) scored by the
    better trained GPT (``exp`` of its nats per character), always beside the samples' mean unigram
    entropy in bits (a low-entropy sampler scores deceptively well), and the same two figures
    for held-out windows of real text.

Prints a table and writes ``bench/results/text.json`` (``--quick``: a smoke test with a tiny
backbone and a few steps that measures nothing, written to $TMPDIR).

``--runs DIR --reuse`` loads the models already trained in ``DIR/NAME`` (by an earlier invocation,
or by ``genlab train`` with the overrides this script would use; a different config is refused)
instead of training them, their training seconds taken from the JSON being updated or else from
the run's log. ``--update`` merges into the existing JSON: its held-out rows of other models and
the parts this invocation skips are kept, and the earlier invocations' machine records listed.
``--ar-from JSON`` (repeatable, with ``--skip d``) takes the AR reference from the GPT rows of
another budget's JSON (rows ``NAME@STEPS``), for a diffusion model trained longer than a GPT
usefully trains: the GPT overfits after about 4,500 steps, and its best weights by validation
are then no better (docs/text.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _machine import ROOT, machine_info, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "text.json"
WHOLE = "model.mask_rates=[0.0,1.0]"
CONFIGS = {
    "gpt": ("char-gpt-shakespeare.yaml", []),
    "gpt-rope": ("char-gpt-shakespeare.yaml", ["model.rope=true"]),
    # the whole range of masking rates in training (the recipes' until they were clipped)
    "mdlm": ("mdlm-shakespeare.yaml", [WHOLE]),
    "bd3lm-4": ("bd3lm-shakespeare.yaml", ["model.block_size=4", WHOLE]),
    "bd3lm-8": ("bd3lm-shakespeare.yaml", ["model.block_size=8", WHOLE]),
    "bd3lm-16": ("bd3lm-shakespeare.yaml", ["model.block_size=16", WHOLE]),
    "sedd-absorb": ("sedd-shakespeare.yaml", ["model.transition=absorb", WHOLE]),
    "sedd-uniform": ("sedd-shakespeare.yaml", ["model.transition=uniform"]),
    # clipped masking rates in training (BD3-LM's clipped schedule; the bound evaluated whole):
    # the MDLM and BD3-LM recipes' own
    "mdlm-clip": ("mdlm-shakespeare.yaml", ["model.mask_rates=[0.3,0.8]"]),
    "sedd-absorb-clip": (
        "sedd-shakespeare.yaml",
        ["model.transition=absorb", "model.mask_rates=[0.3,0.8]"],
    ),
    "bd3lm-4-clip": (
        "bd3lm-shakespeare.yaml",
        ["model.block_size=4", "model.mask_rates=[0.45,0.95]"],
    ),
}


def _restart(base: str, source: str, lr: str = "0.001") -> tuple[str, list[str]]:
    """A warm restart of the entry ``base``: the best weights of the run ``source``, trained on
    under a new cosine from the peak learning rate ``lr``, with an EMA of the weights (decay
    0.999) that validation and evaluation use."""
    config, over = CONFIGS[base]
    return config, [
        *over,
        f"trainer.init_from={source}",
        f"trainer.lr={lr}",
        "trainer.ema_decay=0.999",
    ]


# train each source first, with the --runs folder its path names: the -clip entries 20,000 steps
# (runs/text-long/20000), the first restarts 10,000 (restart10000), SEDD's second 20,000
# (restart20000); the first two restarts start from half the recipes' peak learning rate
for _name in ("mdlm-clip", "sedd-absorb-clip"):
    CONFIGS[f"{_name}-restart"] = _restart(_name, f"runs/text-long/20000/{_name}")
    CONFIGS[f"{_name}-restart2"] = _restart(_name, f"runs/text-long/restart10000/{_name}-restart")
# a third, gentler one for SEDD-absorbing (the second's 0.001 took 8,500 steps to regain its start)
CONFIGS["sedd-absorb-clip-restart3"] = _restart(
    "sedd-absorb-clip", "runs/text-long/restart20000/sedd-absorb-clip-restart2", lr="0.0003"
)
QUIET = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.val_every=0"]
TINY = ["model.hidden=16", "model.depth=1", "model.heads=2", "trainer.warmup=2"]


def source_run(name: str) -> str | None:
    """The run whose weights the entry ``name`` starts from (``trainer.init_from``), if any."""
    return next(
        (o.split("=", 1)[1] for o in CONFIGS[name][1] if o.startswith("trainer.init_from=")), None
    )


def steps_before(cfg) -> int:
    """The training steps a continuation's starting weights had had, over a chain of
    ``trainer.init_from`` runs (a restart of a restart counts both)."""
    import genlab

    steps = 0
    while cfg.trainer.init_from:
        cfg = genlab.load_config(Path(cfg.trainer.init_from) / "config.yaml")
        steps += cfg.trainer.steps
    return steps


# --- (a) training and the held-out figure ----------------------------------------------------------
def train_all(
    names: list[str], steps: int, extra: list[str], root: Path, reuse: bool, every: tuple[int, int]
) -> dict:
    """Train each model into ``root/NAME``. ``reuse``: load a finished run there instead (one
    trained with the same config, e.g. by ``genlab train`` beforehand), or continue an unfinished
    one from its last checkpoint (a long budget over several sittings). ``every``: checkpoints
    every so many steps (0: at the end only) and validation every so many (0: none; else the best
    weights by validation loss are the ones evaluated, for every model alike)."""
    import genlab

    runs = {}
    for name in names:
        config, over = CONFIGS[name]
        ckpt_every, val_every = every
        overrides = [*QUIET, f"trainer.steps={steps}", f"trainer.checkpoint_every={ckpt_every or steps}",
                     *([f"trainer.val_every={val_every}"] if val_every else []), *over, *extra]  # fmt: skip
        if name.startswith("gpt") and any(o.startswith("model.context=") for o in extra):
            ctx = next(int(o.split("=")[1]) for o in extra if o.startswith("model.context="))
            overrides = [*overrides, f"model.context={ctx // 2}", "trainer.batch_size=32"]
        cfg = genlab.load_config(ROOT / "configs" / config, overrides)
        row = {"overrides": overrides, "config": f"configs/{config}"}
        if cfg.trainer.init_from:  # a continuation: the steps its starting weights had had
            row["init_from"] = {"run": cfg.trainer.init_from, "steps": steps_before(cfg)}
        out = root / name
        started = reuse and any((out / "checkpoints").glob("step_*.safetensors"))
        if started and genlab.load_config(out / "config.yaml") != cfg:
            raise SystemExit(f"--reuse: {out} was trained with another config; move it away")
        finished = started and (out / "checkpoints" / f"step_{steps:07d}.safetensors").exists()
        t0 = time.perf_counter()
        if finished:
            run = genlab.load_run(out)  # the best weights when validation was tracked
        else:
            run = genlab.train(cfg, out, resume=started, evaluate=False, verbose=False)
        log = log_rows(out / "metrics.jsonl") if started or val_every else []
        if started:  # reused, or continued over several sittings: the log has them all
            row |= {"train_seconds": logged_seconds(log),
                    "trained": f"{'reused' if finished else 'resumed'} (seconds from its log)"}  # fmt: skip
        else:
            row |= {"train_seconds": time.perf_counter() - t0, "trained": "here"}
        print(f"  {'reused' if finished else 'trained'} {name}: {row['train_seconds']:.0f} s"
              f"{' in its log' if started else ''}", flush=True)  # fmt: skip
        if val_every:  # the validation curve: where each model stopped improving
            row["val_curve"] = logged_validation(log)
        runs[name] = {"run": run, **row}
    return runs


def log_rows(metrics: Path) -> list[dict]:
    """The rows of a run's log (``metrics.jsonl``)."""
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def logged_validation(log: list[dict]) -> list[list[float]]:
    """``[step, validation loss]`` rows of a run's log (the last one of a step redone after a
    resume), in nats per character (the diffusion models': their training estimator's)."""
    curve = {int(r["step"]): float(r["val_loss"]) for r in log if "val_loss" in r}
    return [[step, curve[step]] for step in sorted(curve)]


def logged_seconds(log: list[dict]) -> float:
    """A run's training seconds from the rates in its log (steps between rows / steps per s)."""
    seconds, last = 0.0, 0
    for row in log:
        if row.get("steps_per_s", 0) > 0 and row["step"] > last:  # steps redone after a resume:
            seconds += (row["step"] - last) / row["steps_per_s"]  # not counted twice
            last = row["step"]
    return seconds


def held_out(run, n: int, options: dict | None = None) -> dict:
    from genlab.eval.likelihood import held_out_nll

    model = run.model.eval()
    t0 = time.perf_counter()
    out = held_out_nll(model, run.dataset, None, n, options or {})
    out["seconds"] = time.perf_counter() - t0
    return out


# --- (c) sampling speed ------------------------------------------------------------------------------
def time_sampling(model, steps_list: list[int], n: int, repeats: int, **kw) -> list[dict]:
    rows = []
    for steps in steps_list:
        secs: dict[bool, list[float]] = {True: [], False: []}
        xs, nfe = {}, {}
        for _ in range(repeats):
            for cache in (True, False):
                t0 = time.perf_counter()
                out = model.sample(n, generator=torch.Generator().manual_seed(0), steps=steps,
                                   cache=cache, **kw)  # fmt: skip
                secs[cache].append(time.perf_counter() - t0)
                xs[cache], nfe[cache] = out.x, out.nfe
        cached, full = statistics.median(secs[True]), statistics.median(secs[False])
        rows.append({
            "steps": steps, "n": n, "length": int(xs[True].shape[1]),
            "samples_per_s_cache": n / cached, "samples_per_s_no_cache": n / full,
            "nfe_cache": nfe[True], "nfe_no_cache": nfe[False], "speedup": full / cached,
            "same_samples": bool(torch.equal(xs[True], xs[False])), "repeats": repeats,
        })  # fmt: skip
    return rows


# --- (d) generative perplexity and entropy: genlab's own metrics (genlab.eval.metrics) ----------
@torch.no_grad()
def quality(scorer, x: torch.Tensor) -> dict:
    """The scoring GPT's generative perplexity of ``x`` and the rows' mean unigram entropy."""
    from genlab.eval.metrics import generative_perplexity, unigram_entropy

    x = x.to(scorer.device)
    return {"gen_ppl": generative_perplexity(x, lambda t: scorer.log_prob(t).value),
            "entropy_bits": unigram_entropy(x)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny, measures nothing")
    ap.add_argument("--steps", type=int, default=3000, help="training updates of every model")
    ap.add_argument("--nll-chars", type=int, default=1_000_000, help="held-out characters")
    ap.add_argument("--elbo-samples", type=int, default=16, help="mask draws per window")
    ap.add_argument("--samples", type=int, default=32, help="samples per model for (d)")
    ap.add_argument("--sample-steps", type=int, default=256, help="MDLM sampling steps in (d)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: b,c,d")
    ap.add_argument(
        "--models",
        default=",".join(n for n in CONFIGS if not source_run(n)),
        help="comma-separated models to train (parts b, c, d use those present; default: all but "
        "the warm restarts, which need their source runs)",
    )
    ap.add_argument("--runs", type=Path, help="keep the trained runs here (default: a temp dir)")
    ap.add_argument(
        "--reuse", action="store_true",
        help="load the runs already trained in --runs (same config and steps) instead of training",
    )  # fmt: skip
    ap.add_argument("--checkpoint-every", type=int, default=0,
                    help="checkpoint every so many steps, so that --reuse can continue a run")  # fmt: skip
    ap.add_argument("--val-every", type=int, default=0,
                    help="validate every so many steps and evaluate every model's best weights")  # fmt: skip
    ap.add_argument(
        "--update", action="store_true",
        help="merge into the existing JSON: keep its rows and parts this invocation does not measure",
    )  # fmt: skip
    ap.add_argument("--ar-from", type=Path, action="append", default=[],
                    help="the AR reference: the GPT rows of this bench JSON (another budget's; "
                         "repeatable), instead of a GPT trained here; needs --skip d")  # fmt: skip
    ap.add_argument("--out", type=Path, help=f"JSON output (default {RESULTS})")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not (args.ar_from or any(n.startswith("gpt") for n in names)):
        ap.error(
            f"--models: unknown {unknown} or no GPT (the reference); choose from {list(CONFIGS)}"
        )
    for name in names:
        if (source := source_run(name)) and not (Path(source) / "config.yaml").is_file():
            ap.error(f"--models {name} continues the run {source} (relative to the working "
                     "directory), which is not there: train it first (the comment above CONFIGS's restarts in bench/text.py)")  # fmt: skip
    if args.ar_from and "d" not in skip:
        ap.error("--ar-from: part (d) scores samples with a GPT trained here; add --skip d")
    references = {}
    for path in args.ar_from:  # the GPTs of other budgets, named NAME@STEPS
        if not path.exists():
            ap.error(f"--ar-from: no file {path}")
        other = json.loads(path.read_text())
        references |= {f"{n}@{other['steps']}": row | {"from": str(path)}
                       for n, row in other.get("held_out", {}).items() if n.startswith("gpt")}  # fmt: skip
    out = args.out or RESULTS
    extra: list[str] = []
    step_grid, speed_repeats, length = [16, 64, 256, 1000], 3, 256
    if args.quick:
        args.steps, args.nll_chars, args.elbo_samples = 20, 2000, 4
        args.samples, args.sample_steps = 4, 8
        extra = [*TINY, "model.context=32", "data.n=20000"]
        step_grid, speed_repeats, length = [4, 16], 1, 32
        out = args.out or Path(tempfile.gettempdir()) / "text-quick.json"
    previous: dict = {}
    if args.update and out.exists():
        previous = json.loads(out.read_text())
        if previous.get("steps") != args.steps or previous.get("quick") != args.quick:
            ap.error(f"--update: {out} measured another budget ({previous.get('steps')} steps)")
    t_start = time.perf_counter()
    record: dict = {"machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
                    "quick": args.quick, "threads": torch.get_num_threads(),
                    "steps": args.steps, "split": "test"}  # fmt: skip
    if previous:  # --update: the parts this invocation skips stay as measured before
        for key in ("one_model_block_sizes", "sampling", "sample_quality"):
            if key in previous:
                record[key] = previous[key]
        earlier = {k: previous.get(k) for k in ("machine", "seconds", "threads")}
        record["earlier"] = [*previous.get("earlier", []), earlier]
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs or Path(tmp)
        print(f"\n(a) training {', '.join(names)} for {args.steps} steps each")
        every = (args.checkpoint_every, args.val_every)
        runs = train_all(names, args.steps, extra, root, args.reuse, every)
        rows = dict(previous.get("held_out", {}))  # --update: the models not measured now too
        rows |= references
        for name, r in runs.items():
            opts = {} if name.startswith("gpt") else {"elbo_samples": args.elbo_samples}
            nll = held_out(r["run"], args.nll_chars, opts)
            keep = ("config", "overrides", "init_from", "train_seconds", "trained", "val_curve")
            rows[name] = {k: r[k] for k in keep if k in r} | {"nll": nll}
            before = previous.get("held_out", {}).get(name, {})
            if r["trained"] != "here" and "train_seconds" in before:
                # reused and timed before: the seconds measured then, not the log's estimate
                rows[name] |= {"train_seconds": before["train_seconds"],
                               "trained": before.get("trained", "here")}  # fmt: skip
        best_ar = min((n for n in rows if n.startswith("gpt")),
                      key=lambda n: rows[n]["nll"]["nats_per_char"])  # fmt: skip
        ar = rows[best_ar]["nll"]["nats_per_char"]
        record["ar_reference"] = best_ar
        print(f"  {'model':<16} {'bits/char':>10} {'± s.e.':>8} {'kind':>6} {'gap to AR':>10} "
              f"{'train s':>8}")  # fmt: skip
        for name, row in rows.items():
            nll = row["nll"]
            row["gap_to_ar"] = (nll["nats_per_char"] - ar) / ar
            err = nll.get("bits_per_char_stderr") or 0.0
            print(f"  {name:<16} {nll['bits_per_char']:>10.4f} {err:>8.4f} {nll['kind']:>6} "
                  f"{row['gap_to_ar']:>+9.1%} {row['train_seconds']:>8.0f}")  # fmt: skip
        record["held_out"] = rows
        write_results(record, out, t_start)  # kept if a later part fails
        bd3 = runs["bd3lm-4"]["run"] if "bd3lm-4" in runs else None
        if "b" not in skip and bd3 is None:
            print("\n(b) skipped: it scores the bd3lm-4 weights, not in --models")
        if "b" not in skip and bd3 is not None:
            ctx = bd3.model.config.context
            print("\n(b) the bd3lm-4 weights scored with other blocks (bits/char)")
            sizes = [s for s in (1, 4, 8, 16, ctx) if ctx % s == 0]
            loosen = []
            for S in sizes:
                opts = {"elbo_samples": args.elbo_samples, "block_size": S}
                nll = held_out(bd3, args.nll_chars, opts)
                loosen.append({"block_size": S, "nll": nll})
                err = nll.get("bits_per_char_stderr") or 0.0
                print(f"  block {S:>4}: {nll['bits_per_char']:.4f} ± {err:.4f}")
            record["one_model_block_sizes"] = loosen
        if "c" not in skip and "mdlm" not in runs and bd3 is None:
            print("\n(c) skipped: it times mdlm and bd3lm-4, neither in --models")
        if "c" not in skip and ("mdlm" in runs or bd3 is not None):
            print(f"\n(c) samples per second (mdlm: its context; bd3lm-4: {length} characters)")
            timed = {}
            if "mdlm" in runs:
                mdlm = runs["mdlm"]["run"].model.eval()
                timed["mdlm"] = time_sampling(mdlm, step_grid, 1, speed_repeats)
                timed["mdlm-batch-16"] = time_sampling(mdlm, step_grid[-1:], 16, 1)  # rows apart
            if bd3 is not None:
                timed["bd3lm-4"] = time_sampling(bd3.model.eval(), [16], 1, speed_repeats,
                                                 length=length)  # fmt: skip
            record["sampling"] = {**record.get("sampling", {}), **timed}  # --update: merged
            print(f"  {'model':<15} {'steps':>6} {'reuse':>8} {'no reuse':>9} {'NFE':>10} "
                  "speed-up  same samples")  # fmt: skip
            for name, rs in timed.items():
                for r in rs:
                    nfe = f"{r['nfe_cache']}/{r['nfe_no_cache']}"
                    label = f"{name.split('-batch')[0]}, n = {r['n']}"
                    print(f"  {label:<15} {r['steps']:>6} {r['samples_per_s_cache']:>8.3f} "
                          f"{r['samples_per_s_no_cache']:>9.3f} {nfe:>10} {r['speedup']:>7.1f}x "
                          f" {r['same_samples']}")  # fmt: skip
        if "d" not in skip:
            scorer = runs[best_ar]["run"].model.eval()
            g = torch.Generator().manual_seed(0)
            draws = {best_ar: scorer.sample(args.samples, generator=g, length=length).x}
            for name, r in runs.items():
                model = r["run"].model.eval()
                if name.startswith("bd3lm"):
                    draws[name] = model.sample(args.samples, generator=g, steps=16,
                                               length=length).x  # fmt: skip
                    continue
                kw = {"steps": args.sample_steps, "length": min(length, model.config.context)}
                if name.startswith("mdlm"):
                    draws[name] = model.sample(args.samples, generator=g, **kw).x
                elif name.startswith("sedd"):
                    for s in ("tweedie", "euler"):
                        draws[f"{name}-{s}"] = model.sample(args.samples, generator=g,
                                                            sampler=s, **kw).x  # fmt: skip
            test = runs[best_ar]["run"].dataset.test  # real text no model saw or was chosen on
            real = test[: len(test) // length * length].reshape(-1, length)[: args.samples].long()
            scores = {"real": quality(scorer, real)}
            scores.update({name: quality(scorer, x) for name, x in draws.items()})
            record["sample_quality"] = {**record.get("sample_quality", {}), **scores}  # --update
            print(f"\n(d) {args.samples} samples of {length} characters scored by {best_ar}")
            print(f"  {'source':<20} {'gen. perplexity':>16} {'unigram entropy (bits)':>23}")
            for name, q in scores.items():
                print(f"  {name:<20} {q['gen_ppl']:>16.3f} {q['entropy_bits']:>23.3f}")
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
