"""Text: any UTF-8 ``.txt`` file, and Tiny Shakespeare (bundled), as a stream of tokens.

The text is split into contiguous blocks of characters: the first ``1 - val_fraction -
test_fraction`` for training, then validation, then test, so no window straddles two splits.
``tokenizer`` (``data.options.tokenizer``: ``char``, the default, ``bytes`` or ``bpe`` with
``vocab_size``; :mod:`genlab.data.tokenizer`) is built from the training block alone, and each
block is tokenized once into a token file that later starts map
(:mod:`genlab.data.token_cache`): ``train``, ``val`` and ``test`` are tensors over those files
(uint8, uint16 or int32), and a batch converts its windows to int64. ``meta["vocab"]`` is the
tokenizer's spec (what a run saves), ``meta["chars"]`` the characters per block and
``meta["escapes"]`` the byte counts of the characters the ``char`` tokenizer escaped (the
held-out likelihood charges 8 bits per byte for them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genlab.data.base import Dataset, asset, check_fractions, require_file
from genlab.data.token_cache import load_tokens
from genlab.data.tokenizer import tokenizer_of, unknown_characters  # noqa: F401 (re-exported)
from genlab.errors import DataError
from genlab.registry import DATASETS

SHAKESPEARE = (
    "tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)


#: between two samples in a .txt written by ``genlab sample`` (and read by ``genlab score``)
SAMPLE_SEPARATOR = "\n\n" + "-" * 40 + "\n\n"


def encode(text: str, vocab: str | dict[str, Any], strict: bool = False) -> torch.Tensor:
    """Text -> int64 token ids with the tokenizer ``vocab`` describes
    (:func:`genlab.data.tokenizer.tokenizer_of`); ``strict``: a character the tokenizer would
    escape (or, for a plain character vocabulary, any character outside it) is a DataError that
    lists them."""
    return tokenizer_of(vocab).ids_tensor(text, strict)


def decode(ids: torch.Tensor | list[int], vocab: str | dict[str, Any]) -> str:
    """Token ids -> text; an id outside the vocabulary is a DataError."""
    return tokenizer_of(vocab).decode(ids)


def load_text(
    path: str | Path,
    *,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    tokenizer: str = "char",
    vocab_size: int | None = None,
) -> Dataset:
    """The tokens of a UTF-8 text file (its first ``n`` characters when ``n`` is given), by
    ``tokenizer`` (``char``, ``bytes`` or ``bpe`` with ``vocab_size`` ids, default 4,096) built
    from the training block; ``seed`` is unused (the split is contiguous)."""
    path = require_file(path)
    return _load(path.stem, path, str(path), n, val_fraction, test_fraction, tokenizer, vocab_size)


@DATASETS.register("shakespeare", help="Tiny Shakespeare, 1.1M characters (bundled)")
def load_shakespeare(
    *,
    n: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    tokenizer: str = "char",
    vocab_size: int | None = None,
) -> Dataset:
    """Karpathy's Tiny Shakespeare (1,115,394 characters, 65 distinct), checked by SHA-256."""
    path = asset(*SHAKESPEARE)
    return _load("shakespeare", path, str(path), n, val_fraction, test_fraction, tokenizer,
                 vocab_size)  # fmt: skip


def decode_utf8(raw: bytes, source: str) -> str:
    """``raw`` as text; invalid UTF-8 is a DataError that names the byte and its offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{source} is not valid UTF-8: byte 0x{raw[e.start]:02x} at byte offset {e.start} "
            f"({e.reason}); re-save the file as UTF-8"
        ) from None


def _load(
    name: str,
    path: Path,
    source: str,
    n: int | None,
    val_fraction: float,
    test_fraction: float,
    tokenizer: str,
    vocab_size: int | None,
) -> Dataset:
    check_fractions(val_fraction, test_fraction)
    arrays, meta = load_tokens(
        path, source, n=None if n is None else int(n), val_fraction=val_fraction,
        test_fraction=test_fraction, tokenizer=tokenizer, vocab_size=vocab_size,
    )  # fmt: skip
    tok = tokenizer_of(meta["vocab"])
    train, val, test = (torch.from_numpy(arrays[s]) for s in ("train", "val", "test"))
    info = {
        "source": source, "vocab": meta["vocab"], "vocab_size": tok.vocab_size,
        "tokenizer": tok.kind, "chars": meta["chars"], "escapes": meta["escapes"],
    }  # fmt: skip
    return Dataset(name, "tokens", train, val, test=test, meta=info)


def text_tokens(name: str, text: str, vocab: str | dict[str, Any], source: str) -> Dataset:
    """A text scored by a run's tokenizer ``vocab`` (``genlab eval --data other.txt``): all of it
    held out (as ``train``, the held-out split of a file), its escapes recorded."""
    if not text:
        raise DataError(f"{source} is empty: no characters to score")
    tok = tokenizer_of(vocab)
    ids = tok.ids_tensor(text)
    esc = tok.escapes(text).tolist() if tok.escape_id is not None else []
    meta = {
        "source": source, "vocab": vocab, "vocab_size": tok.vocab_size, "tokenizer": tok.kind,
        "chars": {"train": len(text), "val": 0, "test": 0},
        "escapes": {"train": esc, "val": [], "test": []},
    }  # fmt: skip
    return Dataset(name, "tokens", ids, ids[:0], meta=meta)
