"""Make the figure of docs/autoregressive.md from genlab itself: samples of trained autoregressive
density models. Points runs (MAF, IAF, MADE on moons, ...) are drawn over their data; image runs
(FVSBN, NADE, MADE, PixelCNN on binarized digits or MNIST) as a grid of samples beside held-out
images binarized the way the model sees them; class-conditional runs (PixelCNN on 8-bit digits) as
one row of samples per class.

    .venv/bin/python docs/make_autoregressive_figures.py RUN [RUN ...] [--out PNG]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

import genlab
from genlab.eval.plots import make_grid

FIG = Path(__file__).resolve().parents[1] / "docs" / "figures" / "ar-density.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default=str(FIG))
    args = ap.parse_args()
    fig = Figure(figsize=(4.2 * len(args.runs), 4.4))
    for i, run_dir in enumerate(args.runs):
        run = genlab.load_run(run_dir)
        model, data = run.model.eval(), run.dataset
        g = torch.Generator().manual_seed(1)
        ax = fig.add_subplot(1, len(args.runs), i + 1)
        metrics = Path(run_dir) / "metrics.json"
        nll = ""
        if metrics.is_file():
            import json

            r = json.loads(metrics.read_text()).get("nll") or {}
            if "nats" in r:
                nll = f"\nheld-out NLL {r['nats']:.2f} nats ({r.get('kind', '')})"
        title = f"{run.config.family} on {data.name}, {run.step} steps{nll}"
        classes = model.label_classes({})
        if data.kind == "images" and classes:  # one row of samples per class
            per = 8
            labels = torch.arange(classes).repeat_interleave(per)
            x = model.sample(len(labels), labels=labels, generator=g).x
            grid = make_grid(x.clamp(-1, 1), nrow=per)
            ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(title + "\nsamples, one row per class (0 to 9)", fontsize=8)
            ax.axis("off")
        elif data.kind == "images":
            x = model.sample(36, generator=g).x
            real = model.observed(data.val[:36], torch.Generator().manual_seed(2))
            grid = make_grid(torch.cat([x, real]).clamp(-1, 1), nrow=6)
            ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(
                title + "\nsamples (top), held-out as the model sees them (bottom)", fontsize=8
            )
            ax.axis("off")
        else:
            x = model.sample(2000, generator=g).x
            ref = data.val[:2000] if len(data.val) else data.train[:2000]
            ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.3, color="0.6", label="data")
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color="C0", label="samples")
            ax.set_title(title, fontsize=8)
            ax.legend(fontsize=7, markerscale=4)
            ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
