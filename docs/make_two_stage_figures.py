"""Figures and timings of docs/two-stage.md (stage 2): samples by class from a prior run and a
latent-diffusion run, and the sampling time per image of each.

    python docs/make_two_stage_figures.py --prior runs/prior --ldm runs/ldm [--pixel runs/mnist]
    python docs/make_two_stage_figures.py --captions runs/ldm-text

Writes docs/figures/two-stage-prior.png, docs/figures/two-stage-ldm.png and
docs/figures/two-stage.json (the options, the NFE and the seconds per image); with --captions,
docs/figures/two-stage-captions.png (a row per prompt) and docs/figures/two-stage-captions.json:
for each prompt, the share of its samples that genlab's MNIST feature network classifies as the
prompted digit, and their mean ink (stroke weight)."""

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


PROMPTS = [("a thin one", 1), ("a bold one", 1), ("the digit 2", 2), ("three", 3),
           ("a heavy four", 4), ("the number 5, thin", 5), ("a skinny seven", 7),
           ("a bold seven", 7), ("eight", 8), ("the digit nine, bold", 9)]  # fmt: skip


def captions(run_dir: str, per_prompt: int, n_score: int) -> dict:
    """A row of samples per prompt (guidance 3, dpmpp-2m, 20 steps) and, on ``n_score`` samples of
    each, the feature classifier's agreement with the prompted digit and the mean ink."""
    from genlab.feature_networks import feature_network
    from genlab.models.diffusion.captions import ink

    run = genlab.load_run(run_dir)
    net, _ = feature_network(run.dataset)
    opts = {"sampler": "dpmpp-2m", "steps": 20, "guidance": 3.0}
    rows, record = [], {"options": opts, "prompts": {}}
    for i, (prompt, digit) in enumerate(PROMPTS):
        g = torch.Generator().manual_seed(i)
        x = run.model.sample(max(per_prompt, n_score), prompt=prompt, generator=g, **opts).x
        rows.append(x[:per_prompt])
        hit = (net.probs(x[:n_score]).argmax(-1) == digit).double().mean()
        record["prompts"][prompt] = {"digit": digit, "accuracy": float(hit),
                                     "ink": float(ink(x[:n_score]).mean()), "n": n_score}  # fmt: skip
    record["accuracy"] = sum(r["accuracy"] for r in record["prompts"].values()) / len(PROMPTS)
    plot_image_grid(torch.cat(rows), FIGURES / "two-stage-captions.png", nrow=per_prompt)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prior")
    p.add_argument("--ldm")
    p.add_argument("--captions", help="a caption-conditioned ldm run: a row per prompt")
    p.add_argument("--n-score", type=int, default=100, help="samples per prompt scored")
    p.add_argument("--pixel", help="a pixel-space diffusion run, timed with the same options")
    p.add_argument("--per-class", type=int, default=8)
    args = p.parse_args()
    FIGURES.mkdir(exist_ok=True)
    if args.captions:
        record = captions(args.captions, args.per_class, args.n_score)
        (FIGURES / "two-stage-captions.json").write_text(json.dumps(record, indent=1))
        print(json.dumps(record, indent=1))
    if not (args.prior and args.ldm):
        return
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
