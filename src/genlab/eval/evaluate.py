"""Evaluate a trained model: sample with several seeds, compare with fresh draws of the true law (or
held-out data), and report the NLL where the model has a likelihood. Returns plain numbers with
names, so runs of different families compare on the same yardstick."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from genlab.config import EvalConfig
from genlab.data.base import Dataset
from genlab.errors import ConfigError, DataError
from genlab.eval.metrics import evaluate_points
from genlab.models.base import GenerativeModel

REFERENCE_SEED = 1_000_003  # reference draws never share a seed with model samples


def reference_points(
    dataset: Dataset | None, held_out: torch.Tensor | None, n: int, seed: int
) -> tuple[torch.Tensor, str]:
    """``n`` reference points for sampling seed ``seed``: fresh draws of the true law when it is
    known, else (a seeded subset of) held-out data."""
    if held_out is None and dataset is not None and dataset.true is not None:
        g = torch.Generator().manual_seed(REFERENCE_SEED + seed)
        return dataset.true.sample(n, generator=g), "fresh draws of the true law"
    pts, what = (
        (held_out, "held-out file") if held_out is not None else (dataset.val, "validation split")
    )
    if pts is None or len(pts) == 0:
        raise DataError("no reference data to evaluate against: the validation split is empty")
    if len(pts) > n:
        g = torch.Generator().manual_seed(REFERENCE_SEED + seed)
        pts = pts[torch.randperm(len(pts), generator=g)[:n]]
    return pts, what


def evaluate(
    model: GenerativeModel,
    dataset: Dataset | None,
    cfg: EvalConfig,
    *,
    held_out: torch.Tensor | None = None,
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Sample-based metrics (mean, std and per-seed values) and, where possible, the NLL."""
    if hasattr(model, "evaluate_report"):  # not a sampler (a noise classifier): its own metrics
        model.eval()
        return model.evaluate_report(dataset, cfg)
    got = tuple((held_out if held_out is not None else dataset.val).shape[1:])
    if tuple(model.spec.shape) != got:
        raise DataError(
            f"reference data has examples of shape {got} but the model makes {tuple(model.spec.shape)}"
        )
    model.eval()
    if cfg.schedule and not hasattr(model, "sigmas"):
        raise ConfigError(f"eval.schedule applies to diffusion models, not to {model.family}")
    # W2/MMD/energy compare point clouds; images get their own metrics (Fréchet distance, later)
    point_metrics = list(cfg.metrics) if len(model.spec.shape) == 1 else []
    per_metric: dict[str, list[float]] = {m: [] for m in point_metrics}
    nfes, seconds, first = [], 0.0, None
    reference_kind = ""
    for seed in range(cfg.seeds):
        g = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        extra = {"schedule": cfg.schedule} if cfg.schedule else {}
        out = model.sample(cfg.n, sampler=cfg.sampler, steps=cfg.steps, generator=g, **extra)
        seconds += time.perf_counter() - t0
        nfes.append(out.nfe)
        x = out.x.detach().cpu().double()
        ref, reference_kind = reference_points(dataset, held_out, cfg.n, seed)
        if first is None:
            first = (x, ref)
        if point_metrics:
            values = evaluate_points(x, ref.double(), metrics=tuple(point_metrics), generator=g)
            for k, v in values.items():
                per_metric[k].append(v)
    report: dict[str, Any] = {
        "family": model.family,
        "sampler": cfg.sampler or model.config.sampler,
        "steps": cfg.steps or model.config.steps,
        "schedule": cfg.schedule or getattr(model.config, "schedule", None),
        "nfe": statistics.mean(nfes),
        "n": cfg.n,
        "seeds": cfg.seeds,
        "reference": reference_kind,
        "sampling_seconds": seconds / cfg.seeds,
        "metrics": {
            k: {"mean": statistics.mean(v), "std": statistics.pstdev(v), "values": v}
            for k, v in per_metric.items()
        },
    }
    if cfg.nll and model.has_log_prob:
        report["nll"] = held_out_nll(model, dataset, held_out, cfg.nll_n)
    if keep_samples and first is not None:
        report["_samples"], report["_reference"] = first
    return report


def held_out_nll(
    model: GenerativeModel, dataset: Dataset | None, held_out: torch.Tensor | None, n: int
) -> dict[str, Any]:
    """NLL in nats and bits/dim of held-out points, with its kind; for synthetic data, the true
    law's NLL on the very same points is reported beside it."""
    pts, _ = reference_points(dataset, held_out, n, seed=-1)
    dtype = next(model.parameters()).dtype
    lp = model.log_prob(pts.to(device=model.device, dtype=dtype))
    dim = math.prod(model.spec.shape)
    out: dict[str, Any] = {
        "nats": lp.nll(),
        "bits_per_dim": lp.bits_per_dim(dim),
        "kind": lp.kind,
        "n": len(pts),
        "nfe": lp.nfe,
        "note": lp.note,
    }
    if (
        held_out is None
        and dataset is not None
        and dataset.true is not None
        and dataset.true.has_log_prob
    ):
        out["true_nats"] = float(-dataset.true.log_prob(pts.double()).mean())
    return out


def format_report(report: dict[str, Any]) -> str:
    """A small fixed-width table of a report, for the terminal."""
    lines = [
        f"{report['family']}: sampler={report['sampler']} steps={report['steps']} "
        f"NFE={report['nfe']:.0f}, {report['n']} samples x {report['seeds']} seeds vs {report['reference']}"
    ]
    for k, v in report["metrics"].items():
        lines.append(f"  {k:<10} {v['mean']:.4f} ± {v['std']:.4f}")
    if "nll" in report:
        nll = report["nll"]
        extra = f" (true law: {nll['true_nats']:.4f})" if "true_nats" in nll else ""
        lines.append(
            f"  {'nll':<10} {nll['nats']:.4f} nats, {nll['bits_per_dim']:.4f} bits/dim "
            f"[{nll['kind']}]{extra}"
        )
    return "\n".join(lines)
