"""Points from array files: ``.npy``, ``.npz`` and ``.csv``, any dimension ``d >= 1``.

A 2-D array ``(N, d)`` is ``N`` points in ``R^d``; a 1-D array of ``N`` values is ``(N, 1)``. An
``.npz``/``.npy`` holding uint8 images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` is
handed to :func:`genlab.data.images.from_uint8`. Files are never unpickled
(``allow_pickle=False``). Every problem is a :class:`~genlab.errors.DataError` that names the file
and says what was wrong: missing (with a close sibling name), unreadable, wrong shape, non-numeric,
not finite, empty, unknown ``.npz`` key.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import torch

from genlab.data.base import Dataset, check_labels, from_examples, require_file
from genlab.data.images import from_uint8
from genlab.errors import DataError

IMAGE_KEYS = ("images", "x")  # .npz keys looked for first
LABEL_KEYS = ("labels", "y")


def load_npy(
    path: str | Path,
    *,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Points (or uint8 images) from a ``.npy`` file."""
    path = require_file(path)
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise DataError(
                f"could not read {str(path)!r}: not a .npy file (corrupt or truncated?)"
            )
    try:  # mapped copy-on-write: a uint8 image array is read lazily, never copied whole
        arr = np.load(path, allow_pickle=False, mmap_mode="c")
    except ValueError as e:
        raise _unreadable(path, e) from None
    except Exception as e:  # a damaged header fails in many ways inside NumPy (TokenError, ...)
        raise DataError(
            f"could not read {str(path)!r} as a .npy array (corrupt?): {_describe(e)}"
        ) from None
    return _points_or_images(
        arr, None, path, n=n, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )


def load_npz(
    path: str | Path,
    *,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    key: str | None = None,
) -> Dataset:
    """Points (or uint8 images) from an ``.npz`` archive: the array ``key`` (default ``images`` or
    ``x`` when present, else the only/first array), with labels from ``labels``/``y`` if present."""
    path = require_file(path)
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"could not read {str(path)!r}: not an .npz (zip) archive (corrupt or truncated?)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if not keys:
                raise DataError(f"{str(path)!r} holds no arrays")
            if key is not None and key not in keys:
                raise DataError(f"{str(path)!r} has no array {key!r}; its keys are {keys}")
            default = next((k for k in IMAGE_KEYS if k in keys), keys[0])
            key = key or default
            arr = z[key]
            label_key = next((k for k in LABEL_KEYS if k in keys and k != key), None)
            labels = z[label_key] if label_key else None
            noise = z["noise"] if "noise" in keys and key != "noise" else None
            for k, a in ((key, arr), (label_key, labels)):
                if a is not None and not isinstance(a, np.ndarray):  # a zip member not a .npy
                    raise DataError(f"{str(path)!r}: {k!r} is not a NumPy array (not an .npz?)")
    except DataError:
        raise
    except ValueError as e:
        raise _unreadable(path, e) from None
    except Exception as e:  # a damaged archive fails in many ways (BadZipFile, zlib.error, ...)
        raise DataError(
            f"could not read {str(path)!r} as an .npz archive (corrupt?): {_describe(e)}"
        ) from None
    source = f"{path}[{key!r}]"
    ds = _points_or_images(
        arr,
        labels,
        path,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        source=source,
    )
    if noise is not None:
        _attach_noise(ds, noise, arr, n, val_fraction, test_fraction, seed, source)
    return ds


def _attach_noise(ds, noise, arr, n, val_fraction, test_fraction, seed, source) -> None:
    """``noise`` paired example by example with ``arr`` (``genlab reflow`` writes such pairs):
    split exactly as the examples were."""
    from genlab.data.base import split

    if not isinstance(noise, np.ndarray) or noise.shape != arr.shape:
        raise DataError(
            f"{source}: 'noise' must pair with the examples, shape {arr.shape}, got "
            f"{getattr(noise, 'shape', None)}"
        )
    check_finite(noise, source + "['noise']")
    noise = torch.as_tensor(np.asarray(noise, dtype=np.float32))
    if n is not None:
        noise = noise[: int(n)]
    train, val, test = split(len(noise), val_fraction, seed, test_fraction)
    ds.noise_train, ds.noise_val, ds.noise_test = noise[train], noise[val], noise[test]


def load_csv(
    path: str | Path,
    *,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    delimiter: str = ",",
) -> Dataset:
    """Points from a CSV file of numbers, one point per row; a first row that is not all numbers is
    taken as a header (column names)."""
    path = require_file(path)
    if not (isinstance(delimiter, str) and len(delimiter) == 1 and delimiter not in '"\r\n'):
        raise DataError(
            f"delimiter= must be one character such as ',', ';' or '\\t', got {delimiter!r}"
        )
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f, delimiter=delimiter)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"could not read {str(path)!r} as CSV: {e}") from None
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]  # 1-based
    if not numbered:
        raise DataError(f"{str(path)!r} is empty: no rows")
    header = None
    if not all(_is_number(c) for c in numbered[0][1]):
        header = [c.strip() for c in numbered[0][1]]
        numbered = numbered[1:]
        if not numbered:
            raise DataError(f"{str(path)!r} has a header but no data rows")
    width = len(header) if header else len(numbered[0][1])
    values = np.empty((len(numbered), width), dtype=np.float64)
    for i, (line, row) in enumerate(numbered):
        if len(row) != width:
            raise DataError(f"{str(path)!r} line {line} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                col = f"column {j + 1}" + (f" ({header[j]!r})" if header else "")
                raise DataError(
                    f"{str(path)!r} line {line}, {col}: {cell!r} is not a number"
                ) from None
    meta = {"columns": header} if header else {}
    return _points(
        values,
        None,
        path,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        meta=meta,
    )


def _points_or_images(
    arr: np.ndarray,
    labels: np.ndarray | None,
    path: Path,
    *,
    n: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    source: str | None = None,
) -> Dataset:
    if arr.dtype == np.uint8 and arr.ndim in (3, 4):
        return from_uint8(
            arr,
            labels,
            path.stem,
            n=n,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            source=source or str(path),
        )
    return _points(
        arr,
        labels,
        path,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        source=source,
    )


def _points(
    arr: np.ndarray,
    labels: np.ndarray | None,
    path: Path,
    *,
    n: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    source: str | None = None,
    meta: dict | None = None,
) -> Dataset:
    x = as_points(arr, source or str(path))
    y = None
    if labels is not None:
        y = torch.as_tensor(check_labels(labels, len(x), source or str(path)))
    meta = {"source": source or str(path), **(meta or {})}
    return from_examples(
        path.stem,
        "points",
        x,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        labels=y,
        meta=meta,
    )


def as_points(arr: np.ndarray, source: str) -> torch.Tensor:
    """Validate an array of points and return it as float32 ``(N, d)`` (a 1-D array is ``(N, 1)``)."""
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{source}: expected numbers, got an array of dtype {arr.dtype} "
            "(strings, objects and complex numbers are not points)"
        )
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        hint = (
            " (images must be uint8 (N, H, W), (N, H, W, C) or (N, C, H, W))"
            if arr.ndim > 2
            else ""
        )
        raise DataError(
            f"{source}: expected a 2-D array of points (N, d), got a {arr.ndim}-D array of shape "
            f"{tuple(arr.shape)}{hint}"
        )
    if arr.size == 0:
        raise DataError(f"{source}: the array is empty (shape {tuple(arr.shape)})")
    check_finite(arr, source)
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(arr, dtype=np.float32)
    big = ~np.isfinite(x)
    if big.any():  # finite in float64 but beyond float32's ~3.4e38
        first = tuple(int(i) for i in np.argwhere(big)[0])
        raise DataError(
            f"{source}: {int(big.sum())} value(s) are too large for float32 (|x| > 3.4e38); the "
            f"first is at index {first if len(first) > 1 else first[0]} ({arr[first]})"
        )
    return torch.from_numpy(x)


def check_finite(arr: np.ndarray, source: str) -> None:
    """Raise a :class:`DataError` saying how many values are NaN/inf and where the first one is."""
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{source}: {int(bad.sum())} value(s) are NaN or infinite; the first is at index "
            f"{first if len(first) > 1 else first[0]} ({arr[first]})"
        )


def _unreadable(path: Path, e: ValueError) -> DataError:
    if "allow_pickle" in str(e) or "Python objects" in str(e):
        return DataError(
            f"{str(path)!r} holds Python objects (dtype=object), not numbers; genlab never "
            "unpickles data files: save a numeric array instead"
        )
    return DataError(f"could not read {str(path)!r} (corrupt or not a NumPy file): {_describe(e)}")


def _describe(e: Exception) -> str:
    """An exception as one line: its type and its message with whitespace collapsed."""
    return " ".join(f"{type(e).__name__}: {e}".split())


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
