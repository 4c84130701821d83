"""The held-out likelihood of an evaluation: nats per example and bits per dimension (points,
images), per character (text) or per code (a prior over stage-1 codes), with its kind and standard
error, and the baselines printed beside it (the true law, a full-covariance Gaussian)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from genlab.data.base import Dataset
from genlab.data.tokenizer import BYTE_NATS, tokenizer_of
from genlab.errors import DataError
from genlab.eval.heldout import LIKELIHOOD_SEED, REFERENCE_SEED, held_out_examples, split_of
from genlab.models.base import GenerativeModel


def held_out_nll(
    model: GenerativeModel,
    dataset: Dataset,
    held_out: Dataset | None,
    n: int,
    options: dict[str, Any] | None = None,
    *,
    split: str = "test",
) -> dict[str, Any]:
    """The held-out negative log-likelihood with its kind and standard error: nats per example
    and bits per dimension (points, images), or nats and bits per character (text); for synthetic
    data the true law's NLL on the same points beside it. A family that reports several figures
    (a VAE's ELBO and IWAE-k bound) has the tightest as the main one and the others, with their
    kinds, under ``bounds``. ``options``: the family's likelihood options. ``split``: the run's
    split to measure on (``"test"`` or ``"val"``) when no ``held_out`` data is given; the record
    names it (``"split"``)."""
    opts = model.resolve_likelihood_options(options or {})
    where = split_of(dataset, held_out, split)
    src = held_out if held_out is not None else dataset
    if dataset.kind == "tokens":
        stream = held_out_examples(dataset, held_out, split)[0]
        escapes = text_escapes(src, where)
        return {**_text_nll(model, src.name, stream, n, opts, where, escapes), "split": where}
    if where == "fresh":
        pts = dataset.true.sample(n, generator=torch.Generator().manual_seed(REFERENCE_SEED - 1))
    else:
        pts = held_out_examples(dataset, held_out, split)[0]
    if len(pts) == 0:
        raise DataError(f"{src.name!r} has no held-out examples for the likelihood")
    if len(pts) > n:
        g = torch.Generator().manual_seed(REFERENCE_SEED - 1)
        pts = pts[torch.randperm(len(pts), generator=g)[:n]]
    dtype = next(model.parameters()).dtype
    with torch.random.fork_rng(devices=[]):  # dequantization noise, Hutchinson probes
        torch.manual_seed(LIKELIHOOD_SEED)
        lps = model.likelihoods(pts.to(device=model.device, dtype=dtype), **opts)
    dim = math.prod(model.spec.shape)
    if lps[-1].of == "codes":  # a prior's likelihood of the stage-1 codes: not of the pixels
        out = _summary(lps[-1], len(pts), per=lps[-1].dims or dim, unit="bits_per_code")
        out["of"] = "codes"
        out["split"] = where
        return out
    out = _summary(lps[-1], len(pts), per=dim, unit="bits_per_dim")
    if len(lps) > 1:
        out["bounds"] = [_summary(lp, len(pts), per=dim, unit="bits_per_dim") for lp in lps[:-1]]
    if held_out is None and dataset.true is not None and dataset.true.has_log_prob:
        out["true_nats"] = float(-dataset.true.log_prob(pts.double()).mean())
    elif dataset.kind == "points":
        out.update(gaussian_baseline(dataset.train, pts))
    out["split"] = where
    return out


def gaussian_baseline(train: torch.Tensor, held_out: torch.Tensor) -> dict[str, float]:
    """The held-out NLL (nats per example) of a full-covariance Gaussian fitted by maximum
    likelihood to the training rows: the baseline any density model of a table must beat. A
    singular covariance (more columns than rows, a constant column) gets a ridge of 1e-6 times
    its mean variance."""
    x = train.reshape(len(train), -1).double()
    if len(x) < 2:
        return {}
    cov = torch.cov(x.T, correction=0).reshape(x.shape[1], x.shape[1])
    ridge = 1e-6 * float(cov.diagonal().mean().clamp(min=1e-12))
    law = torch.distributions.MultivariateNormal(
        x.mean(0), cov + ridge * torch.eye(x.shape[1], dtype=x.dtype)
    )
    nll = -law.log_prob(held_out.reshape(len(held_out), -1).double())
    return {
        "gaussian_nats": float(nll.mean()),
        "gaussian_note": "full-covariance Gaussian, ML fit to the training rows",
    }


def text_escapes(ds: Dataset, where: str) -> list[int]:
    """The UTF-8 byte counts of the escaped characters of the split ``where`` of ``ds`` in order
    (``"file"``: of all its parts), from its ``meta["escapes"]`` (none for other tokenizers)."""
    esc = ds.meta.get("escapes") or {}
    if where == "file":
        return [b for s in ("train", "val", "test") for b in esc.get(s, [])]
    return list(esc.get(where, []))


def _text_nll(
    model: GenerativeModel,
    name: str,
    stream: torch.Tensor,
    n: int,
    opts: dict[str, Any] | None = None,
    where: str = "test",
    escapes: list[int] | None = None,
) -> dict[str, Any]:
    """Bits per character (and per token) of the first ``n`` tokens of the held-out ``stream``
    (at least one window), cut into consecutive windows of the model's length (``spec.shape``;
    the whole stretch for models without one). The characters of a window are those that begin
    in its tokens (:meth:`~genlab.data.tokenizer.Tokenizer.chars_per_token`); an escaped
    character adds its UTF-8 bytes at 8 bits each (``escapes``: their byte counts, in stream
    order). ``opts``: the family's resolved likelihood options (a diffusion model's
    ``elbo_samples``)."""
    window = model.spec.shape[0] if model.spec.shape else 0
    stream = stream[: min(max(n, window), len(stream))]
    length = window or len(stream)
    windows = stream[: len(stream) // length * length].reshape(-1, length).long()
    if len(windows) == 0:
        fix = "give more text" if where == "file" else f"raise data.{where}_fraction"
        raise DataError(
            f"{name!r} has {len(stream)} held-out tokens, fewer than one window of "
            f"{length}; raise eval.nll_n or {fix}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(LIKELIHOOD_SEED)
        lp = model.log_prob(windows.to(model.device), **(opts or {}))
    tok = tokenizer_of(model.spec.vocab) if model.spec.vocab else None  # None: one per char
    per_char = torch.from_numpy(tok.chars_per_token())[windows] if tok else torch.ones_like(windows)
    chars = per_char.sum(1).double()
    extra = torch.zeros(len(windows), dtype=torch.float64)  # nats of the escaped bytes
    escaped = 0
    if tok is not None and tok.escape_id is not None:
        at = torch.nonzero(windows.reshape(-1) == tok.escape_id).reshape(-1)
        nbytes = torch.tensor((escapes or [])[: len(at)], dtype=torch.float64)
        if len(nbytes) < len(at):  # escapes with no record (ids given directly): one byte each
            nbytes = torch.cat([nbytes, torch.ones(len(at) - len(nbytes), dtype=torch.float64)])
        extra.index_add_(0, at // length, nbytes * BYTE_NATS)
        escaped = len(at)
    lp = dataclasses.replace(lp, value=lp.value.double().cpu() - extra)
    out = _summary(lp, len(windows), per=length, unit="bits_per_char")
    nll = -lp.value
    ln2 = math.log(2.0)
    rate = float(nll.sum() / chars.sum())  # nats per character: a ratio of sums
    resid = nll - rate * chars
    rate_se = (
        float(resid.std() / math.sqrt(len(windows)) / chars.mean()) if len(windows) > 1 else None
    )
    tokens = windows.numel()
    out.update(
        nats_per_char=rate,
        bits_per_char=rate / ln2,
        bits_per_char_stderr=None if rate_se is None else rate_se / ln2,
        bits_per_token=float(nll.sum()) / tokens / ln2,
        chars=int(chars.sum()),
        tokens=tokens,
        tokenizer=tok.kind if tok else "char",
        escaped=escaped,
    )
    return out


def _summary(lp: Any, count: int, *, per: int, unit: str) -> dict[str, Any]:
    """Mean NLL in nats per example and per dimension/character, in bits, with the standard
    error of the mean over examples (it includes an estimator's own noise)."""
    nll = -lp.value.double()
    stderr = float(nll.std() / math.sqrt(count)) if count > 1 else None
    ln2 = math.log(2.0)
    nats = float(nll.mean())
    out: dict[str, Any] = {
        "nats": nats,
        "stderr": stderr,
        unit: nats / (per * ln2),
        f"{unit}_stderr": None if stderr is None else stderr / (per * ln2),
        "kind": lp.kind,
        "n": count,
        "nfe": lp.nfe,
        "note": lp.note,
    }
    if unit == "bits_per_char":
        out["nats_per_char"] = nats / per
    if lp.stderr is not None:  # the estimator's own error of the mean (in the stderr above too)
        out["estimator_stderr"] = float(lp.stderr.double().square().sum().sqrt() / count)
    return out


#: the per-variable units a held-out likelihood is reported in, with their labels
NLL_UNITS = {"bits_per_char": "bits/char", "bits_per_code": "bits/code", "bits_per_dim": "bits/dim"}


def nll_unit(nll: dict[str, Any]) -> str | None:
    """The per-variable unit of a held-out likelihood record (a key of :data:`NLL_UNITS`), or
    ``None`` when it has none (a record written by something else)."""
    return next((u for u in NLL_UNITS if u in nll), None)
