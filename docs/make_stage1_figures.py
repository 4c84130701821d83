"""Make the stage-1 figure of docs/two-stage.md from genlab itself: held-out images, a VQGAN's
reconstructions and code maps, and a KL autoencoder's reconstructions (posterior means decoded).

    .venv/bin/python docs/make_stage1_figures.py VQGAN_RUN KL_RUN [--out PNG] [--n 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

import genlab
from genlab.eval.plots import make_grid

FIG = Path(__file__).resolve().parents[1] / "docs" / "figures" / "two-stage-stage1.png"


def _show(ax, images: torch.Tensor, title: str, cmap: str = "gray") -> None:
    grid = make_grid(images, nrow=8)
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap=cmap, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("vqgan")
    parser.add_argument("kl")
    parser.add_argument("--out", default=str(FIG))
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args()
    vq, kl = genlab.load_run(args.vqgan), genlab.load_run(args.kl)
    x = vq.dataset.val[: args.n]
    with torch.no_grad():
        codes = vq.model.encode(x)
        rec_vq = vq.model.decode(codes).clamp(-1, 1)
        rec_kl = kl.model.decode(kl.model.encode(x)).clamp(-1, 1)
    k = vq.model.latent().codes
    code_img = (codes.float() / max(k - 1, 1))[:, None] * 2 - 1  # codes as grey levels
    mse_vq = float((rec_vq - x).square().mean())
    mse_kl = float((rec_kl - x).square().mean())
    fig = Figure(figsize=(11, 2.0))
    axes = fig.subplots(1, 4)
    _show(axes[0], x, "held-out images")
    _show(axes[1], rec_vq, f"VQGAN reconstructions (MSE {mse_vq:.4f})")
    _show(axes[2], code_img, f"VQGAN code maps {tuple(codes.shape[1:])} of {k}", "viridis")
    _show(axes[3], rec_kl, f"KL-AE reconstructions (MSE {mse_kl:.4f})")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
