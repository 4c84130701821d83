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

import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from genlab.config import EvalConfig
from genlab.data.base import Dataset
from genlab.errors import CheckpointError, DataError
from genlab.eval.heldout import (
    FLOOR_SEED,
    REFERENCE_SEED,
    SPLIT_NAMES,
    RealSets,
    all_examples,
    content_sha256,
    held_out_examples,
    real_sets,
    split_of,
)
from genlab.eval.likelihood import held_out_nll
from genlab.eval.metrics import (
    NEEDS,
    Comparison,
    Metric,
    check_metrics,
    get_metric,
    metrics_for,
)
from genlab.eval.table import format_report
from genlab.models.base import GenerativeModel
from genlab.progress import reporting
from genlab.runs import load_run

SCHEMA = 1
METRIC_SEED = 3_000_017  # randomised metrics (sliced W2 directions, KID subsets): the same for
# the model and its floor, so the two are compared on equal terms
IMAGE_BATCH = 500  # images sampled per call (the U-Net's activations bound the memory)


def set_sizes(cfg: EvalConfig, real: RealSets | None) -> int:
    """Samples per seed, which is also the size of the reference set and of the floor's set (the
    metrics' biases depend on the sizes, so the three are equal): ``eval.n``, capped at the
    held-out examples (and, with the floor, at the training examples)."""
    if real is None:
        return cfg.n
    n = min(cfg.n, len(real.reference))
    return min(n, len(real.floor)) if cfg.floor else n


@dataclass
class EvalReport(Mapping[str, Any]):
    """One evaluation, built field by field and read as the ``metrics.json`` mapping it serialises
    to (:meth:`to_dict`; ``docs/metrics.md`` documents the schema). ``samples`` and ``reference``
    (the first seed's samples and real examples, for plots) are never serialised."""

    family: str
    data: dict[str, Any]
    split: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: dict[str, Any] | None = None  # the feature network that image metrics used
    # what the samples were drawn with and compared to (present when the model was sampled)
    options: dict[str, Any] | None = None
    n: int | None = None
    seeds: int | None = None
    reference_what: str | None = None
    note: str | None = None
    nfe: float | None = None  # mean function evaluations per sample, with the timings below
    seconds: dict[str, float] | None = None
    floor: str | None = None  # what the real-data floor compared (None: no floor)
    nll: dict[str, Any] | None = None
    inception_fid: float | None = None
    given: dict[str, Any] | None = None  # `genlab score`: the samples scored (file, hash, count)
    schema: int = SCHEMA
    samples: torch.Tensor | None = field(default=None, repr=False, compare=False)
    reference: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` record (keys in the order a reader meets them)."""
        out: dict[str, Any] = {
            "schema": self.schema, "family": self.family, "data": self.data, "split": self.split,
            "metrics": self.metrics,
        }  # fmt: skip
        if self.features is not None:
            out["features"] = self.features
        if self.given is not None:
            out["samples_given"] = self.given
        if self.options is not None:
            out.update(options=self.options, n=self.n, seeds=self.seeds)
            out["reference"] = self.reference_what
        if self.note is not None:
            out["note"] = self.note
        if self.seconds is not None:  # samples were scored (nfe: None for given samples)
            out.update(nfe=self.nfe, seconds=self.seconds, floor=self.floor)
        if self.nll is not None:
            out["nll"] = self.nll
        if self.inception_fid is not None:
            out["inception_fid"] = self.inception_fid
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


class _Stages:
    """``with say("sampling: ..."):`` prints the stage when it starts and its time when it ends, on
    stderr (``genlab eval``; silent otherwise), and inside it the progress of the batched loops
    (:mod:`genlab.progress`: a held-out likelihood's done/total and ETA), so a long evaluation is
    never silent."""

    def __init__(self, on: bool, command: str = "eval") -> None:
        self.on = on
        self.command = command

    @contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        if not self.on:
            yield
            return
        print(f"{self.command}: {what} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with reporting(f"{self.command}: {what.split(':')[0]}"):  # done/total, ETA of batched loops
            yield
        print(f"{self.command}: {what.split(':')[0]} done in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip


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
    progress: bool = False,
) -> EvalReport:
    """Sample-based metrics with their floors and, where the model has one, the held-out
    likelihood; see the module docstring. ``held_out``: the reference data instead of the run's
    own. ``features``: a ``(network, info)`` pair from :mod:`genlab.feature_networks` (images;
    default: ``eval.features`` or genlab's cached network for ``dataset``). Returns the report
    (read as the ``metrics.json`` mapping); with ``keep_samples`` its ``samples`` and
    ``reference`` are the first seed's, for plots."""
    model.eval()
    say = _Stages(progress)
    ref_data = held_out if held_out is not None else dataset
    where = split_of(dataset, held_out, cfg.split)
    data = {"name": ref_data.name, "kind": ref_data.kind, "shape": list(model.spec.shape)}
    report = EvalReport(model.family, data, where)
    if held_out is not None:
        _check_same_kind(model, dataset, held_out)
        data["sha256"] = content_sha256(all_examples(held_out)[0])
    own = held_out_examples(dataset, held_out, cfg.split)
    if where in SPLIT_NAMES and len(own[0]) == 0:
        raise DataError(
            f"the data {dataset.name!r} of this run has no {SPLIT_NAMES[where]} "
            f"(data.{where}_fraction is 0, the data is too small, or the run was trained before "
            "genlab had a test split); evaluate on held-out data with --data FILE"
            + (", or on the validation split with --split val" if where == "test" else "")
        )
    if not model.can_sample:  # not a generative model (a noise classifier): its own figures
        report.metrics = _with_split(model.report(*own), where)
        return report
    opts = model.resolve_options(cfg.options)  # an unknown option fails before any work
    model.resolve_likelihood_options(cfg.nll_options)
    real = real_sets(dataset, held_out, cfg.split)
    kind = ref_data.kind
    fnet, finfo = feature_network_for(kind, dataset, cfg, features, report, say)
    available = available_needs(fnet, finfo, model.label_classes(opts))
    score = None
    if cfg.scorer:
        score = scorer(cfg.scorer, model.spec.vocab, kind)
        available.add("scorer")
    if dataset.modes() is not None:
        available.add("modes")  # a Gaussian mixture: modes covered, high quality, reverse KL
    names = cfg.metrics if cfg.metrics is not None else metrics_for(kind, available)
    records = check_metrics(names, kind, available)
    n = set_sizes(cfg, real)
    if records and n < 2:
        raise DataError(f"{n} real example(s) to compare samples with: too few (at least 2)")
    report.options, report.n, report.seeds = _json_options(model, opts), n, cfg.seeds
    report.reference_what = "fresh draws of the true law" if real is None else real.reference_what
    if real is not None and n < cfg.n:
        fix = "give more data" if where == "file" else f"raise data.{where}_fraction"
        report.note = (
            f"n capped at {n}: {len(real.reference)} held-out examples to compare with and "
            f"{len(real.floor)} training examples for the floor ({fix}, or give a larger "
            "held-out set with --data)"
        )
    first = None
    if records or (keep_samples and kind != "tokens" and n > 0):  # (samples for plots)
        source = SampleSource.of_model(model, opts, IMAGE_BATCH if fnet is not None else n)
        first = sample_metrics(source, dataset, real, cfg, records, n, fnet, report, score, say)
    if cfg.nll and model.has_log_prob:
        count = "characters" if kind == "tokens" else "examples"
        with say(f"likelihood: at most {cfg.nll_n} held-out {count} (eval.nll_n, --nll-n)"):
            report.nll = held_out_nll(
                model, dataset, held_out, cfg.nll_n, cfg.nll_options, split=cfg.split
            )
    own_split = "val" if where == "fresh" else where  # (a known law's own figures: validation)
    report.metrics.update(_with_split(model.report(*own), own_split))
    for entry in report.metrics.values():
        entry.setdefault("split", where)
    if keep_samples and first is not None:
        report.samples, report.reference = first
    if verbose:
        print(format_report(report))
    return report


# --- samples against real data ------------------------------------------------------------------
@dataclass
class SampleSource:
    """Where an evaluation's samples come from: a model drawn under each seed's generator
    (:meth:`of_model`), or samples given from anywhere (``genlab score``). ``draw(seed, n, labels,
    generator) -> (x, nfe, labels)``; ``observed`` maps real examples to what the model represents
    (binarized images for a binary model; the identity for given samples); ``label_classes``: the
    classes a class-conditional model is asked for (None: unconditional)."""

    draw: Any
    observed: Any = None
    label_classes: int | None = None
    what: str = "sampling"

    @classmethod
    def of_model(cls, model: GenerativeModel, opts: dict[str, Any], batch: int) -> SampleSource:
        def draw(seed: int, n: int, labels: torch.Tensor | None, g: torch.Generator):
            return _draw(model, n, labels, g, opts, batch)

        return cls(draw, model.observed, model.label_classes(opts))

    def observe(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x if self.observed is None else self.observed(x, g)


def sample_metrics(
    source: SampleSource,
    dataset: Dataset,
    real: RealSets | None,
    cfg: EvalConfig,
    records: list[Metric],
    n: int,
    fnet: Any,
    report: EvalReport,
    score: Any = None,
    say: _Stages | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` samples per seed from ``source``, score them against each seed's reference with
    their real-data floors and fill ``report`` (metrics, NFE, timings); returns the first seed's
    samples and reference. ``score``: text, the scorer's log-likelihood of each row."""
    images = fnet is not None
    seconds = {"sampling": 0.0, "features": 0.0, "metrics": 0.0}
    values: dict[str, list[float]] = {r.name: [] for r in records}
    floors: dict[str, list[float]] = {r.name: [] for r in records}
    spread: dict[str, list[float]] = {r.name: [] for r in records}
    nfes, first = [], None
    k = source.label_classes
    modes = dataset.modes()
    say = say or _Stages(False)
    for seed in range(cfg.seeds):
        g = torch.Generator().manual_seed(seed)
        labels = None if k is None else _stratified_labels(n, k, real, g)
        t0 = time.perf_counter()
        with say(f"{source.what}: {n} samples, seed {seed + 1} of {cfg.seeds}"):
            x, nfe, labels = source.draw(seed, n, labels, g)
        seconds["sampling"] += time.perf_counter() - t0
        if nfe is not None:
            nfes.append(nfe)
        ref, floor, floor_i = _real_draws(dataset, real, n, seed, cfg.floor, x.shape[-1])
        seen = source.observe(ref, torch.Generator().manual_seed(REFERENCE_SEED + seed))
        if seen is not ref and seed == 0:  # a binary model sees binarized images, say
            report.reference_what += (
                " as the model represents data (model.observed, e.g. binarized), the floor too"
            )
        ref = seen
        if floor is not None:
            floor = source.observe(floor, torch.Generator().manual_seed(FLOOR_SEED + seed))
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
    report.nfe, report.seconds = (statistics.mean(nfes) if nfes else None), seconds
    if not cfg.floor:
        report.floor = None
    elif real is None:
        report.floor = f"{n} more fresh draws of the true law"
    else:
        report.floor = f"{n} {real.floor_what} (real data the model was trained on)"
    report.metrics = {
        rec.name: _entry(rec, values[rec.name], floors[rec.name], spread[rec.name], n, report)
        for rec in records
    }
    return first


def _entry(
    rec: Metric,
    values: list[float],
    floors: list[float],
    spread: list[float],
    n: int,
    report: EvalReport,
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
    if "features" in rec.needs and report.features:
        out["features"] = report.features["hash"]
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
    return stream[starts[:, None] + torch.arange(length)].long()


def scorer(path: str, vocab: str | None, kind: str):
    """``eval.scorer``: the log-likelihood (nats per row) of token rows under an autoregressive
    run on the same text (``vocab``: the samples' alphabet), refused with the reason when it
    cannot score these samples."""
    if kind != "tokens":
        raise DataError(f"eval.scorer scores text samples; this run's data holds {kind}")
    try:
        run = load_run(path)
    except CheckpointError as e:
        raise DataError(f"eval.scorer={path}: {e}") from None
    ar = run.model.eval()
    if ar.spec.vocab != vocab:
        from genlab.data.tokenizer import tokenizer_of

        theirs = tokenizer_of(ar.spec.vocab).describe() if ar.spec.vocab else "none"
        ours = tokenizer_of(vocab).describe() if vocab else "none"
        raise DataError(
            f"eval.scorer={path} was trained with another tokenizer ({theirs}; the samples' "
            f"is {ours}): score with an autoregressive run on the same text and tokenizer"
        )
    refused = DataError(
        f"eval.scorer={path} is a {ar.family} run: generative perplexity needs an exact "
        "likelihood (an autoregressive model such as gpt)"
    )
    if not ar.has_log_prob:
        raise refused

    @torch.no_grad()
    def score(x: torch.Tensor) -> torch.Tensor:
        lp = ar.log_prob(x.to(ar.device))
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
def feature_network_for(
    kind: str, dataset: Dataset, cfg: EvalConfig, features: Any, report: EvalReport, say: _Stages
) -> tuple[Any, Any]:
    """``(network, info)`` of the image metrics (``features``, or ``eval.features``, or genlab's
    cached network for ``dataset``), recorded in ``report``; ``(None, None)`` when no metric of
    the evaluation needs features."""
    wanted = None if cfg.metrics is None else [get_metric(m) for m in cfg.metrics]
    if kind != "images" or not (wanted is None or any("features" in m.needs for m in wanted)):
        return None, None
    if features is None:
        with say("features: the feature network of the data (trained once, then cached)"):
            features = _feature_network(dataset, cfg)
    report.features = _describe_features(features[1])
    return features


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


def available_needs(fnet: Any, finfo: Any, label_classes: int | None) -> set[str]:
    """What the image metrics of this evaluation can rely on (keys of ``metrics.NEEDS``):
    features, a classifying feature network, and samples drawn for given classes
    (``label_classes``: how many classes the samples were drawn for; None: unconditional)."""
    have: set[str] = set()
    if fnet is None:
        return have
    have.add("features")
    if finfo.num_classes:
        have.add("classes")
        if label_classes == finfo.num_classes:
            have.add("labels")
    return have


def _features(fnet: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features ``(n, F)`` (float64) and class probabilities ``(n, K)`` (or None)."""
    f = fnet.features(x).double()
    p = fnet.probs(x).double() if fnet.has_classes else None
    return f, p
