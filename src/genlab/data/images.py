"""Image data sets: scikit-learn's 8x8 digits, MNIST (bundled test set or any IDX pair), folders
of PNG/JPEG files and uint8 arrays.

Every image set is float32 ``(N, C, H, W)`` scaled linearly to ``[-1, 1]`` (channels first), with
int64 labels when known. ``meta["levels"]`` is the number of intensity levels of the source (256
for 8-bit data, 17 for digits) and ``meta["bits"] = 8`` for 8-bit sources, for dequantization and
bits per dimension.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from genlab.data.base import Dataset, asset, check_labels, from_examples, require_file
from genlab.data.image_cache import decode_folder, map_rows
from genlab.data.store import Uint8Images, uint8_rows
from genlab.errors import DataError
from genlab.registry import DATASETS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MNIST_SHA256 = {
    "mnist/t10k-images-idx3-ubyte.gz": "9fe7630f90c0e670227960a294637bc2e78a29d724810e24204eb342c9f033a1",
    "mnist/t10k-labels-idx1-ubyte.gz": "2c54c993d38068b3c3adb720a5cdee07065a066a7b36e7d1df720548d6359eba",
}


def from_uint8(
    arr: np.ndarray,
    labels: np.ndarray | None,
    name: str,
    *,
    n: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    source: str,
    meta: dict | None = None,
    nchw: bool = False,
) -> Dataset:
    """uint8 images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (``C`` in 1, 3, 4; channels
    last when ambiguous, unless ``nchw``) -> a Dataset that reads as ``x / 127.5 - 1`` in
    ``[-1, 1]`` and keeps the bytes (:class:`~genlab.data.store.Uint8Images`)."""
    if arr.dtype != np.uint8:
        raise DataError(f"{source}: images must be uint8 (0..255), got dtype {arr.dtype}")
    if nchw:
        pass
    elif arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[3] in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    elif not (arr.ndim == 4 and arr.shape[1] in (1, 3, 4)):
        raise DataError(
            f"{source}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4; "
            f"got shape {tuple(arr.shape)}"
        )
    if arr.size == 0:
        raise DataError(f"{source}: no images (shape {tuple(arr.shape)})")
    x = Uint8Images(uint8_rows(arr))  # no copy of a writable array or file map
    y = None if labels is None else torch.from_numpy(check_labels(labels, len(x), source))
    meta = {"source": source, "bits": 8, "levels": 256, **(meta or {})}
    return from_examples(
        name,
        "images",
        x,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        labels=y,
        meta=meta,
    )


@DATASETS.register("digits", help="scikit-learn 8x8 handwritten digits, 1797 images, 10 classes")
def load_digits(
    *, n: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> Dataset:
    """scikit-learn's 8x8 digits (UCI optical recognition of handwritten digits, test part):
    1797 images with values 0..16, scaled by ``x / 8 - 1`` to ``[-1, 1]``; shape ``(N, 1, 8, 8)``."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy(d.images).to(torch.float32)[:, None] / 8 - 1
    y = torch.from_numpy(d.target).to(torch.int64)
    meta = {"source": "sklearn.datasets.load_digits", "levels": 17}
    return from_examples(
        "digits",
        "images",
        x,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        labels=y,
        num_classes=10,
        meta=meta,
    )


@DATASETS.register("mnist", help="MNIST 28x28 digits (bundled 10k test set), 10 classes")
def load_mnist(
    *, n: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> Dataset:
    """MNIST's 10,000-image test set shipped in ``genlab/assets/mnist`` (checked by SHA-256),
    ``(N, 1, 28, 28)`` in ``[-1, 1]`` with labels. For the training set use
    ``load(path=folder_with_idx_files)``."""
    images, labels = (asset(rel, sha) for rel, sha in MNIST_SHA256.items())
    return _idx_dataset(
        "mnist",
        images,
        labels,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )


def load_directory(
    path: str | Path,
    *,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    size: int | tuple[int, int] | None = None,
    prefix: str | None = None,
    skip_bad: bool = False,
    workers: int = 0,
) -> Dataset:
    """Images from a folder: an IDX pair (``<prefix>-images-idx3-ubyte[.gz]`` and
    ``<prefix>-labels-idx1-ubyte[.gz]``; ``prefix`` picks one when there are several, default
    ``train``) or PNG/JPEG files (see :func:`load_image_folder`; ``size`` resizes, ``skip_bad``
    leaves out files that cannot be used, ``workers`` decode in parallel)."""
    path = require_file(path, "folder")
    if prefix is not None and not isinstance(prefix, str):
        raise DataError(f"prefix= must be a file name prefix such as 'train', got {prefix!r}")
    pairs = _idx_pairs(path)
    if not pairs:
        if prefix is not None:
            raise DataError(
                f"{str(path)!r} holds no IDX files, so prefix={prefix!r} does not apply"
            )
        return load_image_folder(
            path, n=n, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
            size=size, skip_bad=skip_bad, workers=workers,
        )  # fmt: skip
    if size is not None or skip_bad or workers:
        raise DataError(
            f"{str(path)!r} holds IDX files; size=, skip_bad= and workers= apply only to "
            "PNG/JPEG folders"
        )
    if prefix is None:
        prefix = "train" if "train" in pairs or len(pairs) > 1 else next(iter(pairs))
    if prefix not in pairs:
        raise DataError(f"{str(path)!r} has no IDX pair {prefix!r}; found {sorted(pairs)}")
    images, labels = pairs[prefix]
    return _idx_dataset(
        path.name,
        images,
        labels,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )


def load_image_folder(
    path: str | Path,
    *,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    size: int | tuple[int, int] | None = None,
    skip_bad: bool = False,
    workers: int = 0,
) -> Dataset:
    """PNG/JPEG images from a folder (files sorted by name). With sub-folders, each sub-folder is a
    class (labels in sorted folder order, ``meta["classes"]``). All grayscale -> ``C = 1``, else
    RGB (alpha dropped). All images must share one size unless ``size=(H, W)`` (or an int) is given,
    which resizes them (bicubic).

    The folder is decoded once into a uint8 file in the image cache
    (:mod:`genlab.data.image_cache`, ``workers`` processes decode in parallel) that later starts map
    into memory. A file that cannot be decoded or has another size is an error naming it (and
    counting the others), unless ``skip_bad=True`` leaves such files out."""
    path = require_file(path, "folder")
    with os.scandir(path) as it:
        subdirs = {e.name: _image_names(e.path) for e in it if e.is_dir()}
    classes = sorted(c for c, names in subdirs.items() if names)
    if classes:  # names relative to the folder, in sorted order
        files = [(f"{c}/{f}", i) for i, c in enumerate(classes) for f in subdirs[c]]
    else:
        files = [(f, None) for f in _image_names(path)]
    if not files:
        raise DataError(f"{str(path)!r} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    if n is not None:
        files = files[: int(n)]
        if not files:
            raise DataError(f"n={n} keeps none of the images in {str(path)!r}")
    if not isinstance(skip_bad, bool):
        raise DataError(f"skip_bad= must be true or false, got {skip_bad!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise DataError(
            f"workers= must be a whole number >= 0 of decoding processes, got {workers!r}"
        )
    arr, labels, _ = decode_folder(
        path, files, _image_size(size), skip_bad=skip_bad, workers=workers
    )
    meta = {"classes": classes} if classes else {}
    # from_uint8 splits at random, so files sorted by class do not bias the split.
    return from_uint8(
        arr,
        labels,
        path.name,
        n=None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        source=str(path),
        meta=meta,
        nchw=True,
    )


def _image_size(size: object) -> tuple[int, int] | None:
    """``size=`` as ``(H, W)``: an int for a square, or a pair of positive ints (or None)."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else size
    if (
        isinstance(pair, (tuple, list))
        and len(pair) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        return int(pair[0]), int(pair[1])
    raise DataError(f"size= must be a positive int or a pair (H, W) of them, got {size!r}")


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an IDX file (gzipped or not) of unsigned bytes with ``ndim`` dimensions.

    Format (LeCun et al.): magic ``00 00 08 <ndim>`` (``08`` = uint8), then ``ndim`` big-endian
    int32 sizes, then the data.
    """
    path = require_file(path)
    try:
        if path.suffix == ".gz":
            raw = gzip.decompress(path.read_bytes())
        else:
            with open(path, "rb") as f:
                raw = f.read(4 + 4 * 255)  # the header (at most 255 dimensions)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"could not read IDX file {str(path)!r} (corrupt?): {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number {raw[:4].hex()})")
    if raw[2] != 0x08:
        raise DataError(
            f"{str(path)!r}: IDX data type 0x{raw[2]:02x} is not supported (only uint8, 0x08)"
        )
    if raw[3] != ndim:
        raise DataError(f"{str(path)!r}: expected a {ndim}-D IDX array, the header says {raw[3]}-D")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{str(path)!r}: IDX header is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    mapped = path.suffix != ".gz"
    size = (path.stat().st_size if mapped else len(raw)) - (4 + 4 * ndim)
    if size != int(np.prod(shape)):
        raise DataError(
            f"{str(path)!r}: the header promises shape {shape} ({int(np.prod(shape))} bytes) but "
            f"the file holds {size} bytes of data (truncated or corrupt)"
        )
    if mapped:  # uncompressed: mapped copy-on-write, read only where used
        if size == 0:
            return np.zeros(shape, np.uint8)
        return map_rows(path, shape, offset=4 + 4 * ndim)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_dataset(
    name: str,
    images: Path,
    labels: Path,
    *,
    n: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> Dataset:
    x = read_idx(images, 3)
    y = read_idx(labels, 1)
    if len(x) != len(y):
        raise DataError(
            f"{str(images)!r} has {len(x)} images but {str(labels)!r} has {len(y)} labels"
        )
    return from_uint8(
        x,
        y,
        name,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        source=str(images),
    )


def _idx_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """``prefix -> (images, labels)`` for every complete IDX pair in ``folder``."""
    pairs = {}
    for f in sorted(folder.iterdir()):
        for suffix in ("-images-idx3-ubyte", "-images-idx3-ubyte.gz"):
            if f.name.endswith(suffix):
                prefix = f.name[: -len(suffix)]
                label = folder / f.name.replace("-images-idx3-", "-labels-idx1-")
                if label.exists():
                    pairs[prefix] = (f, label)
    return pairs


def _image_names(folder: str | Path) -> list[str]:
    """The names of the PNG/JPEG files in ``folder``, sorted (plain strings: a folder of 200,000
    files is listed in a fraction of a second)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
