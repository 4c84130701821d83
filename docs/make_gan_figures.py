"""Make the figures of docs/gan.md from genlab itself: samples of trained GAN runs over their data
(2-D laws, scored by the mode protocol where the law has known modes), a class-conditional digit
grid (one row per class), and the training curves of both players.

    .venv/bin/python docs/make_gan_figures.py --points RUN [RUN ...] --images RUN [RUN ...]

``--points``: runs on 2-D laws (one panel each); ``--images``: runs on images (one grid each, and
their curves).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

import genlab
from genlab.eval.metrics.modes import mode_statistics
from genlab.eval.plots import make_grid, plot_samples, read_metrics_jsonl

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "docs" / "figures"


def points_figure(runs: list[str]) -> None:
    fig = Figure(figsize=(4.4 * len(runs), 4.8))
    for i, run_dir in enumerate(runs):
        run = genlab.load_run(run_dir)
        x = run.model.sample(2500, generator=torch.Generator().manual_seed(1)).x
        true = run.dataset.true
        ref = true.sample(2500, generator=torch.Generator().manual_seed(2)) if true else None
        if ref is None:
            ref = run.dataset.train[:2500]
        m = run.config.model
        loss = m.loss + (f" + R1 γ={m.r1:g}" if m.r1 else "")
        text = f"{run.dataset.name}: {loss}\nwidth {m.hidden}, {run.step} steps"
        if run.dataset.modes() is not None:
            centers, std = run.dataset.modes()
            st = mode_statistics(x.double(), centers, std)
            text += (
                f"\n{st.modes_covered}/{len(centers)} modes, {100 * st.high_quality:.1f}% high "
                f"quality, rKL {st.reverse_kl:.3f}"
            )
        plot_samples(x, ref, title=text, ax=fig.add_subplot(1, len(runs), i + 1))
    fig.tight_layout()
    fig.savefig(FIG / "gan-mixtures.png", dpi=100)
    print(f"wrote {FIG / 'gan-mixtures.png'}")


def images_figure(runs: list[str]) -> None:
    fig = Figure(figsize=(4.5 * len(runs), 4.8))
    for i, run_dir in enumerate(runs):
        run = genlab.load_run(run_dir)
        k = run.model.spec.num_classes or 10
        labels = torch.arange(k).repeat_interleave(10) if run.model.spec.num_classes else None
        x = run.model.sample(10 * k, labels=labels, generator=torch.Generator().manual_seed(1)).x
        ax = fig.add_subplot(1, len(runs), i + 1)
        grid = make_grid(x.clamp(-1, 1), nrow=10)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{run.config.name} ({run.step} steps)\none row per class", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(FIG / "gan-images.png", dpi=100)
    print(f"wrote {FIG / 'gan-images.png'}")


def curves_figure(runs: list[str]) -> None:
    fig = Figure(figsize=(4.5 * len(runs), 3.4))
    for i, run_dir in enumerate(runs):
        recs = [r for r in read_metrics_jsonl(Path(run_dir) / "metrics.jsonl") if "step" in r]
        ax = fig.add_subplot(1, len(runs), i + 1)
        for key in ("loss_critic", "loss_generator"):
            pts = [(r["step"], r[key]) for r in recs if key in r]
            ax.plot(*zip(*pts), label=key.removeprefix("loss_"))
        ax.set_xlabel("step")
        ax.set_ylabel("loss (mean over the logging window)")
        ax.set_title(genlab.load_config(Path(run_dir) / "config.yaml").name, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIG / "gan-curves.png", dpi=100)
    print(f"wrote {FIG / 'gan-curves.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", nargs="+", default=[])
    ap.add_argument("--images", nargs="+", default=[])
    args = ap.parse_args()
    if args.points:
        points_figure(args.points)
    if args.images:
        images_figure(args.images)
        curves_figure([*args.points[:1], *args.images])


if __name__ == "__main__":
    main()
