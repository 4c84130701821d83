"""The result tables of the docs, regenerated from the committed JSON that backs them.

    python docs/make_tables.py            # rewrite every generated block
    python docs/make_tables.py --check    # rewrite nothing; exit 1 listing the blocks that differ
    python docs/make_tables.py --list     # every table: the JSON it reads and the script that wrote it

A generated block sits in a markdown file (README.md, bench/README.md, docs/*.md) between two
marker comments:

    <!-- table: NAME -->
    ...
    <!-- /table -->

NAME is a function of this module, registered with ``@table(JSON, ...)``: it reads its JSON(s)
and returns the markdown table. The block ends with a line naming the JSON and the script that
wrote it, and says so when that JSON was written from a tree whose ``src/`` had uncommitted
changes or carries no machine record (commit and dirty flag, ``bench/_machine.py``). Every JSON a
table reads must be listed in ``WRITERS``.

Standard library only (no genlab, no torch): ``tests/test_doc_figures.py`` imports this module
and calls ``check()``, which reads JSON and text and nothing else.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every JSON a table reads, and the script (with its command, in bench/README.md) that wrote it.
WRITERS: dict[str, str] = {
    "bench/results/autoregressive.json": "bench/autoregressive.py",
    "bench/results/autoregressive_density.json": "bench/autoregressive_density.py",
    "bench/results/cli_eval.json": "bench/cli_eval.py",
    "bench/results/diffusion_2d.json": "bench/diffusion_2d.py",
    "bench/results/eval_images.json": "bench/eval_images.py",
    "bench/results/eval_reference.json": "bench/eval_reference.py",
    "bench/results/flow_matching_2d.json": "bench/flow_matching_2d.py",
    "bench/results/flow_matching_2d_steps.json": "bench/flow_matching_2d.py",
    "bench/results/flows_2d.json": "bench/flows_2d.py",
    "bench/results/gan_2d.json": "bench/gan_2d.py",
    "bench/results/gpt_peers.json": "bench/gpt_peers.py",
    "bench/results/image_folder.json": "bench/image_folder.py",
    "bench/results/latent.json": "bench/latent.py",
    "bench/results/nanogpt_peer.json": "bench/nanogpt_peer.py",
    "bench/results/leaderboard-digits-30min.json": "bench/leaderboard.py",
    "bench/results/ot_coupling.json": "bench/ot_coupling.py",
    "bench/results/peers-ddpm.json": "bench/peers.py",
    "bench/results/peers-fm.json": "bench/peers.py",
    "bench/results/peers-fm-likelihood.json": "bench/peers.py",
    "bench/results/peers-vae.json": "bench/peers.py",
    "bench/results/text.json": "bench/text.py",
    "bench/results/text-375.json": "bench/text.py",
    "bench/results/text-750.json": "bench/text.py",
    "bench/results/text-9000.json": "bench/text.py",
    "bench/results/text-12000.json": "bench/text.py",
    "bench/results/text-20000.json": "bench/text.py",
    "bench/results/text-restart10000.json": "bench/text.py",
    "bench/results/text-restart2-10000.json": "bench/text.py",
    "bench/results/text-restart20000.json": "bench/text.py",
    "bench/results/text-restart3-10000.json": "bench/text.py",
    "bench/results/text-test-1500.json": "bench/text.py",
    "bench/results/text_file.json": "bench/text_file.py",
    "bench/results/text_tokens.json": "bench/text_tokens.py",
    "bench/results/text_tokens-vim.json": "bench/text_tokens.py",
    "bench/results/text_tokens-vim-bytes.json": "bench/text_tokens.py",
    "bench/results/two_stage.json": "bench/two_stage.py",
    "bench/results/two_stage-test.json": "bench/two_stage.py",
    "docs/figures/diffusion-figures.json": "docs/make_diffusion_figures.py",
    "docs/figures/two-stage.json": "docs/make_two_stage_figures.py",
}

TABLES: dict[str, Callable[[], str]] = {}
BLOCK = re.compile(r"<!-- table: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /table -->", re.DOTALL)
OPEN = re.compile(r"<!-- table: (?P<name>[^ ]*) -->")


def table(*sources: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    """Register a table function under its own name, with the JSON files it reads."""

    def register(fn: Callable[[], str]) -> Callable[[], str]:
        unknown = [s for s in sources if s not in WRITERS]
        if unknown:
            raise ValueError(f"{fn.__name__}: no writer recorded for {unknown}")
        fn.sources = sources  # type: ignore[attr-defined]
        TABLES[fn.__name__] = fn
        return fn

    return register


@functools.cache
def load(path: str) -> dict:
    """A committed JSON, by its path from the repository root (read once)."""
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


def get(path: str, keys: str | tuple) -> object:
    """The value at ``keys`` (``"a/b/0/c"`` or a tuple) of the JSON at ``path``."""
    node: object = load(path)
    for key in keys.split("/") if isinstance(keys, str) else keys:
        node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
    return node


def provenance(path: str) -> str | None:
    """What is wrong with a JSON's record of the code it measured, or None."""
    record = load(path)
    machine = record.get("machine") if isinstance(record, dict) else None
    if not isinstance(machine, dict) or "genlab_git_head" not in machine:
        return "carries no machine record (no commit, no dirty flag)"
    if machine.get("genlab_src_dirty"):
        return (
            f"was written from a tree whose `src/` had uncommitted changes "
            f"(on {str(machine['genlab_git_head'])[:7]})"
        )
    return None


def source_line(sources: tuple[str, ...]) -> str:
    if len(sources) > 4:
        return "*Generated by `docs/make_tables.py` from the JSON files the table names.*"
    parts = []
    for s in sources:
        note = provenance(s)
        parts.append(f"`{s}` ({WRITERS[s]}" + (f"; this JSON {note})" if note else ")"))
    return "*Generated by `docs/make_tables.py` from " + ", ".join(parts) + ".*"


def render(name: str) -> str:
    fn = TABLES[name]
    return fn().rstrip("\n") + "\n\n" + source_line(fn.sources) + "\n"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------
# formatting


def num(x: float, nd: int = 3, sign: bool = False) -> str:
    """``x`` with ``nd`` decimals, thousands separators and a true minus sign."""
    s = f"{x:+,.{nd}f}" if sign else f"{x:,.{nd}f}"
    return s.replace("-", "−")


def pm(x: float, err: float, nd: int = 3, err_nd: int | None = None) -> str:
    return f"{num(x, nd)} ± {num(err, nd if err_nd is None else err_nd)}"


def pct(x: float, nd: int = 1, sign: bool = True) -> str:
    return num(100 * x, nd, sign) + "%"


def sig(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant figures (no exponent), thousands separators."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    nd = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return num(x, nd)


def md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard deviation of the per-seed differences ``a − b``."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    return statistics.fmean(d), statistics.stdev(d) if len(d) > 1 else 0.0


def level(a: list[float], b: list[float]) -> bool:
    """Two arms measured on the same seeds are level when their mean paired difference is
    smaller than twice the standard deviation of the per-seed differences (bench/README.md's
    rule for 3 seeds: about 3.5 standard errors, near the 95% point of Student's t with 2
    degrees of freedom)."""
    mean, sd = paired(a, b)
    return abs(mean) < 2 * sd


# ------------------------------------------------------------------------------------------------
# docs/text.md

TEXT = "bench/results/text.json"
TEXT_NAMES = {
    "gpt-rope": "gpt-rope (the reference)",
    "bd3lm-4": "bd3lm, blocks of 4",
    "bd3lm-8": "bd3lm, blocks of 8",
    "bd3lm-16": "bd3lm, blocks of 16",
    "mdlm": "mdlm",
    "sedd-absorb": "sedd, absorbing",
    "sedd-uniform": "sedd, uniform",
    "bd3lm-4-clip": "bd3lm, blocks of 4",
    "mdlm-clip": "mdlm",
    "sedd-absorb-clip": "sedd, absorbing",
}


def bits(entry: dict) -> str:
    return pm(entry["nll"]["bits_per_char"], entry["nll"]["bits_per_char_stderr"])


def override(entry: dict, key: str) -> str | None:
    """The last value ``entry`` (a bench/text.py model entry) gives to the config key ``key``."""
    found = None
    for o in entry.get("overrides", []):
        k, _, v = o.partition("=")
        if k == key:
            found = v
    return found


def rates(entry: dict) -> str:
    r = override(entry, "model.mask_rates")
    return "[0, 1]" if r is None else r.replace(",", ", ")


def best_step(entry: dict, offset: int = 0) -> str:
    step, loss = min(entry["val_curve"], key=lambda p: p[1])
    return f"{step + offset:,} ({loss:.3f})"


@table(TEXT)
def text_recipe_budget() -> str:
    rows = load(TEXT)["held_out"]
    names = ["gpt-rope", "bd3lm-4", "bd3lm-8", "mdlm", "bd3lm-16", "sedd-absorb", "sedd-uniform"]
    names.sort(key=lambda n: rows[n]["nll"]["bits_per_char"])
    out = []
    for n in names:
        e = rows[n]
        star = "*" if str(e.get("trained", "")).startswith("reused") else ""
        gap = "0" if n == load(TEXT)["ar_reference"] else pct(e["gap_to_ar"])
        out.append(
            [TEXT_NAMES[n], bits(e), e["nll"]["kind"], gap, f"{e['train_seconds']:,.0f} s{star}"]
        )
    return md(["model", "held-out bits/char", "kind", "gap to AR (nats)", "training"], out)


@table(TEXT)
def text_clipped() -> str:
    rows, quality = load(TEXT)["held_out"], load(TEXT)["sample_quality"]

    def q(name: str) -> str:
        if name in quality:
            return f"{quality[name]['gen_ppl']:.1f} ({quality[name]['entropy_bits']:.2f})"
        t, e = quality[name + "-tweedie"], quality[name + "-euler"]
        return (
            f"{t['gen_ppl']:.1f} ({t['entropy_bits']:.2f}) Tweedie, "
            f"{e['gen_ppl']:.1f} ({e['entropy_bits']:.2f}) Euler"
        )

    def whole_q(name: str) -> str:
        if name in quality:
            return f"{quality[name]['gen_ppl']:.1f}"
        return f"{quality[name + '-tweedie']['gen_ppl']:.1f}, {quality[name + '-euler']['gen_ppl']:.1f}"

    out = []
    for clip, whole in (
        ("bd3lm-4-clip", "bd3lm-4"),
        ("mdlm-clip", "mdlm"),
        ("sedd-absorb-clip", "sedd-absorb"),
    ):
        c, w = rows[clip], rows[whole]
        out.append(
            [
                TEXT_NAMES[clip],
                rates(c),
                bits(c),
                pct(c["gap_to_ar"]),
                f"{w['nll']['bits_per_char']:.3f}, {pct(w['gap_to_ar'])}",
                f"{q(clip)}; whole range: {whole_q(whole)}",
                f"{c['train_seconds']:,.0f} s",
            ]
        )
    header = [
        "model",
        "masking rates",
        "held-out bits/char",
        "gap to AR (nats)",
        "whole range [0, 1]",
        "gen. perplexity (entropy, bits)",
        "training",
    ]
    return md(header, out)


@table(TEXT)
def text_block_sizes() -> str:
    sizes = load(TEXT)["one_model_block_sizes"]
    notes = {1: " (exact AR)", 4: " (trained)"}
    window = max(s["block_size"] for s in sizes)
    header = ["blocks of"] + [
        f"{s['block_size']}{notes.get(s['block_size'], ' (the window: MDLM bound)' if s['block_size'] == window else '')}"
        for s in sizes
    ]
    row = ["bits/char"] + [
        pm(s["nll"]["bits_per_char"], s["nll"]["bits_per_char_stderr"]) for s in sizes
    ]
    return md(header, [row])


@table(TEXT)
def text_sampling() -> str:
    sampling = load(TEXT)["sampling"]
    out = []
    for key, what in (
        ("mdlm", "MDLM"),
        ("mdlm-batch-16", "MDLM"),
        ("bd3lm-4", "BD3-LM(4), steps per block"),
    ):
        for r in sampling[key]:
            out.append(
                [
                    what,
                    str(r["n"]),
                    f"{r['steps']:,}",
                    f"{r['samples_per_s_cache']:.3f} (NFE {r['nfe_cache']:,})",
                    f"{r['samples_per_s_no_cache']:.3f} (NFE {r['nfe_no_cache']:,})",
                    f"{r['speedup']:.1f}x",
                    "yes" if r["same_samples"] else "**no**",
                    str(r["repeats"]),
                ]
            )
    header = [
        "model",
        "n",
        "steps",
        "samples/s, reuse or KV cache",
        "samples/s, recompute",
        "speed-up",
        "same samples",
        "median of",
    ]
    return md(header, out)


@table(TEXT)
def text_sample_quality() -> str:
    quality = load(TEXT)["sample_quality"]
    labels = {
        "real": "real held-out text",
        "gpt-rope": "gpt-rope, temperature 1",
        "bd3lm-4-clip": "bd3lm, blocks of 4, [0.45, 0.95]",
        "bd3lm-4": "bd3lm, blocks of 4",
        "mdlm-clip": "mdlm, [0.3, 0.8], 256 steps",
        "mdlm": "mdlm, 256 steps",
        "bd3lm-8": "bd3lm, blocks of 8",
        "bd3lm-16": "bd3lm, blocks of 16",
        "sedd-absorb-clip-tweedie": "sedd, absorbing, [0.3, 0.8], Tweedie τ-leaping",
        "sedd-absorb-clip-euler": "sedd, absorbing, [0.3, 0.8], Euler",
        "sedd-absorb-tweedie": "sedd, absorbing, Tweedie τ-leaping",
        "sedd-absorb-euler": "sedd, absorbing, Euler",
        "sedd-uniform-tweedie": "sedd, uniform, Tweedie τ-leaping",
        "sedd-uniform-euler": "sedd, uniform, Euler",
    }
    missing = set(quality) - set(labels)
    if missing:
        raise KeyError(f"text_sample_quality: no label for {sorted(missing)}")
    out = [
        [labels[k], f"{quality[k]['gen_ppl']:.2f}", f"{quality[k]['entropy_bits']:.2f}"]
        for k in labels
        if k in quality
    ]
    return md(["samples", "generative perplexity (gpt-rope)", "unigram entropy (bits)"], out)


TEXT_BUDGETS = ("bench/results/text-375.json", "bench/results/text-750.json", TEXT)


@table(*TEXT_BUDGETS)
def text_short_budgets() -> str:
    out = []
    for path in TEXT_BUDGETS:
        rows = load(path)["held_out"]
        gpt = rows["gpt-rope"]
        mdlm = rows.get("mdlm")
        out.append(
            [
                f"{load(path)['steps']:,}",
                bits(gpt),
                bits(mdlm) if mdlm else "not run",
                pct(mdlm["gap_to_ar"]) if mdlm else "",
                f"`{path}`",
            ]
        )
    return md(["steps", "gpt-rope bits/char", "mdlm bits/char", "gap to AR (nats)", "JSON"], out)


TEXT_TEST = "bench/results/text-test-1500.json"
TEXT_BAR = 0.12  # MDLM, SEDD-absorbing and BD3-LM(4) within +12% of AR (nats), docs/text.md


def gap_with_error(e: dict, ar: dict) -> tuple[float, float]:
    """The gap to AR ``(m − a) / a`` in bits (= nats) per character and its standard error, the
    two held-out figures' errors combined as independent (their windows differ: 128 and 256)."""
    m, sm = e["nll"]["bits_per_char"], e["nll"]["bits_per_char_stderr"]
    a, sa = ar["nll"]["bits_per_char"], ar["nll"]["bits_per_char_stderr"]
    return (m - a) / a, math.hypot(sm / a, m * sa / a**2)


def verdict(gap: float, se: float, bar: float = TEXT_BAR) -> str:
    """met / missed when the bar is more than two standard errors away, else within the noise."""
    if gap + 2 * se < bar:
        return "met"
    if gap - 2 * se > bar:
        return "missed"
    return "within 2 s.e. of the bar"


@table(TEXT_TEST)
def text_test_split() -> str:
    record = load(TEXT_TEST)
    rows = record["held_out"]
    ar = rows[record["ar_reference"]]
    out = []
    for n in ("gpt-rope", "bd3lm-4-clip", "mdlm-clip", "sedd-absorb-clip"):
        e = rows[n]
        if n == record["ar_reference"]:
            gap_s, bar = "0 (the reference)", ""
        else:
            gap, se = gap_with_error(e, ar)
            gap_s, bar = f"{pct(gap)} ± {num(100 * se, 1)}%", verdict(gap, se)
        out.append(
            [TEXT_NAMES[n], best_step(e), bits(e), e["nll"]["kind"], gap_s, bar,
             f"{e['train_seconds']:,.0f} s"]
        )  # fmt: skip
    header = ["model", "best step (validation, nats/char)", "test bits/char", "kind",
              "gap to AR ± s.e.", "+12% bar", "training"]  # fmt: skip
    return md(header, out)


TEXT_12000 = "bench/results/text-12000.json"


@table(TEXT_12000)
def text_12000() -> str:
    rows = load(TEXT_12000)["held_out"]
    out = []
    for n in ("gpt-rope", "mdlm"):
        e = rows[n]
        gap = "0" if n == load(TEXT_12000)["ar_reference"] else pct(e["gap_to_ar"])
        out.append(
            [n, best_step(e), bits(e), e["nll"]["kind"], gap, f"{e['train_seconds']:,.0f} s"]
        )
    header = [
        "model",
        "best step (validation, nats/char)",
        "held-out bits/char",
        "kind",
        "gap to AR (nats)",
        "training",
    ]
    return md(header, out)


def long_row(path: str, name: str, label: str) -> list[str]:
    e = load(path)["held_out"][name]
    start = e.get("init_from", {}).get("steps", 0)
    steps = load(path)["steps"]
    budget = f"{start:,} + {steps:,} steps" if start else f"{steps:,} steps"
    return [
        label,
        budget,
        best_step(e, start),
        bits(e),
        pct(e["gap_to_ar"]),
        f"{e['train_seconds']:,.0f} s",
    ]


LONG_HEADER = [
    "model",
    "budget",
    "best step (validation, nats/char)",
    "held-out bits/char",
    "gap to AR (nats)",
    "training",
]
TEXT_9000, TEXT_20000 = "bench/results/text-9000.json", "bench/results/text-20000.json"


@table(TEXT_9000, TEXT_20000)
def text_long() -> str:
    return md(
        LONG_HEADER,
        [
            long_row(TEXT_9000, "bd3lm-4-clip", "bd3lm, blocks of 4, [0.45, 0.95]"),
            long_row(TEXT_20000, "mdlm-clip", "mdlm, [0.3, 0.8]"),
        ],
    )


TEXT_R1 = "bench/results/text-restart10000.json"
TEXT_R2 = "bench/results/text-restart2-10000.json"
TEXT_R20 = "bench/results/text-restart20000.json"
TEXT_R3 = "bench/results/text-restart3-10000.json"


@table(TEXT_20000, TEXT_R1, TEXT_R2)
def text_mdlm_restarts() -> str:
    return md(
        LONG_HEADER,
        [
            long_row(TEXT_20000, "mdlm-clip", "mdlm, [0.3, 0.8]"),
            long_row(TEXT_R1, "mdlm-clip-restart", "restarted once"),
            long_row(TEXT_R2, "mdlm-clip-restart2", "restarted twice"),
        ],
    )


@table(TEXT_20000, TEXT_R1, TEXT_R20, TEXT_R3)
def text_sedd_restarts() -> str:
    return md(
        LONG_HEADER,
        [
            long_row(TEXT_20000, "sedd-absorb-clip", "sedd, absorbing, [0.3, 0.8]"),
            long_row(TEXT_R1, "sedd-absorb-clip-restart", "restarted once (peak lr 0.001)"),
            long_row(TEXT_R20, "sedd-absorb-clip-restart2", "restarted twice (peak lr 0.001)"),
            long_row(TEXT_R3, "sedd-absorb-clip-restart3", "three times (peak lr 0.0003)"),
        ],
    )


# ------------------------------------------------------------------------------------------------
# docs/autoregressive.md

AR_DENSITY = "bench/results/autoregressive_density.json"
AR_GPT = "bench/results/autoregressive.json"


@table(AR_DENSITY)
def ar_moons() -> str:
    moons = load(AR_DENSITY)["moons"]
    labels = {
        "genlab-maf": "genlab `maf` (5 layers, MADE 2 × 64)",
        "zuko-maf": "zuko MAF (5 transforms, (64, 64))",
        "genlab-iaf": "genlab `iaf` (same layers, run backwards)",
        "zuko-nsf": "zuko NSF (5 transforms)",
    }
    out = [
        [labels[k], f"{m['nll']:.3f}", f"{m['ms_per_step']:.1f}", f"{m['params']:,}"]
        for k, m in moons["models"].items()
    ]
    out.append(["the true law (its own density)", f"{moons['true_nll']:.3f}", "", ""])
    out.append(["a full-covariance Gaussian", f"{moons['gaussian_nll']:.3f}", "", ""])
    return md(["model", "NLL (nats)", "ms / step", "parameters"], out)


@table(AR_DENSITY)
def ar_tables() -> str:
    tables = load(AR_DENSITY)["tables"]
    cols = ["genlab-maf", "zuko-maf", "zuko-nsf", "recipe maf-tabular", "recipe nsf-tabular"]
    out = []
    for name, t in tables.items():
        shape, split = t["shape"], t["split"]
        out.append(
            [f"{name}, {shape[0]} × {shape[1]} ({split[0]}/{split[1]}/{split[2]} rows)"]
            + [num(t["gaussian_nll"], 2)]
            + [num(t["models"][c]["test_nll"], 2) for c in cols]
        )
    header = ["data", "Gaussian (full cov.)", "genlab MAF", "zuko MAF", "zuko NSF"]
    header += ["recipe `maf-tabular`", "recipe `nsf-tabular`"]
    return md(header, out)


@table(AR_DENSITY)
def ar_binarized_mnist() -> str:
    runs = load(AR_DENSITY)["binarized_mnist"]
    labels = {
        "fvsbn": "FVSBN",
        "made": "MADE, 1 × 500, 8-mask ensemble",
        "nade": "NADE, 500",
        "pixelcnn": "PixelCNN, 7 gated layers of 32 (`pixelcnn-mnist`)",
    }
    published = {"made": " (32 masks)"}
    out = [
        [
            labels[k],
            f"{r['steps']:,}",
            pm(r["nll"], r["stderr"], 2),
            f"{r['published_60k']:.2f}{published.get(k, '')}",
        ]
        for k, r in sorted(runs.items(), key=lambda kv: kv[1]["nll"])
    ]
    seconds = {r["seconds"] for r in runs.values()}
    budget = f"{seconds.pop():.0f} s" if len(seconds) == 1 else "budget"
    return md(["model", f"steps in {budget}", "held-out NLL (nats)", "published (60k)"], out)


def nanogpt_row(nano: dict) -> list[str]:
    """Part (c): one seed, or the mean ± sd over seeds with each seed's figures."""
    runs = nano.get("seeds") or [nano]
    if len(runs) == 1:
        return [
            f"nanoGPT CPU recipe (seed {nano.get('seed', 0)})",
            "part c",
            f"{nano['nats_per_char']:.3f} nats/char exact (every held-out character, "
            f"{nano['val_characters']:,}); {nano['nats_per_char_positions_1_on']:.3f} over positions "
            f"1–63 of the same windows; {nano['steps']:,} steps in {nano['train_seconds']:.0f} s",
        ]
    sm = nano["summary"]
    each = ", ".join(f"{r['nats_per_char_positions_1_on']:.4f}" for r in runs)
    return [
        f"nanoGPT CPU recipe ({len(runs)} seeds)",
        "part c",
        f"{sm['nats_per_char']['mean']:.4f} ± {sm['nats_per_char']['sd']:.4f} nats/char exact "
        f"(every held-out character, {nano['val_characters']:,}); "
        f"{sm['nats_per_char_positions_1_on']['mean']:.4f} ± "
        f"{sm['nats_per_char_positions_1_on']['sd']:.4f} over positions 1–63 of the same windows "
        f"(seeds: {each}); {nano['steps']:,} steps in {sm['train_seconds']['mean']:.0f} s",
    ]


NANOGPT_PEER = "bench/results/nanogpt_peer.json"


@table(NANOGPT_PEER, AR_GPT)
def nanogpt_peer() -> str:
    """nanoGPT itself and genlab on nanoGPT's CPU recipe, per seed and mean ± sd."""
    peer, ours = load(NANOGPT_PEER), load(AR_GPT)["nanogpt_cpu"]
    gen = ours.get("seeds") or [ours]

    def stat(vals: list[float]) -> str:
        if len(vals) < 2:
            return f"{vals[0]:.4f}"
        mean = sum(vals) / len(vals)
        sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        return f"{mean:.4f} ± {sd:.4f}"

    def seeds(vals: list[float]) -> str:
        return ", ".join(f"{v:.4f}" for v in vals)

    p_print = [r["val_printed"] for r in peer["runs"]]
    p_est = [r["estimate_val"] for r in peer["runs"]]
    p_all = [r["exact_all"] for r in peer["runs"]]
    p_163 = [r["exact_positions_1_63"] for r in peer["runs"]]
    g_all = [r["nats_per_char"] for r in gen]
    g_163 = [r["nats_per_char_positions_1_on"] for r in gen]
    dash = "—"
    rows = [
        ["nanoGPT's printed val loss (20 random batches)", stat(p_print), seeds(p_print), dash, dash],
        ["the same estimate, 200 batches", stat(p_est), seeds(p_est), dash, dash],
        ["exact, positions 1–63 of consecutive 64-character windows", stat(p_163), seeds(p_163),
         stat(g_163), seeds(g_163)],
        ["exact, every position (nanoGPT: position 0 from the 64 characters before it; "
         "genlab: from the start token alone)", stat(p_all), seeds(p_all), stat(g_all), seeds(g_all)],
    ]  # fmt: skip
    head = ["held-out nats/char (last 10% of the text)", "nanoGPT, mean ± sd", "nanoGPT seeds",
            "genlab, mean ± sd", "genlab seeds"]  # fmt: skip
    return md(head, rows)


GPT_PEERS = "bench/results/gpt_peers.json"
PEER_NAMES = {"genlab": "genlab `gpt`", "hf-gpt2": "HF `GPT2LMHeadModel`",
              "x-transformers": "x-transformers `Decoder`"}  # fmt: skip


def mean_sd(vals: list[float], digits: int = 4) -> str:
    if len(vals) < 2:
        return f"{vals[0]:.{digits}f}"
    mean = sum(vals) / len(vals)
    sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


@table(GPT_PEERS)
def gpt_peers() -> str:
    """genlab's GPT, HF GPT-2 and x-transformers on nanoGPT's CPU recipe: held-out nats/char per
    seed (positions 1-63, with each run's standard error), ms/step, sampling chars/s."""
    g = load(GPT_PEERS)
    step = g["train_step"]
    rows = []
    for arm, label in PEER_NAMES.items():
        runs = [r for r in g["runs"] if r["arm"] == arm]
        each = ", ".join(f"{r['nats_per_char']:.4f} ± {r['stderr']:.4f}" for r in runs)
        ratio = "1" if arm == "genlab" else f"{step[f'ratio_vs_{arm}']:.2f}"
        chars = {r["n"]: r["chars_per_s"] for r in g["sampling"] if r["arm"] == arm}
        secs = mean_sd([r["train_seconds"] for r in runs], 0)
        rows.append([label, f"{runs[0]['parameters']:,}",
                     mean_sd([r["nats_per_char"] for r in runs]), each,
                     f"{step[f'{arm}_ms']:.1f}", ratio, secs,
                     f"{chars[1]:,.0f}", f"{chars[16]:,.0f}"])  # fmt: skip
    seeds = sorted({r["seed"] for r in g["runs"]})
    head = [
        "arm", "parameters", f"held-out nats/char, mean ± sd ({len(seeds)} seeds)",
        "per seed (± standard error over windows)",
        f"ms/step ({step['rounds']} interleaved rounds)", "genlab ms / this arm's ms",
        f"{g['runs'][0]['steps']:,} steps, s", "chars/s sampled, 1 sequence", "16 sequences",
    ]  # fmt: skip
    return md(head, rows)


TEXT_TOKENS = "bench/results/text_tokens.json"


TEXT_TOKENS_VIM = "bench/results/text_tokens-vim.json"


@table(TEXT_TOKENS)
def text_tokens() -> str:
    """Text diffusion beside the GPT on BPE tokens of Tiny Shakespeare: the last budget's test
    bits/char, the gap at equal budget, the tokens to +12%, and generative perplexity."""
    return _text_tokens(TEXT_TOKENS)


@table(TEXT_TOKENS_VIM)
def text_tokens_vim() -> str:
    """The same on another text (Vim's user manual)."""
    return _text_tokens(TEXT_TOKENS_VIM)


def _text_tokens(path: str) -> str:
    g = load(path)
    quality = g["sample_quality"]["rows"]
    final = g["held_out"]["gpt"]["budgets"][-1]["tokens_seen"]
    rows = []
    for name, row in g["held_out"].items():
        last = row["budgets"][-1]
        nll = last["nll"]
        reach = row["tokens_to_gap_bar"]
        q = quality.get(name)
        gap = ("reference" if name == "gpt"
               else f"{last['gap_to_ar']:+.1%} ± {last['gap_to_ar_stderr']:.1%}")  # fmt: skip
        rows.append([
            f"`{name}`", f"{nll['bits_per_char']:.4f} ± {nll['bits_per_char_stderr']:.4f}",
            nll["kind"], f"{nll['bits_per_token']:.3f}", gap,
            "—" if name == "gpt" else f"not within {final:,}" if reach is None else f"{reach:,}",
            f"{row['train_seconds']:.0f}",
            f"{q['gen_ppl']:.1f}" if q else "—", f"{q['entropy_bits']:.2f}" if q else "—",
        ])  # fmt: skip
    real = quality["real"]
    rows.append(["test text", "—", "—", "—", "—", "—", "—", f"{real['gen_ppl']:.1f}",
                 f"{real['entropy_bits']:.2f}"])  # fmt: skip
    ng = g["ngram"]
    rows.append([f"character {ng['order']}-gram (Witten–Bell)", f"{ng['bits_per_char']:.4f}",
                 "exact", "—", "—", "—", "—", "—", "—"])  # fmt: skip
    head = ["model", "test bits/char ± s.e.", "kind", "bits/token",
            "gap to AR, equal budget", "tokens to +12%", "train s",
            f"gen. perplexity ({g['sample_quality']['samples']} × "
            f"{g['sample_quality']['length_tokens']} tokens)", "unigram entropy (bits)"]  # fmt: skip
    return md(head, rows)


@table(TEXT_TOKENS)
def text_tokens_budgets() -> str:
    """Each arm's test bits/char (and gap to the GPT at the same budget) along its training."""
    g = load(TEXT_TOKENS)
    arms = list(g["held_out"])
    budgets = [b["tokens_seen"] for b in g["held_out"]["gpt"]["budgets"]]
    rows = []
    for i, tokens in enumerate(budgets):
        cells = [f"{tokens:,}"]
        for name in arms:
            b = g["held_out"][name]["budgets"][i]
            gap = "" if name == "gpt" else f" ({b['gap_to_ar']:+.0%})"
            cells.append(f"{b['nll']['bits_per_char']:.3f}{gap}")
        rows.append(cells)
    return md(["tokens seen", *(f"`{a}`" for a in arms)], rows)


@table(AR_GPT)
def ar_gpt_bench() -> str:
    g = load(AR_GPT)
    step, nano, ngram = g["train_step"], g["nanogpt_cpu"], g["ngram"]
    s1, s16 = (next(r for r in g["sampling"] if r["n"] == n) for n in (1, 16))

    def sampling(r: dict) -> str:
        same = "the same characters" if r["same_characters"] else "**different characters**"
        return (
            f"{r['n']} sequence{'s' if r['n'] > 1 else ''}: {r['chars_per_s_cache']:,.0f} chars/s "
            f"with the KV cache, {r['chars_per_s_no_cache']:,.0f} without ({r['speedup']:.1f}×), {same}"
        )

    rows = [
        [
            "training step vs bare loop",
            "part a",
            f"{step['genlab_ms']:.0f} ms against {step['bare_ms']:.0f} ms, ratio {step['ratio_median']:.3f} "
            f"(median of {step['rounds']} interleaved rounds of {step['steps_per_round']} steps; "
            f"rounds {step['ratio_min']:.2f}–{step['ratio_max']:.2f})",
        ],
        [f"sampling, {s1['length']} characters", "part b", f"{sampling(s1)}; {sampling(s16)}"],
        nanogpt_row(nano),
        [
            f"{ngram['order']}-gram, Witten–Bell",
            "part d",
            f"{ngram['nats_per_char']:.4f} nats/char on the {ngram['val_characters']:,} held-out characters",
        ],
    ]
    return md(["what", "`bench/autoregressive.py`", "result"], rows)


# ------------------------------------------------------------------------------------------------
# docs/diffusion.md

DIFF_FIG = "docs/figures/diffusion-figures.json"
DIFF = "bench/results/diffusion_2d.json"


@table(DIFF_FIG)
def diffusion_recipes() -> str:
    processes = load(DIFF_FIG)["processes"]
    recipes = {
        "DDPM (vp-linear, ε)": ("ddpm-moons", "ddpm"),
        "VE-SDE + PC": ("ve-pc-moons", "pc"),
        "EDM": ("edm-moons", "dpmpp-2m (Karras)"),
        "rectified flow": ("rectified-flow-moons", "heun"),
        "rectified flow + reflow": ("+ `genlab reflow` (50,000 pairs, 3,000 steps)", "euler"),
    }
    out = []
    for key, (config, sampler) in recipes.items():
        r = processes[key]
        out.append([config, sampler, f"{r['nfe']:,}", pm(r["w2"], r["w2_sd"]), f"{r['nll']:.3f}"])
    true = {r["true_nll"] for r in processes.values()}
    out.append(["the true law", "", "", "", f"{true.pop():.3f}" if len(true) == 1 else "varies"])
    return md(["config", "sampler", "NFE", "W2 (mean ± sd, 3 seeds)", "ODE NLL (nats)"], out)


DIFF_GENLAB = ["dpmpp-2m", "heun", "euler", "ddim", "ddpm", "euler-maruyama", "pc"]
DIFF_PEERS = [
    ("diffusers", "DPMSolverMultistep", "linspace (default)", "diffusers DPMSolverMultistep"),
    ("diffusers", "DDIM", "leading (default)", "diffusers DDIM"),
    ("diffusers", "DDPM", "leading (default)", "diffusers DDPM"),
    ("diffusers", "EulerDiscrete", "linspace (default)", "diffusers Euler"),
    ("diffusers", "HeunDiscrete", "linspace (default)", "diffusers Heun"),
    ("k-diffusion", "dpmpp_2m", "karras", "k-diffusion dpmpp_2m (Karras)"),
    ("k-diffusion", "euler", "karras", "k-diffusion euler (Karras)"),
    ("k-diffusion", "heun", "karras", "k-diffusion heun (Karras)"),
]


def w2_cell(cell: dict, budget: int, schedule: str | None = None) -> str:
    mean, sd = cell["mean"], cell["std"]
    text = f"{mean:.1f} ± {sd:.1f}" if mean >= 10 else pm(mean, sd)
    notes = [schedule] if schedule and schedule != "uniform" else []
    if cell["nfe"][0] != budget:
        notes.append(f"{cell['nfe'][0]} NFE")
    return text + (f" ({', '.join(notes)})" if notes else "")


def diffusion_arms() -> list[tuple[str, dict[int, tuple[dict, str | None]]]]:
    """The table's rows: genlab's best schedule per sampler and budget, then the peers' rows."""
    w = load(DIFF)["w2_vs_nfe"]
    budgets = w["budgets"]
    arms = []
    for sampler in DIFF_GENLAB:
        rows = [r for r in w["rows"] if r["lib"] == "genlab" and r["sampler"] == sampler]
        cells = {}
        for b in budgets:
            best = min(rows, key=lambda r: r["budgets"][str(b)]["mean"])
            cells[b] = (best["budgets"][str(b)], best["schedule"])
        arms.append((f"genlab {sampler}", cells))
    for lib, sampler, schedule, label in DIFF_PEERS:
        row = next(
            r
            for r in w["rows"]
            if (r["lib"], r["sampler"], r["schedule"]) == (lib, sampler, schedule)
        )
        arms.append((label, {b: (row["budgets"][str(b)], None) for b in budgets}))
    return arms


@table(DIFF)
def diffusion_samplers() -> str:
    w = load(DIFF)["w2_vs_nfe"]
    budgets = w["budgets"]
    out = [
        [label] + [w2_cell(cells[b][0], b, cells[b][1]) for b in budgets]
        for label, cells in diffusion_arms()
    ]
    main = md(["W2 at NFE ≤"] + [str(b) for b in budgets], out)
    refs = w["reference_rows"]
    ref_rows = [
        [name, pm(r["mean"], r["std"]), f"{statistics.fmean(r['nfe']):,.0f}" if "nfe" in r else ""]
        for name, r in refs.items()
    ]
    return main + "\n" + md(["reference", "W2 (mean ± sd, 3 seeds)", "NFE"], ref_rows)


@table(DIFF)
def diffusion_best() -> str:
    budgets = load(DIFF)["w2_vs_nfe"]["budgets"]
    arms = diffusion_arms()
    out = []
    for b in budgets:
        ranked = sorted(arms, key=lambda a: a[1][b][0]["mean"])
        (la, cells_a), (lb, cells_b) = ranked[0], ranked[1]
        ca, cb = cells_a[b][0], cells_b[b][0]
        mean, sd = paired(ca["w2"], cb["w2"])
        verdict = "level" if level(ca["w2"], cb["w2"]) else f"{la} better"
        out.append(
            [
                str(b),
                f"{la} {ca['mean']:.3f}",
                f"{lb} {cb['mean']:.3f}",
                f"{num(mean, 3, sign=True)} ± {sd:.3f}",
                verdict,
            ]
        )
    header = ["NFE ≤", "lowest W2", "next", "paired difference (mean ± sd over seeds)", "verdict"]
    return md(header, out)


@table(DIFF)
def diffusion_overhead() -> str:
    mlp, unet = load(DIFF)["overhead_mlp"], load(DIFF)["overhead_unet"]
    out = []
    for r in mlp["rows"]:
        out.append(
            [
                r["sampler"],
                f"{r['null_net_overhead_per_step_ms']:.3f}",
                sig(r["null_net_overhead_per_step_fraction"], 2),
                "MLP, batch 2,000",
            ]
        )
    for r in unet["rows"]:
        out.append(
            [
                r["sampler"],
                f"{r['null_net_overhead_per_step_ms']:.3f}",
                sig(r["null_net_overhead_per_step_fraction"], 2),
                f"U-Net, batch {unet['batch']:,}",
            ]
        )
    header = [
        "sampler",
        "own cost per step, ms (null network)",
        "as a fraction of one network call",
        "network",
    ]
    return md(header, out) + (
        f"\nOne call: the MLP {mlp['net_ms_median']:.1f} ms at batch {mlp['batch']:,}, "
        f"the U-Net {unet['net_ms_median']:.0f} ms at batch {unet['batch']:,}.\n"
    )


# ------------------------------------------------------------------------------------------------
# docs/gan.md

GAN = "bench/results/gan_2d.json"


@table(GAN)
def gan_seeds() -> str:
    runs = [r for r in load(GAN)["runs"] if r["loss"] == "gan"]
    seeds = sorted({r["seed"] for r in runs})
    summary = load(GAN)["summary"]
    out = []
    for data in ("grid", "ring"):
        by_seed = {r["seed"]: r for r in runs if r["data"] == data}
        s = summary[f"{data}/gan"]
        out.append(
            [f"{data}: modes"]
            + [str(by_seed[k]["modes"]) for k in seeds]
            + [f"{s['modes'][0]:.2f} ± {s['modes'][1]:.2f}"]
        )
        out.append(
            [f"{data}: high quality"]
            + [pct(by_seed[k]["high_quality"], sign=False) for k in seeds]
            + [f"{pct(s['high_quality'][0], sign=False)} ± {pct(s['high_quality'][1], sign=False)}"]
        )
        out.append(
            [f"{data}: reverse KL"]
            + [f"{by_seed[k]['reverse_kl']:.4f}" for k in seeds]
            + [pm(s["reverse_kl"][0], s["reverse_kl"][1], 4)]
        )
    return md(["`gan` + R1 (the recipes)"] + [f"seed {k}" for k in seeds] + ["mean ± s.e."], out)


@table(GAN)
def gan_losses() -> str:
    g = load(GAN)
    summary, timing = g["summary"], {r["loss"]: r for r in g["timing"]}
    seeds = {}
    for r in g["runs"]:
        seeds.setdefault((r["loss"], r["data"]), set()).add(r["seed"])

    def cell(loss: str, data: str) -> str:
        s = summary.get(f"{data}/{loss}")
        if s is None:
            return "not run"
        return (
            f"{s['modes'][0]:.2f} / {pct(s['high_quality'][0], sign=False)} ± "
            f"{pct(s['high_quality'][1], sign=False)} / {s['reverse_kl'][0]:.3f}"
        )

    out = []
    for loss in ("gan", "hinge", "wgan-gp", "wgan"):
        n = len(seeds.get((loss, "grid"), ()))
        label = f"`{loss}`" + (" + R1" if loss in ("gan", "hinge") else "")
        label += f" ({n} seeds)" if n else " (step time only)"
        tm = timing.get(loss)
        step = (
            f"{tm['ratio_median']:.3f} ({tm['genlab_ms']:.1f} vs {tm['bare_ms']:.1f} ms)"
            if tm
            else ""
        )
        out.append([label, cell(loss, "ring"), cell(loss, "grid"), step])
    header = [
        "loss (recipe)",
        "ring modes / HQ / rKL",
        "grid modes / HQ / rKL",
        "step vs bare loop (grid)",
    ]
    return md(header, out)


# ------------------------------------------------------------------------------------------------
# docs/flows.md

FLOWS = "bench/results/flows_2d.json"


@table(FLOWS)
def flows_moons() -> str:
    moons = load(FLOWS)["moons"]
    out = [
        [name, f"{m['params']:,}", f"{m['ms_per_step']:.1f}", f"{m['nll']:.3f}", f"{m['w2']:.3f}"]
        for name, m in moons["models"].items()
    ]
    out.append(["the true law", "", "", f"{moons['true_nll']:.3f}", f"{moons['perfect_w2']:.3f}"])
    return md(["model", "parameters", "ms / step", "NLL (nats)", "W2"], out)


@table(FLOWS)
def flows_tabular() -> str:
    tab = load(FLOWS)["tabular"]
    out = []
    for name, m in tab["models"].items():
        steps = m["best_step"] if isinstance(m["best_step"], list) else [m["best_step"]]
        se = m.get("test_nll_se")
        nll = num(m["test_nll"], 2) + ("" if se is None else f" ± {num(se, 2)}")
        out.append([name, f"{m['params']:,}", nll, ", ".join(f"{k:,}" for k in steps)])
    out.append(["full-covariance Gaussian", "", num(tab["gaussian_nll"], 2), ""])
    seeds = tab.get("seeds", 1)
    head = f"test NLL (nats per row, mean ± s.e., {seeds} seeds)" if seeds > 1 else "test NLL"
    return md(["model", "parameters", head, "best step (validation)"], out)


FLOWS_PAIRS = (  # (arm, other, what the difference measures)
    ("genlab-nsf-nodrop", "zuko-nsf-3t", "the flows and their defaults, both without dropout"),
    ("genlab-realnvp", "genlab-realnvp-nodrop", "dropout 0.1 (RealNVP)"),
    ("genlab-nsf", "genlab-nsf-nodrop", "dropout 0.1 (NSF)"),
    ("genlab-realnvp", "genlab-nsf", "RealNVP against NSF, both with dropout"),
)


@table(FLOWS)
def flows_tabular_pairs() -> str:
    models = load(FLOWS)["tabular"]["models"]
    out = []
    for a, b, what in FLOWS_PAIRS:
        if a not in models or b not in models or "test_nll_seeds" not in models[a]:
            continue
        xa, xb = models[a]["test_nll_seeds"], models[b]["test_nll_seeds"]
        mean, sd = paired(xa, xb)
        verdict = "level" if level(xa, xb) else (f"{a} lower" if mean < 0 else f"{b} lower")
        out.append([f"{a} − {b}", what, f"{num(mean, 2)} (sd {num(sd, 2)})", verdict])
    return md(["paired difference (same seeds)", "what it measures", "test NLL, nats",
               "verdict"], out)  # fmt: skip


@table(FLOWS)
def flows_images() -> str:
    images = load(FLOWS)["images"]
    out = [
        [
            name,
            f"{m['seconds']:.0f} s",
            f"{m['steps']:,}",
            f"{m['bits_per_dim']:.3f}",
            m["kind"],
            f"{m.get('n_test', m.get('n_val')):,} ({m.get('split', 'val')})",
        ]
        for name, m in images.items()
    ]
    return md(["recipe", "budget", "steps", "bits/dim", "kind", "held-out images (split)"], out)


# ------------------------------------------------------------------------------------------------
# docs/flow-matching.md

FM = "bench/results/flow_matching_2d.json"
FM_STEPS = "bench/results/flow_matching_2d_steps.json"


@table(FM)
def fm_w2() -> str:
    w = load(FM)["w2_vs_nfe"]
    labels = {
        "genlab": "genlab, independent",
        "torchcfm-cfm": "torchcfm CFM",
        "genlab-ot": "genlab, OT coupling",
        "torchcfm-exactot": "torchcfm ExactOT",
    }
    keys = ["euler-1", "euler-2", "euler-5", "euler-10", "euler-100", "dopri5"]
    out = []
    for name, label in labels.items():
        s = w["methods"][name]["samplers"]
        cells = [pm(s[k]["mean"], s[k]["std"]) for k in keys]
        cells[-1] += f" (NFE {statistics.fmean(s['dopri5']['nfe']):.0f})"
        out.append([label] + cells)
    perfect = w["methods"]["perfect model"]
    out.append(["i.i.d. draws of the true law"] + [""] * 5 + [pm(perfect["mean"], perfect["std"])])
    return md(["method", "1 step", "2", "5", "10", "100", "dopri5"], out)


@table(FM)
def fm_paired() -> str:
    diffs = load(FM)["w2_vs_nfe"]["paired_differences"]
    keys = ["euler-1", "euler-2", "euler-5", "euler-10", "euler-100", "dopri5"]
    out = []
    for pair, by in diffs.items():
        cells = []
        for k in keys:
            d = by[k]
            verdict = "level" if abs(d["mean"]) < 2 * d["std"] else ""
            cells.append(
                f"{num(d['mean'], 3, sign=True)} ± {d['std']:.3f}"
                + (f" {verdict}" if verdict else "")
            )
        out.append([pair] + cells)
    return md(
        [
            "paired W2 difference (mean ± sd over 3 seeds)",
            "1 step",
            "2",
            "5",
            "10",
            "100",
            "dopri5",
        ],
        out,
    )


@table(FM, FM_STEPS)
def fm_step_time() -> str:
    out = []
    for path in (FM, FM_STEPS):
        for res in load(path)["step_time"]:
            rows = {r["variant"]: r for r in res["rows"]}

            def cell(v: str, res: dict = res, rows: dict = rows) -> str:
                r = rows[v]
                threads = r.get("torch_threads", res["threads"])
                return f"{r['ratio_to_floor_median']:.2f}x ({r['ms_per_step_median']:.2f} ms, {threads} thr.)"

            out.append(
                [
                    f"`{Path(path).name}`, {res['threads']} thread(s), {res['rounds']} rounds",
                    cell("floor"),
                    cell("genlab"),
                    cell("genlab-ot"),
                    cell("torchcfm-cfm"),
                    cell("torchcfm-exactot"),
                ]
            )
    header = ["run", "floor", "genlab", "genlab-ot", "torchcfm-cfm", "torchcfm-exactot"]
    return md(header, out)


# ------------------------------------------------------------------------------------------------
# docs/two-stage.md

TWO = "bench/results/two_stage.json"
TWO_FIG = "docs/figures/two-stage.json"


@table(TWO)
def two_stage_stage1() -> str:
    stage1 = load(TWO)["stage1"]
    labels = {
        "vqgan": "`vqgan-mnist` (L1 + 0.1 perceptual, discriminator from step 500)",
        "vqvae": "`vqvae-mnist` with `model.channels=16` (MSE loss, no discriminator)",
        "kl-autoencoder": "`kl-autoencoder-mnist` (latent 4×7×7)",
    }
    out = []
    for key, label in labels.items():
        r = stage1[key]
        m = r["metrics"]
        codes = "—"
        if "codebook_usage" in m:
            codes = (
                f"{pct(m['codebook_usage']['value'], 0, sign=False)} used, "
                f"perplexity {m['perplexity']['value']:.0f}"
            )
        out.append(
            [
                label,
                f"{r['steps']:,} steps, {r['seconds']:.0f} s",
                f"{m['reconstruction_mse']['value']:.4f}",
                codes,
            ]
        )
    return md(["stage 1", "training", "reconstruction MSE", "codes (held out)"], out)


@table(TWO)
def two_stage_pipelines() -> str:
    pipes = load(TWO)["pipelines"]
    labels = {
        "pixel diffusion": "pixel-space diffusion (`ddpm-cfg-mnist`, U-Net on 28×28)",
        "latent diffusion": "latent diffusion (`ldm-mnist` on the KL autoencoder, U-Net on 4×7×7)",
        "vqgan + prior": "VQGAN + transformer prior (`vqgan-prior-mnist`)",
        "latent diffusion, captions": "latent diffusion, captions (`ldm-caption-mnist`, guidance 3)",
    }
    out = []
    for key, label in labels.items():
        r = pipes[key]
        m = r["metrics"]
        total = r["seconds"] + (r.get("stage1_seconds") or 0.0)
        out.append(
            [
                label,
                f"{r['steps']:,} ({r['seconds']:.0f} s)",
                f"{r.get('stage1_seconds') or 0:.0f} s",
                f"{total:.0f} s",
                f"{m['fd']['value']:.1f}",
                f"{m['precision']['value']:.2f} / {m['recall']['value']:.2f}",
                f"{m['class_accuracy']['value']:.3f}",
                f"{1000 * r['seconds_per_image']:.1f}",
            ]
        )
    floor = pipes["latent diffusion"]["metrics"]
    header = [
        "pipeline",
        "stage-2 steps (seconds)",
        "stage 1",
        "total CPU seconds",
        f"FD (floor {floor['fd']['floor']:.1f})",
        f"precision / recall (floor {floor['precision']['floor']:.2f} / {floor['recall']['floor']:.2f})",
        f"class accuracy (floor {floor['class_accuracy']['floor']:.3f})",
        "sampling, ms / image",
    ]
    return md(header, out)


TWO_TEST = "bench/results/two_stage-test.json"


@table(TWO_TEST)
def two_stage_test_split() -> str:
    pipes = load(TWO_TEST)["pipelines"]
    labels = {
        "pixel diffusion": "pixel-space diffusion (`ddpm-cfg-mnist`)",
        "latent diffusion": "latent diffusion (`ldm-mnist`, KL autoencoder)",
        "vqgan + prior": "VQGAN + transformer prior (`vqgan-prior-mnist`)",
    }
    out = []
    for key, label in labels.items():
        r = pipes[key]
        m = r["metrics"]
        out.append(
            [
                label,
                f"{r['stage1_seconds']:.0f} + {r['seconds']:.0f} = {r['total_seconds']:.0f} s",
                f"{r['steps']:,}",
                f"{m['fd']['value']:.1f} ± {m['fd']['std']:.1f}",
                f"{m['precision']['value']:.3f} / {m['recall']['value']:.3f}",
                f"{m['class_accuracy']['value']:.3f}",
                f"{1000 * r['seconds_per_image']:.1f}",
            ]
        )
    floor = pipes["pixel diffusion"]["metrics"]
    header = [
        "pipeline",
        "training: stage 1 + stage 2",
        "stage-2 steps",
        f"FD ± sd over seeds (floor {floor['fd']['floor']:.1f})",
        f"precision / recall (floor {floor['precision']['floor']:.2f} / "
        f"{floor['recall']['floor']:.2f})",
        f"class accuracy (floor {floor['class_accuracy']['floor']:.3f})",
        "sampling, ms / image",
    ]
    return md(header, out)


@table(TWO_FIG)
def two_stage_sampling() -> str:
    record = load(TWO_FIG)
    labels = {
        "prior": "`vqgan-prior`",
        "ldm": "`ldm` (MLP on the 16-d latent)",
        "pixel": "pixel-space `diffusion` (the ddpm-cfg-mnist U-Net)",
    }
    out = []
    for key, label in labels.items():
        r = record[key]
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        out.append(
            [label, opts, str(r["nfe"]), f"{1000 * r['seconds_per_image']:.1f}", str(r["images"])]
        )
    return md(["model", "options", "NFE", "ms / image", "images"], out)


# ------------------------------------------------------------------------------------------------
# docs/latent.md

LATENT = "bench/results/latent.json"


@table(LATENT)
def latent_vae() -> str:
    vae = load(LATENT)["vae"]
    rows = [
        ("ELBO (VAE)", "genlab", "genlab_vae", f"{vae['published']['vae']:.2f}"),
        ("ELBO (VAE)", "pythae", "pythae_vae", ""),
        (
            f"IWAE-{vae['train_k_iwae']}",
            "genlab",
            "genlab_iwae",
            f"{vae['published']['iwae']:.2f} (IWAE-50)",
        ),
        (f"IWAE-{vae['train_k_iwae']}", "pythae", "pythae_iwae", ""),
    ]
    out = []
    for objective, lib, key, published in rows:
        r = vae[key]
        out.append(
            [
                objective,
                lib,
                pm(r["elbo"]["nll"], r["elbo"]["stderr"], 2),
                pm(r["iwae"]["nll"], r["iwae"]["stderr"], 2),
                published,
            ]
        )
    k = vae["genlab_vae"]["k"]
    return md(
        ["objective", "library", "−ELBO", f"IWAE-{k:,} NLL (nats)", "Burda et al., 60k images"], out
    )


@table(LATENT)
def latent_speed() -> str:
    speed = load(LATENT)["speed"]
    out = []
    for key, label in (("vae", "ELBO"), ("iwae", "IWAE-5")):
        s = speed[key]
        ms = s["ms_per_step"]
        out.append(
            [
                label,
                f"{ms['genlab']:.1f}",
                f"{ms['pythae']:.1f}",
                f"{ms['bare']:.1f}",
                f"{s['pythae_over_genlab']:.2f}×",
                f"{s['genlab_over_bare']:.2f}",
            ]
        )
    header = [
        "objective",
        "genlab ms/step",
        "pythae",
        "bare step",
        "pythae / genlab",
        "genlab / bare",
    ]
    return md(header, out)


@table(LATENT)
def latent_vqvae() -> str:
    vq = load(LATENT)["vqvae"]
    labels = {
        "ema+kmeans+restarts": "EMA + k-means initialization + dead-code restarts (the recipe)",
        "ema only": "EMA alone",
        "codebook loss only": "codebook loss alone (the original VQ-VAE)",
    }
    out = [
        [
            label,
            f"{vq[k]['reconstruction_mse']:.4f}",
            pct(vq[k]["codebook_usage"], 1, sign=False),
            f"{vq[k]['perplexity']:.1f}",
            f"{vq[k]['seconds']:.0f} s",
        ]
        for k, label in labels.items()
    ]
    return md(["codebook", "MSE", "codes used (of 512)", "perplexity", "training"], out)


# ------------------------------------------------------------------------------------------------
# docs/metrics.md

EVAL_IMAGES = "bench/results/eval_images.json"
METRIC_ARROWS = {"lower": "↓", "higher": "↑"}


def metric_value(x: float, err: float | None = None) -> str:
    nd = 0 if abs(x) >= 1000 else 1 if abs(x) >= 10 else 3
    text = num(x, nd)
    if err is not None:
        text += f" ± {num(err, nd)}"
    return text


def ranking_table(keys: list[str]) -> str:
    """One column per (setting, row) of bench/eval_images.py's ranking, one row per metric."""
    ranking = load(EVAL_IMAGES)["ranking"]
    first = ranking[keys[0]]["rows"]
    some = next(iter(first.values()))
    metrics = list(some["floor"])
    columns: list[tuple[str, dict, bool]] = []
    for key in keys:
        guidance = ranking[key]["options"].get("guidance")
        for name, row in ranking[key]["rows"].items():
            if name == "gaussian noise" and guidance is not None:
                continue
            label = name if guidance is None else f"{name}, guidance {guidance:g}"
            spread = row.get("std") is not None and row.get("seeds", 1) > 1  # 1 seed: no ±
            columns.append((label, row, spread))
    out = []
    for m in metrics:
        floor_sd = (some.get("floor_std") or {}).get(m) if some.get("seeds", 1) > 1 else None
        floor = metric_value(some["floor"][m], floor_sd)
        cells = [
            metric_value(r["metrics"][m], r["std"][m] if has_std else None)
            if m in r["metrics"]
            else "–"
            for _, r, has_std in columns
        ]
        out.append([f"{m} {METRIC_ARROWS[some['better'][m]]}", floor] + cells)
    return md(["metric", "real (floor)"] + [c[0] for c in columns], out)


@table(EVAL_IMAGES)
def metrics_mnist() -> str:
    return ranking_table(["mnist, recipe", "mnist, guidance 1"])


@table(EVAL_IMAGES)
def metrics_digits() -> str:
    return ranking_table(["digits, recipe", "digits, guidance 1"])


@table("bench/results/cli_eval.json")
def eval_wait_text() -> str:
    data = load("bench/results/cli_eval.json")
    out = []
    for row in data["rows"]:
        b, d = row["bounded"], row["default"]
        out.append([f"`{row['recipe']}`", num(b["seconds"], 1), str(b["progress_lines"]),
                    num(d["seconds"], 1), str(d["progress_lines"])])  # fmt: skip
    n = f"{data['nll_n']:,}"
    return md(["recipe (full size)", f"`--nll-n {n}`: seconds", "progress lines",
               "default (whole test split): seconds", "progress lines"], out)  # fmt: skip


LEADERBOARD_DIGITS = "bench/results/leaderboard-digits-30min.json"


@table(LEADERBOARD_DIGITS)
def leaderboard_digits() -> str:
    data = load(LEADERBOARD_DIGITS)
    rows = sorted(data["rows"], key=lambda r: (r["rank_value"] is None, r["rank_value"] or 0.0))
    out = []
    for rank, r in enumerate(rows, 1):
        fd = "—" if r["rank_value"] is None else sig(r["rank_value"], 4)
        floor = "—" if r["rank_floor"] is None else sig(r["rank_floor"], 3)
        if r["nll_nats"] is None:
            nll = "n/a"
        else:
            se = f" ± {sig(r['nll_stderr'], 2)}" if r["nll_stderr"] else ""
            nll = f"{sig(r['nll_nats'], 4)}{se} ({r['nll_kind']})"
        out.append([str(rank), r["family"], fd, floor, nll, f"{r['steps']:,}",
                    num(r["seconds"] / 60, 1), r["split"] or "—", r["status"]])  # fmt: skip
    for e in data["plan"]["skipped"]:
        out.append(["—", e["family"], "—", "—", "—", "—", "—", "—", f"skipped: {e['reason']}"])
    head = ["rank", "family", "FD ↓", "FD floor", "NLL, nats (kind)", "steps", "minutes",
            "measured on", "status"]  # fmt: skip
    return md(head, out)


IMAGE_FOLDER = "bench/results/image_folder.json"


def start_cells(r: dict) -> list[str]:
    """Seconds to step 1, seconds in all and peak RSS of one start (bench/image_folder.py's
    ``start``)."""
    first = r["seconds_to_step_1"]
    return ["—" if first is None else num(first, 1), num(r["seconds_total"], 0),
            f"{r['peak_rss_mib']:,.0f}"]  # fmt: skip


@table(IMAGE_FOLDER)
def image_folder() -> str:
    """Two starts of the DDPM recipe on the generated folder, genlab and the baseline revision."""
    data = load(IMAGE_FOLDER)
    arms = [("genlab (images as uint8, the folder cached)", data["genlab"])]
    if "baseline" in data:
        rev = data["baseline"]["revision"][:7]
        arms.append(
            (f"before (`{rev}`: float32, decoded at every start)", data["baseline"]["runs"])
        )
    out = []
    for label, runs in arms:
        for r in runs:
            start = r["start"] if runs is data["genlab"] else r["start"].split(" ")[0]
            out.append([label, start, *start_cells(r)])
    head = ["code", "start", "s to step 1", f"s for {data['steps']} steps", "peak RSS, MiB"]
    sizes = (
        f"{data['images']:,} RGB PNGs at {data['size']}×{data['size']}: "
        f"{data['folder_bytes'] / 2**20:,.0f} MiB of files, "
        f"{data['uint8_bytes'] / 2**20:,.0f} MiB as uint8, "
        f"{data['float32_bytes'] / 2**20:,.0f} MiB as float32."
    )
    return sizes + "\n\n" + md(head, out)


TEXT_FILE = "bench/results/text_file.json"


@table(TEXT_FILE)
def text_file() -> str:
    """Two starts of the GPT recipe on the generated 1 GB text, per tokenizer."""
    data = load(TEXT_FILE)
    out = []
    for tok, runs in data["runs"].items():
        files = sum(runs[-1].get("token_file_bytes", {}).values())
        for r in runs:
            out.append([f"`{tok}`", r["start"], *start_cells(r), f"{files / 2**20:,.0f}"])
    head = ["tokenizer", "start", "s to step 1", f"s for {data['steps']} steps", "peak RSS, MiB",
            "token files, MiB"]  # fmt: skip
    sizes = (
        f"{data['text_bytes'] / 2**20:,.0f} MiB of UTF-8 text, {data['text_chars']:,} characters; "
        f"{data['int64_char_tokens_bytes'] / 2**20:,.0f} MiB as int64 character tokens."
    )
    return sizes + "\n\n" + md(head, out)


PEERS_DDPM = "bench/results/peers-ddpm.json"


@table(PEERS_DDPM)
def peers_ddpm() -> str:
    """Each arm at each NFE: FD, precision and recall over seeds (mean ± sd), beside the floor;
    steps, training seconds, sampling speed, peak memory, and the interleaved step time."""
    data = load(PEERS_DDPM)
    arms = list(data["params"])
    out = []
    for arm in arms:
        runs = [r for r in data["runs"] if r["arm"] == arm]
        for nfe in map(str, data["nfe"]):
            cells = [r["samples"][nfe] for r in runs]

            def stat(metric: str, digits: int, cells=cells) -> str:
                vals = [c[metric]["value"] for c in cells]
                sd = f" ± {num(statistics.stdev(vals), digits)}" if len(vals) > 1 else ""
                return num(statistics.mean(vals), digits) + sd

            out.append([
                arm, f"{data['params'][arm]:,}", nfe, stat("fd", 1),
                num(cells[0]["fd"]["floor"], 1), stat("precision", 3), stat("recall", 3),
                " / ".join(f"{r['steps']:,}" for r in runs),
                num(statistics.mean(r["train_seconds"] for r in runs), 0),
                num(statistics.mean(c["images_per_s"] for c in cells), 1),
                num(data["ms_per_step"][arm], 0),
                num(max(r["peak_rss_mb"] for r in runs), 0),
            ])  # fmt: skip
    head = ["arm", "parameters", "NFE", "FD ↓", "FD floor", "precision ↑", "recall ↑",
            "steps (per seed)", "training s", "images/s", "ms/step", "peak RSS, MB"]  # fmt: skip
    return md(head, out)


PEERS_FM = "bench/results/peers-fm.json"


def _fm_point(point: str) -> str:
    return f"Euler, {point}" if ":" not in point else f"2nd order, ~{point.split(':')[1]}"


def _seed_stat(cells: list[dict], metric: str, digits: int) -> str:
    vals = [c[metric]["value"] for c in cells]
    sd = f" ± {num(statistics.stdev(vals), digits)}" if len(vals) > 1 else ""
    return num(statistics.mean(vals), digits) + sd


@table(PEERS_FM)
def peers_fm() -> str:
    """FD (and precision / recall) of each arm at each sampling point, with the NFE each used."""
    data = load(PEERS_FM)
    arms = list(data["params"])
    out = []
    for point in data["nfe"]:
        row = [_fm_point(point)]
        for arm in arms:
            cells = [r["samples"][point] for r in data["runs"] if r["arm"] == arm]
            nfe = statistics.mean(c["nfe"] for c in cells)
            row.append(f"{_seed_stat(cells, 'fd', 1)} ({num(nfe, 0)} NFE)")
        for arm in arms:
            cells = [r["samples"][point] for r in data["runs"] if r["arm"] == arm]
            row.append(f"{_seed_stat(cells, 'precision', 2)} / {_seed_stat(cells, 'recall', 2)}")
        out.append(row)
    floor = data["runs"][0]["samples"][data["nfe"][0]]["fd"]["floor"]
    head = ["solver, NFE", *(f"{a}: FD ↓" for a in arms),
            *(f"{a}: precision / recall ↑" for a in arms)]  # fmt: skip
    return (
        md(head, out)
        + f"\nFD of real test images against training images (the floor): {num(floor, 1)}.\n"
    )


@table(PEERS_FM)
def peers_fm_runs() -> str:
    """Per arm: parameters, steps, training seconds, sampling speed, step time, peak memory."""
    data = load(PEERS_FM)
    out = []
    for arm, params in data["params"].items():
        runs = [r for r in data["runs"] if r["arm"] == arm]
        speed = [r["samples"]["20"]["images_per_s"] for r in runs if "20" in r["samples"]]
        out.append([
            arm, f"{params:,}", " / ".join(f"{r['steps']:,}" for r in runs),
            num(statistics.mean(r["train_seconds"] for r in runs), 0),
            num(statistics.mean(speed), 1) if speed else "–",
            num(data["ms_per_step"][arm], 0), num(max(r["peak_rss_mb"] for r in runs), 0),
        ])  # fmt: skip
    head = ["arm", "parameters", "steps (per seed)", "training s", "images/s at 20 NFE",
            "ms/step (interleaved)", "peak RSS, MB"]  # fmt: skip
    return md(head, out)


def fm_likelihood(run: dict) -> dict:
    """genlab's and flow_matching's bits/dim on the same images and model: means, standard errors
    over images, the paired difference with its standard error, and each estimator's mean
    standard error over its Hutchinson probes (per image)."""
    lk = run["likelihood"]
    g, f = lk["genlab"], lk["flow_matching"]
    n = len(g)
    d = [a - b for a, b in zip(g, f, strict=True)]

    def se(v: list[float]) -> float:
        return statistics.stdev(v) / math.sqrt(len(v))

    probe = {
        k: statistics.fmean(lk[f"{k}_se"]) for k in ("genlab", "flow_matching") if f"{k}_se" in lk
    }
    return {"n": n, "genlab": statistics.fmean(g), "genlab_se": se(g),
            "flow_matching": statistics.fmean(f), "flow_matching_se": se(f),
            "diff": statistics.fmean(d), "diff_se": se(d), "probe_se": probe}  # fmt: skip


def _fm_likelihood_table(path: str) -> str:
    """Per seed: the estimators' bits/dim of the same test images under genlab's model; with
    genlab's estimate from t_lo = 0 beside it where the JSON holds one."""
    data = load(path)
    runs = [r for r in data["runs"] if "likelihood" in r]
    t0 = all("genlab_t0" in r["likelihood"] for r in runs)
    out = []
    for run in runs:
        s, lk = fm_likelihood(run), run["likelihood"]
        probes = (f"{num(s['probe_se']['genlab'], 3)} / {num(s['probe_se']['flow_matching'], 3)}"
                  if len(s["probe_se"]) == 2 else "–")  # fmt: skip
        row = [str(run["seed"]), str(s["n"]), pm(s["genlab"], s["genlab_se"], 3)]
        if t0:
            z = fm_likelihood({"likelihood": {**lk, "genlab": lk["genlab_t0"]}})
            row.append(pm(z["genlab"], z["genlab_se"], 3))
        row += [pm(s["flow_matching"], s["flow_matching_se"], 3), pm(s["diff"], s["diff_se"], 3)]
        if t0:
            row.append(pm(z["diff"], z["diff_se"], 3))
        row += [probes, f"{num(lk['genlab_seconds'], 0)} / {num(lk['flow_matching_seconds'], 0)}"]
        out.append(row)
    head = ["seed", "test images", "genlab `log_prob`, bits/dim"]
    if t0:
        head.append("genlab from `t_lo = 0`")
    head += ["flow_matching `compute_likelihood`, bits/dim", "paired difference"]
    if t0:
        head.append("paired difference, `t_lo = 0`")
    head += ["probe noise per image (genlab / flow_matching)", "seconds (genlab / flow_matching)"]
    return md(head, out)


@table(PEERS_FM)
def peers_fm_likelihood() -> str:
    """Per seed of the pair's run: the two estimators on genlab's trained model."""
    return _fm_likelihood_table(PEERS_FM)


PEERS_FM_LIKELIHOOD = "bench/results/peers-fm-likelihood.json"


@table(PEERS_FM_LIKELIHOOD)
def peers_fm_likelihood_t0() -> str:
    """The same, with genlab's estimate from t_lo = 0 (flow_matching's interval) beside it."""
    return _fm_likelihood_table(PEERS_FM_LIKELIHOOD)


PEERS_VAE = "bench/results/peers-vae.json"


def _mean_se(v: list[float]) -> tuple[float, float]:
    return statistics.fmean(v), statistics.stdev(v) / math.sqrt(len(v))


@table(PEERS_VAE)
def peers_vae() -> str:
    """Per seed and arm: test ELBO and IWAE-5000 (mean ± standard error over the test images),
    and the paired difference in IWAE-5000 from genlab's arm with the same objective."""
    data = load(PEERS_VAE)
    runs = {(r["seed"], r["arm"]): r for r in data["runs"]}
    out = []
    for (seed, arm), r in runs.items():
        lk = r["likelihood"]
        ref = runs.get((seed, "genlab-" + arm.split("-")[1]))
        if ref is r or ref is None:
            diff = "–"
        else:
            d = [a - b for a, b in zip(lk["iwae"], ref["likelihood"]["iwae"], strict=True)]
            diff = pm(*_mean_se(d), 2)
        out.append([
            str(seed), arm, "ELBO" if arm.endswith("vae") else "IWAE-5", f"{r['steps']:,}",
            num(r["train_seconds"], 0), pm(*_mean_se(lk["elbo"]), 2),
            pm(*_mean_se(lk["iwae"]), 2), diff,
        ])  # fmt: skip
    n, k = data["runs"][0]["likelihood"]["n"], data["runs"][0]["likelihood"]["k"]
    head = ["seed", "arm", "trained on", "steps", "training s", f"test ELBO, nats ↑ ({n} images)",
            f"test IWAE-{k}, nats ↑", "IWAE − genlab's, paired"]  # fmt: skip
    return md(head, out)


@table(PEERS_VAE)
def peers_vae_runs() -> str:
    """Per arm: parameters, step time in interleaved rounds, peak memory; and pythae's own
    ``get_nll`` beside genlab's estimator on the same first test images of pythae's models."""
    data = load(PEERS_VAE)
    out = []
    for arm, params in data["params"].items():
        runs = [r for r in data["runs"] if r["arm"] == arm]
        checks = []
        for r in runs:
            own = r["likelihood"].get("pythae_get_nll")
            if own:
                mine = statistics.fmean(r["likelihood"]["iwae"][: own["n"]])
                checks.append(f"{num(own['mean_log_p'], 2)} vs {num(mine, 2)}")
        out.append([
            arm, f"{params:,}", num(data["ms_per_step"][arm], 2),
            num(max(r["peak_rss_mb"] for r in runs), 0), "; ".join(checks) or "–",
        ])  # fmt: skip
    head = ["arm", "parameters", "ms/step (interleaved)", "peak RSS, MB",
            "pythae `get_nll` vs genlab's IWAE on the first test images (per seed)"]  # fmt: skip
    return md(head, out)


# ------------------------------------------------------------------------------------------------
# bench/README.md


@table(*WRITERS)
def bench_provenance() -> str:
    out = []
    for path, script in WRITERS.items():
        record = load(path)
        machine = record.get("machine") if isinstance(record, dict) else None
        machine = machine if isinstance(machine, dict) else {}
        date = str(machine.get("date") or record.get("when") or "")[:10] or "not recorded"
        head = machine.get("genlab_git_head")
        dirty = machine.get("genlab_src_dirty")
        if head is None:
            state = "**no machine record** (no commit, no dirty flag)"
        elif dirty:
            state = "**`src/` had uncommitted changes**"
        else:
            state = "clean"
        merged = len(record.get("earlier", [])) if isinstance(record, dict) else 0
        note = f"; {merged} earlier invocation(s) merged" if merged else ""
        out.append(
            [
                f"`{path}`",
                f"`{script}`",
                date,
                f"`{head[:7]}`" if head else "—",
                state + note,
            ]
        )
    return md(["JSON", "written by", "date", "commit", "tree"], out)


# ------------------------------------------------------------------------------------------------
# the command


def documents() -> list[Path]:
    """The markdown files that may hold generated blocks."""
    return [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def regenerate(text: str, where: str) -> tuple[str, list[str]]:
    """``text`` with every block regenerated, and the problems found (unknown or unclosed blocks)."""
    problems: list[str] = []
    opened = [m.group("name") for m in OPEN.finditer(text)]
    closed = [m.group("name") for m in BLOCK.finditer(text)]
    if len(opened) != len(closed) or text.count("<!-- /table -->") != len(closed):
        problems.append(f"{where}: a table block is not closed, or a closing marker has no block")

    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            problems.append(f"{where}: no table function {name!r} in docs/make_tables.py")
            return m.group(0)
        return f"<!-- table: {name} -->\n{render(name)}<!-- /table -->"

    return BLOCK.sub(one, text), problems


def display(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def blocks(path: Path) -> list[str]:
    """The names of the generated blocks in ``path``."""
    return [m.group("name") for m in BLOCK.finditer(path.read_text(encoding="utf-8"))]


def check(paths: list[Path] | None = None) -> list[str]:
    """Every generated block that differs from what its JSON gives, and every malformed block
    (one line each); empty when the docs are current."""
    found: list[str] = []
    for path in paths or documents():
        where = display(path)
        text = path.read_text(encoding="utf-8")
        new, problems = regenerate(text, where)
        found += problems
        if new != text:
            old_blocks = {m.group("name"): m.group(0) for m in BLOCK.finditer(text)}
            for m in BLOCK.finditer(new):
                if old_blocks.get(m.group("name")) != m.group(0):
                    found.append(f"{where}: table {m.group('name')!r} differs from its JSON")
    return found


def update(paths: list[Path] | None = None) -> tuple[list[str], list[str]]:
    """Rewrite every generated block; the files changed, and the problems (as ``check``)."""
    changed: list[str] = []
    problems: list[str] = []
    for path in paths or documents():
        where = display(path)
        text = path.read_text(encoding="utf-8")
        new, found = regenerate(text, where)
        problems += found
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(where)
    return changed, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    p.add_argument("--list", action="store_true", help="every table, its JSON and the writer")
    args = p.parse_args(argv)
    if args.list:
        used = {n: [display(d) for d in documents() if n in blocks(d)] for n in TABLES}
        for name, fn in TABLES.items():
            srcs = ", ".join(f"{s} ({WRITERS[s]})" for s in fn.sources)  # type: ignore[attr-defined]
            print(f"{name}: {srcs}; in {', '.join(used[name]) or 'no document'}")
        return 0
    if args.check:
        found = check()
        for line in found:
            print(line)
        return 1 if found else 0
    changed, problems = update()
    for where in changed:
        print(f"rewrote {where}")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
