"""Score samples from anywhere (``genlab score``): an array, an image folder or IDX file, or a
``.txt`` of texts, drawn by genlab or by any other library, against a data set, on the same
yardstick as ``genlab eval``: every metric of the data's kind beside its real-data floor, on the
test split by default, with genlab's feature network for images (trained on the data's training
split, cached by its content hash).

The samples take the place of a model's draws in :func:`genlab.eval.evaluate.sample_metrics`:
seed ``s`` scores the ``s``-th block of ``n`` samples against the reference set and floor that
``genlab eval`` uses for its seed ``s``. So a run's own samples (``genlab sample RUN --n N``)
scored with ``--data RUN`` give exactly the figures of ``genlab eval RUN --n N --seeds 1``
(a test checks it). There is no likelihood: the samples come without a model.

What the samples may be (:func:`read_samples`):

- points: a float ``(N, d)`` ``.npy``/``.npz``/``.csv`` with the data's ``d``;
- images: ``.npy``/``.npz`` as uint8 (0..255) or floats in genlab's range [-1, 1] (clipped to it,
  as ``genlab eval`` clips its own samples), ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``;
  or an image folder, IDX folder or one IDX images file (``*-images-idx3-ubyte[.gz]``, with
  its labels file beside it when there is one) read in file order. An ``.npz`` may hold ``labels`` (the
  class each sample was drawn for): then the class accuracy is scored too;
- text: a ``.txt`` of texts separated as ``genlab sample`` writes them (a line of 40 ``-``
  between blank lines), or one text; or an integer ``(N, L)`` array of token ids. Texts are cut
  to the shortest one's length (the metrics compare rows of one length). Text is scored by
  generative perplexity under an autoregressive run on the same text (``--scorer``), beside the
  samples' unigram entropy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.config import EvalConfig
from genlab.data.base import Dataset, require_file
from genlab.errors import DataError
from genlab.eval.evaluate import (
    EvalReport,
    SampleSource,
    _Stages,
    _with_split,
    available_needs,
    feature_network_for,
    sample_metrics,
    scorer,
    set_sizes,
)
from genlab.eval.heldout import SPLIT_NAMES, held_out_examples, real_sets, split_of
from genlab.eval.metrics import check_metrics, metrics_for

# images as floats may overshoot [-1, 1] a little (samplers do; they are clipped); beyond this
# they are on another scale (0..255 or 0..1 by mistake is caught by the message)
FLOAT_IMAGE_LIMIT = 2.0


def read_samples(
    path: str | Path, like: Dataset
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """The samples in ``path`` as ``like``'s examples are held (float64 points, float32 images in
    [-1, 1], int64 token rows), their labels (or None) and a record of them (path, sha256 of the
    file's bytes, count, and a note where they were cut or clipped). A wrong kind, shape, range or
    channel count is a :class:`DataError` in one line."""
    p = require_file(path, "samples")
    note = None
    if like.kind == "tokens":
        x, note = _text_rows(p, like)
        labels = None
    elif p.is_file() and "-idx3-ubyte" in p.name:  # one IDX file of images, as MNIST ships
        from genlab.data.images import read_idx

        if like.kind != "images":
            raise DataError(f"{str(p)!r} holds images; the data {like.name!r} holds {like.kind}")
        x, note = _images(read_idx(p, 3), like, str(p))
        labels = None
        sibling = p.with_name(p.name.replace("-images-idx3-", "-labels-idx1-"))
        if sibling != p and sibling.is_file():
            labels = _labels(read_idx(sibling, 1), len(x), str(sibling))
    elif p.is_dir() or p.suffix.lower() not in (".npy", ".npz", ".csv"):
        if like.kind != "images":
            raise DataError(
                f"{str(p)!r} is not an array (.npy, .npz, .csv); the data {like.name!r} holds "
                f"{like.kind}"
            )
        from genlab.data import load

        ds = _in_file_order(load(path=p, val_fraction=0.0, test_fraction=0.0, seed=0))
        if ds.kind != "images":
            what = "text" if ds.kind == "tokens" else ds.kind
            raise DataError(f"{str(p)!r} holds {what}; the data {like.name!r} holds images")
        x, labels = ds.train, ds.labels_train
    else:
        arr, labels_arr = _array(p)
        if like.kind == "images":
            x, note = _images(arr, like, str(p))
        else:
            x = _points(arr, like, str(p))
        labels = None if labels_arr is None else _labels(labels_arr, len(x), str(p))
    record = {"path": str(p), "sha256": _sha256(p), "count": len(x)}
    if note:
        record["note"] = note
    return x, labels, record


def score(
    samples: torch.Tensor,
    dataset: Dataset,
    cfg: EvalConfig,
    *,
    labels: torch.Tensor | None = None,
    given: dict[str, Any] | None = None,
    features: Any = None,
    progress: bool = False,
) -> EvalReport:
    """Score ``samples`` (held as ``dataset``'s examples are; see :func:`read_samples`) against
    ``dataset``'s held-out split ``cfg.split`` (fresh draws for a known law) with every metric of
    its kind (``cfg.metrics``) and the real-data floors, over ``cfg.seeds`` blocks of ``cfg.n``
    samples. ``labels``: the class each sample was drawn for (the class accuracy). ``given``:
    the samples' record for the report. Returns the report (read as the ``metrics.json``
    mapping, with ``"samples_given"`` in place of the sampling options)."""
    say = _Stages(progress, "score")
    kind = dataset.kind
    where = split_of(dataset, None, cfg.split)
    if where in SPLIT_NAMES and len(held_out_examples(dataset, None, cfg.split)[0]) == 0:
        raise DataError(
            f"the data {dataset.name!r} has no {SPLIT_NAMES[where]} (data.{where}_fraction is 0 "
            "or the data is too small): raise it"
        )
    if cfg.n * cfg.seeds > len(samples):
        raise DataError(
            f"{len(samples)} samples given: {cfg.n} per seed x {cfg.seeds} seed(s) needs "
            f"{cfg.n * cfg.seeds} (lower --n or --seeds)"
        )
    if labels is not None:
        if dataset.labels_train is None:
            raise DataError(f"the samples come with labels; the data {dataset.name!r} has none")
        classes = int(dataset.labels_train.max()) + 1
        if int(labels.max()) >= classes:
            raise DataError(
                f"the samples' labels go up to {int(labels.max())}; the data has {classes} classes"
            )
    shape = list(samples.shape[1:])
    report = EvalReport("samples", {"name": dataset.name, "kind": kind, "shape": shape}, where)
    report.given = given
    real = real_sets(dataset, None, cfg.split)
    fnet, finfo = feature_network_for(kind, dataset, cfg, features, report, say)
    drawn_for = None if labels is None or finfo is None else finfo.num_classes  # (given classes)
    available = available_needs(fnet, finfo, drawn_for)
    rows_scorer = None
    if kind == "tokens":
        if not cfg.scorer:
            raise DataError(
                "text samples are scored by their generative perplexity under an autoregressive "
                "run on the same text: give --scorer RUN (a gpt run, say)"
            )
        rows_scorer = scorer(cfg.scorer, dataset.meta.get("vocab"), kind)
        available.add("scorer")
    elif cfg.scorer:
        raise DataError(f"--scorer scores text samples; the data {dataset.name!r} holds {kind}")
    if dataset.modes() is not None:
        available.add("modes")
    names = cfg.metrics if cfg.metrics is not None else metrics_for(kind, available)
    records = check_metrics(names, kind, available)
    n = set_sizes(cfg, real)
    if n < 2:
        raise DataError(f"{n} real example(s) to compare the samples with: too few (at least 2)")
    report.options, report.n, report.seeds = {}, n, cfg.seeds
    report.reference_what = "fresh draws of the true law" if real is None else real.reference_what
    notes = [given["note"]] if given and given.get("note") else []
    if real is not None and n < cfg.n:
        notes.append(
            f"n capped at {n}: {len(real.reference)} held-out examples to compare with and "
            f"{len(real.floor)} training examples for the floor"
        )
    report.note = "; ".join(notes) or None
    if kind == "images":
        samples = samples.float().clamp(-1.0, 1.0)  # as genlab eval holds its own samples
    elif kind == "points":
        samples = samples.double()

    def draw(seed: int, count: int, _labels: Any, _g: Any):
        block = slice(seed * count, (seed + 1) * count)
        return samples[block], None, (None if labels is None else labels[block])

    source = SampleSource(draw, what="scoring")
    sample_metrics(source, dataset, real, cfg, records, n, fnet, report, rows_scorer, say)
    report.metrics = _with_split(report.metrics, where)
    return report


def _array(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The samples' array (and labels) of an ``.npy``, ``.npz`` or ``.csv`` file."""
    from genlab.data import load

    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.files)
                key = next((k for k in ("samples", "x", "images") if k in keys), None)
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None:
                    raise DataError(
                        f"{str(p)!r} holds {keys}: name the samples 'samples' or 'x' (and their "
                        "classes 'labels')"
                    )
                lab = next((k for k in ("labels", "y") if k in keys and k != key), None)
                return z[key], (z[lab] if lab else None)
        except DataError:
            raise
        except Exception as e:  # a damaged archive fails in many ways
            raise DataError(f"could not read {str(p)!r} as an .npz archive: {e}") from None
    if p.suffix.lower() == ".csv":
        ds = _in_file_order(load(path=p, val_fraction=0.0, test_fraction=0.0, seed=0))
        return ds.train.numpy(), None
    try:
        return np.load(p, allow_pickle=False), None
    except Exception as e:
        raise DataError(f"could not read {str(p)!r} as a .npy array: {e}") from None


def _in_file_order(ds: Dataset) -> Dataset:
    """A data set loaded whole (no held-out part) in the order of its file: the loaders shuffle
    (the split's permutation, seed 0), which would change which samples fall in each seed's block
    and the subsets of KID and the classifier score."""
    import dataclasses

    from genlab.data.base import split

    order = torch.argsort(split(len(ds.train), 0.0, 0)[0])
    labels = None if ds.labels_train is None else ds.labels_train[order]
    return dataclasses.replace(ds, train=ds.train[order], labels_train=labels)


def _points(arr: np.ndarray, like: Dataset, source: str) -> torch.Tensor:
    from genlab.data.arrays import as_points

    if arr.ndim > 2:
        raise DataError(
            f"{source}: samples of shape {tuple(arr.shape[1:])}; the data {like.name!r} holds "
            f"points of dimension {like.shape[0]}"
        )
    x = as_points(arr, source)
    if tuple(x.shape[1:]) != tuple(like.shape):
        raise DataError(
            f"{source}: points of dimension {x.shape[1]}; the data {like.name!r} has dimension "
            f"{like.shape[0]}"
        )
    return x.double()


def _images(arr: np.ndarray, like: Dataset, source: str) -> tuple[torch.Tensor, str | None]:
    """uint8 or float images in any of the usual layouts -> ``(N, C, H, W)`` float32 in [-1, 1]."""
    c, h, w = like.shape
    want = f"{c}x{h}x{w} images (C x H x W) like the data {like.name!r}"
    if arr.dtype.kind not in "uif":
        raise DataError(f"{source}: expected numbers, got an array of dtype {arr.dtype}")
    if arr.ndim == 3 and c == 1:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise DataError(f"{source}: samples of shape {tuple(arr.shape[1:])}; expected {want}")
    if arr.shape[1:] != (c, h, w) and arr.shape[1:] == (h, w, c):
        arr = arr.transpose(0, 3, 1, 2)  # channels last
    if arr.shape[1:] != (c, h, w):
        got = arr.shape[1:]
        what = f"{got[0]} channel(s)" if got[1:] == (h, w) else f"shape {tuple(got)}"
        raise DataError(f"{source}: samples with {what}; expected {want}")
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32)) / 127.5 - 1, None
    if arr.dtype.kind != "f":
        raise DataError(
            f"{source}: images must be uint8 (0..255) or floats in [-1, 1]; got dtype {arr.dtype}"
        )
    from genlab.data.arrays import check_finite

    check_finite(arr, source)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -FLOAT_IMAGE_LIMIT or hi > FLOAT_IMAGE_LIMIT:
        raise DataError(
            f"{source}: float images range from {lo:.4g} to {hi:.4g}; genlab's images are in "
            "[-1, 1] (give floats as x / 127.5 - 1, or uint8 0..255)"
        )
    note = None
    if lo >= 0.0:
        note = (
            f"every value is in [0, {hi:.3g}]: if these images are in [0, 1], they were read as "
            "[-1, 1] (give x * 2 - 1)"
        )
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return x, note


def _labels(arr: np.ndarray, n: int, source: str) -> torch.Tensor:
    from genlab.data.base import check_labels

    return torch.from_numpy(check_labels(arr, n, source)).long()


def _text_rows(p: Path, like: Dataset) -> tuple[torch.Tensor, str | None]:
    """Token rows ``(N, L)`` of a ``.txt`` of samples (or an integer array of ids)."""
    from genlab.data.text import SAMPLE_SEPARATOR, decode_utf8, encode
    from genlab.data.tokenizer import tokenizer_of

    vocab = like.meta["vocab"]
    V = tokenizer_of(vocab).vocab_size
    if p.suffix.lower() in (".npy", ".npz"):
        arr, _ = _array(p)
        if arr.dtype.kind not in "iu" or arr.ndim != 2:
            raise DataError(
                f"{str(p)!r}: text samples as an array are integer token ids (N, L); got dtype "
                f"{arr.dtype}, shape {tuple(arr.shape)}"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= V):
            raise DataError(
                f"{str(p)!r}: token ids must be in [0, {V}) (the data's tokenizer, "
                f"{tokenizer_of(vocab).describe()}); got {arr.min()}..{arr.max()}"
            )
        return torch.from_numpy(arr.astype(np.int64)), None
    if p.is_dir() or p.suffix.lower() != ".txt":
        raise DataError(f"{str(p)!r}: text samples come as a .txt (or an .npy of token ids)")
    text = decode_utf8(p.read_bytes(), str(p))
    texts = text.split(SAMPLE_SEPARATOR) if SAMPLE_SEPARATOR in text else [text]
    if texts and texts[-1].endswith("\n"):
        texts[-1] = texts[-1][:-1]  # (genlab sample ends the file with a newline)
    texts = [t for t in texts if t]
    if not texts:
        raise DataError(f"{str(p)!r} holds no text")
    ids = [encode(t, vocab) for t in texts]
    length = min(len(t) for t in ids)
    rows = torch.stack([t[:length] for t in ids])
    note = None
    if any(len(t) != length for t in ids):
        note = f"the {len(texts)} texts were cut to the shortest one's {length} tokens"
    return rows, note


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
