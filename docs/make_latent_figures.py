"""Make the figure of docs/latent.md from genlab itself: a VAE's reconstructions and samples, a
VAE's latent traversals, and a VQ-VAE's reconstructions with its codebook usage.

    .venv/bin/python docs/make_latent_figures.py VAE_RUN TRAVERSAL_VAE_RUN VQVAE_RUN [--out PNG]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from matplotlib.figure import Figure

import genlab
from genlab.eval.plots import make_grid

FIG = Path(__file__).resolve().parents[1] / "docs" / "figures" / "latent.png"


def _nll(run_dir: str) -> str:
    metrics = Path(run_dir) / "metrics.json"
    if not metrics.is_file():
        return ""
    r = json.loads(metrics.read_text()).get("nll") or {}
    parts = [f"{b['kind']} {b['nats']:.2f}" for b in r.get("bounds", [])]
    if "nats" in r:
        parts.append(f"{r['kind']} {r['nats']:.2f}")
    return "\nheld-out log p(x) bounds (nats): " + ", ".join(parts) if parts else ""


def _show(ax, images: torch.Tensor, nrow: int, title: str) -> None:
    grid = make_grid(images.clamp(-1, 1), nrow=nrow)
    ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("vae")
    ap.add_argument("traversal")
    ap.add_argument("vqvae")
    ap.add_argument("--out", default=str(FIG))
    args = ap.parse_args()
    fig = Figure(figsize=(13, 4.8))
    g = torch.Generator().manual_seed(1)

    run = genlab.load_run(args.vae)
    model, val = run.model.eval(), run.dataset.val[:8]
    with torch.no_grad():
        rec = model.decode(model.encode(val))
        samples = model.sample(16, generator=g).x
    _show(fig.add_subplot(1, 3, 1), torch.cat([val, rec, samples]), 8,
          f"vae on {run.dataset.name}, {run.step} steps: held-out (row 1), reconstructions "
          f"(row 2),\nsamples (rows 3-4), decoder means{_nll(args.vae)}")  # fmt: skip

    run = genlab.load_run(args.traversal)
    model = run.model.eval()
    with torch.no_grad():
        z0 = model.encode(run.dataset.val[:1])[0]
        values = torch.linspace(-2.5, 2.5, 9)
        rows = []
        for d in range(model.config.latent):
            z = z0.repeat(len(values), 1)
            z[:, d] = values
            rows.append(model.decode(z))
    _show(fig.add_subplot(1, 3, 2), torch.cat(rows), len(values),
          f"vae on {run.dataset.name}: latent traversals, one row per latent dimension,\n"
          f"z_d from -2.5 to 2.5 around a held-out digit's posterior mean")  # fmt: skip

    run = genlab.load_run(args.vqvae)
    model, val = run.model.eval(), run.dataset.val[:16]
    with torch.no_grad():
        rec = model.decode(model.encode(val))
    report = model.report(run.dataset)
    usage, perp = report["codebook_usage"]["value"], report["perplexity"]["value"]
    _show(fig.add_subplot(1, 3, 3), torch.cat([val[:8], rec[:8], val[8:], rec[8:]]), 8,
          f"vqvae on {run.dataset.name}, {run.step} steps: held-out and reconstructions\n"
          f"(rows 1/3 and 2/4); {model.config.codes} codes, held-out usage {usage:.0%}, "
          f"perplexity {perp:.0f}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
