"""Make the figures of docs/diffusion.md from genlab itself.

    .venv/bin/python docs/make_diffusion_figures.py [--digits RUN]

Trains (if missing) runs/docs-{ddpm,ve-pc,edm,rf} from configs/{ddpm,ve-pc,edm,rectified-flow}-moons
.yaml and runs/docs-rf-reflow with `genlab.reflow`; the digits figure needs a trained
configs/edm-cfg-digits.yaml run (default runs/docs-edm-digits, trained here if missing: ~10 min).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from matplotlib.figure import Figure

import genlab
from genlab.eval.evaluate import reference_draws
from genlab.eval.metrics import w2

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "docs" / "figures"


def trained(config: str, name: str) -> genlab.Run:
    out = ROOT / "runs" / name
    if not (out / "metrics.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        genlab.train(ROOT / "configs" / config, out=out, overrides=["trainer.progress=false"])
    run = genlab.load_run(out)
    return run


def scatter(ax, x, title):
    ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-2.2, 2.2)
    ax.set_xticks([])
    ax.set_yticks([])


def samplers_figure(run: genlab.Run) -> dict:
    """One DDPM network, every sampler at about 10 NFE (and DDPM's 1,000 steps)."""
    ref = reference_draws(run.dataset, 2000, 0)
    cases = [
        ("ddpm", 1000, "uniform"), ("ddpm", 10, "uniform"), ("ddim", 10, "uniform"),
        ("euler", 10, "uniform"), ("heun", 5, "log-snr"), ("dpmpp-2m", 10, "uniform"),
        ("euler-maruyama", 10, "uniform"), ("pc", 5, "uniform"), ("dopri5", 1, "uniform"),
    ]  # fmt: skip
    fig = Figure(figsize=(12, 4.6))
    table = {}
    for i, (name, steps, sched) in enumerate(cases):
        g = torch.Generator().manual_seed(0)
        out = run.model.sample(2000, sampler=name, steps=steps, schedule=sched, generator=g)
        d = float(w2(out.x.double(), ref))
        table[f"{name}/{steps}/{sched}"] = {"nfe": out.nfe, "w2": d}
        scatter(fig.add_subplot(2, 5, i + 1), out.x, f"{name} ({sched}), NFE {out.nfe}\nW2 {d:.3f}")
    scatter(fig.add_subplot(2, 5, 10), ref, "two moons (fresh draws)")
    fig.suptitle("one ε-prediction DDPM network (configs/ddpm-moons.yaml), every sampler")
    fig.tight_layout()
    fig.savefig(FIG / "diffusion-samplers.png", dpi=90)
    return table


def processes_figure(runs: dict[str, genlab.Run]) -> dict:
    fig = Figure(figsize=(15, 3.2))
    table = {}
    for i, (title, run) in enumerate(runs.items()):
        report = json.loads((run.dir / "metrics.json").read_text())
        g = torch.Generator().manual_seed(0)
        out = run.model.sample(2000, generator=g)
        m = report["metrics"]["w2"]
        nll = report.get("nll", {})
        table[title] = {"nfe": report["nfe"], "w2": m["value"], "w2_sd": m["std"],
                        "nll": nll.get("nats"), "true_nll": nll.get("true_nats")}  # fmt: skip
        label = (
            f"{title}\n{report['options']['sampler']} NFE {report['nfe']:.0f}, W2 {m['value']:.3f}"
        )
        if nll:
            label += f", NLL {nll['nats']:.3f}"
        scatter(fig.add_subplot(1, len(runs), i + 1), out.x, label)
    fig.tight_layout()
    fig.savefig(FIG / "diffusion-processes.png", dpi=90)
    return table


def reflow_figure(rf: genlab.Run, reflowed: genlab.Run) -> dict:
    fig = Figure(figsize=(12, 3.4))
    table = {}
    ref = reference_draws(rf.dataset, 2000, 0)
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    for j, (title, run) in enumerate([("rectified flow", rf), ("after one reflow", reflowed)]):
        traj = run.model.sample(300, sampler="euler", steps=50, noise=z[:300], trajectory=True)
        ax = fig.add_subplot(1, 4, 2 * j + 1)
        path = traj.trajectory
        for k in range(300):
            ax.plot(path[:, k, 0], path[:, k, 1], lw=0.3, color="0.6")
        ax.scatter(path[0, :, 0], path[0, :, 1], s=2, color="tab:blue")
        ax.scatter(path[-1, :, 0], path[-1, :, 1], s=2, color="tab:red")
        s = run.model.straightness(2000, generator=torch.Generator().manual_seed(1))
        ax.set_title(f"{title}: paths (straightness {s:.3f})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        one = run.model.sample(2000, sampler="euler", steps=1, noise=z).x
        d = float(w2(one.double(), ref))
        scatter(fig.add_subplot(1, 4, 2 * j + 2), one, f"{title}: 1 Euler step, W2 {d:.3f}")
        table[title] = {"straightness": s, "w2_1_step": d}
    fig.tight_layout()
    fig.savefig(FIG / "reflow-moons.png", dpi=90)
    return table


def guidance_figure(
    run: genlab.Run, path: Path, scales=(0.0, 1.0, 3.0), classifier=None, what="guidance w"
) -> None:
    """4 samples of each of the 10 classes per panel, one panel per guidance scale (classifier-free,
    or, with ``classifier``, the classifier scale on the unconditional model, w = 0)."""
    h = run.model.spec.shape[-1]
    fig = Figure(figsize=(12, 2.0))
    for i, w in enumerate(scales):
        g = torch.Generator().manual_seed(0)
        y = torch.arange(10).repeat_interleave(4)
        kw = {"guidance": w} if classifier is None else {
            "guidance": 0.0, "classifier": classifier, "classifier_scale": w}  # fmt: skip
        x = run.model.sample(40, labels=y, generator=g, **kw).x.clamp(-1, 1)
        x = torch.nn.functional.pad(x, (0, 1, 0, 1), value=-1.0)  # a blank line between images
        grid = x.reshape(10, 4, h + 1, h + 1).permute(1, 2, 0, 3).reshape(4 * (h + 1), 10 * (h + 1))
        ax = fig.add_subplot(1, len(scales), i + 1)
        ax.imshow(grid.numpy(), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(f"{what} = {w:g}" + (" (unconditional)" if w == 0 else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--digits", default=str(ROOT / "runs" / "docs-edm-digits"))
    p.add_argument("--skip-digits", action="store_true")
    p.add_argument("--mnist", default=str(ROOT / "runs" / "docs-mnist"))
    args = p.parse_args()
    FIG.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    ddpm = trained("ddpm-moons.yaml", "docs-ddpm")
    out = {"samplers": samplers_figure(ddpm)}
    runs = {
        "DDPM (vp-linear, ε)": ddpm,
        "VE-SDE + PC": trained("ve-pc-moons.yaml", "docs-ve-pc"),
        "EDM": trained("edm-moons.yaml", "docs-edm"),
        "rectified flow": trained("rectified-flow-moons.yaml", "docs-rf"),
    }
    rf = runs["rectified flow"]
    target = ROOT / "runs" / "docs-rf-reflow"
    if not (target / "reflow.json").is_file():
        overrides = ["trainer.steps=3000", "trainer.progress=false", "model.sampler=euler",
                     "model.steps=2"]  # fmt: skip
        genlab.reflow(rf.dir, target, pairs=50_000, overrides=overrides)
    reflowed = genlab.load_run(target)
    runs["rectified flow + reflow"] = reflowed
    out["processes"] = processes_figure(runs)
    out["reflow"] = reflow_figure(rf, reflowed)
    if not args.skip_digits:
        digits = Path(args.digits)
        if not (digits / "metrics.json").is_file():
            genlab.train(
                ROOT / "configs/edm-cfg-digits.yaml",
                out=digits,
                overrides=["trainer.progress=false"],
            )
        guidance_figure(genlab.load_run(digits), FIG / "diffusion-digits-cfg.png")
        clf = ROOT / "runs" / "docs-clf-digits"
        if not (clf / "metrics.json").is_file():
            genlab.train(
                ROOT / "configs/classifier-digits.yaml",
                out=clf,
                overrides=["trainer.progress=false"],
            )
        guidance_figure(
            genlab.load_run(digits), FIG / "diffusion-digits-classifier.png", (0.0, 2.0, 5.0),
            classifier=genlab.load_run(clf).model, what="classifier scale",
        )  # fmt: skip
    mnist = Path(args.mnist)
    if (mnist / "config.yaml").is_file():  # a configs/ddpm-cfg-mnist.yaml run, if one was made
        guidance_figure(genlab.load_run(mnist), FIG / "diffusion-mnist-cfg.png")
    (FIG / "diffusion-figures.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
