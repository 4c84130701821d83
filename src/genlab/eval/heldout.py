"""Which real examples an evaluation compares with (``eval.split``): the test split by default, the
validation split for diagnosis, a given file, or fresh draws of a known law; the reference and the
floor's training examples drawn from them, each under its own seed; and the content hash that names a
given file in the report."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from genlab.data.base import Dataset
from genlab.errors import DataError

REFERENCE_SEED = 1_000_003  # reference draws never share a seed with model samples
FLOOR_SEED = 2_000_003
LIKELIHOOD_SEED = 4_000_037


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
