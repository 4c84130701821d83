"""Figures and timings of docs/two-stage.md (stage 2): samples by class from a prior run and a
latent-diffusion run, and the sampling time per image of each.

    python docs/make_two_stage_figures.py --prior runs/prior --ldm runs/ldm [--pixel runs/mnist]

Writes docs/figures/two-stage-prior.png, docs/figures/two-stage-ldm.png and
docs/figures/two-stage.json (the options, the NFE and the seconds per image)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import genlab
from genlab.eval.plots import plot_image_grid

FIGURES = Path(__file__).resolve().parent / "figures"


def by_class(run_dir: str, per_class: int, **options) -> tuple[torch.Tensor, dict]:
    """``per_class`` samples of each class (rows: classes), with the time per image."""
    model = genlab.load_run(run_dir).model
    k = model.spec.num_classes or 1
    labels = torch.arange(k).repeat_interleave(per_class) if model.spec.num_classes else None
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    out = model.sample(k * per_class, labels=labels, generator=g, **options)
    seconds = time.perf_counter() - start
    info = {"run": Path(run_dir).name, "family": model.family, "options": options, "nfe": out.nfe,
            "images": k * per_class, "seconds_per_image": seconds / (k * per_class),
            "threads": torch.get_num_threads()}  # fmt: skip
    return out.x, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prior", required=True)
    p.add_argument("--ldm", required=True)
    p.add_argument("--pixel", help="a pixel-space diffusion run, timed with the same options")
    p.add_argument("--per-class", type=int, default=8)
    args = p.parse_args()
    FIGURES.mkdir(exist_ok=True)
    record = {}
    x, record["prior"] = by_class(args.prior, args.per_class, top_k=50)
    plot_image_grid(x, FIGURES / "two-stage-prior.png", nrow=args.per_class)
    ldm_opts = {"sampler": "dpmpp-2m", "steps": 20, "guidance": 3.0}
    x, record["ldm"] = by_class(args.ldm, args.per_class, **ldm_opts)
    plot_image_grid(x, FIGURES / "two-stage-ldm.png", nrow=args.per_class)
    if args.pixel:
        _, record["pixel"] = by_class(args.pixel, args.per_class, **ldm_opts)
    (FIGURES / "two-stage.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
