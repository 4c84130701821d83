"""Every data source behind one function, :func:`load`.

>>> from genlab.data import load, TOY
>>> ds = load("moons", n=50_000, val_fraction=0.1, seed=0)  # kind "points", ds.true = TOY["moons"]()
>>> ds = load(path="points.npy")                             # .npy / .npz / .csv, (N, d) points
>>> ds = load("mnist"); ds = load(path="folder_of_pngs/")     # kind "images", (N, C, H, W) in [-1, 1]
>>> ds = load("shakespeare"); ds = load(path="book.txt")      # kind "tokens", meta["vocab"]

Names are looked up in :data:`genlab.registry.DATASETS` (``genlab list`` shows them); paths are
read by the loader for their suffix (:data:`PATH_LOADERS`), folders by
:func:`genlab.data.images.load_directory`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genlab.data import arrays, images, tabular, text, toy  # noqa: F401  (their registrations)
from genlab.data.base import Dataset, TrueDistribution, require_file, split
from genlab.data.text import decode, encode
from genlab.data.toy import TOY
from genlab.errors import DataError
from genlab.registry import DATASETS

__all__ = [
    "PATH_LOADERS",
    "TOY",
    "Dataset",
    "TrueDistribution",
    "decode",
    "encode",
    "load",
    "split",
]

PATH_LOADERS: dict[str, Callable[..., Dataset]] = {
    ".npy": arrays.load_npy,
    ".npz": arrays.load_npz,
    ".csv": arrays.load_csv,
    ".txt": text.load_text,
}
"""File suffix -> loader ``(path, *, n, val_fraction, test_fraction, seed, **options) -> Dataset``."""


def load(
    name: str | None = None,
    *,
    path: str | Path | None = None,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load a registered data set by ``name`` or a file/folder by ``path`` (exactly one).

    ``n``: for synthetic sets the number of points drawn (default 50,000, from a generator seeded
    with ``seed``); for files, keep only the first ``n`` examples (characters for text).
    ``val_fraction`` / ``test_fraction``: shares held out for validation (checkpoint selection,
    early stopping) and for test (what ``genlab eval`` reports), a random split seeded with
    ``seed`` (contiguous blocks at the end for text: train, then validation, then test); a known
    law has no test part (its evaluation draws fresh samples). ``options``: loader-specific (e.g. ``key=`` for ``.npz``,
    ``size=`` for image folders, ``noise=`` for moons); an unknown one is a DataError.
    """
    if (name is None) == (path is None):
        raise DataError("give exactly one of a data set name or path=... to genlab.data.load")
    if name is not None:
        loader, args, what = DATASETS.get(name), (), f"data set {name!r}"
    else:
        p = require_file(path)
        loader, args, what = _path_loader(p), (p,), f"{str(p)!r}"
    _check_options(loader, options, what)
    return loader(
        *args, n=n, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, **options
    )


def _path_loader(path: Path) -> Callable[..., Dataset]:
    if path.is_dir():
        return images.load_directory
    loader = PATH_LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DataError(
            f"don't know how to read {str(path)!r}: supported files are "
            f"{', '.join(PATH_LOADERS)} and folders of images or IDX files"
        )
    return loader


def _check_options(loader: Callable[..., Dataset], options: dict[str, Any], what: str) -> None:
    params = inspect.signature(loader).parameters
    allowed = [
        k
        for k, p in params.items()
        if p.kind == p.KEYWORD_ONLY and k not in ("n", "val_fraction", "test_fraction", "seed")
    ]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        accepts = f"it accepts {', '.join(allowed)}" if allowed else "it takes no options"
        raise DataError(f"unknown option {unknown[0]!r} for {what}; {accepts}")
