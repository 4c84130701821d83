"""Evaluate a trained model on the yardstick every family shares.

For each of ``eval.seeds`` seeds, draw ``eval.n`` samples with the family's sampling options
(``eval.options``), compare them with a reference set of real examples by every registered metric
that applies to the data's kind (:func:`genlab.eval.metrics.metrics_for`: W2, sliced W2, MMD and
energy distance for points; Fréchet distance, KID, precision/recall, density/coverage, the
classifier score and the class accuracy on learned features for images), and, beside each, the
**real-data floor**: the same metric between as many real examples as there are samples and the
same reference (what a perfect model would score). Then the held-out likelihood where the model has
one: nats and bits per dimension (images, points) or per character (text), with its kind
(``exact``, ``elbo``, ``iwae-k``, ``ode-estimate``) and standard error. A second stage's likelihood
of the stage-1 codes of the held-out examples (a prior over VQ codes) is reported in bits per code,
marked ``"of": "codes"``: it is not a likelihood of the pixels and does not compare with one.

Which real examples (``eval.split``; the report's ``"split"`` and every figure's name them):

- synthetic points whose law is known: fresh draws of the law, for the reference and (another
  draw) for the floor (``"split": "fresh"``);
- otherwise the reference is held out from training: the **test** split by default (``"test"``,
  the part that neither training, checkpoint selection nor early stopping ever sees), the
  validation split with ``eval.split=val`` (``"val"``: for diagnosis only, it chose the
  checkpoint), or the data given (``genlab eval --data``: ``"file"``, with its content hash); the
  floor's examples are training examples. So the floor is what a
  model that reproduced its training data would score, and a model that memorises its training
  set cannot score better than the floor (with the training examples as the reference it could:
  its near-copies of them would beat any independent real set). ``n`` is capped at the training
  examples, the reference at the held-out ones, and the report says so.

Images are compared in the feature space of a network genlab trains on the run's data and caches
by the data's content hash (:mod:`genlab.feature_networks`); its hash and held-out accuracy are in
the report. The report's schema is documented in ``docs/metrics.md``.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from genlab.config import EvalConfig
from genlab.data.base import Dataset
from genlab.errors import CheckpointError, DataError
from genlab.eval.metrics import (
    NEEDS,
    Comparison,
    Metric,
    check_metrics,
    get_metric,
    metrics_for,
)
from genlab.models.base import GenerativeModel
from genlab.runs import load_run

SCHEMA = 1
REFERENCE_SEED = 1_000_003  # reference draws never share a seed with model samples
FLOOR_SEED = 2_000_003
METRIC_SEED = 3_000_017  # randomised metrics (sliced W2 directions, KID subsets): the same for
# the model and its floor, so the two are compared on equal terms
LIKELIHOOD_SEED = 4_000_037
IMAGE_BATCH = 500  # images sampled per call (the U-Net's activations bound the memory)


@dataclass
class RealSets:
    """Real examples to compare with. The reference is held out from training (the test split, the
    validation split, or the data given); the floor's examples are training examples, so the floor is what a
    model that reproduced its training data would score against the same reference, and a model
    that memorises cannot beat it. ``(N, *shape)`` tensors with their labels."""

    reference: torch.Tensor
    reference_labels: torch.Tensor | None
    floor: torch.Tensor
    floor_labels: torch.Tensor | None
    reference_what: str
    floor_what: str


SPLIT_NAMES = {"test": "test split", "val": "validation split"}


def split_of(dataset: Dataset, held_out: Dataset | None, split: str = "test") -> str:
    """What an evaluation's figures are measured on: ``"file"`` (data given with ``--data``),
    ``"fresh"`` (new draws of a known law), else ``split`` (``"test"`` or ``"val"``)."""
    if held_out is not None:
        return "file"
    if dataset.true is not None:
        return "fresh"
    if split not in SPLIT_NAMES:
        raise DataError(f"eval.split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    return split


def held_out_examples(
    dataset: Dataset, held_out: Dataset | None, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The real examples an evaluation reports on (and its labels): all of ``held_out`` when
    given, else the run's ``split`` (for a known law: its validation split, the only one it has;
    the sample metrics and the likelihood draw fresh points instead)."""
    if held_out is not None:
        return all_examples(held_out)
    if dataset.true is not None:
        return dataset.part("val")
    return dataset.part(split_of(dataset, None, split))


def real_sets(dataset: Dataset, held_out: Dataset | None, split: str = "test") -> RealSets | None:
    """The real examples of an evaluation (None: fresh draws of a known law instead)."""
    where = split_of(dataset, held_out, split)
    if where == "fresh":
        return None
    ref, ref_labels = held_out_examples(dataset, held_out, split)
    if where == "file":
        what = f"held-out data {held_out.name!r}"
    else:
        what = f"the {SPLIT_NAMES[where]} of {dataset.name!r}"
    train = f"training examples of {dataset.name!r}"
    return RealSets(ref, ref_labels, dataset.train, dataset.labels_train, what, train)


def all_examples(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every example of ``ds`` (train, validation and test parts) with their labels."""
    parts = [p for p in (ds.train, ds.val, ds.test) if len(p)]
    x = torch.cat(parts) if len(parts) > 1 else ds.train
    if ds.labels_train is None:
        return x, None
    labels = [
        lab for p, lab in ((ds.train, ds.labels_train), (ds.val, ds.labels_val),
                           (ds.test, ds.labels_test)) if len(p)
    ]  # fmt: skip
    return x, (torch.cat(labels) if len(labels) > 1 else ds.labels_train)


def content_sha256(x: torch.Tensor) -> str:
    """sha256 (hex) of a tensor's values as little-endian bytes of its dtype: the identity of a
    held-out set given with ``--data``, written beside every figure measured on it."""
    t = x.detach().to("cpu").contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def set_sizes(cfg: EvalConfig, real: RealSets | None) -> int:
    """Samples per seed, which is also the size of the reference set and of the floor's set (the
    metrics' biases depend on the sizes, so the three are equal): ``eval.n``, capped at the
    held-out examples (and, with the floor, at the training examples)."""
    if real is None:
        return cfg.n
    n = min(cfg.n, len(real.reference))
    return min(n, len(real.floor)) if cfg.floor else n


def check_can_evaluate(dataset: Dataset, cfg: EvalConfig, has_log_prob: bool) -> None:
    """Raise a :class:`DataError` now, before any training, if the evaluation at the end could not
    run on this data: too few real examples to compare with, or no held-out part (the
    ``eval.split``) for a likelihood."""
    # a misspelt metric, one of another kind or one the data cannot serve: now, not later
    possible = [k for k in NEEDS if k != "modes" or dataset.modes() is not None]
    for name in cfg.metrics or []:
        check_metrics([name], dataset.kind, possible)
    where = split_of(dataset, None, cfg.split)
    real = real_sets(dataset, None, cfg.split)
    fraction = f"data.{where}_fraction"
    if real is not None and cfg.metrics != [] and set_sizes(cfg, real) < 2:
        raise DataError(
            f"the data {dataset.name!r} has {len(real.reference)} example(s) in its "
            f"{SPLIT_NAMES[where]} and {len(real.floor)} training example(s): evaluating samples needs at least 2 of each "
            "(held-out examples to compare with, training examples for the floor); give more "
            f"data, raise {fraction}, or train with --no-eval"
        )
    if has_log_prob and cfg.nll and real is not None and len(real.reference) == 0:
        raise DataError(
            f"the data {dataset.name!r} has no {SPLIT_NAMES[where]} for the held-out likelihood "
            f"({fraction} is 0 or the data is too small); raise {fraction}, set "
            "eval.nll=false, or train with --no-eval"
        )


def evaluate(
    model: GenerativeModel,
    dataset: Dataset,
    cfg: EvalConfig,
    *,
    held_out: Dataset | None = None,
    features: Any = None,
    keep_samples: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Sample-based metrics with their floors and, where the model has one, the held-out
    likelihood; see the module docstring. ``held_out``: the reference data instead of the run's
    own. ``features``: a ``(network, info)`` pair from :mod:`genlab.feature_networks` (images;
    default: ``eval.features`` or genlab's cached network for ``dataset``). Returns the report
    (the ``metrics.json`` schema); with ``keep_samples`` also ``_samples``/``_reference`` of the
    first seed, for plots."""
    model.eval()
    ref_data = held_out if held_out is not None else dataset
    where = split_of(dataset, held_out, cfg.split)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "family": model.family,
        "data": {"name": ref_data.name, "kind": ref_data.kind, "shape": list(model.spec.shape)},
        "split": where,
        "metrics": {},
    }
    if held_out is not None:
        _check_same_kind(model, dataset, held_out)
        report["data"]["sha256"] = content_sha256(all_examples(held_out)[0])
    own = held_out_examples(dataset, held_out, cfg.split)
    if where in SPLIT_NAMES and len(own[0]) == 0:
        raise DataError(
            f"the data {dataset.name!r} of this run has no {SPLIT_NAMES[where]} "
            f"(data.{where}_fraction is 0, the data is too small, or the run was trained before "
            "genlab had a test split); evaluate on held-out data with --data FILE"
            + (", or on the validation split with --split val" if where == "test" else "")
        )
    if not model.can_sample:  # not a generative model (a noise classifier): its own figures
        report["metrics"] = _with_split(model.report(*own), where)
        return report
    opts = model.resolve_options(cfg.options)  # an unknown option fails before any work
    model.resolve_likelihood_options(cfg.nll_options)
    real = real_sets(dataset, held_out, cfg.split)
    kind = ref_data.kind
    fnet = finfo = None
    wanted = None if cfg.metrics is None else [get_metric(m) for m in cfg.metrics]
    if kind == "images" and (wanted is None or any("features" in m.needs for m in wanted)):
        fnet, finfo = features if features is not None else _feature_network(dataset, cfg)
        report["features"] = _describe_features(finfo)
    available = _available(model, opts, fnet, finfo)
    score = None
    if cfg.scorer:
        score = _scorer(cfg.scorer, model, kind)
        available.add("scorer")
    if dataset.modes() is not None:
        available.add("modes")  # a Gaussian mixture: modes covered, high quality, reverse KL
    names = cfg.metrics if cfg.metrics is not None else metrics_for(kind, available)
    records = check_metrics(names, kind, available)
    n = set_sizes(cfg, real)
    if records and n < 2:
        raise DataError(f"{n} real example(s) to compare samples with: too few (at least 2)")
    report.update(
        {
            "options": _json_options(model, opts),
            "n": n,
            "seeds": cfg.seeds,
            "reference": "fresh draws of the true law" if real is None else real.reference_what,
        }
    )
    if real is not None and n < cfg.n:
        fix = "give more data" if where == "file" else f"raise data.{where}_fraction"
        report["note"] = (
            f"n capped at {n}: {len(real.reference)} held-out examples to compare with and "
            f"{len(real.floor)} training examples for the floor ({fix}, or give a larger "
            "held-out set with --data)"
        )
    first = None
    if records or (keep_samples and kind != "tokens" and n > 0):  # (samples for plots)
        first = _sample_metrics(model, dataset, real, cfg, opts, records, n, fnet, report, score)
    if cfg.nll and model.has_log_prob:
        report["nll"] = held_out_nll(
            model, dataset, held_out, cfg.nll_n, cfg.nll_options, split=cfg.split
        )
    own_split = "val" if where == "fresh" else where  # (a known law's own figures: validation)
    report["metrics"].update(_with_split(model.report(*own), own_split))
    for entry in report["metrics"].values():
        entry.setdefault("split", where)
    if keep_samples and first is not None:
        report["_samples"], report["_reference"] = first
    if verbose:
        print(format_report(report))
    return report


# --- samples against real data ------------------------------------------------------------------
def _sample_metrics(
    model: GenerativeModel,
    dataset: Dataset,
    real: RealSets | None,
    cfg: EvalConfig,
    opts: dict[str, Any],
    records: list[Metric],
    n: int,
    fnet: Any,
    report: dict[str, Any],
    score: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample, score and fill ``report`` (metrics with floors, NFE, timings); returns the first
    seed's samples and reference. ``score``: text, the scorer's log-likelihood of each row."""
    images = fnet is not None
    seconds = {"sampling": 0.0, "features": 0.0, "metrics": 0.0}
    values: dict[str, list[float]] = {r.name: [] for r in records}
    floors: dict[str, list[float]] = {r.name: [] for r in records}
    spread: dict[str, list[float]] = {r.name: [] for r in records}
    nfes, first = [], None
    k = model.label_classes(opts)
    modes = dataset.modes()
    for seed in range(cfg.seeds):
        g = torch.Generator().manual_seed(seed)
        labels = None if k is None else _stratified_labels(n, k, real, g)
        t0 = time.perf_counter()
        x, nfe, labels = _draw(model, n, labels, g, opts, IMAGE_BATCH if images else n)
        seconds["sampling"] += time.perf_counter() - t0
        nfes.append(nfe)
        ref, floor, floor_i = _real_draws(dataset, real, n, seed, cfg.floor, x.shape[-1])
        seen = model.observed(ref, torch.Generator().manual_seed(REFERENCE_SEED + seed))
        if seen is not ref and seed == 0:  # a binary model sees binarized images, say
            report["reference"] += (
                " as the model represents data (model.observed, e.g. binarized), the floor too"
            )
        ref = seen
        if floor is not None:
            floor = model.observed(floor, torch.Generator().manual_seed(FLOOR_SEED + seed))
        if first is None:
            first = (x, ref)
        if not records:
            continue
        sample_c = Comparison(
            x, ref, _metric_generator(seed), labels_x=labels, modes=modes, score=score
        )
        floor_c = None
        if floor is not None:
            has = real is not None and real.floor_labels is not None
            floor_labels = real.floor_labels[floor_i] if has else None
            floor_c = Comparison(
                floor, ref, _metric_generator(seed), labels_x=floor_labels, modes=modes,
                score=score,
            )  # fmt: skip
        if images:
            t0 = time.perf_counter()
            sample_c.fx, sample_c.px = _features(fnet, x)
            sample_c.fy = _features(fnet, ref)[0]
            if floor_c is not None:
                floor_c.fx, floor_c.px = _features(fnet, floor)
                floor_c.fy = sample_c.fy
            seconds["features"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for rec in records:
            value, std = _value(rec(sample_c))
            values[rec.name].append(value)
            if std is not None:
                spread[rec.name].append(std)
            if floor_c is not None and ("labels" not in rec.needs or floor_c.labels_x is not None):
                floors[rec.name].append(_value(rec(floor_c))[0])
        seconds["metrics"] += time.perf_counter() - t0
    report["nfe"] = statistics.mean(nfes)
    report["seconds"] = seconds
    if not cfg.floor:
        report["floor"] = None
    elif real is None:
        report["floor"] = f"{n} more fresh draws of the true law"
    else:
        report["floor"] = f"{n} {real.floor_what} (real data the model was trained on)"
    report["metrics"] = {
        rec.name: _entry(rec, values[rec.name], floors[rec.name], spread[rec.name], n, report)
        for rec in records
    }
    return first


def _entry(
    rec: Metric, values: list[float], floors: list[float], spread: list[float], n: int, report
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "value": statistics.mean(values),
        "std": statistics.pstdev(values),
        "values": values,
        "unit": rec.units,
        "kind": "estimate",
        "better": rec.better,
        "n": n,
        "floor": statistics.mean(floors) if floors else None,
        "floor_std": statistics.pstdev(floors) if floors else None,
        "help": rec.help,
    }
    if spread:  # the estimator's own spread (KID over subsets, the classifier score over splits)
        out["estimator_std"] = statistics.mean(spread)
    if "features" in rec.needs and report.get("features"):
        out["features"] = report["features"]["hash"]
    return out


def _with_split(entries: dict[str, dict[str, Any]], split: str) -> dict[str, dict[str, Any]]:
    """A family's own figures, each naming the split it was measured on."""
    return {name: {**entry, "split": split} for name, entry in entries.items()}


def _value(v: float | tuple[float, float]) -> tuple[float, float | None]:
    if isinstance(v, tuple):
        return float(v[0]), float(v[1])
    return float(v), None


def _metric_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(METRIC_SEED + seed)


def _real_draws(
    dataset: Dataset, real: RealSets | None, n: int, seed: int, floor: bool, length: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Seed ``seed``'s reference set and floor set (``n`` examples each) and the floor's indices
    into ``real.floor``; fresh draws for a known law; for text, windows of ``length`` characters
    (the samples' length) at random offsets of the held-out and the training text."""
    if real is None:
        other = None
        if floor:
            g = torch.Generator().manual_seed(FLOOR_SEED + seed)
            other = dataset.true.sample(n, generator=g).double()
        return reference_draws(dataset, n, seed), other, None
    g = torch.Generator()
    if real.reference.dim() == 1:  # text: token streams
        ref = _windows(real.reference, n, length, g.manual_seed(REFERENCE_SEED + seed), "held-out")
        other = None
        if floor:
            other = _windows(real.floor, n, length, g.manual_seed(FLOOR_SEED + seed), "training")
        return ref, other, None
    ref_i = torch.randperm(len(real.reference), generator=g.manual_seed(REFERENCE_SEED + seed))
    floor_i = None
    if floor:
        floor_i = torch.randperm(len(real.floor), generator=g.manual_seed(FLOOR_SEED + seed))[:n]
    cast = (lambda t: t.double()) if real.reference.dim() == 2 else (lambda t: t)
    other = None if floor_i is None else cast(real.floor[floor_i])
    return cast(real.reference[ref_i[:n]]), other, floor_i


def _windows(stream: torch.Tensor, n: int, length: int, g: torch.Generator, what: str):
    """``n`` windows ``(n, length)`` of a token stream at offsets drawn from ``g``."""
    if len(stream) < length:
        raise DataError(
            f"the {what} text has {len(stream)} characters, fewer than the samples' {length}: "
            "sample shorter texts (--option length=...) or give more text"
        )
    starts = torch.randint(0, len(stream) - length + 1, (n,), generator=g)
    return stream[starts[:, None] + torch.arange(length)]


def _scorer(path: str, model: GenerativeModel, kind: str):
    """``eval.scorer``: the log-likelihood (nats per row) of token rows under an autoregressive
    run on the same text, refused with the reason when it cannot score this model's samples."""
    if kind != "tokens":
        raise DataError(f"eval.scorer scores text samples; this run's data holds {kind}")
    try:
        run = load_run(path)
    except CheckpointError as e:
        raise DataError(f"eval.scorer={path}: {e}") from None
    scorer = run.model.eval()
    if scorer.spec.vocab != model.spec.vocab:
        raise DataError(
            f"eval.scorer={path} was trained on text of another alphabet "
            f"({len(scorer.spec.vocab or '')} characters, this model's has "
            f"{len(model.spec.vocab or '')}): score with an autoregressive run on the same text"
        )
    refused = DataError(
        f"eval.scorer={path} is a {scorer.family} run: generative perplexity needs an exact "
        "likelihood (an autoregressive model such as gpt)"
    )
    if not scorer.has_log_prob:
        raise refused

    @torch.no_grad()
    def score(x: torch.Tensor) -> torch.Tensor:
        lp = scorer.log_prob(x.to(scorer.device))
        if lp.kind != "exact":
            raise refused
        return lp.value.cpu()

    return score


def reference_draws(dataset: Dataset, n: int, seed: int) -> torch.Tensor:
    """The reference set of seed ``seed`` for a data set with a known law: ``n`` fresh draws
    (float64), seeded apart from any model's samples; benchmarks use the same sets."""
    return dataset.true.sample(
        n, generator=torch.Generator().manual_seed(REFERENCE_SEED + seed)
    ).double()


def _stratified_labels(n: int, k: int, real: RealSets | None, g: torch.Generator) -> torch.Tensor:
    """``n`` class labels in the proportions of the training labels (uniform without them),
    counts rounded by largest remainder, in random order."""
    labels = None if real is None else real.floor_labels
    if labels is not None and int(labels.max()) < k:
        freq = torch.bincount(labels, minlength=k).double()
    else:
        freq = torch.ones(k, dtype=torch.float64)
    share = freq / freq.sum() * n
    counts = share.floor().long()
    rest = n - int(counts.sum())
    if rest:
        counts[torch.argsort(share - counts, descending=True)[:rest]] += 1
    labels = torch.repeat_interleave(torch.arange(k), counts)
    return labels[torch.randperm(n, generator=g)]


def _draw(
    model: GenerativeModel,
    n: int,
    labels: torch.Tensor | None,
    g: torch.Generator,
    opts: dict[str, Any],
    batch: int,
) -> tuple[torch.Tensor, float, torch.Tensor | None]:
    """``n`` samples in batches of ``batch`` (float64 points; images clipped to the data range
    [-1, 1], as saving them would); a sample with NaN or inf is a clear error."""
    xs, nfes, ys = [], [], []
    for start in range(0, n, batch):
        k = min(batch, n - start)
        lab = None if labels is None else labels[start : start + k]
        out = model.sample(k, labels=lab, generator=g, **opts)
        xs.append(out.x.detach().cpu())
        nfes.append(out.nfe)
        if out.labels is not None:
            ys.append(out.labels.cpu())
    x = torch.cat(xs)
    bad = ~torch.isfinite(x.reshape(n, -1)).all(dim=1)
    if bad.any():
        raise DataError(
            f"{int(bad.sum())} of {n} samples of the {model.family} model hold NaN or inf (has "
            "training diverged? see skipped_steps in metrics.jsonl)"
        )
    if x.is_floating_point():  # (text: token ids, kept)
        x = x.double() if x.dim() == 2 else x.float().clamp(-1.0, 1.0)
    return x, statistics.mean(nfes), (torch.cat(ys) if ys else None)


def _check_same_kind(model: GenerativeModel, dataset: Dataset, held_out: Dataset) -> None:
    if held_out.kind != dataset.kind:
        raise DataError(
            f"the reference data {held_out.name!r} holds {held_out.kind}, but the run was trained "
            f"on {dataset.kind}"
        )
    if held_out.kind != "tokens" and tuple(held_out.shape) != tuple(model.spec.shape):
        raise DataError(
            f"the reference data {held_out.name!r} has examples of shape {tuple(held_out.shape)}, "
            f"but the model makes {tuple(model.spec.shape)}"
        )


def _json_options(model: GenerativeModel, opts: dict[str, Any]) -> dict[str, Any]:
    """The resolved sampling options that a command line can give (the rest are objects)."""
    allowed = model.options(opts)
    return {k: v for k, v in opts.items() if allowed[k].parse is not None}


# --- features -------------------------------------------------------------------------------------
def _feature_network(dataset: Dataset, cfg: EvalConfig):
    import genlab.feature_networks as F

    if cfg.features:
        return F.load_feature_network(cfg.features, expected_hash=F.fingerprint(dataset))
    return F.feature_network(dataset)


def _describe_features(info: Any) -> dict[str, Any]:
    """The feature network's record in a report: what it is, its id and how good it is."""
    return {
        "kind": info.kind,
        "hash": info.hash,
        "data_hash": info.data_hash,
        "recipe_hash": info.recipe_hash,
        "accuracy": info.heldout_accuracy,
        "heldout_mse": info.heldout_mse,
        "heldout_examples": info.heldout_examples,
        "path": str(info.path or ""),
    }


def _available(model: GenerativeModel, opts: dict[str, Any], fnet: Any, finfo: Any) -> set[str]:
    """What the metrics of this evaluation can rely on (keys of ``metrics.NEEDS``)."""
    have: set[str] = set()
    if fnet is None:
        return have
    have.add("features")
    if finfo.num_classes:
        have.add("classes")
        if model.label_classes(opts) == finfo.num_classes:
            have.add("labels")
    return have


def _features(fnet: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features ``(n, F)`` (float64) and class probabilities ``(n, K)`` (or None)."""
    f = fnet.features(x).double()
    p = fnet.probs(x).double() if fnet.has_classes else None
    return f, p


# --- likelihood -----------------------------------------------------------------------------------
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
        return {**_text_nll(model, src.name, stream, n, opts, where), "split": where}
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


def _text_nll(
    model: GenerativeModel,
    name: str,
    stream: torch.Tensor,
    n: int,
    opts: dict[str, Any] | None = None,
    where: str = "test",
) -> dict[str, Any]:
    """Bits per character of the first ``n`` characters of the held-out ``stream``, cut into
    consecutive windows of the model's length (``spec.shape``; the whole stretch for models
    without one). ``opts``: the family's resolved likelihood options (a diffusion model's
    ``elbo_samples``)."""
    stream = stream[: min(n, len(stream))]
    length = model.spec.shape[0] if model.spec.shape else len(stream)
    windows = stream[: len(stream) // length * length].reshape(-1, length)
    if len(windows) == 0:
        fix = "give more text" if where == "file" else f"raise data.{where}_fraction"
        raise DataError(
            f"{name!r} has {len(stream)} held-out characters, fewer than one window of "
            f"{length}; raise eval.nll_n or {fix}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(LIKELIHOOD_SEED)
        lp = model.log_prob(windows.to(model.device), **(opts or {}))
    return _summary(lp, len(windows), per=length, unit="bits_per_char")


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


# --- the terminal table ---------------------------------------------------------------------------
def format_report(report: dict[str, Any]) -> str:
    """A small fixed-width table of a report, for the terminal."""
    data = report["data"]
    shape = "x".join(map(str, data["shape"])) or "stream"
    lines = [f"{report['family']} on {data['name']} ({data['kind']} {shape})"]
    if report.get("split"):
        lines.append(f"  measured on: {SPLIT_WORDS.get(report['split'], report['split'])}")
    if "nfe" in report:  # samples were drawn (no sample metric exists for text yet)
        opts = " ".join(f"{k}={_short(v)}" for k, v in report["options"].items())
        nfe = f", NFE {report['nfe']:.0f}"
        lines.append(f"  sampling: {opts or 'defaults'}{nfe}")
        lines.append(
            f"  {report['n']} samples x {report['seeds']} seed(s) vs {report['reference']}"
        )
        if report.get("floor"):
            lines.append(f"  floor: {report['floor']}")
    if report.get("note"):
        lines.append(f"  note: {report['note']}")
    feats = report.get("features")
    if feats:
        acc = feats.get("accuracy")
        what = f", held-out accuracy {acc:.2%}" if acc is not None else ""
        lines.append(f"  features: {feats['kind']} network {feats['hash']}{what}")
    metrics = report.get("metrics", {})
    if metrics:
        lines.append(f"  {'metric':<18} {'value':>22} {'floor':>10}  better  unit")
        for name, m in metrics.items():
            val = f"{m['value']:.4g}"
            if m.get("std"):
                val += f" ± {m['std']:.2g}"
            floor = "-" if m.get("floor") is None else f"{m['floor']:.4g}"
            lines.append(f"  {name:<18} {val:>22} {floor:>10}  {m['better']:<6}  {m['unit']}")
    inc = report.get("inception_fid")
    if inc:
        lines.append(
            f"  {'inception_fid':<18} {inc['value']:>22.4g} {'-':>10}  lower   {inc['unit']}"
        )
    nll = report.get("nll")
    if nll:
        unit = nll_unit(nll)
        err = nll.get(f"{unit}_stderr")
        pm = f" ± {err:.4f}" if err is not None else ""
        extra = f" (true law: {nll['true_nats']:.4f} nats)" if "true_nats" in nll else ""
        if "gaussian_nats" in nll:
            extra = (
                f" (full-covariance Gaussian on the training rows: {nll['gaussian_nats']:.4f} nats)"
            )
        per = NLL_UNITS[unit]
        if nll.get("of") == "codes":
            extra += " (of the stage-1 codes, not of the pixels)"
        for b in nll.get("bounds", []):
            lines.append(
                f"  {'nll':<18} {b['nats']:.4f} nats, {b[unit]:.4f} ± {b[f'{unit}_stderr']:.4f} "
                f"{per} [{b['kind']}]"
            )
        lines.append(
            f"  {'nll':<18} {nll['nats']:.4f} nats, {nll[unit]:.4f}{pm} {per} "
            f"[{nll['kind']}]{extra}"
        )
    return "\n".join(lines)


SPLIT_WORDS = {
    "test": "the test split (never seen by training or checkpoint selection)",
    "val": "the validation split (it chose the checkpoint: for diagnosis, not for reporting)",
    "file": "the data given with --data",
    "fresh": "fresh draws of the true law",
}


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


__all__ = [
    "SCHEMA",
    "RealSets",
    "check_can_evaluate",
    "evaluate",
    "format_report",
    "all_examples",
    "held_out_examples",
    "held_out_nll",
    "real_sets",
    "reference_draws",
    "set_sizes",
    "split_of",
]
