"""Benchmark the image evaluation: feature networks, the cost of the metrics, and whether every
metric ranks real data < a trained model < an early checkpoint of it < Gaussian noise.

Run:  .venv/bin/python bench/eval_images.py --digits RUN --mnist RUN [--n-mnist 2000]

``RUN``: a run of configs/edm-cfg-digits.yaml / configs/ddpm-cfg-mnist.yaml with a checkpoint at
10% of its steps (``trainer.checkpoint_every`` dividing it, ``trainer.keep_last`` large enough).
Prints tables and writes ``bench/results/eval_images.json``.

1. The feature networks of digits and MNIST (bundled 10k), trained from scratch in a fresh cache
   with genlab's fixed recipe: held-out accuracy and training seconds (torch threads as set).
2. Seconds and peak memory (the whole process's resident high-water mark) to compute every image
   metric for 10,000 28x28 samples against 10,000 reference images with the floor (a third set of
   10,000): the features of all 30,000 images included. Run in a fresh process.
3. For each data set, with the recipe's sampling options and with guidance 1 (no classifier-free
   guidance): the metrics of the trained model, of its checkpoint at 10% of the steps, and of
   Gaussian noise N(0, I) clipped to [-1, 1], all against the same held-out reference, beside the
   floor (as many real training examples against that reference). The ranking real < trained <
   early < noise is checked in each metric's direction and in distance from the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import machine_info, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "eval_images.json"


def train_features(names: list[str]) -> dict:
    """Feature networks trained from scratch (a fresh cache): accuracy and seconds."""
    from genlab.data import load
    from genlab.feature_networks import feature_network

    out = {}
    for name in names:
        data = load(name, val_fraction=0.0)
        t0 = time.perf_counter()
        _, info = feature_network(data, verbose=False)
        seconds = time.perf_counter() - t0
        out[name] = {
            "accuracy": info.heldout_accuracy,
            "heldout_examples": info.heldout_examples,
            "train_examples": info.train_examples,
            "train_seconds": info.train_seconds,
            "seconds_with_hashing": seconds,
            "hash": info.hash,
        }
        print(
            f"  {name:<7} held-out accuracy {info.heldout_accuracy:.2%} on "
            f"{info.heldout_examples} images, trained in {info.train_seconds:.1f} s"
        )
    return out


def time_metrics(n: int) -> dict:
    """Every image metric for ``n`` 28x28 samples vs ``n`` reference images, with the floor
    (``n`` more real images): features of the 3n images and all metrics, timed together."""
    from genlab.data import load
    from genlab.eval.evaluate import _features
    from genlab.eval.metrics import Comparison, check_metrics, metrics_for
    from genlab.feature_networks import feature_network

    data = load("mnist", val_fraction=0.0)
    net, _ = feature_network(data, verbose=False)
    x = data.train[:n]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    samples = (x.roll(1, dims=-1) + 0.3 * noise).clamp(-1, 1)  # content is irrelevant to cost
    floor_x = x.flip(-1)
    labels = data.labels_train[:n]
    names = metrics_for("images", ["features", "classes", "labels"])
    records = check_metrics(names, "images", ["features", "classes", "labels"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    fs, ps = _features(net, samples)
    fr, _ = _features(net, x)
    ff, pf = _features(net, floor_x)
    t_feat = time.perf_counter() - t0
    g = torch.Generator
    sample_c = Comparison(samples, x, g().manual_seed(1), fs, fr, ps, labels)
    floor_c = Comparison(floor_x, x, g().manual_seed(1), ff, fr, pf, labels)
    per = {}
    for rec in records:
        t1 = time.perf_counter()
        rec(sample_c), rec(floor_c)
        per[rec.name] = time.perf_counter() - t1
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n": n,
        "threads": torch.get_num_threads(),
        "seconds_total": total,
        "seconds_features": t_feat,
        "seconds_per_metric": per,
        "peak_rss_mib": peak / 1024,
        "rss_before_mib": rss0 / 1024,
    }


def noise_model(shape: tuple[int, ...]):
    """A stand-in 'model' drawing N(0, I) images (the evaluation clips them to [-1, 1])."""
    from genlab.models.base import GenerativeModel, ModelSpec, SampleResult

    class Noise(GenerativeModel):
        family = "gaussian-noise"

        def __init__(self) -> None:
            super().__init__(None, ModelSpec("gaussian-noise", shape))
            self.w = torch.nn.Parameter(torch.zeros(()))

        def _sample(self, n, *, labels, generator):
            return SampleResult(torch.randn((n, *shape), generator=generator), 0)

    return Noise()


def rank_runs(
    run_dir: str, n: int, options: dict, seeds: int = 1, early_fraction: float = 0.1
) -> dict:
    """Metrics of the trained run, its early checkpoint (sampled with ``options``) and Gaussian
    noise, each beside the floor (real training examples against the same held-out reference)."""
    import dataclasses

    import genlab
    from genlab.eval.evaluate import evaluate

    final = genlab.load_run(run_dir)
    early_step = int(final.config.trainer.steps * early_fraction)
    early = genlab.load_run(run_dir, checkpoint=early_step)
    cfg = dataclasses.replace(final.config.eval, n=n, seeds=seeds, nll=False, options=options)
    rows = {}
    for name, model, opts in (
        (f"trained ({final.step} steps)", final.model, options),
        (f"early ({early_step} steps)", early.model, options),
        ("gaussian noise", noise_model(final.model.spec.shape), {}),
    ):
        t0 = time.perf_counter()
        rep = evaluate(model, final.dataset, dataclasses.replace(cfg, options=opts))
        rows[name] = {
            "metrics": {k: v["value"] for k, v in rep["metrics"].items()},
            "std": {k: v["std"] for k, v in rep["metrics"].items()},
            "floor": {k: v["floor"] for k, v in rep["metrics"].items()},
            "floor_std": {k: v["floor_std"] for k, v in rep["metrics"].items()},
            "seeds": seeds,
            "better": {k: v["better"] for k, v in rep["metrics"].items()},
            "nfe": rep.get("nfe"),
            "options": rep.get("options"),
            "seconds": time.perf_counter() - t0,
            "n": rep["n"],
            "reference": rep["reference"],
            "floor_set": rep["floor"],
            "features": rep.get("features"),
        }
        print(f"  {name}: {rows[name]['seconds']:.0f} s", flush=True)
    return rows


def check_ranking(rows: dict) -> dict:
    """Per metric, whether real (the floor) < trained < early < noise holds (1) in the metric's
    own direction and (2) in distance from the floor, |value - floor|: a perfect model scores the
    floor, and precision, density and the classifier score can pass it from either side (a guided
    model concentrates its samples where real data is dense)."""
    names = list(rows)
    first = rows[names[0]]
    out = {}
    for metric, better in first["better"].items():
        floor = first["floor"][metric]
        vals = [rows[r]["metrics"].get(metric) for r in names]
        if floor is None or any(v is None for v in vals):
            out[metric] = {"direction": None, "distance": None}
            continue
        sign = 1 if better == "lower" else -1
        chain = [floor, *vals]
        gaps = [0.0] + [abs(v - floor) for v in vals]
        out[metric] = {
            "direction": all(sign * a < sign * b for a, b in zip(chain, chain[1:])),
            "distance": all(a < b for a, b in zip(gaps, gaps[1:])),
        }
    return out


def print_table(title: str, rows: dict, ranking: dict) -> None:
    names = list(rows)
    first = rows[names[0]]
    word = {True: "yes", False: "NO", None: "-"}
    print(
        f"\n{title} (n = {first['n']}; reference: {first['reference']}; floor: {first['floor_set']})"
    )
    head = " ".join(f"{r[:18]:>18}" for r in names)
    print(f"  {'metric':<17} {'real (floor)':>12} {head}  better  ranks: by direction, distance")
    spread = first.get("seeds", 1) > 1  # mean ± std over seeds

    def cell(v: float | None, sd: float | None, width: int) -> str:
        if v is None:
            return f"{'-':>{width}}"
        return f"{f'{v:.4g}±{sd:.2g}' if spread and sd is not None else f'{v:.4g}':>{width}}"

    for metric in first["better"]:
        cells = " ".join(
            cell(rows[r]["metrics"].get(metric), rows[r].get("std", {}).get(metric), 18)
            for r in names
        )
        fl = cell(first["floor"][metric], first.get("floor_std", {}).get(metric), 12)
        r = ranking[metric]
        print(
            f"  {metric:<17} {fl} {cells}  {first['better'][metric]:<6}  "
            f"{word[r['direction']]:>5}, {word[r['distance']]}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", help="a trained configs/edm-cfg-digits.yaml run")
    ap.add_argument("--mnist", help="a trained configs/ddpm-cfg-mnist.yaml run")
    ap.add_argument("--n-digits", type=int, default=540, help="samples (the held-out digits)")
    ap.add_argument("--n-mnist", type=int, default=2000, help="samples (the held-out images)")
    ap.add_argument("--seeds-digits", type=int, default=5, help="seeds (sample and floor draws)")
    ap.add_argument("--seeds-mnist", type=int, default=1)
    ap.add_argument("--n-timing", type=int, default=10_000)
    ap.add_argument(
        "--ranking-only",
        action="store_true",
        help="rerun only the rankings given (--digits/--mnist), keeping the rest of the JSON",
    )
    ap.add_argument("--time-metrics", type=int, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.time_metrics:
        print(json.dumps(time_metrics(args.time_metrics)))
        return
    t_start = time.perf_counter()
    record = {
        "machine": {**machine_info(), "loadavg_before": list(os.getloadavg())},
        "torch_threads": torch.get_num_threads(),
    }
    if args.ranking_only:  # the feature networks of the default cache
        old = json.loads(RESULTS.read_text())
        record["ranking"] = old.get("ranking", {})
        for key in ("features", "metric_timing"):
            record[key] = old.get(key)
        rank_all(args, record)
        write_results(record, RESULTS, t_start)
        return
    with tempfile.TemporaryDirectory() as cache:
        os.environ["GENLAB_CACHE"] = cache  # a fresh cache: the networks are trained here
        print("feature networks (trained from scratch):")
        record["features"] = train_features(["digits", "mnist"])
        print(f"\nall image metrics for {args.n_timing} samples (fresh process):")
        child = subprocess.run(
            [sys.executable, __file__, "--time-metrics", str(args.n_timing)],
            capture_output=True, text=True, check=True, env=os.environ,
        )  # fmt: skip
        timing = json.loads(child.stdout.strip().splitlines()[-1])
        record["metric_timing"] = timing
        print(
            f"  {timing['seconds_total']:.1f} s in all ({timing['seconds_features']:.1f} s of "
            f"features for {3 * timing['n']} images), peak memory {timing['peak_rss_mib']:.0f} MiB"
        )
        for metric, sec in timing["seconds_per_metric"].items():
            print(f"    {metric:<17} {sec:6.2f} s (samples and floor)")
        record["ranking"] = {}
        rank_all(args, record)
    write_results(record, RESULTS, t_start)


def rank_all(args: argparse.Namespace, record: dict) -> None:
    """Section 3 for each run given, with the recipe's options and with guidance 1."""
    for name, run, n, seeds in (
        ("digits", args.digits, args.n_digits, args.seeds_digits),
        ("mnist", args.mnist, args.n_mnist, args.seeds_mnist),
    ):
        if not run:
            continue
        for variant, options in (("recipe", {}), ("guidance 1", {"guidance": 1.0})):
            key = f"{name}, {variant}"
            print(f"\n{key}: evaluating {run}", flush=True)
            rows = rank_runs(run, n, options, seeds)
            ranking = check_ranking(rows)
            record["ranking"][key] = {"run": run, "options": options, "rows": rows,
                                      "ranks": ranking}  # fmt: skip
            print_table(key, rows, ranking)


if __name__ == "__main__":
    main()
