"""Every figure the docs publish comes from a committed JSON.

- The result tables are generated blocks (``<!-- table: NAME -->`` ... ``<!-- /table -->``):
  ``docs/make_tables.py --check`` must find each one equal to what its JSON gives.
- Headline figures quoted in running prose are listed in ``PROSE`` below: each quoted string must
  appear in its doc and equal the JSON value, formatted.

Reads JSON and markdown only: no genlab import, no training.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_make_tables():
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "docs" / "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mt = _load_make_tables()


def f3(v: float) -> str:
    return f"{v:.3f}"


def pct1(v: float) -> str:
    return f"{100 * v:+.1f}%"


def bpc(name: str) -> str:
    return f"held_out/{name}/nll/bits_per_char"


def best_val(entry: dict) -> float:
    return min(loss for _, loss in entry["val_curve"])


def val_at(entry: dict, step: int) -> float:
    return dict(entry["val_curve"])[step]


TEXT = "bench/results/text.json"
DIFF, DFIG = "bench/results/diffusion_2d.json", "docs/figures/diffusion-figures.json"
GAN = "bench/results/gan_2d.json"
FLOWS, FM = "bench/results/flows_2d.json", "bench/results/flow_matching_2d.json"
FMS = "bench/results/flow_matching_2d_steps.json"
TWO = "bench/results/two_stage.json"
LATENT = "bench/results/latent.json"
EVAL = "bench/results/eval_images.json"
BOARD = "bench/results/leaderboard-digits-30min.json"
ARD, ARG = "bench/results/autoregressive_density.json", "bench/results/autoregressive.json"
GPT_PEERS = "bench/results/gpt_peers.json"
PEERS_FM = "bench/results/peers-fm.json"
PEERS_FM_LIK = "bench/results/peers-fm-likelihood.json"
PEERS_VAE = "bench/results/peers-vae.json"
TOKENS = "bench/results/text_tokens.json"
VIM = "bench/results/text_tokens-vim.json"
T750, T375 = "bench/results/text-750.json", "bench/results/text-375.json"
T12 = "bench/results/text-12000.json"
T9, T20 = "bench/results/text-9000.json", "bench/results/text-20000.json"
TR1, TR2 = "bench/results/text-restart10000.json", "bench/results/text-restart2-10000.json"
TR20, TR3 = "bench/results/text-restart20000.json", "bench/results/text-restart3-10000.json"


def _b(d: dict, name: str) -> float:
    return d["held_out"][name]["nll"]["bits_per_char"]


def _row(d: dict, family: str) -> dict:
    return next(r for r in d["rows"] if r["family"] == family)


def _h(d: dict, name: str) -> dict:
    return d["held_out"][name]


# (doc, the string quoted in it, JSON file(s), key path or a function of the loaded JSON(s),
# format: a format string or a function of the value). Use it for figures outside the tables.
PROSE: list[tuple[str, str, str | tuple[str, ...], str | Callable, str | Callable]] = [
    # docs/text.md
    (
        "docs/text.md",
        "2 h 10 min in all (7,780 s)",
        TEXT,
        "earlier/0/seconds",
        lambda s: "{} h {} min in all".format(*divmod(round(s / 60), 60)) + f" ({s:,.0f} s)",
    ),
    ("docs/text.md", "(758 s)", TEXT, "earlier/2/seconds", "({:,.0f} s)"),
    ("docs/text.md", "275 s; the GPT", TEXT, "earlier/3/seconds", "{:,.0f} s; the GPT"),
    (
        "docs/text.md",
        "its 2.1877 bits/char is the reference",
        TEXT,
        bpc("gpt-rope"),
        "its {:.4f} bits/char is the reference",
    ),
    ("docs/text.md", "98 s, after part", TEXT, "seconds", "{:,.0f} s, after part"),
    (
        "docs/text.md",
        "BD3-LM(4) by 8.2% of its bits",
        TEXT,
        lambda d: 1 - _b(d, "bd3lm-4-clip") / _b(d, "bd3lm-4"),
        lambda v: f"BD3-LM(4) by {100 * v:.1f}% of its bits",
    ),
    (
        "docs/text.md",
        "SEDD by\n  5.5%",
        TEXT,
        lambda d: 1 - _b(d, "sedd-absorb-clip") / _b(d, "sedd-absorb"),
        lambda v: f"SEDD by\n  {100 * v:.1f}%",
    ),
    (
        "docs/text.md",
        "MDLM by 4.9%",
        TEXT,
        lambda d: 1 - _b(d, "mdlm-clip") / _b(d, "mdlm"),
        lambda v: f"MDLM by {100 * v:.1f}%",
    ),
    (
        "docs/text.md",
        "closest (+16.9%)",
        TEXT,
        "held_out/bd3lm-4-clip/gap_to_ar",
        lambda v: f"closest ({pct1(v)})",
    ),
    (
        "docs/text.md",
        "BD3-LM(16) and MDLM tie (2.977\nand 2.969",
        TEXT,
        lambda d: (_b(d, "bd3lm-16"), _b(d, "mdlm")),
        lambda v: f"BD3-LM(16) and MDLM tie ({v[0]:.3f}\nand {v[1]:.3f}",
    ),
    (
        "docs/text.md",
        "bought the GPT 11% of its NLL (2.463 → 2.188 bits/char)",
        (T750, TEXT),
        lambda a, b: (
            1 - _b(b, "gpt-rope") / _b(a, "gpt-rope"),
            _b(a, "gpt-rope"),
            _b(b, "gpt-rope"),
        ),
        lambda v: (
            f"bought the GPT {100 * v[0]:.0f}% of its NLL ({v[1]:.3f} → {v[2]:.3f} bits/char)"
        ),
    ),
    (
        "docs/text.md",
        "MDLM 15% (3.479\n→ 2.969)",
        (T750, TEXT),
        lambda a, b: (1 - _b(b, "mdlm") / _b(a, "mdlm"), _b(a, "mdlm"), _b(b, "mdlm")),
        lambda v: f"MDLM {100 * v[0]:.0f}% ({v[1]:.3f}\n→ {v[2]:.3f})",
    ),
    ("docs/text.md", "the GPT\nat 375 (2.731)", T375, bpc("gpt-rope"), "the GPT\nat 375 ({:.3f})"),
    (
        "docs/text.md",
        "12.6% above the GPT at the full budget (at an eighth, 24.8%)",
        (T750, T375, TEXT),
        lambda a, e, b: (
            _b(a, "gpt-rope") / _b(b, "gpt-rope") - 1,
            _b(e, "gpt-rope") / _b(b, "gpt-rope") - 1,
        ),
        lambda v: (
            f"{100 * v[0]:.1f}% above the GPT at the full budget (at an eighth, {100 * v[1]:.1f}%)"
        ),
    ),
    (
        "docs/text.md",
        "rises to 1.820 at step 12,000",
        T12,
        lambda d: val_at(_h(d, "gpt-rope"), 12000),
        "rises to {:.3f} at step 12,000",
    ),
    (
        "docs/text.md",
        "Its best weights (2.214 bits/char)",
        T12,
        bpc("gpt-rope"),
        "Its best weights ({:.3f} bits/char)",
    ),
    (
        "docs/text.md",
        "best validation loss itself (1.534 nats/char)",
        T12,
        lambda d: (best_val(_h(d, "gpt-rope")), _h(d, "gpt-rope")["nll"]["nats_per_char"]),
        lambda v: (
            f"best validation loss itself ({v[0]:.3f} nats/char)"
            if round(v[0], 3) == round(v[1], 3)
            else "differ"
        ),
    ),
    (
        "docs/text.md",
        "validation 2.565 at step 500, 2.124 at 3,000, 1.877\n  at 10,000, 1.853 at 12,000",
        T12,
        lambda d: [val_at(_h(d, "mdlm"), s) for s in (500, 3000, 10000, 12000)],
        lambda v: (
            f"validation {v[0]:.3f} at step 500, {v[1]:.3f} at 3,000, {v[2]:.3f}\n  at 10,000, {v[3]:.3f} at 12,000"
        ),
    ),
    (
        "docs/text.md",
        "or +20.9% against the best\n  GPT",
        (T12, TEXT),
        lambda a, b: _b(a, "mdlm") / _b(b, "gpt-rope") - 1,
        lambda v: f"or {pct1(v)} against the best\n  GPT",
    ),
    (
        "docs/text.md",
        "better of them: 2.188 bits/char",
        T9,
        "held_out/gpt-rope@3000/nll/bits_per_char",
        "better of them: {:.3f} bits/char",
    ),
    (
        "docs/text.md",
        "(1.777 at 17,500, 1.757 at 18,500,\n  1.759 at 20,000)",
        T20,
        lambda d: [val_at(_h(d, "mdlm-clip"), s) for s in (17500, 18500, 20000)],
        lambda v: f"({v[0]:.3f} at 17,500, {v[1]:.3f} at 18,500,\n  {v[2]:.3f} at 20,000)",
    ),
    (
        "docs/text.md",
        "(2.188 < 2.356 < 2.498)",
        (TEXT, T9, T20),
        lambda a, b, c: (_b(a, "gpt-rope"), _b(b, "bd3lm-4-clip"), _b(c, "mdlm-clip")),
        lambda v: f"({v[0]:.3f} < {v[1]:.3f} < {v[2]:.3f})",
    ),
    (
        "docs/text.md",
        "(1.778 after 500 steps, from 1.757)",
        (TR1, T20),
        lambda a, b: (val_at(_h(a, "mdlm-clip-restart"), 500), best_val(_h(b, "mdlm-clip"))),
        lambda v: f"({v[0]:.3f} after 500 steps, from {v[1]:.3f})",
    ),
    (
        "docs/text.md",
        "(1.7314,\n  1.7301, 1.7294 at the last three checks)",
        TR1,
        lambda d: [x[1] for x in _h(d, "mdlm-clip-restart")["val_curve"][-3:]],
        lambda v: f"({v[0]:.4f},\n  {v[1]:.4f}, {v[2]:.4f} at the last three checks)",
    ),
    (
        "docs/text.md",
        "within the bar (+12%) by 0.005\n  bits/char, with a standard error of 0.013",
        (TEXT, TR1),
        lambda a, b: (
            1.12 * _b(a, "gpt-rope") - _b(b, "mdlm-clip-restart"),
            _h(b, "mdlm-clip-restart")["nll"]["bits_per_char_stderr"],
        ),
        lambda v: (
            f"within the bar (+12%) by {v[0]:.3f}\n  bits/char, with a standard error of {v[1]:.3f}"
        ),
    ),
    (
        "docs/text.md",
        "from 1.7294 to 1.764 at step 500",
        TR2,
        lambda d: val_at(_h(d, "mdlm-clip-restart2"), 500),
        "from 1.7294 to {:.3f} at step 500",
    ),
    (
        "docs/text.md",
        "ended at 1.7192",
        TR2,
        lambda d: _h(d, "mdlm-clip-restart2")["val_curve"][-1][1],
        "ended at {:.4f}",
    ),
    (
        "docs/text.md",
        "**2.429 bits/char, +11.0%**, within the bar\n  by 0.021 (1.6 standard errors)",
        (TEXT, TR2),
        lambda a, b: (
            _b(b, "mdlm-clip-restart2"),
            _h(b, "mdlm-clip-restart2")["gap_to_ar"],
            1.12 * _b(a, "gpt-rope") - _b(b, "mdlm-clip-restart2"),
            _h(b, "mdlm-clip-restart2")["nll"]["bits_per_char_stderr"],
        ),
        lambda v: (
            f"**{v[0]:.3f} bits/char, {pct1(v[1])}**, within the bar\n  by {v[2]:.3f} ({v[2] / v[3]:.1f} standard errors)"
        ),
    ),
    (
        "docs/text.md",
        "trails MDLM by 0.048 bits/char (2.545 against 2.498), more than at 3,000\n  steps (0.023)",
        (T20, TEXT),
        lambda a, b: (
            _b(a, "sedd-absorb-clip") - _b(a, "mdlm-clip"),
            _b(a, "sedd-absorb-clip"),
            _b(a, "mdlm-clip"),
            _b(b, "sedd-absorb-clip") - _b(b, "mdlm-clip"),
        ),
        lambda v: (
            f"trails MDLM by {v[0]:.3f} bits/char ({v[1]:.3f} against {v[2]:.3f}), more than at 3,000\n  steps ({v[3]:.3f})"
        ),
    ),
    (
        "docs/text.md",
        "(1.800 at 18,000, 1.787\n  at 20,000)",
        T20,
        lambda d: [val_at(_h(d, "sedd-absorb-clip"), s) for s in (18000, 20000)],
        lambda v: f"({v[0]:.3f} at 18,000, {v[1]:.3f}\n  at 20,000)",
    ),
    (
        "docs/text.md",
        "2.440 against 2.450, a margin of\n  0.010 bits/char, less than its standard error (0.012",
        (TEXT, TR3),
        lambda a, b: (
            _b(b, "sedd-absorb-clip-restart3"),
            1.12 * _b(a, "gpt-rope"),
            _h(b, "sedd-absorb-clip-restart3")["nll"]["bits_per_char_stderr"],
        ),
        lambda v: (
            f"{v[0]:.3f} against {v[1]:.3f}, a margin of\n  {v[1] - v[0]:.3f} bits/char, less than its standard error ({v[2]:.3f}"
        ),
    ),
    (
        "docs/text.md",
        "The second had missed it by 0.002",
        (TEXT, TR20),
        lambda a, b: _b(b, "sedd-absorb-clip-restart2") - 1.12 * _b(a, "gpt-rope"),
        "The second had missed it by {:.3f}",
    ),
    (
        "docs/text.md",
        "1.7546 to 1.791 at the restart's step 500 and regained its start only at step 8,500",
        TR20,
        lambda d: (
            _h(d, "sedd-absorb-clip-restart2")["val_curve"][0][1],
            next(
                s
                for s, v in _h(d, "sedd-absorb-clip-restart2")["val_curve"]
                if v < 1.7546358593578997
            ),
        ),
        lambda v: (
            f"1.7546 to {v[0]:.3f} at the restart's step 500 and regained its start only at step {v[1]:,}"
        ),
    ),
    (
        "docs/text.md",
        "the first\n  restart (1.787 to 1.803) had regained its start at step 2,500",
        TR1,
        lambda d: (
            _h(d, "sedd-absorb-clip-restart")["val_curve"][0][1],
            next(
                s
                for s, v in _h(d, "sedd-absorb-clip-restart")["val_curve"]
                if v < 1.7870042735132678
            ),
        ),
        lambda v: (
            f"the first\n  restart (1.787 to {v[0]:.3f}) had regained its start at step {v[1]:,}"
        ),
    ),
    (
        "docs/text.md",
        "(1.7281 to 1.742 at step 500) and regained its start at step 4,000",
        TR3,
        lambda d: (
            _h(d, "sedd-absorb-clip-restart3")["val_curve"][0][1],
            next(
                s
                for s, v in _h(d, "sedd-absorb-clip-restart3")["val_curve"]
                if v < 1.728089582509008
            ),
        ),
        lambda v: f"(1.7281 to {v[0]:.3f} at step 500) and regained its start at step {v[1]:,}",
    ),
    (
        "docs/text.md",
        "(1.7211, 1.7204, 1.7198 at the last three checks)",
        TR3,
        lambda d: [x[1] for x in _h(d, "sedd-absorb-clip-restart3")["val_curve"][-3:]],
        lambda v: f"({v[0]:.4f}, {v[1]:.4f}, {v[2]:.4f} at the last three checks)",
    ),
    (
        "docs/text.md",
        "2.493 against 2.445 after\n  one restart each",
        TR1,
        lambda d: (_b(d, "sedd-absorb-clip-restart"), _b(d, "mdlm-clip-restart")),
        lambda v: f"{v[0]:.3f} against {v[1]:.3f} after\n  one restart each",
    ),
    (
        "docs/text.md",
        "(2.440\n  against 2.429)",
        (TR3, TR2),
        lambda a, b: (_b(a, "sedd-absorb-clip-restart3"), _b(b, "mdlm-clip-restart2")),
        lambda v: f"({v[0]:.3f}\n  against {v[1]:.3f})",
    ),
    (
        "docs/text.md",
        "BD3-LM(4) +7.7% (9,000 steps), MDLM +11.0% (40,000), SEDD-absorbing\n  +11.5% (60,000)",
        (T9, TR2, TR3),
        lambda a, b, c: (
            _h(a, "bd3lm-4-clip")["gap_to_ar"],
            _h(b, "mdlm-clip-restart2")["gap_to_ar"],
            _h(c, "sedd-absorb-clip-restart3")["gap_to_ar"],
        ),
        lambda v: (
            f"BD3-LM(4) {pct1(v[0])} (9,000 steps), MDLM {pct1(v[1])} (40,000), SEDD-absorbing\n  {pct1(v[2])} (60,000)"
        ),
    ),
    (
        "docs/text.md",
        "(MDLM at 1,000 steps: 4.0x)",
        TEXT,
        "sampling/mdlm/3/speedup",
        "(MDLM at 1,000 steps: {:.1f}x)",
    ),
    (
        "docs/text.md",
        "(980 of 1,000 steps still change",
        TEXT,
        "sampling/mdlm-batch-16/0/nfe_cache",
        "({:,} of 1,000 steps still change",
    ),
    # docs/text.md: BPE tokens (bench/text_tokens.py)
    (
        "docs/text.md",
        "(892,316 characters in 458,384 tokens, 1.95 characters per token)",
        TOKENS,
        lambda d: (d["data"]["chars"]["train"], d["data"]["split_tokens"]["train"]),
        lambda v: (
            f"({v[0]:,} characters in {v[1]:,} tokens, {v[0] / v[1]:.2f} characters per token)"
        ),
    ),
    (
        "docs/text.md",
        "for 1,500 steps: 3,072,000\ntokens, about 6.7 passes",
        TOKENS,
        lambda d: (
            d["steps"],
            d["steps"] * d["tokens_per_step"],
            d["data"]["split_tokens"]["train"],
        ),
        lambda v: f"for {v[0]:,} steps: {v[1]:,}\ntokens, about {v[1] / v[2]:.1f} passes",
    ),
    (
        "docs/text.md",
        "BD3-LM(4) is\n+19.5% ± 0.8%, SEDD-absorbing +22.6% ± 0.7% and MDLM +23.0% ± 0.7% on test",
        TOKENS,
        lambda d: [_last(d, n) for n in ("bd3lm-4", "sedd-absorb", "mdlm")],
        lambda v: "BD3-LM(4) is\n{} ± {}, SEDD-absorbing {} ± {} and MDLM {} ± {} on test".format(
            *(
                f(x)
                for b in v
                for x, f in ((b["gap_to_ar"], _pct_signed), (b["gap_to_ar_stderr"], _pct))
            )
        ),
    ),
    (
        "docs/text.md",
        "(0.010 bits/char apart, 0.7 standard errors of the difference)",
        TOKENS,
        lambda d: [_last(d, n)["nll"] for n in ("mdlm", "sedd-absorb")],
        lambda v: "({:.3f} bits/char apart, {:.1f} standard errors of the difference)".format(
            abs(v[0]["bits_per_char"] - v[1]["bits_per_char"]),
            abs(v[0]["bits_per_char"] - v[1]["bits_per_char"])
            / math.hypot(v[0]["bits_per_char_stderr"], v[1]["bits_per_char_stderr"]),
        ),
    ),
    (
        "docs/text.md",
        "(from +30–44% at 512,000 tokens)",
        TOKENS,
        lambda d: (
            [
                d["held_out"][n]["budgets"][0]["gap_to_ar"]
                for n in ("mdlm", "sedd-absorb", "bd3lm-4")
            ],
            d["held_out"]["gpt"]["budgets"][0]["tokens_seen"],
        ),
        lambda v: f"(from +{100 * min(v[0]):.0f}–{100 * max(v[0]):.0f}% at {v[1]:,} tokens)",
    ),
    (
        "docs/text.md",
        "above the character 5-gram's 2.834 bits/char",
        TOKENS,
        "ngram/bits_per_char",
        "above the character 5-gram's {:.3f} bits/char",
    ),
    (
        "docs/text.md",
        "score below\nthe real text's 21.2), MDLM, SEDD and BD3-LM samples have generative perplexities of 291 to 374 per",
        TOKENS,
        lambda d: (
            d["sample_quality"]["rows"]["real"]["gen_ppl"],
            [d["sample_quality"]["rows"][n]["gen_ppl"] for n in ("mdlm", "sedd-absorb", "bd3lm-4")],
        ),
        lambda v: (
            f"score below\nthe real text's {v[0]:.1f}), MDLM, SEDD and BD3-LM samples have generative "
            f"perplexities of {min(v[1]):.0f} to {max(v[1]):.0f} per"
        ),
    ),
    (
        "docs/text.md",
        "(252,465 training tokens; 3,072,000 tokens are about 12 passes)",
        VIM,
        lambda d: (d["data"]["split_tokens"]["train"], d["steps"] * d["tokens_per_step"]),
        lambda v: f"({v[0]:,} training tokens; {v[1]:,} tokens are about {v[1] / v[0]:.0f} passes)",
    ),
    (
        "docs/text.md",
        "+39.9% (BD3-LM(4)) to +50.6% (MDLM), all above the 5-gram (2.419 bits/char), which the GPT\n(2.132) beats",
        VIM,
        lambda d: (
            _last(d, "bd3lm-4")["gap_to_ar"],
            _last(d, "mdlm")["gap_to_ar"],
            d["ngram"]["bits_per_char"],
            _last(d, "gpt")["nll"]["bits_per_char"],
        ),
        lambda v: (
            f"{v[0]:+.1%} (BD3-LM(4)) to {v[1]:+.1%} (MDLM), all above the 5-gram ({v[2]:.3f} "
            f"bits/char), which the GPT\n({v[3]:.3f}) beats"
        ),
    ),
    (
        "docs/text.md",
        "scores 2.222 bits/char at the same 3,072,000",
        "bench/results/text_tokens-vim-bytes.json",
        lambda d: (_last(d, "gpt")["nll"]["bits_per_char"], _last(d, "gpt")["tokens_seen"]),
        lambda v: f"scores {v[0]:.3f} bits/char at the same {v[1]:,}",
    ),
    (
        "docs/text.md",
        "641,560 bytes of technical prose",
        VIM,
        "text_bytes",
        "{:,} bytes of technical prose",
    ),
    # docs/autoregressive.md
    (
        "docs/autoregressive.md",
        "the true law scores 1.668 nats on the same draws",
        ARD,
        "moons/true_nll",
        "the true law scores {:.3f} nats on the same draws",
    ),
    (
        "docs/autoregressive.md",
        "(wine −0.10, diabetes −0.01\nnats)",
        ARD,
        lambda d: [
            d["tables"][n]["models"]["recipe maf-tabular"]["test_nll"]
            - d["tables"][n]["gaussian_nll"]
            for n in ("wine", "diabetes")
        ],
        lambda v: f"(wine {mt.num(v[0], 2)}, diabetes {mt.num(v[1], 2)}\nnats)",
    ),
    (
        "docs/autoregressive.md",
        "(36 and 89 rows)",
        ARD,
        lambda d: (d["tables"]["wine"]["split"][2], d["tables"]["diabetes"]["split"][2]),
        "({0[0]} and {0[1]} rows)",
    ),
    (
        "docs/autoregressive.md",
        "about\n0.64 s per step of 100 images",
        ARD,
        lambda d: d["binarized_mnist"]["nade"]["seconds"] / d["binarized_mnist"]["nade"]["steps"],
        "about\n{:.2f} s per step of 100 images",
    ),
    (
        "docs/autoregressive.md",
        "about 0.45 s per step of 32 images",
        ARD,
        lambda d: (
            d["binarized_mnist"]["pixelcnn"]["seconds"] / d["binarized_mnist"]["pixelcnn"]["steps"]
        ),
        "about {:.2f} s per step of 32 images",
    ),
    (
        "docs/autoregressive.md",
        "so 150 seconds is 332 steps",
        ARD,
        "binarized_mnist/pixelcnn/steps",
        "so 150 seconds is {} steps",
    ),
    (
        "docs/autoregressive.md",
        "is above the 5-gram (1.669) on three seeds",
        ARG,
        lambda d: (d["ngram"]["nats_per_char"], len(d["nanogpt_cpu"]["seeds"])),
        lambda v: f"is above the 5-gram ({v[0]:.3f}) on {['', 'one', 'two', 'three'][v[1]]} seeds",
    ),
    (
        "docs/autoregressive.md",
        "genlab's mean is 0.009 above nanoGPT's, about 1.4 standard",
        (ARG, "bench/results/nanogpt_peer.json"),
        lambda ours, peer: _gap(
            [r["nats_per_char_positions_1_on"] for r in ours["nanogpt_cpu"]["seeds"]],
            [r["exact_positions_1_63"] for r in peer["runs"]],
        ),
        "genlab's mean is {0[0]:.3f} above nanoGPT's, about {0[1]:.1f} standard",
    ),
    (
        "docs/autoregressive.md",
        "(0.005\nnats/char above it, about 0.8 standard errors",
        GPT_PEERS,
        lambda d: _gap(*(_peer_nats(d, a) for a in ("genlab", "hf-gpt2"))),
        "({0[0]:.3f}\nnats/char above it, about {0[1]:.1f} standard errors",
    ),
    (
        "docs/autoregressive.md",
        "(0.037 below it, about 5.9 standard errors)",
        GPT_PEERS,
        lambda d: _gap(*(_peer_nats(d, a) for a in ("x-transformers", "genlab"))),
        "({0[0]:.3f} below it, about {0[1]:.1f} standard errors)",
    ),
    (
        "docs/autoregressive.md",
        "0.76 of HF's step, 0.84 of x-transformers'",
        GPT_PEERS,
        lambda d: (d["train_step"]["ratio_vs_hf-gpt2"], d["train_step"]["ratio_vs_x-transformers"]),
        "{0[0]:.2f} of HF's step, {0[1]:.2f} of x-transformers'",
    ),
    (
        "docs/autoregressive.md",
        "145 s against 170 s and 165 s",
        GPT_PEERS,
        lambda d: [
            d["summary"][a]["train_seconds"]["mean"]
            for a in ("genlab", "hf-gpt2", "x-transformers")
        ],  # fmt: skip
        "{0[0]:.0f} s against {0[1]:.0f} s and {0[2]:.0f} s",
    ),
    (
        "docs/autoregressive.md",
        "HF GPT-2's 1.904 is the lowest",
        GPT_PEERS,
        lambda d: min(
            d["summary"][a]["nats_per_char"]["mean"]
            for a in ("genlab", "hf-gpt2", "x-transformers")
        ),  # fmt: skip
        "HF GPT-2's {:.3f} is the lowest",
    ),
    (
        "docs/autoregressive.md",
        "the KV cache passes 4× at one sequence",
        ARG,
        "sampling/0/speedup",
        lambda v: f"the KV cache passes {int(v)}× at one sequence",
    ),
    # docs/diffusion.md
    (
        "docs/diffusion.md",
        "from 1.25 to 0.0005 and one Euler step from W2 1.92",
        DFIG,
        lambda d: (
            d["reflow"]["rectified flow"]["straightness"],
            d["reflow"]["after one reflow"]["straightness"],
            d["reflow"]["rectified flow"]["w2_1_step"],
        ),
        "from {0[0]:.2f} to {0[1]:.4f} and one Euler step from W2 {0[2]:.2f}",
    ),
    (
        "docs/diffusion.md",
        "one step of a curved flow) to 0.225",
        DFIG,
        "reflow/after one reflow/w2_1_step",
        "one step of a curved flow) to {:.3f}",
    ),
    (
        "docs/diffusion.md",
        "own W2 at this size is 0.159 ± 0.067",
        DIFF,
        lambda d: d["w2_vs_nfe"]["reference_rows"]["perfect model"],
        lambda r: f"own W2 at this size is {r['mean']:.3f} ± {r['std']:.3f}",
    ),
    (
        "docs/diffusion.md",
        "(the perfect model's ± 0.067)",
        DIFF,
        "w2_vs_nfe/reference_rows/perfect model/std",
        "(the perfect model's ± {:.3f})",
    ),
    (
        "docs/diffusion.md",
        "dpmpp_2m to 1.2e-5",
        DIFF,
        lambda d: max(v["max_abs_diff"] for k, v in d["consistency"].items() if "heun" not in k),
        lambda v: "dpmpp_2m to " + f"{v:.1e}".replace("e-0", "e-"),
    ),
    (
        "docs/diffusion.md",
        "(W2 84–108 at 5 NFE)",
        DIFF,
        lambda d: [
            r["budgets"]["5"]["mean"]
            for r in d["w2_vs_nfe"]["rows"]
            if r["sampler"] in ("heun", "HeunDiscrete") and r["lib"] != "genlab"
        ],
        lambda v: f"(W2 {min(v):.0f}–{max(v):.0f} at 5 NFE)",
    ),
    (
        "docs/diffusion.md",
        "from σ = 152",
        DIFF,
        "config/process",
        lambda s: "from σ = " + s.split(", ")[1].rstrip("])"),
    ),
    # docs/gan.md
    (
        "docs/gan.md",
        "costs 1.044× the bare two-player PyTorch loop doing the same\nupdates (19.9 vs 19.5 ms",
        GAN,
        lambda d: next(r for r in d["timing"] if r["loss"] == "gan"),
        lambda r: (
            f"costs {r['ratio_median']:.3f}× the bare two-player PyTorch loop doing the same\n"
            f"updates ({r['genlab_ms']:.1f} vs {r['bare_ms']:.1f} ms"
        ),
    ),
    # docs/flows.md, docs/flow-matching.md
    (
        "docs/flows.md",
        "(569 × 30, 341/113/115 rows)",
        FLOWS,
        "tabular/rows",
        lambda r: f"({sum(r)} × 30, {r[0]}/{r[1]}/{r[2]} rows)",
    ),
    (
        "docs/flows.md",
        "overfits within 150-200 steps and its test NLL scatters over 26-105 nats",
        FLOWS,
        "tabular/models/genlab-realnvp-nodrop",
        lambda m: (
            f"overfits within {min(m['best_step'])}-{max(m['best_step'])} steps and its test NLL "
            f"scatters over {min(m['test_nll_seeds']):.0f}-{max(m['test_nll_seeds']):.0f} nats"
        ),
    ),
    (
        "docs/flow-matching.md",
        "its ratio to a 2-thread floor rose from 1.37x to 2.21x",
        (FM, FMS),
        lambda a, b: [
            next(r for r in d["step_time"][0]["rows"] if r["variant"] == "genlab-ot")[
                "ratio_to_floor_median"
            ]
            for d in (a, b)
        ],
        "its ratio to a 2-thread floor rose from {0[0]:.2f}x to {0[1]:.2f}x",
    ),
    (
        "docs/flow-matching.md",
        "also moved\nfrom 3.18x to 4.55x",
        (FM, FMS),
        lambda a, b: [
            next(r for r in d["step_time"][0]["rows"] if r["variant"] == "torchcfm-exactot")[
                "ratio_to_floor_median"
            ]
            for d in (a, b)
        ],
        "also moved\nfrom {0[0]:.2f}x to {0[1]:.2f}x",
    ),
    (
        "docs/flow-matching.md",
        "put genlab within 10% of the floor",
        (FM, FMS),
        lambda a, b: max(
            r["ratio_to_floor_median"]
            for d in (a, b)
            for res in d["step_time"]
            for r in res["rows"]
            if r["variant"] == "genlab"
        ),
        lambda v: "put genlab within 10% of the floor" if v < 1.10 else f"{v}",
    ),
    (
        "docs/flow-matching.md",
        "(commit\n37ce71c)",
        FM,
        "machine/genlab_git_head",
        lambda h: f"(commit\n{h[:7]})",
    ),
    (
        "docs/flow-matching.md",
        "commit\n7506c1c)",
        FMS,
        "machine/genlab_git_head",
        lambda h: f"commit\n{h[:7]})",
    ),
    # docs/two-stage.md
    (
        "docs/two-stage.md",
        "(1,000 steps in 132 s against 78 s in",
        TWO,
        lambda d: (d["stage1"]["vqgan"]["seconds"], d["stage1"]["vqvae"]["seconds"]),
        "(1,000 steps in {0[0]:.0f} s against {0[1]:.0f} s in",
    ),
    (
        "docs/two-stage.md",
        "it trained 596 s, against pixel diffusion's 434 s, and\n  its stage 1 took another 106 s, 701 s in all",
        TWO,
        lambda d: (d["pipelines"]["latent diffusion"], d["pipelines"]["pixel diffusion"]),
        lambda v: (
            f"it trained {v[0]['seconds']:.0f} s, against pixel diffusion's {v[1]['seconds']:.0f} s, and\n"
            f"  its stage 1 took another {v[0]['stage1_seconds']:.0f} s, {v[0]['seconds'] + v[0]['stage1_seconds']:.0f} s in all"
        ),
    ),
    (
        "docs/two-stage.md",
        "(70 against 177 ms per image at 20 steps)",
        TWO,
        lambda d: (
            1000 * d["pipelines"]["latent diffusion"]["seconds_per_image"],
            1000 * d["pipelines"]["pixel diffusion"]["seconds_per_image"],
        ),
        "({0[0]:.0f} against {0[1]:.0f} ms per image at 20 steps)",
    ),
    (
        "docs/two-stage.md",
        "the FD of 22.7 against 1633 was measured at 701 CPU seconds against 434",
        TWO,
        lambda d: (d["pipelines"]["latent diffusion"], d["pipelines"]["pixel diffusion"]),
        lambda v: (
            f"the FD of {v[0]['metrics']['fd']['value']:.1f} against {v[1]['metrics']['fd']['value']:.0f} "
            f"was measured at {v[0]['seconds'] + v[0]['stage1_seconds']:.0f} CPU seconds against {v[1]['seconds']:.0f}"
        ),
    ),
    (
        "docs/two-stage.md",
        "Pixel diffusion has not converged in 494 steps",
        TWO,
        "pipelines/pixel diffusion/steps",
        "Pixel diffusion has not converged in {} steps",
    ),
    (
        "docs/two-stage.md",
        "(964 steps; the text encoder",
        TWO,
        "pipelines/latent diffusion, captions/steps",
        "({} steps; the text encoder",
    ),
    (
        "docs/two-stage.md",
        "class accuracy of only 0.636 at guidance 3\n  (FD 60.8;",
        TWO,
        "pipelines/latent diffusion, captions/metrics",
        lambda m: (
            f"class accuracy of only {m['class_accuracy']['value']:.3f} at guidance 3\n  (FD {m['fd']['value']:.1f};"
        ),
    ),
    # docs/latent.md
    (
        "docs/latent.md",
        "(107 minutes on 2 cores",
        LATENT,
        "seconds",
        lambda s: f"({s / 60:.0f} minutes on 2 cores",
    ),
    (
        "docs/latent.md",
        "pythae's VAE is 0.04 nats better, genlab's IWAE 0.23 nats better",
        LATENT,
        lambda d: (
            d["vae"]["genlab_vae"]["iwae"]["nll"] - d["vae"]["pythae_vae"]["iwae"]["nll"],
            d["vae"]["pythae_iwae"]["iwae"]["nll"] - d["vae"]["genlab_iwae"]["iwae"]["nll"],
        ),
        "pythae's VAE is {0[0]:.2f} nats better, genlab's IWAE {0[1]:.2f} nats better",
    ),
    (
        "docs/latent.md",
        "gains 2.5 nats of held-out\nlikelihood over the ELBO (and loses 0.4 nats of ELBO)",
        LATENT,
        lambda d: (
            d["vae"]["genlab_vae"]["iwae"]["nll"] - d["vae"]["genlab_iwae"]["iwae"]["nll"],
            d["vae"]["genlab_iwae"]["elbo"]["nll"] - d["vae"]["genlab_vae"]["elbo"]["nll"],
        ),
        "gains {0[0]:.1f} nats of held-out\nlikelihood over the ELBO (and loses {0[1]:.1f} nats of ELBO)",
    ),
    (
        "docs/latent.md",
        "(about 9.5 nats)",
        LATENT,
        lambda d: d["vae"]["genlab_vae"]["iwae"]["nll"] - d["vae"]["published"]["vae"],
        "(about {:.1f} nats)",
    ),
    (
        "docs/latent.md",
        "93.28 against 93.33 nats (VAE),\n91.01 against 90.93 (IWAE)",
        LATENT,
        lambda d: (d["vae"]["pythae_vae"]["cross_check"], d["vae"]["pythae_iwae"]["cross_check"]),
        lambda v: (
            f"{v[0]['genlab']:.2f} against {v[0]['pythae_get_nll']:.2f} nats (VAE),\n"
            f"{v[1]['genlab']:.2f} against {v[1]['pythae_get_nll']:.2f} (IWAE)"
        ),
    ),
    (
        "docs/latent.md",
        "pythae is 1.27× (ELBO) and 1.40× (IWAE-5) slower",
        LATENT,
        lambda d: (
            d["speed"]["vae"]["pythae_over_genlab"],
            d["speed"]["iwae"]["pythae_over_genlab"],
        ),
        "pythae is {0[0]:.2f}× (ELBO) and {0[1]:.2f}× (IWAE-5) slower",
    ),
    (
        "docs/latent.md",
        "96.2 against a\nreal-data floor of 13.1",
        LATENT,
        "vae/genlab_vae/fd/fd",
        lambda f: f"{f['value']:.1f} against a\nreal-data floor of {f['floor']:.1f}",
    ),
    # docs/metrics.md
    (
        "docs/metrics.md",
        "digits 98.14% held-out accuracy\n  (323 images) in 7.0 s; MNIST (bundled 10k) 99.17% (1,800 images) in 12.3 s",
        EVAL,
        "features",
        lambda f: (
            f"digits {100 * f['digits']['accuracy']:.2f}% held-out accuracy\n  ({f['digits']['heldout_examples']} images) "
            f"in {f['digits']['train_seconds']:.1f} s; MNIST (bundled 10k) {100 * f['mnist']['accuracy']:.2f}% "
            f"({f['mnist']['heldout_examples']:,} images) in {f['mnist']['train_seconds']:.1f} s"
        ),
    ),
    (
        "docs/metrics.md",
        "6.0 s in all, 1.1 s of it the features of the 30,000 images; 542 MiB peak",
        EVAL,
        "metric_timing",
        lambda m: (
            f"{m['seconds_total']:.1f} s in all, {m['seconds_features']:.1f} s of it the features of the "
            f"{3 * m['n']:,} images; {m['peak_rss_mib']:.0f} MiB peak"
        ),
    ),
    (
        "docs/metrics.md",
        "recall (0.9600) passes the floor (0.9485)",
        EVAL,
        "ranking/mnist, guidance 1/rows/trained (3000 steps)",
        lambda r: (
            f"recall ({r['metrics']['recall']:.4f}) passes the floor ({r['floor']['recall']:.4f})"
        ),
    ),
    (
        "docs/metrics.md",
        "precision 0.985 > 0.970",
        EVAL,
        "ranking/digits, recipe/rows/trained (4000 steps)",
        lambda r: f"precision {r['metrics']['precision']:.3f} > {r['floor']['precision']:.3f}",
    ),
    (
        "docs/metrics.md",
        "FD 14.0 ± 1.6, recall 0.907, density 1.20",
        EVAL,
        "ranking/digits, guidance 1/rows/trained (4000 steps)",
        lambda r: (
            f"FD {r['metrics']['fd']:.1f} ± {r['std']['fd']:.1f}, recall {r['metrics']['recall']:.3f}, "
            f"density {r['metrics']['density']:.2f}"
        ),
    ),
    (
        "docs/metrics.md",
        "agree to better than 1e-11 relative",
        "bench/results/eval_reference.json",
        lambda d: max(r["rel_diff"] for r in d["agreement"]["rows"] if r.get("rel_diff")),
        lambda v: "agree to better than 1e-11 relative" if v < 1e-11 else f"{v}",
    ),
    (
        "docs/metrics.md",
        "0.144 ± 0.069 over three seeds (0.104, 0.105 and 0.223;",
        FM,
        "w2_vs_nfe/methods/perfect model",
        lambda r: (
            f"{r['mean']:.3f} ± {r['std']:.3f} over three seeds ({r['w2'][0]:.3f}, {r['w2'][1]:.3f} and {r['w2'][2]:.3f};"
        ),
    ),
    (
        "docs/two-stage.md",
        "with 2,000 held out (48 min in all)",
        TWO,
        "seconds",
        lambda s: f"with 2,000 held out ({s / 60:.0f} min in all)",
    ),
    # docs/report.md: the digits leaderboard
    (
        "docs/report.md",
        "the board took 10.4 minutes of its 30",
        BOARD,
        "wall_seconds",
        lambda s: f"the board took {s / 60:.1f} minutes of its 30",
    ),
    (
        "docs/report.md",
        "The GAN (13.9)",
        BOARD,
        lambda d: _row(d, "gan")["rank_value"],
        "The GAN ({:.1f})",
    ),
    (
        "docs/report.md",
        "PixelCNN (28.3) and diffusion (29.1)",
        BOARD,
        lambda d: (_row(d, "pixelcnn")["rank_value"], _row(d, "diffusion")["rank_value"]),
        lambda v: "PixelCNN ({:.1f}) and diffusion ({:.1f})".format(*v),
    ),
    (
        "docs/report.md",
        "diffusion (1,026 of 4,000) and PixelCNN\n(1,357 of 3,000)",
        BOARD,
        lambda d: (_row(d, "diffusion")["steps"], _row(d, "pixelcnn")["steps"]),
        lambda v: f"diffusion ({v[0]:,} of 4,000) and PixelCNN\n({v[1]:,} of 3,000)",
    ),
    # docs/peers.md: the flow-matching pair
    (
        "docs/peers.md",
        "92.4 ± 13.1 against 93.1 ± 5.5",
        PEERS_FM,
        lambda d: (*_fm_fd(d, "genlab", "20"), *_fm_fd(d, "flow_matching", "20")),
        lambda v: "{:.1f} ± {:.1f} against {:.1f} ± {:.1f}".format(*v),
    ),
    (
        "docs/peers.md",
        "(108.3 ± 8.2 at 20 steps)",
        PEERS_FM,
        lambda d: _fm_fd(d, "torchcfm", "20"),
        lambda v: "({:.1f} ± {:.1f} at 20 steps)".format(*v),
    ),
    (
        "docs/peers.md",
        "fewest steps in seed 1 (491)",
        PEERS_FM,
        lambda d: min(r["steps"] for r in d["runs"] if r["seed"] == 1),
        "fewest steps in seed 1 ({:,})",
    ),
    (
        "docs/peers.md",
        "it is −0.012 ± 0.004\nbits/dim",
        (PEERS_FM, PEERS_FM_LIK),
        lambda a, b: _fm_pooled(a, b),
        lambda v: "it is {} ± {:.3f}\nbits/dim".format(f"{v[0]:.3f}".replace("-", "−"), v[1]),
    ),
    # docs/peers.md: the VAE pair
    (
        "docs/peers.md",
        "genlab's VAE arm\n  trained 238 s and pythae's 155 s, genlab's IWAE 174 s and pythae's 210 s",
        PEERS_VAE,
        lambda d: [
            _vae(d, a)["train_seconds"]
            for a in ("genlab-vae", "pythae-vae", "genlab-iwae", "pythae-iwae")
        ],
        lambda v: (
            "genlab's VAE arm\n  trained {:.0f} s and pythae's {:.0f} s, genlab's IWAE {:.0f} s and "
            "pythae's {:.0f} s".format(*v)
        ),
    ),
    (
        "docs/peers.md",
        "by 1.45 ± 0.15 nats",
        PEERS_VAE,
        lambda d: _vae_gap(d, "iwae"),
        lambda v: "by {:.2f} ± {:.2f} nats".format(*v),
    ),
    (
        "docs/peers.md",
        "2.59 ± 0.20 nats",
        PEERS_VAE,
        lambda d: _vae_gap(d, "vae"),
        lambda v: "{:.2f} ± {:.2f} nats".format(*v),
    ),
    (
        "docs/peers.md",
        "1.2× (ELBO) and 1.3× (IWAE-5)",
        PEERS_VAE,
        lambda d: [
            d["ms_per_step"][f"pythae-{k}"] / d["ms_per_step"][f"genlab-{k}"]
            for k in ("vae", "iwae")
        ],
        lambda v: "{:.1f}× (ELBO) and {:.1f}× (IWAE-5)".format(*v),
    ),
    (
        "docs/peers.md",
        "differ by 0.14 nats (VAE;\n  pythae's lower) and 0.02 nats (IWAE)",
        PEERS_VAE,
        lambda d: [_vae_check(d, k) for k in ("vae", "iwae")],
        lambda v: (
            f"differ by {-v[0]:.2f} nats (VAE;\n  pythae's lower) and {abs(v[1]):.2f} nats (IWAE)"
        ),
    ),
]


def _last(d: dict, name: str) -> dict:
    """An arm's figures at the last budget in bench/results/text_tokens.json."""
    return d["held_out"][name]["budgets"][-1]


def _pct(v: float) -> str:
    return f"{v:.1%}"


def _pct_signed(v: float) -> str:
    return f"{v:+.1%}"


def _peer_nats(d: dict, arm: str) -> list[float]:
    """One arm's held-out nats/char per seed in bench/results/gpt_peers.json."""
    return [r["nats_per_char"] for r in d["runs"] if r["arm"] == arm]


def _gap(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and that difference over its standard error (sample sds)."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return ma - mb, (ma - mb) / se


def _value(json_paths: str | tuple[str, ...], key: str | Callable) -> object:
    paths = (json_paths,) if isinstance(json_paths, str) else json_paths
    if callable(key):
        return key(*(mt.load(p) for p in paths))
    assert len(paths) == 1, "a key path reads one JSON; give a function for several"
    return mt.get(paths[0], key)


def _format(fmt: str | Callable, value: object) -> str:
    return fmt(value) if callable(fmt) else fmt.format(value)


def test_generated_tables_match_their_json():
    assert mt.check() == [], (
        "run `python docs/make_tables.py` (or fix the JSON / the table function)"
    )


def test_every_table_function_is_used_and_every_doc_block_is_known():
    used = {name for doc in mt.documents() for name in mt.blocks(doc)}
    assert used <= set(mt.TABLES)
    assert set(mt.TABLES) <= used, f"table functions no doc uses: {sorted(set(mt.TABLES) - used)}"


def test_the_check_catches_a_changed_figure(tmp_path):
    doc = ROOT / "docs" / "text.md"
    text = doc.read_text(encoding="utf-8")
    m = mt.BLOCK.search(text)
    assert m is not None
    body = m.group(0)
    changed = re.sub(r"\d\.\d{3}", "9.999", body, count=1)
    assert changed != body
    copy = tmp_path / "text.md"
    copy.write_text(text.replace(body, changed), encoding="utf-8")
    assert any(m.group("name") in line for line in mt.check([copy]))
    copy.write_text(text.replace(body, body.replace("<!-- /table -->", "")), encoding="utf-8")
    assert mt.check([copy]), "an unclosed block must be reported"
    copy.write_text(text + "\n<!-- table: no_such_table -->\n<!-- /table -->\n", encoding="utf-8")
    assert any("no_such_table" in line for line in mt.check([copy]))


@pytest.mark.parametrize(
    "doc,quoted,json_paths,key,fmt", PROSE, ids=[f"{d}:{q[:40]}" for d, q, *_ in PROSE]
)
def test_prose_figure_equals_its_json(doc, quoted, json_paths, key, fmt):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert quoted in text, f"{doc} no longer quotes {quoted!r}: update PROSE with the doc"
    assert _format(fmt, _value(json_paths, key)) == quoted


def test_every_result_json_has_a_writer_listed_in_bench_readme():
    readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    results = sorted(
        p.relative_to(ROOT).as_posix() for p in (ROOT / "bench" / "results").glob("*.json")
    )
    assert set(results) <= set(mt.WRITERS), (
        f"no writer recorded for {set(results) - set(mt.WRITERS)}"
    )
    for path, script in mt.WRITERS.items():
        assert (ROOT / path).is_file(), path
        assert (ROOT / script).is_file(), script
        if path.startswith("bench/"):
            assert Path(path).name in readme, (
                f"bench/README.md does not say which command writes {path}"
            )
    for script in sorted((ROOT / "bench").glob("*.py")):
        assert f"`{script.name}`" in readme, f"bench/README.md does not list {script.name}"


def test_the_check_reads_no_genlab():
    assert "genlab" not in {m.split(".")[0] for m in vars(mt) if not m.startswith("_")}
    for path in mt.WRITERS:
        json.loads((ROOT / path).read_text(encoding="utf-8"))


def _fm_fd(d: dict, arm: str, point: str) -> tuple[float, float]:
    """Mean and standard deviation over seeds of an arm's FD at a point in peers-fm.json."""
    v = [r["samples"][point]["fd"]["value"] for r in d["runs"] if r["arm"] == arm]
    return statistics.fmean(v), statistics.stdev(v)


def _fm_pooled(*ds: dict) -> tuple[float, float]:
    """genlab − flow_matching bits/dim, mean over every model in the JSONs of the per-model paired
    means, with its standard error."""
    diffs = []
    for d in ds:
        for r in d["runs"]:
            if "likelihood" in r:
                lk = r["likelihood"]
                v = [a - b for a, b in zip(lk["genlab"], lk["flow_matching"], strict=True)]
                diffs.append((statistics.fmean(v), statistics.stdev(v) / math.sqrt(len(v))))
    se = math.sqrt(sum(e * e for _, e in diffs)) / len(diffs)
    return statistics.fmean(m for m, _ in diffs), se


def _vae(d: dict, arm: str) -> dict:
    return next(r for r in d["runs"] if r["arm"] == arm)


def _vae_gap(d: dict, kind: str) -> tuple[float, float]:
    """genlab − pythae test IWAE-5000, paired over images: mean and standard error."""
    g, p = (_vae(d, f"{lib}-{kind}")["likelihood"]["iwae"] for lib in ("genlab", "pythae"))
    v = [a - b for a, b in zip(g, p, strict=True)]
    return statistics.fmean(v), statistics.stdev(v) / math.sqrt(len(v))


def _vae_check(d: dict, kind: str) -> float:
    """pythae's get_nll minus genlab's IWAE-5000 mean on the same first test images."""
    lk = _vae(d, f"pythae-{kind}")["likelihood"]
    own = lk["pythae_get_nll"]
    return own["mean_log_p"] - statistics.fmean(lk["iwae"][: own["n"]])
