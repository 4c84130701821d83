"""Text diffusion on subword tokens: MDLM, SEDD (absorbing) and BD3-LM with blocks of 4 beside the
GPT, all on the same byte-level BPE tokens of one text, at the same budget in tokens seen, scored
in bits per character of the test split, along their training and at the end.

Run:  .venv/bin/python bench/text_tokens.py [--text FILE.txt] [--vocab-size 512] [--steps 1500]
          [--tokenizer bpe|bytes|char] [--models gpt,mdlm,...] [--quick]

**Data.** Tiny Shakespeare (or ``--text FILE``, any UTF-8 text through ``data.path``) split 80/10/10
at character positions, the BPE tokenizer (``data.options.tokenizer=bpe``, ``--vocab-size``)
learned from the training part only. A smaller vocabulary than the library's default (4,096)
keeps the output layer from dominating a 128-wide network's step on two CPU cores; the figure
compared is per character, which any tokenizer's model gives.

**Arms** (the recipes in ``configs/``, each with its own learning rate, warm-up, schedule and
clipped masking rates as the recipes set them; one tuning rule for all, nothing tuned here):
  gpt          configs/char-gpt-shakespeare.yaml with ``model.rope=true`` (rotary positions, as
               the diffusion models), context 128, batch 16
  mdlm         configs/mdlm-shakespeare.yaml, context 256, batch 8, masking rates [0.3, 0.8]
  sedd-absorb  configs/sedd-shakespeare.yaml with ``model.transition=absorb`` and masking rates
               [0.3, 0.8] (the recipe's measured better choice for absorbing), batch 8
  bd3lm-4      configs/bd3lm-shakespeare.yaml (blocks of 4 tokens), batch 8, rates [0.45, 0.95]
Every arm sees 2,048 tokens per step (16 x 128 or 8 x 256), ``--steps`` steps; one 4-block,
128-wide, 4-head backbone without biases. Validation every ``steps / 6`` steps with a checkpoint
kept at each; training never sees the test split.

**Measured.**
  (a) At each budget (a sixth of the steps, a third, ..., all of them): the checkpoint with the
      lowest validation loss among those up to that budget, scored on the test split: bits per
      character (the GPT's exact NLL; the diffusion models' ELBO with ``--elbo-samples`` mask draws
      per window), with standard errors; bits per token beside them. The gap to AR at equal
      budget is ``(NLL - NLL_AR) / NLL_AR`` in nats per character against the GPT at the same
      budget, with the standard error of the difference (independent errors); **the budget to
      +12%** is the first budget at which an arm's figure is within 12% of the GPT's final figure
      (none if it never is). Budgets within one run share that run's learning-rate schedule (the
      cosine over all ``--steps``): the early budgets are points along one training, not runs of
      their own.
  (b) Generative perplexity: ``--samples`` samples of 128 tokens from each final model (MDLM and
      SEDD with 128 steps, SEDD with its Tweedie sampler, BD3-LM 16 steps per block, the GPT at
      temperature 1), scored by the final GPT (same tokenizer: per token), beside the samples'
      mean unigram entropy in bits, and the same for 128-token windows of the test split.
  (c) A character 5-gram with interpolated Witten-Bell smoothing (bench/autoregressive.py) counted
      on the training part and scored on the test part's characters: the baseline any model
      should beat.

Prints a table and writes ``bench/results/text_tokens.json`` (``--text``: ``--out`` is required;
``--quick``: a tiny smoke test that measures nothing, written to $TMPDIR).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from _machine import ROOT, machine_info, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "text_tokens.json"
ARMS = {
    "gpt": ("char-gpt-shakespeare.yaml", ["model.rope=true", "trainer.batch_size=16"]),
    "mdlm": ("mdlm-shakespeare.yaml", ["trainer.batch_size=8"]),
    "sedd-absorb": (
        "sedd-shakespeare.yaml",
        ["model.transition=absorb", "model.mask_rates=[0.3,0.8]", "trainer.batch_size=8"],
    ),  # fmt: skip
    "bd3lm-4": ("bd3lm-shakespeare.yaml", ["model.block_size=4", "trainer.batch_size=8"]),
}
QUIET = ["trainer.progress=false", "trainer.tensorboard=false"]
TINY = ["model.hidden=16", "model.depth=1", "model.heads=2", "trainer.warmup=2"]
GAP_BAR = 0.12
SAMPLE_LENGTH = 128


def overrides_of(name: str, args, extra: list[str]) -> list[str]:
    every = max(1, args.steps // 6)
    data = [f"data.options.tokenizer={args.tokenizer}"]
    if args.tokenizer == "bpe":
        data.append(f"data.options.vocab_size={args.vocab_size}")
    if args.text:
        data.append(f"data.path={args.text}")
    return [*QUIET, *data, f"trainer.steps={args.steps}", f"trainer.val_every={every}",
            f"trainer.checkpoint_every={every}", "trainer.keep_last=1000", *ARMS[name][1],
            *extra]  # fmt: skip


def val_curve(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {int(r["step"]): float(r["val_loss"]) for r in rows if "val_loss" in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny, measures nothing")
    ap.add_argument("--text", type=Path, help="a UTF-8 text file instead of Tiny Shakespeare")
    ap.add_argument("--tokenizer", choices=("bpe", "bytes", "char"), default="bpe")
    ap.add_argument("--vocab-size", type=int, default=512, help="the BPE vocabulary")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--elbo-samples", type=int, default=16)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--nll-tokens", type=int, default=10**9, help="test tokens scored")
    ap.add_argument("--models", default=",".join(ARMS))
    ap.add_argument("--runs", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, help=f"JSON output (default {RESULTS})")
    args = ap.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if "gpt" not in names or any(n not in ARMS for n in names):
        ap.error(f"--models: choose among {list(ARMS)}, gpt included (the reference)")
    if args.text and not args.text.is_file():
        ap.error(f"--text: no file {args.text}")
    if args.text and not args.out and not args.quick:
        ap.error("--text: give --out (bench/results/text_tokens.json is Tiny Shakespeare's)")
    extra: list[str] = []
    sample_length, sample_steps = SAMPLE_LENGTH, 128
    out = args.out or RESULTS
    if args.quick:
        args.steps, args.elbo_samples, args.samples, args.nll_tokens = 12, 2, 2, 2048
        args.vocab_size = min(args.vocab_size, 300)
        extra = [*TINY, "model.context=32", "data.n=30000"]
        sample_length, sample_steps = 16, 4
        out = args.out or Path(tempfile.gettempdir()) / "text_tokens-quick.json"
    from text import held_out

    import genlab
    from genlab.data.tokenizer import tokenizer_of

    t_start = time.perf_counter()
    record: dict = {"machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
                    "quick": args.quick, "threads": torch.get_num_threads(),
                    "text": str(args.text) if args.text else "tinyshakespeare",
                    "tokenizer": args.tokenizer,
                    "vocab_size": args.vocab_size if args.tokenizer == "bpe" else None,
                    "steps": args.steps,
                    "tokens_per_step": 2048, "elbo_samples": args.elbo_samples,
                    "split": "test", "gap_bar": GAP_BAR}  # fmt: skip
    if args.text:  # which text: its size and content hash (it is not in the repository)
        import hashlib

        blob = args.text.read_bytes()
        record["text_bytes"], record["text_sha256"] = len(blob), hashlib.sha256(blob).hexdigest()
    print(f"torch threads {torch.get_num_threads()}; {', '.join(names)}; {args.steps} steps")
    runs, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs or Path(tmp)
        for name in names:
            cfg = genlab.load_config(ROOT / "configs" / ARMS[name][0],
                                     overrides_of(name, args, extra))  # fmt: skip
            t0 = time.perf_counter()
            run = genlab.train(cfg, root / name, evaluate=False, verbose=False)
            seconds = time.perf_counter() - t0
            tokens = cfg.trainer.batch_size * cfg.model.context
            if not args.quick and tokens != record["tokens_per_step"]:
                raise SystemExit(
                    f"{name}: {tokens} tokens per step, not {record['tokens_per_step']}"
                )
            curve = val_curve(root / name)
            print(f"\n(a) {name}: {args.steps} steps of {tokens} tokens in {seconds:.0f} s; "
                  f"validation {', '.join(f'{s}: {v:.3f}' for s, v in curve.items())}", flush=True)  # fmt: skip
            if name == "gpt":
                ds = run.dataset
                tok = tokenizer_of(ds.meta["vocab"])
                record["data"] = {k: ds.meta[k] for k in ("tokens", "chars") if k in ds.meta}
                record["data"] |= {"tokenizer": tok.kind, "vocab": tok.vocab_size,
                                   "split_tokens": {s: len(getattr(ds, s))
                                                    for s in ("train", "val", "test")}}  # fmt: skip
            budgets = []
            for b in sorted(curve):
                best = min((s for s in curve if s <= b), key=lambda s: (curve[s], s))
                scored = genlab.load_run(root / name, checkpoint=best)
                opts = {} if name == "gpt" else {"elbo_samples": args.elbo_samples}
                nll = held_out(scored, args.nll_tokens, opts)
                budgets.append({"steps": b, "tokens_seen": b * tokens, "checkpoint": best,
                                "val_loss": curve[best], "nll": nll})  # fmt: skip
                print(f"  budget {b:>6} steps: checkpoint {best}, test "
                      f"{nll['bits_per_char']:.4f} ± {nll['bits_per_char_stderr']:.4f} bits/char, "
                      f"{nll['bits_per_token']:.4f} bits/token ({nll['kind']})", flush=True)  # fmt: skip
            runs[name] = scored  # the last budget's: the best checkpoint of the whole run
            rows[name] = {"config": f"configs/{ARMS[name][0]}",
                          "overrides": overrides_of(name, args, extra), "train_seconds": seconds,
                          "tokens_per_step": tokens, "budgets": budgets}  # fmt: skip
            record["held_out"] = rows
            write_results(record, out, t_start)  # kept if a later arm fails
        ar = {b["steps"]: b["nll"] for b in rows["gpt"]["budgets"]}
        ar_final = rows["gpt"]["budgets"][-1]["nll"]["nats_per_char"]
        print("\n(a) test bits/char at the last budget; gap to the GPT at the same budget")
        for name, row in rows.items():
            reach = None
            for b in row["budgets"]:
                nll, ref = b["nll"], ar[b["steps"]]
                se = math.hypot(nll["bits_per_char_stderr"] or 0.0,
                                ref["bits_per_char_stderr"] or 0.0)  # fmt: skip
                b["gap_to_ar"] = (nll["nats_per_char"] - ref["nats_per_char"]) / ref[
                    "nats_per_char"
                ]
                b["gap_to_ar_stderr"] = se / ref["bits_per_char"]
                b["gap_to_final_ar"] = (nll["nats_per_char"] - ar_final) / ar_final
                if reach is None and b["gap_to_final_ar"] <= GAP_BAR:
                    reach = b["tokens_seen"]
            row["tokens_to_gap_bar"] = reach
            last = row["budgets"][-1]
            print(f"  {name:<12} {last['nll']['bits_per_char']:.4f} ± "
                  f"{last['nll']['bits_per_char_stderr']:.4f}  gap {last['gap_to_ar']:+.1%} ± "
                  f"{last['gap_to_ar_stderr']:.1%}; within +12% of the final GPT from "
                  f"{'never' if reach is None else f'{reach:,} tokens'}")  # fmt: skip
        write_results(record, out, t_start)
        # (b) generative perplexity, scored by the final GPT (same tokenizer: per token)
        from text import quality

        from genlab.data.text import decode

        scorer = runs["gpt"].model.eval()
        vocab = scorer.spec.vocab
        g = torch.Generator().manual_seed(0)
        draws = {"gpt": scorer.sample(args.samples, generator=g, length=sample_length).x}
        for name in names[1:]:
            m = runs[name].model.eval()
            steps = 16 if name.startswith("bd3lm") else sample_steps
            draws[name] = m.sample(args.samples, generator=g, steps=steps,
                                   length=sample_length).x  # fmt: skip
        test = runs["gpt"].dataset.test
        L = sample_length
        real = test[: len(test) // L * L].reshape(-1, L)[: args.samples].long()
        quality_rows = {"real": quality(scorer, real) | {"text": decode(real[0], vocab)}}
        for name, x in draws.items():
            quality_rows[name] = quality(scorer, x) | {"text": decode(x[0], vocab)}
        record["sample_quality"] = {"length_tokens": L, "samples": args.samples,
                                    "scorer": "gpt", "rows": quality_rows}  # fmt: skip
        print(f"\n(b) {args.samples} samples of {L} tokens scored by the GPT")
        print(
            f"  {'source':<12} {'gen. perplexity (per token)':>28} {'unigram entropy (bits)':>23}"
        )
        for name, q in quality_rows.items():
            print(f"  {name:<12} {q['gen_ppl']:>28.2f} {q['entropy_bits']:>23.3f}")
    # (c) the character 5-gram on the same parts of the text
    from autoregressive import witten_bell_ngram

    ds = runs["gpt"].dataset
    train_text, test_text = decode(ds.train, vocab), decode(ds.test, vocab)
    chars = "".join(sorted(set(train_text) | set(test_text)))
    ngram = witten_bell_ngram(train_text, test_text, chars)
    ngram["bits_per_char"] = ngram["nats_per_char"] / math.log(2)
    ngram["uniform_over"] = "the characters of the training and test parts"
    record["ngram"] = ngram
    print(
        f"\n(c) character 5-gram (Witten-Bell): {ngram['bits_per_char']:.4f} bits/char on "
        f"{ngram['val_characters']:,} test characters"
    )
    write_results(record, out, t_start)


if __name__ == "__main__":
    main()
