"""Make the figures the docs show, from genlab itself.

    .venv/bin/python docs/make_figures.py            # toy datasets grid + flow-matching figures

Flow-matching figures come from two runs, trained here if missing:
runs/docs-fm (configs/flow-matching-moons.yaml) and runs/docs-fm-ot
(configs/flow-matching-ot-moons.yaml).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from matplotlib.figure import Figure

import genlab
from genlab.data import TOY
from genlab.eval.metrics import w2

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "docs" / "figures"


def toy_grid() -> None:
    names = sorted(TOY)
    fig = Figure(figsize=(3 * len(names) / 2, 6.2))
    for i, name in enumerate(names):
        ax = fig.add_subplot(2, (len(names) + 1) // 2, i + 1)
        x = TOY[name]().sample(4000, torch.Generator().manual_seed(0))
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
        ax.set_title(name)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(FIG / "toy-datasets.png", dpi=90)


def run(config: str, name: str) -> genlab.Run:
    out = ROOT / "runs" / name
    if not (out / "metrics.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        genlab.train(ROOT / "configs" / config, out=out, overrides=["trainer.progress=false"])
    return genlab.load_run(out)


def flow_matching() -> None:
    indep = run("flow-matching-moons.yaml", "docs-fm")
    ot = run("flow-matching-ot-moons.yaml", "docs-fm-ot")
    for src, dst in [
        ("samples.png", "fm-moons-samples.png"),
        ("trajectories.png", "fm-moons-trajectories.png"),
    ]:
        shutil.copy(indep.dir / src, FIG / dst)
    shutil.copy(ot.dir / "trajectories.png", FIG / "fm-ot-moons-trajectories.png")
    # W2 against the number of Euler steps, independent vs OT coupling (3 seeds)
    true = TOY["moons"]()
    steps = [1, 2, 5, 10, 20, 50, 100]
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for label, r in [("independent coupling", indep), ("minibatch OT coupling", ot)]:
        means = []
        for k in steps:
            vals = []
            for seed in range(3):
                x = r.model.sample(
                    2000, sampler="euler", steps=k, generator=torch.Generator().manual_seed(seed)
                ).x
                ref = true.sample(2000, torch.Generator().manual_seed(1_000_003 + seed))
                vals.append(w2(x.double(), ref))
            means.append(sum(vals) / 3)
        ax.plot(steps, means, marker="o", label=label)
        print(label, [round(m, 3) for m in means])
    ax.set_xscale("log")
    ax.set_xlabel("Euler steps (NFE)")
    ax.set_ylabel("W2 to fresh two-moons draws")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(FIG / "fm-w2-vs-steps.png", dpi=90)


if __name__ == "__main__":
    FIG.mkdir(parents=True, exist_ok=True)
    toy_grid()
    flow_matching()
    print(f"figures written to {FIG}")
