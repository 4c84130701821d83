"""Make the figures of docs/flows.md from genlab itself (about 2-3 minutes on one CPU core).

    OMP_NUM_THREADS=1 .venv/bin/python docs/make_flow_figures.py

Trains (if missing) runs/docs-flows-nsf-moons, runs/docs-flows-nsf-checkerboard (configs/nsf-*.yaml,
2,000 steps) and runs/docs-flows-glow-digits (configs/glow-digits.yaml), then writes
docs/figures/flows-2d.png (data, exact model density, samples) and docs/figures/flows-digits.png
(held-out digits and Glow samples at two temperatures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import genlab
from genlab.eval.plots import make_grid

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "docs" / "figures"
QUIET = ["trainer.progress=false", "trainer.tensorboard=false"]
IMAGES = ("digits", "mnist")


def trained(config: str, overrides: list[str]) -> genlab.api.Run:
    out = ROOT / "runs" / f"docs-flows-{config}"
    if not list((out / "checkpoints").glob("*.safetensors")):
        cfg = genlab.load_config(ROOT / "configs" / f"{config}.yaml", overrides + QUIET)
        # the figures need only samples: image runs skip the end-of-training evaluation
        genlab.train(cfg, out=out, verbose=False, evaluate=cfg.data.name not in IMAGES)
    return genlab.load_run(out)


def density_panel(fig: Figure, rows: int, row: int, config: str, lim: float) -> None:
    run = trained(config, ["trainer.steps=2000"])
    model = run.model.double()
    data = run.dataset.true.sample(5000, torch.Generator().manual_seed(0))
    xs = torch.linspace(-lim, lim, 300, dtype=torch.float64)
    grid = torch.cartesian_prod(xs, xs)
    dens = model.log_prob(grid).value.exp().reshape(300, 300).T.numpy()
    nll = model.log_prob(run.dataset.true.sample(5000, torch.Generator().manual_seed(1))).nll()
    samples = model.sample(5000, generator=torch.Generator().manual_seed(2)).x
    panels = [
        ("data", lambda ax: ax.scatter(data[:, 0], data[:, 1], s=1, alpha=0.4)),
        (
            f"density (NLL {nll:.3f} nats)",
            lambda ax: ax.imshow(dens, origin="lower", extent=(-lim, lim, -lim, lim), cmap="magma"),
        ),
        ("samples", lambda ax: ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)),
    ]
    for j, (title, draw) in enumerate(panels):
        ax = fig.add_subplot(rows, 3, 3 * row + j + 1)
        draw(ax)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{config}: {title}", fontsize=9)


def digits_figure() -> None:
    run = trained("glow-digits", [])
    model = run.model
    real = run.dataset.val[:32]
    fig = Figure(figsize=(10, 3.6))
    lp = model.log_prob(run.dataset.val, generator=torch.Generator().manual_seed(0))
    bpd = lp.bits_per_dim(64)
    for j, (title, images) in enumerate(
        [
            ("held-out digits", real),
            ("Glow, T = 1.0", model.sample(32, generator=torch.Generator().manual_seed(0)).x),
            (
                "Glow, T = 0.7",
                model.sample(32, temperature=0.7, generator=torch.Generator().manual_seed(0)).x,
            ),
        ]
    ):
        ax = fig.add_subplot(1, 3, j + 1)
        ax.imshow(np.squeeze(make_grid(images, nrow=8)), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"glow-digits: {bpd:.3f} bits/dim on held-out digits (dequantization bound)")
    fig.tight_layout()
    fig.savefig(FIG / "flows-digits.png", dpi=90)


def main() -> None:
    torch.set_num_threads(1)
    FIG.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(9, 6.2))
    density_panel(fig, 2, 0, "nsf-moons", 3.5)
    density_panel(fig, 2, 1, "nsf-checkerboard", 4.5)
    fig.tight_layout()
    fig.savefig(FIG / "flows-2d.png", dpi=90)
    digits_figure()
    print(f"wrote {FIG / 'flows-2d.png'} and {FIG / 'flows-digits.png'}")


if __name__ == "__main__":
    main()
