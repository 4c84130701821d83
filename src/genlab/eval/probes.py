"""What the report asks of a run's weights, measured here so that the report only renders: quality
against the number of function evaluations (a model sampled by an ODE/SDE solver, evaluated at
several step counts with each fixed-step sampler it takes) and a few text samples."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.config import EvalConfig
from genlab.data.text import decode
from genlab.errors import GenlabError
from genlab.eval.evaluate import evaluate
from genlab.runs import load_run

NFE_METRIC = {"points": "w2", "images": "fd"}  # what quality against NFE is measured with
NFE_SAMPLERS = ("euler", "heun", "dpmpp-2m")  # fixed-step samplers, where the model has them
NFE_STEPS = (2, 4, 8, 16, 32)


def quality_vs_nfe(
    path: str | Path, steps: tuple[int, ...] = NFE_STEPS, n: int | None = None
) -> dict[str, list[tuple[float, float]]]:
    """For a model sampled by an ODE/SDE solver (one with a ``steps`` option): the metric of
    :data:`NFE_METRIC` (W2 for points, FD for images; one seed of ``n`` samples, 1,000 points or
    300 images) at each step count, for each of :data:`NFE_SAMPLERS` the model takes:
    ``{sampler: [(NFE, metric), ...]}``; empty for other families."""
    run = load_run(path)
    model, ds = run.model, run.dataset
    if "steps" not in model.options({}) or ds.kind not in NFE_METRIC:
        return {}
    metric = NFE_METRIC[ds.kind]
    n = n or (1000 if ds.kind == "points" else 300)
    out: dict[str, list[tuple[float, float]]] = {}
    for sampler in NFE_SAMPLERS:
        try:
            model.resolve_options({"sampler": sampler})
        except GenlabError:
            continue  # a sampler this family does not take
        for k in steps:
            cfg = EvalConfig(n=n, seeds=1, metrics=[metric], floor=False, nll=False,
                             options={"sampler": sampler, "steps": k})  # fmt: skip
            rep = evaluate(model, ds, cfg)
            out.setdefault(sampler, []).append((float(rep["nfe"]), rep["metrics"][metric]["value"]))
    return out


def sample_text(path: str | Path, chars: int = 300) -> str:
    """Two samples of ``chars`` characters (seed 0) from the text run in ``path``, decoded."""
    run = load_run(path)
    opts = run.model.options({})
    kw = {"length": chars} if "length" in opts else {}
    out = run.model.sample(2, generator=torch.Generator().manual_seed(0), **kw)
    return "\n\n".join(decode(x, run.model.spec.vocab) for x in out.x)
