"""Figures of docs/text.md from bench/text.py's results, and samples from its trained runs.

    python docs/make_text_figures.py [--results bench/results/text.json] [--runs DIR]

Writes docs/figures/text.png: (left) the held-out bits per character of each model, the
diffusion models' bounds with their standard errors, against the autoregressive reference and
the issue's +12% bar; (middle) the BD3-LM(4) weights scored with other block sizes; (right) MDLM
samples per second against the number of steps, with and without reusing the network's output.
With ``--runs`` (the bench's ``--runs`` folder), also docs/figures/text-samples.png and
docs/figures/text-samples.json: an MDLM infill and the start of a BD3-LM sample past its context,
drawn with seed 0. With the bench's results at other budgets (``--budgets``, by default
bench/results/text-{375,750,9000,12000,20000,restart*}.json where they exist), docs/figures/text-budget.png:
the validation curves of the runs trained with validation and the held-out figures against the budget."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
TEMPLATE = "ROMEO:\nO, ______ my love, ______ ______.\n\nJULIET:\n______ ______ ___ ______."


def bench_figure(results: dict, out: Path) -> None:
    rows, ref = results["held_out"], results["ar_reference"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    names = sorted(rows, key=lambda n: rows[n]["nll"]["bits_per_char"])
    bits = [rows[n]["nll"]["bits_per_char"] for n in names]
    errs = [rows[n]["nll"].get("bits_per_char_stderr") or 0.0 for n in names]
    colors = ["tab:gray" if n.startswith("gpt") else "tab:blue" for n in names]
    ax.bar(names, bits, yerr=errs, color=colors, capsize=4)
    ar = rows[ref]["nll"]["bits_per_char"]
    ax.axhline(ar, color="k", ls="--", lw=1, label=f"{ref} (exact NLL)")
    ax.axhline(ar * 1.12, color="tab:red", ls=":", lw=1, label="AR + 12% (the bar)")
    for i, n in enumerate(names):
        ax.text(i, bits[i] + 0.03, f"{bits[i]:.3f}\n{rows[n]['gap_to_ar']:+.0%}", ha="center",
                va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylim(min(bits) * 0.8, max(bits) * 1.12)
    ax.set_ylabel("held-out bits/char (diffusion: bound)")
    ax.set_title(f"{results['steps']} steps each, one backbone")
    ax.legend(fontsize=8, loc="upper left")
    ax.tick_params(axis="x", labelsize=8, labelrotation=30)

    ax = axes[1]
    sizes = results.get("one_model_block_sizes", [])
    if sizes:
        xs = [s["block_size"] for s in sizes]
        ys = [s["nll"]["bits_per_char"] for s in sizes]
        es = [s["nll"].get("bits_per_char_stderr") or 0.0 for s in sizes]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("block size at evaluation (trained with 4)")
        ax.set_ylabel("held-out bits/char")
        ax.set_title("one BD3-LM: 1 = exact AR, window = MDLM bound")

    ax = axes[2]
    speed = results.get("sampling", {}).get("mdlm", [])
    if speed:
        steps = [r["steps"] for r in speed]
        ax.plot(steps, [r["samples_per_s_cache"] for r in speed], "o-", label="reuse unchanged")
        ax.plot(steps, [r["samples_per_s_no_cache"] for r in speed], "s--", label="recompute")
        for r in speed:
            ax.annotate(f"{r['speedup']:.1f}x", (r["steps"], r["samples_per_s_cache"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(f"samples/s (n = 1, {speed[0]['length']} characters)")
        ax.set_title("MDLM: reusing the output when nothing changed")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def budget_figure(results: list[dict], out: Path) -> None:
    """(left) The validation loss against steps of every model trained with validation, each
    one's best marked (the weights evaluated); (right) the held-out figure of each model at every
    budget measured, against the best autoregressive one and the +12% bar. Rows a JSON took from
    another (``--ar-from``) are drawn from their own JSON only."""
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.4))
    ax = axes[0]
    for r in sorted(results, key=lambda r: r["steps"]):
        for name, row in r["held_out"].items():
            if not row.get("val_curve") or "from" in row:
                continue
            before = row.get("init_from", {}).get("steps", 0)  # a continuation starts there
            steps, vals = zip(*((before + s, v) for s, v in row["val_curve"]), strict=True)
            (line,) = ax.plot(steps, vals, "o-", ms=2,
                              label=f"{name}, {before + r['steps']:,}-step budget")  # fmt: skip
            best = min(range(len(vals)), key=vals.__getitem__)
            ax.plot(steps[best], vals[best], "*", ms=12, color=line.get_color())
    epochs = 1000 * 4096 / 1.0e6  # characters seen / the training split's
    ax.set_xlabel(f"step (4,096 characters each; 1,000 steps ≈ {epochs:.0f} epochs)")
    ax.set_ylabel("validation loss, nats/char (diffusion: bound)")
    ax.set_title("the AR model overfits, masked diffusion still improves (★: best)")
    ax.legend(fontsize=7)
    ax = axes[1]
    by_model: dict[str, list[tuple[int, float, float]]] = {}
    restarted: set[str] = set()
    for r in results:
        for name, row in r["held_out"].items():
            if "from" in row:  # another budget's reference, drawn from its own JSON
                continue
            nll = row["nll"]
            before = row.get("init_from", {}).get("steps", 0)
            series = re.sub(
                r"-restart\d*$", "", name
            )  # a restart continues the run it started from
            if "init_from" in row:
                restarted.add(series)
            by_model.setdefault(series, []).append(
                (before + r["steps"], nll["bits_per_char"], nll.get("bits_per_char_stderr") or 0.0)
            )
    best_ar = min(b for n, pts in by_model.items() if n.startswith("gpt") for _, b, _ in pts)
    for i, (name, pts) in enumerate(sorted(by_model.items())):
        pts.sort()  # tab20: more models than the default cycle's ten colours
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                    marker="o", capsize=3, color=plt.cm.tab20(i % 20),
                    label=f"{name} (+ restarts)" if name in restarted else name)  # fmt: skip
    ax.axhline(best_ar * 1.12, color="tab:red", ls=":", lw=1, label="best AR + 12% (the bar)")
    ax.set_xscale("log")
    ax.set_xlabel("training steps (budget)")
    ax.set_ylabel("held-out bits/char at the best weights")
    ax.set_title("held-out figure against the budget")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def samples_figure(runs: Path, out: Path) -> dict:
    import genlab
    from genlab.data.text import decode

    record = {"seed": 0}
    texts = []
    mdlm = genlab.load_run(runs / "mdlm").model
    x = mdlm.sample(2, generator=torch.Generator().manual_seed(0), infill=TEMPLATE, steps=256)
    record["mdlm_infill"] = {
        "template": TEMPLATE,
        "steps": 256,
        "samples": [decode(r, mdlm.spec.vocab) for r in x.x],
    }
    texts += [("MDLM, infill of the template (blanks: _)", TEMPLATE)]
    for i, t in enumerate(record["mdlm_infill"]["samples"]):
        texts.append((f"MDLM infill, sample {i + 1}", t))
    if (runs / "bd3lm-4").is_dir():
        bd3 = genlab.load_run(runs / "bd3lm-4").model
        y = bd3.sample(1, generator=torch.Generator().manual_seed(0), steps=16, length=600)
        text = decode(y.x[0], bd3.spec.vocab)
        record["bd3lm_4"] = {"length": 600, "steps_per_block": 16, "sample": text}
        texts.append(("BD3-LM(4), 600 characters (context 256), the first 300", text[:300]))
    lines = sum(t.count("\n") + 2 for _, t in texts)
    fig = plt.figure(figsize=(10, 0.22 * lines + 0.5))
    y = 1.0
    for title, text in texts:
        fig.text(0.02, y, title, fontsize=9, weight="bold", va="top")
        y -= 0.22 / (0.22 * lines + 0.5)
        fig.text(0.04, y, text, fontsize=8.5, family="monospace", va="top")
        y -= (text.count("\n") + 1.6) * 0.22 / (0.22 * lines + 0.5)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "text.json")
    ap.add_argument("--runs", type=Path, help="bench/text.py's --runs folder (for the samples)")
    ap.add_argument("--budgets", type=Path, nargs="*",
                    default=[*(ROOT / "bench" / "results" / f"text-{n}.json" for n in (375, 750, 9000, 12000, 20000)),
                             *sorted((ROOT / "bench" / "results").glob("text-restart*.json"))],
                    help="the bench's results at other budgets, for docs/figures/text-budget.png")  # fmt: skip
    args = ap.parse_args()
    FIGURES.mkdir(exist_ok=True)
    results = json.loads(args.results.read_text())
    bench_figure(results, FIGURES / "text.png")
    print(f"wrote {FIGURES / 'text.png'}")
    budgets = [json.loads(p.read_text()) for p in args.budgets if p.is_file()]
    if budgets:
        budget_figure([results, *budgets], FIGURES / "text-budget.png")
        print(f"wrote {FIGURES / 'text-budget.png'}")
    if args.runs:
        record = samples_figure(args.runs, FIGURES / "text-samples.png")
        (FIGURES / "text-samples.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {FIGURES / 'text-samples.png'}")
    assert math.isfinite(results["held_out"][results["ar_reference"]]["nll"]["bits_per_char"])


if __name__ == "__main__":
    main()
