"""A text tokenized once into token files that later starts map into memory (nanoGPT's
``train.bin``), so a text of any size trains in little memory and starts in seconds.

The first start reads the file in blocks (never whole): it checks the UTF-8 and counts the
characters, cuts the train / validation / test blocks at character positions, builds the
tokenizer from the training block only, and writes each block's tokens to
``$GENLAB_CACHE/tokens/<key>/{train,val,test}.bin`` as uint8, uint16 or int32 (the smallest that
holds the vocabulary). The key is the sha256 of the file's bytes and of the options (tokenizer,
vocabulary size, ``n``, fractions), so an edited file or another tokenizer tokenizes again.
Later starts hash the file and map the token files: the windows a batch reads are the only pages
brought into memory. An entry is written to a temporary folder and renamed into place, so it is
whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from genlab.data.image_cache import map_rows
from genlab.data.tokenizer import Tokenizer, train_tokenizer
from genlab.errors import DataError
from genlab.io import cache_root
from genlab.progress import eta

FORMAT = 1  # bump when the layout of an entry changes
BLOCK = 1 << 24  # bytes of text decoded at a time
SPLITS = ("train", "val", "test")
SAFE_NEXT = bytes(range(0x21, 0x7F))  # a cut after "\n" before one of these is a BPE word boundary


def tokens_dir() -> Path:
    return cache_root() / "tokens"


def load_tokens(
    path: Path,
    source: str,
    *,
    n: int | None,
    val_fraction: float,
    test_fraction: float,
    tokenizer: str,
    vocab_size: int | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The token ids of the three blocks of the text file ``path`` (mapped from the cache,
    tokenizing first if no entry matches) and the entry's meta: ``vocab`` (the tokenizer's spec),
    ``chars`` and ``tokens`` per block, ``escapes`` (per block, the UTF-8 byte counts of the
    characters the tokenizer escaped, in order)."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{source} is empty: no characters to train on")
    options = {
        "format": FORMAT, "n": n, "val_fraction": val_fraction, "test_fraction": test_fraction,
        "tokenizer": tokenizer, "vocab_size": vocab_size,
    }  # fmt: skip
    with open(path, "rb") as fh:
        h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
        while block := fh.read(BLOCK):  # read, not mapped: the text never becomes resident
            h.update(block)
        key = h.hexdigest()
        raw = _File(fh, size)
        entry = tokens_dir() / key[:32]
        meta = _read_meta(entry, key)
        if meta is None:
            meta = _build(entry, key, raw, source, options)
    arrays = {}
    for s in SPLITS:
        count, dtype = meta["tokens"][s], np.dtype(meta["dtype"])
        arrays[s] = (
            map_rows(entry / f"{s}.bin", (count,), dtype=dtype) if count else np.zeros(0, dtype)
        )
    return arrays, meta


def _read_meta(entry: Path, key: str) -> dict | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    size = np.dtype(meta.get("dtype", "uint8")).itemsize
    for s in SPLITS:
        f = entry / f"{s}.bin"
        have = f.stat().st_size if f.exists() else -1
        if meta.get("key") != key or have != meta["tokens"][s] * size:
            raise DataError(
                f"the token cache entry {str(entry)!r} is damaged (its size or key does not "
                "match); delete that folder and run again"
            )
    return meta


class _File:
    """The bytes of an open file by offset (``os.pread``), so that reading a text of any size
    keeps only the block at hand in memory (a map would count every page read as resident)."""

    def __init__(self, fh, size: int) -> None:
        self.fd, self.size = fh.fileno(), size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, where: int | slice) -> int | bytes:
        if isinstance(where, slice):
            start, stop, _ = where.indices(self.size)
            return os.pread(self.fd, max(0, stop - start), start)
        return os.pread(self.fd, 1, where)[0]


def _char_end(raw: _File, i: int) -> int:
    """The first character boundary at or after byte ``i``."""
    while i < len(raw) and (raw[i] & 0xC0) == 0x80:
        i += 1
    return i


def _blocks(raw: _File, lo: int, hi: int, source: str) -> Iterator[tuple[int, int, str]]:
    """``(first byte, end byte, text)`` of the bytes ``lo .. hi`` in blocks of about ``BLOCK``
    bytes, each cut after a newline that an ASCII non-space character follows where one exists (a word
    boundary of byte-level BPE: blocks encode to the tokens of the whole), else at a character
    boundary."""
    start = lo
    while start < hi:
        end = min(hi, start + BLOCK)
        if end < hi:
            cut = _newline_cut(raw, start + BLOCK // 2, end)
            end = cut if cut is not None else _char_end(raw, end)
        chunk = raw[start:end]
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{source} is not valid UTF-8: byte 0x{chunk[e.start]:02x} at byte offset "
                f"{start + e.start} ({e.reason}); re-save the file as UTF-8"
            ) from None
        yield start, end, text
        start = end


def _newline_cut(raw: _File, lo: int, hi: int) -> int | None:
    """The last position in ``(lo, hi]`` just after a ``\\n`` that an ASCII non-space follows."""
    buf = raw[lo : hi + 1]
    i = len(buf) - 1
    while True:
        j = buf.rfind(b"\n", 0, i)
        if j < 0:
            return None
        if buf[j + 1] in SAFE_NEXT:
            return lo + j + 1
        i = j


def _byte_of_char(raw: _File, counts: list[tuple[int, int, int]], k: int) -> int:
    """The byte offset of character ``k`` given the blocks' ``(start, end, chars)``."""
    before = 0
    for start, end, chars in counts:
        if k < before + chars:
            text = raw[start:end].decode("utf-8")
            return start + len(text[: k - before].encode("utf-8"))
        before += chars
    return counts[-1][1] if counts else 0


def _build(entry: Path, key: str, raw: _File, source: str, options: dict) -> dict:
    n = options["n"]
    t0 = last = time.perf_counter()

    def progress(what: str, done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= 10 and 0 < done < total:
            left = (now - t0) / done * (total - done)
            print(
                f"tokenizing {source} once into the token cache: {what} {done >> 20:,}/"
                f"{total >> 20:,} MiB, ETA {eta(left)}",
                file=sys.stderr,
                flush=True,
            )
            last = now

    # pass 1: check the UTF-8, count the characters (the first n), find the end
    counts, total, end = [], 0, len(raw)
    for start, stop, text in _blocks(raw, 0, len(raw), source):
        nul = text.find("\x00")
        if nul >= 0:
            raise DataError(
                f"{source} looks binary, not text: it holds a NUL byte at byte offset "
                f"{start + len(text[:nul].encode('utf-8'))}"
            )
        if n is not None and total + len(text) >= n:
            text = text[: n - total]
            counts.append((start, start + len(text.encode("utf-8")), len(text)))
            total += len(text)
            end = counts[-1][1]
            break
        counts.append((start, stop, len(text)))
        total += len(text)
        progress("checking", start, len(raw))
    if total == 0:
        raise DataError(f"{source} is empty: no characters to train on")
    n_val, n_test = (
        int(round(total * f)) for f in (options["val_fraction"], options["test_fraction"])
    )
    a, b = total - n_val - n_test, total - n_test
    cuts = [0, _byte_of_char(raw, counts, a), _byte_of_char(raw, counts, b), end]
    # the tokenizer, from the training block only
    tok: Tokenizer = train_tokenizer(
        options["tokenizer"],
        (t for _, _, t in _blocks(raw, cuts[0], cuts[1], source)),
        options["vocab_size"],
    )
    dtype = (
        np.uint8 if tok.vocab_size <= 256 else np.uint16 if tok.vocab_size <= 65536 else np.int32
    )
    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokens, escapes = {}, {}
        chars = {"train": a, "val": b - a, "test": total - b}
        for s, lo, hi in zip(SPLITS, cuts[:-1], cuts[1:], strict=True):
            count, esc = 0, []
            with open(tmp / f"{s}.bin", "wb") as fh:
                for start, _, text in _blocks(raw, lo, hi, source):
                    ids = tok.encode(text)
                    if tok.escape_id is not None and (ids == tok.escape_id).any():
                        esc.extend(tok.escapes(text).tolist())
                    fh.write(ids.astype(dtype).tobytes())
                    count += len(ids)
                    progress("tokenizing", start, end)
            tokens[s], escapes[s] = count, esc
        meta = {
            "key": key, "format": FORMAT, "source": source, "vocab": tok.spec(),
            "dtype": np.dtype(dtype).name, "tokens": tokens, "chars": chars, "escapes": escapes,
        }  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process wrote the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _read_meta(entry, key) or meta
