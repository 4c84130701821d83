"""Autoregressive density models: MAF against zuko and a Gaussian on moons and real tables, and
FVSBN / NADE / MADE on binarized MNIST at a fixed CPU budget beside the published numbers.

Run (zuko rows need the bench environment, bench/README.md):
    OMP_NUM_THREADS=1 .bench-venv/bin/python bench/autoregressive_density.py [--quick]

(a) Two moons: genlab's MAF and IAF (configs/maf-moons.yaml sizes: 5 layers, MADEs of 2 x 64)
    against zuko's MAF and NSF (5 transforms, hidden (64, 64)), the same loop (Adam 1e-3, cosine,
    batch 256, equal steps); held-out NLL on 20,000 fresh draws beside the true law's and a
    full-covariance Gaussian's; ms per training step over interleaved rounds.
(b) Real tables (scikit-learn wine 178 x 13, diabetes 442 x 10), 60/20/20 train/validation/test,
    seed 0: every model in the same loop keeping its best-validation weights (checked every 25
    steps), test NLL beside a full-covariance Gaussian fitted to the training rows; and genlab's
    tabular recipes (configs/{maf,nsf}-tabular.yaml) as a user runs them, through genlab's trainer
    (early stopping, dropout, weight decay) on the same train/validation rows.
(c) Binarized MNIST (the bundled 10k, 20% held out): FVSBN, NADE, MADE and PixelCNN through genlab's
    trainer for ``--budget`` CPU seconds each (configs/*-mnist.yaml), exact NLL in nats on the
    held-out split under one seeded binarization, printed beside the published numbers on the
    60k training set (FVSBN 96.58, NADE 88.86, MADE 88.04, PixelCNN 81.30; Germain et al. 2015,
    van den Oord et al. 2016): ours train on 8,000 images. ``--mnist-families`` runs some of
    them; the rows of the others are kept from the last run.

Prints tables and writes ``bench/results/autoregressive_density.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import ROOT, machine_info, write_results

sys.path.insert(0, str(ROOT / "bench"))
from flows_2d import Wrapped, genlab_model, time_steps, train, train_for_budget  # noqa: E402

from genlab.data import TOY  # noqa: E402
from genlab.models.flows.flows import IAF, MAF  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "autoregressive_density.json"
PUBLISHED_MNIST = {"fvsbn": 96.58, "nade": 88.86, "made": 88.04, "pixelcnn": 81.30}


def zuko_flow(name: str, kind: str, dim: int, transforms: int, hidden=(64, 64)) -> Wrapped | None:
    try:
        import zuko
    except ImportError:
        return None
    torch.manual_seed(0)
    cls = zuko.flows.NSF if kind == "nsf" else zuko.flows.MAF
    flow = cls(features=dim, context=0, transforms=transforms, hidden_features=hidden)

    def sample(n: int, g: torch.Generator) -> torch.Tensor:
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
        return flow().sample((n,))

    return Wrapped(
        name, flow, lambda x: -flow().log_prob(x).mean(), lambda x: flow().log_prob(x), sample
    )


def gaussian_nll(train_x: torch.Tensor, test_x: torch.Tensor) -> float:
    from genlab.eval.likelihood import gaussian_baseline

    return gaussian_baseline(train_x, test_x)["gaussian_nats"]


def moons(steps: int, rounds: int) -> dict:
    law = TOY["moons"]()
    data = law.sample(50_000, torch.Generator().manual_seed(0)).float()
    test = law.sample(20_000, torch.Generator().manual_seed(777)).float()
    maf_kw = {"layers": 5, "hidden": 64, "depth": 2}
    factories = {
        "genlab-maf": lambda: genlab_model("genlab-maf", MAF, 2, **maf_kw),
        "genlab-iaf": lambda: genlab_model("genlab-iaf", IAF, 2, **maf_kw),
        "zuko-maf": lambda: zuko_flow("zuko-maf", "maf", 2, 5),
        "zuko-nsf": lambda: zuko_flow("zuko-nsf", "nsf", 2, 5),
    }
    factories = {k: f for k, f in factories.items() if f() is not None}
    with torch.enable_grad():
        ms = time_steps(factories, data, rounds, 50)
    rows = {}
    for name, make in factories.items():
        model = make()
        with torch.enable_grad():
            info = train(model, data, steps, 256)
        with torch.no_grad():
            nll = float(-model.log_prob(test).mean())
        rows[name] = {"params": model.params, "ms_per_step": ms[name], "nll": nll, **info}
        print(f"  {name:<12} NLL {nll:.4f}  {ms[name]:.2f} ms/step", flush=True)
    return {
        "steps": steps, "models": rows, "true_nll": float(-law.log_prob(test.double()).mean()),
        "gaussian_nll": gaussian_nll(data, test),
    }  # fmt: skip


def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    return x[perm[:a]], x[perm[a:b]], x[perm[b:]]


def recipe_nll(config: str, tr: torch.Tensor, va: torch.Tensor, te: torch.Tensor) -> dict:
    """A tabular recipe as a user runs it, on the bench's train+validation rows as one array
    whose validation share is the bench's 20% (genlab splits it again at random, seed 0; no test
    part: the bench's own test rows, which genlab never sees, score it)."""
    import numpy as np

    import genlab

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "table.npy")
        np.save(path, torch.cat([tr, va]).double().numpy())
        cfg = genlab.load_config(
            ROOT / "configs" / f"{config}.yaml",
            [f"data.path={path}", "data.name=null", "data.val_fraction=0.25",
             "data.test_fraction=0",  # the bench holds out its own test rows
             "trainer.progress=false", "trainer.tensorboard=false"],
        )  # fmt: skip
        t0 = time.perf_counter()
        run = genlab.train(cfg, out=os.path.join(d, "run"), evaluate=False, verbose=False)
        seconds = time.perf_counter() - t0
        model = genlab.load_run(os.path.join(d, "run")).model.eval()  # the best checkpoint
        with torch.no_grad():
            nll = float(-model.log_prob(te.to(torch.float32)).value.mean())
        return {"test_nll": nll, "train_seconds": seconds, "rows": len(run.dataset.train)}


def tables(steps: int) -> dict:
    from sklearn.datasets import load_diabetes, load_wine

    out = {}
    for name, loader in (("wine", load_wine), ("diabetes", load_diabetes)):
        x = torch.as_tensor(loader().data, dtype=torch.float32)
        tr, va, te = split(x)
        dim = x.shape[1]
        maf_kw = {"layers": 2, "hidden": 32, "depth": 2, "norm": "actnorm"}
        factories = {
            "genlab-maf": lambda d=dim, kw=maf_kw: genlab_model("genlab-maf", MAF, d, **kw),
            "zuko-maf": lambda d=dim: zuko_flow("zuko-maf", "maf", d, 2, (32, 32)),
            "zuko-nsf": lambda d=dim: zuko_flow("zuko-nsf", "nsf", d, 2, (32, 32)),
        }
        rows = {}
        for mname, make in factories.items():
            model = make()
            if model is None:
                continue
            # zuko's flows have no input scaling: give every model the training rows' scale
            mu, sd = tr.mean(0), tr.std(0)
            scaled = Wrapped(
                mname, model.module,
                lambda v, m=model, mu=mu, sd=sd: m.loss((v - mu) / sd),
                lambda v, m=model, mu=mu, sd=sd: m.log_prob((v - mu) / sd) - sd.log().sum(),
                model.sample,
            )  # fmt: skip
            with torch.enable_grad():
                info = train(scaled, tr, steps, 64, val=va, val_every=25)
            with torch.no_grad():
                nll = float(-scaled.log_prob(te).mean())
            rows[mname] = {"test_nll": nll, "params": model.params, **info}
        for config in ("maf-tabular", "nsf-tabular"):
            rows[f"recipe {config}"] = recipe_nll(config, tr, va, te)
        out[name] = {"shape": list(x.shape), "split": [len(tr), len(va), len(te)], "steps": steps,
                     "gaussian_nll": gaussian_nll(tr, te), "models": rows}  # fmt: skip
        print(f"  {name}: Gaussian {out[name]['gaussian_nll']:.3f}", flush=True)
        for mname, r in rows.items():
            print(f"    {mname:<22} test NLL {r['test_nll']:.3f}", flush=True)
    return out


def binarized_mnist(budget: float, families: list[str]) -> dict:
    from genlab.eval.heldout import LIKELIHOOD_SEED

    out = {}
    for family in families:
        # a constant learning rate: the budget, not the step count, ends training
        model, dataset, steps = train_for_budget(
            f"{family}-mnist", budget, ("trainer.schedule=constant", "trainer.warmup=0")
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LIKELIHOOD_SEED)
            lp = model.log_prob(dataset.test)  # the test split: no checkpoint is chosen on it
        nll = -lp.value.double()
        out[family] = {
            "steps": steps, "seconds": budget, "nll": float(nll.mean()),
            "stderr": float(nll.std() / math.sqrt(len(nll))), "n": len(nll),
            "published_60k": PUBLISHED_MNIST[family],
        }  # fmt: skip
        print(f"  {family:<6} {steps:6d} steps  NLL {out[family]['nll']:.2f} ± "
              f"{out[family]['stderr']:.2f} nats  (published, 60k: {PUBLISHED_MNIST[family]})",
              flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="moons training steps")
    ap.add_argument("--tab-steps", type=int, default=3000)
    ap.add_argument("--budget", type=float, default=240.0, help="CPU seconds per MNIST model")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mnist-families", default=",".join(PUBLISHED_MNIST))
    ap.add_argument("--skip", default="", help="comma list of sections to skip: moons,tables,mnist")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.tab_steps, args.budget, args.rounds = 100, 100, 5.0, 1
    skip = set(filter(None, args.skip.split(",")))
    t_start = time.perf_counter()
    record: dict = {"machine": {**machine_info(), "loadavg_before": list(os.getloadavg())}}
    if "moons" not in skip:
        print("(a) two moons", flush=True)
        record["moons"] = moons(args.steps, args.rounds)
    if "tables" not in skip:
        print("(b) real tables", flush=True)
        record["tables"] = tables(args.tab_steps)
    if "mnist" not in skip:
        print(f"(c) binarized MNIST, {args.budget:g} CPU seconds each", flush=True)
        record["binarized_mnist"] = binarized_mnist(args.budget, args.mnist_families.split(","))
    if not args.quick and RESULTS.exists():  # sections skipped now keep their last results
        old = json.loads(RESULTS.read_text())
        for key in ("moons", "tables", "binarized_mnist"):
            if key not in record and key in old:
                record[key] = old[key]
        for family, row in old.get("binarized_mnist", {}).items():  # families not run now
            record.get("binarized_mnist", {}).setdefault(family, row)
    quick_out = Path(tempfile.gettempdir()) / "autoregressive_density.quick.json"
    write_results(record, RESULTS if not args.quick else quick_out, t_start)


if __name__ == "__main__":
    main()
