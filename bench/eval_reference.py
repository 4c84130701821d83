"""Feature metrics, same features, same numbers: genlab.eval.metrics.features vs the reference
implementations, and the cost of each genlab metric at 10,000 x 10,000 in d = 128.

Run:  .bench-venv/bin/python bench/eval_reference.py [--quick]

Prints a table and writes ``bench/results/eval_reference.json`` (``--quick``: smaller timing sets,
written to $TMPDIR). Under the main ``.venv`` (no torchmetrics, no prdc) only the timings run.

1. Agreement, on fixed random float64 features (n = m = 2000, d = 64; real ~ N(0, A A^T / d),
   fake = real-like with another covariance and a mean shift; 1 torch thread), every difference
   relative to the reference value, required <= 1e-5:

   * ``frechet_distance`` vs torchmetrics ``FrechetInceptionDistance(feature=Identity)`` (the
     features go through an identity ``nn.Module`` with ``num_features``; torchmetrics accumulates
     sums and raw second moments in float64 and takes ``eigvals(S_x S_y)``), and vs scipy
     (``sqrtm`` of the sample covariances, float64). Also both on ``x`` against itself, where the
     exact value is 0.
   * ``kid`` vs torchmetrics ``KernelInceptionDistance(feature=Identity, subsets=50,
     subset_size=1000)``: torchmetrics draws its subsets with ``torch.randperm`` from the global
     generator; ``torch.manual_seed(s)`` before its ``compute()`` and ``generator=
     torch.Generator().manual_seed(s)`` for genlab give identical subsets, so mean and std are
     compared directly.
   * ``prdc`` vs ``prdc.compute_prdc(real, fake, nearest_k=5)`` (numpy float64, scikit-learn
     distances).
   * ``classifier_score`` vs torchmetrics ``InceptionScore(feature=Identity, splits=10)`` on
     logits ``(2000, 10)``: torchmetrics shuffles with ``torch.randperm(n)`` (global generator)
     and takes ``softmax``/``log_softmax``; genlab gets ``softmax(logits)[perm]`` with the same
     permutation (2000 rows: 10 equal splits either way).

2. Cost of each genlab metric on 10,000 x 10,000 features in d = 128 (float64; 2 torch threads,
   then 1; ``classifier_score`` on (10,000, 1000) probabilities; ``kid`` with its defaults, 100
   subsets of 1000): each metric runs in a fresh subprocess, best of 2 calls. Memory: the
   resident set (VmRSS) after the imports and the data, and its peak during the calls (VmHWM,
   reset just before them through /proc/self/clear_refs); the difference is the metric's peak
   working memory, including any copies of the inputs it makes. ``ru_maxrss`` (the whole process,
   imports included) is recorded too.
   The machine may be shared: see the load averages (2 threads on a busy 2-core machine can be
   slower than 1).
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
import warnings
from pathlib import Path

import _machine
import numpy as np
import scipy.linalg
import torch
from _machine import version

from genlab.eval.metrics.features import classifier_score, frechet_distance, kid, prdc

try:
    from prdc import compute_prdc
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    PEER_ERROR = None
except ImportError as e:  # the main .venv: timings only
    PEER_ERROR = str(e)

RESULTS = Path(__file__).resolve().parent / "results" / "eval_reference.json"
REL_TOL = 1e-5
N, D, K_CLASSES, SEED = 2000, 64, 10, 0
KID_SUBSETS, KID_SUBSET_SIZE, PRDC_K, IS_SPLITS = 50, 1000, 5, 10
TIME_N, TIME_D, TIME_CLASSES = 10_000, 128, 1000
METRICS = ("frechet_distance", "kid", "prdc", "classifier_score")


class Identity(torch.nn.Module):
    """The 'feature extractor' handed to torchmetrics: features in, the same features out."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def features(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed float64 'real' and 'fake' features: two correlated Gaussians, the fake one with a
    different covariance and a mean shift (FID ~ 1-10 % of tr S)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    b = a + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    real = rng.standard_normal((n, d)) @ a.T + 0.5
    fake = rng.standard_normal((n, d)) @ b.T + 0.5 + 0.1 * rng.standard_normal(d)
    return real, fake


def rel(a: float, b: float) -> float:
    """|a - b| relative to the reference ``b`` (absolute when b == 0)."""
    return abs(a - b) / abs(b) if b != 0 else abs(a - b)


def fd_scipy(x: np.ndarray, y: np.ndarray) -> float:
    s1, s2 = np.cov(x.T), np.cov(y.T)
    r1 = scipy.linalg.sqrtm(s1).real
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1).real
    return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1 + s2 - 2.0 * cross))


def tm_fid(x: np.ndarray, y: np.ndarray) -> float:
    m = FrechetInceptionDistance(feature=Identity(x.shape[1]))
    for chunk in np.array_split(x, 4):  # accumulate in batches, as with images
        m.update(torch.from_numpy(chunk), real=True)
    for chunk in np.array_split(y, 4):
        m.update(torch.from_numpy(chunk), real=False)
    return float(m.compute())


def tm_kid(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    m = KernelInceptionDistance(
        feature=Identity(x.shape[1]), subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE
    )
    m.update(torch.from_numpy(x), real=True)
    m.update(torch.from_numpy(y), real=False)
    torch.manual_seed(seed)
    mean, std = m.compute()
    return float(mean), float(std)


def tm_is(logits: torch.Tensor, seed: int) -> tuple[float, float]:
    m = InceptionScore(feature=Identity(logits.shape[1]), splits=IS_SPLITS)
    m.update(logits)
    torch.manual_seed(seed)
    mean, std = m.compute()
    return float(mean), float(std)


def compare() -> list[dict]:
    """Section 1: one row per compared number."""
    torch.set_num_threads(1)
    x, y = features(N, D, SEED)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    rows: list[dict] = []

    def row(metric: str, field: str, reference: str, genlab: float, ref: float, t_g, t_r) -> None:
        r = rel(genlab, ref)
        rows.append(
            {
                "metric": metric,
                "field": field,
                "reference": reference,
                "genlab": genlab,
                "ref": ref,
                "rel_diff": r,
                "ok": r <= REL_TOL,
                "genlab_s": t_g,
                "ref_s": t_r,
            }
        )

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchmetrics' "features kept in memory"
        g, tg = timed(lambda: frechet_distance(tx, ty))
        r, tr = timed(lambda: tm_fid(x, y))
        row("frechet_distance", "value", "torchmetrics FID", g, r, tg, tr)
        r, tr = timed(lambda: fd_scipy(x, y))
        row("frechet_distance", "value", "scipy sqrtm", g, r, tg, tr)
        # a set against itself: exact value 0, so these rows report absolute values, unchecked;
        # the second has n = 40 < d = 64 (rank-deficient covariance)
        self_rows = {
            f"{len(s)}x{D}": {
                "genlab": frechet_distance(torch.from_numpy(s), torch.from_numpy(s)),
                "torchmetrics": tm_fid(s, s),
                "scipy": fd_scipy(s, s),
            }
            for s in (x, x[:40])
        }

        (gm, gs), tg = timed(
            lambda: kid(
                tx,
                ty,
                subsets=KID_SUBSETS,
                subset_size=KID_SUBSET_SIZE,
                generator=torch.Generator().manual_seed(SEED),
            )
        )
        (rm, rs), tr = timed(lambda: tm_kid(x, y, SEED))
        row("kid", "mean", "torchmetrics KID", gm, rm, tg, tr)
        row("kid", "std", "torchmetrics KID", gs, rs, None, None)

        ours, tg = timed(lambda: prdc(tx, ty, k=PRDC_K))
        with open(os.devnull, "w") as devnull:  # compute_prdc prints the set sizes
            stdout, sys.stdout = sys.stdout, devnull
            try:
                theirs, tr = timed(lambda: compute_prdc(x, y, nearest_k=PRDC_K))
            finally:
                sys.stdout = stdout
        for i, key in enumerate(("precision", "recall", "density", "coverage")):
            row("prdc", key, "prdc.compute_prdc", ours[key], float(theirs[key]), *(
                (tg, tr) if i == 0 else (None, None)
            ))  # fmt: skip

        logits = 3.0 * torch.from_numpy(
            np.random.default_rng(SEED + 1).standard_normal((N, K_CLASSES))
        )
        torch.manual_seed(SEED)
        perm = torch.randperm(N)  # the permutation torchmetrics draws after the same seed
        (gm, gs), tg = timed(
            lambda: classifier_score(logits.softmax(dim=1)[perm], splits=IS_SPLITS)
        )
        (rm, rs), tr = timed(lambda: tm_is(logits, SEED))
        row("classifier_score", "mean", "torchmetrics IS", gm, rm, tg, tr)
        row("classifier_score", "std", "torchmetrics IS", gs, rs, None, None)
    for shape, values in self_rows.items():
        rows.append(
            {"metric": "frechet_distance", "field": f"x vs x, {shape} (exact 0)", "values": values}
        )
    return rows


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def time_one(metric: str, n: int, d: int, classes: int, threads: int) -> dict:
    """Section 2, run in a fresh process: best of 2 calls and the peak memory they added."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(SEED)
    if metric == "classifier_score":
        args = (torch.randn(n, classes, generator=g, dtype=torch.float64).mul_(3.0).softmax(dim=1),)
        kwargs: dict = {"splits": 10}
        fn = classifier_score
    else:
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randn(n, d, generator=g, dtype=torch.float64).mul_(1.1).add_(0.1)
        args = (x, y)
        fn = {"frechet_distance": frechet_distance, "kid": kid, "prdc": prdc}[metric]
        kwargs = {"generator": torch.Generator().manual_seed(SEED)} if metric == "kid" else {}
    rss_kib = proc_status_kib("VmRSS")
    hwm_reset = reset_peak_rss()
    times, value = [], None
    for _ in range(2):
        t = time.perf_counter()
        value = fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_kib = proc_status_kib("VmHWM") if hwm_reset else maxrss_kib
    return {
        "metric": metric,
        "shape": [n, classes] if metric == "classifier_score" else [n, n, d],
        "threads": threads,
        "best_s": min(times),
        "times_s": times,
        "rss_before_mib": rss_kib / 1024,  # imports and data, before the first call
        "peak_rss_during_mib": peak_kib / 1024,  # VmHWM, reset before the first call
        "peak_reset": hwm_reset,  # False: VmHWM could not be reset, ru_maxrss used instead
        "metric_peak_mib": (peak_kib - rss_kib) / 1024,
        "process_maxrss_mib": maxrss_kib / 1024,  # ru_maxrss: the whole process, imports included
        "value": value._asdict() if hasattr(value, "_asdict") else value,  # MeanStd -> dict
    }


def timings(n: int, d: int, classes: int, threads: int) -> list[dict]:
    out = []
    for metric in METRICS:
        cmd = [sys.executable, __file__, "--time-one", metric, "--n", str(n), "--d", str(d)]
        cmd += ["--classes", str(classes), "--threads", str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = out[-1]
        print(
            f"  {metric:<18} {r['best_s']:>8.2f} s   peak +{r['metric_peak_mib']:>7.1f} MiB "
            f"(RSS before {r['rss_before_mib']:.0f} MiB)",
            flush=True,
        )
    return out


def print_table(rows: list[dict]) -> None:
    print(f"\n{'metric':<17} {'field':<10} {'reference':<18} {'genlab':>20} {'reference':>20} "
          f"{'rel diff':>9}  ok")  # fmt: skip
    for r in rows:
        if "values" in r:
            v = r["values"]
            print(f"{r['metric']:<17} {r['field']}: genlab {v['genlab']:.3e}, torchmetrics "
                  f"{v['torchmetrics']:.3e}, scipy {v['scipy']:.3e}")  # fmt: skip
            continue
        print(f"{r['metric']:<17} {r['field']:<10} {r['reference']:<18} {r['genlab']:>20.15g} "
              f"{r['ref']:>20.15g} {r['rel_diff']:>9.1e}  {'yes' if r['ok'] else 'NO'}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: small timing sets, $TMPDIR")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--time-one", choices=METRICS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=TIME_N, help=argparse.SUPPRESS)
    p.add_argument("--d", type=int, default=TIME_D, help=argparse.SUPPRESS)
    p.add_argument("--classes", type=int, default=TIME_CLASSES, help=argparse.SUPPRESS)
    p.add_argument(
        "--threads", default="2,1", help="torch thread counts for the timings (default 2,1)"
    )
    a = p.parse_args(argv)
    if a.time_one:
        print(json.dumps(time_one(a.time_one, a.n, a.d, a.classes, int(a.threads))))
        return 0

    n_time = 1000 if a.quick else TIME_N
    out = a.out or (
        Path(tempfile.gettempdir()) / "eval_reference.quick.json" if a.quick else RESULTS
    )
    record: dict = {
        "machine": _machine.machine_info(
            torchmetrics=version("torchmetrics"),
            lightning_utilities=version("lightning-utilities"),
            prdc=version("prdc"),
            scikit_learn=version("scikit-learn"),
        ),
        "quick": a.quick,
        "rel_tol": REL_TOL,
    }
    record["machine"]["loadavg_before"] = list(os.getloadavg())
    t_start = time.perf_counter()
    ok = True
    if PEER_ERROR is None:
        print(f"(1) agreement on float64 features n = m = {N}, d = {D} (1 torch thread)")
        rows = compare()
        print_table(rows)
        record["agreement"] = {"n": N, "d": D, "classes": K_CLASSES, "seed": SEED, "rows": rows}
        ok = all(r.get("ok", True) for r in rows)
        print(f"all within {REL_TOL:g} relative: {'yes' if ok else 'NO'}")
    else:
        print(f"note: torchmetrics/prdc not importable here ({PEER_ERROR}): timings only; use "
              "the bench environment (bench/README.md) for the comparison")  # fmt: skip
    record["timing"] = []
    for threads in (int(t) for t in a.threads.split(",")):
        print(f"\n(2) genlab cost at {n_time:,} x {n_time:,}, d = {TIME_D} "
              f"(classifier_score: {n_time:,} x {TIME_CLASSES}); {threads} torch thread(s), "
              "best of 2, fresh process each")  # fmt: skip
        record["timing"] += timings(n_time, TIME_D, TIME_CLASSES, threads)
    _machine.write_results(record, out, t_start)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
