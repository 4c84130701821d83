"""Make the figure of docs/metrics.md from genlab itself: for digits and MNIST, held-out real images,
samples of the trained diffusion recipe, of its checkpoint at 10% of the steps, and Gaussian noise,
each titled with the metrics bench/eval_images.py measured for it (read from
bench/results/eval_images.json, "recipe" sampling options).

    .venv/bin/python docs/make_eval_figures.py --digits RUN --mnist RUN
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from matplotlib.figure import Figure

import genlab
from genlab.eval.plots import make_grid

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "docs" / "figures"
RESULTS = ROOT / "bench" / "results" / "eval_images.json"


def title(metrics: dict, floor: bool = False) -> str:
    key = "floor" if floor else "metrics"
    m = metrics[key]
    return (
        f"FD {m['fd']:.1f}, KID {m['kid']:.1f}\n"
        f"precision {m['precision']:.2f}, recall {m['recall']:.2f}, coverage {m['coverage']:.2f}"
    )


def panel(fig: Figure, i: int, images: torch.Tensor, text: str, nrow: int) -> None:
    ax = fig.add_subplot(1, 4, i + 1)
    grid = make_grid(images.clamp(-1, 1), nrow=nrow)  # (H, W, C) in [0, 1]
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ax.set_title(text, fontsize=8)
    ax.axis("off")


def figure(name: str, run_dir: str, results: dict) -> None:
    rows = results["ranking"][f"{name}, recipe"]["rows"]
    labels = list(rows)  # trained, early, noise
    final = genlab.load_run(run_dir)
    early = genlab.load_run(run_dir, checkpoint=int(final.config.trainer.steps * 0.1))
    g = torch.Generator().manual_seed(0)
    real = final.dataset.test[torch.randperm(len(final.dataset.test), generator=g)[:36]]
    labels36 = torch.arange(36) % 10
    shape = final.model.spec.shape
    fig = Figure(figsize=(13, 4))
    first = rows[labels[0]]
    panel(fig, 0, real, f"real test images; the floor\n{title(first, floor=True)}", 6)
    for i, (label, run) in enumerate(((labels[0], final), (labels[1], early)), start=1):
        x = run.model.sample(36, labels=labels36, generator=torch.Generator().manual_seed(1)).x
        panel(fig, i, x, f"{label}\n{title(rows[label])}", 6)
    noise = torch.randn((36, *shape), generator=torch.Generator().manual_seed(2))
    panel(fig, 3, noise, f"{labels[2]}\n{title(rows[labels[2]])}", 6)
    fig.suptitle(
        f"{name}: {final.config.name}, n = {first['n']} against the test split "
        "(metrics from bench/eval_images.py)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(FIG / f"eval-{name}.png", dpi=100)
    print(f"wrote {FIG / f'eval-{name}.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", required=True)
    ap.add_argument("--mnist", required=True)
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text())
    figure("digits", args.digits, results)
    figure("mnist", args.mnist, results)


if __name__ == "__main__":
    main()
