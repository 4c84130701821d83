"""A folder of PNG/JPEG files decoded once into a uint8 file that later starts map into memory.

The first start decodes every file (in ``workers`` processes if asked) straight into a
``(N, C, H, W)`` uint8 file, ``$GENLAB_CACHE/images/<key>/images.u8``, so memory never holds more
than a block of images; later starts list the folder, find the key and map the file: seconds for
200,000 files. The key is the sha256 of the decoding options and of every file's relative name,
size and modification time, so a changed, added or removed file decodes the folder again. An
entry is written to a temporary folder and renamed into place, so a cache entry is whole or absent.

A file that cannot be decoded, or whose size differs from the first image's (without ``size=``),
is *bad*: the error names the first few bad files and counts them, and nothing is cached; with
``skip_bad=True`` the bad files are left out, named on stderr, and the entry remembers them.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from genlab.errors import DataError
from genlab.io import cache_root

FORMAT = 1  # bump when the layout of an entry changes
BLOCK = 512  # images decoded per block (per task with workers)
GRAY = ("1", "L", "LA", "I", "I;16", "F")
SHOWN = 5  # bad files named in an error


def images_dir() -> Path:
    return cache_root() / "images"


def folder_key(
    folder: Path, files: list[tuple[str, int | None]], size: tuple[int, int] | None
) -> str:
    """sha256 of the decoding options and each file's name (relative to ``folder``), size,
    modification time and label."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "size": size}).encode())
    base = str(folder)
    for name, label in files:
        st = os.stat(os.path.join(base, name))
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
    return h.hexdigest()


def decode_folder(
    folder: Path,
    files: list[tuple[str, int | None]],
    size: tuple[int, int] | None,
    *,
    skip_bad: bool = False,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, list[tuple[str, str]]]:
    """The images of ``files`` as a uint8 ``(N, C, H, W)`` array mapped from the cache (decoding
    them first if no entry matches), their labels (int64, or None when the files have none) and
    the bad files left out as ``(name, reason)``. ``C`` is 1 when every image is grayscale, else
    3 (RGB, alpha dropped)."""
    key = folder_key(folder, files, size)
    entry = images_dir() / key[:32]
    meta = _read_meta(entry, key)
    if meta is None:
        meta = _build(entry, key, folder, files, size, skip_bad=skip_bad, workers=workers)
    bad = [tuple(b) for b in meta["bad"]]
    if bad and not skip_bad:
        raise _bad_error(folder, bad, len(files))
    if bad:
        print(
            f"left out {len(bad)} bad image(s) of {str(folder)!r} (data.options.skip_bad): "
            + "; ".join(f"{a}: {b}" for a, b in bad[:SHOWN]),
            file=sys.stderr,
            flush=True,
        )
    shape = tuple(meta["shape"])
    rows = map_rows(entry / "images.u8", shape) if shape[0] else np.zeros(shape, np.uint8)
    labels = np.load(entry / "labels.npy", allow_pickle=False) if meta["labels"] else None
    return rows, labels, bad


def map_rows(
    path: Path, shape: tuple[int, ...], offset: int = 0, dtype: np.dtype | type = np.uint8
) -> np.memmap:
    """``path`` mapped copy-on-write as ``dtype`` ``shape`` (images: uint8 rows; token files),
    for random access: the kernel reads the pages a batch touches, not the 128 KB around each
    (which would make the resident memory of a few hundred batches that of the whole file)."""
    rows = np.memmap(path, dtype, mode="c", offset=offset, shape=shape)
    raw = getattr(rows, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_RANDOM"):
        raw.madvise(mmap.MADV_RANDOM)
    return rows


def _read_meta(entry: Path, key: str) -> dict | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        size = (entry / "images.u8").stat().st_size
    except OSError:
        size = None
    if meta.get("key") != key or size != int(np.prod(meta["shape"])):
        raise DataError(
            f"the image cache entry {str(entry)!r} is damaged (its size or key does not match); "
            "delete that folder and run again"
        )
    return meta


def _bad_error(folder: Path, bad: list[tuple[str, str]], total: int) -> DataError:
    lines = "; ".join(f"{name}: {why}" for name, why in bad[:SHOWN])
    more = f" (and {len(bad) - SHOWN} more)" if len(bad) > SHOWN else ""
    return DataError(
        f"{len(bad)} of the {total:,} images in {str(folder)!r} cannot be used: {lines}{more}. "
        "Fix or remove them, or pass skip_bad=True (data.options.skip_bad=true) to go on without them"
    )


def _decode(path: str, size: tuple[int, int] | None) -> tuple[np.ndarray | None, bool, str]:
    """One file -> (uint8 (H, W, 3) array or None, grayscale?, reason it failed)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            gray = im.mode in GRAY
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8), gray, ""
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return None, False, f"cannot be decoded ({type(e).__name__}: {e})"


def _decode_block(
    paths: list[str], size: tuple[int, int] | None
) -> list[tuple[np.ndarray | None, bool, str]]:
    return [_decode(p, size) for p in paths]


def _build(
    entry: Path,
    key: str,
    folder: Path,
    files: list[tuple[str, int | None]],
    size: tuple[int, int] | None,
    *,
    skip_bad: bool,
    workers: int,
) -> dict:
    n = len(files)
    names = [name for name, _ in files]
    base = str(folder)
    blocks = [[os.path.join(base, f) for f, _ in files[i : i + BLOCK]] for i in range(0, n, BLOCK)]
    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        hw, gray_all, keep, bad = size, True, [], []
        t0 = last = time.perf_counter()
        pool = (
            ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 0 else None
        )
        try:
            results = (
                pool.map(_decode_block, blocks, [size] * len(blocks))
                if pool
                else (_decode_block(b, size) for b in blocks)
            )
            done = 0
            with open(tmp / "rgb.u8", "wb") as fh:  # written in order: no map, no big buffer
                for block in results:
                    rows = []
                    for arr, gray, why in block:
                        i = done
                        done += 1
                        if arr is not None and hw is None:
                            hw = arr.shape[:2]
                        if arr is not None and arr.shape[:2] != tuple(hw):
                            why = (
                                f"is {arr.shape[1]}x{arr.shape[0]} (W x H) but the first image "
                                f"is {hw[1]}x{hw[0]}; pass size=[H, W] (data.options.size) to resize "
                                "all images"
                            )
                            arr = None
                        if arr is None:
                            bad.append((names[i], why))
                            continue
                        rows.append(arr.transpose(2, 0, 1))
                        keep.append(i)
                        gray_all &= gray
                    if rows:
                        fh.write(np.ascontiguousarray(np.stack(rows)).tobytes())
                    now = time.perf_counter()
                    if now - last >= 10 and done < n:
                        left = (now - t0) / done * (n - done)
                        print(
                            f"decoding {str(folder)!r} once into the image cache: {done:,}/{n:,} "
                            f"images, ETA {time.strftime('%H:%M:%S', time.gmtime(left))}",
                            file=sys.stderr,
                            flush=True,
                        )
                        last = now
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        if bad and not skip_bad:
            raise _bad_error(folder, bad, n)
        if not keep:
            raise DataError(f"none of the {n:,} images in {str(folder)!r} could be read")
        kept = len(keep)
        channels = 1 if gray_all else 3
        if channels == 3:
            os.replace(tmp / "rgb.u8", tmp / "images.u8")
        else:  # keep one of the three equal channels
            per = 3 * hw[0] * hw[1]
            with open(tmp / "rgb.u8", "rb") as src, open(tmp / "images.u8", "wb") as dst:
                for i in range(0, kept, 4096):
                    k = min(4096, kept - i)
                    block = np.frombuffer(src.read(k * per), np.uint8).reshape(k, 3, *hw)
                    dst.write(np.ascontiguousarray(block[:, 0]).tobytes())
            (tmp / "rgb.u8").unlink()
        labels = [files[i][1] for i in keep]
        has_labels = bool(files) and files[0][1] is not None
        if has_labels:
            np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64), allow_pickle=False)
        meta = {
            "key": key,
            "format": FORMAT,
            "folder": str(folder),
            "files": n,
            "shape": [kept, channels, *map(int, hw)],
            "labels": has_labels,
            "bad": bad,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process built the same entry meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        if time.perf_counter() - t0 >= 10:
            print(
                f"decoded {kept:,} images of {str(folder)!r} into {str(entry)!r} in "
                f"{meta['seconds']:.0f} s; later starts map that file",
                file=sys.stderr,
                flush=True,
            )
        return meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
