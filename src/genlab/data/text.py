"""Character-level text: any UTF-8 ``.txt`` file, and Tiny Shakespeare (bundled).

The vocabulary is the sorted set of characters of the whole file (``meta["vocab"]``, a ``str``;
as nanoGPT's ``shakespeare_char``), so a character that only the held-out text holds still has a
token and a finite likelihood; a token is a character's index in it. The stream is split into
contiguous blocks: the first ``1 - val_fraction - test_fraction`` of the characters for training,
then validation, then test, so no window straddles two splits. The vocabulary is the only thing
the held-out blocks give training (the size of the embedding table).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genlab.data.base import Dataset, asset, check_fractions, require_file
from genlab.errors import DataError
from genlab.registry import DATASETS

SHAKESPEARE = (
    "tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)


#: between two samples in a .txt written by ``genlab sample`` (and read by ``genlab score``)
SAMPLE_SEPARATOR = "\n\n" + "-" * 40 + "\n\n"


def encode(text: str, vocab: str) -> torch.Tensor:
    """Characters -> int64 token ids ``(len(text),)``; characters outside ``vocab`` are a
    DataError that lists them (:func:`unknown_characters`)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # code points
    table = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    order = np.argsort(table, kind="stable")
    pos = np.searchsorted(table[order], codes).clip(0, max(len(table) - 1, 0))
    ids = order[pos] if len(table) else pos
    bad = np.flatnonzero(table[ids] != codes) if len(table) else np.arange(len(codes))
    if len(bad):
        raise DataError(unknown_characters(text, vocab, bad.tolist()))
    return torch.from_numpy(ids.astype(np.int64))


def unknown_characters(text: str, vocab: str, where: list[int] | None = None) -> str:
    """The message for the characters of ``text`` outside ``vocab`` (at positions ``where``, when
    known): each distinct one with its first position, at most 10 of them."""
    where = [i for i, c in enumerate(text) if c not in set(vocab)] if where is None else where
    first: dict[str, int] = {}
    for i in where:
        first.setdefault(text[i], i)
    shown = [f"{c!r} (first at position {i})" for c, i in list(first.items())[:10]]
    more = f" and {len(first) - 10} more" if len(first) > 10 else ""
    verb = "is" if len(first) == 1 else "are"
    what = "character" if len(first) == 1 else f"{len(first)} characters"
    return (
        f"{what} {', '.join(shown)}{more} {verb} not in the vocabulary ({len(vocab)} characters "
        "of the training text)"
    )


def decode(ids: torch.Tensor | list[int], vocab: str) -> str:
    """Token ids -> text; an id outside ``[0, len(vocab))`` is a DataError."""
    ids = torch.as_tensor(ids).reshape(-1).tolist()
    bad = [i for i in ids if not 0 <= i < len(vocab)]
    if bad:
        raise DataError(f"token id {bad[0]} is outside the vocabulary of {len(vocab)} characters")
    return "".join(vocab[i] for i in ids)


def load_text(
    path: str | Path,
    *,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Character tokens of a UTF-8 text file (the first ``n`` characters when ``n`` is given);
    ``seed`` is unused (the split is contiguous)."""
    path = require_file(path)
    return _from_bytes(
        path.stem,
        path.read_bytes(),
        str(path),
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )


@DATASETS.register("shakespeare", help="Tiny Shakespeare, 1.1M characters, char-level (bundled)")
def load_shakespeare(
    *, n: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> Dataset:
    """Karpathy's Tiny Shakespeare (1,115,394 characters, 65 distinct), checked by SHA-256."""
    path = asset(*SHAKESPEARE)
    return _from_bytes(
        "shakespeare",
        path.read_bytes(),
        str(path),
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )


def decode_utf8(raw: bytes, source: str) -> str:
    """``raw`` as text; invalid UTF-8 is a DataError that names the byte and its offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{source} is not valid UTF-8: byte 0x{raw[e.start]:02x} at byte offset {e.start} "
            f"({e.reason}); re-save the file as UTF-8"
        ) from None


def _from_bytes(
    name: str, raw: bytes, source: str, *, n: int | None, val_fraction: float, test_fraction: float
) -> Dataset:
    text = decode_utf8(raw, source)
    if n is not None:
        text = text[: int(n)]
    if not text:
        raise DataError(f"{source} is empty: no characters to train on")
    check_fractions(val_fraction, test_fraction)
    vocab = "".join(sorted(set(text)))
    ids = encode(text, vocab)
    n_val, n_test = (int(round(len(ids) * f)) for f in (val_fraction, test_fraction))
    a, b = len(ids) - n_val - n_test, len(ids) - n_test
    meta = {"source": source, "vocab": vocab, "vocab_size": len(vocab)}
    return Dataset(name, "tokens", ids[:a], ids[a:b], test=ids[b:], meta=meta)
